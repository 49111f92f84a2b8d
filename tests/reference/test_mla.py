"""MLA (tinyslm/layers/mla.py) and the deepseek_v2 family: the layer, both decode paths, the compressed cache, and
what the loader refuses.

Parity with transformers (logits, greedy tokens, decode steps and bfloat16 on each decode path, the save round
trip) is tests/families/test_parity.py's, over the cases in tests/family_cases/deepseek_v2.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from family_cases.deepseek_v2 import LITE_YARN
from hf_models import DEEPSEEK_V2_LITE_TINY
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyslm
from tinyslm import CausalLM, ConfigError, ModelConfig, UnsupportedModelError
from tinyslm.layers.mla import MLAttention, decode_path, mla_softmax_scale, set_decode_path
from tinyslm.layers.positions import Step
from tinyslm.layers.rope import RotaryEmbedding, apply_rope

transformers = pytest.importorskip("transformers")

LITE_SHAPE = DEEPSEEK_V2_LITE_TINY  # DeepSeek-V2-Lite proportions, tiny


# ---------------------------------------------------------------------------------------------
# DeepSeek's conventions: interleaved RoPE pairs, YaRN's softmax scale


def test_interleaved_rope_is_transformers_complex_rotation():
    """Given the same angles, apply_rope(..., "interleaved") is bit-identical to HF's view_as_complex product."""
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import apply_rotary_emb

    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 50, 16, generator=gen), torch.randn(2, 1, 50, 16, generator=gen)
    cos, sin = RotaryEmbedding(16, 10000.0, None, 256)(torch.arange(50), torch.float32)
    freqs_cis = torch.complex(cos[:, :8], sin[:, :8])[None]  # what HF's rotary module returns, (1, T, d/2)
    hq, hk = apply_rotary_emb(q, k, freqs_cis)
    assert torch.equal(apply_rope(q, cos, sin, "interleaved"), hq)
    assert torch.equal(apply_rope(k, cos, sin, "interleaved"), hk)


def test_softmax_scale_of_deepseek_v2_lite():
    config = ModelConfig(
        attention="mla", dim=2048, n_heads=16, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, rope_scaling={k: v for k, v in LITE_YARN.items() if k != "rope_theta"} | {
            "original_max_position_embeddings": 4096}, max_seq_len=163840,
    )  # fmt: skip
    assert mla_softmax_scale(config) == pytest.approx(0.11472139, abs=1e-8)  # DeepSeek-V2-Lite: YaRN mscale(40, 0.707)^2 / sqrt(192)
    assert mla_softmax_scale(config.replace(rope_scaling=None)) == 192**-0.5


# ---------------------------------------------------------------------------------------------
# the compressed cache and the two decode paths


def mla_config(**changes) -> ModelConfig:
    values = dict(
        attention="mla", vocab_size=64, dim=32, n_layers=3, n_heads=4, ffn_dim=48, kv_lora_rank=16,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, rope_layout="interleaved", max_seq_len=64,
    )  # fmt: skip
    return ModelConfig(**{**values, **changes})


def test_cache_holds_only_the_latent_and_the_rope_key():
    model = CausalLM(mla_config())
    cache = model.new_cache(batch=2, capacity=10, dtype=torch.bfloat16)
    assert [tuple(t.shape) for layer in cache.layers for t in layer.tensors()] == [(2, 10, 16 + 4)] * 3
    assert model.cache_values_per_token() == 3 * (16 + 4)
    assert cache.nbytes == 2 * 10 * model.cache_values_per_token() * 2  # batch x positions x values x bf16


@settings(max_examples=40, deadline=None)
@given(
    heads=st.integers(1, 4),
    kv_rank=st.integers(1, 24),
    q_rank=st.one_of(st.none(), st.integers(1, 16)),
    nope=st.integers(1, 12),
    rope_half=st.integers(1, 4),
    v_dim=st.integers(1, 12),
    prompt=st.integers(1, 6),
    new=st.integers(1, 4),
    layout=st.sampled_from(["half", "interleaved"]),
    seed=st.integers(0, 2**16),
)
def test_absorbed_decode_equals_naive_decode(heads, kv_rank, q_rank, nope, rope_half, v_dim, prompt, new, layout, seed):
    """Folding wkv_b into the query and the output changes no number (float64: up to rounding)."""
    torch.manual_seed(seed)
    attn = MLAttention(
        16, heads, kv_lora_rank=kv_rank, qk_nope_head_dim=nope, qk_rope_head_dim=2 * rope_half, v_head_dim=v_dim,
        q_lora_rank=q_rank, rope_layout=layout,
    ).double()  # fmt: skip
    x = torch.randn(2, prompt + new, 16, dtype=torch.float64)
    rotary = RotaryEmbedding(2 * rope_half, 10000.0, None, 64)
    outputs = {}
    for path in ("naive", "absorbed"):
        attn.decode = path
        cache = attn.new_cache(2, prompt + new, torch.float64, "cpu")
        steps = [attn(x[:, :prompt], Step.with_rope({"global": rotary}, 0, prompt, "cpu"), cache)]
        for t in range(prompt, prompt + new):
            steps.append(attn(x[:, t : t + 1], Step.with_rope({"global": rotary}, t, 1, "cpu"), cache))
        outputs[path] = torch.cat(steps, dim=1)
    torch.testing.assert_close(outputs["absorbed"], outputs["naive"], rtol=1e-9, atol=1e-10)
    attn.decode = "naive"
    full = attn(x, Step.with_rope({"global": rotary}, 0, prompt + new, "cpu"))  # no cache at all
    torch.testing.assert_close(outputs["naive"], full, rtol=1e-9, atol=1e-10)


def test_auto_path_picks_the_path_with_fewer_multiply_adds():
    with torch.device("meta"):  # DeepSeek-V2-Lite's sizes; nothing allocated
        attn = MLAttention.from_config(ModelConfig(
            attention="mla", dim=2048, n_heads=16, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
            v_head_dim=128,
        ))  # fmt: skip
    attn.decode = "auto"
    assert attn.crossover_tokens() == pytest.approx(512 * 256 / 768)  # ~171 tokens for DeepSeek-V2-Lite
    assert attn._path(1, 4096) == "absorbed" and attn._path(1, 2) == "absorbed"  # a decoding step
    assert attn._path(8, 8) == "naive" and attn._path(2048, 2048) == "naive"  # a prompt: nothing cached to re-expand
    big = 10**9  # a chunk after a very long cache: the crossover
    assert attn._path(170, big) == "absorbed" and attn._path(171, big) == "naive"
    for t, s in [(1, 2), (5, 40), (100, 5000), (300, 10_000), (64, 64)]:  # the rule is the written-out costs' comparison
        h, r, dn, dr, dv = 16, 512, 128, 64, 128
        naive = s * r * h * (dn + dv) + t * s * h * (dn + dr + dv)
        absorbed = t * s * h * (2 * r + dr) + t * h * r * (dn + dv)
        assert attn._path(t, s) == ("absorbed" if absorbed < naive else "naive"), (t, s)


def test_decode_path_is_checked():
    model = CausalLM(mla_config())
    with pytest.raises(ConfigError, match="naive, absorbed, auto; found 'fast'"):
        set_decode_path(model, "fast")
    with pytest.raises(ConfigError, match="no MLA layers"):
        set_decode_path(CausalLM(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, ffn_dim=48)), "absorbed")
    assert set_decode_path(model, "absorbed") == "naive"
    assert {b.attn.decode for b in model.blocks} == {"absorbed"}


@pytest.mark.parametrize("path", ["naive", "absorbed", "auto"])
def test_decode_path_context_restores_the_default(path):
    model = CausalLM(mla_config())
    with decode_path(model, path):
        assert {b.attn.decode for b in model.blocks} == {path}
    assert {b.attn.decode for b in model.blocks} == {"naive"}


# ---------------------------------------------------------------------------------------------
# what the loader refuses


def write_config(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], **LITE_SHAPE, **changes}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_moe_checkpoint_is_refused_naming_the_keys(tmp_path):
    folder = write_config(tmp_path, first_k_dense_replace=1, n_routed_experts=64, moe_intermediate_size=16)
    with pytest.raises(UnsupportedModelError, match=r"layers 1\.\.1 are mixture-of-experts.*n_routed_experts=64, "
                       r"first_k_dense_replace=1, num_hidden_layers=2.*MoE is not supported"):  # fmt: skip
        tinyslm.load_pretrained(folder)
    absent = write_config(tmp_path / "absent")  # no MoE keys: transformers' defaults, 64 experts from layer 0
    cfg = json.loads((absent / "config.json").read_text())
    del cfg["first_k_dense_replace"]
    (absent / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="n_routed_experts=64, first_k_dense_replace=0"):
        tinyslm.load_config(absent)


def test_no_routed_experts_means_dense(tmp_path):
    """DeepSeek's own code builds no MoE layer when n_routed_experts is null, whatever first_k_dense_replace says."""
    config = tinyslm.load_config(write_config(tmp_path, first_k_dense_replace=0, n_routed_experts=None))
    assert config.attention == "mla" and config.ffn_dim == 96


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("qk_rope_head_dim", 3, "qk_rope_head_dim must be even"),
        ("kv_lora_rank", 0, "kv_lora_rank as a positive integer, found 0"),
        ("q_lora_rank", -4, "q_lora_rank must be a positive integer or absent, found -4"),
        ("v_head_dim", None, "v_head_dim as a positive integer, found None"),
        ("qk_nope_head_dim", -1, "qk_nope_head_dim as a positive integer, found -1"),
    ],
)
def test_inconsistent_mla_dimensions_are_config_errors(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        mla_config(**{key: value})
    with pytest.raises(ConfigError, match=f"config.json.*{message}"):  # from a checkpoint: names the file
        tinyslm.load_config(write_config(tmp_path, **{key: value}))


def test_saving_a_half_layout_mla_model_as_deepseek_v2_is_refused(tmp_path):
    model = CausalLM(mla_config(family="deepseek_v2", rope_layout="half"))
    with pytest.raises(UnsupportedModelError, match="interleaved"):
        tinyslm.save_pretrained(model, tmp_path)
