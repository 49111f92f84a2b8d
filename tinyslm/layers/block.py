"""Transformer blocks, and the builders that pick their parts from a config.

    SequentialBlock (Llama, GPT-2, OPT, Bloom, ...):
        h   = x + s * attn_out_norm(attention(attn_norm(x)))
        out = h + s * ffn_out_norm(ffn(ffn_norm(h)))
        (attn_out_norm / ffn_out_norm are Gemma-2/3's "sandwich" norms, identities elsewhere;
         s is MiniCPM's residual scale scale_depth / sqrt(n_layers), 1 elsewhere)

    ParallelBlock (GPT-NeoX / Pythia, Phi-2, StableLM with use_parallel_residual):
        out = x + attention(attn_norm(x)) + ffn(ffn_norm(x))
        (Phi-2 and StableLM have a single norm: the FFN reads attn_norm(x) too)

A block does not know which attention, FFN or norms it holds: `build_block` chooses them from the
config's `LayerSpec` for that layer (composition, not flags), so an ablation is a config change.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .attention import Attention
from .ffn import make_ffn
from .mla import MLAttention
from .norms import PerHeadNorm, make_norm
from .positions import ALiBi, Step


class Scale(nn.Module):
    """x * s, with s a Python float as transformers multiplies it (one rounding in the activations' dtype).

    MiniCPM's depth scaling (muP): every residual branch x scale_depth / sqrt(n_layers) before the add.
    """

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


class SequentialBlock(nn.Module):
    def __init__(
        self,
        *,
        attn: nn.Module,
        ffn: nn.Module,
        attn_norm: nn.Module,
        ffn_norm: nn.Module,
        attn_out_norm: nn.Module | None = None,
        ffn_out_norm: nn.Module | None = None,
        branch_scale: nn.Module | None = None,
    ):
        super().__init__()
        self.attn_norm, self.attn = attn_norm, attn
        self.attn_out_norm = attn_out_norm or nn.Identity()
        self.ffn_norm, self.ffn = ffn_norm, ffn
        self.ffn_out_norm = ffn_out_norm or nn.Identity()
        self.branch_scale = branch_scale or nn.Identity()

    def forward(self, x: torch.Tensor, step: Step, cache=None) -> torch.Tensor:  # (B, T, D)
        x = x + self.branch_scale(self.attn_out_norm(self.attn(self.attn_norm(x), step, cache)))
        return x + self.branch_scale(self.ffn_out_norm(self.ffn(self.ffn_norm(x))))


class ParallelBlock(nn.Module):
    """Attention and FFN both read the block's input; their outputs are added to it together.

    ffn_norm=None: one shared norm (Phi-2, StableLM); else GPT-NeoX's second norm.
    """

    def __init__(self, *, attn: nn.Module, ffn: nn.Module, attn_norm: nn.Module, ffn_norm: nn.Module | None = None):
        super().__init__()
        self.attn_norm, self.attn = attn_norm, attn
        self.ffn_norm, self.ffn = ffn_norm, ffn

    def forward(self, x: torch.Tensor, step: Step, cache=None) -> torch.Tensor:  # (B, T, D)
        h = self.attn_norm(x)
        if self.ffn_norm is None:  # one shared norm; summed as StableLM does
            return x + self.attn(h, step, cache) + self.ffn(h)
        a = self.attn(h, step, cache)
        return self.ffn(self.ffn_norm(x)) + a + x  # GPT-NeoX's order (it decides bf16 rounding, nothing else)


def build_attention(config: ModelConfig, layer: int) -> nn.Module:
    if config.attention == "mla":
        return MLAttention.from_config(config)
    spec = config.layer(layer)
    hd = config.head_dim
    if config.qk_norm_per_head:
        q_norm, k_norm = PerHeadNorm(hd, spec.n_heads, config.norm_eps), PerHeadNorm(hd, spec.n_kv_heads, config.norm_eps)
    elif config.qk_norm:
        q_norm, k_norm = make_norm(config.norm, hd, config.norm_eps), make_norm(config.norm, hd, config.norm_eps)
    else:
        q_norm = k_norm = None
    return Attention(
        config.dim,
        spec.n_heads,
        spec.n_kv_heads,
        hd,
        qkv_bias=config.qkv_bias,
        out_bias=config.out_bias,
        q_norm=q_norm,
        k_norm=k_norm,
        rope_layout=config.rope_layout,
        rope_fp32=config.rope_fp32,
        rope_key=spec.rope,
        scale=config.attn_scale,
        softcap=config.attn_softcap,
        window=spec.window,
        pos_bias=ALiBi(spec.n_heads) if config.positions == "alibi" else None,
        qkv_clip=config.qkv_clip,
    )


def build_ffn(config: ModelConfig, layer: int) -> nn.Module:
    return make_ffn(config.ffn, config.dim, config.layer(layer).ffn_dim, config.activation, config.ffn_bias)


def build_block(config: ModelConfig, layer: int, ffn: nn.Module | None = None) -> nn.Module:
    """Block `layer` of `config`; `ffn` given: that module (MobiLlama passes every block the same one)."""
    norm = lambda: make_norm(config.norm, config.dim, config.norm_eps)  # noqa: E731
    attn = build_attention(config, layer)
    ffn = ffn if ffn is not None else build_ffn(config, layer)
    if config.block == "parallel":
        return ParallelBlock(attn=attn, ffn=ffn, attn_norm=norm(), ffn_norm=norm())
    if config.block == "parallel_shared_norm":
        return ParallelBlock(attn=attn, ffn=ffn, attn_norm=norm())
    sandwich = config.sandwich_norms
    return SequentialBlock(
        attn=attn, ffn=ffn, attn_norm=norm(), ffn_norm=norm(),
        attn_out_norm=norm() if sandwich else None, ffn_out_norm=norm() if sandwich else None,
        branch_scale=None if config.residual_scale is None else Scale(config.residual_scale),
    )  # fmt: skip
