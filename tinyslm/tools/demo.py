"""`tinyslm demo`: the whole pipeline on small models of real architectures, offline.

For each architecture (real vocabulary, head layout, biases and RoPE settings; fewer and
narrower layers so it runs in seconds on a laptop CPU):
    1. build a randomly initialised tinyslm model and write it as an HF checkpoint folder
    2. load the folder back through the same path a real download takes (load_pretrained)
    3. if transformers is installed, compare logits and a greedy continuation with it
    4. decode greedily with the KV cache and time it
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..checkpoint import load_pretrained, save_pretrained
from ..config import ModelConfig
from ..generate import generate
from ..model import CausalLM
from .stats import human

# Real architectures, scaled down: the real vocabulary, head grouping, biases and RoPE settings.
DEMO_CONFIGS = [
    ModelConfig(  # TinyLlama-1.1B: 32 heads / 4 KV heads (GQA 8:1), untied head, theta 1e4
        name="tinyllama-shaped", family="llama", vocab_size=32000, dim=256, n_layers=4, n_heads=16,
        n_kv_heads=2, ffn_dim=704, max_seq_len=2048, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False,
    ),
    ModelConfig(  # Qwen2.5-0.5B: 14 heads / 2 KV heads, q/k/v bias, tied head, theta 1e6
        name="qwen2.5-shaped", family="qwen2", vocab_size=151936, dim=224, n_layers=4, n_heads=14,
        n_kv_heads=2, ffn_dim=1216, max_seq_len=32768, rope_theta=1e6, norm_eps=1e-6, qkv_bias=True,
        tie_embeddings=True,
    ),
    ModelConfig(  # Qwen3-0.6B: head_dim 128 != dim / heads, QK-norm, tied head
        name="qwen3-shaped", family="qwen3", vocab_size=151936, dim=256, n_layers=4, n_heads=4,
        n_kv_heads=2, head_dim=128, ffn_dim=768, max_seq_len=40960, rope_theta=1e6, norm_eps=1e-6,
        qk_norm=True, tie_embeddings=True,
    ),
    ModelConfig(  # Gemma-2-2B: sandwich norms, (1 + w) RMSNorm, scaled embedding, soft-caps, every other layer windowed
        name="gemma2-shaped", family="gemma2", vocab_size=256000, dim=64, n_layers=4, n_heads=4, n_kv_heads=2,
        head_dim=32, ffn_dim=256, max_seq_len=8192, rope_theta=10000.0, norm="rmsnorm_1p", norm_eps=1e-6,
        activation="gelu_tanh", embed_scale=64**0.5, sandwich_norms=True, attn_softcap=50.0, final_softcap=30.0,
        sliding_window=8, sliding_pattern=2, tie_embeddings=True,
    ),
    ModelConfig(  # Phi-2: attention and FFN in parallel off one LayerNorm, partial rotary 0.4, biases, head bias
        name="phi2-shaped", family="phi", vocab_size=51200, dim=160, n_layers=4, n_heads=2, ffn_dim=640,
        max_seq_len=2048, partial_rotary_factor=0.4, block="parallel_shared_norm", norm="layernorm", ffn="plain",
        activation="gelu_new", qkv_bias=True, out_bias=True, ffn_bias=True, head_bias=True, bos_token_id=50256,
        eos_token_id=50256,
    ),
    ModelConfig(  # Bloom-560m: ALiBi instead of RoPE, LayerNorm on the embedding, plain tanh-GELU FFN
        name="bloom-shaped", family="bloom", vocab_size=250880, dim=64, n_layers=4, n_heads=16, ffn_dim=256,
        max_seq_len=2048, positions="alibi", embed_norm=True, norm="layernorm", ffn="plain", activation="gelu_tanh",
        qkv_bias=True, out_bias=True, ffn_bias=True, tie_embeddings=True, bos_token_id=1, eos_token_id=2,
    ),
]  # fmt: skip


def run_demo(new_tokens: int = 32, seed: int = 0, out=print) -> list[dict]:
    try:
        from .parity import check_parity, import_transformers  # noqa: PLC0415

        import_transformers()
        have_reference = True
    except Exception:  # noqa: BLE001  (any import failure means: no reference available)
        have_reference = False
    if not have_reference:
        out("transformers is not installed: parity is skipped (pip install 'tinyslm[test]' to enable it)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyslm-demo-") as tmp:
        for config in DEMO_CONFIGS:
            folder = Path(tmp) / config.name
            save_pretrained(CausalLM(config).init_weights(seed=seed), folder)  # tinyslm's own writer
            model = load_pretrained(folder)
            row = {"family": config.family, "model": config.name, "parameters": sum(p.numel() for p in model.parameters())}
            if have_reference:
                report = check_parity(folder, new_tokens=16)
                row["max_logit_diff"], row["parity"] = report.max_abs_diff, "ok" if report.ok else "FAILED"
            prompt = torch.randint(0, config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(seed))
            bytes_per_value = model.tok_emb.weight.element_size()  # the cache has the weights' dtype
            cache_bytes = model.cache_values(prompt.shape[1] + new_tokens) * bytes_per_value
            times = []
            t0 = time.perf_counter()
            generate(model, prompt, new_tokens, on_token=lambda _t: times.append(time.perf_counter()))
            row["prefill_ms"] = 1000 * (times[0] - t0)
            row["tokens_per_s"] = (len(times) - 1) / (times[-1] - times[0])
            row["cache_bytes"] = cache_bytes
            rows.append(row)
    out(format_table(rows, new_tokens))
    return rows


def format_table(rows: list[dict], new_tokens: int) -> str:
    header = f"{'family':<7} {'model':<16} {'params':>8} {'max|dlogit|':>11} {'parity':>6} {'prefill':>9} {'tok/s':>7} {'KV cache':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        diff = f"{r['max_logit_diff']:.1e}" if "max_logit_diff" in r else "n/a"
        lines.append(
            f"{r['family']:<7} {r['model']:<16} {human(r['parameters']):>8} {diff:>11} {r.get('parity', 'n/a'):>6} "
            f"{r['prefill_ms']:>7.1f}ms {r['tokens_per_s']:>7.1f} {human(r['cache_bytes'], 'B'):>10}"
        )
    lines.append(
        f"(float32 on {torch.get_num_threads()} CPU threads; 16-token prompt + {new_tokens} greedy tokens with the "
        "KV cache; parity = logits within 1e-5 relative and identical 16-token greedy continuation vs transformers)"
    )
    return "\n".join(lines)
