"""Lesson 02, norms: the checkers of its exercises.

    rms_norm(x, weight, eps)      Llama's RMSNorm: w * x / sqrt(mean(x^2) + eps)
    rms_norm_1p(x, weight, eps)   Gemma's variant: the stored weight w is applied as (1 + w)
"""

from __future__ import annotations

import torch

from ..layers.norms import RMSNorm, RMSNorm1P
from .check import Exercise

# (shape, eps, input scale, dtype): a plain case, one position, a non-default eps, inputs so small that where eps
# goes decides the answer (mean(x^2) ~ 1e-6 beside eps = 1e-5), and bfloat16 inputs, where the order of the
# casts decides the answer: those are compared bit for bit (atol 0)
CASES = [
    ((2, 5, 8), 1e-6, 1.0, torch.float32),
    ((1, 1, 64), 1e-6, 3.0, torch.float32),
    ((4, 32), 1e-5, 1.0, torch.float32),
    ((3, 16), 1e-5, 1e-3, torch.float32),
    ((4, 8, 64), 1e-6, 1.0, torch.bfloat16),
    ((2, 3, 128), 1e-5, 3.0, torch.bfloat16),
]


def _inputs(shape, scale, seed, weight_centre):
    gen = torch.Generator().manual_seed(seed)
    x = scale * (torch.randn(shape, generator=gen) + 0.5)  # (..., D), not zero-mean: RMSNorm does not centre
    w = weight_centre + 0.1 * torch.randn(shape[-1], generator=gen)  # (D,)
    return x, w


def _check(student, name, module_class, hf_class, weight_centre, against) -> bool:
    with Exercise(name, against=against) as ex:
        for k, (shape, eps, scale, dtype) in enumerate(CASES):
            x, w = _inputs(shape, scale, 10 + k, weight_centre)
            x, w = x.to(dtype), w.to(dtype)
            ours, theirs = module_class(shape[-1], eps=eps).to(dtype), hf_class(shape[-1], eps=eps).to(dtype)
            with torch.no_grad():
                ours.weight.copy_(w)
                theirs.weight.copy_(w)
                want, hf_want = ours(x), theirs(x)
            exact = dtype != torch.float32  # bfloat16: bit for bit, or the casts are in another order
            case = f"{name}(x of shape {shape} and scale {scale:g}, eps={eps:g}{', bfloat16' if exact else ''})"
            got = student(x.clone(), w.clone(), eps)
            if exact:
                ex.compare(f"{case}: the dtype of the result", getattr(got, "dtype", None), dtype)
            tol = 0.0 if exact else 1e-5
            ex.compare(case, got, want, atol=tol, rtol=tol)
            ex.compare(f"{case} vs transformers' {hf_class.__name__}", got, hf_want, atol=tol, rtol=tol)
    return ex.passed


def check_rms_norm(rms_norm) -> bool:
    """Your RMSNorm against tinyslm.layers.norms.RMSNorm and transformers' LlamaRMSNorm."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm  # noqa: PLC0415  (optional dependency)

    return _check(rms_norm, "rms_norm", RMSNorm, LlamaRMSNorm, 1.0, "tinyslm's RMSNorm and transformers' LlamaRMSNorm")


def check_rms_norm_1p(rms_norm_1p) -> bool:
    """Your Gemma RMSNorm against tinyslm.layers.norms.RMSNorm1P and transformers' GemmaRMSNorm."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm  # noqa: PLC0415  (optional dependency)

    return _check(rms_norm_1p, "rms_norm_1p", RMSNorm1P, GemmaRMSNorm, 0.0,
                  "tinyslm's RMSNorm1P and transformers' GemmaRMSNorm")  # fmt: skip
