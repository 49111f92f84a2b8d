"""Lesson 04 (MHA, GQA and MQA): the checkers of its exercises.

    check_repeat_kv(repeat_kv)                  K key/value heads repeated to H = K x n_rep, in transformers' order
    check_causal_attention(causal_attention)    scaled dot-product attention with a causal mask, by hand
"""

from __future__ import annotations

import torch

from ..layers.attention import attend, causal_mask
from .check import Exercise


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=gen)


def check_repeat_kv(repeat_kv) -> bool:
    """Your repeat_kv(x (B, K, S, hd), n_rep) -> (B, K * n_rep, S, hd) against transformers' repeat_kv, and
    against tinyslm's grouped attention: MHA over your repeated keys and values must equal GQA over the K heads."""
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv  # noqa: PLC0415

    with Exercise("repeat_kv", against="transformers' repeat_kv and tinyslm's grouped attention") as ex:
        gen = torch.Generator().manual_seed(4)
        for b, k, s, hd, n_rep in [(2, 2, 5, 4, 3), (1, 4, 7, 8, 2), (1, 1, 3, 4, 4), (1, 3, 1, 2, 1)]:
            x = _randn(gen, b, k, s, hd)  # (B, K, S, hd)
            ex.compare(f"repeat_kv(x of shape {(b, k, s, hd)}, n_rep={n_rep})", repeat_kv(x, n_rep),
                       hf_repeat_kv(x, n_rep))  # fmt: skip
        # the reason for the order: query head h reads KV head h // n_rep, which is what tinyslm's attend does
        b, k, t, hd, n_rep = 2, 2, 6, 8, 4
        q, keys, values = _randn(gen, b, k * n_rep, t, hd), _randn(gen, b, k, t, hd), _randn(gen, b, k, t, hd)
        mask = causal_mask(t, t, 0, None, "cpu")
        grouped = attend(q, keys, values, scale=hd**-0.5, mask=mask)  # (B, H, T, hd): GQA, K = 2
        repeated = attend(q, repeat_kv(keys, n_rep), repeat_kv(values, n_rep), scale=hd**-0.5, mask=mask)  # MHA
        ex.compare(f"MHA attention over repeat_kv(k and v, n_rep={n_rep}) vs GQA attention over K={k} heads",
                   repeated, grouped, atol=1e-6)  # fmt: skip
    return ex.passed


def check_causal_attention(causal_attention) -> bool:
    """Your causal_attention(q, k, v) (each (B, H, T, hd)) -> (B, H, T, hd) against tinyslm's attend with a causal
    mask and torch's scaled_dot_product_attention(is_causal=True)."""
    with Exercise("causal_attention", against="tinyslm's attend (causal mask) and torch's SDPA") as ex:
        gen = torch.Generator().manual_seed(40)
        for b, h, t, hd in [(2, 4, 6, 8), (1, 2, 1, 16), (1, 1, 9, 4)]:
            q, k, v = (_randn(gen, b, h, t, hd) * 2 for _ in range(3))  # scores of order one: the scale shows
            got = causal_attention(q, k, v)
            want = attend(q, k, v, scale=hd**-0.5, mask=causal_mask(t, t, 0, None, "cpu"))
            ex.compare(f"causal_attention(q, k, v of shape {(b, h, t, hd)})", got, want, atol=1e-5)
            sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            ex.compare(f"causal_attention(q, k, v of shape {(b, h, t, hd)}) vs torch's SDPA", got, sdpa, atol=1e-5)
    return ex.passed
