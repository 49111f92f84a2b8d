"""tinyslm/course/check.py: what an exercise's checker reports, and whom it blames."""

from pathlib import Path

import pytest
import torch

import tinyslm.course
from tinyslm.course.check import Exercise, ExerciseFailed, difference

# a checker and a helper as if they lived in the library (their code objects carry a path inside tinyslm/)
LIBRARY_CODE = '''
def checker(student):
    with Exercise("f", against="the reference") as ex:
        ex.compare("f(x)", student(torch.ones(3)), torch.ones(3))
    return ex.passed

def broken_setup(x):
    return torch.ones(3).reshape(7)  # a bug of the checker's own
'''


def library_namespace() -> dict:
    namespace = {"Exercise": Exercise, "torch": torch}
    exec(compile(LIBRARY_CODE, str(Path(tinyslm.course.__file__).parent / "lesson99.py"), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("got, want, message", [
    (torch.ones(2, 3), torch.ones(3), "shape (2, 3), expected (3,)"),
    (torch.ones(3, dtype=torch.bool), torch.ones(3), "dtype torch.bool, expected torch.float32"),
    (torch.tensor([1.0, 2.0, 3.5]), torch.tensor([1.0, 2.0, 3.0]), "first differs at index (2,): got 3.5, expected 3"),
    ([1, 2], [1, 3], "item 1: got 2, expected 3"),
    (0.5, 0.7, "got 0.5, expected 0.7"),
    (None, torch.ones(1), "expected a tensor of shape (1,), got NoneType"),
])  # fmt: skip
def test_a_difference_says_what_and_where(got, want, message):
    assert message in difference(got, want, atol=1e-6)


def test_equal_values_and_nans_in_the_same_places_are_no_difference():
    assert difference(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")])) is None
    assert difference(torch.tensor([1.0 + 1e-7]), torch.tensor([1.0]), atol=1e-6) is None
    assert difference(torch.tensor([float("nan")]), torch.tensor([1.0]), atol=1.0) is not None


def test_the_student_is_blamed_for_an_error_in_their_function_and_not_for_the_checkers():
    checker = library_namespace()["checker"]
    assert checker(lambda x: x) is True
    with pytest.raises(ExerciseFailed, match="f raised RuntimeError: shape"):
        checker(lambda x: x.reshape(7))  # the student's mistake
    with pytest.raises(ExerciseFailed, match="f\\(x\\): first differs at index \\(0,\\)"):
        checker(lambda x: x * 2)
    with pytest.raises(RuntimeError, match="shape"):  # the checker's own: its traceback, not "f raised ..."
        checker(library_namespace()["broken_setup"])


def test_an_unwritten_exercise_is_reported_not_failed(capsys):
    def unwritten(x):
        raise NotImplementedError

    assert library_namespace()["checker"](unwritten) is False
    assert "not written yet" in capsys.readouterr().out
