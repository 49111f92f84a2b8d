"""families/hf_config.py and the family translations: config.json read as transformers reads it.

Values of the wrong type are errors naming the file and the key (never a silent `bool("false")`),
a file carrying both RoPE forms is read in transformers' order, and absent keys take the
defaults of transformers' config classes.
"""

import json
from pathlib import Path

import pytest
import torch
from hf_models import write_hf_checkpoint

import tinyslm
from tinyslm.errors import UnsupportedModelError

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A tiny Llama folder written by transformers, free to edit."""
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    return tmp_path


def assert_same_logits(ours, theirs) -> None:
    ids = torch.randint(0, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(ids), theirs(input_ids=ids).logits
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()




def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(tie_word_embeddings="false"), "tie_word_embeddings must be true or false, found 'false'"),
        (dict(tie_word_embeddings=0), "tie_word_embeddings must be true or false, found 0"),
        (dict(hidden_size="64"), "hidden_size must be an integer, found '64'"),
        (dict(num_hidden_layers=True), "num_hidden_layers must be an integer, found True"),  # Python's int(True) is 1
        (dict(num_attention_heads=4.0), "num_attention_heads must be an integer, found 4.0"),
        (dict(rms_norm_eps="tiny"), "rms_norm_eps must be a finite number, found 'tiny'"),
        (dict(rms_norm_eps=False), "rms_norm_eps must be a finite number, found False"),
        (dict(rms_norm_eps=float("nan")), "rms_norm_eps must be a finite number, found nan"),
        (dict(hidden_act=["silu"]), "hidden_act ['silu'] is not supported"),
        (dict(eos_token_id="</s>"), "eos_token_id must be int or list[int] or None, found '</s>'"),
        (dict(rope_parameters=None, rope_theta="x"), "rope_theta must be a number, found 'x'"),
        (dict(rope_parameters={"rope_type": "linear", "factor": "2"}), "rope_scaling factor must be a number"),
        (dict(rope_parameters={"rope_type": "linear"}), "needs factor"),
    ],
    ids=["bool-as-string", "bool-as-int", "int-as-string", "int-as-bool", "int-as-float", "float-as-string",
         "float-as-bool", "float-nan", "list-activation", "eos-string", "theta-string",
         "factor-string", "factor-missing"],
)  # fmt: skip
def test_config_json_values_of_the_wrong_type_name_the_file_and_key(checkpoint, changes, message):
    edit_config(checkpoint, **changes)
    with pytest.raises(tinyslm.TinySLMError) as info:  # ConfigError, or UnsupportedModelError for the activation
        tinyslm.load_pretrained(checkpoint)
    assert str(checkpoint / "config.json") in str(info.value) and message in str(info.value)


def test_unhashable_model_type_is_unsupported_not_a_crash(checkpoint):
    edit_config(checkpoint, model_type=["llama"])
    with pytest.raises(UnsupportedModelError, match=r"model_type \['llama'\] is not supported.*TinyLlama"):
        tinyslm.load_pretrained(checkpoint)


def test_rope_scaling_wins_over_rope_parameters_as_in_transformers(checkpoint):
    """transformers reads `rope_scaling or rope_parameters`: a file carrying both must load the same way."""
    transformers = pytest.importorskip("transformers")
    edit_config(checkpoint, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                rope_scaling={"type": "linear", "factor": 4.0})  # fmt: skip
    theirs = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    ours = tinyslm.load_pretrained(checkpoint)
    assert ours.config.rope_scaling == {"rope_type": "linear", "factor": 4.0}
    assert_same_logits(ours, theirs)


def test_missing_token_ids_take_the_config_class_defaults(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config.pop("bos_token_id", None), config.pop("eos_token_id", None)
    (checkpoint / "config.json").write_text(json.dumps(config))
    loaded = tinyslm.load_config(checkpoint)
    assert (loaded.bos_token_id, loaded.eos_token_id) == (1, 2)  # LlamaConfig's defaults
