"""quant/bf16.py + kernels/bf16_mv.cpp: bfloat16 decoding steps through the native kernel.

Reference: the same bfloat16 weight and activations multiplied in float64. The kernel sums in
float32, so it may differ from that by float32 summation error (K * 2^-24 relative to sum |x w|,
a loose bound); after rounding to bfloat16, by at most one bfloat16 step more.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyslm.quant import BF16Linear, native, use_bf16_kernel

needs_kernel = pytest.mark.skipif(not native.available(), reason=f"native kernel unavailable: {native.why_unavailable}")


@needs_kernel
@pytest.mark.parametrize("n,k", [(4, 8), (37, 64), (64, 200), (300, 2048)])  # row tails of the 4-row tiling, K % 8 != 0
@pytest.mark.parametrize("m", [1, 3])
def test_kernel_equals_the_float64_product_within_float32_summation_error(m, n, k):
    gen = torch.Generator().manual_seed(n + k + m)
    w = torch.randn(n, k, generator=gen).bfloat16()
    x = torch.randn(m, k, generator=gen)
    y = torch.ops.tinyslm.bf16_mv(x, w)
    ref = x.double() @ w.double().t()
    bound = k * 2.0**-24 * (x.double().abs() @ w.double().abs().t())
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert ((y.double() - ref).abs() <= bound).all()


@needs_kernel
def test_layer_uses_the_kernel_for_decoding_rows_and_torch_for_prompts():
    torch.manual_seed(0)
    plain = nn.Linear(96, 40, bias=True).bfloat16()
    layer = nn.Linear(96, 40, bias=True).bfloat16()
    layer.load_state_dict(plain.state_dict())
    assert use_bf16_kernel(nn.Sequential(layer)) == 1 and type(layer) is BF16Linear
    assert layer.weight is not plain.weight and set(layer.state_dict()) == {"weight", "bias"}
    step = torch.randn(2, 1, 96).bfloat16()  # decoding: 2 rows
    ref = step.double() @ plain.weight.double().t() + plain.bias.double()
    step_out = layer(step)
    assert step_out.dtype == torch.bfloat16 and step_out.shape == (2, 1, 40)
    assert ((step_out.double() - ref).abs() <= 2.0**-7 * ref.abs() + 1e-3).all()  # one bfloat16 rounding
    prompt = torch.randn(1, 9, 96).bfloat16()  # 9 rows: torch's GEMM, bit for bit what nn.Linear gives
    assert torch.equal(layer(prompt), plain(prompt))


def test_only_plain_bfloat16_linears_are_switched():
    model = nn.Sequential(nn.Linear(8, 8).bfloat16(), nn.Linear(8, 8), nn.Embedding(4, 8).bfloat16())
    switched = use_bf16_kernel(model)
    assert [type(m) for m in model] == [BF16Linear if native.available() else nn.Linear, nn.Linear, nn.Embedding]
    assert switched == (1 if native.available() else 0)


@needs_kernel
def test_compiled_layer_equals_eager():
    layer = nn.Linear(64, 32).bfloat16()
    use_bf16_kernel(nn.Sequential(layer))
    x = torch.randn(1, 64).bfloat16()
    # emulate_precision_casts: as generate's compiled step, round to bfloat16 where eager does
    compiled = torch.compile(lambda t: F.silu(layer(t)), fullgraph=True, options={"emulate_precision_casts": True})
    assert torch.equal(compiled(x), F.silu(layer(x)))
