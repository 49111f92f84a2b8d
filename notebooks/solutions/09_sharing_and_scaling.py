"""Reference solutions of lesson 09 (sharing and scaling)."""

import numpy as np


def openelm_sizes(dim, head_dim, n_layers, qkv_multipliers, ffn_multipliers, gqa_groups, ffn_divisor):
    """OpenELM's per-layer sizes: multipliers spaced linearly over depth (rounded to 2 places), widths rounded by
    make_divisible to multiples of head_dim * gqa_groups (queries) and ffn_divisor (FFN)."""

    def make_divisible(value, divisor):  # the nearest multiple, at least divisor, never 10% below value
        result = max(divisor, int(value + divisor / 2) // divisor * divisor)
        return result + divisor if result < 0.9 * value else result

    alphas = [round(float(a), 2) for a in np.linspace(*qkv_multipliers, num=n_layers)]
    betas = [round(float(b), 2) for b in np.linspace(*ffn_multipliers, num=n_layers)]
    heads = [make_divisible(dim * a, head_dim * gqa_groups) // head_dim for a in alphas]
    return {
        "layer_n_heads": heads,
        "layer_n_kv_heads": [h // gqa_groups for h in heads],
        "layer_ffn_dim": [make_divisible(dim * b, ffn_divisor) for b in betas],
    }
