"""torch's CPU int4 weight layout: packing 4-bit codes for `_weight_int4pack_mm_for_cpu`, and unpacking them.

Legend: N output features (rows of the weight), K input features, G = K / group_size groups per row.

torch's CPU int4 kernel (aten/src/ATen/native/cpu/int4mm_kernel.cpp, "tinygemm") multiplies
bfloat16 activations by a weight stored as 4-bit codes q in 0..15, with one (scale, zero) pair
per row and group of `group_size` input features:

    w[n, k] = (q[n, k] - 8) * scale[k // group_size, n] + zero[k // group_size, n]

`_convert_weight_to_int4pack_for_cpu` packs the (N, K) codes into (N, K / 2) bytes, in blocks of
BLOCK_N rows laid out for the SIMD width torch was dispatched to (AVX-512: 64 rows, AVX2: 32,
otherwise adjacent row pairs). The layout is the kernel's business; we need it only to read the
codes back (`unpack_int4`) for dequantizing, so `layout_is_known()` checks our reading against
the packer once per process, and callers fall back to multiplying by the identity if it ever fails.
"""

from __future__ import annotations

import functools

import torch

ops = torch.ops.aten


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """codes (N, K) integers in 0..15 -> the kernel's packed (N, K / 2) uint8."""
    return ops._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)


def _block_n() -> int:
    """Rows per packed block, as the packer picks it for this CPU (Vectorized<float>::size() * 4)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": 64, "AVX2": 32}.get(capability, 32)


def _unpack_block(packed: torch.Tensor, nb: int, k: int, full: bool) -> torch.Tensor:
    """One block of nb rows: bytes (nb * K / 2,) -> codes (nb, K)."""
    capability = torch.backends.cpu.get_cpu_capability()
    lo, hi = packed & 0x0F, packed >> 4
    if full and capability == "AVX512" and nb == 64:
        # per k: 32 bytes; byte d < 16 holds rows d | d+32, byte 16+d holds rows 16+d | 48+d
        lo, hi = lo.view(k, 2, 16), hi.view(k, 2, 16)  # (K, 2, 16)
        rows = torch.stack((lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]), dim=1)  # (K, 4, 16): rows 0-15, 16-31, 32-47, 48-63
        return rows.reshape(k, 64).t()
    if full and capability == "AVX2" and nb == 32:
        # per k: 16 bytes; byte d holds rows d (low nibble) | d+16 (high)
        lo, hi = lo.view(k, 16), hi.view(k, 16)
        return torch.cat((lo, hi), dim=1).t()  # (32, K)
    # generic: per k, nb / 2 bytes; byte j holds rows 2j (low) | 2j+1 (high)
    lo, hi = lo.view(k, nb // 2), hi.view(k, nb // 2)
    return torch.stack((lo, hi), dim=2).reshape(k, nb).t()


def unpack_int4(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The packed (N, K / 2) uint8 -> codes (N, K) uint8 in 0..15 (the inverse of `pack_int4`)."""
    flat = packed.reshape(-1)
    block = _block_n()
    out = torch.empty(n, k, dtype=torch.uint8, device=packed.device)
    for start in range(0, n, block):
        nb = min(block, n - start)
        chunk = flat[start * k // 2 : (start + nb) * k // 2]
        out[start : start + nb] = _unpack_block(chunk, nb, k, full=nb == block)
    return out


@functools.cache
def layout_is_known() -> bool:
    """True when `unpack_int4` reads back what `pack_int4` wrote on this CPU (checked once per process)."""
    gen = torch.Generator().manual_seed(0)
    for n in (16, 48, 64, 80, 160):  # full blocks of every width and the partial tails
        codes = torch.randint(0, 16, (n, 64), generator=gen, dtype=torch.int32)
        if not torch.equal(unpack_int4(pack_int4(codes), n, 64).to(torch.int32), codes):
            return False
    return True
