"""attention.py: MHA/MQA/GQA in one module, checked against attention written out by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyslm.errors import ConfigError
from tinyslm.layers.attention import BACKENDS, Attention, attend, causal_mask, set_attention_backend
from tinyslm.layers.cache import KVBuffer, RingKVBuffer
from tinyslm.layers.positions import ALiBi, Step
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
    """Query q sees key k iff q - W < k <= q (Mistral's and Gemma-2's sliding-window convention in transformers)."""
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


# --- the SDPA backend computes the written-out attention --------------------------------------

SDPA_KINDS = {  # name -> (H, K, window, ALiBi)
    "mha": (4, 4, None, False),
    "gqa": (6, 2, None, False),
    "mqa": (4, 1, None, False),
    "gqa-window": (6, 3, 3, False),
    "alibi": (6, 6, None, True),
    "alibi-window": (4, 2, 4, True),
}


@pytest.mark.parametrize("kind", list(SDPA_KINDS))
def test_eager_and_sdpa_backends_agree(kind):
    """float32, with a KV cache holding a prefix: the fused kernel matches the written-out path to 1e-6.

    Measured here: at most ~3e-7 relative to the output scale (float32 rounding of a different summation order).
    """
    n_heads, n_kv, window, alibi = SDPA_KINDS[kind]
    torch.manual_seed(0)
    attn = Attention(24, n_heads, n_kv, 8, window=window, pos_bias=ALiBi(n_heads) if alibi else None)
    rope = {} if alibi else {"global": RotaryEmbedding(8, 10000.0, None, 64)}
    x = torch.randn(2, 9, 24)
    outputs = {}
    for backend in BACKENDS:
        attn.backend = backend
        cache = attn.new_cache(2, 9, torch.float32, "cpu")
        with torch.no_grad():
            first = attn(x[:, :5], Step.with_rope(rope, 0, 5, "cpu"), cache)
            rest = [attn(x[:, t : t + 1], Step.with_rope(rope, t, 1, "cpu"), cache) for t in range(5, 9)]
        outputs[backend] = torch.cat([first, *rest], dim=1)
    scale = outputs["eager"].abs().max()
    assert (outputs["sdpa"] - outputs["eager"]).abs().max() <= 1e-6 * scale


@pytest.mark.parametrize(
    "window, alibi, start, cached, expected",
    [
        (None, False, 0, True, True),
        (None, False, 0, False, True),
        (8, False, 0, False, True),
        (3, False, 0, False, False),
        (3, False, 0, True, False),
        (None, True, 0, True, False),
        (None, False, 2, True, False),
    ],
    ids=["prompt", "no-cache", "window-longer-than-prompt", "window-inside-prompt", "window-ring-cache", "alibi", "second-chunk"],
)
def test_sdpa_takes_a_prompts_causal_triangle_as_a_flag(window, alibi, start, cached, expected, monkeypatch):
    """A prompt from position 0 whose keys are its own tokens reaches SDPA as `is_causal` (no mask:
    the kernel skips the masked half); a window cutting into it, a bias, or a chunk after a cached
    prefix keeps the explicit mask. Either way the output is the eager path's (1e-6 of its scale)."""
    torch.manual_seed(0)
    attn = Attention(24, 4, 2, 8, window=window, pos_bias=ALiBi(4) if alibi else None)
    rope = {} if alibi else {"global": RotaryEmbedding(8, 10000.0, None, 64)}
    x = torch.randn(1, 7, 24)
    outputs, calls = {}, []
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(k) or fused(*a, **k))
    for backend in BACKENDS:
        attn.backend = backend
        cache = attn.new_cache(1, 7, torch.float32, "cpu") if cached else None
        with torch.no_grad():
            if start:
                attn(x[:, :start], Step.with_rope(rope, 0, start, "cpu"), cache)
            outputs[backend] = attn(x[:, start:], Step.with_rope(rope, start, 7 - start, "cpu"), cache)
    flagged = [k.get("is_causal", False) and k.get("attn_mask") is None for k in calls]
    assert flagged[-1] == expected
    assert (outputs["sdpa"] - outputs["eager"]).abs().max() <= 1e-6 * outputs["eager"].abs().max()


def test_sdpa_backend_keeps_softcapped_attention_on_the_eager_path():
    """SDPA cannot soft-cap: a capped layer computes the eager result bit for bit under either backend."""
    q, k, v = torch.randn(3, 1, 2, 5, 4)
    mask = causal_mask(5, 5, 0, None, "cpu")
    eager = attend(q, k, v, scale=0.5, mask=mask, softcap=2.0)
    assert torch.equal(attend(q, k, v, scale=0.5, mask=mask, softcap=2.0, backend="sdpa"), eager)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="backend must be one of eager, sdpa"):
        set_attention_backend(Attention(8, 2, 2, 4), "flash")


# --- sliding windows: a ring buffer of W keys, exact past the window ----------------------------


@settings(max_examples=40, deadline=None)
@given(
    window=st.integers(1, 6),
    total=st.integers(2, 20),
    data=st.data(),
)
def test_sliding_window_ring_cache_equals_full_forward(window, total, data):
    """Any prefill length (shorter or longer than W) and any chunking afterwards: float64, to rounding."""
    prefill = data.draw(st.integers(1, total), label="prefill")
    torch.manual_seed(window * 100 + total)
    attn = Attention(16, 4, 2, 4, window=window).double()
    rope = {"global": RotaryEmbedding(4, 10000.0, None, 64)}
    x = torch.randn(1, total, 16, dtype=torch.float64)
    with torch.no_grad():
        full = attn(x, Step.with_rope(rope, 0, total, "cpu"))
        cache = attn.new_cache(1, total, torch.float64, "cpu")
        pieces, at = [attn(x[:, :prefill], Step.with_rope(rope, 0, prefill, "cpu"), cache)], prefill
        while at < total:
            size = data.draw(st.integers(1, 3), label="chunk")
            size = min(size, total - at)
            pieces.append(attn(x[:, at : at + size], Step.with_rope(rope, at, size, "cpu"), cache))
            at += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-10, atol=1e-12)


def test_sliding_window_cache_stores_only_the_window():
    attn = Attention(16, 4, 2, 4, window=8)
    ring, full = attn.new_cache(1, 4096, torch.float32, "cpu"), Attention(16, 4, 2, 4).new_cache(1, 4096, torch.float32, "cpu")
    assert isinstance(ring, RingKVBuffer) and ring.k.shape[2] == 8
    assert sum(t.numel() for t in ring.tensors()) * 4096 // 8 == sum(t.numel() for t in full.tensors())
    short = attn.new_cache(1, 5, torch.float32, "cpu")  # a request shorter than the window: a plain buffer
    assert isinstance(short, KVBuffer) and short.k.shape[2] == 5


def test_static_cache_attends_over_all_slots_and_equals_the_full_forward():
    """The fast path's buffer returns every slot (empty ones at position -1): masking them gives the full forward."""
    from tinyslm.runtime import StaticKVBuffer

    torch.manual_seed(0)
    attn = Attention(16, 4, 2, 4, window=3).double()
    rope = {"global": RotaryEmbedding(4, 10000.0, None, 64)}
    x = torch.randn(1, 9, 16, dtype=torch.float64)
    with torch.no_grad():
        full = attn(x, Step.with_rope(rope, 0, 9, "cpu"))
        cache = StaticKVBuffer(1, 2, 16, 4, 4, torch.float64, "cpu")
        pieces = [attn(x[:, :4], Step.with_rope(rope, 0, 4, "cpu"), cache)]
        for at in range(4, 9):
            pieces.append(attn(x[:, at : at + 1], Step.with_rope(rope, at, 1, "cpu"), cache))
    assert cache.k.shape[2] == 16 and cache.pos.tolist() == list(range(9)) + [-1] * 7
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-10, atol=1e-12)
