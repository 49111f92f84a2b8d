"""Lesson 07 (notebooks/07_sliding_windows.py): sliding-window attention and the ring-buffer KV cache.

    check_windowed_causal_mask   the (T, S) boolean mask of a window-W layer, keys given by their positions
                                 (a negative position is an empty cache slot), against
                                 tinyslm.layers.positions.attention_mask and transformers' sliding-window mask
    check_ring_positions         which position each of the W slots of a ring buffer holds after n tokens,
                                 against what tinyslm's RingKVBuffer actually stores
"""

from __future__ import annotations

import torch

from ..layers.cache import RingKVBuffer
from ..layers.positions import attention_mask
from .check import Exercise

# (query positions, key positions, window): a prompt, a decode step over ring slots (out of order, one empty),
# a chunk after a cache, a window of 1, a window longer than everything
MASK_CASES = [
    (list(range(12)), list(range(12)), 4),
    ([9], [8, 9, 6, 7], 4),
    ([2], [0, 1, 2, -1], 4),
    ([5, 6, 7], [4, 1, 2, 3, 5, 6, 7], 4),
    (list(range(6)), list(range(6)), 1),
    (list(range(7)), list(range(7)), 100),
    ([12, 13], [8, 9, 10, 11, 12, 13], 3),
]


def check_windowed_causal_mask(windowed_causal_mask) -> bool:
    """Your mask against tinyslm's attention_mask and transformers' sliding_window_causal_mask_function."""
    with Exercise("windowed_causal_mask", against="tinyslm's attention_mask and transformers' sliding-window mask") as ex:
        for q, k, window in MASK_CASES:
            q_pos, k_pos = torch.tensor(q), torch.tensor(k)
            want = attention_mask(q_pos, k_pos, window)  # (T, S) bool
            got = windowed_causal_mask(q_pos, k_pos, window)
            ex.compare(f"windowed_causal_mask(q_pos={q}, k_pos={k}, window={window})", got, want)
            if min(k) >= 0:  # transformers' mask function knows no empty slots
                from transformers.masking_utils import sliding_window_causal_mask_function  # noqa: PLC0415

                theirs = sliding_window_causal_mask_function(window)(0, 0, q_pos[:, None], k_pos[None, :])
                ex.compare(f"transformers' mask for q_pos={q}, k_pos={k}, window={window}", got, theirs)
    return ex.passed


def ring_positions_stored(n_tokens: int, window: int, chunk: int) -> list[int]:
    """What a RingKVBuffer's slots hold after n_tokens, fed `chunk` tokens per call (-1: empty)."""
    ring = RingKVBuffer(1, 1, window, max(n_tokens, 1), 2, torch.float32, "cpu")
    start = 0
    while start < n_tokens:
        t = min(chunk, n_tokens - start)
        ring.update(torch.zeros(1, 1, t, 2), torch.zeros(1, 1, t, 2), start)
        start += t
    return ring.pos.tolist()


def check_ring_positions(ring_positions) -> bool:
    """Your slot contents against a real RingKVBuffer fed token by token and in chunks."""
    with Exercise("ring_positions", against="what tinyslm's RingKVBuffer stores") as ex:
        for n_tokens, window in [(0, 4), (3, 4), (4, 4), (5, 4), (12, 4), (13, 4), (7, 1), (10, 3)]:
            for chunk in (1, 5):
                want = ring_positions_stored(n_tokens, window, chunk)
                got = ring_positions(n_tokens, window)
                got = got.tolist() if isinstance(got, torch.Tensor) else list(got)
                ex.compare(f"ring_positions(n_tokens={n_tokens}, window={window}) (fed {chunk} per call)", got, want)
    return ex.passed
