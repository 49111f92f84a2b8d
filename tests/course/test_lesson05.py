"""Lesson 05's exercise checkers: the reference solutions pass, plausible mistakes fail naming what differs,
an unwritten function is reported, not failed."""

import pytest
import torch.nn.functional as F

from course_support import solutions
from tinyslm.course import lesson05
from tinyslm.course.check import ExerciseFailed

pytest.importorskip("transformers")
SOLUTIONS = solutions("05_ffn_and_blocks")


def unwritten(*args):
    raise NotImplementedError


def test_swiglu_accepts_the_reference_solution():
    assert lesson05.check_swiglu(SOLUTIONS.swiglu) is True


def test_swiglu_rejects_the_activation_on_the_up_projection():
    def gate_and_up_swapped(x, w_gate, w_up, w_down):
        return ((x @ w_gate.T) * F.silu(x @ w_up.T)) @ w_down.T

    with pytest.raises(ExerciseFailed, match=r"swiglu\(x of shape \(2, 5, 16\), 24 hidden units\): first differs"):
        lesson05.check_swiglu(gate_and_up_swapped)


def test_swiglu_rejects_gelu():
    def geglu(x, w_gate, w_up, w_down):
        return (F.gelu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T

    with pytest.raises(ExerciseFailed, match=r"swiglu\(x of shape .*largest \|difference\|"):
        lesson05.check_swiglu(geglu)


def test_swiglu_rejects_untransposed_weights():
    def untransposed(x, w_gate, w_up, w_down):  # x @ w without .T: fails on a shape
        return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down

    with pytest.raises(ExerciseFailed, match=r"swiglu raised RuntimeError"):
        lesson05.check_swiglu(untransposed)


def test_swiglu_unwritten_is_not_attempted(capsys):
    assert lesson05.check_swiglu(unwritten) is False
    assert "not written yet" in capsys.readouterr().out


def test_ffn_parameters_accepts_the_reference_solution():
    assert lesson05.check_ffn_parameters(SOLUTIONS.ffn_parameters) is True


def test_ffn_parameters_rejects_one_bias_too_few():
    def gated_biases_forgotten(kind, dim, hidden, bias):  # counts the gated FFN's biases as a plain one's
        matrices = 3 if kind == "gated" else 2
        return matrices * dim * hidden + (hidden + dim if bias else 0)

    wrong = r"ffn_parameters\('gated', dim=64, hidden=176, bias=True\): got 34032, expected 34208"
    with pytest.raises(ExerciseFailed, match=wrong):
        lesson05.check_ffn_parameters(gated_biases_forgotten)


def test_ffn_parameters_rejects_two_matrices_for_a_gated_ffn():
    def two_matrices(kind, dim, hidden, bias):
        return 2 * dim * hidden + (hidden + dim if bias else 0)

    with pytest.raises(ExerciseFailed, match=r"ffn_parameters\('gated', dim=64, hidden=176, bias=False\): got"):
        lesson05.check_ffn_parameters(two_matrices)


def test_ffn_parameters_unwritten_is_not_attempted(capsys):
    assert lesson05.check_ffn_parameters(unwritten) is False
    assert "not written yet" in capsys.readouterr().out
