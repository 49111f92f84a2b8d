"""The compiled decoding step: each block's forward compiled by torch.compile, over a static KV cache.

Legend: B batch, K KV heads, S slots, hd head_dim.

A small model's decoding step is bound by Python, not by its weights: dozens of operator calls per
layer, each a few microseconds of dispatch for a few kilobytes of work. torch.compile (inductor)
fuses the norms, RoPE, softmax and residual adds into a few C++ loops; the matmuls stay torch's
kernels, int8/int4 ones included.

    StaticKVBuffer  K and V of every position, attended over whole: (B, K, S, hd) each, positions (S,)

A compiled graph serves the shapes it was traced for, so the step decodes into a static cache: every
step returns all S slots together with each slot's position (-1 while empty), and attention masks
the empty and the future ones, exactly as it masks a ring buffer's slots (layers/cache.py). That
costs attention over S slots instead of the positions written so far, small next to the weights at
the sizes `static_cache` makes: the request's length rounded up to a multiple of CACHE_BUCKET, so
that later requests of similar length reuse the graph.

One compiled function serves every block: the block is an argument, its parameters graph inputs
(torch.compile's default for nn.Modules), so blocks of one structure share one graph and the
compile costs one block's worth, not the whole model's. The embedding, final norm and head stay
eager (once per token, a few operations), and so does the prompt (its shapes vary). torch.compile
keeps a limited number of graphs per function (torch._dynamo.config.recompile_limit) for all models
of a process; past it, blocks run eagerly, with the same tokens. In float32 the step gives the module
path's tokens; in bfloat16 fused kernels round differently, which can flip nearly tied picks.
Compile times and speed-ups: docs/performance.md.
"""

from __future__ import annotations

import time
import warnings

import torch

from ..errors import GenerationError
from ..layers.attention import Attention
from ..layers.cache import KVCache, LayerCache

CACHE_BUCKET = 256  # static caches are sized up to a multiple of this, so later requests reuse the compiled step


class StaticKVBuffer(LayerCache):
    """Keys and values of one attention layer, returned whole: k, v (B, K, S, hd) and positions (S,)."""

    def __init__(self, batch: int, n_kv_heads: int, capacity: int, k_dim: int, v_dim: int, dtype, device,
                 positions: torch.Tensor | None = None):  # fmt: skip
        self.capacity = capacity
        self.k = torch.zeros(batch, n_kv_heads, capacity, k_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_kv_heads, capacity, v_dim, dtype=dtype, device=device)
        # (S,) the position held by each slot, -1 = empty; layers may share one (all write the same positions)
        self.pos = torch.full((capacity,), -1, dtype=torch.long, device=device) if positions is None else positions

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store k, v (B, K, T, hd) at positions start..start+T; return all S slots and their positions."""
        end = self.check_room(start, k.shape[2])
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.pos[start:end] = torch.arange(start, end, device=self.pos.device)  # idempotent when shared
        return self.k, self.v, self.pos  # (B, K, S, hd) x 2, (S,)

    def tensors(self) -> list[torch.Tensor]:
        return [self.k, self.v]


def supports_compiled(model) -> bool:
    """The compiled step runs on models whose every attention layer keeps K and V per head (not MLA)."""
    return all(isinstance(model.blocks[b].attn, Attention) for b in model.schedule)


def static_cache(model, batch: int, capacity: int) -> KVCache:
    """A cache of StaticKVBuffers, `capacity` rounded up to CACHE_BUCKET (within the model's context)."""
    slots = min(-(-capacity // CACHE_BUCKET) * CACHE_BUCKET, model.config.max_seq_len)
    weight = model.tok_emb.weight
    positions = torch.full((slots,), -1, dtype=torch.long, device=weight.device)  # shared by all layers
    try:
        layers = []
        for b in model.schedule:
            attn = model.blocks[b].attn
            layers.append(StaticKVBuffer(batch, attn.n_kv_heads, slots, attn.head_dim, attn.head_dim, weight.dtype,
                                         weight.device, positions))  # fmt: skip
    except (RuntimeError, MemoryError) as exc:
        raise GenerationError(f"cannot allocate the KV cache for {batch} x {slots} positions ({type(exc).__name__}); "
                              "ask for fewer tokens") from None  # fmt: skip
    return KVCache(layers, capacity)


class CompiledStep:
    """A model's decoding step with its blocks run by one compiled function; eager if compiling fails."""

    def __init__(self, model):
        # emulate_precision_casts: fused kernels round to bfloat16 where eager does, so the tokens stay the same
        self.block_fn = torch.compile(_run_block, options={"emulate_precision_casts": True})
        self.model, self.failed = model, False
        self.warm: set = set()  # cache shapes already compiled for

    def warm_up(self, cache: KVCache) -> float | None:
        """Compile for this cache's shape by two dummy steps (the second makes the position symbolic), then leave
        the cache empty. Returns the seconds it took; None where nothing was left to compile."""
        first = cache[0]
        key = (tuple(first.k.shape), first.k.dtype, len(cache.layers))
        if self.failed or key in self.warm or first.capacity < 4:
            return None
        t0 = time.perf_counter()
        token = torch.zeros(first.k.shape[0], 1, dtype=torch.long, device=first.k.device)
        for start in (2, 3):  # torch.compile specialises positions 0 and 1; from 2 on one graph serves all
            cache.length = start
            self(token, cache)
        first.pos.fill_(-1)  # every layer shares this tensor: all slots empty again
        cache.length = 0
        self.warm.add(key)
        return time.perf_counter() - t0

    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token (B, 1) -> logits (B, 1, V): the model's forward, its run_blocks the compiled blocks for this
        call only (the model's own seam for how its blocks run)."""
        if self.failed:
            return self.model(ids, cache=cache, last_only=True)
        self.model.run_blocks = self.run_blocks  # an instance attribute shadows the method until it is removed
        try:
            return self.model(ids, cache=cache, last_only=True)
        finally:
            self.model.__dict__.pop("run_blocks", None)

    def run_blocks(self, x: torch.Tensor, step, cache: KVCache) -> torch.Tensor:
        """x (B, 1, D) through the blocks in depth order, each by the compiled function."""
        try:
            h = x
            for i, b in enumerate(self.model.schedule):
                h = self.block_fn(self.model.blocks[b], h, step, cache[i])
            return h
        except Exception as exc:  # noqa: BLE001  (no C++ compiler, an op inductor cannot lower...)
            warnings.warn(f"tinyslm: compiling the decoding step failed ({type(exc).__name__}: {exc}); "
                          "decoding eagerly", stacklevel=2)  # fmt: skip
            self.failed = True
        return type(self.model).run_blocks(self.model, x, step, cache)


def _run_block(block, x, step, layer_cache):
    """One block's forward, through its class (what torch.compile traces)."""
    return type(block).forward(block, x, step, layer_cache)


def compiled_step(model) -> CompiledStep:
    """The model's compiled step, made on first use and kept in the model's __dict__ (not a submodule)."""
    if "_tinyslm_compiled_step" not in model.__dict__:
        model.__dict__["_tinyslm_compiled_step"] = CompiledStep(model)
    return model.__dict__["_tinyslm_compiled_step"]
