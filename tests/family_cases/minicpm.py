"""minicpm: MiniCPM 1B/2B's muP scalings around a Llama (here scale_emb 12, scale_depth 1.4 and dim_model_base 16
at hidden 64, so the head input is divided by 4), with a tied and an untied head.

MiniCPM's scalings live in remote code (no transformers class). Its reference is Llama's own decoder-layer modules
with MiniCPM's three scalings applied where its code applies them: the embedding x scale_emb, each branch x
scale_depth / sqrt(L), the head input / (hidden / dim_model_base).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from . import Case

from hf_models import causal_mask, small_llama, write_folder  # isort: skip

HPARAMS = dict(vocab_size=96)  # the rest: hf_models.small_llama's Llama, 3 layers


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


def llama_with_scalings(tied: bool):
    def write(folder: Path, legacy: bool):
        hf = small_llama(tie_word_embeddings=tied)
        cfg = hf.config.to_dict()
        cfg.update(model_type="minicpm", architectures=["MiniCPMForCausalLM"], scale_emb=12, scale_depth=1.4,
                   dim_model_base=16, tie_word_embeddings=tied)  # fmt: skip
        tensors = {k: v for k, v in hf.state_dict().items() if not (tied and k == "lm_head.weight")}
        write_folder(folder, cfg, tensors, legacy)
        return minicpm_reference(hf, 12, 1.4, 16)

    return write


def scalings_read(tied: bool):
    def expect(model, _hf_model) -> None:
        assert model.config.embed_scale == 12 and model.config.logit_divisor == 4.0
        assert model.config.tie_embeddings == tied and (model.head.weight is model.tok_emb.weight) == tied

    return expect


CASES = {
    "minicpm-tied": Case(None, HPARAMS, remote=llama_with_scalings(tied=True), family="minicpm",
                         bf16_tolerance=None, expect=scalings_read(tied=True)),
    "minicpm-untied": Case(None, HPARAMS, remote=llama_with_scalings(tied=False), family="minicpm",
                           bf16_tolerance=None, expect=scalings_read(tied=False)),
}  # fmt: skip
