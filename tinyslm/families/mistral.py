"""Mistral family (`model_type: mistral`): H2O-Danube-1.8B (and Mistral-7B's shape).

A Llama block whose attention is windowed in every layer: query i sees keys i-W+1..i
(`sliding_window`, 4096 for Danube-1.8B; null turns it off). Each layer's KV cache then keeps
only W positions (a ring buffer, layers/cache.py). MistralConfig's defaults differ from
LlamaConfig's (GQA 8 KV heads, 131072 positions, eps 1e-6), so absent keys take Mistral's.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf


def from_hf(hf: HFConfig) -> ModelConfig:
    if hf.get("layer_types") is not None:
        raise UnsupportedModelError(
            f"{hf.source}: layer_types is not part of a Mistral checkpoint (transformers warns and ignores it; "
            "alternating attention is the ministral model type)"
        )
    return llama_like_from_hf(
        hf, "mistral",
        n_kv_heads=hf.typed("num_key_value_heads", int, 8),
        max_seq_len=hf.typed("max_position_embeddings", int, 4096 * 32),
        sliding_window=hf.typed("sliding_window", int, None) if "sliding_window" in hf else 4096,
        bos_token_id=hf.get("bos_token_id", 1),
        eos_token_id=hf.get("eos_token_id", 2),
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    return llama_like_to_hf(config, "MistralForCausalLM", sliding_window=config.sliding_window)


FAMILY = Family(
    model_type="mistral",
    architecture="MistralForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="H2O-Danube-1.8B, Mistral-7B",
)
