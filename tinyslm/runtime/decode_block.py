"""The native decoding step: transformer blocks with GGUF-block, bfloat16 or float32 weights, a block or all of a
token's blocks in one C++ call.

Legend: B batch, D model width, T new positions.

Decoding one token, a block's module path is ~40 operator calls (norms, 7 products, RoPE, cache
writes, attention, residual adds), each a few microseconds of dispatch, allocation and thread
fork/join for little work. For a quantized model the weights are small, so those calls are a large
share of the step. kernels/decode_block.cpp computes the same block for one new token in one call
and one parallel region (the formulas are at the top of that file), with the products of ggml_mm
(the same 8-bit activations and integer sums) or, for bfloat16 and float32 weights, of float_mv.
Speed-ups per model: docs/performance.md.

It runs the blocks of every family tinyslm reads from GGUF: sequential or parallel (GPT-NeoX's two norms,
Phi-2's one), RMSNorm or LayerNorm (each with Gemma's or Nemotron's 1 + w, OLMo's parameter-free one),
gated or plain FFNs (SiLU, GELU, tanh GELU, ReLU, squared ReLU), biases anywhere, RoPE over all or part of
head_dim or none (learned positions, ALiBi), QK-norms, q/k/v clipping, sandwich norms, soft-capped scores,
sliding windows, MiniCPM's residual scale; and left-padded batches of prompts of different lengths (each row's
RoPE angles at its own position, its padding keys masked: `_key_slots`). Not: MLA, StableLM's per-head q/k norms,
interleaved RoPE.

`native_decode(model)` makes the model's run_blocks (the one seam: how its forward runs the blocks)
decode_stack for the duration of the context, when `why_not_native` accepts every block: all of a
token's depths in one C++ call, their blocks' unchanging arguments checked once into a DecodePlan,
since a call from Python per block costs about as much as a small block's work. Where a layer cache
does not suit the stack (a full cache past a sliding window) the step goes block by block, each
natively where its cache allows (`block_step`); prompts and uncached calls keep the module path,
which stays the reference. The two compute the same thing bit for bit (the same kernel).
`tinyslm.generate` decodes inside it unless fast=False (tinyslm.runtime.decoding). Agreement with
the module path (tests/runtime/test_decode_block.py): float32 models to float32 rounding (the norms and
attention sum in another order; 1e-5 block by block). A bfloat16 model's step computes in float32
between its bfloat16 input, weights and cache, and rounds its output and new key and value to
bfloat16, as llama.cpp does, where the module path (and transformers) rounds after every operation:
it is within bfloat16 rounding of the float32 module path over the same values, and nearly tied
greedy picks can differ from the bfloat16 module path's."""

from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple

import torch
from torch import nn

from ..layers.attention import Attention
from ..layers.block import ParallelBlock, Scale, SequentialBlock
from ..layers.cache import KVBuffer, RingKVBuffer
from ..layers.ffn import ACTIVATIONS, GatedFFN, PlainFFN
from ..layers.norms import LayerNorm, LayerNorm1P, PlainLayerNorm, RMSNorm, RMSNorm1P
from ..layers.positions import ALiBi
from ..quant import native
from ..quant.blocks import GGMLLinear
from ..quant.float_mv import FloatLinear
from .compiled import StaticKVBuffer

PLAIN_KINDS = {torch.bfloat16: 5, torch.float32: 6}  # decode_block's kind codes for plain weights (0..4: native.KIND_CODES)

# decode_block's one norm formula for each norm class: 0 RMSNorm, 1 LayerNorm; weight (1 + w for the "1p" norms,
# ones for a parameter-free LayerNorm) and bias are passed as float32 copies (_norm)
NORM_KINDS = {RMSNorm: 0, RMSNorm1P: 0, LayerNorm: 1, nn.LayerNorm: 1, LayerNorm1P: 1, PlainLayerNorm: 1}
ACT_CODES = {"silu": 0, "gelu_tanh": 1, "gelu_new": 1, "gelu": 2, "relu": 3, "relu2": 4}  # decode_block's `act`
# (gelu_new is the tanh GELU written out op by op: the same function in float32, where the step computes it)


class NativeArgs(NamedTuple):
    """decode_block's arguments that do not change between steps: those before the RoPE angles, the ALiBi slopes,
    those after the cache position."""

    head: tuple
    alibi: torch.Tensor | None
    tail: tuple


def why_not_native(block: nn.Module) -> str | None:
    """None if the native step computes this block exactly as its modules do, else the first reason it cannot."""
    if type(block) is SequentialBlock:
        if not isinstance(block.branch_scale, (nn.Identity, Scale)):
            return f"a {type(block.branch_scale).__name__} residual scale"
        post = [m for m in (block.attn_out_norm, block.ffn_out_norm) if not isinstance(m, nn.Identity)]
        if len(post) == 1:
            return "one sandwich norm of two"
        norms = [block.attn_norm, block.ffn_norm, *post]
    elif type(block) is ParallelBlock:
        norms = [block.attn_norm] + ([block.ffn_norm] if block.ffn_norm is not None else [])
    else:
        return f"a {type(block).__name__}, not a sequential or parallel block"
    attn, ffn = block.attn, block.ffn
    if type(attn) is not Attention:
        return f"{type(attn).__name__} attention"
    qk_norms = [attn.q_norm, attn.k_norm] if attn.q_norm is not None else []
    kinds = [NORM_KINDS.get(type(m)) for m in norms + qk_norms]
    if None in kinds or len(set(kinds)) > 1:
        return f"{' / '.join(type(m).__name__ for m in norms + qk_norms)} norms: not all RMSNorm or all LayerNorm"
    if len({m.eps for m in norms}) > 1 or len({m.eps for m in qk_norms}) > 1:
        return "block norms with different eps"
    if attn.pos_bias is not None and (type(attn.pos_bias) is not ALiBi or attn.window is not None):
        return "a position bias other than ALiBi over a full cache"
    if attn.rope_layout != "half":
        return f"{attn.rope_layout} RoPE"
    if type(ffn) not in (GatedFFN, PlainFFN) or _act_code(ffn) is None:
        return f"a {type(ffn).__name__} (the step has gated and plain FFNs, activations {', '.join(ACT_CODES)})"
    linears = _linears(block)
    if not all(isinstance(m, GGMLLinear) or _is_plain(m) for m in linears):
        return "weights neither GGUF blocks nor contiguous bfloat16 or float32 on the CPU"
    tensors = [p for m in norms + qk_norms for p in m.parameters()] + [m.bias for m in linears if m.bias is not None]
    if any(t.dtype not in (torch.float32, torch.bfloat16) or t.device.type != "cpu" for t in tensors):
        return "parameters not float32 or bfloat16 on the CPU"
    return None


def _linears(block: nn.Module) -> list[nn.Module]:
    """The block's matrices in decode_block's order: q, k, v, o, [gate,] up, down."""
    attn, ffn = block.attn, block.ffn
    return [attn.wq, attn.wk, attn.wv, attn.wo] + ([ffn.gate] if type(ffn) is GatedFFN else []) + [ffn.up, ffn.down]


def _act_code(ffn: nn.Module) -> int | None:
    return next((code for name, code in ACT_CODES.items() if ffn.act is ACTIVATIONS[name]), None)


def _is_plain(linear: nn.Module) -> bool:
    """A plain linear layer (or its FloatLinear form) with a contiguous bfloat16 or float32 weight on the CPU."""
    w = getattr(linear, "weight", None)
    return (type(linear) in (nn.Linear, FloatLinear) and w.dtype in PLAIN_KINDS and w.device.type == "cpu"
            and w.is_contiguous())  # fmt: skip


def _norm(norm: nn.Module | None, width: int) -> list[torch.Tensor | None]:
    """A norm as decode_block's (weight, bias) pair of float32 copies: 1 + w for the "1p" norms, ones for none."""
    if norm is None or isinstance(norm, nn.Identity):
        return [None, None]
    f32 = lambda t: None if t is None else t.detach().float().contiguous()  # noqa: E731
    weight = f32(getattr(norm, "weight", None))
    if weight is None:  # a parameter-free LayerNorm
        weight = torch.ones(width)
    elif type(norm) in (RMSNorm1P, LayerNorm1P):
        weight = weight + 1.0
    return [weight, f32(getattr(norm, "bias", None))]


def _arguments(block: nn.Module) -> NativeArgs:
    """decode_block's arguments that do not change between steps. Norm weights and biases go in float32 (copies);
    weights as they are held."""
    attn, ffn = block.attn, block.ffn
    linears = _linears(block)
    parallel = type(block) is ParallelBlock
    dim, hd = linears[0].in_features, attn.head_dim
    post = (None, None) if parallel else (block.attn_out_norm, block.ffn_out_norm)
    norms = [t for m, width in [(block.attn_norm, dim), (block.ffn_norm, dim), (post[0], dim), (post[1], dim),
                                (attn.q_norm, hd), (attn.k_norm, hd)] for t in _norm(m, width)]  # fmt: skip
    weights = [m.packed if isinstance(m, GGMLLinear) else m.weight.detach() for m in linears]
    kinds = [native.KIND_CODES[m.kind] if isinstance(m, GGMLLinear) else PLAIN_KINDS[m.weight.dtype] for m in linears]
    biases = [None if m.bias is None else m.bias.detach().float().contiguous() for m in linears]
    norm_kind = NORM_KINDS[type(block.attn_norm)]
    scale = block.branch_scale.scale if not parallel and type(block.branch_scale) is Scale else 1.0
    qk_eps = attn.q_norm.eps if attn.q_norm is not None else 0.0
    alibi = attn.pos_bias.slopes.float().contiguous() if attn.pos_bias is not None else None
    return NativeArgs(
        head=(norms, weights, kinds, [m.out_features for m in linears], biases),
        alibi=alibi,
        tail=([norm_kind, int(parallel), _act_code(ffn)],
              [block.attn_norm.eps, qk_eps, attn.scale, attn.softcap or 0.0, attn.qkv_clip or 0.0, scale]),
    )  # fmt: skip


def _slot(window: int | None, cache, p: int) -> tuple[int, int] | None:
    """Where the new position p goes in a layer's cache and how many keys it then holds; None where the step does
    not take this cache (a full cache past the layer's sliding window: the module path masks it)."""
    if type(cache) is RingKVBuffer:  # the last W positions, position p in slot p mod W
        return p % cache.window, min(p + 1, cache.window)
    if window is not None and p >= window:
        return None
    return p, p + 1  # a full cache: position p in slot p, keys 0..p


def _takes(x: torch.Tensor, cache) -> bool:
    """Whether the step can decode x (B, T, D) into this layer cache: one new token, a cache of x's dtype."""
    return (x.shape[1] == 1 and type(cache) in (KVBuffer, StaticKVBuffer, RingKVBuffer) and cache.k.dtype == x.dtype
            and x.dtype in (torch.float32, torch.bfloat16))  # fmt: skip


def _angles(step, key: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The new position's RoPE angles cos, sin (d,) each from the step's table `key`, or per row (B, d) in a padded
    batch (its rows are at different positions); None, None without RoPE."""
    rope = step.rope(key)
    if rope is None:
        return None, None
    return tuple(t[:, 0, 0].contiguous() if step.padding is not None else t[0] for t in rope)


def _key_slots(step, cache) -> torch.Tensor | None:
    """For a padded batch, which slot index each of a layer cache's slots holds (a ring buffer's positions), for
    the kernel to mask each row's padding by (step.padding); None: slot j holds index j, or no padding."""
    return cache.pos if step.padding is not None and type(cache) is RingKVBuffer else None


def block_step(block: nn.Module, args: NativeArgs, x: torch.Tensor, step, cache=None) -> torch.Tensor:
    """One block for one new token over a cache of x's dtype, natively (x (B, 1, D) -> (B, 1, D)); else (a prompt,
    no cache, a cache the step does not take) the block's own forward, the module path."""
    p = step.start
    where = _slot(block.attn.window, cache, p) if _takes(x, cache) else None
    if where is None:
        return block(x, step, cache)
    cache.check_room(p, 1)
    slot, n_keys = where
    if type(cache) is not KVBuffer:
        cache.pos[slot] = p  # the slot's position (a StaticKVBuffer's is shared by the layers: the same value)
    cos, sin = _angles(step, block.attn.rope_key)
    out = torch.ops.tinyslm.decode_block(x.reshape(x.shape[0], x.shape[2]).contiguous(), *args.head, cos, sin,
                                         args.alibi, cache.k, cache.v, slot, n_keys, *args.tail,
                                         step.padding, _key_slots(step, cache))  # fmt: skip
    return out.view(x.shape)  # (B, 1, D)


class StackPlan(NamedTuple):
    """decode_stack's plan (every depth's block, checked once), and each depth's attention (for its window and RoPE)
    and arguments (for going block by block)."""

    plan: torch.ScriptObject
    attns: list[Attention]
    args: list[NativeArgs]


def _stack_plan(model: nn.Module, args: dict[nn.Module, NativeArgs]) -> StackPlan:
    plan = torch.classes.tinyslm.DecodePlan()
    blocks = [model.blocks[b] for b in model.schedule]
    for block in blocks:
        a = args[block]
        plan.add(*a.head, a.alibi, *a.tail, block.attn.head_dim)
    return StackPlan(plan, [block.attn for block in blocks], [args[block] for block in blocks])


def _one_by_one(model: nn.Module, stack: StackPlan, x: torch.Tensor, step, cache=None) -> torch.Tensor:
    """model.run_blocks block by block, each its own native step where its layer cache allows (`block_step`)."""
    with native.torch_threads():  # a prompt's products are torch's: its threads back for them
        for i, b in enumerate(model.schedule):
            x = block_step(model.blocks[b], stack.args[i], x, step, cache[i] if cache is not None else None)
    return x


def _native_stack(model: nn.Module, stack: StackPlan, x: torch.Tensor, step, cache=None) -> torch.Tensor:
    """model.run_blocks for one new token: every depth in one decode_stack call (x (B, 1, D) -> (B, 1, D)). Else (a
    prompt, no cache, a layer cache the stack does not take) the blocks one by one."""
    p = step.start
    layers = cache.layers if cache is not None else []
    wheres = [_slot(attn.window, layer, p) if _takes(x, layer) else None for attn, layer in zip(stack.attns, layers)]
    if cache is None or None in wheres:
        return _one_by_one(model, stack, x, step, cache)
    positions, angles = set(), {}
    for layer, (slot, _) in zip(layers, wheres):
        layer.check_room(p, 1)
        if type(layer) is not KVBuffer and (id(layer.pos), slot) not in positions:  # (a StaticKVBuffer's pos is shared)
            layer.pos[slot] = p
            positions.add((id(layer.pos), slot))
    for attn in stack.attns:
        if attn.rope_key not in angles:
            angles[attn.rope_key] = _angles(step, attn.rope_key)
    cos, sin = zip(*(angles[attn.rope_key] for attn in stack.attns))
    out = torch.ops.tinyslm.decode_stack(x.reshape(x.shape[0], x.shape[2]).contiguous(), stack.plan,
                                         [layer.k for layer in layers], [layer.v for layer in layers], list(cos),
                                         list(sin), [w[0] for w in wheres], [w[1] for w in wheres], step.padding,
                                         [_key_slots(step, layer) for layer in layers])  # fmt: skip
    return out.view(x.shape)  # (B, 1, D)


def native_blocks(model: nn.Module) -> list[nn.Module]:
    """The stored blocks of `model` the native step can run; empty unless it can run every one of them."""
    blocks = list(dict.fromkeys(model.blocks[b] for b in model.schedule))
    return blocks if all(why_not_native(b) is None for b in blocks) and native.available() else []


@contextlib.contextmanager
def native_decode(model: nn.Module, enabled: bool = True, stacked: bool = True):
    """Within this block, `model` decodes one token per call with the native step (when every block can, see
    `why_not_native`; else nothing changes): its run_blocks is the native stack, all depths in one call where every
    layer cache allows (or, with stacked=False, always block by block); afterwards the module path again. Yields
    how many blocks it switched."""
    blocks = native_blocks(model) if enabled else []
    before = model.__dict__.get("run_blocks")
    if blocks:  # an instance attribute shadows the class's run_blocks until it is removed
        stack = _stack_plan(model, {block: _arguments(block) for block in blocks})
        model.run_blocks = functools.partial(_native_stack if stacked else _one_by_one, model, stack)
    try:
        with native.own_threads() if blocks else contextlib.nullcontext():
            yield len(blocks)
    finally:
        if blocks:
            model.__dict__.pop("run_blocks", None)
            if before is not None:  # (an enclosing one's)
                model.run_blocks = before
