"""Lesson 10's checker: right on the reference solution, a named failure on plausible slips, quiet when unwritten."""

import pytest
import torch

from course_support import solutions
from tinyslm.course import lesson10
from tinyslm.course.check import ExerciseFailed

SOLUTIONS = solutions("10_families_and_parity")


def test_the_reference_solution_passes():
    assert lesson10.check_first_diverging_layer(SOLUTIONS.first_diverging_layer) is True


def test_an_unwritten_function_is_not_attempted(capsys):
    def first_diverging_layer(ours, theirs, tolerance):
        raise NotImplementedError

    assert lesson10.check_first_diverging_layer(first_diverging_layer) is False
    assert "not written yet" in capsys.readouterr().out


def _mean_difference(ours, theirs, tolerance):  # the mean hides one wrong element
    return next((i for i, (a, b) in enumerate(zip(ours, theirs))
                 if float((a - b).abs().mean() / b.abs().max()) > tolerance), None)  # fmt: skip


def _elementwise(ours, theirs, tolerance):  # relative element by element: zeros in theirs blow it up
    return next((i for i, (a, b) in enumerate(zip(ours, theirs))
                 if float(((a - b).abs() / b.abs()).nan_to_num(0.0).max()) > tolerance), None)  # fmt: skip


def _relative_to_ours(ours, theirs, tolerance):  # the denominator is the reference's scale, not ours
    return next((i for i, (a, b) in enumerate(zip(ours, theirs))
                 if float((a - b).abs().max() / a.abs().max()) > tolerance), None)  # fmt: skip


def _at_or_above(ours, theirs, tolerance):  # >= instead of >
    return next((i for i, (a, b) in enumerate(zip(ours, theirs))
                 if float((a - b).abs().max() / b.abs().max()) >= tolerance), None)  # fmt: skip


def _minus_one_for_none(ours, theirs, tolerance):
    found = SOLUTIONS.first_diverging_layer(ours, theirs, tolerance)
    return -1 if found is None else found


def _last_diverging(ours, theirs, tolerance):
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if float((a - b).abs().max() / b.abs().max()) > tolerance]
    return bad[-1] if bad else None


def _one_based(ours, theirs, tolerance):
    found = SOLUTIONS.first_diverging_layer(ours, theirs, tolerance)
    return None if found is None else found + 1


def _fixed_tolerance(ours, theirs, tolerance):  # ignores the argument
    return SOLUTIONS.first_diverging_layer(ours, theirs, 1e-5)


@pytest.mark.parametrize("wrong, fragment", [
    (_mean_difference, "one element of layer 1 .*got 3, expected 1"),
    (_elementwise, "a bug from layer 2 on.*got 0, expected 2"),
    (_relative_to_ours, "tolerance 1.0, layer 1.*got None, expected 1"),
    (_at_or_above, "exactly the tolerance.*got 0, expected 2"),
    (_minus_one_for_none, "all within float32 noise: got -1, expected None"),
    (_last_diverging, "a bug from layer 2 on.*got 4, expected 2"),
    (_one_based, "got 3, expected 2"),
    (_fixed_tolerance, "tolerance 1.0.*got 0, expected 1"),
])  # fmt: skip
def test_a_plausible_slip_fails_naming_the_case(wrong, fragment):
    with pytest.raises(ExerciseFailed, match=fragment):
        lesson10.check_first_diverging_layer(wrong)


def test_the_reference_rule_is_check_paritys():
    """The rule the checker holds answers are the one check_parity reports (tinyslm.tools.parity)."""
    a = [torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3)]
    b = [torch.ones(2, 3), torch.ones(2, 3) * 1.1, torch.ones(2, 3)]
    assert lesson10.reference_first_diverging_layer(a, b, 1e-5) == 1
    assert lesson10.reference_first_diverging_layer(a, a, 0.0) is None
