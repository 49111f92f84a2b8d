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
    """One forward call: slots start..start+T-1, their positions and RoPE tables, masks shared by the layers.

    A batch of prompts of different lengths is left-padded (`padding` (B,): how many slots each row's padding
    takes). Row b's token in slot s is then at position s - padding[b] (its prompt starts at position 0, as it
    would alone), so positions become (B, T) and RoPE tables (B, 1, T, d); and its keys in slots before
    padding[b] are masked, except that a padding query sees itself (a row with no key at all would be NaN).
    Without padding, slots are positions.
    """

    def __init__(self, start: int, length: int, device, tables: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                 padding: torch.Tensor | None = None):  # fmt: skip
        self.start, self.length, self.padding = start, length, padding
        self.slots = torch.arange(start, start + length, device=device)  # (T,)
        self.positions = self.key_positions(self.slots)  # (T,), or per row (B, T) with padding
        self.tables = tables or {}  # {"global": (cos, sin) (T, d) or (B, 1, T, d), ...}
        self._masks: dict = {}

    @classmethod
    def with_rope(cls, ropes: dict[str, nn.Module], start: int, length: int, device,
                  padding: torch.Tensor | None = None) -> "Step":  # fmt: skip
        step = cls(start, length, device, padding=padding)
        per_row = (lambda t: t[:, None]) if padding is not None else (lambda t: t)  # (B, T, d) -> (B, 1, T, d)
        step.tables = {key: tuple(map(per_row, rope(step.positions))) for key, rope in ropes.items()}
        return step

    def key_positions(self, k_slots: torch.Tensor) -> torch.Tensor:
        """The positions of the tokens in slots k_slots (S,): (S,), or per row (B, S) with padding (a padding slot's
        own position clamped to 0: nothing reads it)."""
        return k_slots if self.padding is None else (k_slots[None] - self.padding[:, None]).clamp(min=0)

    def rope(self, key: str = "global") -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.tables.get(key)

    def mask(self, k_pos: torch.Tensor | None, n_keys: int, window: int | None) -> torch.Tensor | None:
        """(T, S) mask for keys in slots k_pos (None: slots 0..n_keys-1), or (B, 1, T, S) with padding; None when
        every key is visible."""
        if k_pos is None:
            if self.length == 1 and window is None and self.padding is None:
                return None  # one new token with a full cache sees every key: no mask needed
            key = (n_keys, window)
            if key not in self._masks:
                self._masks[key] = self._mask(torch.arange(n_keys, device=self.slots.device), window)
            return self._masks[key]
        return self._mask(k_pos, window)

    def _mask(self, k_slots: torch.Tensor, window: int | None) -> torch.Tensor:
        allowed = attention_mask(self.slots, k_slots, window)  # (T, S): slot differences are position differences
        if self.padding is None:
            return allowed
        real = k_slots[None, None, :] >= self.padding[:, None, None]  # (B, 1, S): not a padding key
        itself = k_slots[None, :] == self.slots[:, None]  # (T, S)
        return (allowed & (real | itself))[:, None]  # (B, 1, T, S)

    def causal(self, k_pos: torch.Tensor | None, n_keys: int, window: int | None) -> bool:
        """True when `mask` is the plain causal triangle: a prompt from position 0 whose keys are its own
        T tokens, no window cutting in, no padding. A fused kernel takes that as a flag and skips the masked half."""
        return (k_pos is None and self.start == 0 and n_keys == self.length and self.padding is None
                and (window is None or window >= self.length))  # fmt: skip


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

    def forward(self, k_pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # (S,) -> (H, 1, S); (B, S) -> (B, H, 1, S)
        return (self.slopes[:, None, None] * k_pos.clamp(min=0).float()[..., None, None, :]).to(dtype)
