"""Lesson 01's checkers: the reference solutions pass, plausible mistakes fail naming what differs, and an
unwritten exercise is reported, not raised."""

import pytest
import torch
import torch.nn.functional as F

from course_support import solutions
from tinyslm.course import lesson01
from tinyslm.course.check import ExerciseFailed

pytest.importorskip("transformers")
SOLUTIONS = solutions("01_forward_and_loss")


def unwritten(*args):
    raise NotImplementedError  # your code here


def test_shifted_loss_accepts_the_reference_solution():
    assert lesson01.check_shifted_loss(SOLUTIONS.shifted_loss) is True


def test_shifted_loss_without_the_shift_fails():
    def no_shift(logits, ids):  # position t scored against its own token
        return F.cross_entropy(logits.flatten(0, 1), ids.flatten())

    with pytest.raises(ExerciseFailed, match=r"shifted_loss\(logits \(2, 7, 11\), ids \(2, 7\)\): first differs"):
        lesson01.check_shifted_loss(no_shift)


def test_shifted_loss_summed_instead_of_averaged_fails():
    def summed(logits, ids):
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")

    with pytest.raises(ExerciseFailed, match=r"got .*, expected .*\|difference\|"):
        lesson01.check_shifted_loss(summed)


def test_shifted_loss_shifted_the_wrong_way_fails():
    def backwards(logits, ids):  # logits at t + 1 against the token at t
        return F.cross_entropy(logits[:, 1:].flatten(0, 1), ids[:, :-1].flatten())

    with pytest.raises(ExerciseFailed, match="shifted_loss"):
        lesson01.check_shifted_loss(backwards)


def test_shifted_loss_unwritten_returns_false(capsys):
    assert lesson01.check_shifted_loss(unwritten) is False
    assert "not written yet" in capsys.readouterr().out


def test_causal_mask_accepts_the_reference_solution():
    assert lesson01.check_causal_mask(SOLUTIONS.causal_mask) is True


def test_causal_mask_by_index_instead_of_position_fails_on_the_cached_case():
    def tril(q_pos, k_pos):  # right only when the queries start at position 0
        return torch.tril(torch.ones(len(q_pos), len(k_pos), dtype=torch.bool))

    with pytest.raises(ExerciseFailed, match=r"3 new queries .* after 5 cached keys: first differs at index \(0, 1\)"):
        lesson01.check_causal_mask(tril)


def test_causal_mask_that_hides_the_token_itself_fails():
    def strict(q_pos, k_pos):
        return k_pos[None, :] < q_pos[:, None]

    with pytest.raises(ExerciseFailed, match=r"5 queries over their own 5 keys: first differs at index \(0, 0\)"):
        lesson01.check_causal_mask(strict)


def test_causal_mask_of_floats_fails_naming_the_dtype():
    def additive(q_pos, k_pos):  # an additive mask (0 / -inf) is another convention than the one asked for
        return torch.zeros(len(q_pos), len(k_pos)).masked_fill(k_pos[None, :] > q_pos[:, None], float("-inf"))

    with pytest.raises(ExerciseFailed, match=r"dtype torch.float32, expected torch.bool"):
        lesson01.check_causal_mask(additive)


def test_causal_mask_unwritten_returns_false(capsys):
    assert lesson01.check_causal_mask(unwritten) is False
    assert "not written yet" in capsys.readouterr().out
