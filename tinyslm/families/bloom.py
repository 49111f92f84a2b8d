"""Bloom family (`model_type: bloom`): BLOOM 560M-176B and BLOOMZ (560M, 1B1, ...).

    x = LN_emb(word_embeddings(ids))                    a LayerNorm right after the embedding, no position table
    y = x + dense(attn(LN_1(x)))                        fused per-head QKV, biases everywhere
    out = y + dense_4h_to_h(gelu(dense_h_to_4h(LN_2(y))))  FFN width fixed at 4 * hidden_size
    logits = lm_head(ln_f(out))                         tied to word_embeddings by default, no bias

Positions come from ALiBi only: head h adds slope_h * key_position to its scores after the
1/sqrt(head_dim) scaling (layers/positions.py; the slopes are the ALiBi paper's recipe). Bloom's GELU
is the tanh approximation (written out with sqrt(2/pi) rounded to 0.79788456); tinyslm uses torch's
tanh GELU, equal in float32 to within rounding.

BloomConfig spells its sizes n_layer / n_head (the hub files do too) and also accepts the generic
num_hidden_layers / num_attention_heads, which then win; an `n_embed` key overrides hidden_size. The
config has no position limit (ALiBi has no table): `max_seq_len` is read from a `seq_length` key when
there is one, else 2048 (BLOOM's training context), and `to_hf` writes `seq_length` back. Megatron
leftovers the hub configs carry (offset_alibi, masked_softmax_fusion, n_inner, ...) are unused by
transformers and ignored here.

Checkpoint quirk: the bigscience hub files were saved from the bare BloomModel, so their tensor names
lack the `transformer.` prefix (`h.0.self_attention...`, `word_embeddings.weight`); both forms load.

Refused:
  * apply_residual_connection_post_layernorm=true: the residual stream then carries the *normed*
    activations (y = LN_1(x) + attn, out = LN_2(y) + mlp); tinyslm's blocks add to the un-normed input.
  * pretraining_tp > 1 with slow_but_exact=true: transformers then computes attention's dense and the
    MLP's dense_4h_to_h as pretraining_tp column slices summed, without those layers' biases.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family, Fused
from .gguf_arch import BLOOM_KEYS, Arch
from .hf_config import HFConfig

# BloomConfig defaults, used when config.json omits a key (max_seq_len: BLOOM's 2048-token training context)
DEFAULTS = dict(vocab_size=250880, hidden_size=64, n_layer=2, n_head=8, layer_norm_epsilon=1e-5, seq_length=2048,
                bos_token_id=1, eos_token_id=2)  # fmt: skip
# BloomConfig.attribute_map: the generic names transformers also accepts (they win when both are present)
SIZE_ALIASES = {"n_layer": "num_hidden_layers", "n_head": "num_attention_heads"}

MODULES = {
    "tok_emb": "transformer.word_embeddings",
    "emb_norm": "transformer.word_embeddings_layernorm",
    "blocks.{i}.attn_norm": "transformer.h.{i}.input_layernorm",
    "blocks.{i}.attn.wo": "transformer.h.{i}.self_attention.dense",
    "blocks.{i}.ffn_norm": "transformer.h.{i}.post_attention_layernorm",
    "blocks.{i}.ffn.up": "transformer.h.{i}.mlp.dense_h_to_4h",
    "blocks.{i}.ffn.down": "transformer.h.{i}.mlp.dense_4h_to_h",
    "final_norm": "transformer.ln_f",
    "head": "lm_head",
}
FUSED = (
    # rows (H, [q k v], head_dim): BloomAttention views the projection as (B, T, H, 3, hd)
    Fused("transformer.h.{i}.self_attention.query_key_value",
          ("blocks.{i}.attn.wq", "blocks.{i}.attn.wk", "blocks.{i}.attn.wv"), per_head=True),
)  # fmt: skip
# hub files saved from the bare BloomModel have no "transformer." prefix
ALIASES = ((r"^(?=(?:word_embeddings|word_embeddings_layernorm|ln_f|h\.\d+)\.)", "transformer."),)


def from_hf(hf: HFConfig) -> ModelConfig:
    if hf.typed("apply_residual_connection_post_layernorm", bool, False):
        raise UnsupportedModelError(
            f"{hf.source}: apply_residual_connection_post_layernorm=true is not supported (the residual stream "
            "would carry the layer-normed activations; tinyslm's blocks add to the un-normed block input)"
        )
    if hf.typed("pretraining_tp", int, 1) > 1 and hf.typed("slow_but_exact", bool, False):
        raise UnsupportedModelError(
            f"{hf.source}: pretraining_tp={hf['pretraining_tp']} with slow_but_exact=true is not supported "
            "(transformers then sums pretraining_tp column slices of the attention and MLP output projections "
            "and drops their biases); set slow_but_exact=false"
        )
    hidden = hf.typed("n_embed", int, None)  # BloomConfig: n_embed, when given, overrides hidden_size
    dim = hidden if hidden is not None else hf.typed("hidden_size", int, DEFAULTS["hidden_size"])
    return ModelConfig(
        name=hf.model_name("bloom"),
        family="bloom",
        vocab_size=hf.typed("vocab_size", int, DEFAULTS["vocab_size"]),
        dim=dim,
        n_layers=hf.sized("n_layer", SIZE_ALIASES["n_layer"], DEFAULTS["n_layer"]),
        n_heads=hf.sized("n_head", SIZE_ALIASES["n_head"], DEFAULTS["n_head"]),
        ffn_dim=4 * dim,  # BloomMLP is always 4 * hidden_size wide (n_inner is not read)
        max_seq_len=hf.typed("seq_length", int, DEFAULTS["seq_length"]),
        positions="alibi",
        qkv_bias=True,
        out_bias=True,
        ffn="plain",
        activation="gelu_tanh",  # bloom_gelu: the tanh approximation
        ffn_bias=True,
        norm="layernorm",
        norm_eps=hf.typed("layer_norm_epsilon", float, DEFAULTS["layer_norm_epsilon"]),
        embed_norm=True,  # word_embeddings_layernorm
        tie_embeddings=hf.typed("tie_word_embeddings", bool, True),
        bos_token_id=hf.get("bos_token_id", DEFAULTS["bos_token_id"]),
        eos_token_id=hf.get("eos_token_id", DEFAULTS["eos_token_id"]),
        dtype=hf.dtype(),
    )


def to_hf(config: ModelConfig) -> dict:
    """BloomConfig's keys, in the spelling transformers 5.23 writes. What this form cannot hold (RoPE,
    GQA, a gated FFN, another FFN width or activation, ...) reads back differently, and
    `check_expressible` refuses it with the fields named."""
    return dict(
        architectures=["BloomForCausalLM"],
        model_type="bloom",
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        layer_norm_epsilon=config.norm_eps,
        seq_length=config.max_seq_len,  # not a BloomConfig field: kept as an extra key, read back by from_hf
        apply_residual_connection_post_layernorm=False,
        pretraining_tp=1,
        slow_but_exact=False,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        dtype=config.dtype,
    )


GGUF = Arch("bloom", keys=BLOOM_KEYS, qkv_by_part=True)

FAMILY = Family(
    model_type="bloom",
    architecture="BloomForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=MODULES,
    fused=FUSED,
    aliases=ALIASES,
    examples="BLOOM-560M..176B, BLOOMZ-560M/1B1",
    gguf=GGUF,
)
