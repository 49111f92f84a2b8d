"""Reference solutions of lesson 04 (MHA, GQA and MQA)."""

import torch


def repeat_kv(x, n_rep):
    """x (B, K, S, hd) -> (B, K * n_rep, S, hd): each KV head repeated n_rep times in place, so that
    head h of the result is KV head h // n_rep (transformers' repeat_kv)."""
    b, k, s, hd = x.shape
    return x[:, :, None].expand(b, k, n_rep, s, hd).reshape(b, k * n_rep, s, hd)


def causal_attention(q, k, v):
    """q, k, v (B, H, T, hd) -> (B, H, T, hd): softmax(q k^T / sqrt(hd)) v, position i attending to
    keys 0..i only (the causal mask sets the scores of later keys to -inf before the softmax)."""
    t, hd = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-1, -2) / hd**0.5  # (B, H, T, T)
    future = torch.ones(t, t, dtype=torch.bool).triu(diagonal=1)  # True above the diagonal: keys after the query
    scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1) @ v
