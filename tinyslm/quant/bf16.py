"""BF16Linear: a bfloat16 linear layer whose decoding steps use the native matrix-vector kernel.

Legend: M rows of activations (batch x new tokens), N out_features, K in_features.

`tinyslm.generate` runs inside `bf16_kernels(model)`, which makes a bfloat16 model's nn.Linear
layers BF16Linear for the call only. A layer's weight is unchanged (the same bfloat16 tensor, a
GGUF's file map included); only the product for a few rows (M <= DECODE_ROWS, i.e. decoding) goes through kernels/bf16_mv.cpp, which
widens the weight to float32 in registers and streams it at close to the memory's speed:
measured on 2 cores of an AMD EPYC (AVX2), 18-22 GB/s against torch's 14-17 GB/s for the same
bfloat16 product. Longer inputs (a prompt) take torch's GEMM: in bfloat16 where the CPU has
bfloat16 instructions, else in float32 over a transient float32 copy of the layer's weight
(torch's bfloat16 GEMM on AVX2 is several times slower than its float32 one). Every path sums
exact float32 products in float32 and rounds the result to bfloat16, each in its own order, so a
last bit can differ.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from . import native

DECODE_ROWS = 4  # up to this many activation rows use the kernel


class BF16Linear(nn.Linear):
    """nn.Linear with a bfloat16 weight whose forward uses the native kernel (see `bf16_kernels`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        if rows.shape[0] > DECODE_ROWS:  # a prompt
            if native.has_native_bf16():
                return F.linear(x, self.weight, self.bias)
            # without bfloat16 instructions torch's bfloat16 GEMM is slow: widen this one layer's weight
            # for the duration of a float32 GEMM (the same products, exact in float32, summed in float32)
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)
        y = torch.ops.tinyslm.bf16_mv(rows.float().contiguous(), self.weight)  # (M, N) float32
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)


@contextlib.contextmanager
def bf16_kernels(model: nn.Module, enabled: bool = True):
    """Within this block, every plain nn.Linear of `model` with a contiguous bfloat16 weight computes as a
    BF16Linear (parameters and state_dict untouched); afterwards they are plain nn.Linear again.

    `tinyslm.generate` decodes inside it (unless fast=False), so a model's own forward stays the
    reference arithmetic, which matches transformers' bfloat16 results bit for bit. Yields how many
    layers it switched: 0 when disabled or the native kernel is unavailable.
    """
    switched = [m for m in model.modules() if type(m) is nn.Linear and m.weight.dtype == torch.bfloat16
                and m.weight.device.type == "cpu" and m.weight.is_contiguous()] if enabled else []  # fmt: skip
    if switched and native.available():  # (a float32 model never builds the kernels)
        native.register_fake()
        for module in switched:
            module.__class__ = BF16Linear  # same parameters, same state_dict keys; only forward differs
    else:
        switched = []
    try:
        yield len(switched)
    finally:
        for module in switched:
            module.__class__ = nn.Linear
