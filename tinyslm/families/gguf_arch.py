"""A family's GGUF form: which llama.cpp architecture it is, and its metadata keys.

A GGUF carries no config.json: its metadata is the config, under llama.cpp's key names
(`llama.block_count`, `llama.attention.head_count_kv`, ...; gguf-py's constants.py lists them).
Each family that has a GGUF form states it next to its HF translation (`FAMILY = Family(..., gguf=Arch(...))`):
a table of (GGUF key, config.json key) pairs, read in one direction and written in the other, so import and
export cannot drift apart, plus what the table cannot say (tinyslm/gguf/config.py applies it). This module is
data only: the families layer imports nothing of the GGUF format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# (key under "{arch}.", config.json key, type): the hyper-parameters every llama.cpp decoder writes
DECODER_KEYS = (
    ("context_length", "max_position_embeddings", int),
    ("embedding_length", "hidden_size", int),
    ("block_count", "num_hidden_layers", int),
    ("feed_forward_length", "intermediate_size", int),
    ("attention.head_count", "num_attention_heads", int),
    ("attention.head_count_kv", "num_key_value_heads", int),
    ("attention.key_length", "head_dim", int),
    ("rope.freq_base", "rope_theta", float),
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps", float),
    ("vocab_size", "vocab_size", int),
)
# GPT-2's own config.json names for the same hyper-parameters
GPT2_KEYS = (
    ("context_length", "n_positions", int),
    ("embedding_length", "n_embd", int),
    ("block_count", "n_layer", int),
    ("feed_forward_length", "n_inner", int),
    ("attention.head_count", "n_head", int),
    ("attention.layer_norm_epsilon", "layer_norm_epsilon", float),
    ("vocab_size", "vocab_size", int),
)
# LayerNorm families: llama.cpp's epsilon key for a LayerNorm, the config.json key per family
STABLELM_KEYS = tuple(k for k in DECODER_KEYS if k[0] != "attention.layer_norm_rms_epsilon") + (
    ("attention.layer_norm_epsilon", "layer_norm_eps", float),
)
NEMOTRON_KEYS = tuple(k for k in DECODER_KEYS if k[0] != "attention.layer_norm_rms_epsilon") + (
    ("attention.layer_norm_epsilon", "norm_eps", float),
)
# Gemma-2: llama.cpp writes its window and both soft-caps (convert_hf_to_gguf.py's Gemma2Model)
GEMMA2_KEYS = DECODER_KEYS + (
    ("attention.sliding_window", "sliding_window", int),
    ("attn_logit_softcapping", "attn_logit_softcapping", float),
    ("final_logit_softcapping", "final_logit_softcapping", float),
)
BLOOM_KEYS = (
    ("context_length", "seq_length", int),
    ("embedding_length", "hidden_size", int),
    ("block_count", "n_layer", int),
    ("attention.head_count", "n_head", int),
    ("attention.layer_norm_epsilon", "layer_norm_epsilon", float),
    ("vocab_size", "vocab_size", int),
)
# Phi-3's original context (LongRoPE's threshold) is a top-level config.json key; llama.cpp writes it for every phi3
PHI3_KEYS = DECODER_KEYS + (("attention.sliding_window", "sliding_window", int),
                            ("rope.scaling.original_context_length", "original_max_position_embeddings", int))
# Phi-1/1.5/2 (convert_hf_to_gguf.py's Phi2Model): LayerNorms
PHI2_KEYS = tuple(k for k in DECODER_KEYS if k[0] != "attention.layer_norm_rms_epsilon") + (
    ("attention.layer_norm_epsilon", "layer_norm_eps", float),
)
# OLMo's norms are parameter-free LayerNorms, their eps fixed (Arch.constants); clip_qkv is llama.cpp's clamp_kqv
OLMO_KEYS = tuple(k for k in DECODER_KEYS if k[0] != "attention.layer_norm_rms_epsilon") + (
    ("attention.clamp_kqv", "clip_qkv", float),
)
# GPT-NeoX's own config.json names (convert_hf_to_gguf.py's GPTNeoXModel); RoPE's base is rotary_emb_base
GPTNEOX_KEYS = (
    ("context_length", "max_position_embeddings", int),
    ("embedding_length", "hidden_size", int),
    ("block_count", "num_hidden_layers", int),
    ("feed_forward_length", "intermediate_size", int),
    ("attention.head_count", "num_attention_heads", int),
    ("rope.freq_base", "rotary_emb_base", float),
    ("attention.layer_norm_epsilon", "layer_norm_eps", float),
    ("use_parallel_residual", "use_parallel_residual", bool),
    ("vocab_size", "vocab_size", int),
)

@dataclass(frozen=True)
class Arch:
    """One llama.cpp architecture: how a family's config.json reads from and writes to GGUF metadata. A family
    file states its own as `Family(..., gguf=Arch(...))`; tinyslm/gguf/config.py reads and writes with it."""

    name: str  # general.architecture
    family: str = ""  # model_type of the config.json it becomes: filled in from the Family that holds it
    keys: tuple[tuple[str, str, type], ...] = DECODER_KEYS
    # config.json keys read off which tensors the file holds (llama.cpp states them no other way)
    from_tensors: Callable[[set[str]], dict] = lambda names: {}
    # q/k rows stored in llama.cpp's interleaved RoPE order (convert_hf_to_gguf.py's LlamaModel.permute)
    permuted_qk: bool = False
    # rope.dimension_count / head_dim is the partial rotary factor (a Llama rotates whole heads)
    partial_rotary: bool = False
    # llama.cpp stores (1 + w) for norms whose HF module adds the 1 itself (convert_hf_to_gguf.py: Nemotron)
    norm_offset: float = 0.0
    # a fused per-head qkv (Bloom's (H, [q k v], hd) rows) is stored [q | k | v] (convert_hf_to_gguf.py's BloomModel)
    qkv_by_part: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)  # config.json values implied by the architecture
    # metadata llama.cpp needs whose value the transformers class fixes (OLMo's LayerNorm eps): written as
    # is, and a file stating another value is refused (no config.json could hold it)
    constants: dict[str, float] = field(default_factory=dict)
    # config.json keys of RoPE's base and rotated fraction (GPT-NeoX: rotary_emb_base, rotary_pct)
    rope_keys: tuple[str, str] = ("rope_theta", "partial_rotary_factor")
    # what llama.cpp's graph for the architecture cannot run: (ModelConfig) -> problems, each a phrase
    refuse: Callable[[Any], list[str]] = lambda config: []

