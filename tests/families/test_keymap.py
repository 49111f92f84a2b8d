"""families/keymap.py: fused checkpoint tensors split into our parameters and pack back exactly."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyslm.errors import CheckpointError
from tinyslm.families.keymap import Entry, Fused, KeyMap


@settings(max_examples=30, deadline=None)
@given(
    heads=st.integers(1, 4), kv_heads_per=st.sampled_from([1, 2]), hd=st.integers(1, 4), dim=st.integers(1, 5),
    transposed=st.booleans(), bias=st.booleans(),
)  # fmt: skip
def test_unpack_then_pack_is_the_identity(heads, kv_heads_per, hd, dim, transposed, bias):
    """[q | k | v] blocks (Phi-3) or transposed Conv1D (GPT-2): pack(unpack(t)) == t, parts of the right shapes."""
    kv = max(heads // kv_heads_per, 1)
    shapes = [(heads * hd,), (kv * hd,), (kv * hd,)] if bias else [(heads * hd, dim), (kv * hd, dim), (kv * hd, dim)]
    entry = Entry("qkv." + ("bias" if bias else "weight"), ["q", "k", "v"], shapes, Fused("qkv", ("q", "k", "v"), transposed))
    tensor = torch.randn(entry.hf_shape)
    parts = entry.unpack(tensor)
    assert [tuple(p.shape) for p in parts] == shapes
    assert torch.equal(entry.pack(parts), tensor)


def test_per_head_layout_takes_q_k_v_rows_head_by_head():
    """GPT-NeoX / Bloom: rows are (head, [q k v], hd); head 1's query is rows 6..7 for hd = 2."""
    h, hd, d = 3, 2, 4
    entry = Entry("qkv.weight", ["q", "k", "v"], [(h * hd, d)] * 3, Fused("qkv", ("q", "k", "v"), per_head=True), n_heads=h)
    fused = torch.arange(3 * h * hd * d, dtype=torch.float32).reshape(3 * h * hd, d)
    q, k, v = entry.unpack(fused)
    assert torch.equal(q[hd : 2 * hd], fused[6:8])  # head 1's q: after head 0's q, k, v (3 x 2 rows)
    assert torch.equal(k[:hd], fused[2:4]) and torch.equal(v[:hd], fused[4:6])
    assert torch.equal(entry.pack([q, k, v]), fused)


def test_a_parameter_without_a_checkpoint_name_is_an_error():
    model = torch.nn.Module()
    model.extra = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="has no checkpoint name for parameter 'extra.weight'"):
        KeyMap.build(model, {"tok_emb": "model.embed_tokens"}, (), "toy")
