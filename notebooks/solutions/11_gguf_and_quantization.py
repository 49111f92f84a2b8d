"""Reference solutions of lesson 11 (GGUF and quantization)."""

import torch


def q8_0_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 blocks of x (..., 32): the scale d = max |x| / 127 (stored as float16) and the codes q = x / d rounded
    half away from zero (C's roundf, as llama.cpp), computed with the float32 d, as int8 -> d (...,), q (..., 32)."""
    x = x.float()
    d = x.abs().amax(dim=-1, keepdim=True) / 127  # (..., 1) float32
    inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)  # a block of zeros: d = 0, every code 0
    v = x * inv
    a = v.abs()
    q = torch.sign(v) * (a.floor() + (2 * (a - a.floor())).floor())  # round half away from zero
    return d[..., 0].to(torch.float16), q.to(torch.int8)


def q8_0_dequantize(d: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The values a Q8_0 block stands for: q * d in float32 -> (..., 32).
    d (...,) float16 widens to float32 exactly, so each value is one rounding of the product."""
    return q.float() * d.float()[..., None]
