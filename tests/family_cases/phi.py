"""phi and phi3, shrunken real configs (vocab 512, 2 layers).

phi: microsoft/phi-2 config.json (hidden 2560, 32 heads of 80, partial_rotary_factor 0.4, gelu_new,
parallel block with one LayerNorm, biases everywhere including lm_head); microsoft/phi-1_5 config.json
(hidden 2048, 32 heads of 64, partial_rotary_factor 0.5) with qk_layernorm switched on (no released
checkpoint sets it) and 2 KV heads to exercise num_key_value_heads.
phi3: microsoft/Phi-3-mini-4k-instruct config.json (hidden 3072, 32 heads of 96, MHA, sliding_window 2047
in every layer, rms_norm_eps 1e-5), window shrunk to 5 so prompts run past it; microsoft/Phi-4-mini-instruct
config.json (24 heads / 8 KV, partial_rotary_factor 0.75, tied embeddings) without a window, with and without
its LongRoPE scaling.

LongRoPE (microsoft/Phi-3-mini-128k-instruct and Phi-4-mini-instruct config.json: rope_scaling of type longrope
with one short and one long factor per rotated pair, the top-level original_max_position_embeddings 4096,
max_position_embeddings 131072, so the cos/sin factor is sqrt(1 + ln 32 / ln 4096)): made-up factor lists of
the right length (short near 1, long growing to ~50), the context shrunk to 16 of 512 positions (factor 32
again, cos/sin times 1.5). phi3-mini-128k-longrope: an 11-token prompt uses short_factor, and its 16-token
greedy continuation crosses into long_factor mid-decode (transformers' cached keys keep the short rotation;
layers/rope.py). phi3-phi4-mini-longrope-long-prompt: a 20-token prompt, long_factor from the first forward. The
cached-decode test draws at most 15 tokens, below the switch, where cached and full forwards agree; past it
(crosses_rope_switch) the harness compares the greedy tokens, not decode steps against a full forward.
"""

from . import Case


def phi3_hub_form(cfg: dict) -> dict:
    """Phi-3-mini-4k-instruct's config.json also carries attention_bias (false), a key Phi3Config does not use."""
    return {**cfg, "attention_bias": False}


def phi3_128k_hub_form(cfg: dict) -> dict:
    """Phi-3-mini-128k-instruct's config.json: the context only top-level (not in rope_scaling), attention_bias."""
    scaling = {k: v for k, v in cfg["rope_scaling"].items() if k != "original_max_position_embeddings"}
    return {**cfg, "rope_scaling": scaling, "attention_bias": False}


SHORT_FACTOR = [1.0, 1.02, 1.05, 1.1, 1.2, 1.4, 1.7, 2.0]  # head_dim 16: 8 rotated pairs
LONG_FACTOR = [1.1, 1.5, 2.5, 5.0, 10.0, 20.0, 35.0, 50.0]
LONGROPE = dict(rope_type="longrope", short_factor=SHORT_FACTOR, long_factor=LONG_FACTOR)
PHI4_LONGROPE = dict(rope_type="longrope", short_factor=SHORT_FACTOR[:6], long_factor=LONG_FACTOR[:6])  # 12 of 16 dims

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
    "phi3-mini-128k-longrope": Case("Phi3Config", dict(vocab_size=512, hidden_size=64, intermediate_size=176,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                    max_position_embeddings=512, original_max_position_embeddings=16,
                                    rope_parameters=LONGROPE, sliding_window=262144, rms_norm_eps=1e-5,
                                    tie_word_embeddings=False, eos_token_id=500, pad_token_id=500),
                                    legacy_rewrite=phi3_128k_hub_form, crosses_rope_switch=True,
                                    bf16_tolerance=1e-6),  # measured 0.0 (bit-identical), seeds 2-6
    "phi3-phi4-mini-longrope-long-prompt": Case("Phi3Config", dict(vocab_size=512, hidden_size=96,
                                                intermediate_size=256, num_hidden_layers=2, num_attention_heads=6,
                                                num_key_value_heads=2, partial_rotary_factor=0.75,
                                                max_position_embeddings=512, original_max_position_embeddings=16,
                                                rope_parameters=PHI4_LONGROPE, sliding_window=None,
                                                tie_word_embeddings=True, eos_token_id=500, pad_token_id=499),
                                                prompt=20,
                                                bf16_tolerance=1e-6),  # measured 0.0 (bit-identical), seeds 2-6
}  # fmt: skip
