"""Llama family (`model_type: llama`): TinyLlama, SmolLM/SmolLM2, Llama-3.2, MobileLLaMA, Danube3.

Plain pre-norm decoder: RMSNorm, RoPE (rotate_half), GQA, SwiGLU FFN, optional tied head and
optional llama3 RoPE scaling. Qwen2 and Qwen3 reuse this translation with their own defaults.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import Arch
from .hf_config import ACTIVATIONS_TO_HF, HFConfig

# our module path -> HF module path; the suffix (.weight / .bias) carries over
LLAMA_MODULES = {
    "tok_emb": "model.embed_tokens",
    "blocks.{i}.attn_norm": "model.layers.{i}.input_layernorm",
    "blocks.{i}.attn.wq": "model.layers.{i}.self_attn.q_proj",
    "blocks.{i}.attn.wk": "model.layers.{i}.self_attn.k_proj",
    "blocks.{i}.attn.wv": "model.layers.{i}.self_attn.v_proj",
    "blocks.{i}.attn.wo": "model.layers.{i}.self_attn.o_proj",
    "blocks.{i}.attn.q_norm": "model.layers.{i}.self_attn.q_norm",  # Qwen3
    "blocks.{i}.attn.k_norm": "model.layers.{i}.self_attn.k_norm",  # Qwen3
    "blocks.{i}.ffn_norm": "model.layers.{i}.post_attention_layernorm",
    "blocks.{i}.ffn.gate": "model.layers.{i}.mlp.gate_proj",
    "blocks.{i}.ffn.up": "model.layers.{i}.mlp.up_proj",
    "blocks.{i}.ffn.down": "model.layers.{i}.mlp.down_proj",
    "final_norm": "model.norm",
    "head": "lm_head",
}
# older Llama files carry the RoPE table as a buffer; it is recomputed, never loaded
LLAMA_IGNORED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"model\.rotary_emb\.inv_freq")


def llama_like_from_hf(hf: HFConfig, family: str, **fields) -> ModelConfig:
    """The fields every Llama-shaped config.json has; `fields` override or add family specifics.

    Absent keys take the defaults of transformers' LlamaConfig, so a folder loads as transformers
    would load it (families override what their own config class defaults differently).
    """
    theta, scaling, _ = hf.rope()
    n_heads = hf.typed("num_attention_heads", int)
    values = dict(
        name=hf.model_name(family),
        family=family,
        vocab_size=hf.typed("vocab_size", int),
        dim=hf.typed("hidden_size", int),
        n_layers=hf.typed("num_hidden_layers", int),
        n_heads=n_heads,
        n_kv_heads=hf.typed("num_key_value_heads", int, n_heads),
        head_dim=hf.typed("head_dim", int, None),
        ffn_dim=hf.typed("intermediate_size", int),
        max_seq_len=hf.typed("max_position_embeddings", int, 2048),
        rope_theta=theta,
        rope_scaling=scaling,
        partial_rotary_factor=1.0,  # LlamaAttention rotates the whole head whatever the config says
        activation=hf.activation(),
        norm_eps=hf.typed("rms_norm_eps", float, 1e-6),
        tie_embeddings=hf.typed("tie_word_embeddings", bool, False),
        bos_token_id=hf.get("bos_token_id", 1),
        eos_token_id=hf.get("eos_token_id", 2),
        dtype=hf.dtype(),
    )
    values.update(fields)
    return ModelConfig(**values)


def llama_like_to_hf(config: ModelConfig, architecture: str, **fields) -> dict:
    if config.attention == "mla" and config.family != "deepseek_v2":
        raise UnsupportedModelError(
            f"config {config.name!r}: a {config.family} checkpoint has no MLA attention; save MLA models with "
            "family = 'deepseek_v2'"
        )
    if config.layer_n_heads or config.layer_n_kv_heads or config.layer_ffn_dim or config.block_sharing != "none":
        raise UnsupportedModelError(
            f"config {config.name!r}: per-layer sizes and block sharing have no {config.family} config.json form"
        )
    rope = {"rope_type": "default", **(config.rope_scaling or {}), "rope_theta": config.rope_theta}
    if config.partial_rotary_factor != 1.0:
        rope["partial_rotary_factor"] = config.partial_rotary_factor
    values = dict(
        architectures=[architecture],
        model_type=config.family,
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        intermediate_size=config.ffn_dim,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        head_dim=config.head_dim,
        hidden_act=ACTIVATIONS_TO_HF[config.activation],
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=float(config.norm_eps),  # transformers' config classes refuse an int here
        rope_parameters=rope,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        dtype=config.dtype,
    )
    values.update(fields)
    return values


def from_hf(hf: HFConfig) -> ModelConfig:
    bias = hf.typed("attention_bias", bool, False)
    return llama_like_from_hf(hf, "llama", qkv_bias=bias, out_bias=bias, ffn_bias=hf.typed("mlp_bias", bool, False))


def to_hf(config: ModelConfig) -> dict:
    if config.qkv_bias != config.out_bias:
        raise UnsupportedModelError("llama's attention_bias covers q, k, v and o together; qkv_bias != out_bias")
    return llama_like_to_hf(config, "LlamaForCausalLM", attention_bias=config.qkv_bias, mlp_bias=config.ffn_bias)


def _llama_biases(names: set[str]) -> dict:
    return {"attention_bias": "blk.0.attn_q.bias" in names, "mlp_bias": "blk.0.ffn_gate.bias" in names}


GGUF = Arch("llama", from_tensors=_llama_biases, permuted_qk=True)

FAMILY = Family(
    model_type="llama",
    architecture="LlamaForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=LLAMA_MODULES,
    ignored=LLAMA_IGNORED,
    examples="TinyLlama-1.1B, SmolLM/SmolLM2, Llama-3.2-1B, MobileLLaMA, h2o-danube3",
    gguf=GGUF,
)
