"""What a model costs: parameters (total, non-embedding, per component), weight and KV-cache bytes.

Every figure comes from the model itself, built on the meta device (no memory is allocated):
parameters are the model's distinct Parameters, so a tied head or a shared block is counted
once, and the KV cache is what each attention module says it stores per token. Nothing is a
hand formula that could drift from the code.

    non-embedding = total - token embedding - learned position table - untied lm-head
    (the convention of the Qwen and Gemma model cards)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..model import CausalLM

COMPONENTS = ("embedding", "attention", "ffn", "norms", "lm_head")


def meta_model(config: ModelConfig) -> CausalLM:
    with torch.device("meta"):
        return CausalLM(config)


def component_of(name: str) -> str:
    """Which component a parameter name belongs to ('blocks.3.attn.wq.weight' -> 'attention')."""
    if name.startswith(("tok_emb.", "pos_emb.")):
        return "embedding"
    if name.startswith("head."):
        return "lm_head"
    if ".attn." in name:
        return "attention"  # includes QK-norm weights, which live inside the attention module
    if ".ffn." in name:
        return "ffn"
    return "norms"


@dataclass
class ModelStats:
    name: str
    parameters: int
    non_embedding_parameters: int
    breakdown: dict[str, int]
    tied_head: bool
    kv_cache_values_per_token: int
    dtype_bytes: int
    context: int
    kv_cache_values_at_context: int  # sliding-window layers stop growing at their window

    @property
    def kv_cache_bytes_per_token(self) -> int:
        return self.kv_cache_values_per_token * self.dtype_bytes

    @property
    def kv_cache_bytes_at_context(self) -> int:
        return self.kv_cache_values_at_context * self.dtype_bytes

    @property
    def weight_bytes(self) -> int:
        return self.parameters * self.dtype_bytes

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "parameters": self.parameters,
            "non_embedding_parameters": self.non_embedding_parameters,
            "breakdown": self.breakdown,
            "tied_lm_head": self.tied_head,
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
            "context": self.context,
            "kv_cache_bytes_at_context": self.kv_cache_bytes_at_context,
            "weight_bytes": self.weight_bytes,
            "dtype_bytes": self.dtype_bytes,
        }


def representative(config: ModelConfig) -> tuple[ModelConfig, list[int]]:
    """A config with one layer per distinct layer spec, and how many stored layers each one stands for.

    Counting a model needs one block of each kind, not every block: a 26-layer Gemma-2 has two kinds
    (sliding and full), and a config.json claiming ten million layers is counted as fast as one.
    """
    counts = config.layer_spec_counts()
    specs = list(counts)
    sliding = [s.window is not None for s in specs]
    varies = lambda values, default: None if all(v == default for v in values) else [*values]  # noqa: E731
    small = config.replace(
        n_layers=len(specs),
        layer_n_heads=varies([s.n_heads for s in specs], config.n_heads),
        layer_n_kv_heads=varies([s.n_kv_heads for s in specs], config.n_kv_heads),
        layer_ffn_dim=varies([s.ffn_dim for s in specs], config.ffn_dim),
        layer_types=["sliding" if s else "full" for s in sliding] if any(sliding) else None,
        sliding_pattern=None,
        sliding_window=config.sliding_window if any(sliding) else None,
        rope_local_theta=config.rope_local_theta if any(sliding) else None,
        block_sharing="none",
    )
    return small, list(counts.values())


def estimate_parameters(config: ModelConfig) -> int:
    """The model's parameter count, without building more than one block per layer spec."""
    return model_stats(config).parameters


def model_stats(config: ModelConfig, dtype: torch.dtype = torch.bfloat16, context: int | None = None) -> ModelStats:
    small, counts = representative(config)
    model = meta_model(small)
    executed = config.share_repeats if config.block_sharing != "none" else 1  # depth steps per stored block
    breakdown = dict.fromkeys(COMPONENTS, 0)
    for name, p in model.named_parameters():  # distinct Parameters only: a tied head is not listed
        times = counts[int(name.split(".")[1])] if name.startswith("blocks.") else 1
        breakdown[component_of(name)] += p.numel() * times
    total = sum(breakdown.values())
    context = context or config.max_seq_len
    attns = [(block.attn, n * executed) for block, n in zip(model.blocks, counts)]
    return ModelStats(
        name=config.name,
        parameters=total,
        non_embedding_parameters=total - breakdown["embedding"] - breakdown["lm_head"],
        breakdown=breakdown,
        tied_head=config.tie_embeddings,
        kv_cache_values_per_token=sum(attn.cache_values_per_token() * n for attn, n in attns),
        dtype_bytes=torch.empty((), dtype=dtype).element_size(),
        context=context,
        kv_cache_values_at_context=sum(attn.cache_values(context) * n for attn, n in attns),
    )


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'; with unit='B', bytes in KiB/MiB/GiB."""
    if unit == "B":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(n) < 1024 or suffix == "TiB":
                return f"{n:.0f} {suffix}" if suffix == "B" else f"{n:.2f} {suffix}"
            n /= 1024
    for suffix, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}"
    return str(int(n))


def format_stats(s: ModelStats, dtype_name: str) -> str:
    lines = [
        f"model                     {s.name}",
        f"parameters                {s.parameters:,} ({human(s.parameters)})",
        f"non-embedding parameters  {s.non_embedding_parameters:,} ({human(s.non_embedding_parameters)})",
        "breakdown:",
    ]
    for component, n in s.breakdown.items():
        note = " (tied to embedding)" if component == "lm_head" and s.tied_head else ""
        share = 100 * n / s.parameters if s.parameters else 0
        lines.append(f"  {component:<12} {n:>16,}  {share:5.1f}%{note}")
    lines += [
        f"weight bytes ({dtype_name})     {s.weight_bytes:,} B ({human(s.weight_bytes, 'B')})",
        f"KV cache per token        {s.kv_cache_bytes_per_token:,} B ({dtype_name})",
        f"KV cache at {s.context:<13} {s.kv_cache_bytes_at_context:,} B ({human(s.kv_cache_bytes_at_context, 'B')})",
    ]
    return "\n".join(lines)
