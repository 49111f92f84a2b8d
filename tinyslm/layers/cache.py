"""The KV cache: pre-allocated per-layer key/value buffers for incremental decoding.

Legend: B batch, n_kv KV heads, S capacity (prompt + new tokens), hd head_dim.

Decoding one token at a time recomputes nothing for the past: each attention layer appends the
new token's key and value to its buffer and attends over everything stored so far. The buffers
are allocated once, sized to exactly what the request needs (prompt + max_new_tokens), never to
the model's maximum context.

Each attention type decides what it stores: `Attention` (MHA/MQA/GQA) keeps per-KV-head K and V
in a `KVBuffer`; MLA keeps its compressed latent instead. The model asks each of its attention
modules for a layer cache (`new_cache`) and `KVCache` holds the list, one slot per depth step
(a shared block that runs twice gets two slots).
"""

from __future__ import annotations

import torch

from ..errors import GenerationError


class KVBuffer:
    """Keys and values of one attention layer: k, v (B, n_kv, S, hd)."""

    def __init__(self, batch: int, n_kv_heads: int, capacity: int, k_dim: int, v_dim: int, dtype, device):
        self.k = torch.zeros(batch, n_kv_heads, capacity, k_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_kv_heads, capacity, v_dim, dtype=dtype, device=device)

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv, T, hd) at positions start..start+T; return all keys/values so far."""
        end = start + k.shape[2]
        if end > self.capacity:
            raise GenerationError(f"KV cache overflow: position {end} exceeds the cache capacity {self.capacity}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, n_kv, end, hd)

    def tensors(self) -> list[torch.Tensor]:
        return [self.k, self.v]


class KVCache:
    """All layers' caches plus how many positions have been written (`length`)."""

    def __init__(self, layers: list, capacity: int):
        self.layers = layers  # one layer cache per depth step
        self.capacity = capacity
        self.length = 0  # positions already stored; the next token's position

    def __getitem__(self, step: int):
        return self.layers[step]

    @property
    def nbytes(self) -> int:
        """Bytes actually allocated by all buffers."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.tensors())
