"""Lesson 04's exercise checkers: the reference solutions pass, plausible mistakes fail naming what differs,
an unwritten function is reported, not failed."""

import pytest
import torch

from course_support import solutions
from tinyslm.course import lesson04
from tinyslm.course.check import ExerciseFailed

pytest.importorskip("transformers")
SOLUTIONS = solutions("04_attention_heads")


def unwritten(*args):
    raise NotImplementedError


def test_repeat_kv_accepts_the_reference_solution():
    assert lesson04.check_repeat_kv(SOLUTIONS.repeat_kv) is True


def test_repeat_kv_rejects_tiling_the_heads_in_the_wrong_order():
    def tiled(x, n_rep):  # kv0 kv1 kv0 kv1 ... instead of kv0 kv0 ... kv1 kv1 ...
        return x.repeat(1, n_rep, 1, 1)

    with pytest.raises(ExerciseFailed, match=r"repeat_kv\(x of shape \(2, 2, 5, 4\), n_rep=3\): first differs at"):
        lesson04.check_repeat_kv(tiled)


def test_repeat_kv_rejects_repeating_along_the_wrong_axis():
    def wrong_axis(x, n_rep):  # repeats positions, not heads
        return x.repeat_interleave(n_rep, dim=2)

    with pytest.raises(ExerciseFailed, match=r"repeat_kv.*shape \(2, 2, 15, 4\), expected \(2, 6, 5, 4\)"):
        lesson04.check_repeat_kv(wrong_axis)


def test_repeat_kv_unwritten_is_not_attempted(capsys):
    assert lesson04.check_repeat_kv(unwritten) is False
    assert "not written yet" in capsys.readouterr().out


def test_causal_attention_accepts_the_reference_solution():
    assert lesson04.check_causal_attention(SOLUTIONS.causal_attention) is True


def test_causal_attention_rejects_a_missing_scale():
    def unscaled(q, k, v):
        t = q.shape[-2]
        scores = (q @ k.transpose(-1, -2)).masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        return scores.softmax(-1) @ v

    with pytest.raises(ExerciseFailed, match=r"causal_attention\(q, k, v of shape \(2, 4, 6, 8\)\): first differs"):
        lesson04.check_causal_attention(unscaled)


def test_causal_attention_rejects_a_mask_that_hides_the_diagonal():
    def strict(q, k, v):  # each query may not see itself: position 0 sees nothing, NaN
        t = q.shape[-2]
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        return scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(0), float("-inf")).softmax(-1) @ v

    with pytest.raises(ExerciseFailed, match=r"causal_attention.*first differs at index \(0, 0, 0, 0\): got nan"):
        lesson04.check_causal_attention(strict)


def test_causal_attention_rejects_no_mask():
    def bidirectional(q, k, v):
        return (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1) @ v

    with pytest.raises(ExerciseFailed, match=r"causal_attention.*first differs at index \(0, 0, 0, "):
        lesson04.check_causal_attention(bidirectional)


def test_causal_attention_unwritten_is_not_attempted(capsys):
    assert lesson04.check_causal_attention(unwritten) is False
    assert "not written yet" in capsys.readouterr().out
