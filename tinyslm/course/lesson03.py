"""Lesson 03, rotary position embeddings (RoPE): the checkers of its exercises.

    rope_inv_freq(d, theta)      the default RoPE frequencies theta^(-2i/d), one per rotated pair
    apply_rotary(x, cos, sin)    the split-half (rotate_half) rotation of HF Llama/Qwen checkpoints
"""

from __future__ import annotations

import torch

from ..layers.rope import RotaryEmbedding, apply_rope, compute_inv_freq
from .check import Exercise


def check_rope_inv_freq(rope_inv_freq) -> bool:
    """Your frequencies against tinyslm's compute_inv_freq (no scaling) and transformers' default RoPE init."""
    from transformers import LlamaConfig  # noqa: PLC0415  (optional dependency)
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: PLC0415

    cases = [(64, 10000.0), (128, 500000.0), (8, 10000.0), (2, 10000.0), (96, 1000000.0)]
    with Exercise("rope_inv_freq", against="tinyslm's compute_inv_freq and transformers' default RoPE") as ex:
        for d, theta in cases:
            case = f"rope_inv_freq(d={d}, theta={theta:g})"
            got = rope_inv_freq(d, theta)
            want, _ = compute_inv_freq(d, theta, None, max_seq_len=2048)
            ex.compare(case, got, want, rtol=1e-6)
            default = {"rope_type": "default", "rope_theta": theta}
            hf = LlamaConfig(hidden_size=d * 2, num_attention_heads=2, rope_parameters=default)
            theirs, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(hf)
            ex.compare(f"{case} vs transformers", got, theirs, rtol=1e-6)
    return ex.passed


def check_apply_rotary(apply_rotary) -> bool:
    """Your rotation against tinyslm's apply_rope (split-half layout) and transformers' apply_rotary_pos_emb."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # noqa: PLC0415  (optional dependency)

    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
    cases = [  # (B, H, T, d), first position, scaling
        ((1, 2, 5, 8), 0, None),
        ((2, 4, 1, 16), 0, None),  # a single position: position 0 is no rotation at all
        ((1, 1, 3, 64), 1000, None),  # positions 1000..1002, as in decoding after a long prompt
        ((2, 2, 6, 32), 7, yarn),  # YaRN scales cos and sin by its attention factor
    ]
    with Exercise("apply_rotary", against="tinyslm's apply_rope and transformers' apply_rotary_pos_emb") as ex:
        for k, (shape, start, scaling) in enumerate(cases):
            _, _, t, d = shape
            x = torch.randn(shape, generator=torch.Generator().manual_seed(30 + k))  # (B, H, T, d)
            cos, sin = RotaryEmbedding(d, 10000.0, scaling, 1024)(torch.arange(start, start + t))  # (T, d) each
            case = f"apply_rotary(x {shape}, positions {start}..{start + t - 1}{', YaRN' if scaling else ''})"
            got = apply_rotary(x.clone(), cos, sin)
            ex.compare(case, got, apply_rope(x, cos, sin, layout="half"), atol=1e-5, rtol=1e-5)
            theirs, _ = apply_rotary_pos_emb(x, x, cos[None], sin[None])  # cos/sin (1, T, d), broadcast over heads
            ex.compare(f"{case} vs transformers", got, theirs, atol=1e-5, rtol=1e-5)
    return ex.passed
