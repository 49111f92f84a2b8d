"""GGUF metadata <-> an HF config.json dict, per llama.cpp architecture.

A GGUF carries no config.json: its metadata is the config, under llama.cpp's key names
(`llama.block_count`, `llama.attention.head_count_kv`, ...; gguf-py's constants.py lists them).
Each architecture below is a table of (GGUF key, config.json key) pairs, read in one direction
and written in the other, so import and export cannot drift apart. What the table cannot say is
read off the tensors, as llama.cpp's loader does: the head is tied when the file has no
`output.weight`, a Llama has attention biases when it has `attn_q.bias`. What llama.cpp's graph for an
architecture cannot run (biases on Gemma's attention, a tied head on Pythia) is refused on writing, named.

The dict then goes through the family's own translation (`tinyslm/families/<family>.py`), the
same one a config.json folder goes through: one model of a family, whatever file it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CheckpointError, ConfigError, UnsupportedModelError
from ..families.hf_config import HFConfig
from ..files import file_bool, file_number, shown
from .reader import GGUFFile
from .rope import ROPE_TENSORS, scaling_from_gguf

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
# the tokenizer's special ids are model config too (generation stops at eos)
TOKEN_ID_KEYS = (("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id"))


@dataclass(frozen=True)
class Arch:
    """One llama.cpp architecture and the tinyslm family it reads as."""

    name: str  # general.architecture
    family: str  # model_type of the config.json it becomes
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


def _llama_biases(names: set[str]) -> dict:
    return {"attention_bias": "blk.0.attn_q.bias" in names, "mlp_bias": "blk.0.ffn_gate.bias" in names}


def _qwen3_bias(names: set[str]) -> dict:
    return {"attention_bias": "blk.0.attn_q.bias" in names}


def _stablelm(names: set[str]) -> dict:
    # as transformers' GGUF loader reads them: q/k/v biases present, and no ffn_norm means one shared norm
    return {"use_qkv_bias": "blk.0.attn_q.bias" in names, "use_parallel_residual": "blk.0.ffn_norm.weight" not in names}


def _nemotron(names: set[str]) -> dict:
    return {"attention_bias": "blk.0.attn_q.bias" in names, "mlp_bias": "blk.0.ffn_up.bias" in names}


def _gemma_refuse(config) -> list[str]:
    # llama.cpp's gemma graph has no attention biases and always reads the head off token_embd
    # (convert_hf_to_gguf.py's GemmaModel drops lm_head.weight)
    return (["attention biases (attention_bias=true)"] if config.qkv_bias or config.out_bias else []) + (
        ["an untied lm_head (tie_word_embeddings=false)"] if not config.tie_embeddings else [])


def _olmo_refuse(config) -> list[str]:
    problems = ["attention biases (attention_bias=true)"] if config.qkv_bias or config.out_bias else []
    if config.qkv_clip is not None and config.qkv_clip <= 0:  # llama.cpp clamps only when clamp_kqv > 0
        problems.append(f"clip_qkv={config.qkv_clip} (llama.cpp reads clamp_kqv <= 0 as no clamp)")
    return problems


def _phi2_refuse(config) -> list[str]:
    # llama.cpp's phi2 graph: no q/k LayerNorm, an untied head with a bias, GELU as tanh approximation
    problems = ["qk_layernorm=true"] if config.qk_norm else []
    if config.tie_embeddings:
        problems.append("a tied lm_head (tie_word_embeddings=true)")
    if config.activation not in ("gelu_new", "gelu_tanh"):
        problems.append(f"hidden_act={config.activation!r} (a phi2 GGUF is read as gelu_new)")
    return problems


def _gptneox_refuse(config) -> list[str]:
    # llama.cpp's gptneox graph loads every bias and an untied head; the GGUF states no activation, and
    # Pythia's (GPTNeoXConfig's default) is exact GELU
    problems = ["attention_bias=false"] if not (config.qkv_bias and config.out_bias) else []
    if config.tie_embeddings:
        problems.append("a tied head (tie_word_embeddings=true)")
    if config.activation != "gelu":
        problems.append(f"hidden_act={config.activation!r} (a gptneox GGUF is read as GPTNeoXConfig's 'gelu')")
    return problems


ARCHS = {
    a.name: a
    for a in (
        Arch("llama", "llama", from_tensors=_llama_biases, permuted_qk=True),
        Arch("qwen2", "qwen2"),
        Arch("qwen3", "qwen3", from_tensors=_qwen3_bias),
        Arch("phi3", "phi3", keys=PHI3_KEYS, partial_rotary=True),
        Arch("stablelm", "stablelm", keys=STABLELM_KEYS, from_tensors=_stablelm, partial_rotary=True),
        Arch("nemotron", "nemotron", keys=NEMOTRON_KEYS, from_tensors=_nemotron, partial_rotary=True, norm_offset=1.0),
        Arch("gpt2", "gpt2", keys=GPT2_KEYS),
        Arch("bloom", "bloom", keys=BLOOM_KEYS, qkv_by_part=True),
        # Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w (convert_hf_to_gguf.py's Gemma2Model)
        Arch("gemma2", "gemma2", keys=GEMMA2_KEYS, norm_offset=1.0),
        # Gemma-3's text model; its q/k norms are (1 + w) norms too, stored 1 + w
        Arch("gemma3", "gemma3_text", keys=DECODER_KEYS + (("attention.sliding_window", "sliding_window", int),),
             norm_offset=1.0),
        # Gemma-1 (convert_hf_to_gguf.py's GemmaModel): (1 + w) norms stored 1 + w, q/k not permuted, head tied
        Arch("gemma", "gemma", norm_offset=1.0, refuse=_gemma_refuse),
        # OLMo-1B-hf (convert_hf_to_gguf.py's OlmoModel): q/k permuted as a Llama's, no norm tensors
        Arch("olmo", "olmo", keys=OLMO_KEYS, permuted_qk=True, constants={"attention.layer_norm_epsilon": 1e-5},
             refuse=_olmo_refuse),
        # Phi-1/1.5/2 (convert_hf_to_gguf.py's Phi2Model): separate q/k/v with biases, partial RoPE
        Arch("phi2", "phi", keys=PHI2_KEYS, partial_rotary=True, refuse=_phi2_refuse),
        # Pythia (convert_hf_to_gguf.py's GPTNeoXModel): the per-head fused qkv is stored [q | k | v], as Bloom's
        Arch("gptneox", "gpt_neox", keys=GPTNEOX_KEYS, partial_rotary=True, qkv_by_part=True,
             rope_keys=("rotary_emb_base", "rotary_pct"), refuse=_gptneox_refuse),
    )
}
FAMILY_TO_ARCH = {a.family: a for a in ARCHS.values()}


def arch_of(gguf_file: GGUFFile) -> Arch:
    name = gguf_file.architecture
    if name not in ARCHS:
        raise UnsupportedModelError(
            f"{gguf_file.path}: GGUF architecture {name!r} is not supported; tinyslm reads {', '.join(sorted(ARCHS))}"
        )
    return ARCHS[name]


def arch_for_family(family: str, source: str) -> Arch:
    if family not in FAMILY_TO_ARCH:
        raise UnsupportedModelError(
            f"{source}: family {family!r} has no GGUF form in tinyslm; GGUF export supports "
            f"{', '.join(sorted(FAMILY_TO_ARCH))}"
        )
    return FAMILY_TO_ARCH[family]


def hf_config_from_gguf(gguf_file: GGUFFile) -> HFConfig:
    """The config.json dict the file's metadata describes (then read by the family like any config.json)."""
    arch = arch_of(gguf_file)
    values: dict[str, Any] = {"model_type": arch.family, **arch.fixed}
    for key, hf_key, kind in arch.keys:
        value = gguf_file.get(f"{arch.name}.{key}")
        if value is None:
            continue
        where, name = str(gguf_file.path), f"metadata {arch.name}.{key}"
        values[hf_key] = file_bool(value, False, where, name, ConfigError) if kind is bool else \
            file_number(value, kind, where, name, ConfigError)
    for key, expected in arch.constants.items():
        value = gguf_file.get(f"{arch.name}.{key}")
        if value is not None and np.float32(file_number(value, float, str(gguf_file.path), f"metadata {arch.name}.{key}")) \
                != np.float32(expected):
            raise UnsupportedModelError(f"{gguf_file.path}: metadata {arch.name}.{key} = {value}; a {arch.family} "
                                        f"model has {expected} fixed (no config.json key holds it)")  # fmt: skip
    theta_key, partial_key = arch.rope_keys
    rotary = gguf_file.get(f"{arch.name}.rope.dimension_count")
    if "head_dim" not in values and arch.permuted_qk and isinstance(rotary, int):
        values["head_dim"] = rotary  # a Llama rotates whole heads
    if arch.partial_rotary and isinstance(rotary, int):
        head_dim = values.get("head_dim") or values["hidden_size"] // values["num_attention_heads"]
        values[partial_key] = rotary / head_dim
    if "vocab_size" not in values:
        tokens = gguf_file.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise CheckpointError(f"{gguf_file.path}: neither {arch.name}.vocab_size nor tokenizer.ggml.tokens is set")
        values["vocab_size"] = len(tokens)
    for key, hf_key in TOKEN_ID_KEYS:
        value = gguf_file.get(key)
        if value is not None:  # an integer type of GGUF's; a string, a float (NaN), a bool is refused by name
            if type(value) is not int or value < 0:
                raise CheckpointError(f"{gguf_file.path}: {key} must be a token id (an integer >= 0), found "
                                      f"{shown(repr(value))}")  # fmt: skip
            values[hf_key] = value
    names = set(gguf_file.tensors)
    values["tie_word_embeddings"] = "output.weight" not in names
    values.update(arch.from_tensors(names))
    # RoPE scaling: metadata, and tensors over the rotary dimensions (llama3's divisors, LongRoPE's factors)
    rope_tensors = {name: gguf_file.float_tensor(name) for name in ROPE_TENSORS if name in names}
    rotary_dim = 0
    if rope_tensors:
        head_dim = values.get("head_dim") or values["hidden_size"] // values["num_attention_heads"]
        rotary_dim = rotary if isinstance(rotary, int) else head_dim
    scaling = scaling_from_gguf(str(gguf_file.path), arch.name, gguf_file.get, rope_tensors,
                                values.get(theta_key, 10000.0), rotary_dim, values.get("max_position_embeddings", 0))  # fmt: skip
    if scaling is not None:
        values["rope_scaling"] = scaling
    name = gguf_file.get("general.name")
    if isinstance(name, str):
        values["_name_or_path"] = name
    return HFConfig(values, str(gguf_file.path))


def gguf_metadata(arch: Arch, hf: dict, config) -> list[tuple[str, Any, str]]:
    """(key, value, GGUF value type) pairs for a config.json dict (of ModelConfig `config`): the inverse of
    hf_config_from_gguf."""
    values = dict(hf, head_dim=config.head_dim, vocab_size=config.vocab_size, **{arch.rope_keys[0]: config.rope_theta})
    out = [(f"{arch.name}.{key}", kind(values[hf_key]), {float: "float32", bool: "bool"}.get(kind, "uint32"))
           for key, hf_key, kind in arch.keys if values.get(hf_key) is not None]  # fmt: skip
    out += [(f"{arch.name}.{key}", value, "float32") for key, value in arch.constants.items()]
    written = {key for key, _, _ in out}
    for key, value in (("feed_forward_length", config.ffn_dim), ("attention.head_count_kv", config.n_kv_heads)):
        if f"{arch.name}.{key}" not in written:  # llama.cpp's loader needs them whatever config.json calls them
            out.append((f"{arch.name}.{key}", value, "uint32"))
    if config.positions == "rope":
        out.append((f"{arch.name}.attention.value_length", config.head_dim, "uint32"))
        out.append((f"{arch.name}.rope.dimension_count", int(config.head_dim * config.partial_rotary_factor), "uint32"))
    return out
