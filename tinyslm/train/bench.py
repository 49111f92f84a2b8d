"""`tinyslm train-bench`: training throughput of tinyslm's trainer vs a plain loop over transformers' model.

Both sides train the same architecture from the same weights on the same batches with the same
optimizer (AdamW over optim.py's parameter groups, the same learning-rate schedule, gradient
clipping) and the same loss (cross-entropy from float32 logits):

    tinyslm       tinyslm.train.train(): the real trainer, SDPA attention, progress bar off
    transformers  AutoModelForCausalLM.from_pretrained(the same weights, attn_implementation="sdpa"),
                  in a plain PyTorch loop written out below

The two alternate (tinyslm, transformers, tinyslm, ...) so that load from other processes on the
machine falls on both alike; each run's first steps are warm-up and not timed. The figure is
tokens (batch x sequence length) per second of optimizer steps, median over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import save_pretrained
from ..config import ModelConfig
from ..errors import ConfigError
from ..model import CausalLM
from .optim import lr_at, make_optimizer
from .trainer import TrainConfig, autocast_dtype, train

EXAMPLES = """examples:
  tinyslm train-bench configs/ablation/llama-1m.toml                       # defaults: batch 16 x 128 tokens, 3 repeats
  tinyslm train-bench my.toml --batch-size 8 --seq-len 256 --steps 10 --repeats 5 --json"""


class RandomBatches:
    """Uniform random tokens, a pure function of (seed, step): the same batches for both contestants."""

    def __init__(self, vocab_size: int, seq_len: int, batch: int, seed: int = 0):
        self.vocab_size, self.seq_len, self.batch, self.seed, self.step = vocab_size, seq_len, batch, seed, 0

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)
        self.step += 1
        w = torch.randint(0, self.vocab_size, (self.batch, self.seq_len + 1), generator=g)  # (B, T+1)
        return w[:, :-1], w[:, 1:]

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def run_tinyslm(config, cfg, warmup: int) -> float:
    """Tokens/s of tinyslm's trainer over the steps after `warmup`."""
    result = train(config, RandomBatches(config.vocab_size, cfg.seq_len, cfg.batch_size), cfg, progress=False)
    timed = result.history[warmup:]
    tokens = cfg.batch_size * cfg.seq_len
    return tokens * len(timed) / sum(tokens / h["tokens_per_s"] for h in timed)


def run_transformers(folder: Path, cfg, warmup: int) -> float:
    """Tokens/s of a plain PyTorch loop over transformers' model (SDPA attention), same recipe."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32).train()
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    dtype = autocast_dtype(cfg.precision, torch.device("cpu"))
    batches = RandomBatches(model.config.vocab_size, cfg.seq_len, cfg.batch_size)
    times = []
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, steps=cfg.steps)
        inputs, targets = next(batches)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = model(input_ids=inputs).logits  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - t0)
    timed = times[warmup:]
    return cfg.batch_size * cfg.seq_len * len(timed) / sum(timed)


def run_bench(config, *, batch_size: int, seq_len: int, steps: int, warmup: int, repeats: int, precision: str) -> dict:
    cfg = TrainConfig(steps=warmup + steps, batch_size=batch_size, seq_len=seq_len, eval_every=0, precision=precision,
                      device="cpu", seed=0)  # fmt: skip
    rows = {"tinyslm": [], "transformers": []}
    with tempfile.TemporaryDirectory(prefix="tinyslm-train-bench-") as tmp:
        folder = Path(tmp) / "model"
        save_pretrained(CausalLM(config).init_weights(seed=0), folder)  # the weights train() starts from, too
        for _ in range(repeats):
            rows["tinyslm"].append(run_tinyslm(config, cfg, warmup))
            rows["transformers"].append(run_transformers(folder, cfg, warmup))
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "config": config.name, "parameters": sum(p.numel() for p in CausalLM(config).parameters()),
        "batch_size": batch_size, "seq_len": seq_len, "timed_steps": steps, "warmup_steps": warmup,
        "repeats": repeats, "precision": precision, "threads": torch.get_num_threads(),
        "cpu": _cpu_name(), "tokens_per_s": rows, "median_tokens_per_s": med,
        "ratio": med["tinyslm"] / med["transformers"],
    }  # fmt: skip


def format_bench(r: dict) -> str:
    lines = [f"training throughput, {r['config']} ({r['parameters'] / 1e6:.2f}M parameters), batch {r['batch_size']} x "
             f"{r['seq_len']} tokens, {r['precision']}, AdamW, {r['timed_steps']} timed steps after {r['warmup_steps']} "
             f"warm-up, {r['repeats']} repeats, {r['threads']} threads on {r['cpu']}"]  # fmt: skip
    for name in ("tinyslm", "transformers"):
        runs = ", ".join(f"{v:,.0f}" for v in r["tokens_per_s"][name])
        lines.append(f"  {name:<13} median {r['median_tokens_per_s'][name]:>9,.0f} tokens/s   (runs: {runs})")
    lines.append(f"  tinyslm / transformers = {r['ratio']:.2f}")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-bench",
        help="training tokens/s: tinyslm's trainer vs a plain loop over transformers' model (CPU)",
        description="Train the model of CONFIG.toml from the same weights on the same random batches with the same "
        "AdamW recipe, alternately with tinyslm's trainer and with a plain PyTorch loop over transformers' "
        "AutoModelForCausalLM (SDPA attention), and print the median training throughput of each and their "
        "ratio. Measures; asserts nothing. Needs transformers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG.toml")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each run (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each, alternating (default 3)")
    p.add_argument("--vocab-size", type=int, default=None, help="override the config's vocab_size (default: keep it)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="float32 (default) or bf16 autocast")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    config = ModelConfig.from_toml(args.config)
    if args.vocab_size is not None:
        config = config.replace(vocab_size=args.vocab_size)
    for key in ("batch_size", "seq_len", "steps", "repeats"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, found {getattr(args, key)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, found {args.warmup}")
    if args.seq_len > config.max_seq_len:
        raise ConfigError(f"--seq-len {args.seq_len} exceeds the model's context: {args.config} has max_seq_len="
                          f"{config.max_seq_len}")  # fmt: skip
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, found {args.threads}")
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no per-load progress bars between the rows
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigError("train-bench compares with transformers, which is not installed (pip install 'tinyslm[test]')") from None
    result = run_bench(config, batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps, warmup=args.warmup,
                       repeats=args.repeats, precision=args.precision)  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0
