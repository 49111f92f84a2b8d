"""openelm: OpenELM's layer-wise scaling (apple/OpenELM-270M config.json; Apple's OpenELM_CONFIGS presets), tiny.

OpenELM ships remote code (no transformers class). The reference is assembled from transformers' own modules: one
Qwen3DecoderLayer per layer, each with its own config (the layer's heads and FFN width; Qwen3's per-head q/k
RMSNorm before RoPE is OpenELM's), Qwen3's rotary embedding and RMSNorm, an nn.Embedding and the tied head; the
checkpoint is random weights in Apple's layout (qkv rows [q | k | v], proj_1 rows [gate | up]).

A tiny OpenELM: 4 layers, widths from the rule: multipliers 0.5, 0.67, 0.83, 1.0 x 128 rounded to multiples of
16 x 2 groups -> 64, 96, 96, 128 query dims: 4, 6, 6, 8 heads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tinyslm.layerwise import openelm_layer_sizes

from . import Case

from hf_models import causal_mask, write_folder  # isort: skip

OPENELM_270M = dict(
    model_type="openelm", model_dim=1280, head_dim=64, num_transformer_layers=16, num_gqa_groups=4,
    qkv_multipliers=[0.5, 1.0],
    ffn_multipliers=[0.5, 0.73, 0.97, 1.2, 1.43, 1.67, 1.9, 2.13, 2.37, 2.6, 2.83, 3.07, 3.3, 3.53, 3.77, 4.0],
    ffn_dim_divisor=256, ffn_with_glu=True, activation_fn_name="swish", normalization_layer_name="rms_norm",
    normalize_qk_projections=True, share_input_output_layers=True, vocab_size=32000, max_context_length=2048,
    rope_freq_constant=10000, rope_max_length=4096, bos_token_id=1, eos_token_id=2,
)  # fmt: skip  (huggingface.co/apple/OpenELM-270M config.json)

TINY_OPENELM = dict(OPENELM_270M, model_dim=128, head_dim=16, num_transformer_layers=4, num_gqa_groups=2,
                    qkv_multipliers=[0.5, 1.0], ffn_multipliers=[0.5, 4.0], ffn_dim_divisor=32, vocab_size=96,
                    max_context_length=64)  # fmt: skip


def layer_sizes(hf_config: dict) -> dict[str, list[int]]:
    return openelm_layer_sizes(dim=hf_config["model_dim"], head_dim=hf_config["head_dim"],
                               n_layers=hf_config["num_transformer_layers"],
                               qkv_multipliers=hf_config["qkv_multipliers"],
                               ffn_multipliers=hf_config["ffn_multipliers"], gqa_groups=hf_config["num_gqa_groups"],
                               ffn_divisor=hf_config["ffn_dim_divisor"])  # fmt: skip


def openelm_checkpoint(folder: Path, hf_config: dict, seed: int = 0, legacy: bool = False) -> dict[str, torch.Tensor]:
    """Random weights in Apple's layout for `hf_config`, written to `folder`; returns them."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: 0.15 * torch.randn(*shape, generator=gen)  # noqa: E731
    one = lambda n: 1 + 0.2 * torch.randn(n, generator=gen)  # noqa: E731
    dim, hd, n = hf_config["model_dim"], hf_config["head_dim"], hf_config["num_transformer_layers"]
    sizes = layer_sizes(hf_config)
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
    write_folder(folder, hf_config, t, legacy)
    return t


def openelm_reference(hf_config: dict, t: dict[str, torch.Tensor]):
    """OpenELM's forward from transformers' Qwen3 modules, one config per layer, the weights split by hand."""
    import transformers  # noqa: PLC0415
    from transformers.models.qwen3.modeling_qwen3 import (  # noqa: PLC0415
        Qwen3DecoderLayer,
        Qwen3RMSNorm,
        Qwen3RotaryEmbedding,
    )

    dim, hd, n = hf_config["model_dim"], hf_config["head_dim"], hf_config["num_transformer_layers"]
    sizes = layer_sizes(hf_config)
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


def tiny_openelm(folder: Path, legacy: bool):
    return openelm_reference(TINY_OPENELM, openelm_checkpoint(folder, TINY_OPENELM, legacy=legacy))


def scaled_widths_and_shared_head(model, _hf_model) -> None:
    assert [model.blocks[i].attn.n_heads for i in range(4)] == [4, 6, 6, 8]
    assert list(model.config.layer_ffn_dim) == layer_sizes(TINY_OPENELM)["layer_ffn_dim"]
    assert model.head.weight is model.tok_emb.weight  # share_input_output_layers


CASES = {
    # OpenELM's config.json has one form (the released one), so no legacy rewrite
    "openelm-tiny": Case(None, TINY_OPENELM, remote=tiny_openelm, family="openelm", bf16_tolerance=None,
                         expect=scaled_widths_and_shared_head, forms=("current",)),
}
