"""Packaging (setup.py, MANIFEST.in): a wheel carries the kernels' C++ sources, and an install from it decodes natively.

kernels/ sits at the top of the repository, outside the package; setup.py copies it into the wheel as
tinyslm/kernels/, where quant/native.py looks first. This builds the wheel the way `python -m build` does (an sdist,
then a wheel from the unpacked sdist), installs it into a fresh venv that sees this environment's dependencies
(nothing is downloaded), and runs `tinyslm generate` there from outside the repository, with an empty kernel cache:
the kernels must be built from the installed copy and decode the tokens.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
GGUF = SHARED / "SmolLM2-135M-Instruct.Q4_1.gguf"
# what the wheel must carry: every kernel source, under the package
KERNEL_FILES = sorted(f"tinyslm/kernels/{p.name}" for p in (REPO / "kernels").iterdir() if p.suffix in (".cpp", ".h"))


def run(args: list, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Runs `args` to the end (at most `timeout` s); its output is the assertion's message when it fails."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


def build_wheel(tmp_path: Path) -> Path:
    """sdist from a copy of the repository (the build writes build/ and *.egg-info beside its sources), then a
    wheel from the unpacked sdist, both with this environment's setuptools (no build isolation: no download)."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                                 ".pytest_cache", ".hypothesis", ".venv"))  # fmt: skip
    hook = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    sdist = run([sys.executable, "-c", hook, tmp_path / "sdist"], 300, cwd=source).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / "sdist" / sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w",
         tmp_path / "wheels", unpacked], 300)  # fmt: skip
    (wheel,) = (tmp_path / "wheels").glob("tinyslm-*.whl")
    return wheel


def _builds_wheels() -> bool:
    try:
        import setuptools.command.bdist_wheel  # noqa: F401  (setuptools >= 70.1 builds wheels itself)
    except ImportError:
        try:
            import wheel.bdist_wheel  # noqa: F401  (older setuptools, with the wheel package)
        except ImportError:
            return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not GGUF.exists(), reason=f"no {GGUF.name} here")
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="no C++ compiler to build the kernels")
@pytest.mark.skipif(not _builds_wheels(), reason="this environment's setuptools predates bdist_wheel (70.1); the wheel "
                    "is built without downloading, with the setuptools installed")
def test_installed_wheel_builds_its_kernels_and_decodes_by_the_native_step(tmp_path):
    wheel = build_wheel(tmp_path)
    assert set(KERNEL_FILES) <= set(zipfile.ZipFile(wheel).namelist()), "the wheel lacks kernel sources"

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], 300)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TINYSLM_NATIVE")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv), "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}  # fmt: skip
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], 300, env=env, cwd=tmp_path)
    # this environment's dependencies (torch, ...), after the venv's own site-packages: a plain path line, so the
    # editable install's finder there (a .pth of its own) is not run and tinyslm comes from the wheel
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 60, env=env).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "tinyslm_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))

    probe = "import tinyslm; from tinyslm.quant import native; print(tinyslm.__file__); print(native.KERNELS)"
    package, kernels = run([python, "-c", probe], 120, env=env, cwd=tmp_path).stdout.split()
    assert Path(package).is_relative_to(venv) and Path(kernels) == Path(package).parent / "kernels"

    done = run([bin_dir / "tinyslm", "generate", GGUF, "--prompt", "Hello", "--max-new-tokens", "4"], 600,
               env=env, cwd=tmp_path)  # fmt: skip
    said = done.stdout + done.stderr
    assert "decoded by the native step" in said, said
    assert "torch's own kernels" not in said, said
    assert list((tmp_path / "extensions").glob("tinyslm_ggml_*/*.so")), "the kernels were not built in the fresh cache"
