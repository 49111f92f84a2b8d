"""Lesson 11, GGUF and quantization: the checker of its exercise.

    check_q8_0   a Q8_0 block quantizer and dequantizer (32 values -> one float16 scale d + 32 int8 codes q,
                 value = q * d) against llama.cpp's reference as the gguf package computes it, read back by
                 tinyslm.quant.ggml (what tinyslm writes into, and reads from, a Q8_0 GGUF)
"""

from __future__ import annotations

import numpy as np
import torch

from ..quant.blocks import quantize_blocks
from ..quant.ggml import BLOCK, dequantize_blocks, read_q8_0
from .check import Exercise, ExerciseFailed


def reference_q8_0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (..., 32) float32 -> d (...,) float16, q (..., 32) int8, and the dequantized values (..., 32) float32:
    the gguf package's quantizer (llama.cpp's), its bytes read by tinyslm.quant.ggml."""
    flat = x.detach().float().reshape(-1, BLOCK)  # (N, 32): one block a row
    raw = quantize_blocks(flat, "Q8_0")  # (N, 34) bytes: d as float16, then 32 int8
    codes, d = read_q8_0(raw.reshape(flat.shape[0], 1, -1))  # (N, 32) int8, (N, 1) float32
    values = dequantize_blocks("Q8_0", raw, tuple(flat.shape))  # (N, 32)
    lead = x.shape[:-1]
    return d.reshape(lead).to(torch.float16), codes.reshape(x.shape), values.reshape(x.shape)


def _cases() -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(11)
    ties = torch.zeros(BLOCK)
    ties[0] = 127.0  # d = 1 exactly: x * (1 / d) lands on the halves below
    ties[1:9] = torch.tensor([2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, -3.5])
    negative = torch.randn(2, BLOCK, generator=gen)
    negative[:, 5] = -10.0  # the largest magnitude is negative: the scale comes from |x|
    mixed = torch.randn(3, BLOCK, generator=gen) * torch.logspace(-2, 2, 3)[:, None]
    return [
        ("4 blocks of N(0, 1) values, x of shape (4, 32)", torch.randn(4, BLOCK, generator=gen)),
        ("x of shape (2, 3, 32), values of N(0, 100^2)", 100 * torch.randn(2, 3, BLOCK, generator=gen)),
        ("a single block, x of shape (32,)", torch.randn(BLOCK, generator=gen)),
        ("blocks whose largest |value| is negative", negative),
        ("a block of zeros (d = 0; no division by zero)", torch.zeros(1, BLOCK)),
        ("a block of exact halves (2.5, -2.5, 0.5, ...) with d = 1", ties),
        ("blocks of very different scales (1e-2, 1, 1e2)", mixed),
    ]


def check_q8_0(q8_0_quantize, q8_0_dequantize) -> bool:
    """Your q8_0_quantize(x) -> (d, q) and q8_0_dequantize(d, q) -> values, against the gguf package's Q8_0 blocks
    as tinyslm.quant reads them."""
    with Exercise("q8_0", against="llama.cpp's Q8_0 (the gguf package's quants), read by tinyslm.quant.ggml") as ex:
        for case, x in _cases():
            want_d, want_q, want_values = reference_q8_0(x)
            got = q8_0_quantize(x.clone())
            if not (isinstance(got, tuple) and len(got) == 2):
                raise ExerciseFailed(f"q8_0: {case}: q8_0_quantize should return a pair (d, q), got {type(got).__name__}")
            d, q = got
            for what, tensor, dtype in [("d", d, torch.float16), ("q", q, torch.int8)]:
                if isinstance(tensor, torch.Tensor) and tensor.dtype != dtype:
                    raise ExerciseFailed(f"q8_0: {case}: {what} has dtype {tensor.dtype}, expected {dtype}")
            ex.compare(f"{case}: the scales d", d, want_d)
            ex.compare(f"{case}: the codes q", q, want_q)
            ex.compare(f"{case}: q8_0_dequantize(d, q)", q8_0_dequantize(want_d.clone(), want_q.clone()), want_values)
        # and the gguf package's own dequantizer agrees with the reference read-back (a sanity check of the checker)
        x = _cases()[0][1]
        from gguf import GGMLQuantizationType, quants  # noqa: PLC0415  (the gguf extra)

        packed = quants.quantize(x.numpy(), GGMLQuantizationType.Q8_0)
        theirs = torch.from_numpy(np.asarray(quants.dequantize(packed, GGMLQuantizationType.Q8_0), dtype=np.float32))
        ex.compare("gguf.quants.dequantize of 4 blocks", q8_0_dequantize(*reference_q8_0(x)[:2]), theirs.reshape(x.shape))
    return ex.passed
