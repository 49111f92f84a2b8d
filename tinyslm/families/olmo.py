"""OLMo family (`model_type: olmo`): AI2's OLMo-1B-hf / OLMo-7B-hf (the first OLMo release).

A Llama block (SwiGLU FFN, rotate_half RoPE over the whole head, sequential pre-norm) with three
differences, each a ModelConfig field rather than code of its own:

* Every norm is a LayerNorm **without weight or bias** (`norm = "layernorm_plain"`), computed in
  float32. transformers hard-codes its eps to 1e-5 (there is no config key), so `norm_eps` is
  fixed and a config with another eps cannot be saved as an OLMo checkpoint. Nothing is stored
  for the norms: the state dict has no norm tensors at all.
* RoPE multiplies in float32 (`rope_fp32`): OlmoRotaryEmbedding hands float32 cos/sin to
  apply_rotary_pos_emb, which upcasts q and k and casts the result back.
* `clip_qkv` (null in OLMo-1B-hf): q, k *and* v are clamped to [-c, c] right after the
  projections, before RoPE (`qkv_clip`).

`attention_bias` puts biases on q/k/v/o together; the MLP never has biases. Absent keys take
OlmoConfig's defaults (vocab 50304, eos 50279, no bos, MHA, 2048 positions, untied head).
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import OLMO_KEYS, Arch
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf

NORM_EPS = 1e-5  # OlmoLayerNorm's eps, a constant in transformers' modeling_olmo.py

# OlmoConfig's defaults (transformers 5.23), for keys a config.json leaves out
HF_DEFAULTS = {
    "vocab_size": 50304, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "hidden_act": "silu", "max_position_embeddings": 2048,
    "bos_token_id": None, "eos_token_id": 50279, "tie_word_embeddings": False,
}  # fmt: skip


def from_hf(hf: HFConfig) -> ModelConfig:
    hf = hf.with_defaults(HF_DEFAULTS)
    _, scaling, partial = hf.rope()
    if scaling is not None and partial != 1.0:
        # the scaled-RoPE initialisers honour partial_rotary_factor, OlmoAttention does not: transformers fails
        raise UnsupportedModelError(
            f"{hf.source}: partial_rotary_factor={partial} with rope type {scaling['rope_type']!r}: OLMo rotates the "
            "whole head, and transformers cannot run this combination either"
        )
    bias = hf.typed("attention_bias", bool, False)
    return llama_like_from_hf(
        hf, "olmo",
        norm="layernorm_plain", norm_eps=NORM_EPS,  # no config key: rms_norm_eps / layer_norm_eps are not read
        rope_fp32=True,
        qkv_clip=hf.typed("clip_qkv", float, None),
        qkv_bias=bias, out_bias=bias,
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    if config.norm == "layernorm_plain" and config.norm_eps != NORM_EPS:
        raise UnsupportedModelError(
            f"config {config.name!r}: OLMo's parameter-free LayerNorm has eps fixed at {NORM_EPS} in transformers "
            f"(no config.json key); norm_eps={config.norm_eps} cannot be saved as an olmo checkpoint"
        )
    if config.qkv_bias != config.out_bias:
        raise UnsupportedModelError(
            f"config {config.name!r}: OLMo's attention_bias covers q, k, v and o together; qkv_bias != out_bias"
        )
    values = llama_like_to_hf(config, "OlmoForCausalLM", attention_bias=config.qkv_bias, clip_qkv=config.qkv_clip)
    del values["rms_norm_eps"]  # OlmoConfig has no norm eps; writing one would suggest it is read
    return values


def _olmo_refuse(config) -> list[str]:
    problems = ["attention biases (attention_bias=true)"] if config.qkv_bias or config.out_bias else []
    if config.qkv_clip is not None and config.qkv_clip <= 0:  # llama.cpp clamps only when clamp_kqv > 0
        problems.append(f"clip_qkv={config.qkv_clip} (llama.cpp reads clamp_kqv <= 0 as no clamp)")
    return problems


# OLMo-1B-hf (convert_hf_to_gguf.py's OlmoModel): q/k permuted as a Llama's, no norm tensors
GGUF = Arch("olmo", keys=OLMO_KEYS, permuted_qk=True, constants={"attention.layer_norm_epsilon": 1e-5},
            refuse=_olmo_refuse)

FAMILY = Family(
    model_type="olmo",
    architecture="OlmoForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,  # the norms have no parameters, so no norm key is mapped or expected
    ignored=LLAMA_IGNORED,
    examples="OLMo-1B-hf, OLMo-7B-hf",
    gguf=GGUF,
)
