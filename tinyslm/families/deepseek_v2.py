"""DeepSeek-V2 family (`model_type: deepseek_v2`), dense layers only: MLA attention + SwiGLU FFN.

A Llama-shaped decoder whose attention is multi-head latent attention (tinyslm/layers/mla.py). What the
translation has to know:

* RoPE layout is **interleaved**: DeepSeek's weights pair dims (2i, 2i+1); transformers 5.23
  rotates them with `view_as_complex` on the raw weights, so we set rope_layout="interleaved"
  rather than permuting rows at load time.
* Softmax scale (qk_nope + qk_rope)^-0.5, times the YaRN mscale^2 (mla.mla_softmax_scale).
* q_a_layernorm / kv_a_layernorm use eps 1e-6 (class default), not rms_norm_eps.
* Absent MLA keys take transformers' defaults (q_lora_rank 1536, kv_lora_rank 512, 128/64/128):
  the checkpoint loads as transformers would load it.
* Mixture-of-experts: transformers 5.23 makes layer i an MoE layer when i >= first_k_dense_replace
  (DeepSeek's remote code also requires n_routed_experts to be set). Only checkpoints whose layers
  are all dense load here; any MoE layer is an UnsupportedModelError naming the keys.
* num_key_value_heads is meaningless for MLA (keys/values come from the latent, one per query
  head); it is read as num_attention_heads and written so.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf

# the MLA attention submodules (tinyslm/layers/mla.py) -> DeepseekV2Attention / MiniCPM3Attention names
MLA_ATTENTION_MODULES = {
    "blocks.{i}.attn.wq": "model.layers.{i}.self_attn.q_proj",  # q_lora_rank = null
    "blocks.{i}.attn.wq_a": "model.layers.{i}.self_attn.q_a_proj",  # query LoRA: D -> rq
    "blocks.{i}.attn.q_norm": "model.layers.{i}.self_attn.q_a_layernorm",
    "blocks.{i}.attn.wq_b": "model.layers.{i}.self_attn.q_b_proj",  # rq -> H*(dn+dr)
    "blocks.{i}.attn.wkv_a": "model.layers.{i}.self_attn.kv_a_proj_with_mqa",  # D -> r + dr
    "blocks.{i}.attn.kv_norm": "model.layers.{i}.self_attn.kv_a_layernorm",
    "blocks.{i}.attn.wkv_b": "model.layers.{i}.self_attn.kv_b_proj",  # r -> H*(dn+dv)
    "blocks.{i}.attn.wo": "model.layers.{i}.self_attn.o_proj",
}
MLA_MODULES = {k: v for k, v in LLAMA_MODULES.items() if ".attn." not in k} | MLA_ATTENTION_MODULES

MLA_KEYS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
# transformers' DeepseekV2Config defaults, used when a config.json leaves a key out
HF_DEFAULTS = {"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
               "v_head_dim": 128, "first_k_dense_replace": 0, "n_routed_experts": 64}  # fmt: skip


def _get(hf: HFConfig, key: str):
    return hf[key] if key in hf else HF_DEFAULTS[key]  # an explicit null stays None


def check_dense(hf: HFConfig) -> None:
    """Refuse checkpoints with mixture-of-experts layers, naming the keys that make them MoE."""
    n_layers = hf.require("num_hidden_layers")
    first_dense = _get(hf, "first_k_dense_replace") or 0
    experts = _get(hf, "n_routed_experts")
    if experts and first_dense < n_layers:
        raise UnsupportedModelError(
            f"{hf.source}: layers {first_dense}..{n_layers - 1} are mixture-of-experts layers "
            f"(n_routed_experts={experts}, first_k_dense_replace={first_dense}, num_hidden_layers={n_layers}); "
            "MoE is not supported by tinyslm. Only all-dense DeepSeek-V2 checkpoints load: "
            "first_k_dense_replace >= num_hidden_layers, or n_routed_experts null"
        )


def from_hf(hf: HFConfig) -> ModelConfig:
    check_dense(hf)
    mla = {key: _get(hf, key) for key in MLA_KEYS}
    dn, dr = mla["qk_nope_head_dim"], mla["qk_rope_head_dim"]
    well_formed = all(isinstance(d, int) and d > 0 for d in (dn, dr))  # else ModelConfig says what is wrong
    bias = hf.typed("attention_bias", bool, False)
    return llama_like_from_hf(
        hf, "deepseek_v2", attention="mla", rope_layout="interleaved",
        n_kv_heads=hf.typed("num_attention_heads", int),  # one key/value per query head, from the latent
        head_dim=dn + dr if well_formed else None,  # informational for MLA: the query/key width
        qkv_bias=bias, out_bias=bias, ffn_bias=hf.typed("mlp_bias", bool, False), **mla,
    )  # fmt: skip  (config_from_hf adds the file's name to any ConfigError)


def to_hf(config: ModelConfig) -> dict:
    if config.attention != "mla":
        raise UnsupportedModelError(
            f"config {config.name!r}: a deepseek_v2 checkpoint needs attention='mla', found {config.attention!r}"
        )
    if config.rope_layout != "interleaved":
        raise UnsupportedModelError(
            f"config {config.name!r}: deepseek_v2 checkpoints rotate interleaved pairs (rope_layout='interleaved'); "
            f"found rope_layout={config.rope_layout!r}"
        )
    if config.qkv_bias != config.out_bias:
        raise UnsupportedModelError(
            "deepseek_v2's attention_bias covers q_a, kv_a and o together; qkv_bias != out_bias"
        )
    return llama_like_to_hf(
        config, "DeepseekV2ForCausalLM",
        num_key_value_heads=config.n_heads, head_dim=config.qk_rope_head_dim,  # what transformers itself writes
        q_lora_rank=config.q_lora_rank, kv_lora_rank=config.kv_lora_rank,
        qk_nope_head_dim=config.qk_nope_head_dim, qk_rope_head_dim=config.qk_rope_head_dim,
        v_head_dim=config.v_head_dim,
        first_k_dense_replace=config.n_layers,  # every layer dense
        attention_bias=config.qkv_bias, mlp_bias=config.ffn_bias,
    )  # fmt: skip


FAMILY = Family(
    model_type="deepseek_v2",
    architecture="DeepseekV2ForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=MLA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="DeepSeek-V2-architecture checkpoints whose layers are all dense (MLA + SwiGLU)",
)
