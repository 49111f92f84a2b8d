"""GPT-2 family (`model_type: gpt2`): Cerebras-GPT (111M-13B), LaMini-GPT, and OpenAI's GPT-2 itself.

The original learned-position decoder:

    x = wte(ids) + wpe(position)                           positions 0, 1, ... (no offset, no padding logic)
    h = x + c_proj(attn(ln_1(x)))                          LayerNorm with bias, biases on every projection
    out = h + mlp.c_proj(act(mlp.c_fc(ln_2(h))))           plain FFN, n_inner (default 4 * n_embd) wide
    logits = lm_head(ln_f(out))                            head tied to wte by default, no bias

Checkpoint quirks handled by the key map: every projection is a `Conv1D` stored [in, out]
(transposed with respect to nn.Linear), and `c_attn` holds q, k and v side by side in its
output columns. Older files drop the `transformer.` prefix and carry two buffers per layer
(`attn.bias`, the causal mask, and `attn.masked_bias`); both are accepted.

GPT2Config spells its sizes n_embd / n_layer / n_head / n_positions, but also accepts the
generic names (hidden_size, ...) through its attribute map, and then the generic name wins;
`_sized` reads them the same way. `n_ctx` in old files is not read by transformers, nor here.

Refused: `scale_attn_by_inverse_layer_idx` (each layer's softmax scale divided by its depth: a
per-layer scale tinyslm has no field for) and `add_cross_attention` (encoder-decoder use only).
`reorder_and_upcast_attn` only changes how transformers' eager path rounds (scores in float32),
so it is accepted and ignored.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UnsupportedModelError
from . import Family, Fused
from .gguf_arch import GPT2_KEYS, Arch
from .hf_config import ACTIVATIONS_TO_HF, HFConfig

# GPT2Config defaults (transformers), used when config.json omits a key
DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, layer_norm_epsilon=1e-5,
                activation_function="gelu_new", bos_token_id=50256, eos_token_id=50256)  # fmt: skip
# GPT2Config.attribute_map: the generic names transformers also accepts (they win when both are present)
ALIASES = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
           "n_positions": "max_position_embeddings"}  # fmt: skip

MODULES = {
    "tok_emb": "transformer.wte",
    "pos_emb": "transformer.wpe",
    "blocks.{i}.attn_norm": "transformer.h.{i}.ln_1",
    "blocks.{i}.ffn_norm": "transformer.h.{i}.ln_2",
    "final_norm": "transformer.ln_f",
    "head": "lm_head",
}
FUSED = (
    # Conv1D weights are [in, out]: the q, k, v blocks are column blocks of c_attn, i.e. row blocks once transposed
    Fused("transformer.h.{i}.attn.c_attn", ("blocks.{i}.attn.wq", "blocks.{i}.attn.wk", "blocks.{i}.attn.wv"), transposed=True),
    Fused("transformer.h.{i}.attn.c_proj", ("blocks.{i}.attn.wo",), transposed=True),
    Fused("transformer.h.{i}.mlp.c_fc", ("blocks.{i}.ffn.up",), transposed=True),
    Fused("transformer.h.{i}.mlp.c_proj", ("blocks.{i}.ffn.down",), transposed=True),
)  # fmt: skip
# files saved from a bare GPT2Model (openai-community/gpt2, for one) have no "transformer." prefix
ALIASES_KEYS = ((r"^(?=(?:wte|wpe|ln_f|h\.\d+)\.)", "transformer."),)
# the causal-mask buffers older transformers versions saved with every layer; never loaded
IGNORED = (r"transformer\.h\.\d+\.attn\.(?:bias|masked_bias)",)


def from_hf(hf: HFConfig) -> ModelConfig:
    for flag, why in (
        ("scale_attn_by_inverse_layer_idx", "layer i's attention scale divided by i + 1: no tinyslm field"),
        ("add_cross_attention", "cross-attention layers belong to encoder-decoder use"),
    ):
        if hf.typed(flag, bool, False):
            raise UnsupportedModelError(f"{hf.source}: {flag}=true is not supported ({why})")
    dim, n_inner = hf.sized("n_embd", ALIASES["n_embd"], DEFAULTS["n_embd"]), hf.typed("n_inner", int, None)
    return ModelConfig(
        name=hf.model_name("gpt2"),
        family="gpt2",
        vocab_size=hf.typed("vocab_size", int, DEFAULTS["vocab_size"]),
        dim=dim,
        n_layers=hf.sized("n_layer", ALIASES["n_layer"], DEFAULTS["n_layer"]),
        n_heads=hf.sized("n_head", ALIASES["n_head"], DEFAULTS["n_head"]),
        ffn_dim=4 * dim if n_inner is None else n_inner,  # null -> 4 * n_embd
        max_seq_len=hf.sized("n_positions", ALIASES["n_positions"], DEFAULTS["n_positions"]),
        positions="learned",
        qkv_bias=True,
        out_bias=True,
        # scale_attn_weights=false drops the 1/sqrt(head_dim) factor altogether
        attn_scale=None if hf.typed("scale_attn_weights", bool, True) else 1.0,
        ffn="plain",
        activation=hf.activation("activation_function", DEFAULTS["activation_function"]),
        ffn_bias=True,
        norm="layernorm",
        norm_eps=hf.typed("layer_norm_epsilon", float, DEFAULTS["layer_norm_epsilon"]),
        tie_embeddings=hf.typed("tie_word_embeddings", bool, True),
        bos_token_id=hf.get("bos_token_id", DEFAULTS["bos_token_id"]),
        eos_token_id=hf.get("eos_token_id", DEFAULTS["eos_token_id"]),
        dtype=hf.dtype(),
    )


def to_hf(config: ModelConfig) -> dict:
    """GPT2Config's keys. What this form cannot hold (RoPE, GQA, gated FFN, ...) reads back differently,
    and `check_expressible` refuses it with the fields named."""
    return dict(
        architectures=["GPT2LMHeadModel"],
        model_type="gpt2",
        vocab_size=config.vocab_size,
        n_embd=config.dim,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=config.ffn_dim,
        n_positions=config.max_seq_len,
        activation_function=ACTIVATIONS_TO_HF[config.activation],
        layer_norm_epsilon=config.norm_eps,
        scale_attn_weights=config.attn_scale != 1.0,
        scale_attn_by_inverse_layer_idx=False,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        dtype=config.dtype,
    )


GGUF = Arch("gpt2", keys=GPT2_KEYS)

FAMILY = Family(
    model_type="gpt2",
    architecture="GPT2LMHeadModel",
    from_hf=from_hf,
    to_hf=to_hf,
    modules=MODULES,
    fused=FUSED,
    aliases=ALIASES_KEYS,
    ignored=IGNORED,
    examples="Cerebras-GPT-111M..13B, LaMini-GPT-124M/774M, GPT-2",
    gguf=GGUF,
)
