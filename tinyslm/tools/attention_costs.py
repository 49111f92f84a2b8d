"""What each attention variant costs: parameters and KV-cache bytes measured on the model itself.

Every number is measured on the model built on the meta device: parameters are its distinct Parameters
(tinyslm/tools/stats.py), KV bytes per token are `cache_values_per_token()` times the dtype's size, so the
figures cannot drift from the code. `compare_attention` derives the variants (tools/variants.py) and puts
their costs in a JSON-able dict; `format_compare_attention` renders the table `tinyslm inspect
--compare-attention` prints: at long context the cache, not the weights, dominates inference memory, and the
rows show by how much each variant shrinks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..checkpoint import load_config
from ..config import ModelConfig, dtype_from_name
from ..errors import ConfigError
from .stats import human, model_stats
from .variants import _MLA_FIELDS, attention_variants, count_parameters, derive

# ----------------------------------------------------------------------------------------------
# measuring them



@dataclass
class AtContext:
    context: int
    cache_bytes: int  # batch x context x KV bytes per token
    cache_share: float  # cache / (weights + cache)


@dataclass
class VariantReport:
    name: str  # "mha", "gqa4", "mqa", "mla"
    config: ModelConfig = field(repr=False)
    layout: str  # "9 q / 3 kv heads x 64", "9 heads, r=256 + dr=32"
    parameters: int
    attention_parameters: int
    kv_values_per_token: int  # over all layers (depth steps)
    kv_bytes_per_token: int
    weight_bytes: int
    cache_reduction_vs_mha: float  # MHA's cache / this one's, same H and head_dim
    at: list[AtContext]
    is_base: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "attention": self.config.attention, "layout": self.layout, "is_base": self.is_base,
            "n_heads": self.config.n_heads,
            "n_kv_heads": None if self.config.attention == "mla" else self.config.n_kv_heads,
            **({k: getattr(self.config, k) for k in _MLA_FIELDS} if self.config.attention == "mla" else {}),
            "ffn_dim": self.config.ffn_dim, "parameters": self.parameters,
            "attention_parameters": self.attention_parameters, "kv_values_per_token": self.kv_values_per_token,
            "kv_bytes_per_token": self.kv_bytes_per_token, "weight_bytes": self.weight_bytes,
            "cache_reduction_vs_mha": self.cache_reduction_vs_mha,
            "at_context": [vars(a).copy() for a in self.at],
        }  # fmt: skip


def layout_of(config: ModelConfig) -> str:
    if config.attention == "mla":
        q = "" if config.q_lora_rank is None else f", rq={config.q_lora_rank}"
        return f"{config.n_heads} heads, r={config.kv_lora_rank} + dr={config.qk_rope_head_dim}{q}"
    if config.layer_n_kv_heads is not None:
        return f"per-layer q/kv heads x {config.head_dim}"
    kv = "1 kv head" if config.n_kv_heads == 1 else f"{config.n_kv_heads} kv heads"
    return f"{config.n_heads} q / {kv} x {config.head_dim}"


def report_variant(
    name: str, config: ModelConfig, contexts: Sequence[int], dtype: torch.dtype = torch.bfloat16, batch: int = 1,
    mha_values_per_token: int | None = None,
) -> VariantReport:
    """Parameters, KV bytes per token and at each context, and the cache's share of weights + cache."""
    stats = model_stats(config, dtype)  # one meta-device build: parameters and cache width
    total, attention = stats.parameters, stats.breakdown["attention"]
    size, values = stats.dtype_bytes, stats.kv_cache_values_per_token  # what each attention module stores
    weights = stats.weight_bytes
    at = []
    for ctx in contexts:
        cache = batch * model_stats(config, dtype, context=ctx).kv_cache_values_at_context * size  # windows cap it
        at.append(AtContext(ctx, cache, cache / (weights + cache)))
    return VariantReport(
        name=name, config=config, layout=layout_of(config), parameters=total, attention_parameters=attention,
        kv_values_per_token=values, kv_bytes_per_token=values * size, weight_bytes=weights,
        cache_reduction_vs_mha=(mha_values_per_token or values) / values, at=at,
    )  # fmt: skip


def _check_contexts(contexts: Sequence[int]) -> list[int]:
    contexts = list(contexts)
    if not contexts or any(not isinstance(c, int) or isinstance(c, bool) or c <= 0 for c in contexts):
        raise ConfigError(f"contexts must be positive integers (token counts), found {contexts!r}")
    return contexts


def parse_contexts(text: str) -> list[int]:
    """'2048,32768' -> [2048, 32768], with an error naming the bad part."""
    try:
        contexts = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"contexts must be comma-separated positive integers, e.g. 2048,32768; found {text!r}"
        ) from None
    return _check_contexts(contexts)


def compare_attention(
    base: ModelConfig | str | Path,
    contexts: Sequence[int],
    *,
    mode: str = "same_heads",
    dtype: torch.dtype | str = "bfloat16",
    gqa_kv_heads: Sequence[int] | None = None,
    batch: int = 1,
    mla: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every attention variant of `base` (a ModelConfig, TOML file, config.json or checkpoint folder), JSON-able."""
    if not isinstance(base, ModelConfig):
        base = load_config(base)
    contexts = _check_contexts(contexts)
    if not isinstance(batch, int) or batch <= 0:
        raise ConfigError(f"batch must be a positive integer, found {batch!r}")
    dtype = dtype_from_name(dtype) if isinstance(dtype, str) else dtype
    variants = attention_variants(base, mode=mode, gqa_kv_heads=gqa_kv_heads, mla=mla)
    mha_values = model_stats(derive(base, "mha")).kv_cache_values_per_token
    rows = [report_variant(name, cfg, contexts, dtype, batch, mha_values) for name, cfg in variants.items()]
    for row in rows:  # the row that *is* the base config (none for per-layer KV heads or other MLA dims)
        row.is_base = row.config.replace(name=base.name) == base
    return {
        "base": base.name, "base_parameters": count_parameters(base)[0],
        "base_variant": next((r.name for r in rows if r.is_base), None), "mode": mode,
        "dtype": str(dtype).removeprefix("torch."), "batch": batch, "contexts": contexts,
        "variants": [r.to_dict() for r in rows],
    }  # fmt: skip


def format_compare_attention(result: dict[str, Any]) -> str:
    """The `tinyslm inspect --compare-attention` table, from `compare_attention`'s dict."""
    contexts = result["contexts"]
    head = ["variant", "attention", "attn params", "total params", "KV/token", "vs MHA"]
    for ctx in contexts:
        head += [f"cache @{ctx:,}", "share"]
    rows = []
    for v in result["variants"]:
        row = [
            v["name"] + (" *" if v["is_base"] else ""),
            v["layout"],
            human(v["attention_parameters"]),
            human(v["parameters"]),
            human(v["kv_bytes_per_token"], "B"),
            f"1/{v['cache_reduction_vs_mha']:.1f}",
        ]
        for a in v["at_context"]:
            row += [human(a["cache_bytes"], "B"), f"{100 * a['cache_share']:.1f}%"]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:  # first two columns are text (left), the rest numbers (right)
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    if result["mode"] == "same_heads":
        mode = "same heads"
    else:
        mode = f"FFN width matched to {result['base_parameters']:,} parameters"
    base_note = " * = the base config." if any(v["is_base"] for v in result["variants"]) else ""
    out = [
        f"attention variants of {result['base']} ({mode}; {result['dtype']} weights and cache, "
        f"batch {result['batch']})",
        line(head),
        line(["-" * w for w in widths]),
        *(line(r) for r in rows),
        "",
        "KV/token: cache bytes per token, all layers (cache_values_per_token x dtype size). vs MHA: this cache",
        "as a fraction of MHA's with the same heads. share: cache / (weights + cache) at that context." + base_note,
    ]
    return "\n".join(out)

