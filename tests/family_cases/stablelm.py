"""stablelm, shrunken real configs (vocab 512, 2 layers).

stabilityai/stablelm-2-1_6b config.json: hidden 2048, 32 heads of 64 (MHA), intermediate 5632 (2.75 x),
partial_rotary_factor 0.25, LayerNorms with bias, use_qkv_bias true, sequential block.
stabilityai/stablelm-2-12b config.json: hidden 5120, 32 heads / 8 KV, parallel residual with one
LayerNorm, qk_layernorm (one bias-free LayerNorm per head), no q/k/v biases; head_dim 24 here so that
0.25 of it (6 dims) is even.
"""

from . import Case

CASES = {
    "stablelm-2-1.6b": Case("StableLmConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=176,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                            partial_rotary_factor=0.25, use_qkv_bias=True, qk_layernorm=False,
                            use_parallel_residual=False, layer_norm_eps=1e-5, tie_word_embeddings=False,
                            bos_token_id=100, eos_token_id=100),
                            bf16_tolerance=1e-6),  # measured 0.0 (bit-identical), seeds 2-5
    "stablelm-2-12b-parallel-qk-norm": Case("StableLmConfig", dict(vocab_size=512, hidden_size=96,
                                            intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, partial_rotary_factor=0.25, use_qkv_bias=False,
                                            qk_layernorm=True, use_parallel_residual=True,
                                            tie_word_embeddings=False),
                                            # measured 0.0 (bit-identical), seeds 2-5: transformers sums
                                            # residual + attn + mlp, our order
                                            bf16_tolerance=1e-6),
}  # fmt: skip
