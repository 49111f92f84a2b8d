"""Lesson 03's checkers: the reference solutions pass, plausible mistakes fail naming what differs, and an
unwritten exercise is reported, not raised."""

import pytest
import torch

from course_support import solutions
from tinyslm.course import lesson03
from tinyslm.course.check import ExerciseFailed

pytest.importorskip("transformers")
SOLUTIONS = solutions("03_rope")


def unwritten(*args):
    raise NotImplementedError  # your code here


def test_rope_inv_freq_accepts_the_reference_solution():
    assert lesson03.check_rope_inv_freq(SOLUTIONS.rope_inv_freq) is True


def test_rope_inv_freq_over_every_dim_fails_naming_the_shape():
    def every_dim(d, theta):  # one frequency per dim instead of per pair
        return 1.0 / theta ** (torch.arange(d).float() / d)

    with pytest.raises(ExerciseFailed, match=r"rope_inv_freq\(d=64, theta=10000\): shape \(64,\), expected \(32,\)"):
        lesson03.check_rope_inv_freq(every_dim)


def test_rope_inv_freq_without_the_two_fails():
    def half_exponent(d, theta):  # theta^(-i/d): the slowest pair turns far too fast
        return 1.0 / theta ** (torch.arange(d // 2).float() / d)

    with pytest.raises(ExerciseFailed, match=r"rope_inv_freq\(d=64, theta=10000\): first differs at index \(1,\)"):
        lesson03.check_rope_inv_freq(half_exponent)


def test_rope_inv_freq_unwritten_returns_false(capsys):
    assert lesson03.check_rope_inv_freq(unwritten) is False
    assert "not written yet" in capsys.readouterr().out


def test_apply_rotary_accepts_the_reference_solution():
    assert lesson03.check_apply_rotary(SOLUTIONS.apply_rotary) is True


def test_apply_rotary_with_the_halves_swapped_the_wrong_way_fails():
    def wrong_half(x, cos, sin):  # [b | -a]: rotates by -angle
        a, b = x.chunk(2, dim=-1)
        return x * cos + torch.cat((b, -a), dim=-1) * sin

    at_position_1 = r"apply_rotary\(x \(1, 2, 5, 8\), positions 0..4\): first differs at index \(0, 0, 1, 0\)"
    with pytest.raises(ExerciseFailed, match=at_position_1):
        lesson03.check_apply_rotary(wrong_half)


def test_apply_rotary_with_interleaved_pairs_fails():
    def interleaved(x, cos, sin):  # pairs (2i, 2i + 1): another checkpoint layout
        even, odd = x[..., 0::2], x[..., 1::2]
        c, s = cos[..., : x.shape[-1] // 2], sin[..., : x.shape[-1] // 2]
        return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)

    with pytest.raises(ExerciseFailed, match=r"apply_rotary\(x \(1, 2, 5, 8\), positions 0..4\): first differs"):
        lesson03.check_apply_rotary(interleaved)


def test_apply_rotary_that_drops_yarns_attention_factor_fails():
    def unit_tables(x, cos, sin):  # cos/sin renormalised to cos^2 + sin^2 = 1: YaRN's scale is lost
        r = (cos**2 + sin**2).sqrt()
        return SOLUTIONS.apply_rotary(x, cos / r, sin / r)

    with pytest.raises(ExerciseFailed, match=r"positions 7..12, YaRN\): first differs"):
        lesson03.check_apply_rotary(unit_tables)


def test_apply_rotary_unwritten_returns_false(capsys):
    assert lesson03.check_apply_rotary(unwritten) is False
    assert "not written yet" in capsys.readouterr().out
