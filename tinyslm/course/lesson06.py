"""Lesson 06 (the KV cache and decoding): the checkers of its exercises.

    check_cache_update(cache_update)     write new keys/values into a preallocated cache at the right offset
    check_top_p_filter(top_p_filter)     nucleus (top-p) filtering of logits
"""

from __future__ import annotations

import torch

from ..layers.cache import KVBuffer
from ..sampling import warp
from .check import Exercise


def check_cache_update(cache_update) -> bool:
    """Your cache_update(k_cache, v_cache, k_new, v_new, start) against tinyslm's KVBuffer.update (and what
    transformers' DynamicCache returns): a prompt, then single tokens, then a chunk, written at `start` into the
    preallocated (B, K, S, hd) buffers in place, returning the keys and values of positions 0..start + T - 1 as
    views of the buffers (sharing their memory)."""
    from transformers import DynamicCache  # noqa: PLC0415

    with Exercise("cache_update", against="tinyslm's KVBuffer.update and transformers' DynamicCache") as ex:
        gen = torch.Generator().manual_seed(6)
        for b, k, hd, chunks in [(1, 2, 4, [5, 1, 1, 3]), (2, 1, 8, [1, 1, 1]), (2, 3, 2, [4, 4])]:
            capacity = sum(chunks) + 2  # room to spare: the unwritten tail must stay out of the answer
            reference = KVBuffer(b, k, capacity, hd, hd, torch.float32, "cpu")
            hf_cache = DynamicCache()
            k_cache, v_cache = torch.zeros(b, k, capacity, hd), torch.zeros(b, k, capacity, hd)  # (B, K, S, hd)
            start = 0
            for t in chunks:
                k_new, v_new = torch.randn(b, k, t, hd, generator=gen), torch.randn(b, k, t, hd, generator=gen)
                case = f"cache of shape {(b, k, capacity, hd)}, writing {t} position(s) at start={start}"
                got = cache_update(k_cache, v_cache, k_new, v_new, start)
                want_k, want_v, _ = reference.update(k_new, v_new, start)
                if not isinstance(got, (tuple, list)) or len(got) != 2:
                    ex.compare(f"{case}: the result", type(got).__name__, "a (keys, values) pair")
                ex.compare(f"{case}: returned keys", got[0], want_k)
                ex.compare(f"{case}: returned values", got[1], want_v)
                hf_k, hf_v = hf_cache.update(k_new, v_new, 0)
                ex.compare(f"{case}: returned keys vs transformers' DynamicCache", got[0], hf_k)
                ex.compare(f"{case}: k_cache (written in place)", k_cache, reference.k)
                ex.compare(f"{case}: v_cache (written in place)", v_cache, reference.v)
                for what, view, buffer in (("keys", got[0], k_cache), ("values", got[1], v_cache)):
                    shares = view.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
                    ex.compare(f"{case}: returned {what} are a view of the buffer (no copy)", shares, True)
                start += t
    return ex.passed


def check_top_p_filter(top_p_filter) -> bool:
    """Your top_p_filter(logits (B, V), top_p) -> (B, V), dropped tokens at -inf, against tinyslm.sampling.warp
    and transformers' TopPLogitsWarper."""
    from transformers import TopPLogitsWarper  # noqa: PLC0415

    with Exercise("top_p_filter", against="tinyslm.sampling's nucleus filter and transformers' TopPLogitsWarper") as ex:
        gen = torch.Generator().manual_seed(60)
        peaked = torch.full((1, 10), -2.0)
        peaked[0, 3] = 6.0  # one token holds almost all the probability
        cases = [
            ("random logits (2, 50)", torch.randn(2, 50, generator=gen) * 2, 0.9),
            ("random logits (2, 50)", torch.randn(2, 50, generator=gen) * 2, 0.5),
            ("random logits (3, 20)", torch.randn(3, 20, generator=gen), 0.99),
            ("random logits (1, 30)", torch.randn(1, 30, generator=gen) * 3, 0.01),
            ("a peaked distribution (1, 10)", peaked, 0.5),
        ]
        for name, logits, p in cases:
            got = top_p_filter(logits.clone(), p)
            ex.compare(f"top_p_filter({name}, top_p={p})", got, warp(logits, None, None, p, None))
            hf = TopPLogitsWarper(p)(torch.zeros(logits.shape[0], 1, dtype=torch.long), logits.clone())
            ex.compare(f"top_p_filter({name}, top_p={p}) vs transformers' TopPLogitsWarper", got, hf)
    return ex.passed
