"""Gemma-3 text family (`model_type: gemma3_text`): gemma-3-270m, gemma-3-1b (Gemma Team, arXiv 2503.19786).

Gemma-2's block (gemma2.py: sandwich norms, query_pre_attn_scalar, GeGLU) with:
* QK-norm instead of attention soft-capping: a (1 + w) RMSNorm over head_dim on every query and key
  head, before RoPE. `attn_logit_softcapping` is kept by transformers but never applied, so it is
  not read here (and a config with attn_softcap cannot be saved in this format);
* five local layers per global one: layer i slides (512-key window) unless (i + 1) % 6 == 0
  (`sliding_window_pattern`, default 6; an explicit `layer_types` list wins);
* two RoPE tables: global layers rotate with base 1e6 (and any scaling: linear x8 in the 4B+ models),
  local ones with base 1e4 and no scaling (`rope_local_theta`). config.json spells them
          current: rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}
          legacy:  rope_theta (global), rope_local_base_freq (local), rope_scaling (global only);
* no final soft-cap by default (final_logit_softcapping null).
The embedding scale sqrt(hidden) is rounded to the weights' dtype: 25.25 for 270m, 34.0 for 1b in bf16.
Multimodal checkpoints (model_type "gemma3", gemma-3-4b and up) nest this config under text_config
and prefix the weights; they are not read here.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
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
from .gemma2 import softcap_from_hf
from .gguf_arch import DECODER_KEYS, Arch
from .hf_config import ACTIVATIONS_TO_HF, HFConfig
from .llama import LLAMA_IGNORED, llama_like_to_hf

# Gemma3TextConfig's defaults (transformers 5.23) where they differ from GemmaConfig's
GEMMA3_DEFAULTS = GEMMA_DEFAULTS | dict(
    vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, max_position_embeddings=131072, sliding_window=4096,
)  # fmt: skip
GLOBAL_THETA, LOCAL_THETA = 1_000_000.0, 10_000.0  # Gemma3TextConfig.default_theta


def rope_tables(hf: HFConfig) -> tuple[dict, dict]:
    """(full_attention, sliding_attention) RoPE parameters, as Gemma3TextConfig assembles them.

    rope_parameters' per-layer-type dicts first; a legacy rope_scaling updates the full-attention
    one; a missing theta comes from rope_theta / rope_local_base_freq, else 1e6 / 1e4.
    """
    params = hf.get("rope_parameters") or {}
    if not isinstance(params, dict) or set(params) - {"full_attention", "sliding_attention"}:
        raise UnsupportedModelError(
            f"{hf.source}: Gemma-3's rope_parameters holds one object per layer type ('full_attention', "
            f"'sliding_attention'); found {params!r}, which transformers would ignore"
        )
    full, sliding = dict(params.get("full_attention") or {}), dict(params.get("sliding_attention") or {})
    scaling = hf.get("rope_scaling")
    if scaling is not None:
        if not isinstance(scaling, dict) or ("type" in scaling and "rope_type" not in scaling):
            raise UnsupportedModelError(
                f"{hf.source}: rope_scaling {scaling!r}: Gemma3TextConfig reads the key 'rope_type' (an old "
                "'type' key is not translated, and transformers would run default RoPE)"
            )
        full.update(scaling)
    full.setdefault("rope_theta", hf.get("rope_theta", GLOBAL_THETA))
    sliding.setdefault("rope_theta", hf.get("rope_local_base_freq", LOCAL_THETA))
    return full, sliding


def read_rope(hf: HFConfig, layout: dict) -> dict:
    """rope_theta / rope_scaling (global table) and rope_local_theta (sliding layers' table)."""
    def flat(params: dict) -> tuple[float, dict | None]:  # one table, read as any flat rope_parameters
        context = {"max_position_embeddings": hf.get("max_position_embeddings")}  # llama3 / yarn need it
        theta, scaling, _ = HFConfig({"rope_parameters": params, **context}, hf.source).rope()
        return theta, scaling  # (partial_rotary_factor: Gemma-3 rotates the whole head regardless)

    full, sliding = rope_tables(hf)
    (theta, scaling), (local_theta, local_scaling) = flat(full), flat(sliding)
    if layout["sliding_window"] is None:  # no layer slides (sliding_layout's canonical form)
        local_theta = None  # transformers builds no sliding table either
    elif (local_theta, local_scaling) == (theta, scaling):
        local_theta = None  # the sliding layers rotate exactly as the global ones: one table
    elif local_scaling is not None:
        raise UnsupportedModelError(
            f"{hf.source}: RoPE scaling on the sliding layers ({sliding!r}) is not supported; "
            "only the global layers' table may be scaled"
        )
    return dict(rope_theta=theta, rope_scaling=scaling, rope_local_theta=local_theta)


def from_hf(hf: HFConfig) -> ModelConfig:
    hf = hf.with_defaults(GEMMA3_DEFAULTS)
    n_layers, head_dim = hf.typed("num_hidden_layers", int), hf.typed("head_dim", int, 256)
    layout = sliding_layout(hf, n_layers, pattern=6, pattern_key="sliding_window_pattern")
    clean = HFConfig({k: v for k, v in hf.items() if k not in ("rope_parameters", "rope_scaling")}, hf.source)
    return gemma_like_from_hf(
        clean, "gemma3_text",
        activation=hf.activation("hidden_activation", "gelu_pytorch_tanh"),
        qk_norm=True,
        sandwich_norms=True,
        attn_scale=attn_scale_from_hf(hf, head_dim),
        final_softcap=softcap_from_hf(hf, "final_logit_softcapping", None),
        **layout,
        **read_rope(hf, layout),
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    check_gemma_shape(config, sandwich=True)
    if config.attn_softcap is not None:
        raise UnsupportedModelError(
            f"config {config.name!r}: transformers' Gemma-3 never applies attn_logit_softcapping, so a gemma3_text "
            f"checkpoint cannot hold attn_softcap={config.attn_softcap}"
        )
    if not config.qk_norm or config.qk_norm_per_head:
        raise UnsupportedModelError(f"config {config.name!r}: every gemma3_text layer has a shared-weight QK-norm")
    hf = llama_like_to_hf(
        config, "Gemma3ForCausalLM",
        attention_bias=config.qkv_bias,
        hidden_activation=ACTIVATIONS_TO_HF[config.activation],
        query_pre_attn_scalar=attn_scale_to_hf(config),
        attn_logit_softcapping=None,
        final_logit_softcapping=optional_float(config.final_softcap),
        rms_norm_eps=float(config.norm_eps),
        **sliding_layout_to_hf(config),
    )  # fmt: skip
    full = hf.pop("rope_parameters")
    local = config.rope_local_theta
    sliding = dict(full) if local is None else {"rope_type": "default", "rope_theta": local}
    hf["rope_parameters"] = {"full_attention": full, "sliding_attention": sliding}
    del hf["hidden_act"]  # not read by Gemma3TextConfig
    return hf


# Gemma-3's text model; its q/k norms are (1 + w) norms too, stored 1 + w
GGUF = Arch("gemma3", keys=DECODER_KEYS + (("attention.sliding_window", "sliding_window", int),), norm_offset=1.0)

FAMILY = Family(
    model_type="gemma3_text",
    architecture="Gemma3ForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=SANDWICH_MODULES,  # with the llama map's self_attn.q_norm / k_norm
    ignored=LLAMA_IGNORED,
    examples="gemma-3-270m, gemma-3-1b",
    gguf=GGUF,
)
