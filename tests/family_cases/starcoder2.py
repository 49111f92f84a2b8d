"""starcoder2: StarCoder2-3B (hidden 3072, 24 heads / 2 KV, head_dim 128, sliding_window 4096 in every layer,
LayerNorms and a plain gelu_tanh MLP with biases, tied head; bigcode/starcoder2-3b config.json), shrunken; the
window shrunk to 5 so prompts run past it."""

from . import Case

CASES = {
    "starcoder2-3b": Case("Starcoder2Config", dict(vocab_size=512, hidden_size=64, intermediate_size=256,
                          num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, sliding_window=5,
                          max_position_embeddings=16384, rope_theta=999999.4420358813, norm_epsilon=1e-5,
                          use_bias=True, tie_word_embeddings=True), window=5),
    # use_bias=false, untied, no window: the switches a StarCoder2 config.json has
    "starcoder2-no-bias": Case("Starcoder2Config", dict(vocab_size=512, hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, sliding_window=None,
                               use_bias=False, tie_word_embeddings=False)),
}  # fmt: skip
