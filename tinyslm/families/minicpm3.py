"""MiniCPM3 family (`model_type: minicpm3`): openbmb/MiniCPM3-4B.

A DeepSeek-V2-shaped decoder (MLA with query LoRA, SwiGLU, RMSNorm, tied head) on the same modules
and key map as deepseek_v2.py (MiniCPM3's tensor names are DeepSeek's). What differs:

* RoPE pairs (i, i + dr/2) (rotate_half) on the 32-dim decoupled key, not DeepSeek's interleaved
  pairs: rope_layout = "half".
* LongRoPE (layers/rope.py). MiniCPM3-4B's original context equals max_position_embeddings (32768),
  so the attention factor is 1 and short_factor is used up to 32k positions; short_factor still
  rescales every frequency at any length (inv_freq_0 = 1 / 1.0591).
* MiniCPM's width/depth scalings (MiniCPM, Hu et al. 2024, arXiv 2404.06395, which trains with muP):
      h_0  = embed(ids) * scale_emb                                        (12)       -> embed_scale
      x    = x + branch(norm(x)) * scale_depth / sqrt(num_hidden_layers)  (0.177800) -> residual_scale
      logits = head(final_norm(x) / (hidden_size / dim_model_base))       (10)       -> logit_divisor
  A null scale_depth or dim_model_base makes that scaling 1 (transformers' rule); a scale of 1 is None here.
* Absent keys take MiniCPM3Config's defaults (MiniCPM3-4B's values), including a tied head and
  v_head_dim = hidden_size / num_attention_heads; q_a_layernorm / kv_a_layernorm use eps 1e-6 (mla.py).
* A top-level `original_max_position_embeddings` key overrides the RoPE dict's, as transformers reads it.

Config source: huggingface.co/openbmb/MiniCPM3-4B config.json; transformers 5.23 MiniCPM3Config.
"""

from __future__ import annotations

import math

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from ..rope_scaling import rope_type_of
from . import Family
from .deepseek_v2 import MLA_KEYS, MLA_MODULES
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, llama_like_from_hf, llama_like_to_hf

# transformers 5.23 MiniCPM3Config defaults (= openbmb/MiniCPM3-4B), used for keys a config.json omits
HF_DEFAULTS = dict(
    vocab_size=73448, hidden_size=2560, intermediate_size=6400, num_hidden_layers=62, num_attention_heads=40,
    max_position_embeddings=32768, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    q_lora_rank=768, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=None,
    scale_emb=12, scale_depth=1.4, dim_model_base=256,
)  # fmt: skip


def residual_and_logit_scales(hf: HFConfig) -> tuple[float, float]:
    """(scale_depth / sqrt(num_hidden_layers), hidden_size / dim_model_base); null keys mean 1, as in transformers."""
    n_layers, dim = hf.typed("num_hidden_layers", int), hf.typed("hidden_size", int)
    if n_layers <= 0 or dim <= 0:
        return 1.0, 1.0  # ModelConfig names the bad size
    depth = hf.typed("scale_depth", float, math.sqrt(n_layers))
    base = hf.typed("dim_model_base", int, dim)
    if base <= 0:
        raise UnsupportedModelError(f"{hf.source}: dim_model_base must be a positive integer, found {base}")
    return depth / math.sqrt(n_layers), dim / base


def dim_model_base_of(config: ModelConfig) -> int:
    """dim / logit_divisor, which config.json stores as an integer."""
    base = round(config.dim / (config.logit_divisor or 1))
    if base < 1 or config.dim / base != (config.logit_divisor or 1):
        raise UnsupportedModelError(
            f"config {config.name!r}: a minicpm3 checkpoint stores the logit divisor as hidden_size / dim_model_base "
            f"with an integer dim_model_base; logit_divisor={config.logit_divisor!r} is not one"
        )
    return base


def minicpm3_rope_scaling(hf: HFConfig, scaling: dict | None) -> dict | None:
    original = hf.typed("original_max_position_embeddings", int, None)
    if scaling is None or original is None or scaling.get("rope_type") not in ("longrope", "yarn", "llama3"):
        return scaling
    return {**scaling, "original_max_position_embeddings": original}  # transformers lets the top-level key win


def from_hf(hf: HFConfig) -> ModelConfig:
    hf = hf.with_defaults(HF_DEFAULTS)
    residual, divisor = residual_and_logit_scales(hf)
    mla = {key: hf[key] for key in MLA_KEYS}  # an explicit null q_lora_rank stays None: one q_proj
    dim, n_heads = hf.typed("hidden_size", int), hf.typed("num_attention_heads", int)
    if mla["v_head_dim"] is None and n_heads > 0:
        mla["v_head_dim"] = dim // n_heads  # MiniCPM3Config's rule (64 for MiniCPM3-4B)
    dn, dr = mla["qk_nope_head_dim"], mla["qk_rope_head_dim"]
    well_formed = all(isinstance(d, int) and d > 0 for d in (dn, dr))  # else ModelConfig says what is wrong
    scale_emb = hf.typed("scale_emb", float)
    bias = hf.typed("attention_bias", bool, False)
    _, scaling, _ = hf.rope()
    config = llama_like_from_hf(
        hf, "minicpm3", attention="mla", rope_layout="half",
        n_kv_heads=n_heads,  # one key/value per query head, from the latent
        head_dim=dn + dr if well_formed else None,  # informational for MLA: the query/key width
        rope_scaling=minicpm3_rope_scaling(hf, scaling),
        embed_scale=None if scale_emb == 1 else scale_emb,
        residual_scale=None if residual == 1 else residual, logit_divisor=None if divisor == 1 else divisor,
        qkv_bias=bias, out_bias=bias, ffn_bias=hf.typed("mlp_bias", bool, False), **mla,
    )  # fmt: skip
    rope_type_of(config.rope_scaling, config.rotary_dim)  # LongRoPE: one factor per rotated pair
    return config


def to_hf(config: ModelConfig) -> dict:
    problems = []
    if config.attention != "mla":
        problems.append(f"attention={config.attention!r} (MiniCPM3 attention is MLA)")
    if config.rope_layout != "half":
        problems.append(f"rope_layout={config.rope_layout!r} (MiniCPM3 rotates split halves: 'half')")
    if config.qkv_bias != config.out_bias:
        problems.append("qkv_bias != out_bias (attention_bias covers q_a, kv_a and o together)")
    if problems:
        raise UnsupportedModelError(f"config {config.name!r}: a minicpm3 checkpoint cannot hold {'; '.join(problems)}")
    # llama_like_to_hf refuses MLA for any family but deepseek_v2 (its guard predates this family), hence the
    # family passed to it; model_type is set back below
    return llama_like_to_hf(
        config.replace(family="deepseek_v2"), "MiniCPM3ForCausalLM", model_type="minicpm3",
        num_key_value_heads=config.n_heads, head_dim=config.qk_rope_head_dim,  # what MiniCPM3Config itself sets
        q_lora_rank=config.q_lora_rank, kv_lora_rank=config.kv_lora_rank,
        qk_nope_head_dim=config.qk_nope_head_dim, qk_rope_head_dim=config.qk_rope_head_dim,
        v_head_dim=config.v_head_dim, attention_bias=config.qkv_bias, mlp_bias=config.ffn_bias,
        scale_emb=config.embed_scale or 1,
        scale_depth=(config.residual_scale or 1) * math.sqrt(config.n_layers),  # read back as residual_scale exactly
        dim_model_base=dim_model_base_of(config),
    )  # fmt: skip


FAMILY = Family(
    model_type="minicpm3",
    architecture="MiniCPM3ForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=MLA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="openbmb/MiniCPM3-4B",
)
