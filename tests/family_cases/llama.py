"""llama: TinyLlama, SmolLM / SmolLM2, Llama-3.2, H2O-Danube3 and Llama's switches, shrunken (2 layers, vocab 512,
sometimes narrower). Sources: each model's config.json on the Hugging Face Hub; the numbers in brackets are the
sections of the original parity plan (4.1-4.5).

bf16: 1e-3 of the logit scale, well below bfloat16's own error against float32 (~6e-2 on a TinyLlama-width model);
measured bit-identical for every case, so any deviation in the order of operations or in where a cast happens
would show.

The two "-full-width" cases keep the real hidden sizes (the width is what stresses the numerics) at 2 layers and a
vocabulary of 1024: only the float32 logits and greedy tokens are checked, in the legacy config form.
"""

from . import Case

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # fmt: skip

CASES = {
    # TinyLlama-1.1B: GQA 32:4, untied head (4.1)
    "tinyllama": Case("LlamaConfig", dict(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                      num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5,
                      tie_word_embeddings=False)),
    # SmolLM-135M: 9 heads / 3 KV heads, tied head (4.4)
    "smollm": Case("LlamaConfig", dict(vocab_size=512, hidden_size=72, intermediate_size=192, num_hidden_layers=2,
                   num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
                   tie_word_embeddings=True)),
    # SmolLM2-1.7B: MHA (32 / 32), theta 130000, tied (4.4)
    "smollm2-mha": Case("LlamaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, rope_theta=130000.0, tie_word_embeddings=True)),
    # MQA: a single KV head (Gemma-2B's layout on a Llama body)
    "llama-mqa": Case("LlamaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=1)),
    # Llama-3.2-1B: llama3 RoPE scaling, tied head (4.5)
    "llama3.2": Case("LlamaConfig", dict(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
                     rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True)),
    # h2o-danube3: head_dim 96 independent of hidden / heads; here 24 != 64 / 4
    "danube-headdim": Case("LlamaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                           rope_theta=100000.0)),
    # Llama with attention_bias and mlp_bias switched on
    "llama-bias": Case("LlamaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True)),
    # TinyLlama-1.1B at its full width, 2 layers
    "tinyllama-full-width": Case("LlamaConfig", dict(vocab_size=1024, hidden_size=2048, intermediate_size=5632,
                                 num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=4,
                                 max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False),
                                 full_width=True, forms=("legacy",)),
}  # fmt: skip
