"""Damaged checkpoints: every outcome is an exact load or a TinySLMError, nothing else.

Hypothesis takes a valid checkpoint folder, applies 1-3 random mutations to a private copy and
calls every entry point that reads a folder. Guaranteed, for every mutated folder:

  tinyslm.load_pretrained(folder)   raises TinySLMError, or returns a model whose float32 logits equal
                                    transformers' (AutoModelForCausalLM.from_pretrained(folder,
                                    attn_implementation="eager", dtype=float32)) within 1e-5 of the logit
                                    scale. Where transformers does not load the folder (it raises, reports
                                    missing or mismatched weights, i.e. random-initialises some) or its
                                    logits are not finite, loading is all that is required.
  tinyslm.load_config(folder)       returns a ModelConfig or raises TinySLMError.
  tinyslm inspect / generate        exit status 0 or 2, never 1 ("unexpected"). The CLI runs with
                                    TINYSLM_DEBUG=1, so an unexpected exception propagates with its traceback.

and never a hang (each example runs under a 10 s alarm; a faulthandler watchdog kills the run if the
alarm cannot fire inside native code) nor a runaway allocation (an address-space limit of a few GiB
above the current size turns one into an error).

Base folders: transformers' save_pretrained of tiny Llama (untied), Qwen2 (tied, legacy Hub config
form), Phi-3 (fused qkv / gate_up), GPT-2 (Conv1D weights, learned positions), a Llama sharded at
20 KB (an index and five shards), and tinyslm.save_pretrained's output for GPT-2.

Mutations (the falsifying example names the base and each mutation; replay it with `apply`):
  OverwriteBytes  a few bytes of a safetensors file's 8-byte length + JSON header
  Truncate        any file cut at a random length        AppendJunk  random bytes appended
  EditHeader      one tensor's dtype / shape / data_offsets replaced, the tensor renamed, dropped or
                  its entry replaced, or __metadata__ replaced, in a rewritten (consistently framed) header
  Recast          one tensor stored in another dtype (float16 ... float8, integers, bool), file consistent
  SetJson         config.json or the index: a key (existing, nested, or new) set to a random JSON
                  value: null, bools, zero / negative / huge ints, NaN / Infinity, strings, lists,
                  objects; in the index a tensor pointed at another shard, a missing file, "", a path.
                  Kind "plausible": values a real config carries (RoPE scaling objects of every type,
                  sliding windows, layer types, activations, epsilons, ...), where both libraries load
                  and the logits must agree
  DeleteJson      a key (config.json, the index's weight_map or one of its entries) removed
  RemoveFile      a file of the folder deleted
  ReplaceFile     a file replaced by a FIFO, a folder, a dangling / looping symlink, a symlink to
                  /dev/zero or to another file of the folder

Each property runs once per kind of mutation (config, bytes, header, index, files, and mixed: any
kind), TINYSLM_MUTATION_EXAMPLES examples each (default 30; raise it to hunt); CI=true derandomises
(tests/conftest.py). Damage hypothesis found is pinned in FOUND and checked on every run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_models import write_hf_checkpoint
from hostile import EXAMPLES, guarded, run_cli
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import tinyslm

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-5  # max |ours - theirs| / max |theirs|, float32
VOCAB = 64
IDS = torch.tensor([[1, 5, 9, 33, 60], [63, 0, 2, 2, 17]])  # (2, 5), within every base's vocabulary
INDEX = "model.safetensors.index.json"

TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)  # fmt: skip
GPT2 = dict(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=4, n_positions=32, bos_token_id=1, eos_token_id=2)


def _write_llama(folder: Path) -> None:
    write_hf_checkpoint(folder, "LlamaConfig", **TINY, tie_word_embeddings=False)


def _write_qwen2_legacy(folder: Path) -> None:
    write_hf_checkpoint(folder, "Qwen2Config", legacy=True, **TINY, tie_word_embeddings=True)


def _write_phi3(folder: Path) -> None:
    write_hf_checkpoint(folder, "Phi3Config", **TINY, pad_token_id=None)


def _write_gpt2(folder: Path) -> None:
    write_hf_checkpoint(folder, "GPT2Config", **GPT2)


def _write_llama_sharded(folder: Path) -> None:
    model = write_hf_checkpoint(folder, "LlamaConfig", **{**TINY, "num_hidden_layers": 2})
    shutil.rmtree(folder)
    model.save_pretrained(folder, max_shard_size="20KB")
    assert (folder / INDEX).is_file() and len(list(folder.glob("*.safetensors"))) > 1, "precondition: sharded"


def _write_tinyslm_gpt2(folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _write_gpt2(Path(tmp))
        tinyslm.save_pretrained(tinyslm.load_pretrained(tmp), folder)


WRITERS = {
    "llama": _write_llama,
    "qwen2-legacy": _write_qwen2_legacy,
    "phi3": _write_phi3,
    "gpt2": _write_gpt2,
    "llama-sharded": _write_llama_sharded,
    "tinyslm-gpt2": _write_tinyslm_gpt2,
}


@dataclass
class Base:
    """A valid checkpoint folder and what the mutation strategies need to know about it."""

    folder: Path
    files: list[str]  # every file in the folder
    config: dict[str, Any]
    headers: dict[str, tuple[int, dict[str, Any]]]  # safetensors file -> (header length, header)
    index: dict[str, Any] | None


BASES: dict[str, Base] = {}  # filled once per session by the `bases` fixture, before any example is drawn


def read_header(path: Path) -> tuple[int, dict[str, Any]]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n])


@pytest.fixture(scope="module", autouse=True)
def bases(tmp_path_factory):
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("mutation-bases")
    for name, write in WRITERS.items():
        folder = root / name
        write(folder)
        files = sorted(p.name for p in folder.iterdir())
        index = json.loads((folder / INDEX).read_text()) if INDEX in files else None
        headers = {f: read_header(folder / f) for f in files if f.endswith(".safetensors")}
        BASES[name] = Base(folder, files, json.loads((folder / "config.json").read_text()), headers, index)
    yield BASES
    transformers.logging.set_verbosity(verbosity)
    if bars:
        transformers.logging.enable_progress_bar()


# ----------------------------------------------------------------------------------------------
# mutations: each one a small value (its repr is the falsifying example) that damages a folder


def _json_edit(path: Path, keys: tuple[str, ...], edit) -> None:
    """edit(parent, last key) on the JSON object at `path`; a no-op where an earlier mutation left no such object."""
    if not path.is_file():  # removed, or replaced by a FIFO / device (reading it would block)
        return
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return
    parent = data
    for key in keys[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict):
        return
    edit(parent, keys[-1])
    path.write_text(json.dumps(data, indent=2, allow_nan=True))


@dataclass(frozen=True)
class SetJson:
    file: str
    keys: tuple[str, ...]  # the path to the key: ("rope_parameters", "rope_theta"), ("weight_map", name)
    value: Any

    def apply(self, folder: Path) -> None:
        _json_edit(folder / self.file, self.keys, lambda parent, key: parent.__setitem__(key, self.value))


@dataclass(frozen=True)
class DeleteJson:
    file: str
    keys: tuple[str, ...]

    def apply(self, folder: Path) -> None:
        _json_edit(folder / self.file, self.keys, lambda parent, key: parent.pop(key, None))


@dataclass(frozen=True)
class OverwriteBytes:
    file: str
    edits: tuple[tuple[int, int], ...]  # (offset, new byte value)

    def apply(self, folder: Path) -> None:
        path = folder / self.file
        if not path.is_file():
            return
        data = bytearray(path.read_bytes())
        for offset, byte in self.edits:
            if offset < len(data):
                data[offset] = byte
        path.write_bytes(bytes(data))


@dataclass(frozen=True)
class Truncate:
    file: str
    length: int

    def apply(self, folder: Path) -> None:
        path = folder / self.file
        if path.is_file():
            path.write_bytes(path.read_bytes()[: self.length])


@dataclass(frozen=True)
class AppendJunk:
    file: str
    junk: bytes

    def apply(self, folder: Path) -> None:
        path = folder / self.file
        if path.is_file():
            path.write_bytes(path.read_bytes() + self.junk)


@dataclass(frozen=True)
class EditHeader:
    """Rewrite one tensor's entry of a safetensors header; the length prefix is rewritten to match."""

    file: str
    tensor: str
    field: str  # "dtype", "shape", "data_offsets"; "rename" (value: the new name); "drop"; "replace" (the whole entry)
    value: Any = None

    def apply(self, folder: Path) -> None:
        path = folder / self.file
        if not path.is_file():
            return
        try:
            data = path.read_bytes()
            (n,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8 : 8 + n])
            entry = header[self.tensor] if self.field != "replace" else None
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            return  # an earlier mutation already broke the framing
        if not isinstance(header, dict) or (entry is not None and not isinstance(entry, dict)):
            return
        if self.field == "replace":
            header[self.tensor] = self.value
        elif self.field == "drop":
            del header[self.tensor]
        elif self.field == "rename":
            header[self.value] = header.pop(self.tensor)
        else:
            entry[self.field] = self.value
        text = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Recast:
    """One tensor stored in another dtype, the file rewritten consistently (a mixed-precision checkpoint)."""

    file: str
    tensor: str
    dtype: str  # a torch dtype name

    def apply(self, folder: Path) -> None:
        from safetensors import safe_open  # noqa: PLC0415
        from safetensors.torch import save_file  # noqa: PLC0415

        path = folder / self.file
        if not path.is_file():
            return
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        except Exception:  # noqa: BLE001  (an earlier mutation broke the file)
            return
        if self.tensor in tensors:
            tensors[self.tensor] = tensors[self.tensor].to(getattr(torch, self.dtype))
            save_file(tensors, path, metadata=metadata)


@dataclass(frozen=True)
class RemoveFile:
    file: str

    def apply(self, folder: Path) -> None:
        _remove(folder / self.file)


@dataclass(frozen=True)
class ReplaceFile:
    """A file replaced by something that is not a regular file (or is not where it says)."""

    file: str
    by: str  # "fifo", "folder", "dangling symlink", "symlink loop", "symlink to /dev/zero", "symlink to FILE"

    def apply(self, folder: Path) -> None:
        path = folder / self.file
        _remove(path)
        if self.by == "fifo":
            os.mkfifo(path)
        elif self.by == "folder":
            path.mkdir()
        elif self.by == "dangling symlink":
            path.symlink_to(folder / "no-such-file")
        elif self.by == "symlink loop":
            path.symlink_to(path)
        else:
            path.symlink_to(self.by.removeprefix("symlink to "))


@dataclass(frozen=True)
class Case:
    base: str
    mutations: tuple[Any, ...]

    def apply(self, folder: Path) -> None:
        for mutation in self.mutations:
            mutation.apply(folder)


# ----------------------------------------------------------------------------------------------
# strategies

INTS = st.one_of(
    st.integers(-3, 70), st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63, -(2**63), 10**12, 10**30])
)
FLOATS = st.one_of(st.sampled_from([0.0, -0.0, 1e-300, 0.5, 1e30, 1e308, math.nan, math.inf, -math.inf]), st.floats())
WORDS = ["", "llama", "qwen2", "phi3", "gpt2", "mistral", "bert", "silu", "gelu", "gelu_new", "relu", "tanh", "float16",
         "bfloat16", "float32", "int8", "default", "linear", "dynamic", "yarn", "llama3", "longrope", "su", "eager",
         "sliding_attention", "full_attention", "LlamaForCausalLM"]  # fmt: skip
STRINGS = st.one_of(st.sampled_from(WORDS), st.text(max_size=6))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, STRINGS)
# keys that make a nested object look like a RoPE scaling dict
NESTED_KEYS = ["rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings", "low_freq_factor",
               "high_freq_factor", "short_factor", "long_factor", "beta_fast", "beta_slow", "mscale"]  # fmt: skip
# the values that break code most often, drawn as often as all the others together
EDGE_VALUES = st.sampled_from([None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 2**63, -(2**63), 10**30, 0.0, -0.5, 0.5,
                               1e-12, 1e30, math.nan, math.inf, -math.inf, "", "x", [], {}, [1], [-1], [2**63], [1, 2],
                               {"rope_type": "linear", "factor": 2.0}, {"type": "dynamic", "factor": 0.5}])  # fmt: skip
JSON_VALUES = st.one_of(
    EDGE_VALUES,
    st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.one_of(st.sampled_from(NESTED_KEYS), st.text(max_size=4)), inner, max_size=3),
        ),
        max_leaves=4,
    ),
)


def near(value: Any) -> list[Any]:
    """Values a careless edit of `value` gives: the other type, the neighbours, the sign, a wrapping list."""
    if isinstance(value, bool):
        return [not value, int(value), str(value).lower()]
    if isinstance(value, int):
        return [value + 1, value - 1, 2 * value, value // 2, -value, 0, float(value), str(value), [value], value * 10**20]
    if isinstance(value, float):
        return [2 * value, value / 2, 10 * value, -value, 0.0, int(value), str(value), [value]]
    if isinstance(value, str):
        return [value.upper(), value + "_x", value[:-1], [value]]
    if isinstance(value, list):
        return [value[:-1], value * 2, value[:1], None]
    return []


# keys a config.json may carry that the bases leave out (family switches, legacy spellings, unknown ones)
EXTRA_CONFIG_KEYS = ["rope_scaling", "rope_theta", "rope_parameters", "torch_dtype", "dtype", "head_dim",
                     "sliding_window", "use_sliding_window", "max_window_layers", "layer_types",
                     "partial_rotary_factor", "attention_bias", "mlp_bias", "tie_word_embeddings", "model_type",
                     "hidden_act", "n_inner", "scale_attn_weights", "reorder_and_upcast_attn",
                     "scale_attn_by_inverse_layer_idx", "original_max_position_embeddings", "qk_layernorm",
                     "final_logit_softcapping", "attn_logit_softcapping", "num_key_value_heads",
                     "pretraining_tp", "quantization_config", "embedding_multiplier", "unknown_key"]  # fmt: skip
HEADER_DTYPES = ["F32", "F16", "BF16", "F64", "I32", "U32", "I64", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
                 "F4", "E8M0", "C64", "f32", ""]  # fmt: skip
SHARD_NAMES = ["model-00099-of-00099.safetensors", "", ".", "..", "sub/x.safetensors", "/etc/hostname",
               "config.json", INDEX, "generation_config.json", "model.safetensors", "\x1b[31m.safetensors"]  # fmt: skip
RECAST_DTYPES = ["float16", "bfloat16", "float64", "int32", "int64", "int8", "uint8", "bool", "float8_e4m3fn",
                 "float8_e5m2"]  # fmt: skip
BYTES = st.one_of(st.sampled_from(list(b'0123456789{}[]",:-.eE ')), st.integers(0, 255))


def config_mutations(base: Base):
    def lookup(keys: tuple[str, ...]) -> Any:
        value = base.config
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def set_key(keys: tuple[str, ...]):
        values = [v for v in near(lookup(keys)) if v is not None] or [None]
        return st.builds(SetJson, st.just("config.json"), st.just(keys), st.one_of(st.sampled_from(values), JSON_VALUES))

    keys = [(k,) for k in base.config] + [(k, sub) for k, v in base.config.items() if isinstance(v, dict) for sub in v]
    new_keys = [(k,) for k in EXTRA_CONFIG_KEYS if k not in base.config]
    return st.one_of(
        st.sampled_from(keys + new_keys).flatmap(set_key),
        st.builds(SetJson, st.just("config.json"), st.tuples(st.text(max_size=8)), JSON_VALUES),
        st.builds(DeleteJson, st.just("config.json"), st.sampled_from(keys)),
    )


ACTIVATIONS = ["silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "relu2", "tanh",
               "sigmoid", "swish", "mish", "linear", "gelu_10"]  # fmt: skip
FACTORS = st.floats(0.25, 16.0)
ORIGINAL_CONTEXT = st.integers(1, 64)


def rope_dicts(rotary_half: int):
    """RoPE parameter objects as real configs spell them (either key for the type, theta inside or not)."""
    sizes = st.one_of(st.just(rotary_half), st.sampled_from([0, rotary_half - 1, rotary_half + 1, 2 * rotary_half]))
    pairs = sizes.flatmap(lambda n: st.lists(st.floats(0.5, 4.0), min_size=n, max_size=n))
    kinds = st.one_of(
        st.fixed_dictionaries({"rope_type": st.just("default")}),
        st.fixed_dictionaries({"rope_type": st.just("linear"), "factor": FACTORS}),
        st.fixed_dictionaries({"rope_type": st.just("dynamic"), "factor": FACTORS}),
        st.fixed_dictionaries(
            {"rope_type": st.just("yarn"), "factor": FACTORS},
            optional={"original_max_position_embeddings": ORIGINAL_CONTEXT, "beta_fast": st.floats(1, 64),
                      "beta_slow": st.floats(0.5, 2), "attention_factor": st.floats(0.5, 2), "mscale": st.floats(0, 2),
                      "mscale_all_dim": st.floats(0, 2)},
        ),
        st.fixed_dictionaries(
            {"rope_type": st.just("llama3"), "factor": FACTORS, "low_freq_factor": st.floats(0.5, 2),
             "high_freq_factor": st.floats(2, 8)},
            optional={"original_max_position_embeddings": ORIGINAL_CONTEXT},
        ),
        st.fixed_dictionaries(
            {"rope_type": st.sampled_from(["longrope", "su"]), "short_factor": pairs, "long_factor": pairs},
            optional={"original_max_position_embeddings": ORIGINAL_CONTEXT, "factor": FACTORS,
                      "attention_factor": st.floats(0.5, 2)},
        ),
    )  # fmt: skip

    @st.composite
    def spelled(draw) -> dict:  # a composite, so a falsifying example shows the dict itself
        rope = dict(draw(kinds))
        if draw(st.booleans()):
            rope["type"] = rope.pop("rope_type")
        theta = draw(st.none() | st.sampled_from([0.5, 1.0, 2.0]) | st.floats(1.0, 1e6))
        if theta is not None:
            rope["rope_theta"] = theta
        return rope

    return spelled()


def plausible_config_mutations(base: Base):
    """Values a real config.json carries, 1-3 keys at a time: both libraries load, and the logits must agree."""
    cfg = base.config
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    head_dim = (cfg.get("hidden_size") or cfg.get("n_embd")) // heads
    n_layers = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    values = {
        "max_position_embeddings": st.integers(1, 16) | st.sampled_from([64, 4096]),
        "original_max_position_embeddings": ORIGINAL_CONTEXT,
        "sliding_window": st.none() | st.integers(1, 6),
        "use_sliding_window": st.booleans(),
        "max_window_layers": st.integers(0, n_layers),
        "layer_types": st.lists(st.sampled_from(["sliding_attention", "full_attention"]), min_size=n_layers,
                                max_size=n_layers),
        "rms_norm_eps": st.floats(1e-8, 1.0),
        "layer_norm_epsilon": st.floats(1e-8, 1.0),
        "rope_theta": st.sampled_from([0.5, 1.0, 2.0]) | st.floats(1.0, 1e6),
        "partial_rotary_factor": st.sampled_from([0.25, 0.5, 0.75, 1.0]),
        "rope_scaling": st.none() | rope_dicts(head_dim // 2),
        "rope_parameters": rope_dicts(head_dim // 2),
        "hidden_act": st.sampled_from(ACTIVATIONS),
        "activation_function": st.sampled_from(ACTIVATIONS),
        "tie_word_embeddings": st.booleans(),
        "attention_bias": st.booleans(),
        "mlp_bias": st.booleans(),
        "scale_attn_weights": st.booleans(),
        "reorder_and_upcast_attn": st.booleans(),
        "scale_attn_by_inverse_layer_idx": st.booleans(),
        "n_inner": st.none() | st.just(4 * (cfg.get("n_embd") or 0)),
        "head_dim": st.none() | st.just(head_dim),
        "n_positions": st.integers(1, 64),
        "dtype": st.sampled_from(["float32", "float16", "bfloat16"]),
        "torch_dtype": st.sampled_from(["float32", "float16", "bfloat16"]),
        "eos_token_id": st.integers(0, VOCAB - 1) | st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=3),
    }  # fmt: skip
    families = {"llama": ["attention_bias", "mlp_bias", "head_dim"], "qwen2": ["use_sliding_window", "max_window_layers",
                "layer_types"], "phi3": ["original_max_position_embeddings", "partial_rotary_factor"],
                "gpt2": ["activation_function", "scale_attn_weights", "reorder_and_upcast_attn", "layer_norm_epsilon",
                         "scale_attn_by_inverse_layer_idx", "n_inner", "n_positions"]}  # fmt: skip
    generic = ["max_position_embeddings", "sliding_window", "rms_norm_eps", "rope_theta", "rope_scaling",
               "rope_parameters", "hidden_act", "tie_word_embeddings", "dtype", "torch_dtype", "eos_token_id"]  # fmt: skip
    if cfg["model_type"] == "gpt2":
        generic = ["tie_word_embeddings", "dtype", "eos_token_id", "rope_scaling", "max_position_embeddings"]
    keys = generic + families.get(cfg["model_type"], [])
    return st.sampled_from(keys).flatmap(
        lambda key: st.builds(SetJson, st.just("config.json"), st.just((key,)), values[key])
    )


def byte_mutations(base: Base):
    def overwrite(file: str):
        header_end = 8 + base.headers[file][0]
        edit = st.tuples(st.integers(0, header_end - 1), BYTES)
        return st.builds(OverwriteBytes, st.just(file), st.lists(edit, min_size=1, max_size=4).map(tuple))

    def truncate(file: str):
        size = (base.folder / file).stat().st_size
        return st.builds(Truncate, st.just(file), st.integers(0, max(size - 1, 0)))

    weights = sorted(base.headers)
    return st.one_of(
        st.sampled_from(weights).flatmap(overwrite),
        st.sampled_from(base.files).flatmap(truncate),
        st.builds(AppendJunk, st.sampled_from(base.files), st.binary(min_size=1, max_size=64)),
    )


def file_mutations(base: Base):
    # generation_config.json only matters to transformers (a FIFO there would hang it, not tinyslm)
    files = [f for f in base.files if f != "generation_config.json"]
    # (links into /proc and /sys: tests/foundation/test_files.py; here a later mutation would write through them)
    replacements = ["fifo", "folder", "dangling symlink", "symlink loop", "symlink to /dev/zero"]
    replacements += [f"symlink to {f}" for f in base.files]
    return st.one_of(
        st.builds(RemoveFile, st.sampled_from(base.files)),
        st.builds(ReplaceFile, st.sampled_from(files), st.sampled_from(replacements)),
    )


def header_mutations(base: Base):
    all_tensors = sorted({t for _, header in base.headers.values() for t in header if t != "__metadata__"})

    def for_tensor(file: str, tensor: str):
        entry = base.headers[file][1][tensor]
        shape, (start, end) = entry["shape"], entry["data_offsets"]
        numel = math.prod(shape)
        shapes = st.one_of(
            st.sampled_from([shape[::-1], [numel], [*shape, 1], [1, *shape], [numel * 2], [], [0, *shape[1:]]]),
            st.lists(st.one_of(st.integers(-1, 70), st.sampled_from([2**32, 2**63, 2**64 - 1])), max_size=3),
            JSON_VALUES,
        )
        offsets = st.one_of(
            st.lists(st.sampled_from([0, start, end, start + 1, end - 1, end + 4, 2**63, -1]), min_size=2, max_size=2),
            JSON_VALUES,
        )
        names = st.one_of(
            st.sampled_from(all_tensors + ["model.layers.9.mlp.up_proj.weight", "x", "", "lm_head.weight\x1b[2J"]),
            st.text(max_size=8),
        )
        return st.one_of(
            st.builds(EditHeader, st.just(file), st.just(tensor), st.just("dtype"),
                      st.one_of(st.sampled_from(HEADER_DTYPES), JSON_VALUES)),
            st.builds(EditHeader, st.just(file), st.just(tensor), st.just("shape"), shapes),
            st.builds(EditHeader, st.just(file), st.just(tensor), st.just("data_offsets"), offsets),
            st.builds(EditHeader, st.just(file), st.just(tensor), st.just("rename"), names),
            st.builds(EditHeader, st.just(file), st.just(tensor), st.just("drop")),
            st.builds(EditHeader, st.just(file), st.just(tensor), st.just("replace"), JSON_VALUES),
        )  # fmt: skip

    def metadata(file: str):  # safetensors wants {str: str}; transformers also reads "format"
        values = st.one_of(st.sampled_from([{"format": "tf"}, {"format": "mlx"}, {}, {"format": 1}]), JSON_VALUES)
        return st.builds(EditHeader, st.just(file), st.just("__metadata__"), st.just("replace"), values)

    pairs = [(f, t) for f, (_, header) in sorted(base.headers.items()) for t in sorted(header) if t != "__metadata__"]
    return st.one_of(
        st.sampled_from(pairs).flatmap(lambda pair: for_tensor(*pair)),
        st.sampled_from(sorted(base.headers)).flatmap(metadata),
        st.sampled_from(pairs).flatmap(
            lambda pair: st.builds(Recast, st.just(pair[0]), st.just(pair[1]), st.sampled_from(RECAST_DTYPES))
        ),
    )


def index_mutations(base: Base):
    tensors = sorted(base.index["weight_map"])
    shards = sorted(set(base.index["weight_map"].values()))
    shard_values = st.one_of(st.sampled_from(shards + SHARD_NAMES), JSON_VALUES)
    new_names = st.one_of(st.sampled_from(["model.layers.9.mlp.up_proj.weight", "x", "", "lm_head.bias"]), st.text(max_size=6))
    return st.one_of(
        st.builds(SetJson, st.just(INDEX), st.sampled_from(tensors).map(lambda t: ("weight_map", t)), shard_values),
        st.builds(SetJson, st.just(INDEX), new_names.map(lambda t: ("weight_map", t)), st.sampled_from(shards)),
        st.builds(DeleteJson, st.just(INDEX), st.sampled_from(tensors).map(lambda t: ("weight_map", t))),
        st.builds(SetJson, st.just(INDEX), st.just(("weight_map",)),
                  st.one_of(st.just(tensors), st.just(shards), st.just(list(base.index["weight_map"].items())),
                            JSON_VALUES)),
        st.builds(DeleteJson, st.just(INDEX), st.sampled_from([("weight_map",), ("metadata",)])),
        st.builds(SetJson, st.just(INDEX), st.sampled_from([("metadata",), ("metadata", "total_size")]), JSON_VALUES),
    )  # fmt: skip


KIND_STRATEGIES = {"config": config_mutations, "plausible": plausible_config_mutations, "bytes": byte_mutations,
                   "header": header_mutations, "index": index_mutations, "files": file_mutations}  # fmt: skip
KINDS = [*KIND_STRATEGIES, "mixed"]  # each test runs once per kind, so every kind gets its examples


@st.composite
def damaged_checkpoints(draw, kind: str) -> Case:
    """A base folder and 1-3 mutations of `kind` ("mixed": of any kind); "index" only on the sharded base."""
    name = draw(st.sampled_from(sorted(n for n, base in BASES.items() if kind != "index" or base.index is not None)))
    base = BASES[name]
    kinds = [k for k in KIND_STRATEGIES if base.index is not None or k != "index"] if kind == "mixed" else [kind]
    mutations = draw(st.lists(st.one_of([KIND_STRATEGIES[k](base) for k in kinds]), min_size=1, max_size=3))
    return Case(name, tuple(mutations))


# ----------------------------------------------------------------------------------------------
# guards and references











@contextlib.contextmanager
def damaged_copy(case: Case):
    with tempfile.TemporaryDirectory(prefix="tinyslm-mutated-") as tmp:
        folder = Path(shutil.copytree(BASES[case.base].folder, Path(tmp) / "ckpt"))
        case.apply(folder)
        with guarded():
            yield folder


def transformers_logits(folder: Path) -> torch.Tensor | None:
    """transformers' float32 logits for IDS, or None where it does not load the folder as stored."""
    try:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            folder, attn_implementation="eager", dtype=torch.float32, output_loading_info=True
        )
        if info.get("missing_keys") or info.get("mismatched_keys"):
            return None  # random-initialised weights: not a load of this folder
        with torch.no_grad():
            logits = model.eval()(IDS).logits
    except Exception:  # noqa: BLE001  (transformers refuses or crashes: no agreement required)
        return None
    return logits if bool(torch.isfinite(logits).all()) else None





# ----------------------------------------------------------------------------------------------
# the properties, each checked on one damaged folder


def outcome(text: str) -> None:
    """Counted in --hypothesis-show-statistics (how many examples were refused, loaded, compared)."""
    if currently_in_test_context():
        event(text)


def check_load_pretrained(folder: Path) -> None:
    try:
        model = tinyslm.load_pretrained(folder)
    except tinyslm.TinySLMError as exc:
        outcome(f"refused: {type(exc).__name__}")
        return
    theirs = transformers_logits(folder)
    if theirs is None:
        outcome("loaded; transformers does not load it")
        return
    outcome("loaded; logits compared")
    with torch.no_grad():
        ours = model(IDS)
    diff, scale = float((ours - theirs).abs().max()), float(theirs.abs().max())
    assert diff <= TOLERANCE * scale, f"loaded, but logits differ from transformers: max diff {diff:.3e}, scale {scale:.3e}"


def check_load_config(folder: Path) -> None:
    try:
        config = tinyslm.load_config(folder)
    except tinyslm.TinySLMError as exc:
        outcome(f"refused: {type(exc).__name__}")
        return
    outcome("a config")
    assert isinstance(config, tinyslm.ModelConfig)


def check_cli(folder: Path) -> None:
    for argv in (["inspect", str(folder)], ["generate", str(folder), "--ids", "1,2,3", "--max-new-tokens", "2"]):
        status, err = run_cli(*argv)
        outcome(f"{argv[0]}: exit status {status}")
        assert status in (0, 2), f"tinyslm {argv[0]}: exit status {status}: {err}"


CHECKS = {"load_pretrained": check_load_pretrained, "load_config": check_load_config, "cli": check_cli}

# Damage hypothesis found (minimal examples), checked on every run whatever hypothesis draws.
FOUND = {
    "eos_token_id-beyond-int64": Case("gpt2", (SetJson("config.json", ("eos_token_id",), 2 * 10**20),)),
    "head_dim-beyond-int64": Case("llama", (SetJson("config.json", ("head_dim",), 8 * 10**20),)),
    "yarn-with-rope_theta-1": Case(
        "llama", (SetJson("config.json", ("rope_parameters",), {"rope_type": "yarn", "factor": 1.0, "rope_theta": 1.0}),)
    ),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_base_loads_with_transformers_logits(name):
    """Precondition: the undamaged folders are exact loads, so a difference below is the mutation's."""
    folder = BASES[name].folder
    theirs = transformers_logits(folder)
    assert theirs is not None
    with torch.no_grad():
        ours = tinyslm.load_pretrained(folder)(IDS)
    assert (ours - theirs).abs().max() <= TOLERANCE * theirs.abs().max()


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("found", FOUND)
def test_found_damage(found, check):
    with damaged_copy(FOUND[found]) as folder:
        CHECKS[check](folder)


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_damaged_checkpoint_is_exact_load_or_refused(kind, check, data):
    case = data.draw(damaged_checkpoints(kind), label="case")
    with damaged_copy(case) as folder:
        CHECKS[check](folder)
