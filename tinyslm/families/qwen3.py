"""Qwen3 family (`model_type: qwen3`): Qwen3-0.6B and up (dense).

Llama plus QK-norm: an RMSNorm over head_dim applied to every query and key head after the
projection and before RoPE. head_dim is explicit (128, so q_proj of Qwen3-0.6B is 1024 -> 2048)
and defaults to 128 when config.json omits it. q/k/v/o biases follow `attention_bias`.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import Arch
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf
from .qwen2 import check_no_sliding_window, qwen_defaults


def from_hf(hf: HFConfig) -> ModelConfig:
    check_no_sliding_window(hf)
    bias = hf.typed("attention_bias", bool, False)
    return llama_like_from_hf(
        hf, "qwen3", qk_norm=True, qkv_bias=bias, out_bias=bias, head_dim=hf.typed("head_dim", int, 128),
        **qwen_defaults(hf),
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    if not config.qk_norm or config.qkv_bias != config.out_bias or config.ffn_bias:
        raise UnsupportedModelError("a qwen3 checkpoint has QK-norm and one attention_bias switch; this config differs")
    return llama_like_to_hf(config, "Qwen3ForCausalLM", attention_bias=config.qkv_bias, use_sliding_window=False)


def _qwen3_bias(names: set[str]) -> dict:
    return {"attention_bias": "blk.0.attn_q.bias" in names}


GGUF = Arch("qwen3", from_tensors=_qwen3_bias)

FAMILY = Family(
    model_type="qwen3",
    architecture="Qwen3ForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="Qwen3-0.6B/1.7B/4B (dense)",
    gguf=GGUF,
)
