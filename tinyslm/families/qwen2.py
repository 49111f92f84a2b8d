"""Qwen2 family (`model_type: qwen2`): Qwen1.5, Qwen2, Qwen2.5.

Llama plus biases on the q/k/v projections (always; there is no config switch), no bias on o_proj.
Qwen configs carry a `sliding_window` value, but `use_sliding_window` is false in every released
checkpoint, so all layers use full attention.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import Arch
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf


def check_no_sliding_window(hf: HFConfig) -> None:
    if hf.typed("use_sliding_window", bool, False):
        raise UnsupportedModelError(
            f"{hf.source}: use_sliding_window=true (sliding windows on layers >= max_window_layers) is not supported"
        )


def from_hf(hf: HFConfig) -> ModelConfig:
    check_no_sliding_window(hf)
    return llama_like_from_hf(hf, "qwen2", qkv_bias=True, **qwen_defaults(hf))


def qwen_defaults(hf: HFConfig) -> dict:
    """What Qwen2Config / Qwen3Config default differently from LlamaConfig when a key is absent."""
    return dict(
        n_kv_heads=hf.typed("num_key_value_heads", int, 32),
        max_seq_len=hf.typed("max_position_embeddings", int, 32768),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
    )


def to_hf(config: ModelConfig) -> dict:
    if not config.qkv_bias or config.out_bias or config.ffn_bias or config.qk_norm:
        raise UnsupportedModelError("a qwen2 checkpoint has q/k/v biases and nothing else; this config differs")
    return llama_like_to_hf(config, "Qwen2ForCausalLM", use_sliding_window=False)


GGUF = Arch("qwen2")

FAMILY = Family(
    model_type="qwen2",
    architecture="Qwen2ForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="Qwen1.5, Qwen2-0.5B, Qwen2.5-0.5B/1.5B",
    gguf=GGUF,
)
