"""MobiLlama family: MBZUAI/MobiLlama-05B, -08B, -1B (and -Chat), recognised by their architecture.

MobiLlama (Thawakar et al. 2024, "MobiLlama: Towards Accurate and Lightweight Fully Transparent
GPT", arXiv:2402.16840) is Llama-2 with one FFN shared by every block: its LlamaModel builds a
single LlamaMLP and hands that object to all decoder layers (attention and norms stay per layer).
Here that is `shared_ffn`: one module, one set of Parameters, counted once, trained once.

Its checkpoints are Llama-shaped: config.json says model_type "llama" with architectures
["MobiLlamaForCausalLM"] (loaded with trust_remote_code), so this family is chosen by the
architecture name. Two quirks of its code, followed here:

* Attention is full MHA: k_proj and v_proj are (heads * head_dim, hidden) whatever
  `num_key_value_heads` says (the hub configs say 4; the code never reads it).
* The shared FFN's tensors may be stored under every layer's `mlp.*` names (a torch.save of the
  module keeps the aliases) or under layer 0's only (safetensors keeps one copy); copies under other
  layers must equal layer 0's, else the file is refused.

Sources: github.com/mbzuai-oryx/MobiLlama (model_utils/modeling_mobillama.py, mobillama/config.json);
the hub configs' num_key_value_heads as reported by public deployment notes.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf


def from_hf(hf: HFConfig) -> ModelConfig:
    n_heads = hf.typed("num_attention_heads", int)
    return llama_like_from_hf(hf, "mobillama", n_kv_heads=n_heads, shared_ffn=True)


def to_hf(config: ModelConfig) -> dict:
    problems = []
    if not config.shared_ffn:
        problems.append("an FFN per block (MobiLlama shares one)")
    if config.n_kv_heads != config.n_heads:
        problems.append(f"n_kv_heads={config.n_kv_heads} (MobiLlama's attention is MHA)")
    if config.qkv_bias or config.out_bias or config.ffn_bias:
        problems.append("biases")
    if problems:
        raise UnsupportedModelError(f"config {config.name!r}: a MobiLlama checkpoint cannot hold {'; '.join(problems)}")
    return llama_like_to_hf(config.replace(shared_ffn=False), "MobiLlamaForCausalLM", model_type="llama")


FAMILY = Family(
    model_type="mobillama",
    architecture="MobiLlamaForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="MBZUAI/MobiLlama-05B, -1B (config.json: model_type llama, architectures MobiLlamaForCausalLM)",
    by_architecture=True,
)
