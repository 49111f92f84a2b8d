"""Gemma-2 family (`model_type: gemma2`): gemma-2-2b, -9b, -27b (Gemma Team, arXiv 2408.00118).

Gemma (gemma.py: (1 + w) RMSNorm, sqrt(hidden) embedding scale, GeGLU, tied head) plus:
* sandwich norms: every sub-layer's output is normed before the residual add,
      h = x + post_attention_layernorm(attn(input_layernorm(x)))
      y = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)));
* local/global alternation: layer 0 slides over a 4096-key window, layer 1 sees everything, and so
  on (an explicit `layer_types` list wins);
* soft-capping, cap * tanh(x / cap): attention scores at 50 (before the mask) and final logits at 30;
* softmax scale query_pre_attn_scalar^-0.5 (256 = head_dim for 2b/9b; 144 = hidden / heads for 27b).
The activation is read from `hidden_activation` (Gemma2Config ignores `hidden_act`, which the hub
files also carry); unlike Gemma-1 there "gelu" means exact GELU.
"""

from __future__ import annotations

from ..config import ModelConfig
from . import Family
from .gemma import (
    GEMMA_DEFAULTS,
    SANDWICH_MODULES,
    attn_scale_from_hf,
    attn_scale_to_hf,
    check_gemma_shape,
    gemma_like_from_hf,
    optional_float,
    sliding_layout,
    sliding_layout_to_hf,
)  # fmt: skip
from .gguf_arch import GEMMA2_KEYS, Arch
from .hf_config import ACTIVATIONS_TO_HF, HFConfig
from .llama import LLAMA_IGNORED, llama_like_to_hf

# Gemma2Config's defaults (transformers 5.23; gemma-2-9b's shape) where they differ from GemmaConfig's
GEMMA2_DEFAULTS = GEMMA_DEFAULTS | dict(
    hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
    sliding_window=4096,
)  # fmt: skip


def softcap_from_hf(hf: HFConfig, key: str, default: float | None) -> float | None:
    """The cap when the key is set, None when it is null, the class default when it is absent."""
    return hf.typed(key, float, None) if key in hf else default


def from_hf(hf: HFConfig) -> ModelConfig:
    hf = hf.with_defaults(GEMMA2_DEFAULTS)
    head_dim = hf.typed("head_dim", int, 256)
    return gemma_like_from_hf(
        hf, "gemma2",
        activation=hf.activation("hidden_activation", "gelu_pytorch_tanh"),
        sandwich_norms=True,
        attn_scale=attn_scale_from_hf(hf, head_dim),
        attn_softcap=softcap_from_hf(hf, "attn_logit_softcapping", 50.0),
        final_softcap=softcap_from_hf(hf, "final_logit_softcapping", 30.0),
        **sliding_layout(hf, hf.typed("num_hidden_layers", int), pattern=2),
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    check_gemma_shape(config, sandwich=True)
    hf = llama_like_to_hf(
        config, "Gemma2ForCausalLM",
        attention_bias=config.qkv_bias,
        hidden_activation=ACTIVATIONS_TO_HF[config.activation],
        query_pre_attn_scalar=attn_scale_to_hf(config),
        attn_logit_softcapping=optional_float(config.attn_softcap),
        final_logit_softcapping=optional_float(config.final_softcap),
        rms_norm_eps=float(config.norm_eps),
        **sliding_layout_to_hf(config),
    )  # fmt: skip
    del hf["hidden_act"]  # not read by Gemma2Config
    return hf


# Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w (convert_hf_to_gguf.py's Gemma2Model)
GGUF = Arch("gemma2", keys=GEMMA2_KEYS, norm_offset=1.0)

FAMILY = Family(
    model_type="gemma2",
    architecture="Gemma2ForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=SANDWICH_MODULES,
    ignored=LLAMA_IGNORED,
    examples="gemma-2-2b, gemma-2-9b, gemma-2-27b",
    gguf=GGUF,
)
