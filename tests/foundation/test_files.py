"""files.py: which files make a checkpoint, what each file is, and reading text with errors that help.

Every case here is an input a hostile or unlucky user can produce; each must end in one clear
TinySLMError (never a hang, never a pickle run without the opt-in, never another exception).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch
from hf_models import write_hf_checkpoint
from safetensors.torch import save_file

import tinyslm
from tinyslm.config import ModelConfig
from tinyslm.errors import CheckpointError, ConfigError, TokenizerError
from tinyslm.files import read_json, shown, sniff, weight_files
from tinyslm.tokenizer import load_tokenizer

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip


@pytest.fixture
def folder(tmp_path) -> Path:
    write_hf_checkpoint(tmp_path / "ckpt", "LlamaConfig", **TINY)
    return tmp_path / "ckpt"


class Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_named_in_the_index_is_refused_without_the_opt_in_and_never_runs(folder, tmp_path):
    """The opt-in cannot be bypassed through model.safetensors.index.json naming a non-safetensors file."""
    marker = tmp_path / "pwned"
    torch.save({"x": Payload(marker)}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "pytorch_model.bin"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="pickle weights .*refused by default.*--allow-pickle"):
        tinyslm.load_pretrained(folder)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="weights_only"):  # opted in: still weights_only, so still no code
        tinyslm.load_pretrained(folder, allow_pickle=True)
    assert not marker.exists()


def test_a_pickle_renamed_to_safetensors_is_still_a_pickle(folder):
    from safetensors.torch import load_file  # noqa: PLC0415

    state = {k: v.clone() for k, v in load_file(folder / "model.safetensors").items()}
    torch.save(state, folder / "model.safetensors")  # a pickle under a safetensors name
    assert sniff(folder / "model.safetensors") == "pickle"
    with pytest.raises(CheckpointError, match="pickle weights"):
        tinyslm.load_pretrained(folder)
    assert tinyslm.load_pretrained(folder, allow_pickle=True)  # with the opt-in it loads (weights_only)


def test_a_file_that_is_neither_is_named(folder):
    (folder / "model.safetensors").write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(CheckpointError, match="neither a safetensors file nor a torch pickle"):
        tinyslm.load_pretrained(folder)


def test_a_fifo_named_safetensors_is_refused_without_blocking(folder):
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    result: list = []
    worker = threading.Thread(target=lambda: result.append(_error_of(tinyslm.load_pretrained, folder)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "load_pretrained blocked on a FIFO"
    assert isinstance(result[0], CheckpointError) and "not a regular file" in str(result[0])


@pytest.mark.parametrize("target", ["/proc/self/mem", "/proc/self/status", "/proc/self/environ",
                                    "/sys/kernel/mm/transparent_hugepage/enabled"])
@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_link_to_a_kernel_file_is_refused_naming_it(folder, name, target):
    """/proc and /sys files look regular (size 0) but are made up as they are read: /proc/self/mem fails with EIO,
    /proc/self/environ would show the environment as a tokenizer error. Each is refused by name, before a read."""
    if not os.path.exists(target):
        pytest.skip(f"{target} is not on this system")
    path = folder / name
    path.unlink(missing_ok=True)
    path.symlink_to(target)
    load = tinyslm.load_pretrained if name != "tokenizer.json" else load_tokenizer
    error = _error_of(load, folder)
    assert isinstance(error, (CheckpointError, ConfigError, TokenizerError)), repr(error)
    assert f"is the kernel's file {os.path.realpath(target)}" in str(error)


def _error_of(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def test_model_safetensors_wins_over_an_index_as_in_transformers(folder):
    """A folder holding both a single file and an index loads the single file (transformers' order)."""
    files, index = weight_files(folder)
    assert [f.name for f in files] == ["model.safetensors"] and index is None
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "shard.safetensors"}}))
    assert [f.name for f in weight_files(folder)[0]] == ["model.safetensors"]


def test_empty_and_escaping_shard_names_are_named_safely(folder):
    (folder / "model.safetensors").unlink()
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "shard.safetensors", "b": ""}}))
    with pytest.raises(CheckpointError, match=r"shard names must be plain file names .*'' \(empty\)"):
        tinyslm.load_pretrained(folder)
    index.write_text(json.dumps({"weight_map": {"a": "x\x1b[31m.safetensors"}}))  # a terminal escape sequence
    with pytest.raises(CheckpointError, match="names shard.* not in the folder") as err:
        tinyslm.load_pretrained(folder)
    assert "\x1b" not in str(err.value) and "\\x1b" in str(err.value)
    assert shown("ok.safetensors") == "ok.safetensors" and shown("a\x1bb") == "'a\\x1bb'"


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[1, 2]", "expected a JSON object, found list"),
    ("{'a': 1}", "not valid JSON"),
])  # fmt: skip
def test_config_json_that_cannot_be_read_names_the_file_and_the_problem(folder, text, message):
    path = folder / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CheckpointError, match=message) as err:
        tinyslm.load_pretrained(folder)
    assert str(path) in str(err.value)


def test_an_index_that_is_not_utf8_is_a_checkpoint_error(folder):
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_bytes(b"\x80\x81")
    with pytest.raises(CheckpointError, match="not UTF-8"):
        tinyslm.load_pretrained(folder)


def test_a_safetensors_file_given_as_the_checkpoint_says_to_give_its_folder(folder):
    with pytest.raises(CheckpointError, match="is a file; give the checkpoint folder"):
        tinyslm.load_pretrained(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="is a weights file; give the checkpoint folder"):
        tinyslm.load_config(folder / "model.safetensors")


def test_toml_config_that_is_a_folder_or_not_utf8_is_a_config_error(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        ModelConfig.from_toml(tmp_path / "dir.toml")
    (tmp_path / "bad.toml").write_bytes(b"name = '\xff'")
    with pytest.raises(ConfigError, match="not UTF-8"):
        ModelConfig.from_toml(tmp_path / "bad.toml")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_says_permission_denied_not_missing(folder):
    (folder / "config.json").chmod(0)
    with pytest.raises(CheckpointError, match="permission denied"):
        read_json(folder / "config.json")


@pytest.mark.parametrize("token", [5, ["<s>"]])
def test_tokenizer_config_with_a_non_string_eos_token_is_a_tokenizer_error(tmp_path, token):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": token}))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(TokenizerError, match="eos_token must be a token string"):
        load_tokenizer(tmp_path)


def test_tokenizer_config_that_is_not_utf8_is_a_tokenizer_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_bytes(b"\xff")
    with pytest.raises(TokenizerError, match="not UTF-8"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_weights_are_refused_not_upcast(folder, dtype):
    from safetensors.torch import load_file  # noqa: PLC0415

    state = load_file(folder / "model.safetensors")
    state["model.norm.weight"] = state["model.norm.weight"].to(dtype)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model.norm.weight.*stored as torch.float8.*quantised checkpoints"):
        tinyslm.load_pretrained(folder)
