"""Parity with transformers for every supported family: logits and greedy tokens.

Each case is a real architecture, shrunken (fewer layers, smaller vocabulary, sometimes narrower),
built as a seeded random-init transformers model, saved with save_pretrained in both config.json
forms, and loaded through tinyslm's real loading path. Acceptance: float32 logits within 1e-5 of
the logit scale, and an identical 16-token greedy continuation (tinyslm decodes with its KV cache).
"""

import pytest
import torch
from hf_models import hf_greedy, write_hf_checkpoint

import tinyslm

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # fmt: skip

# name -> (transformers config class, hyper-parameters). Sources: each model's config.json on the Hugging Face Hub.
CASES = {
    # TinyLlama-1.1B: GQA 32:4, untied head (4.1)
    "tinyllama": ("LlamaConfig", dict(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                  num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5,
                  tie_word_embeddings=False)),
    # SmolLM-135M: 9 heads / 3 KV heads, tied head (4.4)
    "smollm": ("LlamaConfig", dict(vocab_size=512, hidden_size=72, intermediate_size=192, num_hidden_layers=2,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
               tie_word_embeddings=True)),
    # SmolLM2-1.7B: MHA (32 / 32), theta 130000, tied (4.4)
    "smollm2-mha": ("LlamaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, rope_theta=130000.0, tie_word_embeddings=True)),
    # MQA: a single KV head (Gemma-2B's layout on a Llama body)
    "llama-mqa": ("LlamaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=1)),
    # Llama-3.2-1B: llama3 RoPE scaling, tied head (4.5)
    "llama3.2": ("LlamaConfig", dict(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                 num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
                 rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True)),
    # h2o-danube3: head_dim 96 independent of hidden / heads; here 24 != 64 / 4
    "danube-headdim": ("LlamaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=24, rope_theta=100000.0)),
    # Llama with attention_bias and mlp_bias switched on
    "llama-bias": ("LlamaConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True)),
    # Qwen2.5-0.5B: q/k/v bias, 14 / 2 heads, theta 1e6, tied (4.2)
    "qwen2.5": ("Qwen2Config", dict(vocab_size=512, hidden_size=112, intermediate_size=608, num_hidden_layers=2,
                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                rms_norm_eps=1e-6, tie_word_embeddings=True)),
    # Qwen2 untied, with the sliding_window value real configs carry (disabled by use_sliding_window=false)
    "qwen2-untied": ("Qwen2Config", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, sliding_window=8, use_sliding_window=False,
                     tie_word_embeddings=False)),
    # Qwen3-0.6B: QK-norm, head_dim 128 != 1024 / 16, tied (4.3); here 32 != 64 / 4
    "qwen3": ("Qwen3Config", dict(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=40960,
              rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    # Qwen3 with attention_bias, untied
    "qwen3-bias": ("Qwen3Config", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=8, num_key_value_heads=1, head_dim=16, attention_bias=True,
                   tie_word_embeddings=False)),
}  # fmt: skip

# Full hidden sizes, 2 layers, small vocabulary (the width is what stresses the numerics).
FULL_WIDTH = {
    "tinyllama-full-width": ("LlamaConfig", dict(vocab_size=1024, hidden_size=2048, intermediate_size=5632,
                             num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=4,
                             max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "qwen2.5-0.5b-full-width": ("Qwen2Config", dict(vocab_size=1024, hidden_size=896, intermediate_size=4864,
                                num_hidden_layers=2, num_attention_heads=14, num_key_value_heads=2,
                                max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                                tie_word_embeddings=True)),
}  # fmt: skip


def assert_parity(folder, hf_model, vocab: int, new_tokens: int = 16):
    model = tinyslm.load_pretrained(folder)
    ids = torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), hf_model(ids).logits
    scale = theirs.abs().max()
    assert (ours - theirs).abs().max() <= 1e-5 * scale, f"max diff {(ours - theirs).abs().max():.3e}, scale {scale:.3f}"
    expected = hf_greedy(hf_model, ids, new_tokens)
    assert torch.equal(tinyslm.generate(model, ids, new_tokens), expected)
    return model


@pytest.mark.parametrize("legacy", [False, True], ids=["current-config", "legacy-hub-config"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_greedy_tokens_match_transformers(case, legacy, tmp_path):
    config_cls, hparams = CASES[case]
    hf_model = write_hf_checkpoint(tmp_path, config_cls, legacy=legacy, **hparams)
    model = assert_parity(tmp_path, hf_model, hparams["vocab_size"])
    assert model.config.tie_embeddings == hparams.get("tie_word_embeddings", False)


@pytest.mark.parametrize("case", sorted(FULL_WIDTH))
def test_full_width_two_layer_models_match_transformers(case, tmp_path):
    config_cls, hparams = FULL_WIDTH[case]
    hf_model = write_hf_checkpoint(tmp_path, config_cls, legacy=True, **hparams)
    assert_parity(tmp_path, hf_model, hparams["vocab_size"])


def test_tied_head_is_one_parameter(tmp_path):
    config_cls, hparams = CASES["smollm"]
    write_hf_checkpoint(tmp_path, config_cls, **hparams)
    model = tinyslm.load_pretrained(tmp_path)
    assert model.head.weight is model.tok_emb.weight
    with torch.no_grad():
        model.tok_emb.weight[0, 0] += 1.0
    assert model.head.weight[0, 0] == model.tok_emb.weight[0, 0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bfloat16_logits_match_transformers_eager_attention(case, tmp_path):
    """In bfloat16 tinyslm follows transformers' eager path op for op (fp32 norms and softmax, bf16 matmuls).

    Measured: bit-identical for every case here. The bound, 1e-3 of the logit scale, is well below
    bfloat16's own error against float32 (~6e-2 on a TinyLlama-width model), so any deviation in the
    order of operations or in where a cast happens would show.
    """
    transformers = pytest.importorskip("transformers")
    config_cls, hparams = CASES[case]
    write_hf_checkpoint(tmp_path, config_cls, **hparams)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.bfloat16, attn_implementation="eager"
    ).eval()
    ours = tinyslm.load_pretrained(tmp_path, dtype=torch.bfloat16)
    ids = torch.randint(0, hparams["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = ours(ids).float(), theirs(ids).logits.float()
    assert (a - b).abs().max() <= 1e-3 * b.abs().max(), f"bf16 diff {(a - b).abs().max():.3e}"
