"""quant/bf16.py + kernels/bf16_mv.cpp: bfloat16 decoding steps through the native kernel.

Reference: the same bfloat16 weight and activations multiplied in float64. The kernel sums in
float32, so it may differ from that by float32 summation error (K * 2^-24 relative to sum |x w|,
a loose bound); after rounding to bfloat16, by at most one bfloat16 step more.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tinyslm
from tinyslm import CausalLM, ModelConfig
from tinyslm.quant import BF16Linear, bf16_kernels, native

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
def test_layer_uses_the_kernel_for_decoding_rows_and_a_float32_or_bf16_gemm_for_prompts():
    torch.manual_seed(0)
    plain = nn.Linear(96, 40, bias=True).bfloat16()
    layer = nn.Linear(96, 40, bias=True).bfloat16()
    layer.load_state_dict(plain.state_dict())
    step = torch.randn(2, 1, 96).bfloat16()  # decoding: 2 rows
    prompt = torch.randn(1, 9, 96).bfloat16()  # 9 rows
    with bf16_kernels(nn.Sequential(layer)) as switched:
        assert switched == 1 and type(layer) is BF16Linear and set(layer.state_dict()) == {"weight", "bias"}
        step_out, prompt_out = layer(step), layer(prompt)
    assert type(layer) is nn.Linear  # back to the reference arithmetic
    ref = step.double() @ plain.weight.double().t() + plain.bias.double()
    assert step_out.dtype == torch.bfloat16 and step_out.shape == (2, 1, 40)
    assert ((step_out.double() - ref).abs() <= 2.0**-7 * ref.abs() + 1e-3).all()  # one bfloat16 rounding
    expected = plain(prompt) if native.has_native_bf16() else plain.float()(prompt.float()).bfloat16()
    assert torch.equal(prompt_out, expected)


def test_only_plain_bfloat16_linears_are_switched_and_only_inside_the_block():
    model = nn.Sequential(nn.Linear(8, 8).bfloat16(), nn.Linear(8, 8), nn.Embedding(4, 8).bfloat16())
    with bf16_kernels(model) as switched:
        assert [type(m) for m in model] == [BF16Linear if native.available() else nn.Linear, nn.Linear, nn.Embedding]
        assert switched == (1 if native.available() else 0)
        with bf16_kernels(model) as again:  # nested: nothing left to switch, nothing undone early
            assert again == 0
        assert type(model[0]) is (BF16Linear if native.available() else nn.Linear)
    with bf16_kernels(model, enabled=False) as switched:
        assert switched == 0 and type(model[0]) is nn.Linear
    assert [type(m) for m in model] == [nn.Linear, nn.Linear, nn.Embedding]


@needs_kernel
def test_generate_uses_the_kernels_and_leaves_the_forward_as_it_was():
    config = ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=64)
    model = CausalLM(config).init_weights(std=0.3, seed=0).eval().bfloat16()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    before = model(ids)
    seen = []
    tinyslm.generate(model, ids, 3, on_token=lambda _: seen.append(type(model.blocks[0].attn.wq)))
    assert seen == [BF16Linear] * 3
    assert torch.equal(model(ids), before) and type(model.blocks[0].attn.wq) is nn.Linear
    seen.clear()
    tinyslm.generate(model, ids, 2, fast=False, on_token=lambda _: seen.append(type(model.blocks[0].attn.wq)))
    assert seen == [nn.Linear] * 2  # fast=False: the reference arithmetic throughout


@needs_kernel
def test_compiled_layer_equals_eager():
    layer = nn.Linear(64, 32).bfloat16()
    x = torch.randn(1, 64).bfloat16()
    with bf16_kernels(nn.Sequential(layer)):
        # emulate_precision_casts: as generate's compiled step, round to bfloat16 where eager does
        compiled = torch.compile(lambda t: F.silu(layer(t)), fullgraph=True, options={"emulate_precision_casts": True})
        assert torch.equal(compiled(x), F.silu(layer(x)))
