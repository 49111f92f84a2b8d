"""Lesson 12's checkers: right on the reference solutions, a named failure on plausible slips, quiet when unwritten."""

import math

import pytest
import torch

from course_support import solutions
from tinyslm.course import lesson12
from tinyslm.course.check import ExerciseFailed

SOLUTIONS = solutions("12_training_and_ablation")


def test_the_reference_solutions_pass():
    assert lesson12.check_lr_schedule(SOLUTIONS.lr_schedule) is True
    assert lesson12.check_kv_bytes_per_token(SOLUTIONS.kv_bytes_per_token) is True


def test_unwritten_functions_are_not_attempted(capsys):
    def unwritten(*args):
        raise NotImplementedError

    assert lesson12.check_lr_schedule(unwritten) is False
    assert lesson12.check_kv_bytes_per_token(unwritten) is False
    assert capsys.readouterr().out.count("not written yet") == 2


# ---- the schedule


def _warmup_from_zero(step, lr, min_lr, warmup_steps, steps):  # step 0 at lr 0: one step of the warmup lost
    if step < warmup_steps:
        return lr * step / warmup_steps
    return SOLUTIONS.lr_schedule(step, lr, min_lr, warmup_steps, steps)


def _cosine_to_zero(step, lr, min_lr, warmup_steps, steps):  # min_lr forgotten
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _cosine_over_all_steps(step, lr, min_lr, warmup_steps, steps):  # the cosine's clock starts at 0, not at warmup
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / steps)))


def _no_clamp(step, lr, min_lr, warmup_steps, steps):  # past the last step the cosine climbs back up
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("wrong, fragment", [
    (_warmup_from_zero, r"lr_schedule: step 0 of 100 \(lr 0.002, min_lr 0.0002, warmup 10\): got 0, expected 0.0002"),
    (_cosine_to_zero, "step 11 of 100 .*expected 0.00199945"),
    (_cosine_over_all_steps, "step 10 of 100 .*warmup 10.*expected 0.002"),
    (_no_clamp, "step 105 of 100"),
])  # fmt: skip
def test_a_plausible_schedule_slip_fails_naming_the_step(wrong, fragment):
    with pytest.raises(ExerciseFailed, match=fragment):
        lesson12.check_lr_schedule(wrong)


# ---- KV bytes per token


def _n_heads_not_kv_heads(config, bytes_per_value):  # GQA's saving forgotten
    if config.attention == "mla":
        return SOLUTIONS.kv_bytes_per_token(config, bytes_per_value)
    return 2 * config.n_heads * config.head_dim * config.n_layers * bytes_per_value


def _k_only(config, bytes_per_value):  # V forgotten
    return SOLUTIONS.kv_bytes_per_token(config, bytes_per_value) // (1 if config.attention == "mla" else 2)


def _dim_over_heads(config, bytes_per_value):  # head_dim taken as dim / n_heads
    if config.attention == "mla":
        return SOLUTIONS.kv_bytes_per_token(config, bytes_per_value)
    return 2 * config.n_kv_heads * (config.dim // config.n_heads) * config.n_layers * bytes_per_value


def _mla_as_mha(config, bytes_per_value):  # MLA's cache taken as per-head K and V
    return 2 * config.n_kv_heads * (config.v_head_dim or config.head_dim) * config.n_layers * bytes_per_value


def _mla_without_rope_key(config, bytes_per_value):
    if config.attention == "mla":
        return config.kv_lora_rank * config.n_layers * bytes_per_value
    return SOLUTIONS.kv_bytes_per_token(config, bytes_per_value)


def _one_layer(config, bytes_per_value):  # n_layers forgotten
    return SOLUTIONS.kv_bytes_per_token(config, bytes_per_value) // config.n_layers


@pytest.mark.parametrize("wrong, fragment", [
    (_n_heads_not_kv_heads, "gqa, 2 kv heads, 2 bytes a value: got 2048, expected 1024"),
    (_k_only, "mha, 4 layers, 4 heads of 32, 2 bytes a value: got 1024, expected 2048"),
    (_dim_over_heads, "6 heads of 32 in a 96-wide model, 2 bytes a value: got 1152, expected 2304"),
    (_mla_as_mha, r"mla \(DeepSeek-V2 proportions.*got 2048, expected 1152"),
    (_mla_without_rope_key, r"mla \(DeepSeek-V2.*got 1024, expected 1152"),
    (_one_layer, "mha, 4 layers.*got 512, expected 2048"),
])  # fmt: skip
def test_a_plausible_kv_slip_fails_naming_the_config(wrong, fragment):
    with pytest.raises(ExerciseFailed, match=fragment):
        lesson12.check_kv_bytes_per_token(wrong)


def test_the_exercise_configs_cover_each_attention_type():
    configs = dict(lesson12.kv_configs())
    assert {c.attention for c in configs.values()} == {"mha", "gqa", "mqa", "mla"}
    assert {c.n_kv_heads for c in configs.values() if c.attention != "mla"} >= {1, 2, 3, 4, 6}
    assert any(c.head_dim * c.n_heads != c.dim for c in configs.values())  # head_dim is not always dim / H


def test_the_schedule_checker_holds_the_trainers_schedule():
    """lr_at is what the trainer sets: the lesson asserts it step by step; here, its shape."""
    from tinyslm.train import lr_at  # noqa: PLC0415

    values = [lr_at(s, lr=1.0, min_lr=0.1, warmup_steps=4, steps=20) for s in range(25)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0] and values[4] == 1.0
    assert values[20] == pytest.approx(0.1) and values[24] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    assert torch.tensor(values).max() == 1.0
