"""Greedy decoding with a KV cache.

    prefill:  one forward over the whole prompt fills the cache and gives the first new token
              (logits for the last position only: the others would be computed and dropped)
    decode:   each step feeds only the last token; attention reads the past from the cache

The cache is allocated once for exactly prompt + max_new_tokens positions. Greedy decoding picks
argmax at every step, so cached decoding must reproduce, token for token, what recomputing the
whole sequence at every step would pick (tests/test_generate.py checks that).
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import GenerationError


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
) -> torch.Tensor:
    """Greedy decoding. input_ids (B, T) of equal-length prompts -> (B, T + n) with n <= max_new_tokens.

    Stops early only when `eos_token_id` is given and every sequence has produced it; sequences
    that finished earlier are padded with their eos token. `on_token` is called with each new
    column of tokens (B,) as soon as it is decoded (for streaming). For MLA models, `mla_decode`
    picks the attention path for this call: "naive", "absorbed" or "auto" (see layers/mla.py).
    """
    if mla_decode is not None:
        from .layers.mla import decode_path  # noqa: PLC0415

        with decode_path(model, mla_decode):
            return generate(model, input_ids, max_new_tokens, eos_token_id, on_token)
    input_ids = check_request(model, input_ids, max_new_tokens)
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if max_new_tokens == 0:
        return input_ids
    eos = None if eos_token_id is None else torch.tensor(eos_token_id, device=device).reshape(-1)
    batch, prompt_len = input_ids.shape
    cache = model.new_cache(batch, prompt_len + max_new_tokens)
    out = torch.empty(batch, prompt_len + max_new_tokens, dtype=torch.long, device=device)
    out[:, :prompt_len] = input_ids
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    logits = model(input_ids, cache=cache, last_only=True)  # prefill: (B, 1, V), not (B, T, V)
    if not bool(torch.isfinite(logits).all()):  # else argmax would "decode" token 0 forever
        raise GenerationError(
            "the model's logits for the prompt are NaN or infinite: the weights hold NaN/Inf values, or the "
            "config breaks the arithmetic (an extreme rope_theta, norm eps or scaling factor); check the checkpoint"
        )
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
        logits = model(token[:, None], cache=cache, last_only=True)  # decode: (B, 1, V)
    return out
