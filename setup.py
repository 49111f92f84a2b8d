"""Build hook: the wheel carries kernels/ (the C++ sources of tinyslm/quant/native.py) as tinyslm/kernels/.

kernels/ stays at the top of the repository, where readers find it and an editable install reads it in place.
An installed wheel has no repository beside it, so the sources travel inside the package, and native.py looks
there first. Everything else about the build is in pyproject.toml; MANIFEST.in puts kernels/ in the sdist that
`python -m build` makes its wheel from.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithKernels(build_py):
    """setuptools' build_py, then a copy of kernels/*.cpp and *.h into the built package's tinyslm/kernels/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # `pip install -e .`: native.py reads the repository's kernels/ in place
            return
        sources = sorted(p for p in Path("kernels").glob("*") if p.suffix in (".cpp", ".h"))
        if not sources:  # a wheel without them would quietly fall back to torch's kernels: refuse to build it
            raise FileNotFoundError("no kernels/*.cpp or *.h beside setup.py (an sdist made without MANIFEST.in?)")
        target = Path(self.build_lib) / "tinyslm" / "kernels"
        self.mkpath(str(target))
        for source in sources:
            self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildPyWithKernels})
