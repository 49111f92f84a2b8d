"""BF16Linear: a bfloat16 linear layer whose decoding steps use the native matrix-vector kernel.

Legend: M rows of activations (batch x new tokens), N out_features, K in_features.

A layer's weight is unchanged (the same bfloat16 tensor, a GGUF's file map included); only the
product for a few rows (M <= DECODE_ROWS, i.e. decoding) goes through kernels/bf16_mv.cpp, which
widens the weight to float32 in registers and streams it at close to the memory's speed:
measured on 2 cores of an AMD EPYC (AVX2), 18-22 GB/s against torch's 14-17 GB/s for the same
bfloat16 product. Longer inputs (a prompt) take torch's GEMM as before. Both sum in float32 and
round the result to bfloat16, in a different order, so a last bit can differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import native

DECODE_ROWS = 4  # up to this many activation rows use the kernel


class BF16Linear(nn.Linear):
    """nn.Linear with a bfloat16 weight; `use_bf16_kernel(model)` turns a model's layers into these."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        if rows.shape[0] > DECODE_ROWS:
            return F.linear(x, self.weight, self.bias)
        y = torch.ops.tinyslm.bf16_mv(rows.float().contiguous(), self.weight)  # (M, N) float32
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)


def use_bf16_kernel(model: nn.Module) -> int:
    """Make every plain nn.Linear of `model` with a contiguous bfloat16 weight a BF16Linear, in place
    (its parameters untouched). Returns how many; 0 when the native kernel is unavailable."""
    if not native.available():
        return 0
    native.register_fake()
    done = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.dtype == torch.bfloat16 and module.weight.is_contiguous():
            module.__class__ = BF16Linear  # same parameters, same state_dict keys; only forward differs
            done += 1
    return done
