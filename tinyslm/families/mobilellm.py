"""MobileLLM family (`model_type: mobilellm`): facebook/MobileLLM-125M, -350M, -600M, -1B, -1.5B.

MobileLLM (Liu et al. 2024, "MobileLLM: Optimizing Sub-billion Parameter Language Models for
On-Device Use Cases", arXiv:2402.14905) is a deep-and-thin Llama: HF Llama's modules and tensor
names (block A of the key maps), GQA and SwiGLU. Its two config switches are the point:

* `share_embedding`: no lm_head module at all; logits = h @ embed_tokens.weight^T. Here that is a
  tied head (`tie_embeddings`), whatever `tie_word_embeddings` says (the released configs say
  false), and the files hold no `lm_head.weight`.
* `layer_sharing` (the `-layer-share` checkpoints): each stored block runs twice in a row,
  0, 0, 1, 1, ... ("immediate block-wise repeat"): depth 2L from L blocks, parameters unchanged.
  MobileLLM's own code updates one KV-cache slot from both passes of a block, which breaks cached
  decoding; here every depth step has its own slot (`config.schedule()`).

Config source: huggingface.co/facebook/MobileLLM-125M config.json; the modeling code in
github.com/facebookresearch/MobileLLM (utils/modeling_llama.py).
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf


def from_hf(hf: HFConfig) -> ModelConfig:
    share_embedding = hf.typed("share_embedding", bool, False)
    sharing = hf.typed("layer_sharing", bool, False)
    bias = hf.typed("attention_bias", bool, False)
    return llama_like_from_hf(
        hf, "mobilellm", qkv_bias=bias, out_bias=bias, ffn_bias=hf.typed("mlp_bias", bool, False),
        tie_embeddings=share_embedding or hf.typed("tie_word_embeddings", bool, False),
        block_sharing="immediate" if sharing else "none", share_repeats=2,
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    if config.block_sharing not in ("none", "immediate") or config.share_repeats != 2 or config.block_schedule:
        raise UnsupportedModelError(
            f"config {config.name!r}: MobileLLM's layer_sharing runs each block exactly twice in a row; "
            f"block_sharing={config.block_sharing!r} x {config.share_repeats} has no mobilellm config.json form"
        )
    if config.qkv_bias != config.out_bias:
        raise UnsupportedModelError("mobilellm's attention_bias covers q, k, v and o together; qkv_bias != out_bias")
    plain = config.replace(block_sharing="none")  # llama_like_to_hf refuses sharing; it is written below
    return llama_like_to_hf(
        plain, "MobileLLMForCausalLM", model_type="mobilellm", attention_bias=config.qkv_bias,
        mlp_bias=config.ffn_bias, share_embedding=config.tie_embeddings, tie_word_embeddings=False,
        layer_sharing=config.block_sharing == "immediate",
    )  # fmt: skip


FAMILY = Family(
    model_type="mobilellm",
    architecture="MobileLLMForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="facebook/MobileLLM-125M, -350M and their -layer-share versions",
)
