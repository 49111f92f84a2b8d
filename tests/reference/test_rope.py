"""rope.py: frequencies match transformers for every scaling variant; RoPE encodes relative position."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyslm.layers.rope import RotaryEmbedding, apply_rope

VARIANTS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 32, "beta_fast": 32,
             "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    "yarn-default-mscale": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32},
}  # fmt: skip


def hf_rotary(head_dim: int, theta: float, scaling, max_pos: int):
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope = {"rope_type": "default", **(scaling or {}), "rope_theta": theta}
    config = transformers.LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                                      max_position_embeddings=max_pos, rope_parameters=rope)  # fmt: skip
    return LlamaRotaryEmbedding(config)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cos_sin_match_transformers(variant):
    head_dim, theta, max_pos = 32, 10000.0, 128
    ours = RotaryEmbedding(head_dim, theta, VARIANTS[variant], max_pos)
    theirs = hf_rotary(head_dim, theta, VARIANTS[variant], max_pos)
    torch.testing.assert_close(ours.inv_freq, theirs.inv_freq, rtol=1e-6, atol=0)
    positions = torch.arange(0, 100)
    cos, sin = ours(positions, torch.float32)
    cos_ref, sin_ref = theirs(torch.zeros(1, dtype=torch.float32), positions[None])
    torch.testing.assert_close(cos, cos_ref[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sin, sin_ref[0], rtol=1e-6, atol=1e-6)


def test_dynamic_ntk_grows_theta_past_the_trained_context_as_transformers_does():
    scaling = VARIANTS["dynamic"]
    ours = RotaryEmbedding(32, 10000.0, scaling, 64)
    theirs = hf_rotary(32, 10000.0, scaling, 64)
    positions = torch.arange(0, 150)  # past max_position_embeddings = 64
    cos, _ = ours(positions, torch.float32)
    cos_ref, _ = theirs(torch.zeros(1), positions[None])
    torch.testing.assert_close(cos, cos_ref[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cos, RotaryEmbedding(32, 10000.0, None, 64)(positions, torch.float32)[0])


@settings(max_examples=30, deadline=None)
@given(
    variant=st.sampled_from(sorted(VARIANTS)),
    layout=st.sampled_from(["half", "interleaved"]),
    partial=st.sampled_from([1.0, 0.5, 0.25]),
    m=st.integers(0, 200),
    n=st.integers(0, 200),
    shift=st.integers(1, 300),
)
def test_rope_keeps_q_dot_k_invariant_under_a_shift_of_both_positions(variant, layout, partial, m, n, shift):
    head_dim = 32
    rope = RotaryEmbedding(int(head_dim * partial), 10000.0, VARIANTS[variant], 1024)
    gen = torch.Generator().manual_seed(m * 1000 + n)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=gen, dtype=torch.float64)

    def score(pq: int, pk: int) -> float:
        cos, sin = rope(torch.tensor([pq, pk]), torch.float64)
        q_rot = apply_rope(q, cos[:1], sin[:1], layout)
        k_rot = apply_rope(k, cos[1:], sin[1:], layout)
        return float((q_rot * k_rot).sum())

    # Angles are float32 (as in transformers): position * inv_freq is off by up to ~6e-8 of itself,
    # ~3e-5 rad at position 500, which moves q.k by ~1e-4 here; a broken encoding moves it by O(1).
    assert math.isclose(score(m, n), score(m + shift, n + shift), rel_tol=1e-4, abs_tol=2e-3)


def test_interleaved_rotation_equals_half_rotation_on_permuted_dims():
    """Meta/DeepSeek pairs (2i, 2i+1) become HF's (i, i+d/2) under the converter's permutation."""
    d = 16
    perm = torch.arange(d).view(d // 2, 2).t().reshape(-1)  # [0, 2, 4, ..., 1, 3, 5, ...]
    x = torch.randn(1, 2, 5, d, dtype=torch.float64)
    cos, sin = RotaryEmbedding(d, 10000.0, None, 64)(torch.arange(5), torch.float64)
    interleaved = apply_rope(x, cos, sin, "interleaved")
    torch.testing.assert_close(interleaved[..., perm], apply_rope(x[..., perm], cos, sin, "half"))


def test_partial_rotary_leaves_the_tail_dims_untouched():
    x = torch.randn(1, 1, 4, 32)
    cos, sin = RotaryEmbedding(8, 10000.0, None, 64)(torch.arange(4), torch.float32)
    out = apply_rope(x, cos, sin)
    assert torch.equal(out[..., 8:], x[..., 8:])
    assert not torch.equal(out[..., 1:, :8], x[..., 1:, :8])


def test_unknown_rope_type_is_a_config_error():
    from tinyslm.errors import ConfigError

    with pytest.raises(ConfigError, match="unsupported rope_type 'wobbly'"):
        RotaryEmbedding(8, 10000.0, {"rope_type": "wobbly", "factor": 2.0}, 64)
    with pytest.raises(ConfigError, match="low_freq_factor"):
        RotaryEmbedding(8, 10000.0, {"rope_type": "llama3", "factor": 2.0}, 64)


# --- LongRoPE ----------------------------------------------------------------------------------------

SHORT = [1.0 + 0.03 * i for i in range(16)]  # head_dim 32: 16 rotated pairs
LONG = [1.0 + 2.5 * i for i in range(16)]
LONGROPE = {"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG, "original_max_position_embeddings": 16}


def hf_phi3_rotary(max_pos: int, original: int, scaling: dict):
    """transformers' Phi3RotaryEmbedding: the context comes from Phi3Config's top-level key."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    rope = {k: v for k, v in scaling.items() if k != "original_max_position_embeddings"}
    config = transformers.Phi3Config(hidden_size=64, num_attention_heads=2, max_position_embeddings=max_pos,
                                     original_max_position_embeddings=original,
                                     rope_parameters={**rope, "rope_theta": 10000.0})  # fmt: skip
    return Phi3RotaryEmbedding(config)


def test_longrope_picks_short_or_long_factors_per_call_as_transformers_does():
    """One table per call, by the call's last position: short up to the original context (16), long past it.

    The calls run in the order a cached decode makes them (a prompt, then one position at a time, across the
    switch), then full forwards; transformers' module keeps state between calls, and must agree at each.
    """
    ours = RotaryEmbedding(32, 10000.0, LONGROPE, 64)
    theirs = hf_phi3_rotary(64, 16, LONGROPE)
    assert ours.attention_factor == theirs.attention_scaling == math.sqrt(1 + math.log(64 / 16) / math.log(16))
    short_table = None
    for positions in [torch.arange(12), *[torch.tensor([p]) for p in range(12, 20)], torch.arange(16),
                      torch.arange(17), torch.arange(40), torch.arange(5)]:  # fmt: skip
        cos, sin = ours(positions, torch.float32)
        cos_ref, sin_ref = theirs(torch.zeros(1), positions[None])
        assert torch.equal(cos, cos_ref[0]) and torch.equal(sin, sin_ref[0]), f"positions {positions.tolist()}"
        if positions.tolist() == [15]:
            short_table = cos
    # position 15 is the last short call; the same position inside a longer call is rotated with long_factor
    assert not torch.allclose(short_table, ours(torch.arange(17), torch.float32)[0][15:16])


def test_longrope_short_factor_applies_below_the_original_context():
    positions = torch.arange(8)
    plain, _ = RotaryEmbedding(32, 10000.0, None, 64)(positions, torch.float32)
    stretched, _ = RotaryEmbedding(32, 10000.0, {**LONGROPE, "attention_factor": 1.0}, 64)(positions, torch.float32)
    assert torch.equal(plain[:, 0], stretched[:, 0])  # short_factor[0] = 1: the fastest pair is unchanged
    assert not torch.allclose(plain, stretched)


@pytest.mark.parametrize(
    "extra, max_pos",
    [({}, 64), ({}, 16), ({}, 8), ({"factor": 8.0}, 16), ({"attention_factor": 0.8}, 64), ({"factor": 0.5}, 64)],
    ids=["derived", "unstretched", "shorter-than-original", "explicit-factor", "explicit-attention", "factor-below-1"],
)
def test_longrope_attention_factor_matches_transformers(extra, max_pos):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {**LONGROPE, **extra}
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, head_dim=32,
                                      max_position_embeddings=max_pos, rope_parameters={**scaling, "rope_theta": 10000.0})
    inv_freq, attention = ROPE_INIT_FUNCTIONS["longrope"](config)
    ours = RotaryEmbedding(32, 10000.0, scaling, max_pos)
    assert ours.attention_factor == attention
    assert torch.equal(ours.inv_freq, inv_freq)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"short_factor": SHORT[:-1]}, "short_factor has 15 entries; LongRoPE needs one per rotated pair"),
        ({"long_factor": LONG + [1.0]}, "long_factor has 17 entries"),
        ({"long_factor": [*LONG[:-1], math.inf]}, "long_factor must hold finite numbers > 0"),
        ({"short_factor": [0.0, *SHORT[1:]]}, "short_factor must hold finite numbers > 0"),
        ({"short_factor": [True, *SHORT[1:]]}, "short_factor must hold finite numbers > 0"),
        ({"short_factor": 1.0}, "short_factor must be a non-empty list of numbers"),
        ({"long_factor": None}, "needs long_factor"),
        ({"original_max_position_embeddings": None}, "needs original_max_position_embeddings"),
        ({"original_max_position_embeddings": 2**63}, "out of range"),
        ({"factor": [2.0]}, "factor must be a number"),
    ],
    ids=["short", "long", "inf", "zero", "bool", "scalar", "missing", "no-context", "huge-context", "list-factor"],
)
def test_longrope_factor_lists_are_checked(change, message):
    from tinyslm.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        RotaryEmbedding(32, 10000.0, {**LONGROPE, **change}, 64)


def test_longrope_cached_decode_across_the_switch_matches_transformers_cached_decode(tmp_path):
    """transformers' cache keeps keys rotated with short_factor after a decode step crosses into long_factor;
    tinyslm's does too: each step's logits equal transformers' cached step, and differ from a full forward."""
    from hf_models import write_hf_checkpoint

    import tinyslm

    hf = write_hf_checkpoint(tmp_path, "Phi3Config", vocab_size=128, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                             original_max_position_embeddings=8, rope_parameters={**LONGROPE, "rope_theta": 10000.0},
                             pad_token_id=0, attn_implementation="eager")  # fmt: skip
    model = tinyslm.load_pretrained(tmp_path)
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(0))
    cache, past = model.new_cache(1, 12), None
    with torch.no_grad():
        for t in range(6, 13):  # a 6-token prompt, then one token at a time to 12 (the switch: length 9)
            chunk = ids[:, :t] if t == 6 else ids[:, t - 1 : t]
            ours = model(chunk, cache=cache)[:, -1]
            out = hf(input_ids=chunk, past_key_values=past, use_cache=True)
            past, theirs = out.past_key_values, out.logits[:, -1]
            assert float((ours - theirs).abs().max() / theirs.abs().max()) <= 1e-5, f"length {t}"
            full = model(ids[:, :t])[:, -1]
            if t <= 8:
                torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-5)
            else:  # past the switch the full forward rotates every key with long_factor
                assert not torch.allclose(ours, full, rtol=1e-3, atol=1e-3), f"length {t}"
