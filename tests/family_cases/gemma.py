"""gemma, gemma2, gemma3_text: shrunken copies of released Gemma configs (each case names the
huggingface.co repo whose config.json it mirrors), vocabulary 512, sliding windows of 4-5 so prompts
run past them.

bf16: every case measured a max relative logit difference of 0.0 against transformers' eager path
(bit-identical on CPU, torch 2.13 / transformers 5.23), so the tolerance is 1e-5: any real
difference (one bf16 rounding step is ~4e-3 of the logit scale) fails.
"""

from . import Case


def gemma3_hub_legacy(cfg: dict) -> dict:
    """Gemma-3 config.json as released (transformers 4.50): one rope_theta for the global layers,
    rope_local_base_freq for the sliding ones, rope_scaling (global only); the layer layout as
    `sliding_window_pattern` where it is one (gemma-3-1b), else an explicit list plus the
    `_sliding_window_pattern` key transformers does not read (gemma-3-270m)."""
    cfg = dict(cfg)
    rope = cfg.pop("rope_parameters")
    full, sliding = dict(rope["full_attention"]), rope["sliding_attention"]
    cfg["rope_theta"], cfg["rope_local_base_freq"] = full.pop("rope_theta"), sliding["rope_theta"]
    cfg["rope_scaling"] = None if full["rope_type"] == "default" else full
    types = cfg["layer_types"]
    pattern = types.index("full_attention") + 1
    if all((t == "full_attention") == ((i + 1) % pattern == 0) for i, t in enumerate(types)):
        del cfg["layer_types"]
        cfg["sliding_window_pattern"] = pattern
    else:
        cfg["_sliding_window_pattern"] = 6
    return cfg


CASES = {
    # google/gemma-2b: MQA (8 query heads, 1 KV head), head_dim = hidden / heads, GeGLU 8x wide, tied head,
    # and the released hidden_act "gelu" (which transformers runs as the tanh approximation)
    "gemma-2b": Case("GemmaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=1, head_dim=16, hidden_act="gelu",
                     max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True),
                     bf16_tolerance=1e-5),
    # google/gemma-7b: MHA, head_dim 256 with 16 heads at hidden 3072 (attention 4096 wide != hidden);
    # untied here so the lm_head mapping is exercised too
    "gemma-7b": Case("GemmaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, head_dim=24, hidden_act="gelu_pytorch_tanh",
                     tie_word_embeddings=False), bf16_tolerance=1e-5),
    # google/gemma-2-2b: 8 heads / 4 KV x 256 (2048 wide at hidden 2304), query_pre_attn_scalar = head_dim,
    # sliding window (4096 -> 5) on even layers, attention cap 50, final cap 30
    "gemma2-2b": Case("Gemma2Config", dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32,
                      sliding_window=5, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                      hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192),
                      prompt=12, window=5, bf16_tolerance=1e-5),
    # google/gemma-2-27b: query_pre_attn_scalar = hidden / heads (144), not head_dim (128); 3 layers (sliding,
    # full, sliding); caps lowered from 50 / 30 so that they bind on a tiny random model
    "gemma2-27b": Case("Gemma2Config", dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=24, query_pre_attn_scalar=16,
                       sliding_window=4, attn_logit_softcapping=0.5, final_logit_softcapping=1.0),
                       prompt=11, window=4, bf16_tolerance=1e-5),
    # google/gemma-3-1b: 4 heads / 1 KV x 256 at hidden 1152, QK-norm, window 512 -> 4, one global layer per
    # sliding_window_pattern (6 -> 3), RoPE bases 1e6 (global) / 1e4 (local), no soft-caps
    "gemma3-1b": Case("Gemma3TextConfig", dict(vocab_size=512, hidden_size=48, intermediate_size=288,
                      num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                      query_pre_attn_scalar=32, sliding_window=4, sliding_window_pattern=3,
                      max_position_embeddings=32768, final_logit_softcapping=None, attn_logit_softcapping=None),
                      prompt=13, window=4, legacy_rewrite=gemma3_hub_legacy, bf16_tolerance=1e-5),
    # google/gemma-3-270m ships an explicit layer_types list (here an irregular one); the global table scaled
    # linearly x8 as in gemma-3-4b; attn_logit_softcapping set, which transformers ignores; a final cap that binds
    "gemma3-270m": Case("Gemma3TextConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=192,
                        num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                        query_pre_attn_scalar=24, sliding_window=5, layer_types=["sliding_attention",
                        "full_attention", "sliding_attention", "sliding_attention", "full_attention"],
                        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
                        attn_logit_softcapping=0.5, final_logit_softcapping=1.0, max_position_embeddings=32768),
                        prompt=14, window=5, legacy_rewrite=gemma3_hub_legacy, bf16_tolerance=1e-5),
}  # fmt: skip
