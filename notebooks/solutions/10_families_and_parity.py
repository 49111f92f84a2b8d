"""Reference solutions of lesson 10 (families and parity debugging)."""

import torch


def first_diverging_layer(ours: list[torch.Tensor], theirs: list[torch.Tensor], tolerance: float) -> int | None:
    """The index of the first layer whose max |ours - theirs| / max |theirs| exceeds `tolerance`, or None.
    Relative to the reference's largest value, not element by element (zeros in a hidden state are normal)."""
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) > tolerance:
            return i
    return None
