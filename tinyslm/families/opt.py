"""OPT family (`model_type: opt`): OPT-125M, 1.3B, 2.7B (and larger), Galactica.

Meta's fairseq decoder, pre-LN in the sizes listed:

    x = embed_tokens(ids) + embed_positions(position + 2)   the table has 2 extra rows in front (fairseq's
                                                            padding legacy): max_position_embeddings + 2 rows
    h = x + out_proj(attn(self_attn_layer_norm(x)))         q is multiplied by head_dim^-0.5 *before* q.k
    out = h + fc2(act(fc1(final_layer_norm(h))))            plain FFN (ReLU for OPT, GELU for Galactica)
    logits = lm_head(decoder.final_layer_norm(out))          head tied to embed_tokens by default, no bias

transformers derives positions from the attention mask (cumsum - 1); without padding that is
0, 1, 2, ..., which is what tinyslm uses. Two switches of OPTConfig map onto plain config fields:
`enable_bias` (all of q/k/v/out_proj, fc1, fc2) and `layer_norm_elementwise_affine` (false: every
LayerNorm has no weight and no bias, our "layernorm_plain"). OPT's LayerNorms always use torch's
default eps, 1e-5; config.json has no key for it.

Refused, because the model tinyslm builds would compute something else:
  * do_layer_norm_before=false (OPT-350M): post-LN blocks, norm after each residual add, and no final norm;
  * word_embed_proj_dim != hidden_size (OPT-350M again): embeddings of another width with project_in /
    project_out matrices around the decoder, which tinyslm has no modules for;
  * _remove_final_layer_norm=true (some fine-tunes from before transformers 4.20.1): no final norm.
Older files were saved from the bare decoder and lack the leading `model.`; they load too.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family
from .hf_config import ACTIVATIONS_TO_HF, HFConfig

# OPTConfig defaults (transformers), used when config.json omits a key
DEFAULTS = dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                max_position_embeddings=2048, activation_function="relu", bos_token_id=2, eos_token_id=2)  # fmt: skip
POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding.offset, fixed in the modeling code
NORM_EPS = 1e-5  # nn.LayerNorm's default; OPT never passes another

MODULES = {
    "tok_emb": "model.decoder.embed_tokens",
    "pos_emb": "model.decoder.embed_positions",
    "blocks.{i}.attn_norm": "model.decoder.layers.{i}.self_attn_layer_norm",
    "blocks.{i}.attn.wq": "model.decoder.layers.{i}.self_attn.q_proj",
    "blocks.{i}.attn.wk": "model.decoder.layers.{i}.self_attn.k_proj",
    "blocks.{i}.attn.wv": "model.decoder.layers.{i}.self_attn.v_proj",
    "blocks.{i}.attn.wo": "model.decoder.layers.{i}.self_attn.out_proj",
    "blocks.{i}.ffn_norm": "model.decoder.layers.{i}.final_layer_norm",  # the pre-FFN norm, despite its name
    "blocks.{i}.ffn.up": "model.decoder.layers.{i}.fc1",
    "blocks.{i}.ffn.down": "model.decoder.layers.{i}.fc2",
    "final_norm": "model.decoder.final_layer_norm",
    "head": "lm_head",
}
# files saved from OPTModel / the bare decoder name their tensors "decoder.*"
ALIASES_KEYS = ((r"^decoder\.", "model.decoder."),)


def _int(hf: HFConfig, key: str) -> int:
    return hf.typed(key, int, DEFAULTS[key])


def from_hf(hf: HFConfig) -> ModelConfig:
    dim = _int(hf, "hidden_size")
    proj = hf.typed("word_embed_proj_dim", int, None)  # null -> hidden_size (OPTConfig.__post_init__)
    if not hf.typed("do_layer_norm_before", bool, True):
        raise UnsupportedModelError(
            f"{hf.source}: do_layer_norm_before=false (post-LN blocks, as in OPT-350M) is not supported: tinyslm's "
            "blocks normalise before attention and FFN"
        )
    if proj is not None and proj != dim:
        raise UnsupportedModelError(
            f"{hf.source}: word_embed_proj_dim={proj} != hidden_size={dim} is not supported: the embeddings would "
            "need project_in / project_out matrices around the decoder, which tinyslm does not build"
        )
    if hf.typed("_remove_final_layer_norm", bool, False):
        raise UnsupportedModelError(
            f"{hf.source}: _remove_final_layer_norm=true (a checkpoint without the decoder's final LayerNorm) is "
            "not supported"
        )
    bias = hf.typed("enable_bias", bool, True)
    return ModelConfig(
        name=hf.model_name("opt"),
        family="opt",
        vocab_size=_int(hf, "vocab_size"),
        dim=dim,
        n_layers=_int(hf, "num_hidden_layers"),
        n_heads=_int(hf, "num_attention_heads"),
        ffn_dim=_int(hf, "ffn_dim"),
        max_seq_len=_int(hf, "max_position_embeddings"),
        positions="learned",
        position_offset=POSITION_OFFSET,
        qkv_bias=bias,
        out_bias=bias,
        ffn="plain",
        activation=hf.activation("activation_function", DEFAULTS["activation_function"]),
        ffn_bias=bias,
        norm="layernorm" if hf.typed("layer_norm_elementwise_affine", bool, True) else "layernorm_plain",
        norm_eps=NORM_EPS,
        tie_embeddings=hf.typed("tie_word_embeddings", bool, True),
        bos_token_id=hf.get("bos_token_id", DEFAULTS["bos_token_id"]),
        eos_token_id=hf.get("eos_token_id", DEFAULTS["eos_token_id"]),
        dtype=hf.dtype(),
    )


def to_hf(config: ModelConfig) -> dict:
    """OPTConfig's keys. What this form cannot hold (RoPE, GQA, separate bias switches, another eps, ...)
    reads back differently, and `check_expressible` refuses it with the fields named."""
    return dict(
        architectures=["OPTForCausalLM"],
        model_type="opt",
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        word_embed_proj_dim=config.dim,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        ffn_dim=config.ffn_dim,
        max_position_embeddings=config.max_seq_len,
        activation_function=ACTIVATIONS_TO_HF[config.activation],
        do_layer_norm_before=True,
        _remove_final_layer_norm=False,
        enable_bias=config.qkv_bias,
        layer_norm_elementwise_affine=config.norm != "layernorm_plain",
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        dtype=config.dtype,
    )


FAMILY = Family(
    model_type="opt",
    architecture="OPTForCausalLM",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=MODULES,
    aliases=ALIASES_KEYS,
    examples="OPT-125M/1.3B/2.7B (not OPT-350M: post-LN), Galactica-125M/1.3B",
)
