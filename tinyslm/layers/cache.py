"""The KV cache: pre-allocated per-layer buffers for incremental decoding.

Legend: B batch, K KV heads, S capacity (prompt + new tokens), W window, hd head_dim.

Decoding one token at a time recomputes nothing for the past: each attention layer appends the
new token's key and value to its buffer and attends over everything stored so far. The buffers
are allocated once, sized to exactly what the request needs (prompt + max_new_tokens), never to
the model's maximum context.

Every layer cache follows one protocol (`LayerCache`): `update(...)` stores the new positions and
returns what attention reads, `tensors()` lists the buffers (for byte counts). Each attention type
decides what it stores:

    KVBuffer      K and V of every position so far: (B, K, S, hd) each          MHA / GQA / MQA
    RingKVBuffer  K and V of the last W positions only: (B, K, W, hd) each      sliding-window layers
    MLACache      one latent per position: (B, S, r + dr)                        MLA (mla.py)

The ring buffer writes position p into slot p % W and remembers each slot's position; attention
masks by those positions (positions.attention_mask), so the slots need no order. Two cases:
    one new token   write it, then attend over the W slots: exactly the W keys its window holds
    a chunk of T    attend over (the W stored + the T new) keys, *then* keep the last W of them:
                    writing first would overwrite keys the chunk's early queries still need
This stays exact past the window and for prefills longer than the window (tests/reference/test_attention.py,
tests/families/test_parity.py: hypothesis over lengths around the window).

A fourth, which returns all S slots at every step (fixed shapes for a compiled step), lives with that step in
tinyslm.runtime.compiled (StaticKVBuffer).

`KVCache` holds one layer cache per depth step (a shared block that runs twice gets two).
"""

from __future__ import annotations

import torch

from ..errors import GenerationError


class LayerCache:
    """The protocol: `capacity` positions, `update` (per attention type), `tensors()` for byte counts."""

    capacity: int
    keeps_every_position = True  # positions 0..length-1 all stay readable (KVCache.truncate can go back)

    def tensors(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def check_room(self, start: int, t: int) -> int:
        end = start + t
        if end > self.capacity:
            raise GenerationError(f"KV cache overflow: position {end} exceeds the cache capacity {self.capacity}")
        return end


class KVBuffer(LayerCache):
    """Keys and values of one attention layer: k, v (B, K, S, hd)."""

    def __init__(self, batch: int, n_kv_heads: int, capacity: int, k_dim: int, v_dim: int, dtype, device):
        self.capacity = capacity
        self.k = torch.zeros(batch, n_kv_heads, capacity, k_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_kv_heads, capacity, v_dim, dtype=dtype, device=device)

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Store k, v (B, K, T, hd) at positions start..start+T; return all keys/values so far (positions 0..end-1)."""
        end = self.check_room(start, k.shape[2])
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end], None  # (B, K, end, hd)

    def tensors(self) -> list[torch.Tensor]:
        return [self.k, self.v]


class RingKVBuffer(LayerCache):
    """Keys and values of a sliding-window layer: the last W positions in W slots, slot = position % W."""

    keeps_every_position = False  # a slot is overwritten W positions later

    def __init__(self, batch: int, n_kv_heads: int, window: int, capacity: int, head_dim: int, dtype, device):
        self.capacity, self.window = capacity, window
        self.k = torch.zeros(batch, n_kv_heads, window, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_kv_heads, window, head_dim, dtype=dtype, device=device)
        self.pos = torch.full((window,), -1, dtype=torch.long, device=device)  # (W,): -1 = empty slot

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store k, v (B, K, T, hd) for positions start..; return the keys to attend over and their positions."""
        t = k.shape[2]
        self.check_room(start, t)
        new_pos = torch.arange(start, start + t, device=self.pos.device)  # (T,)
        if t == 1:  # decode: the new key replaces the one that just left the window
            self._write(k, v, new_pos)
            return self.k, self.v, self.pos  # (B, K, W, hd), (W,)
        keys = torch.cat((self.k, k), dim=2)  # (B, K, W + T, hd)
        values = torch.cat((self.v, v), dim=2)
        positions = torch.cat((self.pos, new_pos))  # (W + T,)
        keep = slice(max(t - self.window, 0), t)  # the last W new positions stay
        self._write(k[:, :, keep], v[:, :, keep], new_pos[keep])
        return keys, values, positions

    def _write(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor) -> None:
        slots = positions % self.window  # (n,) distinct: n <= W consecutive positions
        self.k[:, :, slots] = k
        self.v[:, :, slots] = v
        self.pos[slots] = positions

    def tensors(self) -> list[torch.Tensor]:
        return [self.k, self.v]


class KVCache:
    """All layers' caches plus how many positions have been written (`length`)."""

    def __init__(self, layers: list[LayerCache], capacity: int):
        self.layers = layers  # one layer cache per depth step
        self.capacity = capacity
        self.length = 0  # slots already stored; the next token's slot
        self.padding: torch.Tensor | None = None  # (B,) left-padding slots per row of a padded batch (positions.Step)
        self.tokens: torch.Tensor | None = None  # (B, length) the ids it holds, where generate recorded them

    def __getitem__(self, step: int) -> LayerCache:
        return self.layers[step]

    def truncate(self, length: int) -> bool:
        """Forget every position from `length` on (a conversation whose next prompt shares only the first `length`
        tokens with what the cache holds); False, nothing changed, where a layer has already overwritten positions
        before `length` (a ring buffer past its window): the caller then starts over."""
        if not 0 <= length <= self.length:
            raise GenerationError(f"cannot truncate a cache of {self.length} positions to {length}")
        if length < self.length and not all(layer.keeps_every_position for layer in self.layers):
            return False
        self.length = length
        if self.tokens is not None:
            self.tokens = self.tokens[:, :length]
        if length == 0:
            self.padding = None  # an empty cache starts a new request
        return True

    @property
    def nbytes(self) -> int:
        """Bytes actually allocated by all buffers."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.tensors())

