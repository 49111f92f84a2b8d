"""Nemotron family (`model_type: nemotron`): NVIDIA's Minitron-4B/8B (pruned Nemotron-4 15B).

Llama's outer layout and tensor names, with a different inside:

* Norms are LayerNorm1P (`norm = "layernorm_1p"`): a LayerNorm with bias whose stored weight w is
  zero-centred and applied as (w + 1), formed in the weight's dtype; eps is config.json's `norm_eps`.
* The FFN is not gated: down(relu(up(x))^2) (`ffn = "plain"`, `activation = "relu2"`), biases
  per `mlp_bias`.
* Partial rotary: only the first `partial_rotary_factor` of each head is rotated (0.5 when the key
  is absent: 64 of Minitron's 128 dims), rotate_half on those, cos/sin in the activations' dtype.
* `head_dim` is the config key or hidden_size / num_attention_heads; NeMo's `kv_channels`, which
  Minitron's config.json also carries, is not read by transformers and not read here.

Absent keys take NemotronConfig's defaults. `num_key_value_heads` has none that works (transformers
fails on a config without it), so it is required here.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import NEMOTRON_KEYS, Arch
from .hf_config import HFConfig
from .llama import (
    LLAMA_IGNORED,
    LLAMA_MODULES,
    llama_like_from_hf,
    llama_like_to_hf,
)

# NemotronConfig's defaults (transformers 5.23), for keys a config.json leaves out
HF_DEFAULTS = {
    "vocab_size": 256000, "hidden_size": 6144, "intermediate_size": 24576, "num_hidden_layers": 32,
    "num_attention_heads": 48, "hidden_act": "relu2", "max_position_embeddings": 4096, "norm_eps": 1e-5,
    "bos_token_id": 2, "eos_token_id": 3, "tie_word_embeddings": False,
}  # fmt: skip
PARTIAL_ROTARY_DEFAULT = 0.5  # NemotronConfig.__post_init__ sets it when config.json has none


def from_hf(hf: HFConfig) -> ModelConfig:
    hf = hf.with_defaults(HF_DEFAULTS)
    bias = hf.typed("attention_bias", bool, False)
    return llama_like_from_hf(
        hf, "nemotron",
        n_kv_heads=hf.typed("num_key_value_heads", int),  # no usable default: NemotronAttention divides by it
        norm="layernorm_1p", norm_eps=hf.typed("norm_eps", float),
        ffn="plain", ffn_bias=hf.typed("mlp_bias", bool, False),
        qkv_bias=bias, out_bias=bias,
        partial_rotary_factor=hf.partial_rotary(PARTIAL_ROTARY_DEFAULT),
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    if config.qkv_bias != config.out_bias:
        raise UnsupportedModelError(
            f"config {config.name!r}: Nemotron's attention_bias covers q, k, v and o together; qkv_bias != out_bias"
        )
    values = llama_like_to_hf(
        config, "NemotronForCausalLM",
        norm_eps=config.norm_eps,
        attention_bias=config.qkv_bias, mlp_bias=config.ffn_bias,
    )  # fmt: skip
    del values["rms_norm_eps"]  # Nemotron's key is norm_eps
    # written even when 1.0: an absent factor reads back as Nemotron's default 0.5
    values["rope_parameters"]["partial_rotary_factor"] = config.partial_rotary_factor
    return values


def _nemotron(names: set[str]) -> dict:
    return {"attention_bias": "blk.0.attn_q.bias" in names, "mlp_bias": "blk.0.ffn_up.bias" in names}


GGUF = Arch("nemotron", keys=NEMOTRON_KEYS, from_tensors=_nemotron, partial_rotary=True, norm_offset=1.0)

FAMILY = Family(
    model_type="nemotron",
    architecture="NemotronForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,  # the plain FFN has up and down only; LayerNorm1P's .bias maps with its .weight
    ignored=LLAMA_IGNORED,
    examples="Minitron-4B-Base, Minitron-8B-Base",
    gguf=GGUF,
)
