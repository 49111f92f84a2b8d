"""The attention-variant toolkit: MHA, GQA, MQA and MLA versions of one model, and what each costs.

Legend: H query heads, K KV heads, hd head_dim, r kv_lora_rank, dr qk_rope_head_dim, L layers.

An ablation of the attention type should change the attention type and nothing else. From one
base config, `derive` builds

    mha        K = H                     cache per layer and token: 2*H*hd values
    gqa{K}     1 < K < H, K divides H    2*K*hd        (H/K times smaller than MHA)
    mqa        K = 1                     2*hd          (H times smaller)
    mla        a latent r + shared key   r + dr        (2*H*hd / (r + dr) times smaller)

in one of two modes:

    same_heads      the base's H and hd; everything outside attention untouched. The parameter
                    count moves with the attention type (GQA/MQA have smaller wk/wv).
    matched_budget  as same_heads, then every layer's FFN width is shifted by the same integer
                    so the total parameter count lands within 2% of the base's (in practice within
                    L * 3D / 2 parameters). The attention layout stays the ablated variable; the
                    budget difference is given to (or taken from) the FFN, as GQA/MQA papers do.

MLA dims for a non-MLA base follow the DeepSeek-V2 paper's rule (MiniCPM3-4B follows it too):
qk_nope_head_dim = v_head_dim = hd, r = 4*hd, dr = hd/2, no query LoRA (a training-memory trick
that leaves the cache alone). Pass `mla={...}` to choose others. From an MLA base the other
variants use hd = v_head_dim.

Every number is measured on the model itself, built on the meta device: parameters are its
distinct Parameters (tinyslm/tools/stats.py), KV bytes per token are `cache_values_per_token()` times the
dtype's size, so the toolkit cannot drift from the code. `compare_attention` puts them in a JSON-able
dict and `format_compare_attention` renders the table `tinyslm inspect --compare-attention` prints:
at long context the cache, not the weights, dominates inference memory, and the rows show by how
much each variant shrinks it.
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

KINDS = ("mha", "gqa", "mqa", "mla")
MODES = ("same_heads", "matched_budget")
BUDGET_TOLERANCE = 0.02  # matched_budget: |total - base total| / base total
_MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


# ----------------------------------------------------------------------------------------------
# deriving configs


def head_dim_of(config: ModelConfig) -> int:
    """The per-head width the non-MLA variants use: head_dim, or v_head_dim for an MLA base."""
    return config.v_head_dim if config.attention == "mla" else config.head_dim


def default_mla_dims(config: ModelConfig) -> dict[str, Any]:
    """DeepSeek-V2's proportions (dc = 4 dh, dR = dh / 2) for the base's head_dim."""
    hd = head_dim_of(config)
    return dict(q_lora_rank=None, kv_lora_rank=4 * hd, qk_nope_head_dim=hd,
                qk_rope_head_dim=max(2, hd // 2 - (hd // 2) % 2), v_head_dim=hd)  # fmt: skip


def derive(
    base: ModelConfig,
    kind: str,
    *,
    n_kv_heads: int | None = None,
    mode: str = "same_heads",
    mla: dict[str, Any] | None = None,
) -> ModelConfig:
    """The `kind` variant of `base` ("mha" | "gqa" (needs n_kv_heads) | "mqa" | "mla"), in `mode`."""
    if kind not in KINDS:
        raise ConfigError(f"attention variant must be one of {', '.join(KINDS)}; found {kind!r}")
    if mode not in MODES:
        raise ConfigError(f"variant mode must be one of {', '.join(MODES)}; found {mode!r}")
    variant = _same_heads(base, kind, n_kv_heads, mla)
    return _match_budget(base, variant) if mode == "matched_budget" else variant


# MLA replaces the whole attention: the base's MHA/GQA options (windows, caps, QK-norm, ...) do not carry over
MLA_REPLACES = dict(sliding_window=None, layer_types=None, sliding_pattern=None, rope_local_theta=None,
                    attn_softcap=None, attn_scale=None, qk_norm=False, qk_norm_per_head=False, qkv_clip=None,
                    rope_fp32=False)  # fmt: skip


def _same_heads(base: ModelConfig, kind: str, n_kv_heads: int | None, mla: dict[str, Any] | None) -> ModelConfig:
    h, hd = base.n_heads, head_dim_of(base)
    layer_heads = base.layer_n_heads  # OpenELM-style per-layer head counts, or None
    if kind == "mla":
        if layer_heads is not None:
            raise ConfigError(
                f"config {base.name!r}: an MLA variant needs one head count for all layers (layer_n_heads is set)"
            )
        dims = {**(_base_mla_dims(base) if base.attention == "mla" else default_mla_dims(base)), **(mla or {})}
        unknown = sorted(set(dims) - set(_MLA_FIELDS))
        if unknown:
            raise ConfigError(f"mla dims: unknown key(s) {', '.join(unknown)}; known: {', '.join(_MLA_FIELDS)}")
        return base.replace(
            name=f"{base.name}-mla", attention="mla", n_kv_heads=h, layer_n_kv_heads=None,
            head_dim=dims["qk_nope_head_dim"] + dims["qk_rope_head_dim"], partial_rotary_factor=1.0, **dims,
            **MLA_REPLACES,
        )  # fmt: skip
    if kind == "gqa":
        every = layer_heads or [h]
        if not isinstance(n_kv_heads, int) or n_kv_heads <= 0 or any(n % n_kv_heads for n in every):
            raise ConfigError(
                f"config {base.name!r}: a GQA variant needs n_kv_heads dividing every layer's head count "
                f"({sorted(set(every))}); found {n_kv_heads!r}"
            )
        k, name = n_kv_heads, f"gqa{n_kv_heads}"
    else:
        k, name = (h, "mha") if kind == "mha" else (1, "mqa")
    if layer_heads is None:
        layer_kv = None
    else:
        layer_kv = list(layer_heads) if kind == "mha" else [k] * len(layer_heads)
    return base.replace(
        name=f"{base.name}-{name}", attention=kind, n_kv_heads=k, layer_n_kv_heads=layer_kv, head_dim=hd,
        **dict.fromkeys(_MLA_FIELDS),
    )  # fmt: skip


def _base_mla_dims(config: ModelConfig) -> dict[str, Any]:
    return {key: getattr(config, key) for key in _MLA_FIELDS}


def _shift_ffn(config: ModelConfig, units: int) -> ModelConfig:
    widths = config.layer_ffn_dim
    new = [w + units for w in widths] if widths is not None else None
    smallest = min(new) if new is not None else config.ffn_dim + units
    if smallest <= 0:
        raise ConfigError(
            f"config {config.name!r}: matching the base's parameter budget needs an FFN width of {smallest}; "
            "the attention variant alone is larger than the budget allows (use mode='same_heads')"
        )
    return config.replace(ffn_dim=config.ffn_dim + units, layer_ffn_dim=new)


def _match_budget(base: ModelConfig, variant: ModelConfig) -> ModelConfig:
    """Shift every layer's FFN width by one integer so total parameters match the base (within 2%)."""
    target, got = count_parameters(base)[0], count_parameters(variant)[0]
    if got == target:
        return variant
    per_unit = count_parameters(_shift_ffn(variant, 1))[0] - got  # parameters per unit of FFN width, all layers
    matched = _shift_ffn(variant, round((target - got) / per_unit))
    total = count_parameters(matched)[0]
    if abs(total - target) > BUDGET_TOLERANCE * target:
        raise ConfigError(
            f"config {variant.name!r}: could not match the base's {target:,} parameters within "
            f"{BUDGET_TOLERANCE:.0%} (got {total:,})"
        )
    return matched


def attention_variants(
    base: ModelConfig,
    *,
    mode: str = "same_heads",
    gqa_kv_heads: Sequence[int] | None = None,
    kinds: Sequence[str] = KINDS,
    mla: dict[str, Any] | None = None,
) -> dict[str, ModelConfig]:
    """{"mha": ..., "gqa4": ..., "mqa": ..., "mla": ...} derived from `base`.

    gqa_kv_heads: the KV-head counts of the GQA rows; default `default_gqa_kv_heads(base)`.
    """
    out: dict[str, ModelConfig] = {}
    for kind in kinds:
        if kind == "gqa":
            for k in default_gqa_kv_heads(base) if gqa_kv_heads is None else gqa_kv_heads:
                out[f"gqa{k}"] = derive(base, "gqa", n_kv_heads=k, mode=mode)
        else:
            out[kind] = derive(base, kind, mode=mode, mla=mla)
    return out


def default_gqa_kv_heads(base: ModelConfig) -> list[int]:
    """Power-of-two KV-head counts strictly between 1 and H that divide every layer's H, plus the base's own K.

    Largest first, so the rows run from MHA towards MQA.
    """
    every = base.layer_n_heads or [base.n_heads]
    ks = {k for k in (2**i for i in range(1, 12)) if k < min(every) and all(n % k == 0 for n in every)}
    if base.attention == "gqa" and base.layer_n_kv_heads is None and 1 < base.n_kv_heads < base.n_heads:
        ks.add(base.n_kv_heads)
    return sorted(ks, reverse=True)


# ----------------------------------------------------------------------------------------------
# measuring them


def count_parameters(config: ModelConfig) -> tuple[int, int]:
    """(total, attention) distinct parameters of the model `config` builds (meta device, nothing allocated)."""
    stats = model_stats(config)  # a tied head / shared block is counted once
    return stats.parameters, stats.breakdown["attention"]


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

