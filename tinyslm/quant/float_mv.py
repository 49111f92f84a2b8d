"""FloatLinear: a bfloat16 or float32 linear layer whose decoding steps use the native matrix-vector kernel.

Legend: M rows of activations (batch x new tokens), N out_features, K in_features.

`tinyslm.generate` (unless fast=False) runs inside `float_kernels(model)`, through the runtime's
fast_decoding, which makes a model's bfloat16 and float32 nn.Linear layers FloatLinear for the call
only. A layer's weight is unchanged (the same tensor, a GGUF's file map included); only the product
for a few rows (M <= DECODE_ROWS, i.e. decoding) goes through kernels/float_mv.cpp, which streams
the weight (a bfloat16 one widened to float32 in registers) at close to the memory's speed, faster
than torch's own product on the CPUs measured (docs/performance.md). Longer inputs (a prompt) take
torch's GEMM: float32 as it is; bfloat16 as it is where the CPU has bfloat16 instructions, else in
float32 over a transient float32 copy of the layer's weight (torch's bfloat16 GEMM on AVX2 is
several times slower than its float32 one). Every path sums exact float32 products in float32
(then rounds a bfloat16 layer's result to bfloat16), each in its own order, so a last bit can differ.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from . import native

DECODE_ROWS = 4  # up to this many activation rows use the kernel


class FloatLinear(nn.Linear):
    """nn.Linear with a bfloat16 or float32 weight whose forward uses the native kernel (see `float_kernels`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        if rows.shape[0] > DECODE_ROWS:  # a prompt
            if self.weight.dtype == torch.float32 or native.has_native_bf16():
                return F.linear(x, self.weight, self.bias)
            # without bfloat16 instructions torch's bfloat16 GEMM is slow: widen this one layer's weight
            # for the duration of a float32 GEMM (the same products, exact in float32, summed in float32)
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)
        y = torch.ops.tinyslm.float_mv(rows.float().contiguous(), self.weight)  # (M, N) float32
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)


@contextlib.contextmanager
def float_kernels(model: nn.Module, enabled: bool = True):
    """Within this block, every plain nn.Linear of `model` with a contiguous bfloat16 or float32 weight on the
    CPU computes as a FloatLinear (parameters and state_dict untouched); afterwards they are plain nn.Linear again.

    `tinyslm.generate` decodes inside it (unless fast=False), while a model's own forward stays the
    reference arithmetic, which matches transformers' results (bfloat16: bit for bit). Yields how many
    layers it switched: 0 when disabled or the native kernel is unavailable.
    """
    switched = [m for m in model.modules() if type(m) is nn.Linear and m.weight.dtype in (torch.bfloat16, torch.float32)
                and m.weight.device.type == "cpu" and m.weight.is_contiguous()] if enabled else []  # fmt: skip
    if switched and native.available():
        native.register_fake()
        for module in switched:
            module.__class__ = FloatLinear  # same parameters, same state_dict keys; only forward differs
    else:
        switched = []
    try:
        yield len(switched)
    finally:
        for module in switched:
            module.__class__ = nn.Linear
