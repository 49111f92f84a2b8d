"""GGUF's 4- and 8-bit block formats (Q4_0, Q4_1, Q8_0), read into codes and per-block scales.

Legend: N rows (output features), K values per row (input features), B = K / 32 blocks per row.

llama.cpp stores a quantized matrix row by row in blocks of 32 values (ggml-common.h,
`block_q4_0`, `block_q4_1`, `block_q8_0`); every block carries its own float16 scale:

    Q4_0  18 bytes: d (f16), 16 bytes of nibbles        value = (q - 8) * d       q in 0..15
    Q4_1  20 bytes: d (f16), m (f16), 16 bytes          value = q * d + m         q in 0..15
    Q8_0  34 bytes: d (f16), 32 int8                    value = q * d             q in -128..127

In a 4-bit block, byte j holds value j in its low nibble and value j + 16 in its high nibble.
`gguf.quants.dequantize` (the `gguf` package) is the reference these readers are tested against.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import CheckpointError

BLOCK = 32  # values per block, for the three types read here
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
# (values, bytes) per block of every type the native kernel takes: these three, Q4_K (a super-block of 256
# values: d and dmin (f16), 12 bytes of 6-bit scales and mins for its 8 sub-blocks, 128 bytes of nibbles) and
# Q6_K (256 values: 128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales, d (f16))
BLOCK_LAYOUT = {**{kind: (BLOCK, size) for kind, size in BLOCK_BYTES.items()}, "Q4_K": (256, 144), "Q6_K": (256, 210)}


def blocks_of(kind: str, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """raw bytes of a whole (N, K) tensor -> (N, K / values per block, block bytes) uint8, checking the size."""
    if kind not in BLOCK_LAYOUT:
        raise CheckpointError(f"GGUF block type must be one of {', '.join(BLOCK_LAYOUT)}, found {kind!r}")
    values, size = BLOCK_LAYOUT[kind]
    n, k = shape
    if k % values:
        raise CheckpointError(f"{kind} tensor of shape {tuple(shape)}: the row length {k} is not a multiple of {values}")
    raw = np.ascontiguousarray(np.asarray(raw)).view(np.uint8).reshape(-1)
    expected = n * (k // values) * size
    if raw.size != expected:
        raise CheckpointError(
            f"{kind} tensor of shape {tuple(shape)} needs {expected:,} bytes ({n * k // values:,} blocks of "
            f"{size}), found {raw.size:,}"
        )
    return raw.reshape(n, k // values, size)


def _f16(blocks: np.ndarray, at: int) -> torch.Tensor:
    """The float16 stored at byte `at` of every block -> float32 (N, B); exact (every f16 is a float32)."""
    return torch.from_numpy(np.ascontiguousarray(blocks[:, :, at : at + 2]).view(np.float16)[..., 0].astype(np.float32))


def _nibbles(qs: np.ndarray) -> torch.Tensor:
    """(N, B, 16) bytes -> (N, B, 32) codes 0..15: low nibbles are values 0..15, high nibbles 16..31."""
    return torch.from_numpy(np.concatenate((qs & 0x0F, qs >> 4), axis=-1))


def read_q4_0(blocks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """-> codes (N, K) uint8 in 0..15, d (N, B) float32. value = (q - 8) * d."""
    n, b, _ = blocks.shape
    return _nibbles(blocks[:, :, 2:]).reshape(n, b * BLOCK), _f16(blocks, 0)


def read_q4_1(blocks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> codes (N, K) uint8 in 0..15, d (N, B), m (N, B) float32. value = q * d + m."""
    n, b, _ = blocks.shape
    return _nibbles(blocks[:, :, 4:]).reshape(n, b * BLOCK), _f16(blocks, 0), _f16(blocks, 2)


def read_q8_0(blocks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """-> codes (N, K) int8, d (N, B) float32. value = q * d."""
    n, b, _ = blocks.shape
    codes = torch.from_numpy(np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(n, b * BLOCK))
    return codes, _f16(blocks, 0)


def dequantize_blocks(kind: str, raw: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """float32 (N, K) values of a Q4_0/Q4_1/Q8_0 tensor, computed as llama.cpp and gguf.quants compute them."""
    blocks = blocks_of(kind, raw, shape)
    n, k = shape
    if kind == "Q4_0":
        codes, d = read_q4_0(blocks)
        q = codes.view(n, -1, BLOCK).to(torch.int8) - 8
        return (d[..., None] * q.float()).reshape(n, k)
    if kind == "Q4_1":
        codes, d, m = read_q4_1(blocks)
        return (d[..., None] * codes.view(n, -1, BLOCK).float() + m[..., None]).reshape(n, k)
    codes, d = read_q8_0(blocks)
    return (d[..., None] * codes.view(n, -1, BLOCK).float()).reshape(n, k)
