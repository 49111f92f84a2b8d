"""The course runs: every lesson in notebooks/ as a plain script in a fresh process (its assertions are the test),
two of them as notebooks in a real Jupyter kernel, and the course's files are what the syllabus promises.

The lessons run with TINYSLM_COURSE_FAST=1 (a lesson that trains or sweeps picks its smaller setting) and
matplotlib's non-interactive backend. Each lesson's time is printed (pytest -s) and kept in notebooks/README.md.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from course_support import LESSONS, NOTEBOOKS

REPO = NOTEBOOKS.parent
KERNEL_LESSONS = ("01_", "04_")  # the lessons also executed cell by cell in a Jupyter kernel (nbclient)
TIMEOUT_S = 180  # a hang fails; the syllabus's times are what they take on 2 cores


def lesson_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, TINYSLM_COURSE_FAST="1", MPLBACKEND="Agg", MPLCONFIGDIR=str(tmp_path / "mpl"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # a source checkout
    return env


def test_there_are_twelve_lessons_each_with_its_solutions():
    assert len(LESSONS) == 12, [p.name for p in LESSONS]
    assert [p.name[:2] for p in LESSONS] == [f"{n:02d}" for n in range(1, 13)]
    for lesson in LESSONS:
        assert (NOTEBOOKS / "solutions" / lesson.name).is_file(), f"no notebooks/solutions/{lesson.name}"
        assert lesson.stem in (NOTEBOOKS / "README.md").read_text(), f"{lesson.name} is not in the syllabus"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_as_a_script(lesson, tmp_path):
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, str(lesson)], cwd=tmp_path, env=lesson_env(tmp_path), capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    print(f"{lesson.stem}: {elapsed:.1f} s")
    assert run.returncode == 0, f"{lesson.name} failed after {elapsed:.1f} s:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_is_py_percent_and_converts_to_a_notebook(lesson):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    text = lesson.read_text()
    assert "# %% [markdown]" in text and re.search(r"^# %%$", text, re.M), f"{lesson.name}: not py:percent cells"
    notebook = jupytext.reads(text, fmt="py:percent")
    nbformat.validate(notebook)
    kinds = {cell.cell_type for cell in notebook.cells}
    assert kinds == {"markdown", "code"}, kinds
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


CODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")  # PEP 263: read on a file's first two lines


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_a_lesson_imports_tinyslm_first_and_declares_no_encoding_by_accident(lesson):
    lines = lesson.read_text().splitlines()
    assert not any(CODING.match(line) for line in lines[:2]), f"{lesson.name}: Python reads this as an encoding line"
    imports = [line for line in lines if re.match(r"(import|from) \w", line)]
    # tinyslm before torch: libgomp reads its spin-wait setting when torch loads (tinyslm/__init__.py)
    assert imports[0].startswith("import tinyslm"), f"{lesson.name}: first import is {imports[0]!r}"


@pytest.mark.parametrize("prefix", KERNEL_LESSONS)
def test_lesson_runs_in_a_jupyter_kernel(prefix, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    (lesson,) = [p for p in LESSONS if p.name.startswith(prefix)]
    # a kernel spec for this very interpreter (a "python3" found on PATH could be another environment's)
    spec = tmp_path / "jupyter" / "kernels" / "tinyslm-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "tinyslm test", "language": "python"}))
    for key, value in lesson_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = jupytext.read(lesson)
    client = nbclient.NotebookClient(
        notebook, timeout=TIMEOUT_S, kernel_name="tinyslm-test", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a failing cell raises CellExecutionError naming it
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]


def test_no_notebook_outputs_are_committed():
    tracked = subprocess.run(
        ["git", "ls-files", "notebooks"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.split()
    assert not [f for f in tracked if f.endswith(".ipynb")], "commit the py:percent lesson, not the .ipynb"
    assert ".ipynb" in (REPO / ".gitignore").read_text()


# a path of one machine: an absolute home/work/tmp folder, or anything outside the repository
LOCAL_PATH = re.compile(r"""(\.\./shared|["'](/(home|Users|work|tmp|mnt|root|data)/|[A-Z]:\\))""")


@pytest.mark.parametrize("path", [*LESSONS, *(NOTEBOOKS / "solutions").glob("*.py"), NOTEBOOKS / "README.md"],
                         ids=lambda p: p.name)  # fmt: skip
def test_lessons_cite_no_path_outside_the_repository(path):
    hits = [line for line in path.read_text().splitlines() if LOCAL_PATH.search(line)]
    assert not hits, f"{path.name}: {hits}"
