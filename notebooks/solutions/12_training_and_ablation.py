"""Reference solutions of lesson 12 (training and ablation)."""

import math


def lr_schedule(step: int, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warmup to lr over warmup_steps (step 0 already
    takes lr / warmup_steps), then a cosine from lr down to min_lr at step `steps`, and min_lr after it."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def kv_bytes_per_token(config, bytes_per_value: int) -> int:
    """Bytes the KV cache stores per token, all layers: K and V of every KV head (MHA, GQA, MQA), or MLA's one
    latent of kv_lora_rank values plus its shared RoPE key of qk_rope_head_dim values."""
    if config.attention == "mla":
        per_layer = config.kv_lora_rank + config.qk_rope_head_dim
    else:
        per_layer = 2 * config.n_kv_heads * config.head_dim
    return per_layer * config.n_layers * bytes_per_value
