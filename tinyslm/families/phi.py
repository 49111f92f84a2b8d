"""Phi family (`model_type: phi`): Phi-1, Phi-1.5, Phi-2.

A GPT-J-like parallel block with a single LayerNorm: attention and the MLP both read the same
normed input and their outputs are added to the residual together,

    n = LayerNorm(x);  out = x + dense(attention(n)) + fc2(gelu_new(fc1(n)))

(transformers sums `attn + mlp + residual`, in that order; tinyslm sums `x + attn + ffn`: equal
in exact arithmetic, a rounding difference in bfloat16). Every linear has a bias, the lm-head
included; the final norm is a LayerNorm with bias. RoPE rotates only the first
`partial_rotary_factor` of each head (Phi-2: 0.4, 32 of 80 dims; Phi-1/1.5: 0.5, 32 of 64).
`qk_layernorm` adds a LayerNorm (with bias, shared by all heads) over each query and key head
before RoPE; no released Phi-1/1.5/2 checkpoint sets it.

Absent keys take PhiConfig's defaults: partial_rotary_factor 0.5, hidden_act gelu_new,
layer_norm_eps 1e-5, 2048 positions, bos/eos 1/2. Checkpoints in the pre-transformers-4.37
remote-code layout (`model_type: phi-msft`, `transformer.h.{i}.mixer.Wqkv`) are not this family.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import PHI2_KEYS, Arch
from .hf_config import ACTIVATIONS_TO_HF, HFConfig
from .llama import LLAMA_IGNORED, llama_like_from_hf, llama_like_to_hf

PHI_MODULES = {
    "tok_emb": "model.embed_tokens",
    "blocks.{i}.attn_norm": "model.layers.{i}.input_layernorm",  # the one norm; the MLP reads it too
    "blocks.{i}.attn.wq": "model.layers.{i}.self_attn.q_proj",
    "blocks.{i}.attn.wk": "model.layers.{i}.self_attn.k_proj",
    "blocks.{i}.attn.wv": "model.layers.{i}.self_attn.v_proj",
    "blocks.{i}.attn.wo": "model.layers.{i}.self_attn.dense",
    "blocks.{i}.attn.q_norm": "model.layers.{i}.self_attn.q_layernorm",  # qk_layernorm = true
    "blocks.{i}.attn.k_norm": "model.layers.{i}.self_attn.k_layernorm",
    "blocks.{i}.ffn.up": "model.layers.{i}.mlp.fc1",
    "blocks.{i}.ffn.down": "model.layers.{i}.mlp.fc2",
    "final_norm": "model.final_layernorm",
    "head": "lm_head",  # weight and bias
}


def from_hf(hf: HFConfig) -> ModelConfig:
    n_heads = hf.typed("num_attention_heads", int)
    dim = hf.typed("hidden_size", int)
    head_dim = hf.typed("head_dim", int, None) or dim // n_heads  # PhiAttention honours an explicit head_dim
    qk_norm = hf.typed("qk_layernorm", bool, False)
    if qk_norm and head_dim * n_heads != dim:
        raise UnsupportedModelError(
            f"{hf.source}: qk_layernorm=true with head_dim={head_dim} != hidden_size / num_attention_heads "
            f"= {dim // n_heads}: transformers builds the q/k LayerNorms over hidden_size / num_attention_heads "
            "and cannot run this model"
        )
    return llama_like_from_hf(
        hf, "phi",
        head_dim=head_dim,
        max_seq_len=hf.typed("max_position_embeddings", int, 2048),
        partial_rotary_factor=hf.partial_rotary(0.5),
        block="parallel_shared_norm",
        norm="layernorm",
        norm_eps=hf.typed("layer_norm_eps", float, 1e-5),
        ffn="plain",
        activation=hf.activation("hidden_act", "gelu_new"),
        ffn_bias=True,
        qkv_bias=True,
        out_bias=True,
        head_bias=True,
        qk_norm=qk_norm,
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    if config.block != "parallel_shared_norm" or config.ffn != "plain" or config.norm != "layernorm":
        raise UnsupportedModelError(
            f"config {config.name!r}: a phi checkpoint is a parallel block with one LayerNorm and a plain MLP; "
            f"found block={config.block!r}, ffn={config.ffn!r}, norm={config.norm!r}"
        )
    values = llama_like_to_hf(
        config, "PhiForCausalLM",
        layer_norm_eps=config.norm_eps,
        qk_layernorm=config.qk_norm,
        hidden_act=ACTIVATIONS_TO_HF[config.activation],
    )  # fmt: skip
    del values["rms_norm_eps"]
    if config.head_dim * config.n_heads == config.dim:
        del values["head_dim"]  # PhiConfig has no head_dim key; write it only when it is not hidden / heads
    values["rope_parameters"]["partial_rotary_factor"] = config.partial_rotary_factor  # the default is 0.5, not 1
    return values


def _phi2_refuse(config) -> list[str]:
    # llama.cpp's phi2 graph: no q/k LayerNorm, an untied head with a bias, GELU as tanh approximation
    problems = ["qk_layernorm=true"] if config.qk_norm else []
    if config.tie_embeddings:
        problems.append("a tied lm_head (tie_word_embeddings=true)")
    if config.activation not in ("gelu_new", "gelu_tanh"):
        problems.append(f"hidden_act={config.activation!r} (a phi2 GGUF is read as gelu_new)")
    return problems


# convert_hf_to_gguf.py's Phi2Model: separate q/k/v with biases, partial RoPE
GGUF = Arch("phi2", keys=PHI2_KEYS, partial_rotary=True, refuse=_phi2_refuse)

FAMILY = Family(
    model_type="phi",
    architecture="PhiForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=PHI_MODULES,
    ignored=LLAMA_IGNORED,
    examples="microsoft/phi-1, phi-1_5, phi-2",
    gguf=GGUF,
)
