"""opt: OPT-125M (hidden 768, ffn_dim 3072, 12 layers, 12 heads, 2048 positions + 2 offset rows, ReLU, biases and
affine LayerNorms, tied head, bos/eos 2; huggingface.co/facebook/opt-125m config.json) and Galactica (OPT's code with
GELU and, as the Galactica paper describes the architecture, no biases in the dense layers or LayerNorms: the
enable_bias / layer_norm_elementwise_affine switches transformers added for it, github.com/huggingface/transformers
pull 20390; bos 0), shrunken: vocab 512, 2 layers, head_dim 16, 40 positions (42 table rows).
"""

from . import Case

# keys transformers 5 writes that the 2022 Hub files do not carry, dropped where they hold their defaults
_NEWER_KEYS = ("rope_theta", "rope_scaling", "tie_word_embeddings")
_SWITCHES = ("enable_bias", "layer_norm_elementwise_affine")  # added after OPT's release (PR 20390; default true)


def hub_form(cfg: dict) -> dict:
    """config.json as facebook/opt-125m ships it: no switches at their defaults, its unused extras kept."""
    cfg = {k: v for k, v in cfg.items() if k not in _NEWER_KEYS and not (k in _SWITCHES and v is True)}
    return {**cfg, "activation_dropout": 0.0, "prefix": "</s>", "architectures": ["OPTForCausalLM"]}


CASES = {
    "opt-125m": Case("OPTConfig", dict(vocab_size=512, hidden_size=64, ffn_dim=256, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=40, word_embed_proj_dim=64,
                     activation_function="relu", do_layer_norm_before=True, pad_token_id=1, bos_token_id=2,
                     eos_token_id=2), legacy_rewrite=hub_form,
                     bf16_tolerance=1e-6),  # measured 0: bit-identical (the q scale 1/4 is a power of two)
    # OPT-2.7B: hidden 2560, 32 heads -> head_dim 80, whose scale 80^-0.5 is not a power of two
    # (huggingface.co/facebook/opt-2.7b config.json); shrunken to head_dim 20
    "opt-2.7b": Case("OPTConfig", dict(vocab_size=512, hidden_size=80, ffn_dim=320, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=40, word_embed_proj_dim=80,
                     activation_function="relu", pad_token_id=1, bos_token_id=2, eos_token_id=2),
                     # measured 8.8e-3 (max over 5 prompts): transformers scales q (in bf16) before q.k,
                     # ours scale the scores (with q pre-scaled the diff measured 0)
                     bf16_tolerance=1.1e-2, legacy_rewrite=hub_form),
    "opt-galactica": Case("OPTConfig", dict(vocab_size=512, hidden_size=64, ffn_dim=256, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=40, activation_function="gelu",
                          enable_bias=False, layer_norm_elementwise_affine=False, pad_token_id=1, bos_token_id=0,
                          eos_token_id=2), legacy_rewrite=hub_form,
                          # measured 3.1e-4 (max over 5 prompts; 0 on some): the parameter-free LayerNorm runs in
                          # float32 here (OLMo's rule), OPT's in bfloat16
                          bf16_tolerance=5e-4),
}  # fmt: skip
