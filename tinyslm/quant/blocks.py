"""GGMLLinear: a linear layer whose weight is a GGUF tensor's own Q4_0 / Q4_1 / Q8_0 blocks.

Legend: M rows of activations (batch x new tokens), N out_features, K in_features.

This is how llama.cpp keeps a quantized model, and what tinyslm does with a GGUF when the native
kernel (native.py) is available: the bytes are used as the file holds them, so the weights are
exactly the file's (Q8_0 too, which torch's per-row int8 kernel would have to re-quantize),
loading copies nothing (the blocks stay in the file's memory map), and the product reads 4.5 / 5
/ 8.5 bits per weight. The kernel quantizes the activations to 8 bits per block of 32, as
llama.cpp does; that is the only rounding it adds to
the float product of x and the dequantized weight (tests/test_quant_blocks.py bounds it). Long
prompts (DENSE_ROWS rows and more) take a float32 GEMM over the dequantized weight instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import ggml, native


# From how many activation rows a float32 GEMM over the dequantized weight beats the block dot products
# (whose activations are rounded to 8 bits; the GEMM's are not), dequantizing DENSE_TILE weight rows at a
# time so that the float32 copy stays small and in cache. Measured on 2 cores of an AMD EPYC (AVX2), SmolLM2
# and TinyLlama-1.1B shapes: equal at ~128 rows, the GEMM 1.35-1.6x faster at 512.
DENSE_ROWS, DENSE_TILE = 256, 512


class GGMLLinear(nn.Module):
    """y = x @ w.T + b with w held as GGUF blocks: (N, K / 32 * block bytes) uint8 in the buffer `blocks`."""

    def __init__(self, kind: str, in_features: int, out_features: int, blocks: torch.Tensor,
                 bias: torch.Tensor | None = None):  # fmt: skip
        super().__init__()
        native.register_fake()  # torch.compile's shape rule for the kernel, registered outside any compiled region
        self.kind, self.in_features, self.out_features = kind, in_features, out_features
        self.bits = 8 if kind == "Q8_0" else 4
        self.register_buffer("blocks", blocks)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_gguf(cls, kind: str, raw: np.ndarray, shape: tuple[int, int], bias: torch.Tensor | None = None) -> GGMLLinear:
        """A layer over the raw blocks of a GGUF tensor of `shape` = (out, in) (size checked against its type).

        The blocks are used where they lie: a tensor of the file's copy-on-write memory map stays
        mapped, so loading copies nothing and the pages are read on first use (as llama.cpp does).
        """
        n, k = shape
        blocks = ggml.blocks_of(kind, raw, (n, k)).reshape(n, -1)  # (N, B * block bytes), a view where it can be
        if not blocks.flags.writeable:  # torch wants writable memory; a read-only array is copied
            blocks = blocks.copy()
        return cls(kind, k, n, torch.from_numpy(blocks), bias)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, kind: str = "Q8_0") -> GGMLLinear:
        """Quantize a float (N, K) weight to `kind` blocks with the gguf package's quantizer (llama.cpp's, bit for
        bit: `llama-quantize` would write the same bytes for this tensor)."""
        return cls.from_gguf(kind, quantize_blocks(weight, kind), tuple(weight.shape), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features).float().contiguous()  # (M, K): the kernels take float32
        if rows.shape[0] >= DENSE_ROWS:  # a long prompt: float32 GEMM over DENSE_TILE weight rows at a time
            y = torch.cat([F.linear(rows, native.ggml_dequantize(self.blocks[n : n + DENSE_TILE], self.kind))
                           for n in range(0, self.out_features, DENSE_TILE)], dim=1)  # fmt: skip
        else:
            y = native.ggml_mm(rows, self.blocks, self.kind)  # (M, N) float32
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight (N, K), computed as llama.cpp computes it (float32), cast to `dtype`."""
        return native.ggml_dequantize(self.blocks, self.kind).to(dtype)

    @property
    def nbytes(self) -> int:
        """Bytes this layer holds (blocks, bias)."""
        return sum(t.numel() * t.element_size() for t in (self.blocks, self.bias) if t is not None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind} blocks, bias={self.bias is not None}"


def quantize_blocks(weight: torch.Tensor, kind: str) -> np.ndarray:
    """A float (N, K) weight as GGUF `kind` blocks (N, K / 32 * block bytes), by the gguf package's quantizer."""
    from gguf import GGMLQuantizationType, quants  # noqa: PLC0415  (the gguf extra)

    n = weight.shape[0]
    return quants.quantize(weight.detach().float().numpy(), GGMLQuantizationType[kind]).reshape(n, -1)
