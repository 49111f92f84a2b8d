"""Reference solutions of lesson 03, rotary position embeddings."""

import torch


def rope_inv_freq(d, theta):
    """The default RoPE frequencies: pair i of d rotated dims turns by theta^(-2i/d) radians per position.
    d (even), theta -> (d/2,) float32."""
    return 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))


def apply_rotary(x, cos, sin):
    """The split-half RoPE rotation: dims i and i + d/2 form a pair, x * cos + rotate_half(x) * sin.
    x (B, H, T, d), cos and sin (T, d) -> (B, H, T, d)."""
    a, b = x.chunk(2, dim=-1)  # (B, H, T, d/2) each
    return x * cos + torch.cat((-b, a), dim=-1) * sin
