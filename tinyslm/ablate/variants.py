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
    gqa:2+swa:32          both

With matched_budget=True the attention variants' FFN widths are resized (tools/variants.py
`_match_budget`) so every variant has the base's parameter count within 2%; swa and share keep
the parameters they have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import ModelConfig
from ..errors import ConfigError
from ..tools.variants import derive

FORMS = "mha, mqa, mla, gqa:K, swa:W, share:immediate, share:cyclic (combine with +, e.g. gqa:2+swa:64)"
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
    if len(kinds) > 1 or sum(p[0] == "swa" for p in parts) > 1 or sum(p[0] == "share" for p in parts) > 1:
        raise ConfigError(f"--variants: {item!r} combines two settings of the same kind; use at most one attention "
                          "type, one swa:W and one share:... per variant")  # fmt: skip
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
        else:
            config = config.replace(block_sharing=arg, share_repeats=2, block_schedule=None)
            labels.append(f"share-{arg}")
    name = "+".join(labels)
    return Variant(name=name, spec=item, config=config.replace(name=f"{base.name}-{name}"))


def _parse_part(part: str, item: str) -> tuple[str, int | str | None]:
    if part in ("mha", "mqa", "mla"):
        return part, None
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
            "share": " (share:immediate or share:cyclic)"}.get(part.split(":")[0], "")  # fmt: skip
    raise ConfigError(f"--variants: unknown variant {part!r}{hint}; known: {FORMS}")
