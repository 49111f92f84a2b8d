"""StableLM family (`model_type: stablelm`): StableLM-2-1.6B, StableLM-2-Zephyr, StableLM-3B-4E1T / Zephyr-3B,
StableLM-2-12B.

Llama's names and SwiGLU MLP, with LayerNorms (weight and bias) instead of RMSNorm everywhere,
RoPE on the first `partial_rotary_factor` of each head (0.25: 16 of 64 dims on the 1.6B model)
and three switches:

    use_qkv_bias           biases on q/k/v_proj (StableLM-2-1.6B); o_proj never has one
    use_parallel_residual  x + attn(LN(x)) + mlp(LN(x)), one LayerNorm per layer (StableLM-2-12B);
                           transformers sums `residual + attn + mlp`, the order tinyslm uses
    qk_layernorm           a separate bias-free LayerNorm over head_dim for every query and every KV
                           head, before RoPE (`self_attn.q_layernorm.norms.{h}.weight`; StableLM-2-12B)

head_dim is always hidden_size / num_attention_heads. StableLmConfig's defaults apply to absent
keys: partial_rotary_factor 0.25, layer_norm_eps 1e-5, 32 KV heads, 4096 positions, bos/eos 0.
Checkpoints in the older remote-code layout (`model_type: stablelm_epoch`) are not this family.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .gguf_arch import STABLELM_KEYS, Arch
from .hf_config import HFConfig
from .llama import LLAMA_IGNORED, LLAMA_MODULES, llama_like_from_hf, llama_like_to_hf

STABLELM_MODULES = {
    **{k: v for k, v in LLAMA_MODULES.items() if not k.endswith(("q_norm", "k_norm"))},
    "blocks.{i}.attn.q_norm": "model.layers.{i}.self_attn.q_layernorm",  # .norms.{h}.weight, one per head
    "blocks.{i}.attn.k_norm": "model.layers.{i}.self_attn.k_layernorm",
}


def from_hf(hf: HFConfig) -> ModelConfig:
    n_heads, dim = hf.typed("num_attention_heads", int), hf.typed("hidden_size", int)
    head_dim = dim // n_heads  # StableLmAttention ignores any head_dim key
    if hf.get("head_dim") is not None and hf.typed("head_dim", int) != head_dim:
        raise UnsupportedModelError(
            f"{hf.source}: head_dim={hf['head_dim']} differs from hidden_size / num_attention_heads = {head_dim}; "
            "transformers' StableLM attention uses the latter but sizes its RoPE table from head_dim, so this "
            "checkpoint cannot run as written"
        )
    qk_norm = hf.typed("qk_layernorm", bool, False)
    bias = hf.typed("use_qkv_bias", bool, False)
    parallel = hf.typed("use_parallel_residual", bool, False)
    return llama_like_from_hf(
        hf, "stablelm",
        n_kv_heads=hf.typed("num_key_value_heads", int, 32),
        head_dim=head_dim,
        max_seq_len=hf.typed("max_position_embeddings", int, 4096),
        partial_rotary_factor=hf.partial_rotary(0.25),
        block="parallel_shared_norm" if parallel else "sequential",
        norm="layernorm",
        norm_eps=hf.typed("layer_norm_eps", float, 1e-5),
        qkv_bias=bias,
        qk_norm=qk_norm,
        qk_norm_per_head=qk_norm,
        bos_token_id=hf.get("bos_token_id", 0),
        eos_token_id=hf.get("eos_token_id", 0),
    )  # fmt: skip


def to_hf(config: ModelConfig) -> dict:
    if config.qk_norm and not config.qk_norm_per_head:
        raise UnsupportedModelError(
            f"config {config.name!r}: StableLM's qk_layernorm is one LayerNorm per head (qk_norm_per_head = true); "
            "a q/k norm shared by all heads has no stablelm form (the phi family has one)"
        )
    if config.head_dim * config.n_heads != config.dim:
        raise UnsupportedModelError(
            f"config {config.name!r}: a stablelm checkpoint's head_dim is hidden_size / num_attention_heads "
            f"= {config.dim // config.n_heads}, found head_dim={config.head_dim}"
        )
    values = llama_like_to_hf(
        config, "StableLmForCausalLM",
        layer_norm_eps=config.norm_eps,
        use_qkv_bias=config.qkv_bias,
        qk_layernorm=config.qk_norm,
        use_parallel_residual=config.block == "parallel_shared_norm",
    )  # fmt: skip
    del values["rms_norm_eps"], values["head_dim"]
    values["rope_parameters"]["partial_rotary_factor"] = config.partial_rotary_factor  # the default is 0.25, not 1
    return values


def _stablelm(names: set[str]) -> dict:
    # as transformers' GGUF loader reads them: q/k/v biases present, and no ffn_norm means one shared norm
    return {"use_qkv_bias": "blk.0.attn_q.bias" in names, "use_parallel_residual": "blk.0.ffn_norm.weight" not in names}


GGUF = Arch("stablelm", keys=STABLELM_KEYS, from_tensors=_stablelm, partial_rotary=True)

FAMILY = Family(
    model_type="stablelm",
    architecture="StableLmForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=STABLELM_MODULES,
    ignored=LLAMA_IGNORED,
    examples="stabilityai/stablelm-2-1_6b, stablelm-2-zephyr-1_6b, stablelm-zephyr-3b, stablelm-2-12b",
    gguf=GGUF,
)
