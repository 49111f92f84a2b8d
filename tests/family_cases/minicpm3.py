"""minicpm3: openbmb/MiniCPM3-4B config.json (hidden 2560, 40 heads, MLA with query LoRA: q_lora_rank 768,
kv_lora_rank 256, qk_nope_head_dim 64, qk_rope_head_dim 32, v_head_dim = hidden / heads = 64; LongRoPE with
16 short/long factors; scale_emb 12, scale_depth 1.4, dim_model_base 256; tied head), shrunken with the same
ratios (dn = 2 dr, r = 2 dn, rq = 3/2 r, dv = hidden / heads).

LongRoPE: made-up factor lists (4 entries, one per rotated pair; short near 1, long growing as MiniCPM3-4B's
do) that differ, so that the one in use shows; original_max_position_embeddings is 16 of 64 positions (cos/sin
x sqrt(1 + ln 4 / ln 16); MiniCPM3-4B's factor is 1), so an 11-token prompt uses short_factor and its 16-token greedy continuation crosses into long_factor (transformers'
cached keys keep the short rotation; see layers/rope.py). The cached-decode test draws at most 15 tokens,
never crossing, where cached and full forwards agree; past it (crosses_rope_switch) the harness compares the greedy
tokens, not decode steps against a full forward.

Residual and logit scaling: minicpm3-4b-scaled has MiniCPM3-4B's at 2 layers (scale_depth chosen so the
residual scale is 1.4 / sqrt(62) = 0.1778 as in the 62-layer model; hidden / dim_model_base = 64 / 8 = 8,
MiniCPM3-4B: 10); minicpm3-longrope-unscaled sets scale_depth and dim_model_base to null (transformers'
no-op values, so both are 1).
"""

from . import Case

LONGROPE = dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=16,
                short_factor=[1.0, 1.05, 1.3, 2.1], long_factor=[1.06, 2.09, 7.5, 16.9])  # fmt: skip
SHAPE = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
             v_head_dim=None, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=True,
             bos_token_id=1, eos_token_id=[2, 500], rope_parameters=LONGROPE, scale_emb=12)  # fmt: skip

CASES = {
    "minicpm3-4b-scaled": Case("MiniCPM3Config", dict(SHAPE, scale_depth=1.4 * (2 / 62) ** 0.5, dim_model_base=8),
                               bf16_tolerance=1e-6,  # measured 0.0 (bit-identical), seeds 2-6
                               crosses_rope_switch=True),
    "minicpm3-longrope-unscaled": Case("MiniCPM3Config", dict(SHAPE, scale_depth=None, dim_model_base=None),
                                       bf16_tolerance=1e-6,  # measured 0.0 (bit-identical), seeds 2-6
                                       crosses_rope_switch=True),
}

