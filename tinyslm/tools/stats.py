"""What a model costs: parameters (total, non-embedding, per component), weight and KV-cache bytes.

Every figure comes from the model itself, built on the meta device (no memory is allocated):
parameters are the model's distinct Parameters, so a tied head or a shared block is counted
once, and the KV cache is what each attention module says it stores per token. Nothing is a
hand formula that could drift from the code.

    non-embedding = total - token embedding - learned position table - untied lm-head
    (the convention of the Qwen and Gemma model cards)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..sizing import estimate_parameters, meta_model, representative, times_stored  # noqa: F401  (re-exported)

COMPONENTS = ("embedding", "attention", "ffn", "norms", "lm_head")


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
class LayerRow:
    """One stored block: its sizes, and what it costs each time it runs."""

    block: int
    runs: int  # depth steps that execute this block (2 for MobileLLM's layer-share)
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    window: int | None
    parameters: int  # stored in this block (a shared FFN is counted once, in the model total)
    kv_values_per_token: int  # per run


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
    executed_parameters: int = 0  # weights applied per token: a block run twice counts twice, a tied head twice
    flops_per_token: int = 0  # forward FLOPs for one token with `context` keys before it (2 per multiply-add)
    effective_depth: int = 0  # depth steps run (n_layers, or more with block sharing)
    stored_blocks: int = 0
    shared_ffn: bool = False
    layers: list[LayerRow] | None = None  # per stored block, when sizes or sharing vary (and there are few)

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
        out = {
            "name": self.name,
            "parameters": self.parameters,
            "non_embedding_parameters": self.non_embedding_parameters,
            "executed_parameters": self.executed_parameters,
            "breakdown": self.breakdown,
            "tied_lm_head": self.tied_head,
            "shared_ffn": self.shared_ffn,
            "stored_blocks": self.stored_blocks,
            "effective_depth": self.effective_depth,
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
            "context": self.context,
            "kv_cache_bytes_at_context": self.kv_cache_bytes_at_context,
            "flops_per_token_at_context": self.flops_per_token,
            "weight_bytes": self.weight_bytes,
            "dtype_bytes": self.dtype_bytes,
        }
        if self.layers is not None:
            out["layers"] = [dataclasses.asdict(row) for row in self.layers]
        return out


def runs_per_spec(config: ModelConfig) -> list[int]:
    """Depth steps executed per distinct layer spec (the order of `layer_spec_counts`)."""
    counts = config.layer_spec_counts()
    if config.block_schedule is None:
        repeats = config.share_repeats if config.block_sharing != "none" else 1
        return [n * repeats for n in counts.values()]
    index = {spec: k for k, spec in enumerate(counts)}
    runs = [0] * len(counts)
    for block in config.block_schedule:
        runs[index[config.layer(block)]] += 1
    return runs


def effective_depth(config: ModelConfig) -> int:
    if config.block_schedule is not None:
        return len(config.block_schedule)
    return config.n_layers * (config.share_repeats if config.block_sharing != "none" else 1)


def _matmul_weights(module: torch.nn.Module) -> int:
    """Multiply-adds per token of the module's Linear layers (their weights' element count)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def _score_dims(config: ModelConfig) -> tuple[int, int]:
    """(query/key width, value width) per head, as the attention computes scores and mixes values."""
    if config.attention == "mla":
        return config.qk_nope_head_dim + config.qk_rope_head_dim, config.v_head_dim
    return config.head_dim, config.head_dim


MAX_TABLE_LAYERS = 4096  # per-layer rows are listed up to this many stored blocks


def model_stats(config: ModelConfig, dtype: torch.dtype = torch.bfloat16, context: int | None = None) -> ModelStats:
    small, counts = representative(config)
    runs = runs_per_spec(config)
    model = meta_model(small)
    breakdown = dict.fromkeys(COMPONENTS, 0)
    in_blocks = 0  # stored block parameters
    for name, p in model.named_parameters():  # distinct Parameters only: a tied head or shared FFN is listed once
        times = times_stored(config, counts, name)
        breakdown[component_of(name)] += p.numel() * times
        in_blocks += p.numel() * times if name.startswith("blocks.") else 0
    total = sum(breakdown.values())
    context = context or config.max_seq_len
    qk, v = _score_dims(config)
    block_params = [sum(p.numel() for p in block.parameters()) for block in model.blocks]
    # executed: every use of a weight counts (a block run twice, the shared FFN in every block, a tied head)
    executed = total - in_blocks + sum(n * runs for n, runs in zip(block_params, runs))
    executed += model.head.weight.numel() if config.tie_embeddings else 0
    flops = 2 * model.head.weight.numel()
    for k, (block, n_runs) in enumerate(zip(model.blocks, runs)):
        spec = small.layer(k)
        keys = context if spec.window is None else min(context, spec.window)
        flops += n_runs * 2 * (_matmul_weights(block) + keys * spec.n_heads * (qk + v))
    attns = [(block.attn, n) for block, n in zip(model.blocks, runs)]
    layers = None
    if _varies(config) and config.n_layers <= MAX_TABLE_LAYERS:
        index = {spec: k for k, spec in enumerate(config.layer_spec_counts())}
        schedule = config.schedule()
        layers = []
        for i in range(config.n_layers):
            spec = config.layer(i)
            k = index[spec]
            ffn = sum(p.numel() for p in model.blocks[k].ffn.parameters()) if config.shared_ffn else 0
            layers.append(LayerRow(
                block=i, runs=schedule.count(i), n_heads=spec.n_heads, n_kv_heads=spec.n_kv_heads,
                ffn_dim=spec.ffn_dim, window=spec.window, parameters=block_params[k] - ffn,
                kv_values_per_token=model.blocks[k].attn.cache_values_per_token(),
            ))  # fmt: skip
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
        executed_parameters=executed,
        flops_per_token=flops,
        effective_depth=effective_depth(config),
        stored_blocks=config.n_layers,
        shared_ffn=config.shared_ffn,
        layers=layers,
    )


def _varies(config: ModelConfig) -> bool:
    """Whether stored blocks differ in size or in how often they run (then a per-layer table says how)."""
    return any(v is not None for v in (config.layer_n_heads, config.layer_n_kv_heads, config.layer_ffn_dim,
                                       config.block_schedule)) or config.block_sharing != "none" or config.shared_ffn  # fmt: skip


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


def shares_blocks(s: ModelStats) -> bool:
    """Whether a stored block runs more than once per token (layer sharing, a schedule) or one FFN serves all."""
    return s.effective_depth != s.stored_blocks or s.shared_ffn


def _executed_line(s: ModelStats) -> list[str]:
    """The weights applied per token, where block sharing makes them more than the stored parameters (a tied head
    alone does not: its second use is named when the line is there, never the only reason for it)."""
    if not shares_blocks(s):
        return []
    uses = ["each run of a shared block counted"] if s.effective_depth != s.stored_blocks else []
    uses += ["the shared FFN counted in every block"] if s.shared_ffn else []
    if s.tied_head:
        uses.append("the tied embedding again as the head")
    return [f"executed parameters       {s.executed_parameters:,} ({human(s.executed_parameters)} per token: "
            f"{', '.join(uses)})"]  # fmt: skip


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
        *_executed_line(s),
        f"effective depth           {s.effective_depth} steps over {s.stored_blocks} stored blocks"
        + (" (one FFN shared by all)" if s.shared_ffn else ""),
        f"FLOPs per token at {s.context:<6} {s.flops_per_token:,} ({human(s.flops_per_token)}; forward, 2 per multiply-add)",
    ]
    if s.layers is not None:
        lines += ["per stored block (KV per run, per token):",
                  "  block  runs  heads  kv  ffn_dim  window   parameters    KV B/tok"]  # fmt: skip
        for r in s.layers:
            window = "-" if r.window is None else str(r.window)
            lines.append(f"  {r.block:>5} {r.runs:>5} {r.n_heads:>6} {r.n_kv_heads:>3} {r.ffn_dim:>8} {window:>7} "
                         f"{r.parameters:>12,} {r.kv_values_per_token * s.dtype_bytes:>11,}")  # fmt: skip
        if s.shared_ffn:
            lines.append("  (block parameters exclude the shared FFN, counted once in the total)")
    return "\n".join(lines)
