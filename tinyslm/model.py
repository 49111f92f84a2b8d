"""CausalLM: embedding -> blocks -> final norm -> lm-head.

Legend: B batch, T positions, D model width, V vocabulary.

    ids (B, T) -> tok_emb [x embed_scale] [+ pos_emb] [-> emb_norm] -> (B, T, D)
               -> block_0 ... block_{L-1} -> final_norm [/ logit_divisor] -> head [-> soft-cap] -> logits (B, T, V)

The bracketed parts are modules the config chooses (Gemma scales the embedding, GPT-2 and OPT add
learned positions, Bloom norms the embedding, MiniCPM divides the head's input, Gemma-2 soft-caps
the logits, Phi-2's head has a bias); absent ones are identities, so `forward` reads the same for
every family.

The RoPE tables (one per base the layers use: Gemma-3's local layers have their own) are computed
once per forward, in a `Step`, and shared by every block, as are the attention masks. With
`tie_embeddings` the head's weight *is* the embedding's Parameter (one tensor, counted once, trained
once). With block sharing (MobileLLM) `config.schedule()` lists which stored block runs at each
depth step; each step still gets its own KV-cache slot. With `shared_ffn` (MobiLlama) every block
holds the same FFN module: one set of Parameters, whose gradient sums over its uses.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .errors import GenerationError
from .layers.block import build_block, build_ffn
from .layers.cache import KVCache
from .layers.norms import make_norm
from .layers.positions import LearnedPositions, Step
from .layers.rope import RotaryEmbedding


class ScaledEmbedding(nn.Embedding):
    """Token embedding times a constant, the constant rounded to the weights' dtype first (Gemma: sqrt(D))."""

    def __init__(self, vocab_size: int, dim: int, scale: float):
        super().__init__(vocab_size, dim)
        self.scale = scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * torch.tensor(self.scale, dtype=self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:.6g}"


class SoftCap(nn.Module):
    """cap * tanh(x / cap): bounds logits smoothly to (-cap, cap) (Gemma-2's final logits)."""

    def __init__(self, cap: float):
        super().__init__()
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.cap) * self.cap

    def extra_repr(self) -> str:
        return f"cap={self.cap}"


class Divide(nn.Module):
    """x / d: MiniCPM shrinks the final hidden states by dim / dim_model_base (muP's output multiplier).

    A division, as transformers writes it: x * (1 / d) rounds differently in bfloat16.
    """

    def __init__(self, divisor: float):
        super().__init__()
        self.divisor = divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.divisor

    def extra_repr(self) -> str:
        return f"divisor={self.divisor:.6g}"


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, v = config.dim, config.vocab_size
        self.tok_emb = nn.Embedding(v, d) if config.embed_scale is None else ScaledEmbedding(v, d, config.embed_scale)
        self.pos_emb = (
            LearnedPositions(config.max_seq_len, d, config.position_offset) if config.positions == "learned" else None
        )
        self.emb_norm = make_norm(config.norm, d, config.norm_eps) if config.embed_norm else nn.Identity()
        shared_ffn = build_ffn(config, 0) if config.shared_ffn else None  # MobiLlama: one FFN, every block
        self.blocks = nn.ModuleList(build_block(config, i, ffn=shared_ffn) for i in range(config.n_layers))
        self.final_norm = make_norm(config.norm, d, config.norm_eps)
        self.head_divisor = nn.Identity() if config.logit_divisor is None else Divide(config.logit_divisor)
        self.head = nn.Linear(d, v, bias=config.head_bias)  # D -> V
        if config.tie_embeddings:
            self.head.weight = self.tok_emb.weight  # a real tie: one Parameter
        self.logit_cap = nn.Identity() if config.final_softcap is None else SoftCap(config.final_softcap)
        self.ropes = nn.ModuleDict({
            key: RotaryEmbedding(config.rotary_dim, theta, scaling, config.max_seq_len)
            for key, (theta, scaling) in config.rope_tables.items()
        })  # fmt: skip
        self.schedule = config.schedule()

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, *, last_only: bool = False,
                padding: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """input_ids (B, T) -> logits (B, T, V). With a cache, input_ids continue what it holds.

        last_only=True applies the final norm and head to the last position only -> (B, 1, V):
        decoding needs only the next token's logits, and a prompt's full (B, T, V) is large (a
        2,048-token prompt x Qwen's 151,936 vocabulary is 1.2 GB in float32).
        padding (B,): left-padded rows of different lengths, each row's count of padding slots (Step);
        a cache remembers it (cache.padding) for the steps that continue it.
        """
        start = cache.length if cache is not None else 0
        if cache is not None:
            cache.padding = padding = padding if padding is not None else cache.padding
        step = Step.with_rope(self.ropes, start, input_ids.shape[1], input_ids.device, padding)  # positions, cos/sin, masks
        x = self.tok_emb(input_ids)  # (B, T, D)
        if self.pos_emb is not None:
            x = x + self.pos_emb(step.positions)  # (T, D) broadcast over B, or per row (B, T, D)
        x = self.emb_norm(x)
        x = self.run_blocks(x, step, cache)
        if cache is not None:
            cache.length = start + input_ids.shape[1]
        if last_only:
            x = x[:, -1:]  # (B, 1, D)
        x = self.head_divisor(self.final_norm(x))  # (B, T, D), or (B, 1, D) with last_only
        return self.logit_cap(self.head(x))  # (B, T, V), or (B, 1, V) with last_only

    def run_blocks(self, x: torch.Tensor, step: Step, cache: KVCache | None = None) -> torch.Tensor:
        """x (B, T, D) through the blocks in depth order (the schedule: a shared block runs at each of its depths)."""
        for i, b in enumerate(self.schedule):
            x = self.blocks[b](x, step, cache[i] if cache is not None else None)
        return x

    def new_cache(self, batch: int, capacity: int, dtype: torch.dtype | None = None, device=None) -> KVCache:
        """An empty cache for `batch` sequences of up to `capacity` positions."""
        dtype = dtype or self.tok_emb.weight.dtype
        device = device or self.tok_emb.weight.device
        try:
            layers = [self.blocks[b].attn.new_cache(batch, capacity, dtype, device) for b in self.schedule]
        except (RuntimeError, MemoryError) as exc:  # the allocator's own message is a raw traceback line
            size = self.cache_values(capacity) * batch * torch.empty((), dtype=dtype).element_size()
            raise GenerationError(
                f"cannot allocate the KV cache: {batch} x {capacity} positions need {size:,} bytes "
                f"({type(exc).__name__}); ask for fewer tokens"
            ) from None
        return KVCache(layers, capacity)

    def cache_values_per_token(self) -> int:
        """Numbers the KV cache stores per token, over all depth steps (before any sliding window fills)."""
        return sum(self.blocks[b].attn.cache_values_per_token() for b in self.schedule)

    def cache_values(self, context: int) -> int:
        """Numbers the KV cache holds for `context` tokens (what `new_cache(1, context)` allocates)."""
        return sum(self.blocks[b].attn.cache_values(context) for b in self.schedule)

    def reset_buffers(self, device=None) -> None:
        """Recompute the non-persistent buffers (RoPE tables, ALiBi slopes) after a meta-device build."""
        for module in self.modules():
            if hasattr(module, "reset_buffers") and module is not self:
                module.reset_buffers(device)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02, seed: int | None = None) -> "CausalLM":
        """GPT-2 style initialisation: N(0, std) matrices, zero biases; norms initialise themselves."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, LearnedPositions)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
            if hasattr(module, "reset_buffers") and module is not self:
                module.reset_buffers()
            elif not isinstance(module, (nn.Linear, nn.Embedding)) and hasattr(module, "reset_parameters"):
                module.reset_parameters()  # norms: the identity (w = 1, or w = 0 for the "1p" kinds)
        return self
