"""MiniCPM family (`model_type: minicpm`): openbmb/MiniCPM-1B-sft-bf16, MiniCPM-2B-sft-bf16 and kin.

A Llama (HF Llama tensor names, RMSNorm, RoPE, SwiGLU; GQA in the 1B, MHA in the 2B) trained with
muP-style width and depth scalings (MiniCPM, Hu et al. 2024, arXiv:2404.06395). Its remote code
applies them exactly where MiniCPM3's does (see minicpm3.py), so the same three modules serve:

    h_0    = embed(ids) * scale_emb                                      -> embed_scale
    x      = x + branch(norm(x)) * scale_depth / sqrt(num_hidden_layers) -> residual_scale
    logits = head(final_norm(x) / (hidden_size / dim_model_base))        -> logit_divisor

Absent keys take the remote MiniCPMConfig's defaults (scale_emb 1, dim_model_base 1, scale_depth 1,
rms_norm_eps 1e-6, tie_word_embeddings true); the released config.json files set all of them.

Config source: huggingface.co/openbmb/MiniCPM-2B-sft-bf16 config.json and its configuration_minicpm.py.
"""

from __future__ import annotations

import math

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf
from .minicpm3 import dim_model_base_of, residual_and_logit_scales

HF_DEFAULTS = dict(rms_norm_eps=1e-6, tie_word_embeddings=True, scale_emb=1, dim_model_base=1, scale_depth=1)


def from_hf(hf: HFConfig) -> ModelConfig:
    hf = hf.with_defaults(HF_DEFAULTS)
    residual, divisor = residual_and_logit_scales(hf)
    scale_emb = hf.typed("scale_emb", float)
    bias = hf.typed("attention_bias", bool, False)
    return llama_like_from_hf(
        hf, "minicpm", qkv_bias=bias, out_bias=bias,
        embed_scale=None if scale_emb == 1 else scale_emb,
        residual_scale=None if residual == 1 else residual, logit_divisor=None if divisor == 1 else divisor,
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    if config.qkv_bias != config.out_bias:
        raise UnsupportedModelError("minicpm's attention_bias covers q, k, v and o together; qkv_bias != out_bias")
    return llama_like_to_hf(
        config, "MiniCPMForCausalLM", attention_bias=config.qkv_bias, scale_emb=config.embed_scale or 1,
        scale_depth=(config.residual_scale or 1) * math.sqrt(config.n_layers), dim_model_base=dim_model_base_of(config),
    )  # fmt: skip


FAMILY = Family(
    model_type="minicpm",
    architecture="MiniCPMForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="openbmb/MiniCPM-1B-sft-bf16, openbmb/MiniCPM-2B-sft-bf16",
)
