"""Lesson 07's checkers: the windowed causal mask and the ring buffer's slots."""

import pytest
import torch

from tinyslm.course import lesson07
from tinyslm.course.check import ExerciseFailed

from course_support import solutions

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ref():
    return solutions("07_sliding_windows")


def unwritten(*_args):
    raise NotImplementedError


def test_reference_solutions_pass(ref):
    assert lesson07.check_windowed_causal_mask(ref.windowed_causal_mask) is True
    assert lesson07.check_ring_positions(ref.ring_positions) is True


def test_unwritten_functions_are_not_attempted():
    assert lesson07.check_windowed_causal_mask(unwritten) is False
    assert lesson07.check_ring_positions(unwritten) is False


def test_a_window_off_by_one_fails():
    def sees_w_plus_one(q_pos, k_pos, window):  # k >= q - W: W + 1 keys
        q, k = q_pos[:, None], k_pos[None, :]
        return (k >= 0) & (k <= q) & (k >= q - window)

    with pytest.raises(ExerciseFailed, match=r"windowed_causal_mask\(q_pos=\[0, 1, .*window=4\): first differs at index \(4, 0\)"):
        lesson07.check_windowed_causal_mask(sees_w_plus_one)


def test_a_mask_that_sees_empty_slots_fails():
    def sees_empty_slots(q_pos, k_pos, window):
        q, k = q_pos[:, None], k_pos[None, :]
        return (k <= q) & (k > q - window)

    with pytest.raises(ExerciseFailed, match=r"k_pos=\[0, 1, 2, -1\].*index \(0, 3\)"):
        lesson07.check_windowed_causal_mask(sees_empty_slots)


def test_a_mask_built_from_slot_order_fails():
    def slot_order(q_pos, k_pos, window):  # ignores the stored positions
        s = torch.arange(k_pos.shape[0])
        return (s[None, :] <= q_pos[:, None]) & (s[None, :] > q_pos[:, None] - window)

    with pytest.raises(ExerciseFailed, match="windowed_causal_mask"):
        lesson07.check_windowed_causal_mask(slot_order)


def test_a_float_mask_fails_on_its_dtype(ref):
    with pytest.raises(ExerciseFailed, match="dtype torch.float32, expected torch.bool"):
        lesson07.check_windowed_causal_mask(lambda q, k, w: ref.windowed_causal_mask(q, k, w).float())


def test_ring_slots_in_arrival_order_fail():
    def in_order(n_tokens, window):  # the last W positions, oldest first: not slot p % W
        last = list(range(max(0, n_tokens - window), n_tokens))
        return last + [-1] * (window - len(last))

    with pytest.raises(ExerciseFailed, match=r"ring_positions\(n_tokens=5, window=4\).*item 0: got 1, expected 4"):
        lesson07.check_ring_positions(in_order)


def test_ring_that_keeps_zero_for_empty_slots_fails():
    def zeros_for_empty(n_tokens, window):
        slots = [0] * window
        for p in range(max(0, n_tokens - window), n_tokens):
            slots[p % window] = p
        return slots

    with pytest.raises(ExerciseFailed, match=r"ring_positions\(n_tokens=0, window=4\).*item 0: got 0, expected -1"):
        lesson07.check_ring_positions(zeros_for_empty)
