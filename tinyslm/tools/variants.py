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

The ablation's variants come from a short spec, parsed here too (`parse_variants`): Ablation variants from a short spec: "mha,gqa:4,mqa,mla,swa:64,share:immediate".

Each comma-separated item names one model derived from the base config; parts joined with "+"
combine (the attention kind is applied first):

    mha | mqa | mla       the attention type, via `derive` above (MLA: DeepSeek-V2 proportions)
    gqa:K                 grouped-query attention with K KV heads (K divides the query-head count)
    swa:W                 sliding-window attention, window W, in every layer (Mistral; Beltagy et al.
                          2020, Longformer): the KV cache stops growing at W tokens
    share:immediate       MobileLLM's block-wise weight sharing (Liu et al. 2024, arXiv:2402.14905):
    share:cyclic          every stored block runs twice (A A B B ... or A B ... A B ...), same parameters,
                          twice the depth and KV cache
    sharedffn             MobiLlama's shared FFN (Thawakar et al. 2024, arXiv:2402.16840): one FFN, one set
                          of parameters, used by every block
    scale                 OpenELM's layer-wise scaling (Mehta et al. 2024, arXiv:2404.14619; layerwise.py):
    scale:A-B/C-D         query heads from A*dim to B*dim and FFN width from C*dim to D*dim, spaced
                          linearly over depth (plain `scale`: OpenELM's 0.5-1/0.5-4); KV heads follow
                          the base's query-heads-per-KV-head ratio
    gqa:2+swa:32          both

With matched_budget=True the attention variants' FFN widths are resized (`_match_budget`) so every variant has the base's parameter count within 2%; swa and share keep
the parameters they have (and so do sharedffn and scale: their point is a different budget).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..config import ModelConfig
from ..errors import ConfigError
from ..layerwise import openelm_layer_sizes
from .stats import model_stats

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


def count_parameters(config: ModelConfig) -> tuple[int, int]:
    """(total, attention) distinct parameters of the model `config` builds (meta device, nothing allocated)."""
    stats = model_stats(config)  # a tied head / shared block is counted once
    return stats.parameters, stats.breakdown["attention"]


# ----------------------------------------------------------------------------------------------
# the ablation's spec: "mha,gqa:4,mqa,mla,swa:64,share:immediate"


FORMS = ("mha, mqa, mla, gqa:K, swa:W, share:immediate, share:cyclic, sharedffn, scale, scale:A-B/C-D "
         "(combine with +, e.g. gqa:2+swa:64)")
OPENELM_SCALING = ((0.5, 1.0), (0.5, 4.0))  # OpenELM's qkv and FFN multiplier ranges (its configs, all sizes)
FFN_DIVISOR = 16  # widths rounded to multiples of 16 (OpenELM uses 256 at dim 1280+; too coarse for tiny models)
_ATTENTION = {"mha", "mqa", "mla", "gqa"}


@dataclass(frozen=True)
class Variant:
    name: str  # "gqa4", "swa64", "gqa2+swa32": a file-safe label
    spec: str  # as the user wrote it
    config: ModelConfig


def parse_variants(text: str, base: ModelConfig, *, matched_budget: bool = False) -> list[Variant]:
    """The variants a spec string names, built (and validated) from `base`; one clear error for a bad item."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise ConfigError(f"--variants: no variant named; use a comma-separated list of {FORMS}")
    variants, seen = [], {}
    for item in items:
        variant = build_variant(item, base, matched_budget=matched_budget)
        if variant.name in seen:
            raise ConfigError(f"--variants: {item!r} names the same variant as {seen[variant.name]!r}")
        seen[variant.name] = item
        variants.append(variant)
    return variants


def build_variant(item: str, base: ModelConfig, *, matched_budget: bool = False) -> Variant:
    parts = [_parse_part(part.strip().lower(), item) for part in item.split("+")]
    kinds = [p for p in parts if p[0] in _ATTENTION]
    if len(kinds) > 1 or any(sum(p[0] == k for p in parts) > 1 for k in ("swa", "share", "sharedffn", "scale")):
        raise ConfigError(f"--variants: {item!r} combines two settings of the same kind; use at most one attention "
                          "type and one of each other setting per variant")  # fmt: skip
    parts.sort(key=lambda p: 0 if p[0] in _ATTENTION else 1)  # the attention type first (MLA resets windows)
    config, labels = base, []
    mode = "matched_budget" if matched_budget else "same_heads"
    for kind, arg in parts:
        if kind in _ATTENTION:
            config = derive(config, kind, n_kv_heads=arg, mode=mode)
            labels.append(f"gqa{arg}" if kind == "gqa" else kind)
        elif kind == "swa":
            if arg >= config.max_seq_len:
                raise ConfigError(f"--variants: {item!r}: window {arg} is not smaller than the model's context "
                                  f"({config.max_seq_len}); it would be full attention")  # fmt: skip
            config = config.replace(sliding_window=arg, layer_types=None, sliding_pattern=None, rope_local_theta=None)
            labels.append(f"swa{arg}")
        elif kind == "share":
            config = config.replace(block_sharing=arg, share_repeats=2, block_schedule=None)
            labels.append(f"share-{arg}")
        elif kind == "sharedffn":
            if config.layer_ffn_dim is not None and len(set(config.layer_ffn_dim)) > 1:
                raise ConfigError(f"--variants: {item!r}: one shared FFN needs one FFN width, but the layers' widths "
                                  f"differ ({list(config.layer_ffn_dim)})")  # fmt: skip
            config = config.replace(shared_ffn=True)
            labels.append("sharedffn")
        else:
            config = _layer_scaled(config, arg, item)
            (q0, q1), (f0, f1) = arg
            labels.append(f"scale-q{q0:g}-{q1:g}-f{f0:g}-{f1:g}")
    name = "+".join(labels)
    return Variant(name=name, spec=item, config=config.replace(name=f"{base.name}-{name}"))


def _layer_scaled(config: ModelConfig, ranges, item: str) -> ModelConfig:
    """`config` with OpenELM's per-layer query heads, KV heads and FFN widths (layerwise.py)."""
    if config.attention == "mla":
        raise ConfigError(f"--variants: {item!r}: layer-wise scaling sets per-layer head counts, which MLA does not "
                          "support; combine scale with mha, gqa:K or mqa")  # fmt: skip
    if config.n_heads % config.n_kv_heads:
        raise ConfigError(f"--variants: {item!r}: {config.n_heads} query heads do not group evenly over "
                          f"{config.n_kv_heads} KV heads")  # fmt: skip
    (q0, q1), (f0, f1) = ranges
    sizes = openelm_layer_sizes(dim=config.dim, head_dim=config.head_dim, n_layers=config.n_layers,
                                qkv_multipliers=[q0, q1], ffn_multipliers=[f0, f1],
                                gqa_groups=config.n_heads // config.n_kv_heads, ffn_divisor=FFN_DIVISOR)  # fmt: skip
    return config.replace(n_heads=max(sizes["layer_n_heads"]), n_kv_heads=max(sizes["layer_n_kv_heads"]),
                          ffn_dim=max(sizes["layer_ffn_dim"]), **sizes)  # fmt: skip


def _parse_part(part: str, item: str) -> tuple[str, object]:
    if part in ("mha", "mqa", "mla", "sharedffn"):
        return part, None
    if part == "scale":
        return part, OPENELM_SCALING
    number = r"(\d+(?:\.\d+)?)"
    m = re.fullmatch(rf"scale:{number}-{number}/{number}-{number}", part)
    if m and min(q0_q1_f0_f1 := [float(v) for v in m.groups()]) > 0:
        q0, q1, f0, f1 = q0_q1_f0_f1
        return "scale", ((q0, q1), (f0, f1))
    m = re.fullmatch(r"(gqa|swa):(\d+)", part)
    if m:
        value = int(m.group(2))
        if value <= 0:
            raise ConfigError(f"--variants: {item!r}: {m.group(1)} needs a positive number, found {value}")
        return m.group(1), value
    m = re.fullmatch(r"share:(immediate|cyclic)", part)
    if m:
        return "share", m.group(1)
    hint = {"gqa": " (gqa needs its KV-head count, e.g. gqa:4)", "swa": " (swa needs its window, e.g. swa:64)",
            "share": " (share:immediate or share:cyclic)",
            "scale": " (scale, or scale:A-B/C-D with positive multipliers, e.g. scale:0.5-1/0.5-4)"}.get(
        part.split(":")[0], "")  # fmt: skip
    raise ConfigError(f"--variants: unknown variant {part!r}{hint}; known: {FORMS}")
