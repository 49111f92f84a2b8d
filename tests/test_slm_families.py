"""The parameter-efficient SLM families, each against a reference assembled from transformers' own code.

OpenELM, MobileLLM and MobiLlama ship remote code (no transformers class), and MiniCPM 1B/2B's
scalings live in remote code too, so each reference is built from transformers' own modules, with
the weights a test writes in the model's real checkpoint layout:

    OpenELM    one Qwen3DecoderLayer per layer, each with its own config (the layer's heads and FFN
               width; Qwen3's per-head q/k RMSNorm before RoPE is OpenELM's), Qwen3's rotary
               embedding and RMSNorm, an nn.Embedding and the tied head
    MobileLLM  LlamaForCausalLM with tied embeddings; the layer-share form against a Llama of twice
               the depth whose layers 2i and 2i+1 hold the same weights
    MobiLlama  a Llama (MHA) whose layers all hold copies of the one FFN
    MiniCPM    Llama's own decoder-layer modules with MiniCPM's three scalings applied where its code
               applies them (embedding x scale_emb, each branch x scale_depth/sqrt(L), head input /
               (hidden/dim_model_base))

Everything is float32 and eager; logits agree within 1e-5 of their scale and 16 greedy tokens match.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tinyslm
from tinyslm.cli import main
from tinyslm.errors import CheckpointError, ConfigError
from tinyslm.layerwise import openelm_layer_sizes
from tinyslm.tools.stats import model_stats

transformers = pytest.importorskip("transformers")

TOL = 1e-5
VOCAB = 96
PROMPT = torch.tensor([[3, 17, 42, 8, 91, 5, 60, 33, 2, 77, 14]])


def causal_mask(t: int) -> torch.Tensor:
    """(1, 1, T, T) additive mask: what transformers' eager attention adds to the scores."""
    mask = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)
    return mask[None, None]


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    err = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    assert err < TOL, f"max |ours - theirs| / max |theirs| = {err:.2e}"


def greedy(forward, ids: torch.Tensor, n: int = 16) -> list[int]:
    """Greedy decoding by full recomputation: the reference needs no cache."""
    for _ in range(n):
        ids = torch.cat([ids, forward(ids)[:, -1:].argmax(-1)], dim=1)
    return ids[0, -n:].tolist()


def check_model(folder: Path, reference) -> tinyslm.CausalLM:
    """Logits, 16 greedy tokens, and cached decoding == recomputation, for the folder against `reference`."""
    model = tinyslm.load_pretrained(folder)
    with torch.no_grad():
        assert_close(model(PROMPT), reference(PROMPT))
        ours = tinyslm.generate(model, PROMPT, max_new_tokens=16)[0, -16:].tolist()  # with the KV cache
        assert ours == greedy(reference, PROMPT)
        assert ours == greedy(model, PROMPT)  # cached decoding == full recomputation, token for token
    return model


def write_folder(folder: Path, config: dict, tensors: dict[str, torch.Tensor], legacy: bool = False) -> Path:
    """config.json (in the Hub's legacy form, rope_theta at the top level, with legacy=True) + model.safetensors."""
    from hf_models import to_legacy_config

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if legacy:
        to_legacy_config(folder)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors")
    return folder


FORMS = pytest.mark.parametrize("legacy", [False, True], ids=["config-5.x", "config-legacy"])


def random_llama(seed: int = 0, **hparams):
    from hf_models import build_hf_model

    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5)  # fmt: skip
    return build_hf_model("LlamaConfig", seed, attn_implementation="eager", **{**base, **hparams})


def logits_of(hf_model):
    return lambda ids: hf_model(ids).logits


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


OPENELM_270M = dict(
    model_type="openelm", model_dim=1280, head_dim=64, num_transformer_layers=16, num_gqa_groups=4,
    qkv_multipliers=[0.5, 1.0],
    ffn_multipliers=[0.5, 0.73, 0.97, 1.2, 1.43, 1.67, 1.9, 2.13, 2.37, 2.6, 2.83, 3.07, 3.3, 3.53, 3.77, 4.0],
    ffn_dim_divisor=256, ffn_with_glu=True, activation_fn_name="swish", normalization_layer_name="rms_norm",
    normalize_qk_projections=True, share_input_output_layers=True, vocab_size=32000, max_context_length=2048,
    rope_freq_constant=10000, rope_max_length=4096, bos_token_id=1, eos_token_id=2,
)  # fmt: skip  (huggingface.co/apple/OpenELM-270M config.json)


def test_openelm_270m_counts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OPENELM_270M))
    stats = model_stats(tinyslm.load_config(tmp_path))
    assert stats.parameters == 271_527_168  # the published 270M; HF meta-device count of Apple's code
    assert stats.kv_cache_bytes_per_token == 16_128  # sum over layers of 2 x kv_l x 64 x 2 bytes


# a tiny OpenELM: 4 layers, widths from the rule: multipliers 0.5, 0.67, 0.83, 1.0 x 128 rounded to
# multiples of 16 x 2 groups -> 64, 96, 96, 128 query dims: 4, 6, 6, 8 heads
TINY_OPENELM = dict(OPENELM_270M, model_dim=128, head_dim=16, num_transformer_layers=4, num_gqa_groups=2,
                    qkv_multipliers=[0.5, 1.0], ffn_multipliers=[0.5, 4.0], ffn_dim_divisor=32, vocab_size=VOCAB,
                    max_context_length=64)  # fmt: skip


def openelm_checkpoint(folder: Path, hf_config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in Apple's layout (qkv rows [q | k | v], proj_1 rows [gate | up]) for `hf_config`."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: 0.15 * torch.randn(*shape, generator=gen)  # noqa: E731
    one = lambda n: 1 + 0.2 * torch.randn(n, generator=gen)  # noqa: E731
    dim, hd, n = hf_config["model_dim"], hf_config["head_dim"], hf_config["num_transformer_layers"]
    sizes = openelm_layer_sizes(dim=dim, head_dim=hd, n_layers=n, qkv_multipliers=hf_config["qkv_multipliers"],
                                ffn_multipliers=hf_config["ffn_multipliers"], gqa_groups=hf_config["num_gqa_groups"],
                                ffn_divisor=hf_config["ffn_dim_divisor"])  # fmt: skip
    t = {"transformer.token_embeddings.weight": rnd(hf_config["vocab_size"], dim), "transformer.norm.weight": one(dim)}
    for i in range(n):
        q, kv, f = sizes["layer_n_heads"][i], sizes["layer_n_kv_heads"][i], sizes["layer_ffn_dim"][i]
        p = f"transformer.layers.{i}."
        t |= {
            p + "attn_norm.weight": one(dim), p + "ffn_norm.weight": one(dim),
            p + "attn.qkv_proj.weight": rnd((q + 2 * kv) * hd, dim), p + "attn.out_proj.weight": rnd(dim, q * hd),
            p + "attn.q_norm.weight": one(hd), p + "attn.k_norm.weight": one(hd),
            p + "ffn.proj_1.weight": rnd(2 * f, dim), p + "ffn.proj_2.weight": rnd(dim, f),
        }  # fmt: skip
    write_folder(folder, hf_config, t)
    return t


def openelm_reference(hf_config: dict, t: dict[str, torch.Tensor]):
    """OpenELM's forward from transformers' Qwen3 modules, one config per layer, the weights split by hand."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm, Qwen3RotaryEmbedding

    dim, hd, n = hf_config["model_dim"], hf_config["head_dim"], hf_config["num_transformer_layers"]
    sizes = openelm_layer_sizes(dim=dim, head_dim=hd, n_layers=n, qkv_multipliers=hf_config["qkv_multipliers"],
                                ffn_multipliers=hf_config["ffn_multipliers"], gqa_groups=hf_config["num_gqa_groups"],
                                ffn_divisor=hf_config["ffn_dim_divisor"])  # fmt: skip
    layers = []
    for i in range(n):
        q, kv, f = sizes["layer_n_heads"][i], sizes["layer_n_kv_heads"][i], sizes["layer_ffn_dim"][i]
        config = transformers.Qwen3Config(
            vocab_size=hf_config["vocab_size"], hidden_size=dim, intermediate_size=f, num_attention_heads=q,
            num_key_value_heads=kv, head_dim=hd, rms_norm_eps=1e-6, num_hidden_layers=n,
            rope_parameters={"rope_type": "default", "rope_theta": float(hf_config["rope_freq_constant"])},
            attn_implementation="eager",
        )  # fmt: skip
        layer = Qwen3DecoderLayer(config, i).eval()
        p = f"transformer.layers.{i}."
        wq, wk, wv = t[p + "attn.qkv_proj.weight"].split([q * hd, kv * hd, kv * hd])
        gate, up = t[p + "ffn.proj_1.weight"].chunk(2)
        layer.load_state_dict({
            "self_attn.q_proj.weight": wq, "self_attn.k_proj.weight": wk, "self_attn.v_proj.weight": wv,
            "self_attn.o_proj.weight": t[p + "attn.out_proj.weight"],
            "self_attn.q_norm.weight": t[p + "attn.q_norm.weight"], "self_attn.k_norm.weight": t[p + "attn.k_norm.weight"],
            "mlp.gate_proj.weight": gate, "mlp.up_proj.weight": up, "mlp.down_proj.weight": t[p + "ffn.proj_2.weight"],
            "input_layernorm.weight": t[p + "attn_norm.weight"], "post_attention_layernorm.weight": t[p + "ffn_norm.weight"],
        })  # fmt: skip
        layers.append(layer)
    rotary = Qwen3RotaryEmbedding(layers[0].self_attn.config)
    norm = Qwen3RMSNorm(dim, eps=1e-6)
    norm.weight.data.copy_(t["transformer.norm.weight"])
    emb = t["transformer.token_embeddings.weight"]

    @torch.no_grad()
    def forward(ids: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.embedding(ids, emb)
        positions = torch.arange(ids.shape[1])[None]
        cos_sin = rotary(h, positions)
        for layer in layers:
            h = layer(h, attention_mask=causal_mask(ids.shape[1]), position_ids=positions, position_embeddings=cos_sin)
        return torch.nn.functional.linear(norm(h), emb)  # the head is the embedding (share_input_output_layers)

    return forward


def test_openelm_matches_qwen3_layers(tmp_path):
    t = openelm_checkpoint(tmp_path, TINY_OPENELM)
    model = check_model(tmp_path, openelm_reference(TINY_OPENELM, t))
    heads = [model.blocks[i].attn.n_heads for i in range(4)]
    assert heads == [4, 6, 6, 8] and model.head.weight is model.tok_emb.weight  # scaled widths, shared head


def test_openelm_saves_and_reloads(tmp_path):
    openelm_checkpoint(tmp_path / "a", TINY_OPENELM)
    model = tinyslm.load_pretrained(tmp_path / "a")
    tinyslm.save_pretrained(model, tmp_path / "b")
    again = tinyslm.load_pretrained(tmp_path / "b")
    assert again.config.layer_n_heads == model.config.layer_n_heads
    assert again.config.layer_ffn_dim == model.config.layer_ffn_dim
    with torch.no_grad():
        assert torch.equal(again(PROMPT), model(PROMPT))


def test_openelm_qkv_of_the_wrong_size_names_the_layer(tmp_path):
    t = openelm_checkpoint(tmp_path, TINY_OPENELM)
    t["transformer.layers.2.attn.qkv_proj.weight"] = t["transformer.layers.2.attn.qkv_proj.weight"][:-16]
    save_file(t, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"layers\.2\.attn\.qkv_proj"):
        tinyslm.load_pretrained(tmp_path)


# --------------------------------------------------------------------------------------------------------
# MobileLLM: embedding sharing and the immediate block repeat


def mobilellm_config(hf_model, layer_sharing: bool) -> dict:
    cfg = hf_model.config.to_dict()
    cfg.update(model_type="mobilellm", architectures=["MobileLLMForCausalLM"], share_embedding=True,
               tie_word_embeddings=False, layer_sharing=layer_sharing)  # fmt: skip
    return cfg


@FORMS
def test_mobilellm_matches_tied_llama(tmp_path, legacy):
    hf = random_llama(tie_word_embeddings=True)
    tensors = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}  # MobileLLM stores no head
    write_folder(tmp_path, mobilellm_config(hf, layer_sharing=False), tensors, legacy)
    model = check_model(tmp_path, logits_of(hf))
    assert model.head.weight is model.tok_emb.weight


@FORMS
def test_mobilellm_layer_share_matches_a_llama_of_twice_the_depth(tmp_path, legacy):
    deep = random_llama(num_hidden_layers=6, tie_word_embeddings=True)
    for i in range(0, 6, 2):  # layers 2i and 2i+1 hold the same weights
        deep.model.layers[i + 1].load_state_dict(deep.model.layers[i].state_dict())
    tensors = {}
    for key, value in deep.state_dict().items():
        if key == "lm_head.weight":
            continue
        if key.startswith("model.layers."):
            index = int(key.split(".")[2])
            if index % 2:
                continue
            key = key.replace(f"model.layers.{index}.", f"model.layers.{index // 2}.")
        tensors[key] = value
    cfg = mobilellm_config(deep, layer_sharing=True)
    cfg["num_hidden_layers"] = 3
    write_folder(tmp_path, cfg, tensors, legacy)
    model = check_model(tmp_path, logits_of(deep))
    assert len(model.blocks) == 3 and model.config.schedule() == [0, 0, 1, 1, 2, 2]
    cache = model.new_cache(1, 8)
    assert len(cache.layers) == 6  # one KV slot per depth step, not per stored block


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


def mobillama_reference(layers: int = 4):
    hf = random_llama(num_hidden_layers=layers, num_key_value_heads=4)  # MHA: MobiLlama's attention
    for layer in hf.model.layers[1:]:
        layer.mlp.load_state_dict(hf.model.layers[0].mlp.state_dict())  # copies of the one FFN
    cfg = hf.config.to_dict()
    cfg.update(architectures=["MobiLlamaForCausalLM"], num_key_value_heads=2)  # the hub configs' ignored kv count
    return hf, cfg


@FORMS
@pytest.mark.parametrize("stored", ["layer 0 only", "every layer"])
def test_mobillama_matches_llama_with_copied_ffn(tmp_path, stored, legacy):
    hf, cfg = mobillama_reference()
    tensors = dict(hf.state_dict())
    if stored == "layer 0 only":  # what a safetensors save of the shared module keeps
        tensors = {k: v for k, v in tensors.items() if ".mlp." not in k or k.startswith("model.layers.0.")}
    write_folder(tmp_path, cfg, tensors, legacy)
    model = check_model(tmp_path, logits_of(hf))
    assert all(block.ffn is model.blocks[0].ffn for block in model.blocks)
    assert model.config.family == "mobillama" and model.config.n_kv_heads == model.config.n_heads


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
# MiniCPM (1B/2B): muP scalings around a Llama


def minicpm_reference(hf, scale_emb: float, scale_depth: float, dim_model_base: int):
    """MiniCPM's forward (its remote modeling code) over transformers' Llama modules."""
    inner = hf.model
    n_layers, dim = len(inner.layers), hf.config.hidden_size
    branch = scale_depth / math.sqrt(n_layers)

    @torch.no_grad()
    def forward(ids: torch.Tensor) -> torch.Tensor:
        h = inner.embed_tokens(ids) * scale_emb
        positions = torch.arange(ids.shape[1])[None]
        cos_sin = inner.rotary_emb(h, positions)
        mask = causal_mask(ids.shape[1])
        for layer in inner.layers:
            a, _ = layer.self_attn(layer.input_layernorm(h), position_embeddings=cos_sin, attention_mask=mask)
            h = h + a * branch
            h = h + layer.mlp(layer.post_attention_layernorm(h)) * branch
        return hf.lm_head(inner.norm(h) / (dim / dim_model_base))

    return forward


@FORMS
@pytest.mark.parametrize("tied", [True, False])
def test_minicpm_matches_llama_with_its_scalings(tmp_path, tied, legacy):
    hf = random_llama(tie_word_embeddings=tied)
    cfg = hf.config.to_dict()
    cfg.update(model_type="minicpm", architectures=["MiniCPMForCausalLM"], scale_emb=12, scale_depth=1.4,
               dim_model_base=16, tie_word_embeddings=tied)  # fmt: skip
    tensors = {k: v for k, v in hf.state_dict().items() if not (tied and k == "lm_head.weight")}
    write_folder(tmp_path, cfg, tensors, legacy)
    model = check_model(tmp_path, minicpm_reference(hf, 12, 1.4, 16))
    assert model.config.embed_scale == 12 and model.config.logit_divisor == 4.0


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
