"""quant/float_mv.py + kernels/float_mv.cpp: bfloat16 and float32 decoding steps through the native kernel.

Reference: the same bfloat16 or float32 weight and activations multiplied in float64. The kernel sums in
float32, so it may differ from that by float32 summation error (K * 2^-24 relative to sum |x w|,
a loose bound); after rounding to bfloat16, by at most one bfloat16 step more.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tinyslm
from tinyslm import CausalLM, ModelConfig
from tinyslm.quant import FloatLinear, float_kernels, native

needs_kernel = pytest.mark.skipif(not native.available(), reason=f"native kernel unavailable: {native.why_unavailable}")


@needs_kernel
@pytest.mark.parametrize("n,k", [(4, 8), (37, 64), (64, 200), (300, 2048)])  # row tails of the 4-row tiling, K % 8 != 0
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_kernel_equals_the_float64_product_within_float32_summation_error(m, n, k, dtype):
    gen = torch.Generator().manual_seed(n + k + m)
    w = torch.randn(n, k, generator=gen).to(dtype)
    x = torch.randn(m, k, generator=gen)
    y = torch.ops.tinyslm.float_mv(x, w)
    ref = x.double() @ w.double().t()
    bound = k * 2.0**-24 * (x.double().abs() @ w.double().abs().t())
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert ((y.double() - ref).abs() <= bound).all()


@needs_kernel
def test_layer_uses_the_kernel_for_decoding_rows_and_a_float32_or_bf16_gemm_for_prompts():
    torch.manual_seed(0)
    plain = nn.Linear(96, 40, bias=True).bfloat16()
    layer = nn.Linear(96, 40, bias=True).bfloat16()
    layer.load_state_dict(plain.state_dict())
    step = torch.randn(2, 1, 96).bfloat16()  # decoding: 2 rows
    prompt = torch.randn(1, 9, 96).bfloat16()  # 9 rows
    with float_kernels(nn.Sequential(layer)) as switched:
        assert switched == 1 and type(layer) is FloatLinear and set(layer.state_dict()) == {"weight", "bias"}
        step_out, prompt_out = layer(step), layer(prompt)
    assert type(layer) is nn.Linear  # back to the reference arithmetic
    ref = step.double() @ plain.weight.double().t() + plain.bias.double()
    assert step_out.dtype == torch.bfloat16 and step_out.shape == (2, 1, 40)
    assert ((step_out.double() - ref).abs() <= 2.0**-7 * ref.abs() + 1e-3).all()  # one bfloat16 rounding
    expected = plain(prompt) if native.has_native_bf16() else plain.float()(prompt.float()).bfloat16()
    assert torch.equal(prompt_out, expected)


@needs_kernel
def test_a_float32_layer_decodes_through_the_kernel_and_prompts_through_torchs_gemm():
    torch.manual_seed(0)
    layer = nn.Linear(96, 40, bias=True)
    step, prompt = torch.randn(2, 1, 96), torch.randn(1, 9, 96)
    ref_prompt = layer(prompt)
    with float_kernels(nn.Sequential(layer)) as switched:
        assert switched == 1 and type(layer) is FloatLinear
        step_out, prompt_out = layer(step), layer(prompt)
    exact = step.double() @ layer.weight.double().t() + layer.bias.double()
    bound = 96 * 2.0**-24 * (step.double().abs() @ layer.weight.double().abs().t() + layer.bias.double().abs())
    assert step_out.dtype == torch.float32 and ((step_out.double() - exact).abs() <= 2 * bound).all()
    assert torch.equal(prompt_out, ref_prompt)  # a prompt: torch's own GEMM, bit for bit


def test_only_plain_bfloat16_and_float32_linears_are_switched_and_only_inside_the_block():
    model = nn.Sequential(nn.Linear(8, 8).bfloat16(), nn.Linear(8, 8), nn.Linear(8, 8).double(), nn.Embedding(4, 8).bfloat16())
    with float_kernels(model) as switched:
        fast = FloatLinear if native.available() else nn.Linear
        assert [type(m) for m in model] == [fast, fast, nn.Linear, nn.Embedding]
        assert switched == (2 if native.available() else 0)
        with float_kernels(model) as again:  # nested: nothing left to switch, nothing undone early
            assert again == 0
        assert type(model[0]) is (FloatLinear if native.available() else nn.Linear)
    with float_kernels(model, enabled=False) as switched:
        assert switched == 0 and type(model[0]) is nn.Linear
    assert [type(m) for m in model] == [nn.Linear, nn.Linear, nn.Linear, nn.Embedding]


@needs_kernel
def test_generate_uses_the_kernels_and_leaves_the_forward_as_it_was():
    config = ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=64)
    model = CausalLM(config).init_weights(std=0.3, seed=0).eval().bfloat16()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    before = model(ids)
    seen = []
    tinyslm.generate(model, ids, 3, on_token=lambda _: seen.append(type(model.blocks[0].attn.wq)))
    assert seen == [FloatLinear] * 3
    assert torch.equal(model(ids), before) and type(model.blocks[0].attn.wq) is nn.Linear
    seen.clear()
    tinyslm.generate(model, ids, 2, fast=False, on_token=lambda _: seen.append(type(model.blocks[0].attn.wq)))
    assert seen == [nn.Linear] * 2  # fast=False: the reference arithmetic throughout


@pytest.mark.slow
@needs_kernel
def test_compiled_layer_equals_eager():
    layer = nn.Linear(64, 32).bfloat16()
    x = torch.randn(1, 64).bfloat16()
    with float_kernels(nn.Sequential(layer)):
        # emulate_precision_casts: as generate's compiled step, round to bfloat16 where eager does
        compiled = torch.compile(lambda t: F.silu(layer(t)), fullgraph=True, options={"emulate_precision_casts": True})
        assert torch.equal(compiled(x), F.silu(layer(x)))
