"""mistral: H2O-Danube-1.8B (hidden 2560, 32 heads / 8 KV, head_dim 80, sliding_window 4096 in every layer;
h2oai/h2o-danube-1.8b-base config.json), shrunken; the window shrunk to 5 so prompts run past it."""

from . import Case

CASES = {
    "mistral-danube": Case("MistralConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=160,
                           num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=10,
                           sliding_window=5, max_position_embeddings=16384, rms_norm_eps=1e-6,
                           tie_word_embeddings=False), window=5),
    "mistral-no-window": Case("MistralConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=None,
                              tie_word_embeddings=True)),
}  # fmt: skip
