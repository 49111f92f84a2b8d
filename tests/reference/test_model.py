"""config.py, model.py and stats.py: what a config builds, and what it costs."""

import dataclasses

import pytest
import torch

from tinyslm import CausalLM, ConfigError, ModelConfig
from tinyslm.tools.stats import model_stats


def small(**overrides) -> ModelConfig:
    values = dict(vocab_size=100, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32)
    return ModelConfig(**{**values, **overrides})


MLA = dict(attention="mla", n_kv_heads=4, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)


def test_attention_kind_is_derived_from_kv_heads():
    assert small(n_kv_heads=4).attention == "mha"
    assert small(n_kv_heads=2).attention == "gqa"
    assert small(n_kv_heads=1).attention == "mqa"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_kv_heads=3), "multiple of n_kv_heads=3"),
        (dict(attention="mqa"), "contradicts"),
        (dict(layer_ffn_dim=[64, 64]), "one per layer"),
        (dict(norm="batchnorm"), "norm must be one of"),
        (dict(dim=30, n_heads=4), "not divisible"),
        (dict(head_dim=6, partial_rotary_factor=0.5), "rotary dimension must be even"),
        (dict(vocab_size=0), "vocab_size must be a positive integer"),
        # MLA's fields without MLA, and MLA with per-layer head counts
        (dict(attention="gqa", kv_lora_rank=16), r"kv_lora_rank .*attention='mla', but attention='gqa'"),
        (dict(n_kv_heads=4, kv_lora_rank=16, v_head_dim=8), r"kv_lora_rank, v_head_dim .*attention='mha'"),
        (dict(MLA, layer_n_heads=[4, 4, 4]), r"per-layer head counts \(layer_n_heads / layer_n_kv_heads\).*MLA"),
        (dict(MLA, layer_n_kv_heads=[4, 4, 4]), "per-layer head counts .* not supported with MLA"),
        # per-layer attention patterns
        (dict(sliding_window=4, layer_types=["full", "sliding"]), r"layer_types has 2 entries, expected one per layer \(3\)"),
        (dict(sliding_window=4, layer_types=["full", "local", "full"]), "layer_types may hold full and sliding only"),
        (dict(layer_types=["full", "sliding", "full"]), "sliding layers but sliding_window is not set"),
        (dict(sliding_window=4, sliding_pattern=0), "sliding_pattern must be a positive integer"),
        (dict(rope_local_theta=1e4), "no layer slides"),
        # positions: ALiBi and learned tables have no RoPE to scale
        (dict(positions="alibi", rope_scaling={"rope_type": "linear", "factor": 2.0}),
         "rope_scaling configure RoPE, but positions='alibi' uses no RoPE"),
        (dict(positions="learned", partial_rotary_factor=0.5), "partial_rotary_factor configure RoPE"),
        (dict(position_offset=2), "position_offset applies to learned positions only"),
        # numbers that would turn every logit into NaN
        (dict(rope_theta=0.0), "rope_theta must be a positive number"),
        (dict(attn_softcap=float("nan")), "attn_softcap must be a positive number"),
        (dict(norm_eps=float("nan")), "norm_eps must be > 0"),
        (dict(qk_norm_per_head=True), "qk_norm_per_head=true needs qk_norm=true"),
    ],
)
def test_inconsistent_configs_raise_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small(**overrides)


def test_a_config_is_frozen_and_replace_validates():
    config = small()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_heads = 3
    with pytest.raises(ConfigError, match="multiple of n_kv_heads"):
        config.replace(n_kv_heads=3)


def test_replace_derives_again_what_the_config_derived_and_keeps_what_it_was_given():
    derived = ModelConfig(dim=64, n_heads=8)  # n_kv_heads, head_dim and attention filled in
    assert (derived.replace(n_kv_heads=2).attention, derived.replace(n_heads=4).head_dim) == ("gqa", 16)
    assert derived.replace(n_heads=4).n_kv_heads == 4 and derived.replace(n_heads=4).attention == "mha"
    given = ModelConfig(dim=64, n_heads=8, n_kv_heads=2, head_dim=8, attention="gqa")
    assert given.replace(n_heads=4).head_dim == 8  # given: kept (and checked)
    assert given.replace(n_kv_heads=4).attention == "gqa"  # given: kept
    assert derived.replace(dim=64) == derived


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(), ["full"] * 6),
        (dict(sliding_window=4), ["sliding"] * 6),  # Mistral: every layer
        (dict(sliding_window=4, sliding_pattern=2), ["sliding", "full"] * 3),  # Gemma-2 alternates
        (dict(sliding_window=4, sliding_pattern=3), ["sliding", "sliding", "full"] * 2),  # Gemma-3's 5:1, shrunk
        (dict(sliding_window=4, layer_types=["full"] * 5 + ["sliding"]), ["full"] * 5 + ["sliding"]),
    ],
)
def test_layer_spec_resolves_windows_from_a_list_or_a_pattern(overrides, expected):
    config = small(n_layers=6, **overrides)
    assert [config.layer_type(i) for i in range(6)] == expected
    windows = [config.layer(i).window for i in range(6)]
    assert windows == [4 if kind == "sliding" else None for kind in expected]
    model = CausalLM(config)
    assert [b.attn.window for b in model.blocks] == windows


def test_sliding_layers_read_their_own_rope_table():
    config = small(n_layers=4, sliding_window=4, sliding_pattern=2, rope_theta=1e6, rope_local_theta=1e4)
    model = CausalLM(config)
    assert set(model.ropes) == {"global", "local"}
    assert [b.attn.rope_key for b in model.blocks] == ["local", "global", "local", "global"]
    assert model.ropes["local"].theta == 1e4 and model.ropes["global"].theta == 1e6


def test_per_layer_overrides_build_layers_of_different_widths():
    config = small(layer_n_heads=[2, 4, 8], layer_n_kv_heads=[1, 2, 2], layer_ffn_dim=[16, 32, 64], head_dim=8)
    model = CausalLM(config).init_weights(seed=0)
    assert [b.attn.wq.out_features for b in model.blocks] == [16, 32, 64]
    assert [b.attn.wk.out_features for b in model.blocks] == [8, 16, 16]
    assert [b.ffn.up.out_features for b in model.blocks] == [16, 32, 64]
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 100)
    assert model.cache_values_per_token() == 2 * 8 * (1 + 2 + 2)


@pytest.mark.parametrize("sharing", ["immediate", "cyclic"])
def test_block_sharing_reuses_weights_and_doubles_depth_not_parameters(sharing):
    base, shared = small(), small(block_sharing=sharing)
    assert model_stats(shared).parameters == model_stats(base).parameters
    assert model_stats(shared).kv_cache_values_per_token == 2 * model_stats(base).kv_cache_values_per_token
    expected = {"immediate": [0, 0, 1, 1, 2, 2], "cyclic": [0, 1, 2, 0, 1, 2]}[sharing]
    assert shared.schedule() == expected


def test_stats_count_a_tied_head_once_and_exclude_it_from_non_embedding():
    untied, tied = model_stats(small()), model_stats(small(tie_embeddings=True))
    assert untied.parameters - tied.parameters == 100 * 32
    assert tied.breakdown["lm_head"] == 0 and untied.breakdown["lm_head"] == 100 * 32
    assert tied.non_embedding_parameters == untied.non_embedding_parameters
    assert sum(untied.breakdown.values()) == untied.parameters
    real = CausalLM(small())
    assert untied.parameters == sum(p.numel() for p in real.parameters())
    assert untied.breakdown["attention"] == sum(p.numel() for n, p in real.named_parameters() if ".attn." in n)


def test_stats_byte_figures_follow_the_dtype():
    s16, s32 = model_stats(small(), torch.bfloat16, context=10), model_stats(small(), torch.float32, context=10)
    assert s32.weight_bytes == 2 * s16.weight_bytes == 4 * s16.parameters
    assert s16.kv_cache_bytes_per_token == 2 * 3 * 2 * 8 * 2  # K and V, 3 layers, 2 KV heads, head_dim 8, 2 bytes
    assert s16.kv_cache_bytes_at_context == 10 * s16.kv_cache_bytes_per_token


def test_kv_cache_object_bytes_equal_the_reported_figure():
    model = CausalLM(small()).to(torch.bfloat16)
    cache = model.new_cache(batch=1, capacity=10)
    assert cache.nbytes == model_stats(small(), torch.bfloat16, context=10).kv_cache_bytes_at_context


def test_sliding_window_layers_stop_growing_the_cache_at_their_window():
    """Gemma-2-like: every other layer slides (W=4). At 10 tokens those layers hold 4, the others 10."""
    config = small(n_layers=4, sliding_window=4, sliding_pattern=2)
    per_layer = 2 * 2 * 8  # K and V, 2 KV heads, head_dim 8
    stats = model_stats(config, torch.float32, context=10)
    assert stats.kv_cache_values_at_context == per_layer * (4 + 10 + 4 + 10)
    cache = CausalLM(config).new_cache(1, 10, torch.float32)
    assert cache.nbytes == stats.kv_cache_bytes_at_context
