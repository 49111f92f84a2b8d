"""QuantizedLinear: a linear layer whose weight stays 8- or 4-bit in memory and in the matmul.

Legend: M rows of activations (batch x new tokens), N out_features, K in_features, G = K / group_size.

Decoding one token reads every weight once, so its speed is memory bandwidth: 8-bit weights
halve the bytes of bfloat16, 4-bit ones quarter them. torch ships the CPU kernels (no hand-written
code here), both of which take bfloat16 activations and keep the weight packed:

    int8  aten._weight_int8pack_mm         w[n, k] = q[n, k] * scale[n]                       q int8, one scale per row
    int4  aten._weight_int4pack_mm_for_cpu w[n, k] = (q[n, k] - 8) * scale[g, n] + zero[g, n]  q in 0..15, g = k // group_size

Measured on an AVX2 machine, they are fast only with bfloat16 activations and scales (float32 or
float16 activations take a scalar path 8-15x slower), so the layer computes in the dtype of its
scales (bfloat16 by default; `x` is cast to it and the result cast back).

For many rows at once (a long prompt) a matmul kernel for packed weights is no longer the fastest
choice: unpacking the weight once and running the dense GEMM wins (`prefill_plan` says from how
many rows, per CPU kind). That costs a
transient dense copy of one layer's weight during the prefill, never of the whole model.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import ggml, native
from .int4pack import layout_is_known, pack_int4, unpack_int4

ops = torch.ops.aten
INT4_GROUP_SIZES = (32, 64, 128, 256)  # what the int4 kernel accepts
KINDS = ("int8", "int4")


_PLAN: tuple[int | None, torch.dtype | None] | None = None


# From how many activation rows the unpacked dense GEMM beats the packed kernel, on CPUs without
# native bfloat16 (AVX2), where the dense path is float32: the crossings of the two prefill times
# (docs/performance.md, "Decisions in the code").
AVX2_MIN_ROWS = {4: 512, 8: 256}
Q8_CHUNK = 1024  # rows of a Q8_0 tensor re-quantized at a time


def prefill_plan(bits: int = 4) -> tuple[int, torch.dtype | None]:
    """(rows, dtype): from `rows` activation rows on, unpack the weight to `dtype` and use the dense GEMM.

    dtype None means: always use the packed kernel. The choice follows the CPU: without native
    bfloat16 dot products (AVX2) torch's bfloat16 GEMM converts on the fly, float32 GEMM is the
    fastest dense path, and unpacking is worth it only for long prompts (AVX2_MIN_ROWS); with
    AVX-512-BF16 or AMX the bfloat16 GEMM is, from 16 rows. Override with the environment variable
    TINYSLM_QUANT_PREFILL = "kernel" | "float32" | "bfloat16" (then from 16 rows). Decided once per
    process (when the first layer is built), so a compiled step reads it as a constant.
    """
    global _PLAN
    if _PLAN is None:
        choice = os.environ.get("TINYSLM_QUANT_PREFILL")
        if choice == "kernel":
            _PLAN = (None, None)
        elif choice in ("float32", "bfloat16"):
            _PLAN = (16, getattr(torch, choice))
        else:
            _PLAN = (16, torch.bfloat16) if native.has_native_bf16() else (None, torch.float32)
    rows, dtype = _PLAN
    if dtype is None:
        return 1 << 62, None
    return (AVX2_MIN_ROWS[bits] if rows is None else rows), dtype


class QuantizedLinear(nn.Module):
    """y = x @ w.T + b with w stored as int8 (one scale per row) or int4 (scale and zero per row and group).

    Build one with `from_float(weight, ...)`, `from_gguf(kind, raw, shape)`, or `tinyslm.quantize(model, ...)`.

    Buffers (what the memory holds):
        int8: qweight (N, K) int8, scales (N,)
        int4: qweight (N, K / 2) uint8 in torch's packed layout, scales (G, N, 2) = (scale, zero) pairs
        bias (N,) or None, in the dtype of the model it came from.
    """

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int | None,
                 qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):  # fmt: skip
        super().__init__()
        prefill_plan()  # decided now, outside any compiled region
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.group_size = group_size  # None for int8: one scale per row
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, kind: str = "int8",
                   group_size: int | None = 32, dtype: torch.dtype = torch.bfloat16) -> QuantizedLinear:  # fmt: skip
        """Quantize a float weight (N, K): int8 symmetric per row, or int4 min/max per row and group.

        Codes are rounded against the scales as stored (in `dtype`), so the only error is the
        quantization step itself: at most half a step per weight.
        """
        n, k = weight.shape
        w = weight.detach().float()
        check_shape(kind, n, k, group_size)
        if kind == "int8":
            scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny).to(dtype)  # (N,)
            codes = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
            return cls(k, n, 8, None, codes, scale, _bias(bias))
        groups = w.view(n, k // group_size, group_size)  # (N, G, gs)
        lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)  # (N, G)
        flat = lo.abs().clamp(min=1e-30) / 8  # a constant group c: step |c| / 8, zero 2c (or 0), both exact
        scale = torch.where(hi > lo, (hi - lo) / 15, flat).to(dtype).float()
        zero = (lo + 8 * scale).to(dtype).float()
        codes = torch.round((groups - zero[..., None]) / scale[..., None] + 8).clamp(0, 15)  # (N, G, gs)
        return cls._int4(codes.view(n, k), scale, zero, group_size, dtype, bias)

    @classmethod
    def from_gguf(cls, kind: str, raw: np.ndarray, shape: tuple[int, int], bias: torch.Tensor | None = None,
                  dtype: torch.dtype = torch.bfloat16) -> QuantizedLinear:  # fmt: skip
        """A layer from the raw blocks of a GGUF tensor of `shape` = (out, in) (ggml.py describes the blocks).

        Q4_0 and Q4_1 map onto int4 groups of 32: the codes are kept exactly, the block's scale d
        becomes the group's scale and its offset the zero (Q4_0: zero = 0; Q4_1: zero = m + 8 d).
        The float16 d and m are rounded to `dtype` (bfloat16: relative 2^-8 of each, about 3% of
        one quantization step of the worst weight); with dtype=torch.float32 they stay exact
        (and the kernel is ~14x slower). Q8_0's per-32 scales have no int8 kernel, so Q8_0 is
        re-quantized to one scale per row: exact where a row's blocks share one scale, otherwise
        each weight moves by at most half of the row's step (max |w| / 254).
        """
        n, k = shape
        blocks = ggml.blocks_of(kind, raw, (n, k))
        if kind == "Q8_0":  # by chunks of rows: the same codes as quantizing the whole tensor (int8 scales
            # are per row), without a float32 copy of all of it in memory at once
            rows = [cls.from_float(ggml.dequantize_blocks(kind, blocks[r : r + Q8_CHUNK], (min(Q8_CHUNK, n - r), k)),
                                   None, "int8", None, dtype) for r in range(0, n, Q8_CHUNK)]  # fmt: skip
            return cls(k, n, 8, None, torch.cat([q.qweight for q in rows]), torch.cat([q.scales for q in rows]),
                       _bias(bias))  # fmt: skip
        check_shape("int4", n, k, ggml.BLOCK)
        if kind == "Q4_0":
            codes, d = ggml.read_q4_0(blocks)
            zero = torch.zeros_like(d)
        else:
            codes, d, m = ggml.read_q4_1(blocks)
            zero = m + 8 * d
        return cls._int4(codes, d.to(dtype).float(), zero.to(dtype).float(), ggml.BLOCK, dtype, bias)

    @classmethod
    def _int4(cls, codes, scale, zero, group_size, dtype, bias) -> QuantizedLinear:
        """codes (N, K) in 0..15, scale and zero (N, G) -> a packed int4 layer."""
        n, k = codes.shape
        scales = torch.stack((scale.t(), zero.t()), dim=-1).to(dtype).contiguous()  # (G, N, 2)
        return cls(k, n, 4, group_size, pack_int4(codes), scales, _bias(bias))

    # ---- use -----------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        min_rows, dense_dtype = prefill_plan(self.bits)
        if dense_dtype is not None and rows.shape[0] >= min_rows:  # a prompt: unpack once, dense GEMM
            y = F.linear(rows.to(dense_dtype), self.dequantize(dense_dtype))
        else:
            a = rows.to(self.scales.dtype).contiguous()  # the kernels take activations in the scales' dtype
            if self.bits == 8:
                y = ops._weight_int8pack_mm(a, self.qweight, self.scales)
            else:
                y = ops._weight_int4pack_mm_for_cpu(a, self.qweight, self.group_size, self.scales)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight (N, K) as the kernel sees it, computed in float32 and cast to `dtype`."""
        n, k = self.out_features, self.in_features
        if self.bits == 8:
            return (self.qweight.float() * self.scales.float()[:, None]).to(dtype)
        if not layout_is_known():  # read the codes back through the kernel itself: x = identity
            eye = torch.eye(k, dtype=self.scales.dtype)
            return ops._weight_int4pack_mm_for_cpu(eye, self.qweight, self.group_size, self.scales).t().to(dtype)
        codes = unpack_int4(self.qweight, n, k).view(n, -1, self.group_size)  # (N, G, gs)
        scale, zero = self.scales.float().unbind(-1)  # (G, N) each
        w = (codes.float() - 8) * scale.t()[..., None] + zero.t()[..., None]
        return w.view(n, k).to(dtype)

    @property
    def nbytes(self) -> int:
        """Bytes this layer holds (codes, scales, bias)."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.scales, self.bias) if t is not None)

    def extra_repr(self) -> str:
        kind = "int8 per row" if self.bits == 8 else f"int4 group {self.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, {kind}, "
                f"compute={str(self.scales.dtype).removeprefix('torch.')}, bias={self.bias is not None}")  # fmt: skip


def check_shape(kind: str, n: int, k: int, group_size: int | None) -> None:
    """Raise ConfigError unless torch's kernel for `kind` takes an (n, k) weight with this group size."""
    if kind not in KINDS:
        raise ConfigError(f"quantization must be one of {', '.join(KINDS)}, found {kind!r}")
    if kind == "int8":
        if group_size is not None:
            raise ConfigError(f"int8 has one scale per output row (torch's int8 kernel); group_size must be None, found {group_size}")
        return
    if group_size not in INT4_GROUP_SIZES:
        raise ConfigError(f"int4 group_size must be one of {INT4_GROUP_SIZES} (torch's int4 kernel), found {group_size!r}")
    if k % group_size or n % 16:
        raise ConfigError(
            f"int4 needs in_features divisible by group_size {group_size} and out_features by 16; found a "
            f"({n}, {k}) weight"
        )


def _bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.detach().clone()
