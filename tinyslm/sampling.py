"""Choosing the next token from the logits: greedy (the reference), or sampled.

Each step turns the last position's logits (B, V) into one token per row. The processors run in the order
transformers' `generate` runs them (generation/utils.py, `_get_logits_processor`; each a few lines of
generation/logits_process.py), so the same settings keep the same tokens with the same probabilities:

    repetition_penalty  every token already in the row (prompt and output): a positive logit divided by the
                        penalty, a negative one multiplied (both lower it) -- in greedy decoding too
    temperature         logits / T: T < 1 sharpens the distribution, T > 1 flattens it
    top_k               keep the k largest logits (ties with the k-th kept too)
    top_p               keep the smallest set of tokens whose probability reaches p (nucleus sampling,
                        Holtzman et al. 2019, arXiv:1904.09751): drop those whose ascending cumulative
                        probability is at most 1 - p
    min_p               keep the tokens whose probability is at least min_p x the top token's
    sample              softmax, then one draw per row from this Sampler's generator (`draw`, below)

A dropped token's logit becomes -inf, so it has probability 0. Sampling is on when a temperature above 0, or
top_k / top_p / min_p, is given; temperature 0 (or nothing given) is greedy: argmax, the reference decoder.
The draws come from a generator seeded by `seed` (torch's global one when None), so a seed gives the same text
on every run. Two ways to draw from the same distribution:

    multinomial   torch.multinomial, as transformers draws: `generate(do_sample=True)` after
                  `torch.manual_seed(seed)` draws the same tokens. It spends one exponential random number per
                  vocabulary entry (49,152 for SmolLM2: about a millisecond, a fifth of a fast decoding step)
    inverse_cdf   one uniform number u per row, and the first token whose cumulative probability (float64)
                  exceeds u: the same distribution for a tenth of the cost, other tokens for the same seed

The reference decoder draws as transformers does; the runtime's fast paths (tinyslm.generate's default) draw by
inverse_cdf (tinyslm/runtime/decoding.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import GenerationError

DRAWS = ("multinomial", "inverse_cdf")


@dataclass(frozen=True)
class Sampler:
    temperature: float | None = None  # None or 0: greedy
    top_k: int | None = None  # None or 0: no top-k
    top_p: float | None = None  # None or 1: no nucleus
    min_p: float | None = None  # None or 0: no min-p
    repetition_penalty: float | None = None  # None or 1: none
    seed: int | None = None  # None: torch's global generator
    draw: str = "multinomial"  # or "inverse_cdf" (module docstring)

    def __post_init__(self) -> None:
        checks = {
            "temperature": (self.temperature, lambda v: v >= 0, "a number >= 0 (0: greedy)"),
            "top_k": (self.top_k, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: off)"),
            "top_p": (self.top_p, lambda v: 0 < v <= 1, "a number in (0, 1] (1: off)"),
            "min_p": (self.min_p, lambda v: 0 <= v <= 1, "a number in [0, 1] (0: off)"),
            "repetition_penalty": (self.repetition_penalty, lambda v: v > 0, "a number > 0 (1: off)"),
            "seed": (self.seed, lambda v: isinstance(v, int) and 0 <= v < 2**63, "an integer in [0, 2^63)"),
        }
        for name, (value, ok, wanted) in checks.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
                raise GenerationError(f"{name} must be {wanted}, found {value!r}")
        if self.draw not in DRAWS:
            raise GenerationError(f"draw must be one of {', '.join(DRAWS)}, found {self.draw!r}")
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        object.__setattr__(self, "_generator", generator)  # (its draws advance it: one Sampler per request)

    @property
    def samples(self) -> bool:
        """Whether tokens are drawn (else argmax)."""
        return bool(self.temperature) or bool(self.top_k) or self.top_p not in (None, 1) or bool(self.min_p)

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """logits (B, V) of the last position, seen (B, S) the row's tokens so far -> the next token (B,)."""
        scores = logits.float()
        if self.repetition_penalty not in (None, 1):
            scores = repetition_penalty(scores, seen, self.repetition_penalty)
        if not self.samples:
            return scores.argmax(dim=-1)
        scores = warp(scores, self.temperature, self.top_k, self.top_p, self.min_p)
        if self.draw == "inverse_cdf":
            return inverse_cdf(scores, self._generator)
        probs = scores.softmax(dim=-1)  # (B, V)
        return torch.multinomial(probs, 1, generator=self._generator).squeeze(1)


def inverse_cdf(scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from softmax(scores) (B, V) -> (B,): the first token whose cumulative probability exceeds
    u * total, u uniform in [0, 1) (strictly exceeds: a token of probability 0 adds nothing, so it is never first)."""
    cdf = scores.softmax(dim=-1).cumsum(dim=-1, dtype=torch.float64)  # (B, V): summed in float64, exact to the last token
    u = torch.rand(scores.shape[0], 1, dtype=torch.float64, generator=generator).to(cdf.device)  # (B, 1)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=scores.shape[-1] - 1).squeeze(1)


def repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """(B, V) scores with every token of `seen` (B, S) penalised (CTRL, Keskar et al. 2019, arXiv:1909.05858)."""
    picked = scores.gather(1, seen)  # (B, S)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, seen, picked)


def warp(scores: torch.Tensor, temperature, top_k, top_p, min_p) -> torch.Tensor:
    """Temperature, then top-k, top-p, min-p, in transformers' order; dropped tokens get -inf. (B, V) -> (B, V)."""
    if temperature not in (None, 0, 1):
        scores = scores / temperature
    if top_k:
        kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[..., -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p not in (None, 1):
        ascending, order = torch.sort(scores, descending=False)  # (B, V)
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[..., -1:] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(1, order, drop), -math.inf)
    if min_p:
        probs = scores.softmax(dim=-1)
        drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
        drop.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
        scores = scores.masked_fill(drop, -math.inf)
    return scores
