"""configs/*.toml: every shipped config loads, and builds the model transformers builds.

Three independent checks per config file (the glob picks up new files automatically):
  * our CausalLM, built on the meta device, has as many parameters as transformers' model for the
    same config (translated by the config's family, `family.to_hf`);
  * both equal the published figure (a model card, a paper, or transformers 5.23's meta-device count
    of the real config.json, recorded here; so a wrong number in a TOML file cannot agree with itself);
  * the KV cache stores as many bytes per token (bf16) as the real model's cache does.
Families whose checkpoints run on remote code (OpenELM, MobileLLM, MobiLlama) have no transformers
class to build; their counts are checked against the published figures only.
Meta-device construction allocates nothing, so a 1.7B-parameter model costs milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinyslm.config import ModelConfig
from tinyslm.errors import ConfigError
from tinyslm.families import get_family
from tinyslm.model import CausalLM

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.toml"))

# Total parameters as transformers 5.23 counts them for the real config.json (meta device,
# sum(p.numel() for p in model.parameters()), a tied head counted once); for remote-code models, the
# model's own code counted the same way, beside the card's rounded figure.
PUBLISHED_PARAMS = {
    "tinyllama-1.1b": 1_100_048_384,
    "smollm-135m": 134_515_008,
    "smollm-360m": 361_821_120,
    "smollm2-1.7b": 1_711_376_384,
    "llama-3.2-1b": 1_235_814_400,
    "qwen2-0.5b": 494_032_768,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "qwen3-0.6b": 596_049_920,
    "h2o-danube3-500m": 513_590_784,
    "h2o-danube-1.8b": 1_831_201_280,
    "gemma-2b": 2_506_172_416,
    "gemma-2-2b": 2_614_341_888,
    "gemma-3-270m": 268_098_176,
    "gemma-3-1b": 999_885_952,
    "phi-2": 2_779_683_840,
    "phi-3-mini-4k": 3_821_079_552,
    "stablelm-2-1.6b": 1_644_515_328,
    "pythia-160m": 162_322_944,
    "opt-125m": 125_239_296,
    "cerebras-gpt-111m": 111_050_496,
    "lamini-gpt-774m": 774_031_360,
    "bloom-560m": 559_214_592,
    "olmo-1b": 1_176_764_416,
    "minitron-4b": 4_190_509_056,
    "minicpm3-4b": 4_073_875_968,
    "starcoder2-3b": 3_030_371_328,  # card: 3.03B (transformers 5.25's count)
    "openelm-270m": 271_527_168,  # "270M"
    "mobilellm-125m": 124_635_456,  # card: 124.6M
    "mobilellm-125m-layer-share": 124_635_456,  # card: 124.6M (sharing adds depth, not parameters)
    "mobilellm-350m": 345_355_200,  # card: 345.3M
    "mobillama-0.5b": 534_865_920,  # paper: 0.5B (one FFN shared by 22 blocks, MHA)
}

# KV-cache bytes per token in bf16 (2 x layers x kv_heads x head_dim x 2 B, summed over depth steps).
PUBLISHED_KV_BYTES = {
    "tinyllama-1.1b": 22_528,
    "smollm-135m": 23_040,
    "smollm-360m": 40_960,
    "smollm2-1.7b": 196_608,
    "llama-3.2-1b": 32_768,
    "qwen2-0.5b": 12_288,
    "qwen2.5-0.5b": 12_288,
    "qwen2.5-1.5b": 28_672,
    "qwen3-0.6b": 114_688,
    "h2o-danube3-500m": 49_152,
    "h2o-danube-1.8b": 61_440,  # per token while the context is within the 4096 window; then the rings stop growing
    "gemma-2b": 18_432,
    "gemma-2-2b": 106_496,
    "gemma-3-270m": 18_432,
    "gemma-3-1b": 26_624,
    "phi-2": 327_680,
    "phi-3-mini-4k": 393_216,
    "stablelm-2-1.6b": 196_608,
    "pythia-160m": 36_864,
    "opt-125m": 36_864,
    "cerebras-gpt-111m": 30_720,
    "lamini-gpt-774m": 184_320,
    "bloom-560m": 98_304,
    "olmo-1b": 131_072,
    "minitron-4b": 131_072,
    "minicpm3-4b": 35_712,  # the MLA latent: 62 x (256 + 32) x 2 B
    "starcoder2-3b": 30_720,  # 2 x 30 x 2 x 128 x 2 B while the context is within the 4096 window
    "openelm-270m": 16_128,  # 2 x (5 x 3 + 7 x 4 + 4 x 5) KV heads x 64 x 2 B
    "mobilellm-125m": 23_040,
    "mobilellm-125m-layer-share": 46_080,  # one cache slot per depth step: 60 steps
    "mobilellm-350m": 40_960,
    "mobillama-0.5b": 180_224,  # MHA: 2 x 22 x 32 x 64 x 2 B
}
REMOTE_CODE = {"openelm", "mobilellm", "mobillama"}  # no transformers class to compare with

configs = pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.stem for p in CONFIG_FILES])


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied Parameter once


def meta_model(config: ModelConfig) -> CausalLM:
    with torch.device("meta"):
        return CausalLM(config)


def test_the_shipped_configs_are_all_here():
    assert {p.stem for p in CONFIG_FILES} >= set(PUBLISHED_PARAMS)


@configs
def test_config_loads_and_names_itself_after_its_file(path):
    config = ModelConfig.from_toml(path)
    assert config.name == path.stem
    get_family(config.family, source=str(path))  # a family tinyslm can save it as


@configs
def test_param_count_equals_transformers(path):
    transformers = pytest.importorskip("transformers")
    config = ModelConfig.from_toml(path)
    if config.family in REMOTE_CODE:
        pytest.skip(f"{config.family} runs on remote code: no transformers class (checked against the published figure)")
    hf_config = transformers.AutoConfig.for_model(**get_family(config.family).to_hf(config))
    with torch.device("meta"):
        hf_model = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert n_params(meta_model(config)) == n_params(hf_model)


@configs
def test_param_count_equals_published_figure(path):
    config = ModelConfig.from_toml(path)
    if config.name not in PUBLISHED_PARAMS:
        pytest.skip(f"no published parameter count recorded for {config.name}")
    assert n_params(meta_model(config)) == PUBLISHED_PARAMS[config.name]


@configs
def test_kv_cache_bytes_per_token_equal_published_figure(path):
    config = ModelConfig.from_toml(path)
    if config.name not in PUBLISHED_KV_BYTES:
        pytest.skip(f"no published KV-cache figure recorded for {config.name}")
    bf16_bytes = 2
    assert meta_model(config).cache_values_per_token() * bf16_bytes == PUBLISHED_KV_BYTES[config.name]


# --- bad files fail with a ConfigError that names the problem --------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_unknown_key_is_a_config_error_naming_key_and_file(tmp_path):
    path = write(tmp_path, "dim = 64\nn_heads = 4\nn_kv_head = 2\n")  # typo: n_kv_head
    with pytest.raises(ConfigError, match="n_kv_head") as info:
        ModelConfig.from_toml(path)
    assert str(path) in str(info.value)


def test_heads_not_divisible_by_kv_heads_is_a_config_error_naming_both(tmp_path):
    path = write(tmp_path, "dim = 96\nn_heads = 6\nn_kv_heads = 4\n")
    with pytest.raises(ConfigError, match="n_heads=6") as info:
        ModelConfig.from_toml(path)
    assert "n_kv_heads=4" in str(info.value)
    assert "bad" in str(info.value)  # the config is named after its file


def test_missing_file_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="no such config file") as info:
        ModelConfig.from_toml(path)
    assert str(path) in str(info.value)
