"""GPT-NeoX family (`model_type: gpt_neox`): Pythia 70M-12B, Dolly-v2 (3B, 7B, 12B), GPT-NeoX-20B.

    h   = LN_1(x)                                       LayerNorms with bias, eps layer_norm_eps
    a   = dense(attn(h))                                fused per-head QKV; RoPE on the first rotary_pct of each head
    parallel residual (use_parallel_residual, the default; every Pythia and Dolly-v2):
        out = x + a + mlp(LN_2(x))                      both branches read the block input
    sequential residual (use_parallel_residual=false):
        y = x + a;  out = y + mlp(LN_2(y))
    mlp = dense_4h_to_h(act(dense_h_to_4h(.)))          plain FFN, always with biases; act "gelu" = exact erf GELU
    logits = embed_out(final_layer_norm(out))           untied by default, no bias

Checkpoint quirks handled by the key map:
  * `query_key_value` holds q, k and v per head: its rows are (H, [q k v], head_dim), not [q | k | v].
  * The hub files name the head `embed_out`; transformers 5.x calls the module `lm_head` and renames on
    load (and writes `embed_out` back on save), so both spellings are accepted.
  * Older Pythia files carry per-layer buffers (`attention.bias`, `attention.masked_bias`,
    `attention.rotary_emb.inv_freq`): recomputed, never loaded.

RoPE spelling: released config.json files (Pythia, Dolly-v2) say `rotary_pct` and `rotary_emb_base`;
transformers 5.x writes `rope_parameters` = {rope_type, rope_theta, partial_rotary_factor}. As
GPTNeoXConfig reads them: a non-empty `rope_scaling` / `rope_parameters` dict wins, and what it lacks
comes from rotary_emb_base (default 10000) and rotary_pct (default 0.25). Top-level `rope_theta` and
`partial_rotary_factor` are *not* read by GPTNeoXConfig; a file whose top-level values contradict the
ones transformers uses is refused rather than silently loaded as a different model.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import ConfigError, UnsupportedModelError
from . import Family, Fused
from .gguf_arch import GPTNEOX_KEYS, Arch
from .hf_config import ACTIVATIONS_TO_HF, HFConfig

# GPTNeoXConfig defaults (GPT-NeoX-20B's shape), used when config.json omits a key
DEFAULTS = dict(vocab_size=50432, hidden_size=6144, num_hidden_layers=44, num_attention_heads=64,
                intermediate_size=24576, max_position_embeddings=2048, layer_norm_eps=1e-5,
                rotary_emb_base=10000.0, rotary_pct=0.25, bos_token_id=0, eos_token_id=2)  # fmt: skip

MODULES = {
    "tok_emb": "gpt_neox.embed_in",
    "blocks.{i}.attn_norm": "gpt_neox.layers.{i}.input_layernorm",
    "blocks.{i}.attn.wo": "gpt_neox.layers.{i}.attention.dense",
    "blocks.{i}.ffn_norm": "gpt_neox.layers.{i}.post_attention_layernorm",
    "blocks.{i}.ffn.up": "gpt_neox.layers.{i}.mlp.dense_h_to_4h",
    "blocks.{i}.ffn.down": "gpt_neox.layers.{i}.mlp.dense_4h_to_h",
    "final_norm": "gpt_neox.final_layer_norm",
    "head": "embed_out",  # the hub name, and what transformers 5.23's save_pretrained writes
}
FUSED = (
    Fused("gpt_neox.layers.{i}.attention.query_key_value",
          ("blocks.{i}.attn.wq", "blocks.{i}.attn.wk", "blocks.{i}.attn.wv"), per_head=True),
)  # fmt: skip
# transformers 5.x's in-memory name of the head (GPTNeoXForCausalLM.lm_head); files written from it may use it
ALIASES = ((r"^lm_head\.", "embed_out."),)
# buffers older files store (the causal mask, its fill value, the RoPE table); never loaded
IGNORED = (
    r"gpt_neox\.layers\.\d+\.attention\.(?:bias|masked_bias|rotary_emb\.inv_freq)",
    r"gpt_neox\.rotary_emb\.inv_freq",
)


def _rope(hf: HFConfig) -> tuple[float, dict | None, float]:
    """(theta, scaling, partial_rotary_factor) as GPTNeoXConfig resolves them (see the module docstring)."""
    theta = hf.typed("rotary_emb_base", float, DEFAULTS["rotary_emb_base"])
    partial = hf.typed("rotary_pct", float, DEFAULTS["rotary_pct"])
    # HFConfig.rope() fills what the dict lacks from the top level: put GPT-NeoX's fallbacks there
    view = HFConfig({**hf, "rope_theta": theta, "partial_rotary_factor": partial}, hf.source)
    theta, scaling, partial = view.rope()
    for key, used in (("rope_theta", theta), ("partial_rotary_factor", partial)):
        stated = hf.get(key)
        if stated is not None and stated != used:
            raise ConfigError(
                f"{hf.source}: top-level {key}={stated!r}, but GPTNeoXConfig ignores that key and uses {used!r} "
                "(from rope_parameters / rope_scaling, else rotary_emb_base / rotary_pct, else the defaults "
                "10000 / 0.25); write the value under rope_parameters, or rotary_emb_base / rotary_pct"
            )
    return theta, scaling, partial


def from_hf(hf: HFConfig) -> ModelConfig:
    dim = hf.typed("hidden_size", int, DEFAULTS["hidden_size"])
    n_heads = hf.typed("num_attention_heads", int, DEFAULTS["num_attention_heads"])
    head_dim = hf.typed("head_dim", int, None)
    if head_dim is not None and n_heads > 0 and head_dim != dim // n_heads:
        raise UnsupportedModelError(
            f"{hf.source}: head_dim={head_dim}, but GPT-NeoX's attention heads are hidden_size / num_attention_heads "
            f"= {dim // n_heads} wide, and transformers would size RoPE from head_dim (the two disagree)"
        )
    theta, scaling, partial = _rope(hf)
    bias = hf.typed("attention_bias", bool, True)
    return ModelConfig(
        name=hf.model_name("gpt_neox"),
        family="gpt_neox",
        vocab_size=hf.typed("vocab_size", int, DEFAULTS["vocab_size"]),
        dim=dim,
        n_layers=hf.typed("num_hidden_layers", int, DEFAULTS["num_hidden_layers"]),
        n_heads=n_heads,
        ffn_dim=hf.typed("intermediate_size", int, DEFAULTS["intermediate_size"]),
        max_seq_len=hf.typed("max_position_embeddings", int, DEFAULTS["max_position_embeddings"]),
        qkv_bias=bias,  # attention_bias covers query_key_value and dense together
        out_bias=bias,
        rope_theta=theta,
        rope_scaling=scaling,
        partial_rotary_factor=partial,
        block="parallel" if hf.typed("use_parallel_residual", bool, True) else "sequential",
        ffn="plain",
        activation=hf.activation("hidden_act", "gelu"),  # GPTNeoXConfig default: exact GELU
        ffn_bias=True,  # GPTNeoXMLP's two Linears always have biases
        norm="layernorm",
        norm_eps=hf.typed("layer_norm_eps", float, DEFAULTS["layer_norm_eps"]),
        tie_embeddings=hf.typed("tie_word_embeddings", bool, False),
        bos_token_id=hf.get("bos_token_id", DEFAULTS["bos_token_id"]),
        eos_token_id=hf.get("eos_token_id", DEFAULTS["eos_token_id"]),
        dtype=hf.dtype(),
    )


def to_hf(config: ModelConfig) -> dict:
    """GPTNeoXConfig's keys in the transformers 5.x form. What this form cannot hold (GQA, a gated FFN,
    ALiBi, one shared norm, ...) reads back differently, and `check_expressible` refuses it with the fields named."""
    rope = {"rope_type": "default", **(config.rope_scaling or {}), "rope_theta": config.rope_theta,
            "partial_rotary_factor": config.partial_rotary_factor}  # fmt: skip
    return dict(
        architectures=["GPTNeoXForCausalLM"],
        model_type="gpt_neox",
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.ffn_dim,
        hidden_act=ACTIVATIONS_TO_HF[config.activation],
        max_position_embeddings=config.max_seq_len,
        layer_norm_eps=config.norm_eps,
        rope_parameters=rope,
        use_parallel_residual=config.block != "sequential",
        attention_bias=config.qkv_bias,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        dtype=config.dtype,
    )


def _gptneox_refuse(config) -> list[str]:
    # llama.cpp's gptneox graph loads every bias and an untied head; the GGUF states no activation, and
    # Pythia's (GPTNeoXConfig's default) is exact GELU
    problems = ["attention_bias=false"] if not (config.qkv_bias and config.out_bias) else []
    if config.tie_embeddings:
        problems.append("a tied head (tie_word_embeddings=true)")
    if config.activation != "gelu":
        problems.append(f"hidden_act={config.activation!r} (a gptneox GGUF is read as GPTNeoXConfig's 'gelu')")
    return problems


# Pythia (convert_hf_to_gguf.py's GPTNeoXModel): the per-head fused qkv is stored [q | k | v], as Bloom's
GGUF = Arch("gptneox", keys=GPTNEOX_KEYS, partial_rotary=True, qkv_by_part=True,
            rope_keys=("rotary_emb_base", "rotary_pct"), refuse=_gptneox_refuse)

FAMILY = Family(
    model_type="gpt_neox",
    architecture="GPTNeoXForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=MODULES,
    fused=FUSED,
    aliases=ALIASES,
    ignored=IGNORED,
    examples="Pythia-70M..12B, Dolly-v2-3B/7B/12B, GPT-NeoX-20B",
    gguf=GGUF,
)
