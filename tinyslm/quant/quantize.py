"""`quantize(model, "int8" | "int4" | "q8_0" | "q4_0" | "q4_1")`: swap a model's linear layers, in place.

Which layers: every projection of the attention (q, k, v, o) and the FFN, and the lm-head (the
largest single matrix of a small model: SmolLM2-135M's 49152 x 576 head is a fifth of its weights).
The token embedding stays in its float dtype: a lookup reads one row per token, so quantizing it
saves memory but no decode time. A tied head therefore becomes an untied int8/int4 copy of the
embedding. MLA's projections stay float: its absorbed decode path multiplies their weights
together (layers/mla.py).

A layer the kernel cannot take (int4: in_features not divisible by the group size, or
out_features not by 16) stays float and is listed in the returned report, never silently changed.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from . import native
from .blocks import GGMLLinear
from .linear import KINDS, QuantizedLinear, check_shape

BLOCK_KINDS = ("q8_0", "q4_0", "q4_1")  # llama.cpp's blocks of 32, multiplied by the native kernel


def quantize(model: nn.Module, kind: str, group_size: int | None = 32, *, head: bool = True,
             dtype: torch.dtype = torch.bfloat16) -> nn.Module:  # fmt: skip
    """Quantize `model`'s linear layers in place and return the same model.

    kind: "int8" (one scale per output row) or "int4" (min/max groups of `group_size` input
    features, 32/64/128/256; default 32, the GGUF Q4 block; another size for another kind is an
    error: int8 has no groups and llama.cpp's blocks are 32), both torch's
    kernels; or "q8_0" / "q4_0" / "q4_1": llama.cpp's blocks of 32 (GGMLLinear, quantized by the
    gguf package as llama.cpp quantizes), multiplied by the native kernel, the faster path on a
    CPU. head=False keeps the lm-head in float. dtype: the torch kernels' activation dtype
    (bfloat16, the fast one).
    `model.quantization` afterwards holds what was done: kind, group size, layers, skipped, bytes.
    """
    if kind not in KINDS + BLOCK_KINDS:
        raise ConfigError(f"quantization must be one of {', '.join(KINDS + BLOCK_KINDS)}, found {kind!r}")
    if kind in BLOCK_KINDS and not native.available():
        raise ConfigError(f"quantization {kind!r} needs tinyslm's native kernel, unavailable here: "
                          f"{native.why_unavailable}; use int8 or int4 (torch's kernels)")  # fmt: skip
    if kind != "int4" and group_size not in (None, 32):
        raise ConfigError(f"group_size {group_size} applies to int4 only ({kind}: "
                          f"{'one scale per output row' if kind == 'int8' else 'blocks of 32'})")  # fmt: skip
    group = None if kind == "int8" else 32 if kind in BLOCK_KINDS else group_size
    done, skipped, before, after = [], [], 0, 0
    for name, parent, attr, linear in list(_targets(model, head)):
        try:
            if kind in BLOCK_KINDS and linear.in_features % 32:
                raise ConfigError(f"{kind} needs in_features divisible by 32; found a {tuple(linear.weight.shape)} weight")
            if kind in KINDS:
                check_shape(kind, linear.out_features, linear.in_features, group)
        except ConfigError as exc:
            skipped.append(f"{name}: {exc}")
            continue
        if kind in BLOCK_KINDS:
            q = GGMLLinear.from_float(linear.weight, linear.bias, kind.upper())
        else:
            q = QuantizedLinear.from_float(linear.weight, linear.bias, kind, group, dtype)
        before += linear.weight.numel() * linear.weight.element_size()
        after += q.nbytes
        setattr(parent, attr, q)
        done.append(name)
    if not done:
        raise ConfigError(f"no linear layer of this model can be quantized to {kind}: {'; '.join(skipped) or 'none found'}")
    model.quantization = {"kind": kind, "group_size": group, "layers": done, "skipped": skipped,
                          "float_bytes": before, "quantized_bytes": after}  # fmt: skip
    return model


def _targets(model: nn.Module, head: bool):
    """(qualified name, parent module, attribute, nn.Linear) for each layer to quantize."""
    for parent_name, parent in model.named_modules():
        if type(parent).__name__.startswith("MLA"):  # MLA multiplies its weights together: keep them float
            continue
        for attr, child in parent.named_children():
            if not isinstance(child, nn.Linear):
                continue
            name = f"{parent_name}.{attr}" if parent_name else attr
            if parent is model and attr == "head" and not head:
                continue
            yield name, parent, attr, child


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer the model holds (a tied tensor counted once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen and not t.is_meta:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total
