"""A conversation with a chat model: its template, its end ids, and one KV cache kept between turns.

    session = ChatSession(model, tokenizer, load_chat_template(path), end_ids(path, model.config))
    reply = session.say("What is the capital of France?", on_text=print)   # streamed as decoded

Each turn renders the whole conversation with the chat template (chat_template.py) and tokenizes it. What the
cache already holds from earlier turns is not computed again: the new prompt's tokens are compared with the
tokens the cache holds, and only the part after their common beginning is fed to the model (a template that
writes an earlier message differently this time, or a reply that re-tokenizes differently, shortens that common
beginning; the cache is cut back to it, `KVCache.truncate`, or rebuilt where a sliding-window layer cannot be
cut back). The cache is allocated once, for `context` positions; a turn that would not fit is refused, naming
/reset, and `remaining` lets a front end warn before that.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..chat_template import ChatTemplate
from ..errors import GenerationError
from ..runtime import generate

NEAR_FULL = 0.8  # `near_full` once this share of the context is used


class ChatSession:
    """The messages so far and the cache that holds them. `say` adds a user message and the model's reply."""

    def __init__(self, model, tokenizer, template: ChatTemplate, end_ids: list[int], *, context: int | None = None,
                 system: str | None = None, decoder=None, **sampling):  # fmt: skip
        self.model, self.tokenizer, self.template, self.end_ids = model, tokenizer, template, end_ids
        self.context = min(context or model.config.max_seq_len, model.config.max_seq_len)
        self.decoder, self.sampling = decoder, sampling  # decoder: e.g. one from runtime.fast_decoding
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.cache = None  # allocated on the first turn, kept until reset
        self.reused = 0  # tokens of the last turn's prompt read from the cache, not computed

    def reset(self, system: str | None = None) -> None:
        """Forget the conversation (and, with `system`, start the next one with that system message)."""
        self.messages = []
        if self.cache is not None and not self.cache.truncate(0):
            self.cache = None
        if system is not None:
            self.system = system or None

    def prompt_ids(self, user: str) -> list[int]:
        """The tokens of the conversation so far plus `user`, ending where the assistant's reply begins."""
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        text = self.template.render([*messages, {"role": "user", "content": user}], add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)  # the template wrote the special tokens

    @property
    def held(self) -> list[int]:
        """The tokens the cache holds, in order (generate records them in it: KVCache.tokens)."""
        tokens = self.cache.tokens if self.cache is not None else None
        return [] if tokens is None else tokens[0].tolist()

    @property
    def used(self) -> int:
        return self.cache.length if self.cache is not None else 0

    def near_full(self) -> bool:
        return self.used >= NEAR_FULL * self.context

    def say(self, user: str, max_new_tokens: int, on_text: Callable[[str], None] | None = None) -> str:
        """Add `user`'s message, decode the reply (streamed to on_text piece by piece), keep both; the reply's text."""
        ids = self.prompt_ids(user)
        if len(ids) + max_new_tokens > self.context:
            raise GenerationError(
                f"the conversation is {len(ids)} tokens; with a reply of up to {max_new_tokens} it would not fit the "
                f"context of {self.context} positions: /reset to start over (or ask for a shorter reply)"
            )
        if self.cache is None:
            self.cache = self.model.new_cache(1, self.context)
        same = 0  # how many of the prompt's first tokens the cache already holds
        for a, b in zip(self.held, ids):
            if a != b:
                break
            same += 1
        same = min(same, len(ids) - 1)  # at least one token goes through the model: its logits pick the first
        if not self.cache.truncate(same):  # a sliding-window layer cannot go back: compute it all again
            self.cache, same = self.model.new_cache(1, self.context), 0
        self.reused = same

        new: list[int] = []
        shown = ""

        def on_token(token: torch.Tensor) -> None:
            nonlocal shown
            new.append(int(token[0]))
            if new[-1] in self.end_ids:
                return
            text = self.tokenizer.decode([t for t in new if t not in self.end_ids])
            if on_text is not None and not text.endswith("\ufffd"):  # wait for a whole multi-byte character
                on_text(text[len(shown):])
                shown = text

        sampling = dict(self.sampling)
        if sampling.get("seed") is not None:  # turn k draws with seed + k: reproducible, not each turn the same draws
            sampling["seed"] += len(self.messages) // 2
        try:
            generate(self.model, torch.tensor([ids[same:]]), max_new_tokens, eos_token_id=self.end_ids or None,
                     on_token=on_token, decoder=self.decoder, cache=self.cache, **sampling)  # fmt: skip
        except BaseException:  # (Ctrl-C mid-reply): the cache holds an unknown part of it; the next turn recomputes
            if not self.cache.truncate(0):
                self.cache = None
            raise
        reply = self.tokenizer.decode([t for t in new if t not in self.end_ids])
        self.messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return reply
