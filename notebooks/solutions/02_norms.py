"""Reference solutions of lesson 02, norms."""

import torch


def rms_norm(x, weight, eps):
    """Llama's RMSNorm: x divided by its root mean square over the last dim (eps inside the root), times weight.
    x (..., D), weight (D,) -> (..., D); the statistics in float32, cast back before the weight."""
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rms_norm_1p(x, weight, eps):
    """Gemma's RMSNorm: the same normalisation, times (1 + weight) with weight stored zero-centred.
    x (..., D), weight (D,) -> (..., D); all in float32, cast back at the end."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + weight.float())).to(x.dtype)
