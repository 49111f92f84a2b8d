"""Phi-3 family (`model_type: phi3`): Phi-3-mini-4k/128k, Phi-3-medium, Phi-3.5-mini, Phi-4-mini.

A Llama block (RMSNorm, SwiGLU, no biases) with two fused checkpoint tensors, split at load time:

    self_attn.qkv_proj      rows [q | k | v]     -> attn.wq, attn.wk, attn.wv
    mlp.gate_up_proj        rows [gate | up]     -> ffn.gate, ffn.up

`sliding_window` windows every layer (Phi-3-mini-4k: 2047 keys, the query itself included; null:
full attention). `partial_rotary_factor` is honoured (Phi-4-mini rotates 96 of 128 dims).
Phi3Config's defaults apply to absent keys: rms_norm_eps 1e-5, 4096 positions, bos/eos 1/32000,
no sliding window.

LongRoPE (the 128k-context checkpoints: Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini; `rope_scaling`
of type longrope, or the older spellings su / yarn that Phi3Config rewrites to longrope): see
layers/rope.py. Phi-3 keeps the pre-training context *outside* the RoPE dict, as the top-level key
`original_max_position_embeddings` (Phi3Config default 4096), and transformers gives that key
priority over any copy inside the dict; it is written to both places when saving. The attention
factor comes from max_position_embeddings / original (Phi-3-mini-128k: 131072 / 4096 -> 1.1902).
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from ..rope_scaling import rope_type_of
from . import Family, Fused
from .gguf_arch import PHI3_KEYS, Arch
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, llama_like_from_hf, llama_like_to_hf

PHI3_MODULES = {
    "tok_emb": "model.embed_tokens",
    "blocks.{i}.attn_norm": "model.layers.{i}.input_layernorm",
    "blocks.{i}.attn.wo": "model.layers.{i}.self_attn.o_proj",
    "blocks.{i}.ffn_norm": "model.layers.{i}.post_attention_layernorm",
    "blocks.{i}.ffn.down": "model.layers.{i}.mlp.down_proj",
    "final_norm": "model.norm",
    "head": "lm_head",
}
PHI3_FUSED = (
    Fused("model.layers.{i}.self_attn.qkv_proj", ("blocks.{i}.attn.wq", "blocks.{i}.attn.wk", "blocks.{i}.attn.wv")),
    Fused("model.layers.{i}.mlp.gate_up_proj", ("blocks.{i}.ffn.gate", "blocks.{i}.ffn.up")),
)
LONGROPE_NAMES = ("longrope", "su", "yarn")  # Phi3Config rewrites su / yarn to longrope


def phi3_rope_scaling(hf: HFConfig, scaling: dict | None) -> dict | None:
    """The RoPE scaling transformers' Phi3Config ends up with: None or LongRoPE, with Phi-3's own context key."""
    if scaling is None:
        return None
    rope_type = scaling.get("rope_type")
    if rope_type not in LONGROPE_NAMES:
        raise UnsupportedModelError(
            f"{hf.source}: rope_type {rope_type!r} is not a Phi-3 RoPE (transformers' Phi3Config accepts only "
            "default and longrope)"
        )
    original = hf.typed("original_max_position_embeddings", int, 4096)  # the top-level key wins
    return {**scaling, "rope_type": "longrope", "original_max_position_embeddings": original}


def from_hf(hf: HFConfig) -> ModelConfig:
    _, scaling, partial = hf.rope()
    config = llama_like_from_hf(
        hf, "phi3",
        max_seq_len=hf.typed("max_position_embeddings", int, 4096),
        rope_scaling=phi3_rope_scaling(hf, scaling),
        partial_rotary_factor=partial,  # Phi3Config's default is 1.0, so hf.rope()'s fallback is right
        norm_eps=hf.typed("rms_norm_eps", float, 1e-5),
        sliding_window=hf.typed("sliding_window", int, None),
        bos_token_id=hf.get("bos_token_id", 1),
        eos_token_id=hf.get("eos_token_id", 32000),
    )  # fmt: skip
    rope_type_of(config.rope_scaling, config.rotary_dim)  # LongRoPE: one factor per rotated pair
    return config


def to_hf(config: ModelConfig) -> dict:
    rope_type = rope_type_of(config.rope_scaling)
    if rope_type not in ("default", "longrope"):
        raise UnsupportedModelError(
            f"config {config.name!r}: a phi3 checkpoint has no {rope_type!r} RoPE scaling "
            "(Phi3Config accepts only default RoPE and LongRoPE)"
        )
    if config.qkv_bias or config.out_bias or config.ffn_bias:
        raise UnsupportedModelError(f"config {config.name!r}: a phi3 checkpoint has no attention or MLP biases")
    # pad_token_id: tinyslm keeps none, and Phi3Config's default (32000) would be an out-of-vocabulary
    # padding_idx for any smaller vocabulary, which transformers refuses to build
    extra = {}
    if rope_type == "longrope":  # transformers reads the context from the top-level key, whatever the RoPE dict says
        extra["original_max_position_embeddings"] = config.rope_scaling["original_max_position_embeddings"]
    return llama_like_to_hf(config, "Phi3ForCausalLM", sliding_window=config.sliding_window, pad_token_id=None, **extra)


GGUF = Arch("phi3", keys=PHI3_KEYS, partial_rotary=True)

FAMILY = Family(
    model_type="phi3",
    architecture="Phi3ForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=PHI3_MODULES,
    fused=PHI3_FUSED,
    ignored=LLAMA_IGNORED,
    examples="microsoft/Phi-3-mini-4k-instruct, Phi-3-mini-128k-instruct, Phi-3.5-mini-instruct, Phi-4-mini-instruct",
    gguf=GGUF,
)
