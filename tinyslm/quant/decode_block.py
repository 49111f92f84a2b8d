"""The native decoding step: a Llama- or Gemma-style block with GGUF-block or bfloat16 weights, one C++ call.

Legend: B batch, D model width, T new positions.

Decoding one token, a block's module path is ~40 operator calls (norms, 7 products, RoPE, cache
writes, attention, residual adds), each a few microseconds of dispatch, allocation and thread
fork/join for little work. For a quantized model the weights are small, so those calls are most
of the step: measured on SmolLM2-135M Q4_1 (2 cores of an AMD EPYC, AVX2), ~15 ms of a ~30 ms token
is spent outside the matrix products. kernels/decode_block.cpp computes the same block for one new
token in one call and one parallel region (the formulas are at the top of that file), with the
products of ggml_mm (the same 8-bit activations and integer sums) or, for bfloat16 weights, of
bf16_mv. Measured interleaved in one process (128-token prompt, 32 tokens): SmolLM2-135M Q4_1
31.6 -> 79.4 tokens/s; TinyLlama-1.1B shape Q4_0 14.1 -> 18.3, bfloat16 5.2 -> 7.2.

`native_decode(model)` switches every block that `why_not_native` accepts to that step for its
decoding calls (T = 1 with a cache) and back afterwards; prompts, uncached calls and every other
block keep the module path, which stays the reference. `tinyslm.generate` decodes inside it
unless fast=False. Agreement with the module path (tests/test_decode_block.py): float32 models to
float32 rounding (the norms and attention sum in another order; 1e-5 block by block). A bfloat16
model's step computes in float32 between its bfloat16 input, weights and cache, and rounds its
output and new key and value to bfloat16, as llama.cpp does, where the module path (and
transformers) rounds after every operation: it is within bfloat16 rounding of the float32 module
path over the same values, and nearly tied greedy picks can differ from the bfloat16 module path's."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from ..layers.attention import Attention
from ..layers.block import SequentialBlock
from ..layers.cache import KVBuffer, RingKVBuffer, StaticKVBuffer
from ..layers.ffn import ACTIVATIONS, GatedFFN
from ..layers.norms import RMSNorm, RMSNorm1P
from . import native
from .bf16 import BF16Linear
from .blocks import GGMLLinear

BF16_KIND = 5  # decode_block's kind code for a plain bfloat16 weight (0..4: native.KIND_CODES)


RMS_NORMS = (RMSNorm, RMSNorm1P)  # the kernel's one norm: rmsnorm with weight w, or 1 + w for RMSNorm1P
ACT_CODES = {"silu": 0, "gelu_tanh": 1}  # decode_block's `act`


def why_not_native(block: nn.Module) -> str | None:
    """None if the native step computes this block exactly as its modules do, else the first reason it cannot."""
    if type(block) is not SequentialBlock:
        return f"a {type(block).__name__}, not a sequential block"
    if not isinstance(block.branch_scale, nn.Identity):
        return "a residual scale"
    post = [m for m in (block.attn_out_norm, block.ffn_out_norm) if not isinstance(m, nn.Identity)]
    norms = [block.attn_norm, block.ffn_norm, *post]
    if len(post) == 1 or any(type(m) not in RMS_NORMS for m in norms):
        return f"{' / '.join(type(m).__name__ for m in norms)} norms, not RMSNorm (or one sandwich norm of two)"
    if len({m.eps for m in norms}) > 1:
        return "block norms with different eps"
    attn, ffn = block.attn, block.ffn
    if type(attn) is not Attention:
        return f"{type(attn).__name__} attention"
    if attn.pos_bias is not None or attn.qkv_clip is not None:
        return "a position bias or qkv clip in attention"
    if attn.rope_layout != "half":
        return f"{attn.rope_layout} RoPE"
    if attn.q_norm is not None and not (type(attn.q_norm) in RMS_NORMS and type(attn.k_norm) is type(attn.q_norm)):
        return f"{type(attn.q_norm).__name__} q/k norms"
    if type(ffn) is not GatedFFN or _act_code(ffn) is None:
        return "an FFN other than a gated SiLU or GELU-tanh one"
    linears = (attn.wq, attn.wk, attn.wv, attn.wo, ffn.gate, ffn.up, ffn.down)
    if not all(isinstance(m, GGMLLinear) or _is_bf16(m) for m in linears):
        return "weights neither GGUF blocks nor bfloat16"
    if any(m.bias is not None for m in (attn.wo, ffn.gate, ffn.up, ffn.down)) or len({m.bias is None for m in linears[:3]}) > 1:
        return "biases other than on all of q, k, v"
    tensors = [m.weight for m in norms] + [m.bias for m in linears[:3] if m.bias is not None]
    if attn.q_norm is not None:
        tensors += [attn.q_norm.weight, attn.k_norm.weight]
    if any(t.dtype not in (torch.float32, torch.bfloat16) or t.device.type != "cpu" for t in tensors):
        return "parameters not float32 or bfloat16 on the CPU"
    return None


def _act_code(ffn: GatedFFN) -> int | None:
    return next((code for name, code in ACT_CODES.items() if ffn.act is ACTIVATIONS[name]), None)


def _is_bf16(linear: nn.Module) -> bool:
    """A plain linear layer (or its BF16Linear form) with a contiguous bfloat16 weight on the CPU."""
    w = getattr(linear, "weight", None)
    return type(linear) in (nn.Linear, BF16Linear) and w.dtype == torch.bfloat16 and w.device.type == "cpu" and w.is_contiguous()


def _arguments(block: SequentialBlock) -> tuple[tuple, tuple]:
    """decode_block's arguments that do not change between steps: (before the rope tables and caches, after).
    Norm weights (1 + w for a Gemma norm) and biases go in float32 (copies); weights as they are held."""
    attn, ffn = block.attn, block.ffn
    linears = (attn.wq, attn.wk, attn.wv, attn.wo, ffn.gate, ffn.up, ffn.down)
    f32 = lambda t: t.detach().float().contiguous()  # noqa: E731
    norm = lambda m: f32(m.weight) + 1.0 if type(m) is RMSNorm1P else f32(m.weight)  # noqa: E731
    post = [norm(m) for m in (block.attn_out_norm, block.ffn_out_norm) if not isinstance(m, nn.Identity)]
    biases = [f32(m.bias) for m in linears[:3]] if attn.wq.bias is not None else []
    qk_norm = [norm(attn.q_norm), norm(attn.k_norm)] if attn.q_norm is not None else []
    weights = [m.packed if isinstance(m, GGMLLinear) else m.weight.detach() for m in linears]
    kinds = [native.KIND_CODES[m.kind] if isinstance(m, GGMLLinear) else BF16_KIND for m in linears]
    head = (norm(block.attn_norm), norm(block.ffn_norm), post, weights, kinds, [m.out_features for m in linears],
            biases, qk_norm)  # fmt: skip
    qk_eps = attn.q_norm.eps if attn.q_norm is not None else 0.0
    return head, (block.attn_norm.eps, qk_eps, attn.scale, attn.softcap or 0.0, _act_code(ffn))


def _native_forward(block: SequentialBlock, head: tuple, tail: tuple, x: torch.Tensor, step, cache=None) -> torch.Tensor:
    """block.forward for one new token over a cache of x's dtype (x (B, 1, D) -> (B, 1, D)); else the module path."""
    rope = step.rope(block.attn.rope_key)
    if (x.shape[1] != 1 or type(cache) not in (KVBuffer, StaticKVBuffer, RingKVBuffer) or cache.k.dtype != x.dtype
            or x.dtype not in (torch.float32, torch.bfloat16) or rope is None):  # fmt: skip
        return type(block).forward(block, x, step, cache)
    p = step.start
    window = block.attn.window
    if window is not None and type(cache) is not RingKVBuffer and p >= window:  # a full cache past the window
        return type(block).forward(block, x, step, cache)
    cache.check_room(p, 1)
    slot, n_keys = p, p + 1  # a full cache: position p in slot p, keys 0..p
    if type(cache) is RingKVBuffer:  # the last W positions, position p in slot p mod W
        slot, n_keys = p % cache.window, min(p + 1, cache.window)
    if type(cache) is not KVBuffer:
        cache.pos[slot] = p  # the slot's position (a StaticKVBuffer's is shared by the layers: the same value)
    cos, sin = rope  # (1, d) each: this position's angles
    out = torch.ops.tinyslm.decode_block(x.reshape(x.shape[0], x.shape[2]).contiguous(), *head, cos[0], sin[0],
                                         cache.k, cache.v, slot, n_keys, *tail)  # fmt: skip
    return out.view(x.shape)  # (B, 1, D)


def native_blocks(model: nn.Module) -> list[nn.Module]:
    """The stored blocks of `model` the native step can run; empty unless it can run every one of them."""
    blocks = list(dict.fromkeys(model.blocks[b] for b in model.schedule))
    return blocks if all(why_not_native(b) is None for b in blocks) and native.available() else []


@contextlib.contextmanager
def native_decode(model: nn.Module, enabled: bool = True):
    """Within this block, every block of `model` decodes one token per call with the native step (when all can,
    see `why_not_native`; else none does); afterwards the module path again. Yields how many blocks it switched."""
    blocks = native_blocks(model) if enabled else []
    for block in blocks:  # an instance attribute shadows the class's forward until it is removed
        block.forward = functools.partial(_native_forward, block, *_arguments(block))
    try:
        yield len(blocks)
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)
