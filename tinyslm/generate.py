"""Greedy decoding with a KV cache.

    prefill:  one forward over the whole prompt fills the cache and gives the first new token
              (logits for the last position only: the others would be computed and dropped)
    decode:   each step feeds only the last token; attention reads the past from the cache

The cache is allocated once for exactly prompt + max_new_tokens positions. Greedy decoding picks
argmax at every step, so cached decoding must reproduce, token for token, what recomputing the
whole sequence at every step would pick (tests/test_generate.py checks that).

The fast path (`fast=`), first choice: the native decoding step (quant/decode_block.py). When every
block is one it computes (every GGUF family's: sequential or parallel, RMSNorm or LayerNorm, gated or
plain FFN, RoPE, ALiBi or learned positions; not MLA) with weights held as GGUF blocks, bfloat16 or float32,
each block decodes a token in one C++ call (kernels/decode_block.cpp): nothing to compile,
so `fast=None` and `fast=True` both use it, for every request. Measured interleaved in one process
on 2 cores of an AMD EPYC (AVX2), 128-token prompt, 32 tokens: SmolLM2-135M Q4_1 31.6 -> 79.4
tokens/s, a TinyLlama-1.1B-shaped Q4_0 14.1 -> 18.3, the same in bfloat16 5.2 -> 7.2, SmolLM2-135M
in float32 12.9 -> 31.4 (its head through quant/float_mv.py's kernel).

Second choice, for every other model: the compiled step. A small model's decoding step is bound
by Python, not by its weights: SmolLM2-135M runs ~60 ops per layer x 30 layers per token, each a
few microseconds of dispatch for a few kilobytes of work. The fast path compiles each block's
forward with `torch.compile` (inductor fuses the norms, RoPE, softmax and residual adds into a few C++ loops; the matmuls stay
torch's kernels, int8/int4 ones included), over a static cache (cache.StaticKVBuffer: every step
has the same shapes, so one compiled graph serves every position and every later call whose
cache size rounds up to the same bucket). Blocks of one structure share one graph (see _Step).
Measured on 2 cores of an AMD EPYC (AVX2), SmolLM2-135M Q4_1 (native block kernel): the compile
takes 14 s in a fresh process (3.4 s once inductor's on-disk cache holds it, which then serves
later processes too) and decoding goes from ~39 to ~55-60 tokens/s, about 8 ms saved a token: it
pays for itself after ~1,800 tokens cold, ~420 warm. So `fast=None` (the default) compiles where
that is likely to pay: for requests of at least AUTO_COMPILE_TOKENS new tokens, and for every
request to a model already compiled in this process (a `fast=True` call, or an earlier long
one); shorter first requests run the plain path. `fast=False` is always the plain path.
Prefill always runs eagerly (one call, its shapes vary). torch.compile keeps a limited number of
graphs per function (torch._dynamo.config.recompile_limit, 8 by default) for all models of a
process; past it, blocks run eagerly, with the same tokens.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable

import torch

from .errors import GenerationError
from .layers.cache import KVCache, StaticKVBuffer

FAST_CHOICES = {"auto": None, "on": True, "off": False}  # the CLI's --fast -> generate(fast=...)
AUTO_COMPILE_TOKENS = 512  # fast=None compiles for requests this long (see the module docstring)
CACHE_BUCKET = 256  # static caches are sized up to a multiple of this, so later requests reuse the compiled step
last_compile_s: float | None = None  # seconds the last compile took (first compiled call), for reports
last_decode_path: str | None = None  # how the last call decoded: "native step", "compiled step" or "module path"


def check_request(model, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Validate a decoding request; returns input_ids as (B, T)."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be a non-negative integer, found {max_new_tokens!r}")
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2:
        raise GenerationError(f"input_ids must be (B, T) or (T,), found shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise GenerationError("empty prompt: give at least one token")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise GenerationError(f"input_ids must be integer token ids, found dtype {input_ids.dtype}")
    vocab = model.config.vocab_size
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
        raise GenerationError(f"token ids must lie in [0, {vocab}), found {int(input_ids.min())}..{int(input_ids.max())}")
    total, limit = input_ids.shape[1] + max_new_tokens, model.config.max_seq_len
    if total > limit:
        raise GenerationError(
            f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) = {total} exceeds the "
            f"model's context of {limit} positions"
        )
    return input_ids.long()


@torch.inference_mode()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | list[int] | None = None,
    on_token: Callable[[torch.Tensor], None] | None = None,
    mla_decode: str | None = None,
    fast: bool | None = None,
) -> torch.Tensor:
    """Greedy decoding. input_ids (B, T) of equal-length prompts -> (B, T + n) with n <= max_new_tokens.

    Stops early only when `eos_token_id` is given and every sequence has produced it; sequences
    that finished earlier are padded with their eos token. `on_token` is called with each new
    column of tokens (B,) as soon as it is decoded (for streaming). For MLA models, `mla_decode`
    picks the attention path for this call: "naive", "absorbed" or "auto" (see layers/mla.py).
    `fast`: where every block qualifies for the native decoding step (GGUF-block, bfloat16 or float32 weights,
    blocks it computes: quant/decode_block.py), True and None decode with it. Elsewhere True
    decodes with the compiled step over a static cache (compiling it on first use), and None (default)
    compiles for requests of at least AUTO_COMPILE_TOKENS new tokens, or where this model already has
    a compiled step (see the module docstring). False is always the plain module path, the reference.
    The compiled step gives the plain path's tokens in float32; in bfloat16
    fused kernels round differently, which can flip nearly tied picks. Unless fast=False, a
    bfloat16 or float32 model's linear layers compute with the native kernels during the call
    (quant/float_mv.py: the same sums in another order), its forward outside the call unchanged.
    """
    if mla_decode is not None:
        from .layers.mla import decode_path

        with decode_path(model, mla_decode):
            return generate(model, input_ids, max_new_tokens, eos_token_id, on_token, fast=fast)
    from .quant.float_mv import float_kernels  # noqa: PLC0415
    from .quant.decode_block import native_decode  # noqa: PLC0415

    # for this call only: bfloat16 layers use the native kernel, and blocks it can run the native decoding step
    global last_decode_path
    with float_kernels(model, enabled=fast is not False), native_decode(model, enabled=fast is not False) as native:
        last_decode_path = "native step" if native else None  # else set by _greedy
        return _greedy(model, input_ids, max_new_tokens, eos_token_id, on_token, False if native else fast)


def _greedy(model, input_ids, max_new_tokens, eos_token_id, on_token, fast) -> torch.Tensor:
    """generate's loop (see there)."""
    input_ids = check_request(model, input_ids, max_new_tokens)
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if max_new_tokens == 0:
        return input_ids
    eos = None if eos_token_id is None else torch.tensor(eos_token_id, device=device).reshape(-1)
    batch, prompt_len = input_ids.shape
    if fast is None:
        worth_it = max_new_tokens >= AUTO_COMPILE_TOKENS or "_tinyslm_compiled_step" in model.__dict__
        fast = worth_it and supports_fast(model)
    elif fast and not supports_fast(model):
        raise GenerationError("fast=True: the compiled decoding step supports MHA/GQA/MQA attention only (this model has MLA)")
    global last_decode_path
    last_decode_path = last_decode_path or ("compiled step" if fast else "module path")
    if fast:
        cache = static_cache(model, batch, prompt_len + max_new_tokens)
        step = _compiled_step(model)
        step.warm_up(cache)  # compiles now (once per process and cache shape), not in the middle of decoding
    else:
        cache, step = model.new_cache(batch, prompt_len + max_new_tokens), model
    out = torch.empty(batch, prompt_len + max_new_tokens, dtype=torch.long, device=device)
    out[:, :prompt_len] = input_ids
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    logits = model(input_ids, cache=cache, last_only=True)  # prefill: (B, 1, V), not (B, T, V)
    check_logits(logits, 0)
    if bool((logits.amax(dim=-1) == logits.amin(dim=-1)).any()):
        warnings.warn("tinyslm: every logit after the prompt is equal (the model's output carries no information: "
                      "an extreme norm eps or a zeroed weight?); greedy decoding picks token 0", RuntimeWarning,
                      stacklevel=3)  # fmt: skip
    for i in range(max_new_tokens):
        token = logits[:, -1].argmax(dim=-1)  # (B,)
        if eos is not None:
            token = torch.where(finished, eos[0], token)
            finished |= torch.isin(token, eos)
        out[:, prompt_len + i] = token
        if on_token is not None:
            on_token(token)
        if i == max_new_tokens - 1 or (eos is not None and bool(finished.all())):
            return out[:, : prompt_len + i + 1]
        logits = step(token[:, None], cache=cache, last_only=True)  # decode: (B, 1, V)
        check_logits(logits, i + 1)
    return out


def check_logits(logits: torch.Tensor, step: int) -> None:
    """Refuse NaN or infinite logits (else argmax would "decode" token 0 from them): one reduction a step."""
    if not bool(torch.isfinite(logits).all()):
        where = "for the prompt" if step == 0 else f"at decoding step {step} (after {step} new tokens)"
        raise GenerationError(
            f"the model's logits {where} are NaN or infinite: the weights hold NaN/Inf values (an embedding row, "
            "a layer), a layer overflows its dtype, or the config breaks the arithmetic (an extreme rope_theta, "
            "norm eps or scaling factor); check the checkpoint"
        )


def supports_fast(model) -> bool:
    """The compiled step runs on models whose every attention layer keeps K and V per head (not MLA)."""
    from .layers.attention import Attention

    return all(isinstance(model.blocks[b].attn, Attention) for b in model.schedule)


def static_cache(model, batch: int, capacity: int) -> KVCache:
    """A cache of StaticKVBuffers, `capacity` rounded up to CACHE_BUCKET (within the model's context)."""
    slots = min(-(-capacity // CACHE_BUCKET) * CACHE_BUCKET, model.config.max_seq_len)
    weight = model.tok_emb.weight
    positions = torch.full((slots,), -1, dtype=torch.long, device=weight.device)  # shared by all layers
    try:
        layers = []
        for b in model.schedule:
            attn = model.blocks[b].attn
            layers.append(StaticKVBuffer(batch, attn.n_kv_heads, slots, attn.head_dim, attn.head_dim, weight.dtype,
                                         weight.device, positions))  # fmt: skip
    except (RuntimeError, MemoryError) as exc:
        raise GenerationError(f"cannot allocate the KV cache for {batch} x {slots} positions ({type(exc).__name__}); "
                              "ask for fewer tokens") from None  # fmt: skip
    return KVCache(layers, capacity)


class _Step:
    """The model's decoding step with each block's forward compiled by torch.compile; eager if compiling fails.

    One compiled function serves every block: the block is an argument, its parameters graph inputs
    (torch.compile's default for nn.Modules), so blocks of the same structure share one graph and
    the compile costs one block's worth, not the whole model's (SmolLM2-135M, 30 layers: 2 graphs,
    21 s on a 2-core CPU, 4.5 s with inductor's disk cache warm, against minutes for the whole
    forward). Embedding, final norm and head stay eager: once per token, they are a few operations.
    """

    def __init__(self, model):
        # emulate_precision_casts: fused kernels round to bfloat16 where eager does, so the tokens stay the same
        self.block_fn = torch.compile(_run_block, options={"emulate_precision_casts": True})
        self.model, self.failed = model, False
        self.blocks = list(dict.fromkeys(model.blocks[b] for b in model.schedule))  # each stored block once
        self.warm: set = set()  # cache shapes already compiled for

    def warm_up(self, cache: KVCache) -> None:
        """Compile for this cache's shape by two dummy steps (the second makes the position symbolic),
        then leave the cache empty. Records the seconds in `last_compile_s`."""
        global last_compile_s
        first = cache[0]
        key = (tuple(first.k.shape), first.k.dtype, len(cache.layers))
        last_compile_s = None
        if self.failed or key in self.warm or first.capacity < 4:
            return
        t0 = time.perf_counter()
        token = torch.zeros(first.k.shape[0], 1, dtype=torch.long, device=first.k.device)
        for start in (2, 3):  # torch.compile specialises positions 0 and 1; from 2 on one graph serves all
            cache.length = start
            self(token, cache=cache, last_only=True)
        first.pos.fill_(-1)  # every layer shares this tensor: all slots empty again
        cache.length = 0
        self.warm.add(key)
        last_compile_s = time.perf_counter() - t0

    def __call__(self, ids, cache, last_only):
        if not self.failed:
            try:
                for block in self.blocks:  # the instance attribute shadows the class's forward for this call only
                    block.forward = functools.partial(self.block_fn, block)
                return self.model(ids, cache=cache, last_only=last_only)
            except Exception as exc:  # noqa: BLE001  (no C++ compiler, an op inductor cannot lower...)
                warnings.warn(f"tinyslm: compiling the decoding step failed ({type(exc).__name__}: {exc}); "
                              "decoding eagerly", stacklevel=3)  # fmt: skip
                self.failed = True
            finally:
                for block in self.blocks:
                    block.__dict__.pop("forward", None)
        return self.model(ids, cache=cache, last_only=last_only)


def _run_block(block, x, step, layer_cache):
    """One block's forward, called through its class so that an instance's `forward` attribute is bypassed."""
    return type(block).forward(block, x, step, layer_cache)


def _compiled_step(model) -> _Step:
    """The model's compiled step, made on first use and kept in the model's __dict__ (not a submodule, not state)."""
    if "_tinyslm_compiled_step" not in model.__dict__:
        model.__dict__["_tinyslm_compiled_step"] = _Step(model)
    return model.__dict__["_tinyslm_compiled_step"]
