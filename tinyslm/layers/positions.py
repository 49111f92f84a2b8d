"""Where tokens are, and how attention learns it: the per-call `Step`, learned positions, ALiBi, masks.

Legend: T new positions, S key positions (cached + new), H heads, D model width.

Three ways a decoder knows token order (RoPE itself lives in rope.py):
    RoPE      rotate q and k by their positions (most models here)
    learned   add a trained row per position to the token embedding (GPT-2; OPT skips 2 rows)
    ALiBi     add slope_h * key_position to head h's scores (Bloom; Press et al. 2022)

A `Step` is what one forward call shares between its layers: the positions of its tokens, the
RoPE tables for them (computed once per call, one per table the layers use), and the attention
masks of layers whose keys sit at positions 0..S-1, built once per window and shared. (A ring-buffer
layer's keys sit in slot order, so its mask is built from the positions its cache returns.)
"""

from __future__ import annotations

import math

import torch
from torch import nn


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Boolean (T, S): True where the query at q_pos[i] may attend the key at k_pos[j].

    Causal: k <= q. With a sliding window W (transformers' rule): also k > q - W, i.e. each query
    sees its last W keys, itself included. A negative key position marks an empty cache slot.
    """
    q, k = q_pos[:, None], k_pos[None, :]  # (T, 1), (1, S)
    allowed = (k <= q) & (k >= 0)
    if window is not None:
        allowed &= k > q - window
    return allowed


class Step:
    """One forward call: positions start..start+T-1, their RoPE tables, and masks shared by the layers."""

    def __init__(self, start: int, length: int, device, tables: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.start, self.length = start, length
        self.positions = torch.arange(start, start + length, device=device)  # (T,)
        self.tables = tables or {}  # {"global": (cos, sin) (T, d), ...}
        self._masks: dict = {}

    @classmethod
    def with_rope(cls, ropes: dict[str, nn.Module], start: int, length: int, device) -> "Step":
        step = cls(start, length, device)
        step.tables = {key: rope(step.positions) for key, rope in ropes.items()}
        return step

    def rope(self, key: str = "global") -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.tables.get(key)

    def mask(self, k_pos: torch.Tensor | None, n_keys: int, window: int | None) -> torch.Tensor | None:
        """(T, S) mask for keys at k_pos (None: positions 0..n_keys-1); None when every key is visible."""
        if k_pos is None:
            if self.length == 1 and window is None:
                return None  # one new token with a full cache sees every key: no mask needed
            key = (n_keys, window)
            if key not in self._masks:
                positions = torch.arange(n_keys, device=self.positions.device)
                self._masks[key] = attention_mask(self.positions, positions, window)
            return self._masks[key]
        return attention_mask(self.positions, k_pos, window)

    def causal(self, k_pos: torch.Tensor | None, n_keys: int, window: int | None) -> bool:
        """True when `mask` is the plain causal triangle: a prompt from position 0 whose keys are its own
        T tokens, no window cutting in. A fused kernel takes that as a flag and skips the masked half."""
        return k_pos is None and self.start == 0 and n_keys == self.length and (window is None or window >= self.length)


class LearnedPositions(nn.Module):
    """A trained table of position vectors added to the token embeddings (GPT-2, OPT).

    OPT's table has `offset` = 2 extra rows in front (a fairseq legacy): position p reads row p + 2.
    """

    def __init__(self, max_positions: int, dim: int, offset: int = 0):
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.empty(max_positions + offset, dim))  # (P + offset, D)
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:  # (T,) -> (T, D)
        return nn.functional.embedding(positions + self.offset, self.weight)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's head slopes (H,): the geometric sequence 2^(-8/n), 2^(-16/n), ... for n a power of two;
    otherwise that of the power of two below, then odd powers of 2^(-4/n') for the rest (the paper's
    recipe). Computed with float32 `pow`, as Bloom does, so the slopes agree to the last bit."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = torch.tensor(2 ** (-8 / closest), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, closest + 1, dtype=torch.int32))
    if closest != n_heads:
        extra_base = torch.tensor(2 ** (-4 / closest), dtype=torch.float32)
        odd_powers = torch.arange(1, 1 + 2 * (n_heads - closest), 2, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, odd_powers)])
    return slopes


class ALiBi(nn.Module):
    """Attention with linear biases: head h adds slope_h * key_position to every score.

    Bloom's form: the bias depends on the key's absolute position only, which equals the paper's
    -slope * (q - k) up to a per-query constant that softmax cancels. Built in float32 and cast to
    the scores' dtype (as Bloom does), and never multiplied by the softmax scale.
    """

    def __init__(self, n_heads: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)  # (H,)

    def reset_buffers(self, device=None) -> None:
        self.slopes = alibi_slopes(self.slopes.shape[0]).to(device or ("cpu" if self.slopes.is_meta else self.slopes.device))

    def forward(self, k_pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # (S,) -> (H, 1, S)
        return (self.slopes[:, None, None] * k_pos.clamp(min=0).float()[None, None, :]).to(dtype)
