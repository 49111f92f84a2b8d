"""Lesson 08 (notebooks/08_mla.py): multi-head latent attention (DeepSeek-V2), its latent cache and the absorption.

    check_absorb_query          fold the key up-projection W_uk (wkv_b's key rows) into the query: the result
                                dotted with a cached latent gives the naive path's score, against the
                                expansion tinyslm's MLAttention does
    check_latent_cache_values   how many numbers an MLA model's cache holds for `context` tokens, against the
                                cache tinyslm allocates and tinyslm.tools.stats.model_stats
"""

from __future__ import annotations

import torch
from einops import rearrange

from ..config import ModelConfig
from ..layers.mla import MLAttention
from ..model import CausalLM
from ..tools.stats import model_stats
from .check import Exercise

# (heads, r, dn, dr, dv, batch, new tokens): the lesson's model (DeepSeek-V2-Lite's r = 4 dn, dr = dn / 2, but
# dv != dn), then dn == dv with one new token, then dr == dn with five
ABSORB_CASES = [(4, 32, 8, 4, 12, 2, 3), (2, 10, 6, 2, 6, 1, 1), (3, 16, 4, 4, 8, 1, 5)]


def check_absorb_query(absorb_query) -> bool:
    """Your W_uk^T q_nope against the expansion of tinyslm's MLAttention.wkv_b (scores equal for any latent)."""
    with Exercise("absorb_query", against="the key expansion of tinyslm's MLAttention (wkv_b)") as ex:
        for i, (h, r, dn, dr, dv, b, t) in enumerate(ABSORB_CASES):
            with torch.random.fork_rng():  # seeded weights, the caller's random state left as it was
                torch.manual_seed(i)
                attn = MLAttention(8 * h, h, kv_lora_rank=r, qk_nope_head_dim=dn, qk_rope_head_dim=dr, v_head_dim=dv)
            gen = torch.Generator().manual_seed(i)
            q_nope = torch.randn(b, h, t, dn, generator=gen)  # (B, H, T, dn)
            c = torch.randn(b, 7, r, generator=gen)  # (B, S, r): seven cached latents
            w = rearrange(attn.wkv_b.weight.detach(), "(h d) r -> h d r", h=h)  # (H, dn + dv, r)
            want = torch.einsum("bhtn,hnr->bhtr", q_nope, w[:, :dn])  # (B, H, T, r)
            case = f"absorb_query(q_nope {tuple(q_nope.shape)}, wkv_b {tuple(attn.wkv_b.weight.shape)}, n_heads={h}, dn={dn}, dv={dv})"
            got = absorb_query(q_nope, attn.wkv_b.weight.detach(), h, dn, dv)
            ex.compare(case, got, want, atol=1e-5, rtol=1e-5)
            # what it is for: scores against the latents equal scores against the expanded keys
            kv = rearrange(attn.wkv_b(c).detach(), "b s (h d) -> b h s d", h=h)  # (B, H, S, dn + dv)
            naive_scores = q_nope @ kv[..., :dn].transpose(-1, -2)  # (B, H, T, S)
            ex.compare(f"{case} @ latents^T vs q_nope @ expanded keys^T", got @ c[:, None].transpose(-1, -2),
                       naive_scores, atol=1e-4, rtol=1e-4)  # fmt: skip
    return ex.passed


def mla_config(**changes) -> ModelConfig:
    base = dict(vocab_size=128, dim=64, n_layers=2, n_heads=4, attention="mla", kv_lora_rank=32, qk_nope_head_dim=8,
                qk_rope_head_dim=4, v_head_dim=12, ffn_dim=96, rope_layout="interleaved", max_seq_len=4096)  # fmt: skip
    return ModelConfig(**{**base, **changes})


def check_latent_cache_values(latent_cache_values) -> bool:
    """Your count against the cache tinyslm allocates (on the meta device) and model_stats."""
    configs = [
        mla_config(),
        mla_config(n_layers=3, kv_lora_rank=16, qk_rope_head_dim=8, q_lora_rank=24),  # MiniCPM3-like query LoRA
        mla_config(n_layers=1, n_heads=8, v_head_dim=4),
    ]
    with Exercise("latent_cache_values", against="the cache tinyslm allocates and model_stats") as ex:
        for config in configs:
            with torch.device("meta"):
                model = CausalLM(config)
            for context in (1, 7, 100):
                cache = model.new_cache(1, context, device="meta")
                want = sum(t.numel() for layer in cache.layers for t in layer.tensors())
                assert want == model_stats(config, context=context).kv_cache_values_at_context
                shape = (f"n_layers={config.n_layers}, n_heads={config.n_heads}, kv_lora_rank={config.kv_lora_rank}, "
                         f"qk_rope_head_dim={config.qk_rope_head_dim}, qk_nope_head_dim={config.qk_nope_head_dim}, "
                         f"v_head_dim={config.v_head_dim}")  # fmt: skip
                ex.compare(f"latent_cache_values({shape}; context={context})",
                           latent_cache_values(config, context), want)  # fmt: skip
    return ex.passed
