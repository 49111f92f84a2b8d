"""quant/blocks.py + kernels/ggml_mm.cpp: GGUF blocks kept as they are, multiplied by the native kernel.

The kernel's arithmetic is stated (blocks.py, ggml_mm.cpp): each activation row is rounded to 8
bits per block of 32 (scale = max |x| / 127), and everything after that is exact integer sums times
float scales. So the reference here is written out in torch from that statement, over the weights
as the `gguf` package dequantizes them: equal up to float32 summation order. Against the plain
float product the only difference is the activation rounding, bounded by half a step per value.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tinyslm
from tinyslm.errors import CheckpointError
from tinyslm.gguf import loader
from tinyslm.quant import GGMLLinear, QuantizedLinear, native

gguf = pytest.importorskip("gguf")
from gguf import quants

SMOLLM = Path(__file__).resolve().parents[3] / "shared" / "data" / "SmolLM2-135M-Instruct.Q4_1.gguf"
KINDS = ["Q4_0", "Q4_1", "Q8_0"]  # quantized by the gguf package
ALL_KINDS = [*KINDS, "Q4_K", "Q6_K"]  # K-quants: the gguf package dequantizes them but has no quantizer: random blocks

needs_kernel = pytest.mark.skipif(not native.available(), reason=f"native kernel unavailable: {native.why_unavailable}")


def gguf_weight(kind: str, n: int, k: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """(raw blocks as the gguf package quantizes them, its float32 dequantization)."""
    rng = np.random.default_rng(seed)
    kind_id = getattr(gguf.GGMLQuantizationType, kind)
    if kind in ("Q4_K", "Q6_K"):  # random super-blocks with small positive f16 scales: Q4_K's d and dmin (bytes
        # 0..3; then 6-bit scales and mins, nibbles), Q6_K's d (bytes 208..209; before it codes and int8 scales)
        size, at = {"Q4_K": (144, slice(0, 4)), "Q6_K": (210, slice(208, 210))}[kind]
        raw = rng.integers(0, 256, (n, k // 256, size), dtype=np.uint8)
        raw[..., at] = rng.uniform(0.0005, 0.002, (n, k // 256, (at.stop - at.start) // 2)).astype(np.float16).view(np.uint8)
        raw = raw.reshape(n, -1)
    else:
        raw = quants.quantize(rng.normal(0, 0.05, (n, k)).astype(np.float32), kind_id)
    return raw, torch.from_numpy(quants.dequantize(raw, kind_id))


def packed(raw: np.ndarray, n: int, kind: str) -> torch.Tensor:
    """GGUF blocks of n rows in the kernel's layout (8 rows interleaved)."""
    return native.ggml_pack(torch.from_numpy(raw.reshape(n, -1).copy()), kind)


def q8_activations(x: torch.Tensor) -> torch.Tensor:
    """Each row of x rounded to 8 bits per block of 32, as the kernel (and llama.cpp's quantize_row_q8_0) does."""
    m, k = x.shape
    blocks = x.view(m, k // 32, 32)
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    return (torch.round(blocks * inv) * d).view(m, k)


@needs_kernel
@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("m", [1, 3, 4, 9])  # the kernel takes rows 4 at a time, then one by one
@pytest.mark.parametrize("n", [80, 77, 3])  # groups of 8 weight rows; the last one padded
def test_kernel_equals_its_stated_arithmetic_over_gguf_dequantized_weights(kind, m, n):
    raw, w = gguf_weight(kind, n, 256, seed=m)
    x = torch.randn(m, 256, generator=torch.Generator().manual_seed(m))
    y = native.ggml_mm(x, packed(raw, n, kind), kind, n)
    ref = q8_activations(x).double() @ w.double().t()
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
def test_packing_interleaves_8_rows_block_by_block_as_stated_and_unpacks_to_the_files_bytes(kind):
    """ggml_mm.cpp's layout, written out in numpy: record (g, b) = the 8 rows' scales, [their offsets], then
    chunk c = bytes 4c..4c+3 of each row's codes; 13 rows = one whole group and one padded with zero rows."""
    n, k = 13, 64
    raw, _ = gguf_weight(kind, n, k)
    blocks = raw.reshape(n, k // 32, -1)
    head = 4 if kind == "Q4_1" else 2
    padded = np.zeros((16, k // 32, blocks.shape[2]), dtype=np.uint8)
    padded[:n] = blocks
    groups = padded.reshape(2, 8, k // 32, -1).transpose(0, 2, 1, 3)  # (G, B, 8 rows, block bytes)
    scales = [groups[..., at : at + 2].reshape(2, k // 32, 16) for at in range(0, head, 2)]  # d[8], then m[8]
    codes = groups[..., head:].reshape(2, k // 32, 8, -1, 4).transpose(0, 1, 3, 2, 4).reshape(2, k // 32, -1)
    expected = np.concatenate([*scales, codes], axis=-1).reshape(2, -1)
    ours = packed(raw, n, kind)
    assert ours.shape == (2, 8 * raw.reshape(n, -1).shape[1]) and np.array_equal(ours.numpy(), expected)
    assert np.array_equal(native.ggml_unpack(ours, kind, n).numpy(), raw.reshape(n, -1))


@needs_kernel
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_kernel_differs_from_the_float_product_by_at_most_the_activation_rounding(kind):
    """|x - q8(x)| <= step / 2 per value, with step = max |x| / 127 of its block: so
    |y - x w| <= sum_k |w_k| * step_k / 2 for every output."""
    raw, w = gguf_weight(kind, 64, 512)
    x = torch.randn(5, 512)
    y = native.ggml_mm(x, packed(raw, 64, kind), kind, 64).double()
    step = x.view(5, -1, 32).abs().amax(-1, keepdim=True).expand(-1, -1, 32).reshape(5, 512) / 127
    bound = (step.double() / 2) @ w.double().abs().t()
    assert ((y - x.double() @ w.double().t()).abs() <= bound * (1 + 1e-4) + 1e-6).all()


@needs_kernel
def test_kernel_edge_values_zero_blocks_and_the_int8_minimum():
    """An all-zero activation block (scale 0) contributes 0; Q8_0 codes of -128 (legal in the format) count as -128."""
    n, k = 16, 64
    blocks = np.zeros((n, 2, 34), dtype=np.uint8)
    blocks[:, :, 0:2] = np.frombuffer(np.float16(0.5).tobytes(), dtype=np.uint8)
    blocks[:, :, 2:] = np.frombuffer(np.int8(-128).tobytes(), dtype=np.uint8)
    x = torch.zeros(2, k)
    x[1, 32:] = 1.0  # first block all zero, second all ones
    y = native.ggml_mm(x, packed(blocks, n, "Q8_0"), "Q8_0", n)
    assert torch.equal(y[0], torch.zeros(n)) and torch.allclose(y[1], torch.full((n,), -128 * 0.5 * 32))


@needs_kernel
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_layer_holds_the_files_bytes_and_dequantizes_like_gguf(kind):
    """The packed weight gives the file's bytes back and dequantizes to the gguf package's floats exactly; it holds
    the file's bytes reordered (Q4_K: its 6-bit scales and mins a byte each, 148 bytes per 144; Q6_K: 210 as 210)."""
    raw, w = gguf_weight(kind, 48, 256)
    bias = torch.randn(48)
    layer = GGMLLinear.from_gguf(kind, raw, (48, 256), bias=bias)
    assert layer.gguf_blocks().numpy().tobytes() == raw.tobytes()
    assert torch.equal(layer.dequantize(), w)
    assert layer.nbytes == (raw.nbytes // 144 * 148 if kind == "Q4_K" else raw.nbytes) + 48 * 4
    x = torch.randn(2, 3, 256, dtype=torch.bfloat16)  # any leading dims, any float dtype in and out
    y = layer(x)
    assert y.shape == (2, 3, 48) and y.dtype == torch.bfloat16
    ref = q8_activations(x.float().view(6, 256)) @ w.t() + bias
    assert torch.allclose(y.float().view(6, 48), ref, rtol=2**-7, atol=1e-3)


@needs_kernel
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_native_dequantize_equals_gguf_and_long_prompts_take_the_same_kernel(kind):
    """Dequantizing a packed weight (77 rows: the last group padded) gives the gguf package's floats exactly; a
    600-row prompt is the stated arithmetic too (activations rounded), as llama.cpp computes prompts."""
    raw, w = gguf_weight(kind, 77, 256)
    layer = GGMLLinear.from_gguf(kind, raw, (77, 256))
    assert torch.equal(layer.dequantize(), w)
    x = torch.randn(600, 256)
    ref = q8_activations(x).double() @ w.double().t()
    assert (layer(x).double() - ref).abs().max() <= 1e-5 * ref.abs().max()


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
def test_quantize_to_blocks_writes_what_gguf_quantizes(kind):
    """tinyslm.quantize(model, "q4_0" | ...): each layer's blocks are the gguf package's (llama.cpp's) quantization of
    its float weight, byte for byte; a layer whose in_features is not a multiple of 32 stays float and is listed."""
    from tinyslm import CausalLM, ModelConfig, quantize

    config = ModelConfig(vocab_size=96, dim=64, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=80, max_seq_len=32)
    model = CausalLM(config).init_weights(std=0.05, seed=0)
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    quantize(model, kind.lower())
    assert model.quantization["skipped"] == ["blocks.0.ffn.down: " + f"{kind.lower()} needs in_features divisible by "
                                             "32; found a (64, 80) weight"]  # fmt: skip
    for name, w in weights.items():
        layer = model.get_submodule(name)
        if name == "blocks.0.ffn.down":
            assert type(layer) is nn.Linear
            continue
        expected = quants.quantize(w.numpy(), getattr(gguf.GGMLQuantizationType, kind))
        assert isinstance(layer, GGMLLinear) and layer.gguf_blocks().numpy().tobytes() == expected.tobytes(), name


def test_wrong_byte_count_is_one_clear_error():
    raw, _ = gguf_weight("Q4_0", 32, 64)
    with pytest.raises(CheckpointError, match=r"Q4_0 tensor of shape \(32, 64\) needs 1,152 bytes"):
        GGMLLinear.from_gguf("Q4_0", raw.reshape(-1)[:-1], (32, 64))


@pytest.mark.slow
@needs_kernel
def test_compiled_layer_equals_eager():
    raw, _ = gguf_weight("Q4_1", 64, 128)
    layer = GGMLLinear.from_gguf("Q4_1", raw, (64, 128))
    x = torch.randn(3, 128)
    compiled = torch.compile(lambda t: torch.nn.functional.silu(layer(t)), fullgraph=True)
    # the kernel is an opaque call in the graph: its output the same bits; the fused SiLU is inductor's own code,
    # vectorized for the CPU inductor detects, eager's for the one torch dispatches to (ATEN_CPU_CAPABILITY can
    # make them differ): the same function to float32 rounding
    assert torch.equal(torch.compile(layer, fullgraph=True)(x), layer(x))
    torch.testing.assert_close(compiled(x), torch.nn.functional.silu(layer(x)), rtol=1e-6, atol=1e-7)


def test_a_build_is_named_for_the_cpu_and_instruction_set_it_was_made_for(monkeypatch):
    # -march=native builds for the build machine's extensions: a cached build must not load on another CPU
    from tinyslm import machine

    def tag(flags, isa=""):
        monkeypatch.setattr(machine, "_cpuinfo", lambda: {"model name": "Some CPU", "flags": flags})
        monkeypatch.setenv("TINYSLM_KERNEL_ISA", isa)
        return native._cpu_tag()

    assert tag("fpu avx2 avx512f") != tag("fpu avx2 avx512f amx_tile")
    assert tag("fpu avx2") == tag("fpu avx2")
    # each forced instruction set is a build of its own
    assert len({tag("fpu avx2 fma f16c", isa) for isa in ("", "native", "avx2", "generic")}) == 3
    assert tag("fpu avx2 fma f16c", "") == tag("fpu avx2 fma f16c", "native")


def test_tinyslm_native_0_turns_the_kernels_off_and_says_so():
    import os
    import subprocess
    import sys

    code = "from tinyslm.quant import native; print(native.available(), native.why_unavailable)"
    env = {**os.environ, "TINYSLM_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False TINYSLM_NATIVE=0", out.stderr


def test_without_the_kernel_gguf_weights_fall_back_to_torchs_int_kernels(monkeypatch):
    monkeypatch.setattr(native, "available", lambda: False)
    assert loader.quantized_linear_factory() == QuantizedLinear.from_gguf


# ----------------------------------------------------------------------------------------------
# the real model: SmolLM2-135M-Instruct, Q4_1 with a Q8_0 embedding


@pytest.fixture(scope="module")
def smollm_pair():
    if not SMOLLM.is_file():
        pytest.skip(f"{SMOLLM.name} not present")
    if not native.available():
        pytest.skip(f"native kernel unavailable: {native.why_unavailable}")
    packed = loader.load_gguf(SMOLLM)
    reference = loader.load_gguf(SMOLLM, dtype=torch.float32, keep_quantized=False)
    for name, module in reference.named_modules():  # the kernel's activation rounding, written out in torch
        if isinstance(module, nn.Linear):
            assert isinstance(packed.get_submodule(name), GGMLLinear), name
            module.register_forward_pre_hook(lambda _, args: (q8_activations(args[0].reshape(-1, args[0].shape[-1]))
                                                              .view(args[0].shape),))  # fmt: skip
    return packed, reference


def test_smollm2_block_and_head_equal_float_ones_with_q8_activations(smollm_pair):
    """The first block (Q4_1 projections) and the tied head (the embedding's Q8_0 blocks) of the real model,
    against float32 modules of the same weights with the activation rounding written out: equal up to float32
    summation order. (Through 30 layers, those last-bit differences flip a few rounding ties per layer and
    the two models drift apart by about as much as activation rounding itself moves the logits, so the whole
    model is bounded against the float one in test_gguf.py instead.)"""
    packed, reference = smollm_pair
    assert packed.head.kind == "Q8_0" and packed.blocks[0].ffn.down.kind == "Q4_1"
    x = torch.tensor([tinyslm.load_tokenizer(SMOLLM).encode("The capital of France is")])
    seen = []
    handle = packed.blocks[0].register_forward_pre_hook(lambda _, args: seen.append(args))
    with torch.no_grad():
        packed(x)
        handle.remove()
        ours, ref = packed.blocks[0](*seen[0]), reference.blocks[0](*seen[0])  # the same input to both
        assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()
        h = torch.randn(1, 4, 576) * 3
        ours, ref = packed.head(h), reference.head(h)
        assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_smollm2_blocks_perplexity_stays_within_5_percent_of_the_float_model(smollm_pair):
    """The perplexity change on test_quant.py's fixed text from rounding the activations to 8 bits per block
    (the file's weights are used exactly): measured +2.1% (25.40 -> 25.92; 47 tokens)."""
    from test_quant import TEXT, perplexity

    packed, _ = smollm_pair
    plain = loader.load_gguf(SMOLLM, keep_quantized=False)
    ids = torch.tensor([tinyslm.load_tokenizer(SMOLLM).encode(TEXT)])
    assert abs(perplexity(packed, ids) / perplexity(plain, ids) - 1) <= 0.05
