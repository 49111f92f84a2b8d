"""attention.py: MHA/MQA/GQA in one module, checked against attention written out by hand."""

import math

import pytest
import torch

from tinyslm.layers.attention import Attention, attend, causal_mask
from tinyslm.layers.positions import Step
from tinyslm.layers.rope import RotaryEmbedding


def rope_by_hand(x: torch.Tensor, pos: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotate pairs (i, i + d/2) of one head vector x (d,) by pos * theta^(-2i/d), as complex numbers."""
    d = x.shape[-1]
    out = x.clone()
    for i in range(d // 2):
        angle = pos * theta ** (-2 * i / d)
        z = complex(x[i], x[i + d // 2]) * complex(math.cos(angle), math.sin(angle))
        out[i], out[i + d // 2] = z.real, z.imag
    return out


@torch.no_grad()
def mha_by_hand(x: torch.Tensor, attn: Attention) -> torch.Tensor:
    """Textbook causal multi-head attention with loops: one (T, T) score matrix per head."""
    _, t, _ = x.shape
    h, hd = attn.n_heads, attn.head_dim
    q, k, v = attn.wq(x)[0], attn.wk(x)[0], attn.wv(x)[0]  # (T, H*hd)
    heads = []
    for head in range(h):
        cols = slice(head * hd, (head + 1) * hd)
        qh = torch.stack([rope_by_hand(q[i, cols], i) for i in range(t)])
        kh = torch.stack([rope_by_hand(k[i, cols], i) for i in range(t)])
        scores = qh @ kh.T / math.sqrt(hd)
        scores = scores + torch.triu(torch.full((t, t), float("-inf"), dtype=x.dtype), diagonal=1)
        heads.append(torch.softmax(scores, dim=-1) @ v[:, cols])
    return attn.wo(torch.cat(heads, dim=-1))[None]


def make_attention(n_heads, n_kv_heads, head_dim=8, dim=24, seed=0) -> Attention:
    torch.manual_seed(seed)
    return Attention(dim, n_heads, n_kv_heads, head_dim).double()


@torch.no_grad()
def run(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    rope = RotaryEmbedding(attn.head_dim, 10000.0, None, 128)
    return attn(x, Step.with_rope({"global": rope}, 0, x.shape[1], x.device))


def test_gqa_with_as_many_kv_heads_as_heads_equals_handwritten_mha():
    attn = make_attention(n_heads=3, n_kv_heads=3)
    x = torch.randn(1, 7, 24, dtype=torch.float64)
    torch.testing.assert_close(run(attn, x), mha_by_hand(x, attn))


@pytest.mark.parametrize("n_heads, n_kv_heads", [(6, 2), (6, 3), (4, 1)], ids=["gqa-3", "gqa-2", "mqa"])
def test_gqa_equals_mha_whose_kv_heads_are_repeated(n_heads, n_kv_heads):
    """Query head h reads KV head h // (H/K): the same as MHA with each KV head copied H/K times."""
    gqa = make_attention(n_heads, n_kv_heads)
    mha = make_attention(n_heads, n_heads)
    group, hd = n_heads // n_kv_heads, gqa.head_dim
    with torch.no_grad():
        mha.wq.weight.copy_(gqa.wq.weight)
        mha.wo.weight.copy_(gqa.wo.weight)
        for w_mha, w_gqa in ((mha.wk, gqa.wk), (mha.wv, gqa.wv)):
            w_mha.weight.copy_(w_gqa.weight.view(n_kv_heads, hd, -1).repeat_interleave(group, 0).reshape(-1, 24))
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    torch.testing.assert_close(run(gqa, x), run(mha, x))


def test_kv_cache_width_scales_with_kv_heads_not_query_heads():
    assert make_attention(8, 8).cache_values_per_token() == 2 * 8 * 8
    assert make_attention(8, 2).cache_values_per_token() == 2 * 2 * 8
    assert make_attention(8, 1).cache_values_per_token() == 2 * 1 * 8


def test_sliding_window_mask_follows_transformers_rule():
    """Query q sees key k iff q - W < k <= q (ARCHITECTURES.md 2.3)."""
    mask = causal_mask(6, 6, 0, window=3, device="cpu")
    for q in range(6):
        for k in range(6):
            assert bool(mask[q, k]) == (q - 3 < k <= q)


def test_softcap_bounds_attention_logits():
    """With a tiny cap every logit is squashed to ~0, so each query averages the values it can see."""
    q, k = torch.randn(2, 1, 2, 5, 4, dtype=torch.float64) * 100
    v = torch.arange(5, dtype=torch.float64).view(1, 1, 5, 1).expand(1, 2, 5, 1)
    out = attend(q, k, v, scale=1.0, mask=causal_mask(5, 5, 0, None, "cpu"), softcap=1e-9)
    expected = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)  # running mean of 0..t
    torch.testing.assert_close(out[0, 0, :, 0], expected)
    torch.testing.assert_close(out[0, 1, :, 0], expected)
