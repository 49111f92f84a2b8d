"""Lesson 06's exercise checkers: the reference solutions pass, plausible mistakes fail naming what differs,
an unwritten function is reported, not failed."""

import math

import pytest
import torch

from course_support import solutions
from tinyslm.course import lesson06
from tinyslm.course.check import ExerciseFailed

pytest.importorskip("transformers")
SOLUTIONS = solutions("06_kv_cache_and_decoding")


def unwritten(*args):
    raise NotImplementedError


def test_cache_update_accepts_the_reference_solution():
    assert lesson06.check_cache_update(SOLUTIONS.cache_update) is True


def test_cache_update_rejects_writing_at_position_zero():
    def ignores_start(k_cache, v_cache, k_new, v_new, start):
        t = k_new.shape[2]
        k_cache[:, :, :t], v_cache[:, :, :t] = k_new, v_new
        return k_cache[:, :, : start + t], v_cache[:, :, : start + t]

    with pytest.raises(ExerciseFailed, match=r"writing 1 position\(s\) at start=5: returned keys: first differs at"):
        lesson06.check_cache_update(ignores_start)


def test_cache_update_rejects_returning_the_whole_buffer():
    def whole_buffer(k_cache, v_cache, k_new, v_new, start):
        end = start + k_new.shape[2]
        k_cache[:, :, start:end], v_cache[:, :, start:end] = k_new, v_new
        return k_cache, v_cache

    with pytest.raises(ExerciseFailed, match=r"returned keys: shape \(1, 2, 12, 4\), expected \(1, 2, 5, 4\)"):
        lesson06.check_cache_update(whole_buffer)


def test_cache_update_rejects_a_copy_instead_of_writing_in_place():
    past = {}

    def concatenates(k_cache, v_cache, k_new, v_new, start):  # right answer, but the buffers stay empty
        key = id(k_cache)
        k, v = past.get(key, (k_new[:, :, :0], v_new[:, :, :0]))
        past[key] = torch.cat([k, k_new], dim=2), torch.cat([v, v_new], dim=2)
        return past[key]

    with pytest.raises(ExerciseFailed, match=r"k_cache \(written in place\): first differs at index \(0, 0, 0, 0\)"):
        lesson06.check_cache_update(concatenates)


def test_cache_update_rejects_returning_copies_instead_of_views():
    def copies(k_cache, v_cache, k_new, v_new, start):  # right values, but copies of the buffers' slices
        keys, values = SOLUTIONS.cache_update(k_cache, v_cache, k_new, v_new, start)
        return keys.clone(), values.clone()

    with pytest.raises(ExerciseFailed, match=r"start=0: returned keys are a view of the buffer \(no copy\): got False"):
        lesson06.check_cache_update(copies)


def test_cache_update_unwritten_is_not_attempted(capsys):
    assert lesson06.check_cache_update(unwritten) is False
    assert "not written yet" in capsys.readouterr().out


def test_top_p_filter_accepts_the_reference_solution():
    assert lesson06.check_top_p_filter(SOLUTIONS.top_p_filter) is True


def test_top_p_filter_rejects_dropping_the_token_that_crosses_p():
    def stops_short(logits, top_p):  # keeps the tokens whose descending cumulative probability is <= p
        descending, order = logits.sort(dim=-1, descending=True)
        drop = descending.softmax(dim=-1).cumsum(dim=-1) > top_p
        return logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)

    with pytest.raises(ExerciseFailed, match=r"top_p_filter\(random logits \(2, 50\), top_p=0.9\): first differs at"):
        lesson06.check_top_p_filter(stops_short)


def test_top_p_filter_rejects_a_nucleus_in_vocabulary_order():
    def unsorted(logits, top_p):  # the cumulative sum over token ids, not over tokens sorted by probability
        return logits.masked_fill(logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p, -math.inf)

    with pytest.raises(ExerciseFailed, match=r"top_p_filter\(random logits \(2, 50\), top_p=0.9\): first differs at"):
        lesson06.check_top_p_filter(unsorted)


def test_top_p_filter_rejects_probabilities_for_logits():
    def returns_probabilities(logits, top_p):
        return SOLUTIONS.top_p_filter(logits, top_p).softmax(dim=-1)

    with pytest.raises(ExerciseFailed, match=r"top_p_filter\(random logits \(2, 50\), top_p=0.9\): first differs at"):
        lesson06.check_top_p_filter(returns_probabilities)


def test_top_p_filter_unwritten_is_not_attempted(capsys):
    assert lesson06.check_top_p_filter(unwritten) is False
    assert "not written yet" in capsys.readouterr().out
