"""OpenELM family (`model_type: openelm`): apple/OpenELM-270M, -450M, -1_1B, -3B (and -Instruct).

OpenELM (Mehta et al. 2024, arXiv:2404.14619) is a pre-norm decoder with RMSNorm, RoPE
(rotate_half), GQA, SwiGLU and a head shared with the token embedding; what sets it apart is
layer-wise scaling: every layer has its own number of query and KV heads and its own FFN width,
generated from two multipliers (the rule is in tinyslm/layerwise.py). Its config.json stores the
rule, not the sizes: `qkv_multipliers` ([first, last] or one number) and `ffn_multipliers` (one
number, [first, last] or one per layer), with `num_gqa_groups` query heads per KV head and
`ffn_dim_divisor`. Like Apple's own config class, this reads the multipliers and ignores any
stored `num_query_heads`.

Apple's code, module by module (tensor names under `transformer.`):

    token_embeddings                        -> tok_emb (and, transposed, the head: share_input_output_layers)
    layers.{i}.attn_norm / ffn_norm         -> attn_norm / ffn_norm      RMSNorm, eps 1e-6 (not in config.json)
    layers.{i}.attn.qkv_proj                -> wq | wk | wv               rows [q heads | k heads | v heads],
                                                                          each layer with its own head counts
    layers.{i}.attn.q_norm / k_norm         -> q_norm / k_norm           RMSNorm over head_dim, before RoPE (Qwen3's)
    layers.{i}.attn.out_proj                -> wo
    layers.{i}.ffn.proj_1                   -> gate | up                 chunk(2): the first half goes through SiLU
    layers.{i}.ffn.proj_2                   -> down
    norm                                    -> final_norm

RoPE rotates float32 copies of q and k (`rope_fp32`). The released models all use the gated FFN
and RMSNorm; `ffn_with_glu: false` or `layer_norm` are refused rather than guessed.

Config source: Apple's configuration_openelm.py (OpenELM_CONFIGS) and huggingface.co/apple/OpenELM-270M
config.json.
"""

from __future__ import annotations

import math

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from ..layerwise import make_divisible, openelm_layer_sizes
from . import Family, Fused
from .hf_config import HFConfig

OPENELM_MODULES = {
    "tok_emb": "transformer.token_embeddings",
    "blocks.{i}.attn_norm": "transformer.layers.{i}.attn_norm",
    "blocks.{i}.attn.q_norm": "transformer.layers.{i}.attn.q_norm",
    "blocks.{i}.attn.k_norm": "transformer.layers.{i}.attn.k_norm",
    "blocks.{i}.attn.wo": "transformer.layers.{i}.attn.out_proj",
    "blocks.{i}.ffn_norm": "transformer.layers.{i}.ffn_norm",
    "blocks.{i}.ffn.down": "transformer.layers.{i}.ffn.proj_2",
    "final_norm": "transformer.norm",
    "head": "lm_head",
}
OPENELM_FUSED = (
    Fused("transformer.layers.{i}.attn.qkv_proj", ("blocks.{i}.attn.wq", "blocks.{i}.attn.wk", "blocks.{i}.attn.wv")),
    Fused("transformer.layers.{i}.ffn.proj_1", ("blocks.{i}.ffn.gate", "blocks.{i}.ffn.up")),
)
ACTIVATIONS = {"swish": "silu", "silu": "silu", "gelu": "gelu", "relu": "relu"}
# Apple's OpenELMConfig defaults, for keys a config.json leaves out
HF_DEFAULTS = dict(
    vocab_size=32000, max_context_length=2048, num_transformer_layers=12, model_dim=2048, head_dim=128,
    qkv_multipliers=1.0, num_gqa_groups=1, ffn_multipliers=4.0, ffn_with_glu=True, ffn_dim_divisor=256,
    activation_fn_name="swish", normalization_layer_name="rms_norm", normalize_qk_projections=False,
    share_input_output_layers=False, rope_freq_constant=10000, rope_max_length=4096, bos_token_id=1, eos_token_id=2,
)  # fmt: skip
NORM_EPS = 1e-6  # every OpenELMRMSNorm is built with its class default


def from_hf(hf: HFConfig) -> ModelConfig:
    hf = hf.with_defaults(HF_DEFAULTS)
    if not hf.typed("ffn_with_glu", bool):
        raise UnsupportedModelError(f"{hf.source}: ffn_with_glu false (a plain FFN) is not supported; "
                                    "the released OpenELM models are gated")  # fmt: skip
    if hf.get("normalization_layer_name") != "rms_norm":
        raise UnsupportedModelError(f"{hf.source}: normalization_layer_name {hf.get('normalization_layer_name')!r} "
                                    "is not supported (rms_norm is)")  # fmt: skip
    act = hf.get("activation_fn_name")
    if act not in ACTIVATIONS:
        raise UnsupportedModelError(f"{hf.source}: activation_fn_name {act!r} is not supported ({', '.join(ACTIVATIONS)})")
    dim, head_dim = hf.typed("model_dim", int), hf.typed("head_dim", int)
    n_layers, groups = hf.typed("num_transformer_layers", int), hf.typed("num_gqa_groups", int)
    sizes = openelm_layer_sizes(
        dim=dim, head_dim=head_dim, n_layers=n_layers, qkv_multipliers=hf.get("qkv_multipliers"),
        ffn_multipliers=hf.get("ffn_multipliers"), gqa_groups=groups, ffn_divisor=hf.typed("ffn_dim_divisor", int),
    )  # fmt: skip
    return ModelConfig(
        name=hf.model_name("openelm"),
        family="openelm",
        vocab_size=hf.typed("vocab_size", int),
        dim=dim,
        n_layers=n_layers,
        n_heads=max(sizes["layer_n_heads"]),  # informational: every layer has its own
        n_kv_heads=max(sizes["layer_n_kv_heads"]),
        head_dim=head_dim,
        ffn_dim=max(sizes["layer_ffn_dim"]),
        max_seq_len=hf.typed("max_context_length", int),
        qk_norm=hf.typed("normalize_qk_projections", bool),
        rope_theta=hf.typed("rope_freq_constant", float),
        rope_fp32=True,
        activation=ACTIVATIONS[act],
        norm_eps=NORM_EPS,
        tie_embeddings=hf.typed("share_input_output_layers", bool),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        dtype=hf.dtype(),
        **sizes,
    )


def fit_multipliers(config: ModelConfig, groups: int) -> list[float]:
    """[first, last] query multipliers (2 decimals) whose linear rule gives this config's per-layer heads.

    config.json stores OpenELM's rule, not the sizes, so saving means finding a rule: each end is a
    multiplier in steps of 0.01 that rounds to that layer's width; the whole list must then come out
    right, or the config has no openelm form (check_expressible says so).
    """
    heads = [config.layer(i).n_heads for i in range(config.n_layers)]
    unit = config.head_dim * groups

    def candidates(n_heads: int) -> list[float]:
        fits = [k for k in range(1, 1001) if make_divisible(config.dim * k / 100, unit) == n_heads * config.head_dim]
        return [k / 100 for k in sorted(fits, key=lambda k: (k % 10 != 0, k))]  # round tenths (0.5) first

    firsts, lasts = candidates(heads[0]), candidates(heads[-1])
    for first in firsts:
        for last in lasts:
            sizes = openelm_layer_sizes(dim=config.dim, head_dim=config.head_dim, n_layers=config.n_layers,
                                        qkv_multipliers=[first, last], ffn_multipliers=1.0, gqa_groups=groups)  # fmt: skip
            if sizes["layer_n_heads"] == heads:
                return [first, last]
    return [heads[0] * config.head_dim / config.dim] * 2  # no rule fits: written anyway, refused on read-back


def to_hf(config: ModelConfig) -> dict:
    specs = [config.layer(i) for i in range(config.n_layers)]
    groups = {s.n_heads // s.n_kv_heads for s in specs}
    problems = []
    if config.attention == "mla" or len(groups) != 1:
        problems.append("MLA or a query/KV head ratio that varies by layer (num_gqa_groups is one number)")
    if config.block_sharing != "none" or config.block_schedule or config.shared_ffn:
        problems.append("block or FFN sharing")
    if problems:
        raise UnsupportedModelError(f"config {config.name!r}: an openelm checkpoint cannot hold {'; '.join(problems)}")
    ffn = [s.ffn_dim for s in specs]
    divisor = math.gcd(*ffn)  # every width is then its own multiple: make_divisible(F, divisor) == F
    return dict(
        architectures=["OpenELMForCausalLM"],
        model_type="openelm",
        vocab_size=config.vocab_size,
        max_context_length=config.max_seq_len,
        num_transformer_layers=config.n_layers,
        model_dim=config.dim,
        head_dim=config.head_dim,
        qkv_multipliers=fit_multipliers(config, groups.pop()),
        num_gqa_groups=specs[0].n_heads // specs[0].n_kv_heads,
        ffn_multipliers=[f / config.dim for f in ffn],
        ffn_with_glu=config.ffn == "gated",
        ffn_dim_divisor=divisor,
        activation_fn_name={"silu": "swish"}.get(config.activation, config.activation),
        normalization_layer_name="rms_norm" if config.norm == "rmsnorm" else config.norm,
        normalize_qk_projections=config.qk_norm,
        share_input_output_layers=config.tie_embeddings,
        rope_freq_constant=config.rope_theta,
        rope_max_length=max(4096, config.max_seq_len),
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        torch_dtype=config.dtype,
    )


FAMILY = Family(
    model_type="openelm",
    architecture="OpenELMForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=OPENELM_MODULES,
    fused=OPENELM_FUSED,
    examples="apple/OpenELM-270M, -450M, -1_1B, -3B",
)
