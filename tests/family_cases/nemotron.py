"""nemotron: Minitron-4B-Base (24 heads / 8 KV = 3 query heads per KV head, head_dim 128, partial_rotary_factor 0.5,
relu2 FFN with intermediate = 3 x hidden, LayerNorm1P with norm_eps 1e-5, untied, 4096 positions), shrunken.

Source: huggingface.co/nvidia/Minitron-4B-Base config.json. That file spells RoPE the legacy way (top-level
rope_theta and partial_rotary_factor) and carries NeMo's `kv_channels` instead of `head_dim`; the legacy rewrite
reproduces it, so head_dim must come from hidden_size / num_attention_heads and kv_channels must be ignored.
"""

from . import Case


def minitron_hub_form(config: dict) -> dict:
    """Minitron-4B-Base's config.json keys: kv_channels (not read by transformers) in place of head_dim."""
    config = dict(config)
    config["kv_channels"] = config.pop("head_dim")
    return config


def without_partial_rotary_factor(config: dict) -> dict:
    """No partial_rotary_factor anywhere: NemotronConfig then rotates half of each head (0.5)."""
    config = dict(config)
    del config["partial_rotary_factor"]
    return config


CASES = {
    "nemotron-minitron": Case("NemotronConfig", dict(vocab_size=512, hidden_size=96, intermediate_size=288,
                              num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                              partial_rotary_factor=0.5, hidden_act="relu2", norm_eps=1e-5,
                              max_position_embeddings=4096, tie_word_embeddings=False),
                              bf16_tolerance=1e-6,  # measured 0.0 (bit-identical), seeds 2-11
                              legacy_rewrite=minitron_hub_form),
    # Not a released shape: the switches Minitron leaves off (attention_bias, mlp_bias, a tied head), MQA, and an
    # explicit head_dim (24) that differs from hidden / heads (16); the legacy file omits partial_rotary_factor.
    "nemotron-switches": Case("NemotronConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=192,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=24,
                              attention_bias=True, mlp_bias=True, norm_eps=1e-5, tie_word_embeddings=True),
                              bf16_tolerance=1e-6,  # measured 0.0 (bit-identical), seeds 2-11
                              legacy_rewrite=without_partial_rotary_factor),
}  # fmt: skip
