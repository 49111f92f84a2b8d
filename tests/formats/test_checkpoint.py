"""checkpoint.py: HF checkpoint folders in (load_pretrained) and out (save_pretrained).

Every checkpoint is built here, offline: a seeded random-init transformers model (every
parameter perturbed, so unit norms and zero biases cannot hide a mapping mistake) saved with
transformers' own `save_pretrained`. The files are then damaged on purpose to check that each
kind of bad input is refused with the exception its kind names and a message that says what
to fix (the file, the key, the expected and the found shape).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from hf_models import build_hf_model, write_hf_checkpoint
from safetensors.torch import load_file, save_file

import tinyslm
from tinyslm.checkpoint import SAFETENSORS_FILE, SAFETENSORS_INDEX, weight_files
from tinyslm.config import ModelConfig
from tinyslm.errors import CheckpointError, ConfigError, GenerationError, UnsupportedModelError
from tinyslm.generate import check_request, generate
from tinyslm.model import CausalLM

TOLERANCE = 1e-5  # max |ours - theirs| / max |theirs|, float32

# Tiny shapes: GQA 4 query heads / 2 KV heads, two layers, a 256-token vocabulary.
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
HF_CASES = {
    "llama": ("LlamaConfig", dict(TINY, tie_word_embeddings=False)),
    "llama-tied": ("LlamaConfig", dict(TINY, tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", dict(TINY, rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "qwen3": ("Qwen3Config", dict(TINY, head_dim=32, tie_word_embeddings=True)),  # head_dim != 64 / 4
}


# ----------------------------------------------------------------------------------------------
# helpers


def relative_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def assert_same_logits(ours, theirs, vocab_size: int = TINY["vocab_size"]) -> None:
    ids = torch.randint(0, vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = relative_diff(ours(ids), theirs(input_ids=ids).logits)
    assert diff <= TOLERANCE, f"logits differ from transformers: relative diff {diff:.2e} > {TOLERANCE}"


def edit_tensors(folder: Path, edit) -> None:
    """Rewrite model.safetensors after `edit(tensors)` changed the dict in place."""
    path = folder / SAFETENSORS_FILE
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def names_shape(shape: tuple[int, ...], message: str) -> bool:
    """Whether a message shows a shape, in any of the usual spellings ([16, 64], (16, 64), 16x64)."""
    dims = [str(d) for d in shape]
    spellings = [f"[{', '.join(dims)}]", f"({', '.join(dims)})", "x".join(dims), f"[{','.join(dims)}]"]
    return any(s in message for s in spellings)


# ----------------------------------------------------------------------------------------------
# fixtures: one reference checkpoint per module, a private copy per test that damages it


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(HF model, folder) for an untied tiny Llama saved by transformers."""
    folder = tmp_path_factory.mktemp("hf-llama")
    return write_hf_checkpoint(folder, "LlamaConfig", **HF_CASES["llama"][1]), folder


@pytest.fixture
def checkpoint(reference, tmp_path) -> Path:
    """A private copy of the reference folder, free to damage."""
    return Path(shutil.copytree(reference[1], tmp_path / "ckpt"))


# ----------------------------------------------------------------------------------------------
# loading what transformers wrote


@pytest.mark.parametrize("case", HF_CASES)
def test_transformers_checkpoint_loads_with_identical_logits(case, tmp_path):
    config_cls, hparams = HF_CASES[case]
    theirs = build_hf_model(config_cls, **hparams)
    theirs.save_pretrained(tmp_path)
    ours = tinyslm.load_pretrained(tmp_path)
    assert ours.config.family == theirs.config.model_type
    assert ours.config.tie_embeddings == hparams.get("tie_word_embeddings", False)
    assert_same_logits(ours, theirs)


def test_sharded_checkpoint_loads_with_identical_logits(reference, tmp_path):
    theirs, _ = reference
    theirs.save_pretrained(tmp_path, max_shard_size="200KB")
    shards = sorted(tmp_path.glob("*.safetensors"))
    assert (tmp_path / SAFETENSORS_INDEX).is_file() and len(shards) > 1, "precondition: a sharded folder"
    assert weight_files(tmp_path) == shards
    assert_same_logits(tinyslm.load_pretrained(tmp_path), theirs)


def test_legacy_config_form_loads_rope_theta_and_torch_dtype(tmp_path):
    """The Hub's older config.json: top-level rope_theta / rope_scaling / torch_dtype keys."""
    transformers = pytest.importorskip("transformers")
    config_cls, hparams = HF_CASES["qwen2"]
    build_hf_model(config_cls, **hparams).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    cfg = json.loads(path.read_text())
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    cfg["rope_scaling"] = None
    del cfg["dtype"]
    cfg["torch_dtype"] = "bfloat16"  # what the Hub file says it holds; we load float32 anyway
    path.write_text(json.dumps(cfg, indent=2))

    ours = tinyslm.load_pretrained(tmp_path)
    assert ours.config.rope_theta == 1e6 and ours.config.rope_scaling is None
    assert ours.config.dtype == "bfloat16"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    assert_same_logits(ours, theirs)


def test_legacy_rope_scaling_type_spelling_is_read(tmp_path):
    """rope_scaling {"type": "linear"} (before rope_type existed) must change the positions, as in HF."""
    transformers = pytest.importorskip("transformers")
    build_hf_model("LlamaConfig", **TINY).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    cfg = json.loads(path.read_text())
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    cfg["rope_scaling"] = {"type": "linear", "factor": 4.0}
    cfg["torch_dtype"] = cfg.pop("dtype")
    path.write_text(json.dumps(cfg, indent=2))

    ours = tinyslm.load_pretrained(tmp_path)
    assert ours.config.rope_scaling["rope_type"] == "linear"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    assert theirs.config.rope_parameters["rope_type"] == "linear"  # the reference applies it too
    assert_same_logits(ours, theirs)


def test_rotary_inv_freq_buffers_in_old_files_are_skipped(reference, checkpoint):
    def add_buffers(tensors):
        for i in range(TINY["num_hidden_layers"]):
            tensors[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.zeros(8)  # wrong on purpose
        tensors["model.rotary_emb.inv_freq"] = torch.zeros(8)

    edit_tensors(checkpoint, add_buffers)
    assert_same_logits(tinyslm.load_pretrained(checkpoint), reference[0])  # recomputed, not loaded


def test_tied_checkpoint_that_also_stores_lm_head_loads(tmp_path):
    config_cls, hparams = HF_CASES["llama-tied"]
    theirs = build_hf_model(config_cls, **hparams)
    theirs.save_pretrained(tmp_path)
    edit_tensors(tmp_path, lambda t: t.setdefault("lm_head.weight", t["model.embed_tokens.weight"].clone()))
    assert "lm_head.weight" in load_file(tmp_path / SAFETENSORS_FILE)

    ours = tinyslm.load_pretrained(tmp_path)
    assert ours.head.weight is ours.tok_emb.weight  # still one Parameter
    assert_same_logits(ours, theirs)


def test_pickle_only_checkpoint_is_refused_with_how_to_opt_in(checkpoint):
    torch.save(load_file(checkpoint / SAFETENSORS_FILE), checkpoint / "pytorch_model.bin")
    (checkpoint / SAFETENSORS_FILE).unlink()
    with pytest.raises(CheckpointError) as err:
        tinyslm.load_pretrained(checkpoint)
    message = str(err.value)
    assert "pytorch_model.bin" in message
    assert "allow_pickle" in message and "--allow-pickle" in message


def test_pickle_checkpoint_loads_with_allow_pickle_and_matches_transformers(reference, checkpoint):
    torch.save(load_file(checkpoint / SAFETENSORS_FILE), checkpoint / "pytorch_model.bin")
    (checkpoint / SAFETENSORS_FILE).unlink()
    assert_same_logits(tinyslm.load_pretrained(checkpoint, allow_pickle=True), reference[0])


@pytest.mark.parametrize("weights", ["safetensors", "pickle"])
def test_editing_a_loaded_model_never_writes_to_the_checkpoint_file(checkpoint, weights):
    """Loaded parameters may be memory-mapped from the file: edits must stay in memory (copy-on-write)."""
    path = checkpoint / SAFETENSORS_FILE
    if weights == "pickle":
        torch.save(load_file(path), checkpoint / "pytorch_model.bin")
        path.unlink()
        path = checkpoint / "pytorch_model.bin"
    before = path.read_bytes()
    model = tinyslm.load_pretrained(checkpoint, allow_pickle=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert path.read_bytes() == before


def test_saving_over_the_folder_a_model_was_loaded_from_round_trips(checkpoint):
    model = tinyslm.load_pretrained(checkpoint)
    ids = torch.arange(12)[None]
    with torch.no_grad():
        expected = model(ids)
        tinyslm.save_pretrained(model, checkpoint)  # reads the mapped file while replacing it
        assert torch.equal(tinyslm.load_pretrained(checkpoint)(ids), expected)


def test_loads_in_bfloat16_when_asked(checkpoint):
    model = tinyslm.load_pretrained(checkpoint, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# ----------------------------------------------------------------------------------------------
# bad input: the exception type, and a message naming what matters


def test_missing_folder_is_a_checkpoint_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(CheckpointError, match=re.escape(str(missing))):
        tinyslm.load_pretrained(missing)


def test_folder_without_config_json_says_config_json_is_missing(checkpoint):
    (checkpoint / "config.json").unlink()
    with pytest.raises(CheckpointError) as err:
        tinyslm.load_pretrained(checkpoint)
    assert str(checkpoint) in str(err.value) and "config.json" in str(err.value)


def test_config_json_that_is_not_json_names_the_file(checkpoint):
    (checkpoint / "config.json").write_text("{model_type: llama")
    with pytest.raises(CheckpointError, match="config.json"):
        tinyslm.load_pretrained(checkpoint)


def test_unknown_model_type_lists_the_supported_ones(checkpoint):
    path = checkpoint / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_type": "mamba42"}))
    with pytest.raises(UnsupportedModelError) as err:
        tinyslm.load_pretrained(checkpoint)
    message = str(err.value)
    assert "mamba42" in message
    assert all(name in message for name in ("llama", "qwen2", "qwen3"))


def test_folder_without_weights_says_so(checkpoint):
    (checkpoint / SAFETENSORS_FILE).unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        tinyslm.load_pretrained(checkpoint)


def test_truncated_safetensors_names_the_file(checkpoint):
    path = checkpoint / SAFETENSORS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        tinyslm.load_pretrained(checkpoint)


def test_corrupt_safetensors_names_the_file(checkpoint):
    path = checkpoint / SAFETENSORS_FILE
    path.write_bytes(bytes(range(256)) * 64)  # garbage: the "header length" is nonsense
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        tinyslm.load_pretrained(checkpoint)


def test_truncated_shard_names_that_shard(reference, tmp_path):
    reference[0].save_pretrained(tmp_path, max_shard_size="200KB")
    shard = sorted(tmp_path.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=re.escape(shard.name)):
        tinyslm.load_pretrained(tmp_path)


def test_index_naming_a_missing_shard_names_the_shard(reference, tmp_path):
    reference[0].save_pretrained(tmp_path, max_shard_size="200KB")
    shard = sorted(tmp_path.glob("*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=re.escape(shard.name)):
        tinyslm.load_pretrained(tmp_path)


def test_missing_tensor_names_the_key(checkpoint):
    key = "model.layers.1.mlp.up_proj.weight"
    edit_tensors(checkpoint, lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=re.escape(key)):
        tinyslm.load_pretrained(checkpoint)


def test_unexpected_tensor_names_the_key(checkpoint):
    key = "model.layers.0.mlp.extra_proj.weight"
    edit_tensors(checkpoint, lambda t: t.setdefault(key, torch.zeros(4, 4)))
    with pytest.raises(CheckpointError, match=re.escape(key)):
        tinyslm.load_pretrained(checkpoint)


def test_wrong_shape_names_key_and_both_shapes(checkpoint):
    key = "model.layers.0.self_attn.k_proj.weight"  # expected (2 KV heads x 16, 64) = (32, 64)
    edit_tensors(checkpoint, lambda t: t.__setitem__(key, torch.zeros(16, 64)))
    with pytest.raises(CheckpointError) as err:
        tinyslm.load_pretrained(checkpoint)
    message = str(err.value)
    assert key in message
    assert names_shape((32, 64), message), f"expected shape missing from: {message}"
    assert names_shape((16, 64), message), f"found shape missing from: {message}"
    assert SAFETENSORS_FILE in message


def test_a_config_json_path_is_not_a_checkpoint_folder(checkpoint):
    with pytest.raises(CheckpointError, match="folder"):
        tinyslm.load_pretrained(checkpoint / "config.json")


# ----------------------------------------------------------------------------------------------
# decoding requests against a loaded checkpoint (its config.json sets the context and vocabulary)


@pytest.fixture(scope="module")
def loaded(reference):
    return tinyslm.load_pretrained(reference[1])


def test_prompt_plus_new_tokens_beyond_context_names_both_numbers(loaded):
    assert loaded.config.max_seq_len == 64  # max_position_embeddings of config.json
    with pytest.raises(GenerationError) as err:
        generate(loaded, torch.ones(1, 10, dtype=torch.long), max_new_tokens=57)
    message = str(err.value)
    assert "10" in message and "57" in message and "64" in message


def test_prompt_plus_new_tokens_exactly_at_context_is_allowed(loaded):
    out = generate(loaded, torch.ones(1, 10, dtype=torch.long), max_new_tokens=54)
    assert out.shape == (1, 64)


def test_empty_prompt_is_refused(loaded):
    with pytest.raises(GenerationError, match="empty"):
        generate(loaded, torch.zeros(1, 0, dtype=torch.long), max_new_tokens=4)


def test_negative_max_new_tokens_is_refused(loaded):
    with pytest.raises(GenerationError, match="max_new_tokens") as err:
        check_request(loaded, torch.ones(1, 3, dtype=torch.long), -1)
    assert "-1" in str(err.value)


@pytest.mark.parametrize("bad_id", [-1, 256, 10_000])
def test_token_id_out_of_range_names_the_vocabulary(loaded, bad_id):
    with pytest.raises(GenerationError) as err:
        generate(loaded, torch.tensor([[1, bad_id, 2]]), max_new_tokens=1)
    assert "256" in str(err.value) and str(bad_id) in str(err.value)


# ----------------------------------------------------------------------------------------------
# save_pretrained: what tinyslm writes, transformers loads back


SAVE_CASES = {
    "llama": ModelConfig(name="llama", family="llama", vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         ffn_dim=128, max_seq_len=64, tie_embeddings=False),
    "llama-tied": ModelConfig(name="llama-tied", family="llama", vocab_size=256, dim=64, n_layers=2, n_heads=4,
                              n_kv_heads=2, ffn_dim=128, max_seq_len=64, tie_embeddings=True),
    "qwen2": ModelConfig(name="qwen2", family="qwen2", vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         ffn_dim=128, max_seq_len=64, rope_theta=1e6, norm_eps=1e-6, qkv_bias=True,
                         tie_embeddings=True),
    "qwen3": ModelConfig(name="qwen3", family="qwen3", vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         head_dim=32, ffn_dim=128, max_seq_len=64, rope_theta=1e6, norm_eps=1e-6, qk_norm=True,
                         tie_embeddings=True),
}  # fmt: skip


def seeded_model(config: ModelConfig, seed: int = 0) -> CausalLM:
    """init_weights(seed=...), then norms and biases moved off 1 and 0 so their mapping is tested."""
    model = CausalLM(config).init_weights(seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("case", SAVE_CASES)
def test_saved_folder_loads_in_transformers_with_identical_logits(case, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = seeded_model(SAVE_CASES[case]).eval()
    tinyslm.save_pretrained(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    assert theirs.config.model_type == SAVE_CASES[case].family
    assert theirs.config.tie_word_embeddings == SAVE_CASES[case].tie_embeddings
    assert_same_logits(ours, theirs)
    assert_same_logits(tinyslm.load_pretrained(tmp_path), theirs)  # and it round-trips through tinyslm


# A llama config.json cannot say these; saving them as llama would write another model (logits off by 2-6).
INEXPRESSIBLE_AS_LLAMA = {
    "sliding_window": dict(sliding_window=4),
    "attn_softcap": dict(attn_softcap=5.0),
    "rope_layout": dict(rope_layout="interleaved"),
    "partial_rotary_factor": dict(partial_rotary_factor=0.5),  # LlamaAttention rotates the whole head
    "norm": dict(norm="layernorm"),
    "block": dict(block="parallel"),
    "positions": dict(positions="learned"),
    "final_softcap": dict(final_softcap=30.0),
}


EXPECTED_IN_MESSAGE = {"sliding_window": "sliding windows per layer"}  # compared by what it resolves to


@pytest.mark.parametrize("field", list(INEXPRESSIBLE_AS_LLAMA))
def test_save_refuses_a_config_its_family_cannot_express(field, tmp_path):
    config = SAVE_CASES["llama"].replace(**INEXPRESSIBLE_AS_LLAMA[field])
    with pytest.raises(UnsupportedModelError, match=rf"family 'llama' cannot express .*{EXPECTED_IN_MESSAGE.get(field, field + '=')}"):
        tinyslm.save_pretrained(seeded_model(config), tmp_path)
    assert not (tmp_path / "config.json").exists() and not (tmp_path / SAFETENSORS_FILE).exists()


def test_a_sliding_window_saves_as_mistral_and_transformers_applies_it(tmp_path):
    """The same window that llama refuses is what a mistral checkpoint says: saved, it loads with equal logits."""
    transformers = pytest.importorskip("transformers")
    ours = seeded_model(SAVE_CASES["llama"].replace(family="mistral", sliding_window=4)).eval()
    tinyslm.save_pretrained(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    assert theirs.config.sliding_window == 4
    assert_same_logits(ours, theirs)


@pytest.mark.parametrize("case", ["llama", "llama-tied"])
def test_save_leaves_only_config_and_weights_no_temp_files(case, tmp_path):
    tinyslm.save_pretrained(seeded_model(SAVE_CASES[case]), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", SAFETENSORS_FILE]


def test_tied_head_is_not_stored_twice(tmp_path):
    tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama-tied"]), tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / SAFETENSORS_FILE)


def test_failed_save_leaves_the_previous_checkpoint_intact_and_no_temp_files(tmp_path, monkeypatch):
    from tinyslm import checkpoint

    first = seeded_model(SAVE_CASES["llama"], seed=0)
    tinyslm.save_pretrained(first, tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    def fail_halfway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", fail_halfway)  # safetensors' writer, as checkpoint.py calls it
    with pytest.raises(CheckpointError, match=r"cannot save the checkpoint \(disk full\)"):
        tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama"], seed=1), tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
    assert not [p for p in tmp_path.parent.iterdir() if ".tinyslm-" in p.name]  # no staging folder left behind


def test_saved_files_get_the_usual_permissions_not_private_temp_ones(tmp_path):
    model = CausalLM(ModelConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, ffn_dim=32)).init_weights(seed=0)
    old = os.umask(0o022)
    try:
        tinyslm.save_pretrained(model, tmp_path / "out")
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------------------------
# what the shard index promises, and what is not a weight file


@pytest.fixture
def sharded(reference, tmp_path) -> Path:
    reference[0].save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    return tmp_path / "sharded"


def test_index_naming_a_file_outside_the_folder_is_refused(sharded):
    index = json.loads((sharded / SAFETENSORS_INDEX).read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "../elsewhere/model.safetensors"
    (sharded / SAFETENSORS_INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"plain file names.*\.\./elsewhere/model\.safetensors"):
        tinyslm.load_pretrained(sharded)


def test_weight_map_of_the_wrong_shape_is_a_checkpoint_error(sharded):
    (sharded / SAFETENSORS_INDEX).write_text(json.dumps({"weight_map": []}))
    with pytest.raises(CheckpointError, match="weight_map must map tensor names to shard file names"):
        tinyslm.load_pretrained(sharded)


def test_tensor_in_a_shard_the_index_does_not_name_is_refused(sharded):
    index = json.loads((sharded / SAFETENSORS_INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    key = next(k for k, v in index["weight_map"].items() if v == shards[0])
    index["weight_map"][key] = shards[1]  # the index now lies about where the tensor is
    (sharded / SAFETENSORS_INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"holds tensor '{re.escape(key)}', but .* places it in '{shards[1]}'"):
        tinyslm.load_pretrained(sharded)


def test_tensor_stored_twice_is_refused(checkpoint):
    tensors = load_file(checkpoint / SAFETENSORS_FILE)
    key = "model.norm.weight"
    save_file({key: tensors[key]}, checkpoint / "extra.safetensors", metadata={"format": "pt"})
    (checkpoint / SAFETENSORS_FILE).rename(checkpoint / "main.safetensors")  # no index: every shard is read
    with pytest.raises(CheckpointError, match=f"'{key}' is stored twice"):
        tinyslm.load_pretrained(checkpoint)


def test_integer_tensors_are_refused_not_cast(checkpoint):
    edit_tensors(checkpoint, lambda t: t.__setitem__("model.norm.weight", t["model.norm.weight"].to(torch.int8)))
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' is stored as torch\.int8"):
        tinyslm.load_pretrained(checkpoint)


def test_trainer_side_files_are_not_taken_for_weights(checkpoint):
    torch.save({"lr": 1e-3}, checkpoint / "training_args.bin")
    torch.save({"step": 1}, checkpoint / "optimizer.pt")
    assert weight_files(checkpoint, allow_pickle=True) == [checkpoint / SAFETENSORS_FILE]
    (checkpoint / SAFETENSORS_FILE).unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        weight_files(checkpoint, allow_pickle=True)


# --- fused tensors: split by the key map, and refused when they do not split as config.json says ---


def test_fused_qkv_that_does_not_split_as_the_config_says_names_file_key_and_sizes(tmp_path):
    """Phi-3's qkv_proj holds [q | k | v]. A config.json claiming fewer KV heads than the file has is refused."""
    hparams = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                   num_key_value_heads=4, pad_token_id=None)  # fmt: skip
    write_hf_checkpoint(tmp_path, "Phi3Config", **hparams)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 2}))
    with pytest.raises(CheckpointError) as err:
        tinyslm.load_pretrained(tmp_path)
    message = str(err.value)
    assert "model.safetensors" in message and "model.layers.0.self_attn.qkv_proj.weight" in message
    assert "has shape [192, 64], expected [128, 64]" in message  # (4 + 4 + 4) x 16 rows found, (4 + 2 + 2) x 16 expected
    assert "[64, 64] + [32, 64] + [32, 64]" in message  # the q, k, v parts it was expected to hold


# --- what loading and saving promise under unlucky input (issue: hostile and unlucky input) ---


def test_resaving_over_a_sharded_checkpoint_reloads_the_new_weights(sharded):
    """The old index and shards must not outlive the save (the loader, like transformers, prefers model.safetensors)."""
    transformers = pytest.importorskip("transformers")
    new = seeded_model(SAVE_CASES["llama"].replace(vocab_size=256, max_seq_len=64), seed=5).eval()
    (sharded / "tokenizer.json").write_text("{}")  # a file that is not part of the checkpoint stays
    tinyslm.save_pretrained(new, sharded)
    # generation_config.json (transformers') and tokenizer.json are not checkpoint files: they stay
    assert sorted(os.listdir(sharded)) == ["config.json", "generation_config.json", SAFETENSORS_FILE, "tokenizer.json"]
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(tinyslm.load_pretrained(sharded)(ids), new(ids))
    assert_same_logits(new, transformers.AutoModelForCausalLM.from_pretrained(sharded).eval())


def test_leftovers_of_a_killed_save_are_cleaned_and_an_orphaned_old_checkpoint_restored(tmp_path):
    model = seeded_model(SAVE_CASES["llama"])
    target = tmp_path / "out"
    stale = tmp_path / ".out.tinyslm-save-abcd1234"  # a save killed while writing its staging folder
    stale.mkdir()
    (stale / SAFETENSORS_FILE).write_bytes(b"x" * 1000)
    tinyslm.save_pretrained(model, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a save killed between its two renames: the previous checkpoint sits in an "-old-" folder, none at target
    old = tmp_path / ".out.tinyslm-old-wxyz5678"
    old.mkdir()
    os.rename(target, old / "out")
    from tinyslm.checkpoint import _remove_leftovers  # noqa: PLC0415  (what the next save runs first)

    _remove_leftovers(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(tinyslm.load_pretrained(target)(ids), model.eval()(ids))


@pytest.mark.parametrize("name, other", [("run[12]", "run1"), ("run*", "run2"), ("run?", "runX"), ("[ab]", "a"),
                                         ("run", "run-b")])  # fmt: skip
def test_cleaning_leftovers_touches_only_this_folders_own(tmp_path, name, other):
    # a folder name is text, not a pattern: saving to "run[12]" once deleted ".run1.tinyslm-old-*", another
    # checkpoint's only copy (killed between its renames)
    model = seeded_model(SAVE_CASES["llama"])
    theirs = [tmp_path / f".{other}.tinyslm-old-abcd1234", tmp_path / f".{other}.tinyslm-save-abcd1234",
              tmp_path / f".{name}.tinyslm-old-abc"]  # (the last: not a name mkdtemp makes)  # fmt: skip
    for folder in theirs:
        folder.mkdir()
        (folder / "weights").write_text("someone else's")
    tinyslm.save_pretrained(model, tmp_path / name)
    assert all((folder / "weights").read_text() == "someone else's" for folder in theirs)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name] + [f.name for f in theirs])


def test_saving_through_a_link_writes_into_the_folder_it_names_and_keeps_the_link(tmp_path):
    real = tmp_path / "real"
    tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama"], seed=0), real)
    (tmp_path / "link").symlink_to(real)
    second = seeded_model(SAVE_CASES["llama"], seed=1)
    tinyslm.save_pretrained(second, tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == real
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(tinyslm.load_pretrained(real)(ids), second.eval()(ids))


def test_saving_into_the_working_directory_is_refused_not_deleted_under_the_process(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for target in (".", str(work), ".."):
        with pytest.raises(CheckpointError, match="is the working directory \\(or holds it\\)"):
            tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama"]), target)
    assert Path.cwd() == work and (work / "notes.txt").read_text() == "mine"
    tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama"]), "sub")  # a subfolder is fine
    assert (work / "sub" / "config.json").is_file()


def test_the_target_holds_the_old_or_the_new_checkpoint_at_every_instant(tmp_path):
    # the swap is one atomic exchange where the OS has one (Linux): a reader polling the folder never finds it
    # missing or mixed while saves replace it
    import threading

    target = tmp_path / "out"
    models = [seeded_model(SAVE_CASES["llama"], seed=i) for i in range(2)]
    tinyslm.save_pretrained(models[0], target)
    expected = {(target / "model.safetensors").read_bytes()}
    tinyslm.save_pretrained(models[1], target)
    expected.add((target / "model.safetensors").read_bytes())
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                seen.append((target / "model.safetensors").read_bytes())
            except OSError as exc:  # absent between two renames: what must not happen
                seen.append(exc)

    from tinyslm.checkpoint import _exchange  # noqa: PLC0415

    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir(), probe_b.mkdir()
    if not _exchange(probe_a, probe_b):
        pytest.skip("this OS or file system has no atomic exchange of two folders")
    reader = threading.Thread(target=watch)
    reader.start()
    try:
        for i in range(6):
            tinyslm.save_pretrained(models[i % 2], target)
    finally:
        stop.set()
        reader.join(timeout=30)
    assert seen and all(not isinstance(s, Exception) and s in expected for s in seen), {type(s) for s in seen}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "out"]


def test_concurrent_saves_into_one_folder_are_serialised(tmp_path):
    import multiprocessing

    target = tmp_path / "out"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_seeded, args=(str(target), seed)) for seed in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    loaded = tinyslm.load_pretrained(target)  # one complete checkpoint, whichever came last
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert any(torch.equal(loaded(ids), seeded_model(SAVE_CASES["llama"], seed=s).eval()(ids)) for s in range(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _save_seeded(target: str, seed: int) -> None:
    for _ in range(3):
        tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama"], seed=seed), target)


def test_save_expands_the_home_folder_like_load(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama"]), "~/saved")
    assert (tmp_path / "saved" / "config.json").is_file() and not Path("~").exists()
    assert tinyslm.load_pretrained("~/saved")


def test_save_into_a_path_that_is_a_file_is_a_checkpoint_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="exists and is not a folder"):
        tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama"]), tmp_path / "file")


def test_tied_config_whose_file_stores_a_different_lm_head_loads_it_as_transformers_does(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = write_hf_checkpoint(tmp_path, "LlamaConfig", **dict(TINY, tie_word_embeddings=True))
    state = load_file(tmp_path / SAFETENSORS_FILE)
    state["lm_head.weight"] = torch.randn(state["model.embed_tokens.weight"].shape, generator=torch.Generator().manual_seed(3))
    save_file(state, tmp_path / SAFETENSORS_FILE, metadata={"format": "pt"})
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ours = tinyslm.load_pretrained(tmp_path)
    assert ours.head.weight is not ours.tok_emb.weight and not ours.config.tie_embeddings
    assert_same_logits(ours, theirs)
    del hf


def test_a_config_claiming_millions_of_layers_is_refused_quickly(checkpoint):
    """Nothing is built for layers the weights cannot hold: the refusal comes in well under a second."""
    import time  # noqa: PLC0415

    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10_000_000}))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="describes a model of .* parameters, but the weight files hold only"):
        tinyslm.load_pretrained(checkpoint)
    assert time.perf_counter() - start < 5
    stats_start = time.perf_counter()
    from tinyslm.tools.stats import model_stats  # noqa: PLC0415

    assert model_stats(tinyslm.load_config(checkpoint)).parameters > 10**11  # counted, not built
    assert time.perf_counter() - stats_start < 5


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("rope_theta", 0, "rope_theta must be a positive number"),
        ("rope_theta", -1.0, "rope_theta must be a positive number"),
        ("rope_scaling", {"rope_type": "linear", "factor": 0}, "rope_scaling factor must be > 0"),
        ("rope_scaling", {"rope_type": "linear", "factor": -2.0}, "rope_scaling factor must be > 0"),
        ("rms_norm_eps", float("nan"), "rms_norm_eps must be a finite number, found nan"),
        ("rms_norm_eps", -1e-6, "norm_eps must be > 0"),
        ("eos_token_id", [], "eos_token_id must be a token id >= 0 or a non-empty list"),
        ("bos_token_id", -1, "bos_token_id must be a token id >= 0"),
    ],
)
def test_config_values_that_would_make_every_logit_nan_are_refused(checkpoint, key, value, message):
    config = json.loads((checkpoint / "config.json").read_text())
    config.pop("rope_parameters", None) if key.startswith("rope") else None
    (checkpoint / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(ConfigError, match=message):
        tinyslm.load_pretrained(checkpoint)


def test_nan_weights_stop_generation_with_a_clear_error(checkpoint):
    state = load_file(checkpoint / SAFETENSORS_FILE)
    state["model.norm.weight"][0] = float("nan")
    save_file(state, checkpoint / SAFETENSORS_FILE, metadata={"format": "pt"})
    model = tinyslm.load_pretrained(checkpoint)
    with pytest.raises(GenerationError, match="logits for the prompt are NaN or infinite"):
        generate(model, torch.tensor([[1, 2, 3]]), 4)


def test_a_kv_cache_too_large_to_allocate_is_a_generation_error(loaded):
    with pytest.raises(GenerationError, match="cannot allocate the KV cache"):
        loaded.new_cache(2**40, 64)


def test_a_failure_writing_config_json_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    """The weights and config.json are swapped in together: never new weights with the old config."""
    first = seeded_model(SAVE_CASES["llama"], seed=0)
    tinyslm.save_pretrained(first, tmp_path / "out")
    before = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")}
    real_write_text = Path.write_text

    def fail_on_config(self, *args, **kwargs):
        if self.name == "config.json":
            raise OSError(28, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fail_on_config)
    with pytest.raises(CheckpointError, match="No space left on device"):
        tinyslm.save_pretrained(seeded_model(SAVE_CASES["llama"].replace(rope_theta=5e5), seed=1), tmp_path / "out")
    monkeypatch.undo()
    assert {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kind", ["q8_0", "int8"])
def test_saving_a_quantized_model_is_refused_with_what_to_do(tmp_path, kind):
    model = seeded_model(SAVE_CASES["llama"])
    try:
        tinyslm.quantize(model, kind)
    except Exception as exc:  # noqa: BLE001  (q8_0 needs the native kernels or the gguf package)
        pytest.skip(f"cannot quantize to {kind} here: {exc}")
    with pytest.raises(CheckpointError, match="holds quantized layers .* cannot hold; save the float model"):
        tinyslm.save_pretrained(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


SAVER = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a user's process has it, whatever the test inherited
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
import tinyslm
from tinyslm import CausalLM, ModelConfig
config = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32)
models = [CausalLM(config).init_weights(seed=s) for s in (0, 1)]
print("ready", flush=True)
i = 0
while True:
    tinyslm.save_pretrained(models[i % 2], sys.argv[1])
    i += 1
"""


@pytest.mark.slow
def test_a_save_stopped_at_any_point_leaves_the_old_or_the_new_checkpoint_and_loses_nothing(tmp_path):
    # SIGKILL and SIGINT at many points of back-to-back saves: after each, the target holds one complete
    # checkpoint of the two, the user's own file beside it is intact, and the next save cleans every leftover
    import signal
    import subprocess
    import sys
    import time

    from tinyslm import CausalLM, ModelConfig

    config = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32)
    expected = [CausalLM(config).init_weights(seed=s).eval() for s in (0, 1)]
    target = tmp_path / "out"
    tinyslm.save_pretrained(expected[0], target)
    (target / "notes.txt").write_text("mine")
    ids = torch.tensor([[1, 2, 3]])
    delays = [0.0, 0.013, 0.029, 0.047, 0.071, 0.097, 0.131, 0.173]
    for n, delay in enumerate(delays):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(target)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL if n % 2 == 0 else signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            proc.kill()
        with torch.no_grad():
            loaded = tinyslm.load_pretrained(target).eval()(ids)
            assert any(torch.equal(loaded, m(ids)) for m in expected), f"stopped after {delay} s: a mixed checkpoint"
        assert (target / "notes.txt").read_text() == "mine"
    tinyslm.save_pretrained(expected[1], target)  # cleans whatever the stopped saves left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
