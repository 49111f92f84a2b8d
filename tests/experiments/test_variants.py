"""The attention-variant toolkit (tinyslm/tools/variants.py, and tools/attention_costs.py for what each costs): derived configs build, run, and cost what it claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tinyslm
from tinyslm import CausalLM, ConfigError, ModelConfig
from tinyslm.tools.attention_costs import compare_attention, format_compare_attention, parse_contexts
from tinyslm.tools.variants import attention_variants, default_gqa_kv_heads, derive

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ModelConfig(name="tiny", vocab_size=96, dim=64, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=160,
                   max_seq_len=128, tie_embeddings=True)  # fmt: skip
LITE_DENSE = ModelConfig(  # DeepSeek-V2-Lite's attention and sizes, every layer dense (huggingface.co/deepseek-ai/DeepSeek-V2-Lite config.json)
    name="deepseek-v2-lite-dense", family="deepseek_v2", attention="mla", vocab_size=102400, dim=2048, n_layers=27,
    n_heads=16, head_dim=192, ffn_dim=10944, max_seq_len=163840, kv_lora_rank=512, qk_nope_head_dim=128,
    qk_rope_head_dim=64, v_head_dim=128, rope_layout="interleaved", norm_eps=1e-6,
)  # fmt: skip
CONTEXTS = [16, 64]


def built(config: ModelConfig) -> CausalLM:
    return CausalLM(config).init_weights(seed=0).eval()


def attention_params(model: CausalLM) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if ".attn." in name)


@pytest.mark.parametrize("mode", ["same_heads", "matched_budget"])
def test_each_variant_builds_runs_and_has_the_claimed_costs(mode):
    result = compare_attention(TINY, CONTEXTS, mode=mode, dtype="bfloat16")
    configs = attention_variants(TINY, mode=mode)
    assert [v["name"] for v in result["variants"]] == list(configs) == ["mha", "gqa4", "gqa2", "mqa", "mla"]
    for claimed in result["variants"]:
        model = built(configs[claimed["name"]])
        assert sum(p.numel() for p in model.parameters()) == claimed["parameters"]  # distinct: tied head once
        assert attention_params(model) == claimed["attention_parameters"]
        for at in claimed["at_context"]:  # the cache the model really allocates, in bfloat16
            assert model.new_cache(1, at["context"], torch.bfloat16).nbytes == at["cache_bytes"]
        out = tinyslm.generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4)
        assert out.shape == (1, 7)


def test_same_heads_variants_change_only_the_attention():
    attention_fields = {"name", "attention", "n_kv_heads", "head_dim", "q_lora_rank", "kv_lora_rank",
                        "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "partial_rotary_factor"}  # fmt: skip
    for config in attention_variants(TINY).values():
        changed = {k for k, v in config.to_dict().items() if v != TINY.to_dict()[k]}
        assert changed <= attention_fields
        assert config.n_heads == TINY.n_heads


@pytest.mark.parametrize("base", ["tiny", "smollm-135m", "qwen2.5-0.5b", "deepseek-v2-lite-dense"])
def test_matched_budget_variants_are_within_2_percent_of_the_base(base):
    config = {"tiny": TINY, "deepseek-v2-lite-dense": LITE_DENSE}.get(base)
    config = config or ModelConfig.from_toml(CONFIGS / f"{base}.toml")
    result = compare_attention(config, [2048], mode="matched_budget")
    for v in result["variants"]:
        assert abs(v["parameters"] - result["base_parameters"]) <= 0.02 * result["base_parameters"], v["name"]


def test_mla_cache_is_smaller_than_the_gqa_cache_by_the_expected_factor():
    gqa, mla = derive(TINY, "gqa", n_kv_heads=4), derive(TINY, "mla")
    context, report = 64, compare_attention(TINY, [64], gqa_kv_heads=[4])
    claimed = {v["name"]: v["at_context"][0]["cache_bytes"] for v in report["variants"]}
    caches = {name: built(cfg).new_cache(1, context, torch.bfloat16) for name, cfg in (("gqa4", gqa), ("mla", mla))}
    assert {name: c.nbytes for name, c in caches.items()} == {name: claimed[name] for name in caches}
    # GQA stores K and V for K=4 heads of hd=8; MLA one latent r=4*hd plus one RoPE key dr=hd/2 (DeepSeek-V2's rule),
    # i.e. as much as GQA with 2.25 KV heads: smaller than any GQA with K >= 3
    assert (mla.kv_lora_rank, mla.qk_rope_head_dim) == (32, 4)
    assert caches["gqa4"].nbytes / caches["mla"].nbytes == (2 * 4 * 8) / (32 + 4) > 1
    assert caches["mla"].nbytes == 2 * context * (32 + 4) * 2  # layers x positions x values x bf16 bytes


def test_compare_attention_on_smollm_135m_shows_the_known_factors():
    result = compare_attention(CONFIGS / "smollm-135m.toml", [2048, 32768])
    rows = {v["name"]: v for v in result["variants"]}
    assert result["base_variant"] == "gqa3" and [n for n, v in rows.items() if v["is_base"]] == ["gqa3"]
    assert rows["gqa3"]["parameters"] == 134_515_008  # SmolLM-135M, transformers 5.23 meta-device count
    assert rows["gqa3"]["kv_bytes_per_token"] == 23_040  # section 5: 2 x 30 x 3 x 64 x 2
    reductions = {name: v["cache_reduction_vs_mha"] for name, v in rows.items()}
    assert reductions == {"mha": 1, "gqa3": 3, "mqa": 9, "mla": (2 * 9 * 64) / (256 + 32)}  # H/K, H, 2*H*hd/(r+dr)
    for v in rows.values():  # the survey's point: the longer the context, the more of memory is cache
        short, long = v["at_context"]
        assert long["cache_share"] > short["cache_share"]
    assert rows["mha"]["at_context"][1]["cache_share"] > 0.5  # MHA at 32k: the cache outweighs the weights
    json.dumps(result)  # JSON-able as it is
    text = format_compare_attention(result)
    assert "gqa3 *" in text and "cache @32,768" in text and "9 q / 1 kv head x 64" in text
    assert format_compare_attention(compare_attention(CONFIGS / "smollm-135m.toml", [2048, 32768])) == text


def test_an_mla_base_reports_the_compressed_cache():
    result = compare_attention(LITE_DENSE, [4096], mode="matched_budget")
    assert result["base_variant"] == "mla"
    rows = {v["name"]: v for v in result["variants"]}
    assert rows["mla"]["is_base"] and rows["mla"]["kv_bytes_per_token"] == 31_104  # 27 layers x (512 + 64) x 2 B
    assert rows["mha"]["kv_bytes_per_token"] == 27 * 2 * 16 * 128 * 2  # 16 heads of v_head_dim
    assert derive(LITE_DENSE, "gqa", n_kv_heads=4).head_dim == 128


def test_default_gqa_kv_heads():
    assert default_gqa_kv_heads(TINY) == [4, 2]
    assert default_gqa_kv_heads(ModelConfig.from_toml(CONFIGS / "smollm-135m.toml")) == [3]  # H = 9: only its own K
    assert default_gqa_kv_heads(TINY.replace(n_kv_heads=8)) == [4, 2]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: derive(TINY, "gqa", n_kv_heads=3), "n_kv_heads dividing every layer's head count"),
        (lambda: derive(TINY, "gqa"), "found None"),
        (lambda: derive(TINY, "sparse"), "must be one of mha, gqa, mqa, mla; found 'sparse'"),
        (lambda: derive(TINY, "mha", mode="matched"), "same_heads, matched_budget; found 'matched'"),
        (lambda: derive(TINY, "mla", mla={"kv_rank": 8}), "unknown key"),
        (lambda: derive(TINY, "mla", mla={"qk_rope_head_dim": 5}), "qk_rope_head_dim must be even"),
        (lambda: derive(TINY.replace(layer_n_heads=[8, 4], layer_n_kv_heads=[2, 2]), "mla"), "layer_n_heads is set"),
        (lambda: derive(TINY.replace(n_kv_heads=1, ffn_dim=8), "mha", mode="matched_budget"), "FFN width of"),
        (lambda: compare_attention(TINY, [2048, 0]), "positive integers"),
        (lambda: parse_contexts("2048,32k"), "comma-separated positive integers"),
    ],
)
def test_bad_requests_are_config_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_parse_contexts():
    assert parse_contexts("2048,32768") == [2048, 32768]
    assert parse_contexts(" 128 ") == [128]


def test_per_layer_heads_keep_their_layout():
    base = TINY.replace(layer_n_heads=[8, 4], layer_n_kv_heads=[2, 2])
    assert derive(base, "mha").layer_n_kv_heads == (8, 4)
    assert derive(base, "mqa").layer_n_kv_heads == (1, 1)
    assert derive(base, "gqa", n_kv_heads=4).layer_n_kv_heads == (4, 4)
    model = built(derive(base, "gqa", n_kv_heads=2, mode="matched_budget"))
    assert model(torch.tensor([[1, 2]])).shape == (1, 2, 96)
