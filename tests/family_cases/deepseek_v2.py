"""deepseek_v2: MLA (tinyslm/layers/mla.py) with shrunken DeepSeek-V2-Lite shapes (hf_models.DEEPSEEK_V2_LITE_TINY:
r = 4 dn, dr = dn / 2, v_head_dim != qk_nope_head_dim), every layer dense (first_k_dense_replace =
num_hidden_layers; transformers 5.23 rejects n_routed_experts=None).

Every parameter is resampled, not nudged (perturb="resample"): the tolerances were tuned on that distribution.
Every check runs on each decode path: "naive" (expand the latent into per-head K and V), "absorbed" (fold wkv_b
into the query and the output) and "auto" (absorbed for short steps, naive for long prefills).

bf16: DeepSeek-V2 rotates its interleaved pairs in float32 and casts back; tinyslm must too. Measured
bit-identical on the naive path; the bound (1e-3 of the logit scale) is far below the bfloat16 rounding a
bfloat16 rotation would add (~1e-2 here). The absorbed path reorders the bf16 matmuls (measured 0.9-1.9e-2).
"""

import pytest

from . import Case

from hf_models import DEEPSEEK_V2_LITE_TINY  # isort: skip

LITE_YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=40.0, original_max_position_embeddings=64,
                 beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707)  # fmt: skip
PATHS = ("naive", "absorbed", "auto")
BF16 = {"naive": 1e-3, "absorbed": 5e-2}  # see above


def mla_layer_matches(model, hf_model) -> None:
    """The interleaved RoPE layout, the softmax scale (YaRN's mscale included) and the norms' eps are DeepSeek's."""
    assert model.config.rope_layout == "interleaved"
    hf_attn, attn = hf_model.model.layers[0].self_attn, model.blocks[0].attn
    assert attn.scale == pytest.approx(hf_attn.scaling, rel=1e-12)
    assert attn.kv_norm.eps == hf_attn.kv_a_layernorm.variance_epsilon == 1e-6  # not rms_norm_eps
    if hf_attn.q_a_layernorm is not None:
        assert attn.q_norm.eps == hf_attn.q_a_layernorm.variance_epsilon


def mla_case(**hparams) -> Case:
    return Case("DeepseekV2Config", dict(DEEPSEEK_V2_LITE_TINY, **hparams), prompt=7, perturb="resample",
                decode_paths=PATHS, bf16_tolerance=BF16, expect=mla_layer_matches)  # fmt: skip


CASES = {
    # q_lora_rank null (V2-Lite), YaRN with mscale == mscale_all_dim: cos/sin unscaled, softmax scale * mscale^2
    "deepseek-v2-lite-yarn": mla_case(rope_parameters=LITE_YARN),
    # query LoRA (V2 / MiniCPM3 style), plain RoPE, attention and MLP biases
    "deepseek-v2-q-lora-bias": mla_case(q_lora_rank=24, attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5),
    # query LoRA + YaRN with mscale != mscale_all_dim: cos/sin scaled too
    "deepseek-v2-q-lora-yarn": mla_case(q_lora_rank=24, max_position_embeddings=256,
                                        rope_parameters=dict(rope_type="yarn", rope_theta=5000.0, factor=8.0,
                                                             original_max_position_embeddings=32, mscale=1.0,
                                                             mscale_all_dim=0.5)),
}  # fmt: skip
