"""The `rope_scaling` dict of a config: which RoPE variant it names, and whether its fields are usable.

This is the config's side of RoPE (layers/rope.py is the math): `ModelConfig` checks its
`rope_scaling` here when it is built, so a config with a misspelt type or a missing factor is
refused before any module exists. Keys follow transformers' `modeling_rope_utils.py`:

    {"rope_type": "linear" | "dynamic" | "llama3" | "yarn" | "longrope", "factor": 8.0, ...}
    ("type" is the older spelling of "rope_type"; no dict, or "default", is plain RoPE)
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")
LONGROPE_LISTS = ("short_factor", "long_factor")  # the only list-valued RoPE keys


def rope_type_of(scaling: dict[str, Any] | None, rotary_dim: int | None = None) -> str:
    """The scaling dict's RoPE type, after checking its fields (and, given `rotary_dim`, LongRoPE's list lengths)."""
    if not scaling:
        return "default"
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"unsupported rope_type {rope_type!r}; supported: {', '.join(ROPE_TYPES)}")
    needs = {"linear": ("factor",), "dynamic": ("factor",),  # yarn may derive its factor (yarn_factor)
             "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
             "longrope": (*LONGROPE_LISTS, "original_max_position_embeddings")}  # fmt: skip
    missing = [k for k in needs.get(rope_type, ()) if scaling.get(k) is None]
    if missing:
        raise ConfigError(f"rope_scaling of type {rope_type!r} needs {', '.join(missing)}")
    for key, value in scaling.items():
        if key in LONGROPE_LISTS and rope_type == "longrope":
            _check_factor_list(key, value, rotary_dim)
        elif key not in ("rope_type", "type", "truncate") and value is not None and not _is_number(value):
            raise ConfigError(f"rope_scaling {key} must be a number, found {value!r}")
    for key in ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor", "beta_fast",
                "beta_slow", "attention_factor"):  # fmt: skip
        if scaling.get(key) is not None and scaling[key] <= 0:
            raise ConfigError(f"rope_scaling {key} must be > 0, found {scaling[key]!r}")
    if rope_type == "longrope" and scaling["original_max_position_embeddings"] >= 2**40:  # compared with a tensor
        raise ConfigError(f"rope_scaling original_max_position_embeddings is out of range (at most {2**40 - 1:,}), "
                          f"found {scaling['original_max_position_embeddings']!r}")  # fmt: skip
    if rope_type == "llama3" and scaling["low_freq_factor"] == scaling["high_freq_factor"]:
        raise ConfigError("rope_scaling of type 'llama3' needs high_freq_factor != low_freq_factor")
    return rope_type


def _is_number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _check_factor_list(key: str, value: Any, rotary_dim: int | None) -> None:
    """LongRoPE's short_factor / long_factor: one finite factor > 0 per rotated pair (rotary_dim / 2 of them)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"rope_scaling {key} must be a non-empty list of numbers, found {value!r}")
    bad = [x for x in value if not _is_number(x) or x <= 0]
    if bad:
        raise ConfigError(f"rope_scaling {key} must hold finite numbers > 0 (one stretch per pair), found {bad[0]!r}")
    if rotary_dim is not None and len(value) != rotary_dim // 2:
        raise ConfigError(
            f"rope_scaling {key} has {len(value)} entries; LongRoPE needs one per rotated pair of dims, "
            f"rotary_dim / 2 = {rotary_dim // 2}"
        )
