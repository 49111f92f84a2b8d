"""Reference solutions of lesson 06 (the KV cache and decoding)."""

import math


def cache_update(k_cache, v_cache, k_new, v_new, start):
    """Write k_new, v_new (B, K, T, hd) into the preallocated k_cache, v_cache (B, K, S, hd) at positions
    start..start+T-1, in place; return views of every position written so far, (B, K, start + T, hd) each."""
    end = start + k_new.shape[2]
    k_cache[:, :, start:end] = k_new
    v_cache[:, :, start:end] = v_new
    return k_cache[:, :, :end], v_cache[:, :, :end]


def top_p_filter(logits, top_p):
    """logits (B, V) -> (B, V) with every token outside the nucleus at -inf: the smallest set of most likely
    tokens whose probabilities sum to at least top_p (ascending, drop while the cumulative sum is <= 1 - p)."""
    ascending, order = logits.sort(dim=-1)  # (B, V), least likely first
    drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
    drop[..., -1] = False  # the most likely token always stays
    return logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
