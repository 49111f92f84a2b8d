"""Layer-wise scaling: narrow layers near the input, wide ones near the output.

OpenELM (Mehta et al. 2024, "OpenELM: An Efficient Language Model Family with Open Training and
Inference Framework", arXiv:2404.14619; the rule comes from DeLighT, arXiv:2008.00623) does not give
every layer the same width. Two multipliers, spaced linearly over depth, set each layer's size:

    alpha_l = round(linspace(a_min, a_max, L)[l], 2)     query width  = alpha_l * dim
    beta_l  = round(linspace(b_min, b_max, L)[l], 2)     FFN width    = beta_l  * dim

each rounded to a hardware-friendly multiple with MobileNet's `make_divisible`:

    query dims:  make_divisible(dim * alpha_l, head_dim * gqa_groups)  -> n_heads_l = q_dim / head_dim
                 n_kv_heads_l = n_heads_l / gqa_groups                  (gqa_groups query heads per KV head)
    FFN dims:    make_divisible(dim * beta_l, ffn_divisor)

OpenELM-270M (dim 1280, head_dim 64, 16 layers, alpha 0.5..1.0, beta 0.5..4.0, 4 groups) gets
12, 12, 12, 12, 12, 16, ..., 20 query heads and FFN widths 768 ... 5120: most parameters sit in the
last layers. A config states this as a table, which expands into the per-layer lists
(`layer_n_heads`, `layer_n_kv_heads`, `layer_ffn_dim`) that the model reads:

    [layer_scaling]
    qkv_multipliers = [0.5, 1.0]   # or one number: every layer alike
    ffn_multipliers = [0.5, 4.0]   # or one number, or one per layer
    gqa_groups = 4
    ffn_divisor = 256
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np

from .errors import ConfigError


def make_divisible(value: float, divisor: int) -> int:
    """The multiple of `divisor` nearest `value`, at least `divisor`, and never more than 10% below it."""
    result = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if result < 0.9 * value:
        result += divisor
    return result


def multipliers(spec: Real | list, n_layers: int, what: str) -> list[float]:
    """One multiplier per layer: a number (all alike), [first, last] (linear, rounded to 2 places) or a full list."""
    if isinstance(spec, Real) and not isinstance(spec, bool):
        return [float(spec)] * n_layers
    if isinstance(spec, (list, tuple)) and all(isinstance(v, Real) and not isinstance(v, bool) for v in spec):
        if len(spec) == 2:
            return [round(float(v), 2) for v in np.linspace(spec[0], spec[1], num=n_layers, dtype=float)]
        if len(spec) == n_layers:
            return [float(v) for v in spec]
    raise ConfigError(f"{what} must be a number, [first, last] or one number per layer ({n_layers}), found {spec!r}")


def openelm_layer_sizes(
    *, dim: int, head_dim: int, n_layers: int, qkv_multipliers, ffn_multipliers, gqa_groups: int = 1,
    ffn_divisor: int = 256,
) -> dict[str, list[int]]:
    """{"layer_n_heads", "layer_n_kv_heads", "layer_ffn_dim"}: OpenELM's per-layer sizes (module docstring)."""
    for name, value in (("dim", dim), ("head_dim", head_dim), ("n_layers", n_layers), ("gqa_groups", gqa_groups),
                        ("ffn_divisor", ffn_divisor)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"layer_scaling needs {name} as a positive integer, found {value!r}")
    alphas = multipliers(qkv_multipliers, n_layers, "qkv_multipliers")
    betas = multipliers(ffn_multipliers, n_layers, "ffn_multipliers")
    if min(alphas + betas) <= 0:
        raise ConfigError(f"layer_scaling multipliers must be positive, found {alphas} and {betas}")
    heads = [make_divisible(dim * a, head_dim * gqa_groups) // head_dim for a in alphas]
    return {
        "layer_n_heads": heads,
        "layer_n_kv_heads": [h // gqa_groups for h in heads],
        "layer_ffn_dim": [make_divisible(dim * b, ffn_divisor) for b in betas],
    }


SCALING_KEYS = ("qkv_multipliers", "ffn_multipliers", "gqa_groups", "ffn_divisor")


def expand_layer_scaling(values: dict[str, Any], source: str) -> dict[str, Any]:
    """A config dict with its `layer_scaling` table replaced by the per-layer lists it generates."""
    values = dict(values)
    table = values.pop("layer_scaling")
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: layer_scaling must be a table ({', '.join(SCALING_KEYS)}), found {table!r}")
    unknown = sorted(set(table) - set(SCALING_KEYS))
    if unknown or not {"qkv_multipliers", "ffn_multipliers"} <= set(table):
        raise ConfigError(f"{source}: layer_scaling takes qkv_multipliers and ffn_multipliers (and optionally "
                          f"gqa_groups, ffn_divisor); found keys {sorted(table)}")  # fmt: skip
    clashing = [k for k in ("layer_n_heads", "layer_n_kv_heads", "layer_ffn_dim") if k in values]
    if clashing:
        raise ConfigError(f"{source}: give layer_scaling or {', '.join(clashing)}, not both")
    dim, n_layers = values.get("dim"), values.get("n_layers")
    head_dim = values.get("head_dim")
    if head_dim is None:
        raise ConfigError(f"{source}: layer_scaling needs head_dim (the head width every layer shares)")
    try:
        sizes = openelm_layer_sizes(dim=dim, head_dim=head_dim, n_layers=n_layers, **table)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    values.update(sizes)
    values.setdefault("n_heads", max(sizes["layer_n_heads"]))  # informational: each layer has its own
    values.setdefault("n_kv_heads", max(sizes["layer_n_kv_heads"]))
    values.setdefault("ffn_dim", max(sizes["layer_ffn_dim"]))
    return values
