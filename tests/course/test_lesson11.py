"""Lesson 11's checker: right on the reference solution, a named failure on plausible slips, quiet when unwritten."""

import pytest
import torch

from course_support import solutions
from tinyslm.course import lesson11
from tinyslm.course.check import ExerciseFailed

pytest.importorskip("gguf")  # the checker's reference is the gguf package's quantizer

SOLUTIONS = solutions("11_gguf_and_quantization")
quantize, dequantize = SOLUTIONS.q8_0_quantize, SOLUTIONS.q8_0_dequantize


def test_the_reference_solution_passes():
    assert lesson11.check_q8_0(quantize, dequantize) is True


def test_unwritten_functions_are_not_attempted(capsys):
    def unwritten(*args):
        raise NotImplementedError

    assert lesson11.check_q8_0(unwritten, unwritten) is False
    assert lesson11.check_q8_0(quantize, unwritten) is False  # half done: not passed either
    assert capsys.readouterr().out.count("not written yet") == 2


def _torch_round(x):  # halves to even, not away from zero as llama.cpp's roundf
    x = x.float()
    d = x.abs().amax(-1, keepdim=True) / 127
    q = torch.round(x * torch.where(d == 0, torch.zeros_like(d), 1 / d))
    return d[..., 0].half(), q.to(torch.int8)


def _scale_from_float16(x):  # q computed with the float16-rounded scale
    x = x.float()
    d = (x.abs().amax(-1, keepdim=True) / 127).half().float()
    d_ok, _ = quantize(x)
    v = x * torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.sign(v) * (v.abs() + 0.5).floor()
    return d_ok, q.to(torch.int8)


def _signed_max(x):  # the largest value instead of the largest magnitude
    x = x.float()
    d = x.amax(-1, keepdim=True) / 127
    v = x * torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = (torch.sign(v) * (v.abs() + 0.5).floor()).clamp(-127, 127)
    return d[..., 0].half(), q.to(torch.int8)


def _over_128(x):  # 128 levels a side: but int8's -128 has no +128 partner
    x = x.float()
    d = x.abs().amax(-1, keepdim=True) / 128
    v = x * torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = (torch.sign(v) * (v.abs() + 0.5).floor()).clamp(-128, 127)
    return d[..., 0].half(), q.to(torch.int8)


def _nan_for_zeros(x):  # x / d without guarding d = 0
    x = x.float()
    d = x.abs().amax(-1, keepdim=True) / 127
    v = x / d
    return d[..., 0].half(), (torch.sign(v) * (v.abs() + 0.5).floor()).nan_to_num(99).to(torch.int8)


def _float32_scale(x):  # the scale not stored as float16
    d, q = quantize(x)
    return x.float().abs().amax(-1) / 127, q


def _dequantize_in_half(d, q):  # the product rounded to float16
    return (q.half() * d[..., None]).float()


@pytest.mark.parametrize("wrong_q, wrong_dq, fragment", [
    (_torch_round, dequantize, r"exact halves .*: the codes q: first differs at index \(1,\): got 2, expected 3"),
    (_scale_from_float16, dequantize, "the codes q: first differs"),
    (_signed_max, dequantize, "largest |value| is negative: the scales d"),
    (_over_128, dequantize, r"4 blocks of N\(0, 1\) values, x of shape \(4, 32\): the scales d"),
    (_nan_for_zeros, dequantize, r"a block of zeros \(d = 0; no division by zero\): the codes q"),
    (_float32_scale, dequantize, "d has dtype torch.float32, expected torch.float16"),
    (quantize, _dequantize_in_half, r"q8_0_dequantize\(d, q\): first differs"),
])  # fmt: skip
def test_a_plausible_slip_fails_naming_the_case(wrong_q, wrong_dq, fragment):
    with pytest.raises(ExerciseFailed, match=fragment):
        lesson11.check_q8_0(wrong_q, wrong_dq)


def test_the_reference_is_the_gguf_packages_q8_0():
    """reference_q8_0 reads back exactly the bytes gguf.quants writes (d, then 32 int8), whatever the batch shape."""
    from gguf import GGMLQuantizationType, quants  # noqa: PLC0415

    x = torch.randn(3, 2, 32, generator=torch.Generator().manual_seed(0))
    d, q, values = lesson11.reference_q8_0(x)
    raw = quants.quantize(x.reshape(-1, 32).numpy(), GGMLQuantizationType.Q8_0).reshape(6, 34)
    assert d.shape == (3, 2) and q.shape == (3, 2, 32) and d.dtype == torch.float16 and q.dtype == torch.int8
    assert torch.equal(d.reshape(-1), torch.from_numpy(raw[:, :2].copy().view("float16")).reshape(-1))
    assert torch.equal(q.reshape(6, 32), torch.from_numpy(raw[:, 2:].copy().view("int8")))
    assert torch.equal(values, q.float() * d.float()[..., None])
