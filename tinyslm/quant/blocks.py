"""GGMLLinear: a linear layer whose weight is a GGUF tensor's own Q4_0 / Q4_1 / Q8_0 / Q4_K / Q6_K blocks.

Legend: M rows of activations (batch x new tokens), N out_features, K in_features.

This is how llama.cpp keeps a quantized model, and what tinyslm does with a GGUF when the native
kernel (native.py) is available: the weights are exactly the file's blocks (Q8_0 too, which
torch's per-row int8 kernel would have to re-quantize), and the product reads 4.5 / 5 / 8.5 / 4.6
/ 6.6 bits per weight. On loading, the blocks of every 8 rows are interleaved (`packed`, see
kernels/ggml_mm.cpp: the same bytes in another order, so that 8 rows are multiplied at once), as
llama.cpp repacks them for its CPU kernels; `gguf_blocks()` gives the file's bytes back. The
kernel quantizes the activations to 8 bits per block of 32, as llama.cpp does; that is the only
rounding it adds to the float product of x and the dequantized weight (tests/runtime/test_quant_blocks.py
bounds it). Prompts take the same kernel: its integer products beat a float32 GEMM over the
dequantized weight at every prompt length measured (docs/performance.md, "Decisions in the code").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import ggml, native


class GGMLLinear(nn.Module):
    """y = x @ w.T + b with w held as GGUF blocks, 8 rows interleaved: (ceil(N / 8), 8 * K / 32 * block bytes)
    uint8 in the buffer `packed` (native.ggml_pack of the file's (N, K / 32 * block bytes))."""

    def __init__(self, kind: str, in_features: int, out_features: int, packed: torch.Tensor,
                 bias: torch.Tensor | None = None):  # fmt: skip
        super().__init__()
        native.register_fake()  # torch.compile's shape rule for the kernel, registered outside any compiled region
        self.kind, self.in_features, self.out_features = kind, in_features, out_features
        self.bits = {"Q8_0": 8, "Q6_K": 6}.get(kind, 4)
        self.register_buffer("packed", packed)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_gguf(cls, kind: str, raw: np.ndarray, shape: tuple[int, int], bias: torch.Tensor | None = None) -> GGMLLinear:
        """A layer over the raw blocks of a GGUF tensor of `shape` = (out, in) (size checked against its type),
        interleaved into new memory (the caller may then release the file's pages)."""
        n, k = shape
        blocks = ggml.blocks_of(kind, raw, (n, k)).reshape(n, -1)  # (N, B * block bytes), a view where it can be
        if not blocks.flags.writeable:  # torch wants writable memory (the kernel only reads it)
            blocks = blocks.copy()
        return cls(kind, k, n, native.ggml_pack(torch.from_numpy(blocks), kind), bias)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, kind: str = "Q8_0") -> GGMLLinear:
        """Quantize a float (N, K) weight to `kind` blocks with the gguf package's quantizer (llama.cpp's, bit for
        bit: `llama-quantize` would write the same bytes for this tensor)."""
        return cls.from_gguf(kind, quantize_blocks(weight, kind), tuple(weight.shape), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features).float().contiguous()  # (M, K): the kernel takes float32
        y = native.ggml_mm(rows, self.packed, self.kind, self.out_features)  # (M, N) float32
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight (N, K), computed as llama.cpp computes it (float32), cast to `dtype`."""
        return native.ggml_dequantize(self.packed, self.kind, self.out_features).to(dtype)

    def gguf_blocks(self) -> torch.Tensor:
        """The weight as a GGUF file holds it: (N, K / 32 * block bytes) uint8, rows of blocks."""
        return native.ggml_unpack(self.packed, self.kind, self.out_features)

    @property
    def nbytes(self) -> int:
        """Bytes this layer holds (blocks, bias)."""
        return sum(t.numel() * t.element_size() for t in (self.packed, self.bias) if t is not None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind} blocks, bias={self.bias is not None}"


def quantize_blocks(weight: torch.Tensor, kind: str) -> np.ndarray:
    """A float (N, K) weight as GGUF `kind` blocks (N, K / 32 * block bytes), by the gguf package's quantizer."""
    from gguf import GGMLQuantizationType, quants  # noqa: PLC0415  (the gguf extra)

    n = weight.shape[0]
    return quants.quantize(weight.detach().float().numpy(), GGMLQuantizationType[kind]).reshape(n, -1)
