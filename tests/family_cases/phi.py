"""phi and phi3, shrunken real configs (vocab 512, 2 layers).

phi: microsoft/phi-2 config.json (hidden 2560, 32 heads of 80, partial_rotary_factor 0.4, gelu_new,
parallel block with one LayerNorm, biases everywhere including lm_head); microsoft/phi-1_5 config.json
(hidden 2048, 32 heads of 64, partial_rotary_factor 0.5) with qk_layernorm switched on (no released
checkpoint sets it) and 2 KV heads to exercise num_key_value_heads.
phi3: microsoft/Phi-3-mini-4k-instruct config.json (hidden 3072, 32 heads of 96, MHA, sliding_window 2047
in every layer, rms_norm_eps 1e-5), window shrunk to 5 so prompts run past it; microsoft/Phi-4-mini-instruct
config.json (24 heads / 8 KV, partial_rotary_factor 0.75, tied embeddings) without its LongRoPE scaling
(not supported) and without a window.
"""

from . import Case


def phi3_hub_form(cfg: dict) -> dict:
    """Phi-3-mini-4k-instruct's config.json also carries attention_bias (false), a key Phi3Config does not use."""
    return {**cfg, "attention_bias": False}


CASES = {
    "phi-2": Case("PhiConfig", dict(vocab_size=512, hidden_size=80, intermediate_size=320, num_hidden_layers=2,
                  num_attention_heads=4, partial_rotary_factor=0.4, hidden_act="gelu_new", layer_norm_eps=1e-5,
                  max_position_embeddings=2048, qk_layernorm=False, tie_word_embeddings=False,
                  bos_token_id=50, eos_token_id=50),
                  # measured 8.9e-3 (max over 5 prompts), with gelu_new written out as transformers does:
                  # PhiDecoderLayer sums attn + mlp + residual, ours x + attn + ffn (in its order the diff
                  # measured 0)
                  bf16_tolerance=1.1e-2),
    "phi-1.5-qk-layernorm": Case("PhiConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=256,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 partial_rotary_factor=0.5, qk_layernorm=True, tie_word_embeddings=False),
                                 # measured 9.3e-3 (max over 5 prompts): the residual sum's order (see phi-2)
                                 bf16_tolerance=1.2e-2),
    "phi3-mini-4k": Case("Phi3Config", dict(vocab_size=512, hidden_size=64, intermediate_size=176,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, sliding_window=5,
                         max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=500, pad_token_id=500),
                         window=5, legacy_rewrite=phi3_hub_form,
                         bf16_tolerance=1e-6),  # measured 0.0 (bit-identical), seeds 2-5
    "phi3-phi4-mini-shape-no-window": Case("Phi3Config", dict(vocab_size=512, hidden_size=96, intermediate_size=256,
                                           num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                                           partial_rotary_factor=0.75, sliding_window=None,
                                           tie_word_embeddings=True, eos_token_id=500,
                                           pad_token_id=499),
                                           bf16_tolerance=1e-6),  # measured 0.0 (bit-identical), seeds 2-5
}  # fmt: skip
