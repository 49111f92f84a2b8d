"""Ablation variants from a short spec: "mha,gqa:4,mqa,mla,swa:64,share:immediate".

Each comma-separated item names one model derived from the base config; parts joined with "+"
combine (the attention kind is applied first):

    mha | mqa | mla       the attention type, via tools/variants.py `derive` (MLA: DeepSeek-V2 proportions)
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

With matched_budget=True the attention variants' FFN widths are resized (tools/variants.py
`_match_budget`) so every variant has the base's parameter count within 2%; swa and share keep
the parameters they have (and so do sharedffn and scale: their point is a different budget).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import ModelConfig
from ..errors import ConfigError
from ..layerwise import openelm_layer_sizes
from ..tools.variants import derive

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
