"""Normalisation layers: RMSNorm (Llama, Qwen, ...) and LayerNorm (GPT-2, Phi-2, StableLM, ...).

Shapes: (..., D) -> (..., D).
"""

import torch
from torch import nn

from ..errors import ConfigError


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019), as Llama uses it.

    Notice the order, which decides bit-level parity with transformers: the statistics are
    computed in float32, the normalised activation is cast back to the input dtype, and only
    then multiplied by the weight.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """The norm a config names: 'rmsnorm' or 'layernorm' (with bias, as torch defines it)."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ConfigError(f"unknown norm {kind!r}; use 'rmsnorm' or 'layernorm'")
