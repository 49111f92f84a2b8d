"""quant/native.py: building and loading the kernels never hangs and never crashes, whatever the cache holds.

Each case runs the real build path in a fresh process (the kernels load once per process) over a copy of this
machine's kernel cache in a temporary TORCH_EXTENSIONS_DIR, damaged as a stopped build, a full disk or another
program would leave it, and bounded by a timeout: it must end in a working run, or in torch's kernels with one
line saying why.
"""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyslm.quant import native

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels unavailable: {native.why_unavailable}")

PROBE = "from tinyslm.quant import native; print(native.available(), native.why_unavailable)"


@pytest.fixture
def cache(tmp_path):
    """A copy of this machine's complete kernel build in its own extensions folder: (root, build folder, library)."""
    from torch.utils import cpp_extension

    name = f"tinyslm_ggml_{native._cpu_tag()}"
    real = Path(cpp_extension._get_build_directory(name, verbose=False))
    build = tmp_path / "ext" / name
    shutil.copytree(real, build, ignore=shutil.ignore_patterns("tinyslm.lock"))
    return tmp_path / "ext", build, build / f"{name}.so"


def probe(root: Path, code: str = PROBE, timeout: float = 600, **env) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "TORCH_EXTENSIONS_DIR": str(root), "TINYSLM_NOTES": "1", **env})  # fmt: skip
    assert "Traceback" not in run.stderr and run.returncode == 0, run.stderr
    return run


def test_a_lock_left_by_a_stopped_build_is_not_waited_for(cache):
    root, build, library = cache
    (build / "lock").write_text("")  # torch's own lock: a build stopped by SIGTERM leaves it, and torch waits on it
    run = probe(root, timeout=120)
    assert run.stdout.split() == ["True", "None"]
    assert not (build / "lock").exists() and "compiling" not in run.stderr  # the complete build was loaded as it is


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_truncated_or_foreign_library_is_built_again_not_loaded(cache, damage):
    root, build, library = cache
    if damage == "truncated":  # a library cut short (a full disk, a killed linker): loading it would SIGBUS
        library.write_bytes(library.read_bytes()[: library.stat().st_size // 3])
    else:  # another program's valid library in its place
        shutil.copy(Path(sys.executable).resolve(), library)
    run = probe(root)
    assert run.stdout.split() == ["True", "None"]
    notes = [line for line in run.stderr.splitlines() if line.startswith("note:")]
    assert notes[0].endswith("was incomplete or not this one: building it again") and "compiling" in notes[1]
    assert native._verified(library)


def test_a_complete_build_of_another_version_is_refused_after_loading_in_one_line(cache):
    # recorded as complete, but without this version's ops (an older tinyslm's build): torch's kernels this run,
    # the build deleted so that the next run builds this version's
    root, build, library = cache
    import importlib

    stand_ins = [getattr(importlib.import_module(m), "__file__", None) or "" for m in ("_json", "_ctypes", "_struct")]
    other = next((Path(f) for f in stand_ins if f.endswith(".so")), None)
    if other is None:
        pytest.skip("no stand-in shared library to play another version's build")
    shutil.copy(other, library)
    native._record(library)
    run = probe(root, timeout=120)
    assert run.stdout.startswith("False the kernel build") and "lacks tinyslm::ggml_pack (another version's)" in run.stdout
    assert len([line for line in run.stderr.splitlines() if line.strip()]) <= 2  # the warning line (and its source)
    assert not library.exists()


def test_a_live_build_is_waited_for_a_bounded_time_saying_so(cache):
    root, build, _ = cache
    with open(build / "tinyslm.lock", "w") as held:  # another process building right now
        fcntl.flock(held, fcntl.LOCK_EX)
        run = probe(root, timeout=60, TINYSLM_BUILD_WAIT_S="1")
    assert run.stdout.startswith("False another process has been building the kernels in")
    assert "waiting for another process's build of the kernels" in run.stderr


@pytest.mark.parametrize("complete", [True, False])
def test_a_read_only_cache_loads_a_complete_build_or_says_why_not(cache, complete):
    root, build, library = cache
    if not complete:
        library.with_suffix(".ok").unlink()
    # (root ignores permission bits: the lock file's creation refused as on a read-only folder)
    code = ("import os; real = os.open\n"
            "def refuse(path, *a, **k):\n"
            "    if str(path).endswith('tinyslm.lock'): raise PermissionError(13, 'Permission denied', str(path))\n"
            "    return real(path, *a, **k)\n"
            f"os.open = refuse\n{PROBE}")  # fmt: skip
    run = probe(root, code, timeout=120)
    if complete:
        assert run.stdout.split() == ["True", "None"]
    else:
        assert run.stdout.startswith("False the kernel cache") and "is not writable and holds no complete build" in run.stdout
