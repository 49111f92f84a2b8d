"""tools/demo.py's training part: a short run on the embedded corpus whose greedy text shows it learned."""

import re

import pytest

from tinyslm.tools.demo import TRAIN_PROMPTS, run_training_demo

pytestmark = pytest.mark.slow  # a 40-step training run


def test_training_demo_lowers_the_loss_and_prints_text_before_and_after(capsys):
    lines: list[str] = []
    result = run_training_demo(steps=40, out=lines.append, new_tokens=12)
    text = "\n".join(lines)
    before, after = map(float, re.search(r"validation loss ([\d.]+) -> ([\d.]+) nats", text).groups())
    assert (before, after) == (round(result["loss_before"], 2), round(result["loss_after"], 2))
    assert after < before - 2.0  # a random model is near ln(vocab) = 7.6 nats; 40 steps reach below 5
    assert text.count("untrained:") == text.count("trained:") - text.count("untrained:") == len(TRAIN_PROMPTS)
    assert all(repr(p) in text for p in TRAIN_PROMPTS)
    assert "bits per byte" in text and "tokens/s" in text
