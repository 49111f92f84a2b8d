"""Decoding with a KV cache: the reference decoder (greedy unless a Sampler draws the tokens).

    prefill:  one forward over the whole prompt fills the cache and gives the first new token
              (logits for the last position only: the others would be computed and dropped)
    decode:   each step feeds only the last token; attention reads the past from the cache

The cache is allocated once for exactly prompt + max_new_tokens positions. Greedy decoding picks
argmax at every step, so cached decoding must reproduce, token for token, what recomputing the
whole sequence at every step would pick (tests/reference/test_generate.py checks that). Every step's logits
are checked for NaN and infinity, whichever path computed them.

The loop runs the model through a `Decoder`, the one seam for faster paths: it makes the request's
cache and computes the prefill's and each step's logits. The one here is the reference: the model's
own cache and forward. tinyslm.runtime supplies faster ones (a native decoding step, a compiled
one); `tinyslm.generate`, the public entry point, is this function run with the runtime's decoder
unless fast=False (tinyslm/runtime/decoding.py says which path, and when).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch

from .errors import GenerationError
from .layers.cache import KVCache
from .layers.mla import decode_path
from .sampling import Sampler


class Decoder:
    """How `generate` runs the model: the request's cache, the prompt's logits, each step's. This one is the
    reference (the model's own cache and forward); `path` and `compile_s` say how the last request was decoded."""

    path = "module path"  # or, for the runtime's decoders, "native step" or "compiled step"
    compile_s: float | None = None  # seconds the last request spent compiling its step (None: none)

    def __init__(self, model):
        self.model = model

    def new_cache(self, batch: int, prompt_len: int, max_new_tokens: int, padded: bool = False) -> KVCache:
        """The request's cache; `padded`: its rows are prompts of different lengths, left-padded."""
        return self.model.new_cache(batch, prompt_len + max_new_tokens)

    def reuse(self, cache: KVCache) -> KVCache:
        """A cache the caller keeps between requests (a chat's), continued by this one."""
        return cache

    def prefill(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:  # (B, T) -> (B, 1, V)
        return self.model(input_ids, cache=cache, last_only=True)

    def step(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:  # (B, 1) -> (B, 1, V)
        return self.model(token, cache=cache, last_only=True)


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths -> input_ids (B, T) left-padded with token 0 and their attention_mask (B, T):
    1 for a prompt's token, 0 for padding. Each prompt then ends in the last column, where decoding continues."""
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise GenerationError(f"prompt {i}: expected a list of token ids (ints), found {prompt!r:.80}")
        if not prompt:
            raise GenerationError(f"prompt {i} is empty: give every prompt at least one token")
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)  # (B, T)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)  # (B, T)
    return ids, mask


def padding_of(attention_mask, shape: torch.Size) -> torch.Tensor | None:
    """The padding slots per row (B,) of a left-padding attention_mask (B, T) (None: no padding anywhere)."""
    mask = torch.as_tensor(attention_mask)
    if tuple(mask.shape) != tuple(shape):
        raise GenerationError(f"attention_mask has shape {tuple(mask.shape)}, input_ids {tuple(shape)}: give one 0/1 per token")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise GenerationError("attention_mask must hold 0 (padding) and 1 (a prompt's token) only")
    mask = mask.long()
    if not bool((mask[:, 1:] >= mask[:, :-1]).all()):
        raise GenerationError("attention_mask: only left padding is supported (each row's 0s before its 1s), as "
                              "decoding continues every row from the last column")  # fmt: skip
    empty = (mask.sum(1) == 0).nonzero()
    if len(empty):
        raise GenerationError(f"row {int(empty[0])} of the batch is empty (its attention_mask is all 0s)")
    padding = (mask == 0).sum(1)  # (B,)
    return padding if bool(padding.any()) else None


def check_request(model, input_ids, max_new_tokens: int, cache: KVCache | None = None) -> torch.Tensor:
    """Validate a decoding request (that continues `cache`, if given); returns input_ids as (B, T)."""
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
    if cache is not None:
        held = cache.length
        if held + total > cache.capacity:
            raise GenerationError(f"the cache holds {held} positions of {cache.capacity}: {input_ids.shape[1]} more "
                                  f"+ max_new_tokens ({max_new_tokens}) do not fit")  # fmt: skip
        if cache.layers and cache.layers[0].tensors()[0].shape[0] != input_ids.shape[0]:
            raise GenerationError(f"the cache is for a batch of {cache.layers[0].tensors()[0].shape[0]}, the "
                                  f"prompt is {input_ids.shape[0]} rows")  # fmt: skip
    return input_ids.long()


@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | list[int] | None = None,
             on_token: Callable[[torch.Tensor], None] | None = None, mla_decode: str | None = None,
             decoder: Decoder | None = None, sampler: Sampler | None = None,
             cache: KVCache | None = None, attention_mask=None) -> torch.Tensor:  # fmt: skip
    """Decoding, greedy by default. input_ids (B, T) -> (B, T + n), n <= max_new_tokens.

    Prompts of different lengths: a list of token-id lists (left-padded here), or, as transformers takes them, a
    left-padded (B, T) tensor with `attention_mask` (B, T) (1: a prompt's token, 0: padding). Each row is
    decoded as it would be alone: its positions count from its first real token, padding is never attended
    (layers/positions.py's Step), and it stops at its own end id. The result keeps the padding on the left.

    Stops early only when `eos_token_id` is given and every sequence has produced it; sequences
    that finished earlier are padded with their eos token. `on_token` is called with each new
    column of tokens (B,) as soon as it is decoded (for streaming). For MLA models, `mla_decode`
    picks the attention path for this call: "naive", "absorbed" or "auto" (see layers/mla.py).
    `decoder`: how to run the model (default: the reference Decoder, the model's own forward);
    tinyslm.runtime.fast_decoding yields faster ones. `sampler`: how each token is chosen from the
    logits (sampling.py; default: argmax, greedy). `cache`: a cache to continue (a chat keeps one between
    turns): input_ids are the tokens after the cache.length it holds, and the returned ids start with them;
    it is left holding every token fed through the model (the last new token is not: it was never fed), and
    cache.tokens their ids, which a repetition penalty in the next call counts as the row's text too.
    """
    rows = isinstance(input_ids, (list, tuple)) and input_ids and any(
        isinstance(p, (list, tuple)) or (isinstance(p, torch.Tensor) and p.dim() == 1) for p in input_ids)
    if rows:  # prompts of different lengths (lists, or 1-D tensors; left_pad checks each)
        input_ids = [p.tolist() if isinstance(p, torch.Tensor) else p for p in input_ids]
        if attention_mask is not None:
            raise GenerationError("give prompts as a list of id lists or as a padded tensor with attention_mask, not both")
        input_ids, attention_mask = left_pad(input_ids)
    input_ids = check_request(model, input_ids, max_new_tokens, cache)
    padding = None if attention_mask is None else padding_of(attention_mask, input_ids.shape)
    if padding is not None and cache is not None:
        raise GenerationError("a kept cache continues one conversation: padded batches need a fresh one")
    with contextlib.ExitStack() as scope:
        if mla_decode is not None:
            scope.enter_context(decode_path(model, mla_decode))
        return _decode(decoder or Decoder(model), sampler or Sampler(), input_ids, max_new_tokens, eos_token_id,
                       on_token, cache, padding)  # fmt: skip


def _decode(decoder: Decoder, pick: Sampler, input_ids, max_new_tokens, eos_token_id, on_token, cache=None,
            padding=None):  # fmt: skip
    """generate's loop (see there)."""
    device = next(decoder.model.parameters()).device
    input_ids = input_ids.to(device)
    if max_new_tokens == 0:
        return input_ids
    eos = None if eos_token_id in (None, []) else torch.tensor(eos_token_id, device=device).reshape(-1)
    batch, prompt_len = input_ids.shape
    reused = cache is not None
    cache = decoder.new_cache(batch, prompt_len, max_new_tokens, padding is not None) if cache is None else decoder.reuse(cache)
    cache.padding = None if padding is None else padding.to(device)  # the model's forward reads it every step
    # the ids a kept cache already holds (a chat's earlier turns): part of each row's text, for a repetition penalty
    before = cache.tokens if reused and cache.tokens is not None and cache.tokens.shape[1] == cache.length else None
    out = torch.empty(batch, prompt_len + max_new_tokens, dtype=torch.long, device=device)
    out[:, :prompt_len] = input_ids
    text, held = _row_text(out, input_ids, padding, before)  # what a repetition penalty looks at: (B, held + T + n)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    logits = decoder.prefill(input_ids, cache)  # (B, 1, V), not (B, T, V)
    check_logits(logits, 0)
    if bool((logits.amax(dim=-1) == logits.amin(dim=-1)).any()):
        warnings.warn("tinyslm: every logit after the prompt is equal (the model's output carries no information: "
                      "an extreme norm eps or a zeroed weight?); greedy decoding picks token 0", RuntimeWarning,
                      stacklevel=3)  # fmt: skip
    for i in range(max_new_tokens):
        token = pick(logits[:, -1], text[:, : held + prompt_len + i])  # (B,): argmax, or a draw (sampling.py)
        if eos is not None:
            token = torch.where(finished, eos[0], token)
            finished |= torch.isin(token, eos)
        out[:, prompt_len + i] = token
        if text is not out:
            text[:, held + prompt_len + i] = token
        if on_token is not None:
            on_token(token)
        if i == max_new_tokens - 1 or (eos is not None and bool(finished.all())):
            fed = out[:, : prompt_len + i]  # what went through the model (the last token was picked, never fed)
            cache.tokens = fed.clone() if before is None else torch.cat((before, fed), dim=1)
            return out[:, : prompt_len + i + 1]
        logits = decoder.step(token[:, None], cache)  # (B, 1, V)
        check_logits(logits, i + 1)
    return out


def _row_text(out: torch.Tensor, input_ids: torch.Tensor, padding, before) -> tuple[torch.Tensor, int]:
    """Each row's text for a repetition penalty, (B, H + T + n), and H: `out` itself, unless a padded row's
    padding (not its text: its first real token stands in for it) or the ids a kept cache holds (`before`,
    (B, H), in front) make it differ; then a buffer that decoding fills beside `out`."""
    if padding is None and before is None:
        return out, 0
    prompt = input_ids
    if padding is not None:
        pad = padding.to(input_ids.device)[:, None]  # (B, 1)
        slots = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        prompt = torch.where(slots < pad, input_ids.gather(1, pad), input_ids)  # (B, T)
    head = prompt if before is None else torch.cat((before, prompt), dim=1)  # (B, H + T)
    text = torch.empty(out.shape[0], head.shape[1] + out.shape[1] - input_ids.shape[1], dtype=out.dtype,
                       device=out.device)  # fmt: skip
    text[:, : head.shape[1]] = head
    return text, head.shape[1] - input_ids.shape[1]


def check_logits(logits: torch.Tensor, step: int) -> None:
    """Refuse NaN or infinite logits (else argmax would "decode" token 0 from them): one reduction a step."""
    if not bool(torch.isfinite(logits).all()):
        where = "for the prompt" if step == 0 else f"at decoding step {step} (after {step} new tokens)"
        raise GenerationError(
            f"the model's logits {where} are NaN or infinite: the weights hold NaN/Inf values (an embedding row, "
            "a layer), a layer overflows its dtype, or the config breaks the arithmetic (an extreme rope_theta, "
            "norm eps or scaling factor); check the checkpoint"
        )
