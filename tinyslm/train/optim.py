"""AdamW with decoupled weight decay on the weight matrices only, and its learning-rate schedule.

Weight decay (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization") shrinks weights
towards zero. It is applied to the matrices that mix features (attention and FFN projections,
an untied lm-head), not to norm gains, biases or embedding tables: decaying a norm's gain or a
bias pulls it towards a value with no special meaning, and an embedding row is only updated when
its token occurs, so decaying every row each step shrinks rare tokens for nothing (GPT-2/nanoGPT,
litgpt and OLMo split their parameters the same way).

Schedule: linear warmup from 0 to `lr` over `warmup_steps`, then a cosine from `lr` down to
`min_lr` at the last step (Loshchilov & Hutter 2017, SGDR, without restarts):

    lr(s) = lr * (s + 1) / warmup                                    s < warmup
    lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2           p = (s - warmup) / (steps - warmup)

The schedule is a pure function of the step, so resuming needs only the step number, not a
scheduler object's state.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed (2-D weights of Linear layers) and not decayed (everything else).

    A tied lm-head *is* the embedding Parameter, so it lands in the no-decay group with it. The
    groups are built from modules, not from names or shapes: a (V, D) embedding is 2-D too.
    """
    decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}  # a tied head is one
    decayed, plain, seen = [], [], set()
    for p in model.parameters():  # parameters() yields a shared Parameter once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decayed if id(p) in decay and id(p) not in embeddings else plain).append(p)
    return [
        {"params": decayed, "weight_decay": weight_decay, "name": "decay"},
        {"params": plain, "weight_decay": 0.0, "name": "no_decay"},
    ]


def make_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                   eps: float = 1e-8) -> torch.optim.AdamW:  # fmt: skip
    """torch's AdamW over `param_groups`; the foreach implementation (one kernel per op over all tensors).

    `fused=True` would be faster still on some builds, but it is not available for every device
    and dtype; foreach is, and gives the same update.
    """
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, foreach=True)


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based): linear warmup, then cosine to min_lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(1, steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
