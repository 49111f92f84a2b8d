"""`tinyslm demo`: the whole pipeline on small models of real architectures, offline.

For each architecture (real vocabulary, head layout, biases and RoPE settings; fewer and
narrower layers so it runs in seconds on a laptop CPU):
    1. build a randomly initialised tinyslm model and write it as an HF checkpoint folder
    2. load the folder back through the same path a real download takes (load_pretrained)
    3. if transformers is installed, compare logits and a greedy continuation with it
    4. decode greedily with the KV cache and time it

Then it trains: a ~1M-parameter Llama-shaped model, for a few hundred steps on the embedded
procedural corpus (generated and tokenized offline, cached after the first run), and decodes the
same prompts greedily before and after training, so the first thing a newcomer sees a model
learn comes out of the code they are about to read.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..checkpoint import load_pretrained, save_pretrained
from ..config import ModelConfig
from ..data import Batches, eval_batches, prepare_data
from ..runtime import generate
from ..model import CausalLM
from ..train import TrainConfig, evaluate, train
from ..train.distributed import World
from .parity import check_parity, import_transformers
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


def run_demo(new_tokens: int = 32, seed: int = 0, out=print, train: bool = True) -> list[dict]:
    try:
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
    if train:
        out("")
        run_training_demo(seed=seed, out=out)
    return rows


# A Llama-shaped model of about one million parameters (GQA 2:1, tied head); vocab_size is set
# to the tokenizer's. Trained with batches of 16 x 64 tokens: about 20 s on a 2-core CPU.
TRAIN_CONFIG = ModelConfig(
    name="demo-llama-1m", family="llama", vocab_size=2048, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=352,
    max_seq_len=256, tie_embeddings=True,
)  # fmt: skip
TRAIN_PROMPTS = ["Mia went to the park with a basket.", "Let us do some sums.\n2 + 3 = 5\n4 + 4 ="]


def run_training_demo(steps: int = 200, seed: int = 0, out=print, new_tokens: int = 40) -> dict:
    """Train TRAIN_CONFIG on the embedded corpus for `steps` steps; show greedy text before and after."""
    data = prepare_data(None, progress=True)  # offline; generated, tokenized and cached on the first run
    config = TRAIN_CONFIG.replace(vocab_size=data.vocab_size, eos_token_id=data.eos_id)
    cfg = TrainConfig(steps=steps, batch_size=16, seq_len=64, lr=4e-3, eval_every=0, eval_batches=8, seed=seed,
                      device="cpu")  # fmt: skip

    def val():
        return eval_batches(data.val, cfg.seq_len, 32, max_batches=cfg.eval_batches)

    untrained = CausalLM(config).init_weights(seed=seed)
    loss_before = evaluate(untrained, val, cfg.eval_batches, World())
    t0 = time.perf_counter()
    result = train(config, Batches(data.train, cfg.seq_len, cfg.batch_size, seed=seed), cfg, val=val,
                   bytes_per_token=data.bytes_per_token)  # fmt: skip
    seconds = time.perf_counter() - t0
    out(f"trained {config.name} ({human(result.parameters)} parameters) for {steps} steps of {cfg.batch_size} x "
        f"{cfg.seq_len} tokens on the embedded corpus in {seconds:.1f} s ({result.train_tokens_per_s:,.0f} tokens/s)")
    out(f"validation loss {loss_before:.2f} -> {result.final_val_loss:.2f} nats per token "
        f"({data.bits_per_byte(loss_before):.2f} -> {result.val_bpb:.2f} bits per byte)")
    tok = data.tokenizer
    for prompt in TRAIN_PROMPTS:
        ids = torch.tensor([tok.encode(prompt)])
        out(f"\nprompt:    {prompt!r}")
        for label, model in (("untrained", untrained), ("trained", result.model)):
            new = generate(model, ids, new_tokens, eos_token_id=data.eos_id)[0, ids.shape[1] :].tolist()
            text = tok.decode(new[:-1] if new and new[-1] == data.eos_id else new)
            out(f"{label + ':':<10} {text!r}")
    return {"loss_before": loss_before, "loss_after": result.final_val_loss, "val_bpb": result.val_bpb,
            "seconds": seconds, "tokens_per_s": result.train_tokens_per_s}  # fmt: skip


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
