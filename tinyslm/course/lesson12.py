"""Lesson 12, training and ablation: the checkers of its exercises.

    check_lr_schedule        warmup + cosine, the learning rate of one optimizer step, against
                             tinyslm.train.optim.lr_at (what the trainer sets before every step)
    check_kv_bytes_per_token the KV-cache bytes one token costs, for MHA, GQA, MQA and MLA configs, against
                             tinyslm.tools.stats.model_stats (what `tinyslm inspect` and `tinyslm ablate` print)
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..tools.stats import model_stats
from ..tools.variants import derive
from ..train.optim import lr_at
from .check import Exercise

# (lr, min_lr, warmup_steps, steps): the trainer's defaults, no warmup, a warmup of one step, min_lr = 0,
# a warmup as long as the run
SCHEDULES = [(2e-3, 2e-4, 10, 100), (3e-3, 3e-4, 0, 50), (1e-3, 1e-4, 1, 7), (5e-4, 0.0, 5, 40), (1e-2, 1e-3, 20, 20)]


def check_lr_schedule(lr_schedule) -> bool:
    """Your lr_schedule(step, lr, min_lr, warmup_steps, steps) against tinyslm.train.optim.lr_at."""
    with Exercise("lr_schedule", against="tinyslm.train.optim.lr_at") as ex:
        for lr, min_lr, warmup, steps in SCHEDULES:
            for step in sorted({0, 1, warmup - 1, warmup, warmup + 1, (warmup + steps) // 2, steps - 1, steps, steps + 5} - {-1}):
                want = lr_at(step, lr=lr, min_lr=min_lr, warmup_steps=warmup, steps=steps)
                got = lr_schedule(step, lr, min_lr, warmup, steps)
                if isinstance(got, torch.Tensor) and got.numel() == 1:
                    got = float(got)
                ex.compare(f"step {step} of {steps} (lr {lr:g}, min_lr {min_lr:g}, warmup {warmup})", got, want,
                           atol=1e-12, rtol=1e-9)  # fmt: skip
    return ex.passed


def _base(**changes) -> ModelConfig:
    fields = dict(name="kv-exercise", family="llama", vocab_size=256, dim=128, n_layers=4, n_heads=4, n_kv_heads=4,
                  ffn_dim=256, max_seq_len=128)  # fmt: skip
    return ModelConfig(**{**fields, **changes})


def kv_configs() -> list[tuple[str, ModelConfig]]:
    """The configs the exercise is checked on: each attention type, other depths and head widths, an explicit
    head_dim, MLA with its own latent width."""
    base = _base()
    wide = _base(name="kv-wide", dim=96, n_layers=3, n_heads=6, n_kv_heads=6, head_dim=32)  # head_dim != dim / H
    return [
        ("mha, 4 layers, 4 heads of 32", derive(base, "mha")),
        ("gqa, 2 kv heads", derive(base, "gqa", n_kv_heads=2)),
        ("mqa", derive(base, "mqa")),
        ("mla (DeepSeek-V2 proportions: r = 128, dr = 16)", derive(base, "mla")),
        ("mha, 3 layers, 6 heads of 32 in a 96-wide model", wide),
        ("gqa, 3 kv heads, head_dim 32 in a 96-wide model", derive(wide, "gqa", n_kv_heads=3)),
        ("mla, r = 64, dr = 8, 3 layers", derive(wide, "mla", mla=dict(kv_lora_rank=64, qk_rope_head_dim=8))),
        ("mha, one layer", _base(name="kv-one", n_layers=1)),
    ]


def check_kv_bytes_per_token(kv_bytes_per_token) -> bool:
    """Your kv_bytes_per_token(config, bytes_per_value) against tinyslm.tools.stats.model_stats."""
    with Exercise("kv_bytes_per_token", against="tinyslm.tools.stats.model_stats (tinyslm inspect)") as ex:
        for case, config in kv_configs():
            for dtype in (torch.bfloat16, torch.float32):
                want = model_stats(config, dtype).kv_cache_bytes_per_token
                size = torch.empty((), dtype=dtype).element_size()
                got = kv_bytes_per_token(config, size)
                if isinstance(got, float) and got.is_integer():
                    got = int(got)
                ex.compare(f"{case}, {size} bytes a value", got, want)
    return ex.passed
