"""Gemma family (`model_type: gemma`): gemma-2b, gemma-7b (Gemma Team, arXiv 2403.08295).

A Llama block with four differences, all of them config fields here:
* RMSNorm stores w and scales by (1 + w), in float32 before the cast back (`norm = "rmsnorm_1p"`);
* the token embeddings are multiplied by sqrt(hidden_size), that constant first rounded to the
  weights' dtype (`embed_scale`; 45.25 rather than 45.2548 for gemma-2b in bfloat16);
* the FFN is GeGLU, down(gelu_tanh(gate x) * up x). The released config.json files say
  `hidden_act: "gelu"`, and GemmaConfig rewrites that to "gelu_pytorch_tanh" (the tanh approximation
  the models were trained with), so "gelu" reads as gelu_tanh and exact GELU cannot be saved here.
  A `hidden_activation` key (later copies of the gemma-2b config) is not read by GemmaConfig;
* head_dim is explicit (256; gemma-7b has 16 heads x 256 = 4096 wide attention at hidden 3072);
  gemma-2b is MQA (one KV head). The lm-head is tied by default.

This module also holds what Gemma-2 and Gemma-3 (gemma2.py, gemma3.py) share with it: the checks on
a config's Gemma-specific fields and the sliding-layer pattern they both write as `layer_types`.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import Arch
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf

# GemmaConfig's defaults (transformers 5.23; gemma-7b's shape), for keys a config.json omits
GEMMA_DEFAULTS = dict(
    vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=16, head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True,
    bos_token_id=2, eos_token_id=1,
)  # fmt: skip

# Gemma-2 and Gemma-3 "sandwich" the attention and the FFN between two norms each; note that their
# `post_attention_layernorm` is the norm on the attention *output*, not Llama's pre-FFN norm.
SANDWICH_MODULES = LLAMA_MODULES | {
    "blocks.{i}.attn_out_norm": "model.layers.{i}.post_attention_layernorm",
    "blocks.{i}.ffn_norm": "model.layers.{i}.pre_feedforward_layernorm",
    "blocks.{i}.ffn_out_norm": "model.layers.{i}.post_feedforward_layernorm",
}

# config.json layer types -> ours ("attention" is the old name transformers still maps to "full_attention")
HF_LAYER_TYPES = {"sliding_attention": "sliding", "full_attention": "full", "attention": "full"}


def gemma_like_from_hf(hf: HFConfig, family: str, **fields) -> ModelConfig:
    """What every Gemma generation shares: (1 + w) RMSNorm, sqrt(hidden) embedding scale, GeGLU, tied head.

    `hf` must already carry the family's defaults (`HFConfig.with_defaults`); `fields` add or override.
    """
    if hf.typed("use_bidirectional_attention", bool, False):
        raise UnsupportedModelError(
            f"{hf.source}: use_bidirectional_attention=true (EmbeddingGemma-style encoders) is not supported; "
            "tinyslm models are causal decoders"
        )
    bias = hf.typed("attention_bias", bool, False)
    values = dict(
        head_dim=hf.typed("head_dim", int, 256),
        norm="rmsnorm_1p",
        embed_scale=hf.typed("hidden_size", int) ** 0.5,
        qkv_bias=bias,
        out_bias=bias,
    )
    values.update(fields)
    return llama_like_from_hf(hf, family, **values)


def check_gemma_shape(config: ModelConfig, *, sandwich: bool) -> None:
    """Refuse, with a Gemma-specific message, configs whose norm, embedding or FFN a Gemma file cannot hold."""
    family, problems = config.family, []
    if config.norm != "rmsnorm_1p":
        problems.append(f"norm={config.norm!r} (Gemma's RMSNorm is always (1 + w): 'rmsnorm_1p')")
    if config.embed_scale != config.dim**0.5:
        problems.append(f"embed_scale={config.embed_scale!r} (always sqrt(hidden_size) = {config.dim**0.5!r})")
    if config.sandwich_norms != sandwich:
        have = "all have" if sandwich else "never have"
        problems.append(f"sandwich_norms={config.sandwich_norms} ({family} layers {have} them)")
    if config.ffn != "gated" or config.ffn_bias:
        problems.append("a plain or biased FFN (Gemma's MLP is gated and bias-free)")
    if config.qkv_bias != config.out_bias:
        problems.append("qkv_bias != out_bias (attention_bias covers q, k, v and o together)")
    if problems:
        raise UnsupportedModelError(f"config {config.name!r}: a {family} checkpoint cannot hold {'; '.join(problems)}")


# --- sliding layers (Gemma-2, Gemma-3) ------------------------------------------------------------


def sliding_layout(hf: HFConfig, n_layers: int, pattern: int, pattern_key: str | None = None) -> dict:
    """sliding_window / layer_types / sliding_pattern from config.json, in one canonical form.

    transformers reads an explicit `layer_types` list, else derives one: layer i slides unless
    (i + 1) % pattern == 0 (Gemma-2: pattern 2, layer 0 sliding; Gemma-3: `pattern_key` =
    "sliding_window_pattern", default 6). The same layers always come back in the same form, so a
    saved config reads back equal: no sliding layer -> no window; every layer sliding -> the window
    alone; a list that is a pattern -> `sliding_pattern`; anything else -> `layer_types`.
    """
    hf_types = hf.get("layer_types")
    if hf_types is None:
        pattern = hf.typed(pattern_key, int, pattern) if pattern_key else pattern
        if pattern < 1:
            raise UnsupportedModelError(f"{hf.source}: sliding_window_pattern must be >= 1, found {pattern}")
        hf_types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    if not isinstance(hf_types, list) or len(hf_types) != n_layers or any(t not in HF_LAYER_TYPES for t in hf_types):
        raise UnsupportedModelError(
            f"{hf.source}: layer_types must list one of {', '.join(HF_LAYER_TYPES)} per layer ({n_layers}), "
            f"found {hf_types!r}"
        )
    if hf.get("sliding_window") is None:  # transformers builds the sliding mask even when no layer uses it
        raise UnsupportedModelError(f"{hf.source}: sliding_window is null, which transformers cannot run")
    window = hf.typed("sliding_window", int)
    types = [HF_LAYER_TYPES[t] for t in hf_types]
    if "sliding" not in types:
        return dict(sliding_window=None, layer_types=None, sliding_pattern=None)
    if "full" not in types:
        return dict(sliding_window=window, layer_types=None, sliding_pattern=None)
    pattern = types.index("full") + 1
    if all((t == "full") == ((i + 1) % pattern == 0) for i, t in enumerate(types)):
        return dict(sliding_window=window, layer_types=None, sliding_pattern=pattern)
    return dict(sliding_window=window, layer_types=tuple(types), sliding_pattern=None)


def sliding_layout_to_hf(config: ModelConfig) -> dict:
    """Always the explicit list (what transformers' own save_pretrained writes)."""
    return dict(
        layer_types=[f"{config.layer_type(i)}_attention" for i in range(config.n_layers)],
        sliding_window=config.sliding_window or 4096,  # the class default; no layer reads it when none slides
    )


def attn_scale_from_hf(hf: HFConfig, head_dim: int) -> float | None:
    """query_pre_attn_scalar^-0.5; None (the head_dim^-0.5 default) when the scalar is head_dim."""
    scalar = hf.typed("query_pre_attn_scalar", float, 256.0)
    if scalar <= 0:
        raise UnsupportedModelError(f"{hf.source}: query_pre_attn_scalar must be positive, found {scalar}")
    return None if scalar == head_dim else scalar**-0.5


def optional_float(value: float | None) -> float | None:
    """transformers' config classes type-check their fields: a float field refuses an int."""
    return None if value is None else float(value)


def attn_scale_to_hf(config: ModelConfig) -> int:
    if config.attn_scale is None:
        return config.head_dim
    scalar = round(config.attn_scale**-2)
    if scalar < 1 or scalar**-0.5 != config.attn_scale:
        raise UnsupportedModelError(
            f"config {config.name!r}: a {config.family} checkpoint stores the attention scale as "
            f"query_pre_attn_scalar^-0.5 with an integer scalar; attn_scale={config.attn_scale!r} is not one"
        )
    return scalar


# --- gemma ------------------------------------------------------------------------------------------


def from_hf(hf: HFConfig) -> ModelConfig:
    hf = hf.with_defaults(GEMMA_DEFAULTS | {"hidden_act": "gelu_pytorch_tanh"})
    act = hf.get("hidden_act")
    activation = "gelu_tanh" if act == "gelu" else hf.activation("hidden_act", "gelu_pytorch_tanh")
    return gemma_like_from_hf(hf, "gemma", activation=activation)


def to_hf(config: ModelConfig) -> dict:
    check_gemma_shape(config, sandwich=False)
    if config.activation == "gelu":
        raise UnsupportedModelError(
            f"config {config.name!r}: a gemma checkpoint cannot hold exact GELU: transformers reads "
            "hidden_act 'gelu' as the tanh approximation (activation = 'gelu_tanh')"
        )
    bias, eps = config.qkv_bias, float(config.norm_eps)  # float: transformers' config classes check field types
    return llama_like_to_hf(config, "GemmaForCausalLM", attention_bias=bias, rms_norm_eps=eps)


def _gemma_refuse(config) -> list[str]:
    # llama.cpp's gemma graph has no attention biases and always reads the head off token_embd
    # (convert_hf_to_gguf.py's GemmaModel drops lm_head.weight)
    return (["attention biases (attention_bias=true)"] if config.qkv_bias or config.out_bias else []) + (
        ["an untied lm_head (tie_word_embeddings=false)"] if not config.tie_embeddings else [])


# convert_hf_to_gguf.py's GemmaModel: (1 + w) norms stored 1 + w, q/k not permuted, head tied
GGUF = Arch("gemma", norm_offset=1.0, refuse=_gemma_refuse)

FAMILY = Family(
    model_type="gemma",
    architecture="GemmaForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,  # Gemma-1's post_attention_layernorm is Llama's pre-FFN norm
    ignored=LLAMA_IGNORED,
    examples="gemma-2b, gemma-7b",
    gguf=GGUF,
)
