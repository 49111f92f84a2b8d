"""CausalLM: token embedding -> blocks -> final norm -> lm-head.

Legend: B batch, T positions, D model width, V vocabulary.

    ids (B, T) -> tok_emb -> (B, T, D) -> block_0 ... block_{L-1} -> final_norm -> head -> logits (B, T, V)

RoPE's cos/sin tables are computed once per forward and shared by every block. With
`tie_embeddings` the head's weight *is* the embedding's Parameter (one tensor, counted once,
trained once). With block sharing (MobileLLM) `config.schedule()` lists which stored block runs
at each depth step; each step still gets its own KV-cache slot.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers.block import build_block
from .layers.cache import KVCache
from .config import ModelConfig
from .layers.norms import make_norm
from .layers.rope import RotaryEmbedding


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)  # V x D
        self.blocks = nn.ModuleList(build_block(config, i) for i in range(config.n_layers))
        self.final_norm = make_norm(config.norm, config.dim, config.norm_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)  # D -> V
        if config.tie_embeddings:
            self.head.weight = self.tok_emb.weight  # a real tie: one Parameter
        self.rope = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling, config.max_seq_len)
        self.schedule = config.schedule()

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, *, last_only: bool = False) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V). With a cache, input_ids continue what it holds.

        last_only=True applies the final norm and head to the last position only -> (B, 1, V):
        decoding needs only the next token's logits, and a prompt's full (B, T, V) is large (a
        2,048-token prompt x Qwen's 151,936 vocabulary is 1.2 GB in float32).
        """
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.tok_emb(input_ids)  # (B, T, D)
        rope = self.rope(positions)  # cos, sin (T, d) in float32; apply_rope casts where transformers does
        for step, b in enumerate(self.schedule):
            x = self.blocks[b](x, rope, start, cache[step] if cache is not None else None)
        if cache is not None:
            cache.length = start + input_ids.shape[1]
        if last_only:
            x = x[:, -1:]  # (B, 1, D)
        return self.head(self.final_norm(x))  # (B, T, V), or (B, 1, V) with last_only

    def new_cache(self, batch: int, capacity: int, dtype: torch.dtype | None = None, device=None) -> KVCache:
        """An empty cache for `batch` sequences of up to `capacity` positions."""
        dtype = dtype or self.tok_emb.weight.dtype
        device = device or self.tok_emb.weight.device
        layers = [self.blocks[b].attn.new_cache(batch, capacity, dtype, device) for b in self.schedule]
        return KVCache(layers, capacity)

    def cache_values_per_token(self) -> int:
        """Numbers the KV cache stores per token, over all depth steps."""
        return sum(self.blocks[b].attn.cache_values_per_token() for b in self.schedule)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02, seed: int | None = None) -> "CausalLM":
        """GPT-2 style initialisation: N(0, std) matrices, zero biases, unit norms."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
            if hasattr(module, "reset_buffers"):
                module.reset_buffers()
            elif not isinstance(module, (nn.Linear, nn.Embedding)) and getattr(module, "weight", None) is not None:
                module.weight.fill_(1.0)  # norms
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
        return self
