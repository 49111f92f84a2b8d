"""Lesson 10, families and parity debugging: the checker of its exercise.

    check_first_diverging_layer   given the per-layer hidden states of two implementations, the first layer
                                  whose relative difference, max |ours - theirs| / max |theirs|, exceeds a
                                  tolerance (None when none does): what tinyslm.tools.parity reports
"""

from __future__ import annotations

import torch

from ..tools.parity import relative
from .check import Exercise


def reference_first_diverging_layer(ours: list[torch.Tensor], theirs: list[torch.Tensor], tolerance: float) -> int | None:
    """The rule check_parity applies to the hooks' outputs: the first i with relative(ours[i], theirs[i]) > tolerance."""
    return next((i for i, (a, b) in enumerate(zip(ours, theirs)) if relative(a, b) > tolerance), None)


def _layers(seed: int, n: int, shape: tuple[int, ...]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


def _cases() -> list[tuple[str, list[torch.Tensor], list[torch.Tensor], float]]:
    """(case, ours, theirs, tolerance): each a plausible slip fails on at least one of them."""
    cases = []
    shape = (2, 6, 16)  # (B, T, D)
    theirs = _layers(0, 5, shape)
    noise = _layers(1, 5, shape)

    # float32 noise everywhere (1e-7 of the scale), then a real divergence from layer 2 on
    ours = [t + 1e-7 * e for t, e in zip(theirs, noise)]
    ours = ours[:2] + [t + 1e-2 * e for t, e in zip(theirs[2:], noise[2:])]
    cases.append(("5 layers, a bug from layer 2 on, tolerance 1e-5", ours, theirs, 1e-5))

    # every layer agrees within float32 noise: no layer diverges (None, not -1 or 5)
    ours = [t + 1e-7 * e for t, e in zip(theirs, noise)]
    cases.append(("5 layers, all within float32 noise", ours, theirs, 1e-5))

    # the very first layer is already wrong (0 is an answer, not "no layer")
    ours = [t + 0.5 * e for t, e in zip(theirs, noise)]
    cases.append(("5 layers, all wrong from layer 0", ours, theirs, 1e-5))

    # one single element of layer 1 is off by 1e-3 of the scale: the largest difference counts, not the mean
    ours = [t.clone() for t in theirs]
    ours[1][1, 3, 7] += 1e-3 * float(theirs[1].abs().max())
    ours[3] = ours[3] + 0.1  # and later layers differ everywhere
    cases.append(("one element of layer 1 off by 1e-3 of the scale", ours, theirs, 1e-5))

    # hidden states with exact zeros and tiny values: the difference is relative to the largest |theirs|,
    # not element by element (that would divide by zero and call layer 0 diverged)
    theirs_z = [t.clone() for t in _layers(2, 4, shape)]
    for t in theirs_z:
        t[0, 0, :4] = torch.tensor([0.0, 1e-9, -1e-9, 0.0])
    noise_z = _layers(3, 4, shape)
    ours = [t + 1e-7 * e for t, e in zip(theirs_z, noise_z)]
    ours[3] = theirs_z[3] + 1e-3 * noise_z[3]
    cases.append(("layers holding zeros and 1e-9s, a bug in layer 3 only", ours, theirs_z, 1e-5))

    # a non-default tolerance, and the scale of *theirs* (the reference) in the denominator: layer 1 holds
    # one value of 10 where transformers has at most ~3, which is 9 / 3 > 1.0 relative to theirs, but
    # 9 / 10 < 1.0 relative to ours
    theirs_s = [torch.full(shape, 0.5) for _ in range(3)]
    for t in theirs_s:
        t[0, 0, 0] = 3.0
    ours = [t.clone() for t in theirs_s]
    ours[0] = ours[0] + 0.25  # 0.25 / 3 < 1.0: within this loose tolerance
    ours[1][1, 2, 3] = 10.0  # |10 - 0.5| / 3 > 1.0
    cases.append(("tolerance 1.0, layer 1 with one value of 10 where theirs has 0.5", ours, theirs_s, 1.0))

    # a difference exactly at the tolerance does not count: only a larger one does
    theirs_e = [torch.ones(shape) for _ in range(3)]
    ours = [t.clone() for t in theirs_e]
    ours[0][0, 0, 0] = 1.0 + 2.0**-10  # exactly 2^-10 relative: at the tolerance
    ours[2][0, 0, 0] = 1.0 + 2.0**-9  # above it
    cases.append(("a difference of exactly the tolerance (2^-10) in layer 0, twice it in layer 2", ours, theirs_e,
                  2.0**-10))  # fmt: skip

    # a single layer (a 1-layer model)
    one = _layers(4, 1, (1, 1, 8))
    cases.append(("a single layer of shape (1, 1, 8), diverged", [one[0] * 1.5], one, 1e-5))
    return cases


def check_first_diverging_layer(first_diverging_layer) -> bool:
    """Your first_diverging_layer(ours, theirs, tolerance) against the rule tinyslm.tools.parity.check_parity applies."""
    with Exercise("first_diverging_layer", against="the rule of tinyslm.tools.parity.check_parity") as ex:
        for case, ours, theirs, tolerance in _cases():
            want = reference_first_diverging_layer(ours, theirs, tolerance)
            got = first_diverging_layer([t.clone() for t in ours], [t.clone() for t in theirs], tolerance)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = int(got)
            ex.compare(case, got, want)
    return ex.passed
