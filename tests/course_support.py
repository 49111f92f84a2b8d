"""What the course tests share: the lessons' paths and a lesson's reference solutions as a module."""

import importlib.util
from pathlib import Path
from types import ModuleType

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def solutions(lesson: str) -> ModuleType:
    """notebooks/solutions/<lesson>.py (e.g. "02_norms") imported as a module."""
    path = NOTEBOOKS / "solutions" / f"{lesson}.py"
    spec = importlib.util.spec_from_file_location(f"course_solutions_{lesson}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
