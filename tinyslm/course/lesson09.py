"""Lesson 09 (notebooks/09_sharing_and_scaling.py): layer-wise scaling (OpenELM), block sharing (MobileLLM) and a
shared FFN (MobiLlama).

    check_openelm_sizes   OpenELM's per-layer query heads, KV heads and FFN widths from its scaling rule, against
                          tinyslm.layerwise.openelm_layer_sizes
"""

from __future__ import annotations

from ..layerwise import openelm_layer_sizes
from .check import Exercise

# name: (dim, head_dim, n_layers, qkv_multipliers, ffn_multipliers, gqa_groups, ffn_divisor)
OPENELM_SHAPES = {
    "OpenELM-270M": (1280, 64, 16, (0.5, 1.0), (0.5, 4.0), 4, 256),
    "OpenELM-450M": (1536, 64, 20, (0.5, 1.0), (0.5, 4.0), 4, 256),
    "OpenELM-1_1B": (2048, 64, 28, (0.5, 1.0), (0.5, 4.0), 4, 256),
    "OpenELM-3B": (3072, 128, 36, (0.5, 1.0), (0.5, 4.0), 4, 256),
    "a tiny one": (128, 16, 4, (0.5, 1.0), (0.5, 4.0), 2, 32),
    "one group, a narrow end": (96, 8, 7, (0.3, 1.1), (1.0, 2.7), 1, 64),
    "a single layer": (256, 32, 1, (0.75, 0.75), (2.0, 2.0), 2, 128),
}


def check_openelm_sizes(openelm_sizes) -> bool:
    """Your per-layer sizes against tinyslm.layerwise.openelm_layer_sizes, for OpenELM's released shapes and others."""
    with Exercise("openelm_sizes", against="tinyslm.layerwise.openelm_layer_sizes") as ex:
        for name, (dim, head_dim, n_layers, qkv, ffn, groups, divisor) in OPENELM_SHAPES.items():
            want = openelm_layer_sizes(dim=dim, head_dim=head_dim, n_layers=n_layers, qkv_multipliers=list(qkv),
                                       ffn_multipliers=list(ffn), gqa_groups=groups, ffn_divisor=divisor)  # fmt: skip
            got = openelm_sizes(dim, head_dim, n_layers, qkv, ffn, groups, divisor)
            call = (f"openelm_sizes(dim={dim}, head_dim={head_dim}, n_layers={n_layers}, qkv_multipliers={qkv}, "
                    f"ffn_multipliers={ffn}, gqa_groups={groups}, ffn_divisor={divisor}) ({name})")  # fmt: skip
            if not isinstance(got, dict):
                ex.compare(call, type(got).__name__, "dict")
            for key in ("layer_n_heads", "layer_n_kv_heads", "layer_ffn_dim"):
                values = got.get(key)
                ex.compare(f"{call}[{key!r}]", None if values is None else [int(v) for v in values], want[key])
    return ex.passed
