"""The pre-norm transformer block, and the builders that pick its parts from a config.

    h   = x + attention(attn_norm(x))
    out = h + ffn(ffn_norm(h))

The block does not know which attention, FFN or norm it holds: `build_block` chooses them from
the config (composition, not flags), so an ablation is a config change.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from ..config import ModelConfig
from .ffn import make_ffn
from .norms import RMSNorm, make_norm


class Block(nn.Module):
    def __init__(self, *, attn: nn.Module, ffn: nn.Module, attn_norm: nn.Module, ffn_norm: nn.Module):
        super().__init__()
        self.attn_norm, self.attn = attn_norm, attn
        self.ffn_norm, self.ffn = ffn_norm, ffn

    def forward(self, x: torch.Tensor, rope, start: int = 0, cache=None) -> torch.Tensor:  # (B, T, D)
        x = x + self.attn(self.attn_norm(x), rope, start, cache)
        return x + self.ffn(self.ffn_norm(x))


def build_attention(config: ModelConfig, layer: int) -> nn.Module:
    if config.attention == "mla":
        from .mla import MLAttention  # noqa: PLC0415  (MLA arrives with its own module)

        return MLAttention.from_config(config)
    shape = config.layer(layer)
    qk_norm = config.qk_norm
    return Attention(
        config.dim,
        shape.n_heads,
        shape.n_kv_heads,
        config.head_dim,
        qkv_bias=config.qkv_bias,
        out_bias=config.out_bias,
        q_norm=RMSNorm(config.head_dim, config.norm_eps) if qk_norm else None,
        k_norm=RMSNorm(config.head_dim, config.norm_eps) if qk_norm else None,
        rope_layout=config.rope_layout,
        softcap=config.attn_softcap,
        sliding_window=config.sliding_window,
    )


def build_block(config: ModelConfig, layer: int) -> Block:
    return Block(
        attn=build_attention(config, layer),
        ffn=make_ffn(config.ffn, config.dim, config.layer(layer).ffn_dim, config.activation, config.ffn_bias),
        attn_norm=make_norm(config.norm, config.dim, config.norm_eps),
        ffn_norm=make_norm(config.norm, config.dim, config.norm_eps),
    )
