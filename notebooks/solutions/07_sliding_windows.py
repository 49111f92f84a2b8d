"""Reference solutions of lesson 07 (sliding windows and the ring buffer)."""

import torch


def windowed_causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """(T, S) bool: the query at q_pos[i] may see the key at k_pos[j] (causal, within its last `window` keys).
    A negative key position is an empty cache slot and is never seen."""
    q, k = q_pos[:, None], k_pos[None, :]  # (T, 1), (1, S)
    return (k >= 0) & (k <= q) & (k > q - window)


def ring_positions(n_tokens: int, window: int) -> list[int]:
    """The position each of the `window` ring slots holds after n_tokens (slot = position % window).
    -1 marks a slot never written."""
    slots = [-1] * window
    for p in range(max(0, n_tokens - window), n_tokens):  # only the last W positions survive
        slots[p % window] = p
    return slots
