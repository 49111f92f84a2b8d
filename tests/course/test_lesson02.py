"""Lesson 02's checkers: the reference solutions pass, plausible mistakes fail naming what differs, and an
unwritten exercise is reported, not raised."""

import pytest
import torch

from course_support import solutions
from tinyslm.course import lesson02
from tinyslm.course.check import ExerciseFailed

pytest.importorskip("transformers")
SOLUTIONS = solutions("02_norms")


def unwritten(x, weight, eps):
    raise NotImplementedError  # your code here


def test_rms_norm_accepts_the_reference_solution():
    assert lesson02.check_rms_norm(SOLUTIONS.rms_norm) is True


def test_rms_norm_with_eps_outside_the_root_fails_on_small_inputs():
    def eps_outside(x, weight, eps):
        return weight * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)

    with pytest.raises(ExerciseFailed, match=r"rms_norm\(x of shape \(3, 16\) and scale 0.001, eps=1e-05\): first"):
        lesson02.check_rms_norm(eps_outside)


def test_rms_norm_that_centres_like_layernorm_fails():
    def centred(x, weight, eps):
        x = x - x.mean(-1, keepdim=True)
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    with pytest.raises(ExerciseFailed, match=r"rms_norm\(x of shape \(2, 5, 8\).*elements differ"):
        lesson02.check_rms_norm(centred)


def test_rms_norm_over_the_wrong_dim_fails():
    def first_dim(x, weight, eps):
        return weight * x * torch.rsqrt(x.pow(2).mean(0, keepdim=True) + eps)

    with pytest.raises(ExerciseFailed, match="rms_norm"):
        lesson02.check_rms_norm(first_dim)


def test_rms_norm_with_gemmas_cast_order_fails_on_bfloat16():
    def weight_in_float32(x, weight, eps):  # multiplies by w before the cast back: Gemma's order, not Llama's
        xf = x.float()
        return (weight.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    with pytest.raises(ExerciseFailed, match=r"rms_norm\(x of shape \(4, 8, 64\).*bfloat16\): first differs"):
        lesson02.check_rms_norm(weight_in_float32)


def test_rms_norm_returning_float32_for_bfloat16_fails():
    def stays_float32(x, weight, eps):
        xf = x.float()
        return weight.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)

    with pytest.raises(ExerciseFailed, match=r"bfloat16\): the dtype of the result: got torch.float32"):
        lesson02.check_rms_norm(stays_float32)


def test_rms_norm_unwritten_returns_false(capsys):
    assert lesson02.check_rms_norm(unwritten) is False
    assert "not written yet" in capsys.readouterr().out


def test_rms_norm_1p_accepts_the_reference_solution():
    assert lesson02.check_rms_norm_1p(SOLUTIONS.rms_norm_1p) is True


def test_rms_norm_1p_without_the_one_fails():
    with pytest.raises(ExerciseFailed, match=r"rms_norm_1p\(x of shape \(2, 5, 8\).*differs at index \(0, 0, 0\)"):
        lesson02.check_rms_norm_1p(SOLUTIONS.rms_norm)  # Llama's weight where Gemma's is (1 + w)


def test_rms_norm_1p_with_llamas_cast_order_fails_on_bfloat16():
    def cast_before_the_weight(x, weight, eps):  # rounds to bfloat16, then (1 + w) in bfloat16: Llama's order
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * (1 + weight)

    with pytest.raises(ExerciseFailed, match=r"rms_norm_1p\(x of shape \(4, 8, 64\).*bfloat16\): first differs"):
        lesson02.check_rms_norm_1p(cast_before_the_weight)


def test_rms_norm_1p_unwritten_returns_false(capsys):
    assert lesson02.check_rms_norm_1p(unwritten) is False
    assert "not written yet" in capsys.readouterr().out
