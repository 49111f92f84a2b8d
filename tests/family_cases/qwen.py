"""qwen2 and qwen3: Qwen2.5-0.5B and Qwen3-0.6B, and their switches, shrunken (2 layers, vocab 512). Sources: each
model's config.json on the Hugging Face Hub; the numbers in brackets are the sections of the original parity plan.

bf16: 1e-3 of the logit scale (measured bit-identical; see llama.py). "qwen2.5-0.5b-full-width" keeps Qwen2.5-0.5B's
real hidden size at 2 layers and a vocabulary of 1024 (float32 logits and greedy tokens only, legacy config form).
"""

from . import Case

CASES = {
    # Qwen2.5-0.5B: q/k/v bias, 14 / 2 heads, theta 1e6, tied (4.2)
    "qwen2.5": Case("Qwen2Config", dict(vocab_size=512, hidden_size=112, intermediate_size=608, num_hidden_layers=2,
                    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                    rms_norm_eps=1e-6, tie_word_embeddings=True)),
    # Qwen2 untied, with the sliding_window value real configs carry (disabled by use_sliding_window=false)
    "qwen2-untied": Case("Qwen2Config", dict(vocab_size=512, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
                         use_sliding_window=False, tie_word_embeddings=False)),
    # Qwen3-0.6B: QK-norm, head_dim 128 != 1024 / 16, tied (4.3); here 32 != 64 / 4
    "qwen3": Case("Qwen3Config", dict(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=40960,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    # Qwen3 with attention_bias, untied
    "qwen3-bias": Case("Qwen3Config", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=8, num_key_value_heads=1, head_dim=16, attention_bias=True,
                       tie_word_embeddings=False)),
    # Qwen2.5-0.5B at its full width, 2 layers
    "qwen2.5-0.5b-full-width": Case("Qwen2Config", dict(vocab_size=1024, hidden_size=896, intermediate_size=4864,
                                    num_hidden_layers=2, num_attention_heads=14, num_key_value_heads=2,
                                    max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                                    tie_word_embeddings=True),
                                    full_width=True, forms=("legacy",)),
}  # fmt: skip
