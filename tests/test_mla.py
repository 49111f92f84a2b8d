"""MLA (tinyslm/layers/mla.py) and the deepseek_v2 family: parity with transformers, both decode paths, the cache.

Reference checkpoints are seeded random-init DeepseekV2ForCausalLM models with shrunken
DeepSeek-V2-Lite shapes (r = 4 dn, dr = dn / 2, v_head_dim != qk_nope_head_dim), every layer dense
(first_k_dense_replace = num_hidden_layers; transformers 5.23 rejects n_routed_experts=None), every
parameter perturbed so norm weights are not all ones and biases not zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_models import DEEPSEEK_V2_LITE_TINY, hf_greedy, write_hf_checkpoint
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyslm
from tinyslm import CausalLM, ConfigError, ModelConfig, UnsupportedModelError
from tinyslm.layers.mla import MLAttention, decode_path, mla_softmax_scale, set_decode_path
from tinyslm.layers.positions import Step
from tinyslm.layers.rope import RotaryEmbedding, apply_rope

transformers = pytest.importorskip("transformers")

LITE_SHAPE = DEEPSEEK_V2_LITE_TINY  # DeepSeek-V2-Lite proportions, tiny
LITE_YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=40.0, original_max_position_embeddings=64,
                 beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707)  # fmt: skip
CASES = {
    # q_lora_rank null (V2-Lite), YaRN with mscale == mscale_all_dim: cos/sin unscaled, softmax scale * mscale^2
    "lite-yarn": dict(LITE_SHAPE, rope_parameters=LITE_YARN),
    # query LoRA (V2 / MiniCPM3 style), plain RoPE, attention and MLP biases
    "q-lora-bias": dict(LITE_SHAPE, q_lora_rank=24, attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5),
    # query LoRA + YaRN with mscale != mscale_all_dim: cos/sin scaled too
    "q-lora-yarn": dict(LITE_SHAPE, q_lora_rank=24, max_position_embeddings=256,
                        rope_parameters=dict(rope_type="yarn", rope_theta=5000.0, factor=8.0,
                                             original_max_position_embeddings=32, mscale=1.0, mscale_all_dim=0.5)),
}  # fmt: skip
# Every parameter resampled (not nudged): the tolerances below were tuned on this distribution.
HF_OPTIONS = dict(perturb="resample", attn_implementation="eager")
PROMPT = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(3))
NEW_TOKENS = 16


def relative_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module", params=[(case, form) for case in CASES for form in ("current", "legacy")],
                ids=lambda p: f"{p[0]}-{p[1]}")  # fmt: skip
def checkpoint(request, tmp_path_factory):
    """(folder, reference HF model, its greedy continuation) for one case in one config.json form."""
    case, form = request.param
    folder = tmp_path_factory.mktemp(f"{case}-{form}")
    hf = write_hf_checkpoint(folder, "DeepseekV2Config", legacy=form == "legacy", **HF_OPTIONS, **CASES[case])
    if form == "legacy":
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return folder, hf, hf_greedy(hf, PROMPT, NEW_TOKENS)


# ---------------------------------------------------------------------------------------------
# parity with transformers


@pytest.mark.parametrize("path", ["naive", "absorbed"])
def test_logits_match_transformers(checkpoint, path):
    folder, hf, _ = checkpoint
    ours = tinyslm.load_pretrained(folder)
    set_decode_path(ours, path)
    with torch.no_grad():
        ref = hf(PROMPT).logits
        assert relative_diff(ours(PROMPT), ref) <= 1e-5
    assert ours.config.rope_layout == "interleaved"
    hf_attn, attn = hf.model.layers[0].self_attn, ours.blocks[0].attn
    assert attn.scale == pytest.approx(hf_attn.scaling, rel=1e-12)
    assert attn.kv_norm.eps == hf_attn.kv_a_layernorm.variance_epsilon == 1e-6  # not rms_norm_eps
    if hf_attn.q_a_layernorm is not None:
        assert attn.q_norm.eps == hf_attn.q_a_layernorm.variance_epsilon


@pytest.mark.parametrize("path", ["naive", "absorbed", "auto"])
def test_greedy_continuation_matches_transformers(checkpoint, path):
    folder, _, expected = checkpoint
    ours = tinyslm.load_pretrained(folder)
    with decode_path(ours, path):
        assert torch.equal(tinyslm.generate(ours, PROMPT, NEW_TOKENS), expected)
    assert ours.blocks[0].attn.decode == "naive"  # the context manager restored the default


@pytest.mark.parametrize("path", ["naive", "absorbed"])
def test_cached_decode_logits_match_transformers(checkpoint, path):
    """Every decode step reads the compressed cache; its logits equal transformers' full forward."""
    folder, hf, expected = checkpoint
    ours = tinyslm.load_pretrained(folder)
    set_decode_path(ours, path)
    with torch.no_grad():
        ref = hf(expected).logits  # (B, T + n, V)
        cache = ours.new_cache(expected.shape[0], expected.shape[1])
        steps = [ours(expected[:, : PROMPT.shape[1]], cache=cache)]
        steps += [ours(expected[:, t : t + 1], cache=cache) for t in range(PROMPT.shape[1], expected.shape[1])]
    assert relative_diff(torch.cat(steps, dim=1), ref) <= 1e-5


def test_save_pretrained_round_trips_through_transformers(checkpoint, tmp_path):
    folder, hf, _ = checkpoint
    ours = tinyslm.load_pretrained(folder)
    tinyslm.save_pretrained(ours, tmp_path)
    back, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(back).__name__ == "DeepseekV2ForCausalLM"
    with torch.no_grad():
        assert relative_diff(back.eval()(PROMPT).logits, hf(PROMPT).logits) <= 1e-5
    assert tinyslm.load_config(tmp_path).replace(name="x") == ours.config.replace(name="x")


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


def test_auto_path_picks_absorbed_for_decode_steps_and_naive_for_long_prefills():
    with torch.device("meta"):  # DeepSeek-V2-Lite's sizes; nothing allocated
        attn = MLAttention.from_config(ModelConfig(
            attention="mla", dim=2048, n_heads=16, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
            v_head_dim=128,
        ))  # fmt: skip
    attn.decode = "auto"
    assert attn.crossover_tokens() == pytest.approx(512 * 256 / 768)  # ~171 tokens for DeepSeek-V2-Lite
    assert attn._path(1) == "absorbed" and attn._path(170) == "absorbed" and attn._path(171) == "naive"


def test_decode_path_is_checked():
    model = CausalLM(mla_config())
    with pytest.raises(ConfigError, match="naive, absorbed, auto; found 'fast'"):
        set_decode_path(model, "fast")
    with pytest.raises(ConfigError, match="no MLA layers"):
        set_decode_path(CausalLM(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, ffn_dim=48)), "absorbed")
    assert set_decode_path(model, "absorbed") == "naive"
    assert {b.attn.decode for b in model.blocks} == {"absorbed"}


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


@pytest.mark.parametrize("case", sorted(CASES))
def test_bfloat16_logits_match_transformers_eager_attention(case, tmp_path):
    """DeepSeek-V2 rotates its interleaved pairs in float32 and casts back; tinyslm must too.

    Measured bit-identical; the bound (1e-3 of the logit scale) is far below the bfloat16 rounding
    a bfloat16 rotation would add (~1e-2 here).
    """
    transformers = pytest.importorskip("transformers")
    write_hf_checkpoint(tmp_path, "DeepseekV2Config", perturb="resample", **CASES[case])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.bfloat16, attn_implementation="eager"
    ).eval()
    ours = tinyslm.load_pretrained(tmp_path, dtype=torch.bfloat16)
    for path in ("naive", "absorbed"):
        with decode_path(ours, path), torch.no_grad():
            a, b = ours(PROMPT).float(), theirs(PROMPT).logits.float()
        limit = 1e-3 if path == "naive" else 5e-2  # absorbed reorders the bf16 matmuls (measured 0.9-1.9e-2)
        assert (a - b).abs().max() <= limit * b.abs().max(), f"{path}: bf16 diff {(a - b).abs().max():.3e}"
