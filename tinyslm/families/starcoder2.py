"""StarCoder2 family (`model_type: starcoder2`): StarCoder2-3B, -7B, -15B (BigCode's code models).

A Llama-shaped sequential block with GPT-2's parts: LayerNorms with weight and bias (`norm_epsilon`)
instead of RMSNorm, a plain MLP `c_proj(gelu_tanh(c_fc(x)))` instead of SwiGLU, and a bias on every
attention and MLP linear (`use_bias`, true by default); the lm-head has none and is tied to the
embedding by default. RoPE rotates whole heads (rotate_half layout); GQA (2 KV heads by default);
`sliding_window` windows every layer when set (StarCoder2-3B: 4096), as in Mistral.

Absent keys take Starcoder2Config's defaults: gelu_pytorch_tanh, norm_epsilon 1e-5, 2 KV heads,
4096 positions, bos/eos 50256, tied embeddings.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import DECODER_KEYS, Arch
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf

STARCODER2_MODULES = {
    **{k: v for k, v in LLAMA_MODULES.items() if ".ffn." not in k},
    "blocks.{i}.ffn.up": "model.layers.{i}.mlp.c_fc",  # weight and bias
    "blocks.{i}.ffn.down": "model.layers.{i}.mlp.c_proj",
}


def from_hf(hf: HFConfig) -> ModelConfig:
    bias = hf.typed("use_bias", bool, True)
    return llama_like_from_hf(
        hf, "starcoder2",
        n_kv_heads=hf.typed("num_key_value_heads", int, 2),
        max_seq_len=hf.typed("max_position_embeddings", int, 4096),
        sliding_window=hf.typed("sliding_window", int, None),
        norm="layernorm",
        norm_eps=hf.typed("norm_epsilon", float, 1e-5),
        ffn="plain",
        activation=hf.activation("hidden_act", "gelu_pytorch_tanh"),
        ffn_bias=bias,
        qkv_bias=bias,
        out_bias=bias,
        tie_embeddings=hf.typed("tie_word_embeddings", bool, True),
        bos_token_id=hf.get("bos_token_id", 50256),
        eos_token_id=hf.get("eos_token_id", 50256),
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    if config.ffn != "plain" or config.norm != "layernorm" or config.block != "sequential":
        raise UnsupportedModelError(
            f"config {config.name!r}: a starcoder2 checkpoint is a sequential block with LayerNorms and a plain MLP; "
            f"found block={config.block!r}, ffn={config.ffn!r}, norm={config.norm!r}"
        )
    if not config.qkv_bias == config.out_bias == config.ffn_bias:
        raise UnsupportedModelError(f"config {config.name!r}: starcoder2 has one `use_bias` for every linear; found "
                                    f"qkv {config.qkv_bias}, out {config.out_bias}, ffn {config.ffn_bias}")  # fmt: skip
    values = llama_like_to_hf(
        config, "Starcoder2ForCausalLM",
        norm_epsilon=float(config.norm_eps),
        use_bias=config.ffn_bias,
        sliding_window=config.sliding_window,
    )  # fmt: skip
    del values["rms_norm_eps"]
    return values


# convert_hf_to_gguf.py's StarCoder2Model: LayerNorm eps under llama.cpp's layer_norm_epsilon, q/k not permuted,
# the biases read off the tensors; llama.cpp has no key for the window: written under attention.sliding_window
# (llama.cpp ignores it, tinyslm reads it back)
STARCODER2_KEYS = tuple(k for k in DECODER_KEYS if k[0] != "attention.layer_norm_rms_epsilon") + (
    ("attention.layer_norm_epsilon", "norm_epsilon", float),
    ("attention.sliding_window", "sliding_window", int),
)


def _biases(names: set[str]) -> dict:
    return {"use_bias": "blk.0.attn_q.bias" in names}


GGUF = Arch("starcoder2", keys=STARCODER2_KEYS, from_tensors=_biases)

FAMILY = Family(
    model_type="starcoder2",
    architecture="Starcoder2ForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=STARCODER2_MODULES,
    ignored=LLAMA_IGNORED,
    examples="bigcode/starcoder2-3b, starcoder2-7b, starcoder2-15b",
    gguf=GGUF,
)
