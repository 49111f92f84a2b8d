"""quant/: GGUF blocks read exactly, kernels agree with the dequantized weight, quantized models stay close.

Every bound below is derived, not measured: bfloat16 rounds to 8 significant bits (relative error
at most 2^-8), a re-quantized weight moves by at most half a step.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyslm
from tinyslm import CausalLM, ModelConfig
from tinyslm.errors import CheckpointError, ConfigError
from tinyslm.quant import GGMLLinear, QuantizedLinear, ggml, native, quantize
from tinyslm.quant.int4pack import pack_int4, unpack_int4

gguf = pytest.importorskip("gguf")
from gguf import quants

SMOLLM = Path(__file__).resolve().parents[3] / "shared" / "data" / "SmolLM2-135M-Instruct.Q4_1.gguf"
BF16_UNIT = 2.0**-8  # round-to-nearest relative error of bfloat16 (8 significant bits)


def gguf_blocks(kind: str, n=96, k=256, seed=0) -> tuple[np.ndarray, torch.Tensor]:
    """A weight quantized by the gguf package -> (raw blocks, gguf's own float32 dequantization)."""
    w = np.random.default_rng(seed).normal(0, 0.05, (n, k)).astype(np.float32)
    kind_id = getattr(gguf.GGMLQuantizationType, kind)
    raw = quants.quantize(w, kind_id)
    return raw, torch.from_numpy(quants.dequantize(raw, kind_id))


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_block_reader_equals_gguf_dequantize_bit_for_bit(kind):
    raw, ref = gguf_blocks(kind)
    assert torch.equal(ggml.dequantize_blocks(kind, raw, ref.shape), ref)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_q4_kept_as_int4_with_float32_scales_is_exact(kind):
    """Codes, d and m are kept exactly: the int4 layer's weight is gguf's dequantization, bit for bit."""
    raw, ref = gguf_blocks(kind)
    layer = QuantizedLinear.from_gguf(kind, raw, tuple(ref.shape), dtype=torch.float32)
    assert layer.bits == 4 and layer.group_size == 32
    assert torch.equal(layer.dequantize(), ref)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_q4_with_bfloat16_scales_moves_each_weight_by_at_most_the_scale_rounding(kind):
    """value = (q - 8) d + z with d, z rounded to bfloat16: |error| <= (|q - 8| |d| + |z|) 2^-8."""
    raw, ref = gguf_blocks(kind)
    n, k = ref.shape
    blocks = ggml.blocks_of(kind, raw, (n, k))
    if kind == "Q4_0":
        codes, d = ggml.read_q4_0(blocks)
        z = torch.zeros_like(d)
    else:
        codes, d, m = ggml.read_q4_1(blocks)
        z = m + 8 * d
    expand = lambda t: t.repeat_interleave(32, dim=1)
    bound = ((codes.float() - 8).abs() * expand(d.abs()) + expand(z.abs())) * BF16_UNIT + 1e-7
    got = QuantizedLinear.from_gguf(kind, raw, (n, k)).dequantize()
    assert ((got - ref).abs() <= bound).all()
    assert not torch.equal(got, ref)  # bfloat16 scales really are rounded (else this test checks nothing)


def test_q8_0_is_requantized_per_row_within_half_a_step():
    """No int8 kernel takes per-32 scales: one scale per row, |error| <= max|row| / 254 (plus the scale's rounding)."""
    raw, ref = gguf_blocks("Q8_0")
    layer = QuantizedLinear.from_gguf("Q8_0", raw, tuple(ref.shape))
    assert layer.bits == 8 and layer.scales.shape == (ref.shape[0],)
    half_step = ref.abs().amax(dim=1, keepdim=True) / 254 * (1 + BF16_UNIT)
    assert ((layer.dequantize() - ref).abs() <= half_step).all()


def test_q8_0_requantized_in_chunks_of_rows_equals_quantizing_the_whole_tensor():
    """from_gguf re-quantizes a Q8_0 tensor a chunk of rows at a time (memory); int8 scales are per row, so
    the result must equal quantizing gguf's whole dequantization at once, across chunk boundaries too."""
    from tinyslm.quant.linear import Q8_CHUNK

    raw, ref = gguf_blocks("Q8_0", n=2 * Q8_CHUNK + 37, k=64)
    chunked = QuantizedLinear.from_gguf("Q8_0", raw, tuple(ref.shape))
    whole = QuantizedLinear.from_float(ref, None, "int8", None)
    assert torch.equal(chunked.qweight, whole.qweight) and torch.equal(chunked.scales, whole.scales)


@pytest.mark.parametrize("kind, group", [("int8", None), ("int4", 32), ("int4", 128)])
def test_kernel_output_equals_the_dequantized_weight_up_to_bfloat16_rounding(kind, group):
    torch.manual_seed(0)
    w, b = torch.randn(80, 256) * 0.05, torch.randn(80)
    layer = QuantizedLinear.from_float(w, b, kind, group)
    x = torch.randn(2, 3, 256)
    xb = x.bfloat16().float()  # the kernels read bfloat16 activations
    deq = layer.dequantize()
    exact = xb @ deq.t() + b
    # the kernel rounds its output to bfloat16 once and may sum in bfloat16 partial sums: 2^-7 of sum |x||w|
    bound = (xb.abs() @ deq.abs().t()) * 2.0**-7 + b.abs() * BF16_UNIT
    got = layer(x)
    assert got.shape == (2, 3, 80) and got.dtype == x.dtype
    assert ((got - exact).abs() <= bound).all()
    # a prompt (>= 16 rows) takes the unpacked dense path: same weight, so the same result to rounding
    many = torch.randn(40, 256)
    dense = many @ deq.t() + b
    assert ((layer(many) - dense).abs() <= (many.abs() @ deq.abs().t()) * 2.0**-7 + 1e-6).all()


@pytest.mark.parametrize("kind, group", [("int8", None), ("int4", 32)])
def test_quantized_weights_are_within_half_a_step_of_the_float_weights(kind, group):
    torch.manual_seed(1)
    w = torch.randn(64, 128) * 0.05
    deq = QuantizedLinear.from_float(w, None, kind, group).dequantize()
    if kind == "int8":
        step = w.abs().amax(dim=1, keepdim=True) / 127
    else:
        g = w.view(64, -1, 32)
        step = ((g.amax(-1) - g.amin(-1)) / 15).repeat_interleave(32, dim=1)
    # half a step, plus the bfloat16 rounding of the scale (x up to 15 steps) and of the zero point
    slack = step * 16 * BF16_UNIT + (w.abs().amax() * 2 * BF16_UNIT if kind == "int4" else 0)
    assert ((deq - w).abs() <= step / 2 + slack).all()


@settings(max_examples=20, deadline=None)
@given(n16=st.integers(1, 9), k32=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_unpack_reads_back_what_torch_packed(n16, k32, seed):
    codes = torch.randint(0, 16, (16 * n16, 32 * k32), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(unpack_int4(pack_int4(codes), *codes.shape).long(), codes)


def test_bad_inputs_are_one_clear_error():
    raw, _ = gguf_blocks("Q4_0", n=32, k=64)
    with pytest.raises(CheckpointError, match=r"needs 1,152 bytes \(64 blocks of 18\), found 1,151"):
        QuantizedLinear.from_gguf("Q4_0", raw.reshape(-1)[:-1], (32, 64))
    with pytest.raises(CheckpointError, match="Q4_0, Q4_1, Q8_0.*'Q5_K'"):
        QuantizedLinear.from_gguf("Q5_K", raw, (32, 64))
    with pytest.raises(ConfigError, match="group_size must be one of"):
        QuantizedLinear.from_float(torch.randn(32, 64), kind="int4", group_size=16)
    with pytest.raises(ConfigError, match="out_features by 16"):
        QuantizedLinear.from_float(torch.randn(20, 64), kind="int4", group_size=32)
    with pytest.raises(ConfigError, match="int8, int4.*'int3'"):
        quantize(tiny_model(), "int3")
    with pytest.raises(ConfigError, match=r"group_size 64 applies to int4 only \(int8: one scale per output row\)"):
        quantize(tiny_model(), "int8", group_size=64)


def tiny_model(**overrides) -> CausalLM:
    config = ModelConfig(vocab_size=96, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128,
                         max_seq_len=64, **overrides)  # fmt: skip
    return CausalLM(config).init_weights(std=0.1, seed=0).eval()


ALL_KINDS = ["int8", "int4"] + [pytest.param(k, marks=pytest.mark.skipif(not native.available(), reason="no native kernel"))
                                 for k in ("q8_0", "q4_0", "q4_1")]  # fmt: skip


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_quantize_swaps_every_projection_and_the_head_in_place(kind):
    model = tiny_model(tie_embeddings=True)
    assert quantize(model, kind) is model
    names = model.quantization["layers"]
    assert len(names) == 2 * 7 + 1 and "head" in names and model.quantization["skipped"] == []
    layer = QuantizedLinear if kind.startswith("int") else GGMLLinear
    assert isinstance(model.blocks[0].attn.wq, layer) and isinstance(model.head, layer)
    assert isinstance(model.tok_emb, torch.nn.Embedding)  # a lookup: stays float
    assert model.quantization["quantized_bytes"] < model.quantization["float_bytes"] / (3 if kind in ("int8", "q8_0") else 5)


def test_layers_the_kernel_cannot_take_stay_float_and_are_listed():
    config = tiny_model().config.replace(vocab_size=97)  # a head of 97 rows: int4 needs multiples of 16
    model = CausalLM(config).init_weights(seed=0)
    quantize(model, "int4")
    assert isinstance(model.head, torch.nn.Linear) and "head" in model.quantization["skipped"][0]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantized_model_equals_the_float_model_of_its_dequantized_weights(kind):
    """The swap changes nothing but the weights' rounding: with every weight replaced by what the kernel
    sees, the float32 model gives the same logits up to bfloat16 activations (the kernels round their
    input and output: about 12 roundings of 2^-8 in series here, 2 blocks x (qkv, o, gate/up, down) + head,
    so within 12 x 2^-8 = 4.7% of the logit scale). The rounding itself is bounded per weight above;
    on real weights, see the SmolLM2 test (logits and perplexity)."""
    gen = torch.Generator().manual_seed(0)
    prompt, step = torch.randint(0, 96, (2, 12), generator=gen), torch.randint(0, 96, (1, 4), generator=gen)
    quantized = quantize(tiny_model(), kind)
    same_weights = tiny_model()
    for name in quantized.quantization["layers"]:
        same_weights.get_submodule(name).weight.data = quantized.get_submodule(name).dequantize()
    with torch.no_grad():
        for ids in (prompt, step):  # 24 rows: the unpacked dense path; 4 rows: the packed kernels
            assert relative_error(quantized(ids), same_weights(ids)) <= 12 * BF16_UNIT
        if kind == "int4":  # the weights' own rounding is larger than that bound: the check above is not vacuous
            assert relative_error(quantized(prompt), tiny_model()(prompt)) > 12 * BF16_UNIT


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_cached_decode_equals_recomputation_with_the_same_quantized_weights(kind):
    model = quantize(tiny_model(), kind)
    ids = torch.randint(0, 96, (2, 5), generator=torch.Generator().manual_seed(3))
    cached = tinyslm.generate(model, ids, 8, fast=False)
    seq = ids
    for _ in range(8):  # greedy by definition: rerun everything (a prompt of >= 16 rows takes the dense path)
        with torch.no_grad():
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq)


# ---- real weights: SmolLM2-135M-Instruct, Q4_1 (skipped when the file is absent) -------------------------

TEXT = ("The sun rose slowly over the quiet village. Children walked to school along the river, and the baker "
        "opened his shop early, as he did every morning. By noon the market was full of people buying bread, "
        "fruit and fresh fish.")  # fmt: skip


def perplexity(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(ids).float()
    return float(torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).exp())


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM.exists(), reason="SmolLM2-135M-Instruct.Q4_1.gguf not present")
def test_smollm2_q4_1_kept_4_bit_matches_its_float32_dequantization(monkeypatch):
    """Kept 4-bit in torch's int4 layout (the fallback when the native kernel cannot be built; bfloat16 scales and activations) vs the float32 dequantized file: logits within 5% of
    their scale, the same greedy text for a few prompts, perplexity on a fixed text within 2%. Then
    re-quantizing the float model with tinyslm.quantize: int8 within 5% perplexity, int4 (groups of
    32, as the file) within 10%."""
    import copy

    from tinyslm import pretrained
    from tinyslm.gguf import load_gguf

    monkeypatch.setattr(pretrained, "quantized_linear_factory", lambda: QuantizedLinear.from_gguf)
    tok = tinyslm.load_tokenizer(SMOLLM)
    ref, kept = load_gguf(SMOLLM, keep_quantized=False), load_gguf(SMOLLM)
    assert any(isinstance(m, QuantizedLinear) and m.bits == 4 for m in kept.modules())
    ids = torch.tensor([tok.encode(TEXT)])
    with torch.no_grad():
        assert relative_error(kept(ids), ref(ids)) <= 0.05
    for prompt in ["The capital of France is", "def fibonacci(n):", "Once upon a time"]:
        p = torch.tensor([tok.encode(prompt)])
        assert torch.equal(tinyslm.generate(kept, p, 8, fast=False), tinyslm.generate(ref, p, 8, fast=False)), prompt
    base = perplexity(ref, ids)
    assert abs(perplexity(kept, ids) / base - 1) <= 0.02
    for kind, bound in [("int8", 0.05), ("int4", 0.10)]:
        model = quantize(copy.deepcopy(ref), kind)
        assert abs(perplexity(model, ids) / base - 1) <= bound, kind
