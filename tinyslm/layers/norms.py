"""Normalisation layers. Shapes: (..., D) -> (..., D).

    rmsnorm          w * rms(x)                       Llama, Qwen, Mistral, Phi-3, DeepSeek-V2
    rmsnorm_1p       (1 + w) * rms(x), w starts at 0  Gemma, Gemma-2, Gemma-3
    layernorm        w * (x - mean) / std + b         GPT-2, OPT, Bloom, Pythia, Phi-2, StableLM
    layernorm_1p     LayerNorm with weight (1 + w)    Nemotron / Minitron
    layernorm_plain  (x - mean) / std, no parameters  OLMo

The variants differ in *where* the float32 statistics are cast back, and that decides bit-level
parity with transformers in bfloat16 (each class says which order it follows). Every norm owns its
initialisation (`reset_parameters`): the identity function, which is w = 0 for the "1p" norms.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019), as Llama uses it.

    Notice the order: the statistics are computed in float32, the normalised activation is cast
    back to the input dtype, and only then multiplied by the weight.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:  # float32 in, float32 out
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * self.normalize(x.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class RMSNorm1P(RMSNorm):
    """Gemma's RMSNorm: the stored weight w is zero-centred and applied as (1 + w), in float32, before the cast."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.normalize(x.float()) * (1.0 + self.weight.float())).type_as(x)


class LayerNorm(nn.LayerNorm):
    """torch's LayerNorm (weight and bias), computed in the input dtype as transformers does."""


class LayerNorm1P(nn.LayerNorm):
    """Nemotron's LayerNorm1P: weight stored zero-centred, (1 + w) formed in the weight's dtype, no upcast."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight + 1.0, self.bias, self.eps)


class PlainLayerNorm(nn.Module):
    """OLMo's LayerNorm without weight or bias, computed in float32 (nothing is stored)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), (self.dim,), None, None, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class PerHeadNorm(nn.Module):
    """StableLM's per-head q/k norm: head h has its own bias-free LayerNorm. (B, H, T, hd) -> (B, H, T, hd)."""

    def __init__(self, head_dim: int, n_heads: int, eps: float):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(head_dim, eps=eps, bias=False) for _ in range(n_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = x.split(1, dim=1)  # H x (B, 1, T, hd)
        return torch.cat([norm(h) for norm, h in zip(self.norms, heads)], dim=1)


NORM_CLASSES = {
    "rmsnorm": RMSNorm,
    "rmsnorm_1p": RMSNorm1P,
    "layernorm": LayerNorm,
    "layernorm_1p": LayerNorm1P,
    "layernorm_plain": PlainLayerNorm,
}


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """The norm a config names (see the table at the top of this file)."""
    if kind not in NORM_CLASSES:
        raise ConfigError(f"unknown norm {kind!r}; use one of {', '.join(NORM_CLASSES)}")
    return NORM_CLASSES[kind](dim, eps=eps)
