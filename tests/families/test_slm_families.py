"""The parameter-efficient SLM families beyond parity: OpenELM's layer-wise scaling, MobileLLM's and MobiLlama's
sharing, their published parameter counts, what the loader refuses, sharing in training, and `inspect`.

Parity with a reference assembled from transformers' own modules (these families ship remote code) is
tests/families/test_parity.py's, over the cases in tests/family_cases/openelm.py, mobilellm.py, mobillama.py and
minicpm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from family_cases.mobillama import mobillama_reference
from family_cases.openelm import OPENELM_270M, TINY_OPENELM, openelm_checkpoint
from hf_models import write_folder
from safetensors.torch import save_file

import tinyslm
from tinyslm.cli import main
from tinyslm.errors import CheckpointError, ConfigError
from tinyslm.layerwise import openelm_layer_sizes
from tinyslm.tools.stats import model_stats

transformers = pytest.importorskip("transformers")

VOCAB = 96


# --------------------------------------------------------------------------------------------------------
# OpenELM: layer-wise scaling


def test_openelm_sizes_equal_the_published_ones():
    # OpenELM-270M and -450M: Apple's OpenELM_CONFIGS presets (1280 / 1536 wide, head_dim 64, 16 / 20 layers,
    # qkv 0.5..1.0, ffn 0.5..4.0, 4 groups, divisor 256); the sizes their config.json files hold
    published = {
        (1280, 16): ([12] * 5 + [16] * 7 + [20] * 4, [3] * 5 + [4] * 7 + [5] * 4,
                     [768, 1024, 1280, 1536, 1792, 2048, 2560, 2816, 3072, 3328, 3584, 3840, 4352, 4608, 4864, 5120]),
        (1536, 20): ([12] * 3 + [16] * 7 + [20] * 6 + [24] * 4, [3] * 3 + [4] * 7 + [5] * 6 + [6] * 4,
                     [768, 1024, 1280, 1536, 1792, 2304, 2560, 2816, 3072, 3328, 3584, 3840, 4096, 4352, 4608, 5120,
                      5376, 5632, 5888, 6144]),
    }  # fmt: skip
    for (dim, layers), (heads, kv, ffn) in published.items():
        sizes = openelm_layer_sizes(dim=dim, head_dim=64, n_layers=layers, qkv_multipliers=[0.5, 1.0],
                                    ffn_multipliers=[0.5, 4.0], gqa_groups=4, ffn_divisor=256)  # fmt: skip
        assert sizes == {"layer_n_heads": heads, "layer_n_kv_heads": kv, "layer_ffn_dim": ffn}


def test_openelm_270m_counts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OPENELM_270M))
    stats = model_stats(tinyslm.load_config(tmp_path))
    assert stats.parameters == 271_527_168  # the published 270M; HF meta-device count of Apple's code
    assert stats.kv_cache_bytes_per_token == 16_128  # sum over layers of 2 x kv_l x 64 x 2 bytes


def test_openelm_qkv_of_the_wrong_size_names_the_layer(tmp_path):
    t = openelm_checkpoint(tmp_path, TINY_OPENELM)
    t["transformer.layers.2.attn.qkv_proj.weight"] = t["transformer.layers.2.attn.qkv_proj.weight"][:-16]
    save_file(t, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"layers\.2\.attn\.qkv_proj"):
        tinyslm.load_pretrained(tmp_path)


# --------------------------------------------------------------------------------------------------------
# MobileLLM: embedding sharing and the immediate block repeat


MOBILELLM = dict(model_type="mobilellm", vocab_size=32000, max_position_embeddings=2048, rope_theta=10000.0,
                 rms_norm_eps=1e-5, share_embedding=True, tie_word_embeddings=False, layer_sharing=False)  # fmt: skip


@pytest.mark.parametrize(
    "sizes, published",
    [
        (dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3),
         124_635_456),  # MobileLLM-125M (card: 124.6M)
        (dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5),
         345_355_200),  # MobileLLM-350M (card: 345.3M)
    ],
)  # fmt: skip
@pytest.mark.parametrize("layer_sharing", [False, True])
def test_mobilellm_counts(tmp_path, sizes, published, layer_sharing):
    (tmp_path / "config.json").write_text(json.dumps({**MOBILELLM, **sizes, "layer_sharing": layer_sharing}))
    stats = model_stats(tinyslm.load_config(tmp_path))
    assert stats.parameters == published  # layer sharing adds depth, not parameters
    assert stats.effective_depth == sizes["num_hidden_layers"] * (2 if layer_sharing else 1)


# --------------------------------------------------------------------------------------------------------
# MobiLlama: one FFN shared by every block


def test_mobillama_refuses_separate_ffns(tmp_path):
    hf, cfg = mobillama_reference()
    tensors = dict(hf.state_dict())
    tensors["model.layers.2.mlp.up_proj.weight"] = tensors["model.layers.2.mlp.up_proj.weight"] + 1
    write_folder(tmp_path, cfg, tensors)
    with pytest.raises(CheckpointError, match=r"model\.layers\.2\.mlp\.up_proj\.weight.*differs"):
        tinyslm.load_pretrained(tmp_path)


def test_mobillama_05b_count(tmp_path):
    # MobiLlama-0.5B (paper: hidden 2048, 22 layers, MLP 5632, 32 heads; one shared MLP; MHA as its code runs it)
    cfg = dict(model_type="llama", architectures=["MobiLlamaForCausalLM"], vocab_size=32000, hidden_size=2048,
               intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4)  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    stats = model_stats(tinyslm.load_config(tmp_path))
    assert stats.parameters == 534_865_920  # "0.5B"; 22 unshared MLPs would make it 1.26B
    assert stats.executed_parameters == 534_865_920 + 21 * 3 * 2048 * 5632


# --------------------------------------------------------------------------------------------------------
# Sharing is real: counted once, one Parameter, one update with the summed gradient


def test_shared_parameters_are_updated_once_with_the_summed_gradient():
    config = tinyslm.ModelConfig(vocab_size=VOCAB, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=48,
                                 shared_ffn=True, block_schedule=[0, 1, 1, 2, 0])  # fmt: skip
    model = tinyslm.CausalLM(config).init_weights(seed=0)
    assert sum(p.numel() for p in model.parameters()) == model_stats(config).parameters
    # the same network unrolled: five blocks, each a separate copy of the stored block its step runs
    unrolled = tinyslm.CausalLM(config.replace(n_layers=5, shared_ffn=False, block_schedule=None))
    unrolled.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}, strict=False)
    for step, block in enumerate(config.schedule()):
        unrolled.blocks[step].load_state_dict(model.blocks[block].state_dict())
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    for m in (model, unrolled):
        torch.nn.functional.cross_entropy(m(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
    shared = model.blocks[0].ffn.up.weight
    summed = sum(b.ffn.up.weight.grad for b in unrolled.blocks)  # the FFN is used at all five steps
    torch.testing.assert_close(shared.grad, summed, rtol=1e-5, atol=1e-7)
    attn_summed = unrolled.blocks[1].attn.wq.weight.grad + unrolled.blocks[2].attn.wq.weight.grad  # block 1 runs twice
    torch.testing.assert_close(model.blocks[1].attn.wq.weight.grad, attn_summed, rtol=1e-5, atol=1e-7)
    before = shared.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    torch.testing.assert_close(shared.detach(), before - 0.1 * summed, rtol=1e-5, atol=1e-7)
    assert model.blocks[2].ffn.up.weight is shared  # still one Parameter after the step


# --------------------------------------------------------------------------------------------------------
# inspect: stored vs executed parameters, depth, FLOPs, the per-layer table


def test_inspect_flops_equal_torch_flop_counter():
    """FLOPs per token at a context = what torch's FlopCounterMode counts for one cached decode step."""
    from torch.utils.flop_counter import FlopCounterMode

    config = tinyslm.ModelConfig(vocab_size=VOCAB, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=96,
                                 block_schedule=[0, 1, 1, 2], layer_ffn_dim=[96, 64, 128])  # fmt: skip
    model = tinyslm.CausalLM(config).init_weights(seed=0)
    context = 20
    cache = model.new_cache(1, context + 1)
    with torch.no_grad():
        model(torch.zeros(1, context, dtype=torch.long), cache)
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 1, dtype=torch.long), cache)  # the token at position `context`: context + 1 keys
    assert model_stats(config, context=context + 1).flops_per_token == counter.get_total_flops()


@pytest.mark.parametrize(
    "config, line",
    [
        ("smollm-135m", None),  # tied head, no sharing: executed would only count the embedding twice, so no line
        ("tinyllama-1.1b", None),  # untied, no sharing: the same as the stored count
        ("mobilellm-125m-layer-share", "each run of a shared block counted, the tied embedding again as the head"),
        ("mobillama-0.5b", "the shared FFN counted in every block"),
    ],
)
def test_inspect_shows_executed_parameters_only_where_blocks_are_shared(config, line, capsys):
    """`executed parameters` (each use of a weight per token) is printed where block sharing makes it exceed the
    stored count, naming why; a tied head alone (stored once, used twice) is no reason for the line."""
    path = Path(__file__).resolve().parents[2] / "configs" / f"{config}.toml"
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    executed = [row for row in out.splitlines() if row.startswith("executed parameters")]
    assert executed == ([] if line is None else [executed[0]]) and (line is None or executed[0].endswith(f"{line})"))
    stats = model_stats(tinyslm.ModelConfig.from_toml(path))
    assert (stats.executed_parameters > stats.parameters) == (line is not None or stats.tied_head)  # still in --json


def test_inspect_prints_the_per_layer_table(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(OPENELM_270M))
    assert main(["inspect", str(tmp_path), "--context", "2048"]) == 0
    out = capsys.readouterr().out
    assert "271,527,168" in out and "effective depth           16 steps over 16 stored blocks" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("     ") and line.split()[0].isdigit()]
    assert [int(r[2]) for r in rows] == [12] * 5 + [16] * 7 + [20] * 4  # query heads per layer
    assert [int(r[4]) for r in rows][-1] == 5120
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stored_blocks"] == 16 and len(report["layers"]) == 16
    assert sum(r["kv_values_per_token"] * 2 for r in report["layers"]) == report["kv_cache_bytes_per_token"]


# --------------------------------------------------------------------------------------------------------
# configs: layer_scaling tables and sharing schedules, and their errors


def test_layer_scaling_table_in_a_toml(tmp_path):
    path = tmp_path / "elm.toml"
    path.write_text('dim = 1280\nn_layers = 16\nhead_dim = 64\nvocab_size = 32000\ntie_embeddings = true\n'
                    'qk_norm = true\nnorm_eps = 1e-6\n[layer_scaling]\nqkv_multipliers = [0.5, 1.0]\n'
                    'ffn_multipliers = [0.5, 4.0]\ngqa_groups = 4\nffn_divisor = 256\n')  # fmt: skip
    config = tinyslm.ModelConfig.from_toml(path)
    assert model_stats(config).parameters == 271_527_168  # OpenELM-270M again, from the rule


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(block_schedule=[0, 1, 4]), r"block_schedule step 2 runs block 4, but the model stores blocks 0\.\.2"),
        (dict(block_schedule=[0, 0, 1]), r"never runs stored block\(s\) \[2\]"),
        (dict(layer_ffn_dim=[48, 48]), r"layer_ffn_dim has 2 entries, expected one per layer \(3\)"),
        (dict(layer_n_heads=[4, 6, 4], layer_n_kv_heads=[2, 4, 2]), r"layer 1: n_heads=6 must be a positive multiple "
                                                                     r"of n_kv_heads=4"),
        (dict(shared_ffn=True, layer_ffn_dim=[48, 64, 48]), r"shared_ffn uses one FFN in every block"),
        (dict(block_sharing="immediate", block_schedule=[0, 1, 2]), r"give block_schedule or block_sharing"),
    ],
)  # fmt: skip
def test_bad_sharing_and_scaling_configs(fields, message):
    with pytest.raises(ConfigError, match=message):
        tinyslm.ModelConfig(vocab_size=VOCAB, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=48, **fields)
