"""Reference solutions of lesson 08 (multi-head latent attention)."""

import torch


def absorb_query(q_nope: torch.Tensor, wkv_b_weight: torch.Tensor, n_heads: int, qk_nope_head_dim: int,
                 v_head_dim: int) -> torch.Tensor:  # fmt: skip
    """W_uk^T q_nope: (B, H, T, dn) -> (B, H, T, r), W_uk being each head's first dn rows of wkv_b (H*(dn+dv), r).
    Its dot product with a cached latent c equals q_nope's with the expanded key W_uk c."""
    w = wkv_b_weight.view(n_heads, qk_nope_head_dim + v_head_dim, -1)  # (H, dn + dv, r): per head [k_nope | v]
    w_uk = w[:, :qk_nope_head_dim]  # (H, dn, r)
    return torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)


def latent_cache_values(config, context: int) -> int:
    """Numbers an MLA model caches for `context` tokens: per token and layer, the latent (kv_lora_rank) and the
    shared RoPE key (qk_rope_head_dim), whatever the number of heads."""
    return config.n_layers * (config.kv_lora_rank + config.qk_rope_head_dim) * context
