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
