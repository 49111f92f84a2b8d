"""GGUF metadata <-> an HF config.json dict, per llama.cpp architecture.

A GGUF carries no config.json: its metadata is the config, under llama.cpp's key names
(`llama.block_count`, `llama.attention.head_count_kv`, ...; gguf-py's constants.py lists them).
Each family states its architecture next to its HF translation (`Family(..., gguf=Arch(...))`,
families/gguf_arch.py): a table of (GGUF key, config.json key) pairs, read in one direction and
written in the other, so import and export cannot drift apart. What the table cannot say is
read off the tensors, as llama.cpp's loader does: the head is tied when the file has no
`output.weight`, a Llama has attention biases when it has `attn_q.bias`. What llama.cpp's graph for an
architecture cannot run (biases on Gemma's attention, a tied head on Pythia) is refused on writing, named.

The dict then goes through the family's own translation (`tinyslm/families/<family>.py`), the
same one a config.json folder goes through: one model of a family, whatever file it came from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import CheckpointError, ConfigError, UnsupportedModelError
from ..families import families
from ..families.gguf_arch import Arch
from ..families.hf_config import HFConfig
from ..files import file_bool, file_number, shown
from .reader import GGUFFile
from .rope import ROPE_TENSORS, scaling_from_gguf

# the tokenizer's special ids are model config too (generation stops at eos)
TOKEN_ID_KEYS = (("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id"))


def _archs() -> dict[str, Arch]:
    """{general.architecture: Arch} of every family that states a GGUF form (families/<family>.py)."""
    return {f.gguf.name: dataclasses.replace(f.gguf, family=f.model_type) for f in families().values() if f.gguf}


ARCHS = _archs()
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
