"""ALiBi (Press, Smith & Lewis, "Train Short, Test Long", ICLR 2022) against the paper's own definitions.

tinyslm adds slope_h * key_position to head h's scores (Bloom's form). The paper subtracts
slope_h * (i - j) for query i and key j. The two differ by slope_h * i, the same for every key of a
query, which softmax cancels: the attention probabilities must agree, at every query offset (a cache
puts the queries after the keys already there). The slopes are the paper's recipe: for n a power of
two the geometric sequence starting at and stepping by 2^(-8/n); otherwise the power of two below
it, then every other slope of the next power of two's sequence.
"""

from __future__ import annotations

import math

import pytest
import torch

from tinyslm.layers.attention import attend
from tinyslm.layers.positions import ALiBi, alibi_slopes


def paper_slopes(n: int) -> list[float]:
    """The slope recipe of the ALiBi paper's reference code (get_slopes), in float64."""

    def power_of_2(m: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(m) - 3)))
        return [start * start**i for i in range(m)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


def relative_form_probs(q: torch.Tensor, k: torch.Tensor, slopes: torch.Tensor, start: int) -> torch.Tensor:
    """softmax(q.k / sqrt(hd) - slope * (i - j)) over causal keys: the paper's formulation. (B, H, T, S)."""
    t, s = q.shape[2], k.shape[2]
    i = torch.arange(start, start + t, dtype=torch.float64)[:, None]  # query positions
    j = torch.arange(s, dtype=torch.float64)[None, :]  # key positions
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores - slopes.double()[:, None, None] * (i - j)
    scores = scores.masked_fill(j > i, float("-inf"))
    return torch.softmax(scores, dim=-1)


@pytest.mark.parametrize("n_heads", [8, 12])
@pytest.mark.parametrize("start", [0, 5], ids=["prefill", "after-5-cached"])
def test_key_position_bias_gives_the_papers_relative_form_probabilities(n_heads, start):
    """Probabilities out of tinyslm's attention (v = identity, so the output *is* the probability matrix)."""
    gen = torch.Generator().manual_seed(n_heads + start)
    t, hd = 7, 16
    s = start + t
    q = torch.randn(2, n_heads, t, hd, generator=gen) * 2
    k = torch.randn(2, n_heads, s, hd, generator=gen) * 2
    v = torch.eye(s).expand(2, n_heads, s, s)  # out[..., i, :] = probs[..., i, :]
    q_pos, k_pos = torch.arange(start, s), torch.arange(s)
    mask = k_pos[None, :] <= q_pos[:, None]
    bias = ALiBi(n_heads)(k_pos, torch.float32)  # (H, 1, S)
    for backend in ("eager", "sdpa"):
        ours = attend(q, k, v, scale=hd**-0.5, mask=mask, bias=bias, backend=backend)
        expected = relative_form_probs(q, k, alibi_slopes(n_heads), start)
        torch.testing.assert_close(ours.double(), expected, atol=2e-6, rtol=0)


def test_slopes_for_8_heads_follow_the_paper():
    """n = 8: start and ratio 2^(-8/8) = 1/2, so 1/2, 1/4, ..., 1/256."""
    expected = [2.0**-h for h in range(1, 9)]
    assert paper_slopes(8) == expected
    assert alibi_slopes(8).tolist() == expected  # powers of two: exact in float32


def test_slopes_for_12_heads_follow_the_paper():
    """n = 12: the 8 slopes of n = 8, then 4 of n = 16's (2^-0.5, 2^-1, ...) taken every other one."""
    expected = [2.0**-h for h in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    torch.testing.assert_close(torch.tensor(paper_slopes(12)), torch.tensor(expected), atol=0, rtol=1e-15)
    ours = alibi_slopes(12)
    assert ours[:8].tolist() == expected[:8]  # powers of two: exact
    # odd powers of float32(2^-0.5), taken in float32 as Bloom does: within a float32 ulp or two of the exact values
    torch.testing.assert_close(ours[8:], torch.tensor(expected[8:], dtype=torch.float32), atol=0, rtol=3e-7)


@pytest.mark.parametrize("n_heads", [1, 2, 3, 5, 6, 8, 12, 16, 20, 24, 48, 112])
def test_slopes_match_the_paper_recipe_for_any_head_count(n_heads):
    expected = torch.tensor(paper_slopes(n_heads), dtype=torch.float32)
    # float32 powers of the float32-rounded base (as Bloom computes them): within a few float32 ulps
    torch.testing.assert_close(alibi_slopes(n_heads), expected, atol=0, rtol=1e-6)


@pytest.mark.parametrize("n_heads", [8, 12, 16, 112])
def test_bias_is_bit_equal_to_blooms_in_bfloat16(n_heads):
    """Bloom builds slope * position in float32 and casts to the activations' dtype: large positions round
    in bfloat16 (0.7071 * 2047 -> 1448), and parity needs the same rounding, not the relative form."""
    modeling_bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    positions = torch.arange(3000)
    theirs = (modeling_bloom._get_alibi_slopes(n_heads, "cpu")[:, None, None] * positions).to(torch.bfloat16)
    assert torch.equal(ALiBi(n_heads)(positions, torch.bfloat16), theirs)
