"""fast_decoding: the runtime's faster decoding paths, plugged into the reference decoder's seam (a `Decoder`).

`tinyslm.generate` runs the model through a `Decoder` (generate.py): it gives each request its cache and each
step its logits. Within `fast_decoding(model, fast)` the decoder is a FastDecoder, which takes, per request,
the first path that applies:

    native step    every block is one kernels/decode_block.cpp computes (decode_block.py: GGUF-block,
                   bfloat16 or float32 weights): all of a token's blocks in one C++ call, nothing to compile,
                   so fast=None and fast=True both use it, for every request
    compiled step  any other model with MHA/GQA/MQA attention: its blocks compiled by torch.compile over a
                   static cache (compiled.py). Compiling takes seconds and pays for itself only over many
                   tokens, so fast=None compiles for requests of at least AUTO_COMPILE_TOKENS new tokens, and
                   for every request to a model already compiled in this process; fast=True always
    module path    the reference decoder's own step; fast=False is always this one

Within the context a bfloat16 or float32 model's linear layers also compute with the native kernels
(quant/float_mv.py: the same sums in another order), prompts included; the model's forward outside it is
unchanged. The decoder's `path` and `compile_s` say how its last request was decoded, for reports. Both fast
steps replace one thing, the model's run_blocks (how its forward runs the blocks): the native stack for the
duration of the context, the compiled blocks for each of its calls; embedding, final norm and head stay the
model's own. Figures (the compile's cost, each path's speed): docs/performance.md.
"""

from __future__ import annotations

import contextlib
import dataclasses

from .. import generate as reference
from ..errors import GenerationError
from ..generate import Decoder
from ..layers.cache import KVCache
from ..quant.float_mv import float_kernels
from ..sampling import Sampler
from .compiled import compiled_step, static_cache, supports_compiled
from .decode_block import native_decode

FAST_CHOICES = {"auto": None, "on": True, "off": False}  # the CLI's --fast -> fast_decoding(fast=...)
AUTO_COMPILE_TOKENS = 512  # fast=None compiles for requests this long (see the module docstring)


class FastDecoder(Decoder):
    """The decoder `fast_decoding` yields: picks each request's path (module docstring) and reports it."""

    def __init__(self, model, fast: bool | None, native: bool):
        super().__init__(model)
        self.fast, self.native, self.compiled = fast, native, None
        self.path = "native step" if native else "module path"

    def new_cache(self, batch: int, prompt_len: int, max_new_tokens: int, padded: bool = False) -> KVCache:
        if not (self.native or self.fast is False or padded):  # (the compiled step does not take padded rows yet)
            if not supports_compiled(self.model):
                if self.fast:
                    raise GenerationError("fast=True: the compiled decoding step supports MHA/GQA/MQA attention "
                                          "only (this model has MLA)")  # fmt: skip
            elif self.fast or max_new_tokens >= AUTO_COMPILE_TOKENS or "_tinyslm_compiled_step" in self.model.__dict__:
                cache = static_cache(self.model, batch, prompt_len + max_new_tokens)
                self.compiled, self.path = compiled_step(self.model), "compiled step"
                self.compile_s = self.compiled.warm_up(cache)  # compiles now (once per cache shape), not mid-decoding
                return cache
        return self.reuse(super().new_cache(batch, prompt_len, max_new_tokens))

    def reuse(self, cache: KVCache) -> KVCache:
        """A cache of the model's own (a kept one, or a request's that is not compiled): the native step or the
        module path, nothing compiled."""
        self.compile_s, self.compiled = None, None
        self.path = "native step" if self.native else "module path"
        return cache

    def step(self, token, cache: KVCache):
        return self.compiled(token, cache) if self.compiled is not None else super().step(token, cache)


@contextlib.contextmanager
def fast_decoding(model, fast: bool | None = None):
    """Within this block, `model` decodes by the fastest path it qualifies for (module docstring): yields the
    Decoder to pass to `tinyslm.generate(..., decoder=)`, whose `path` and `compile_s` then say what ran.
    `fast`: None (default) compiles only where that is likely to pay, True always where it can (and refuses MLA),
    False is the reference decoder, nothing switched."""
    if fast is False:
        yield Decoder(model)
        return
    with float_kernels(model), native_decode(model) as native:
        yield FastDecoder(model, fast, native=bool(native))


def generate(model, input_ids, max_new_tokens: int, eos_token_id: int | list[int] | None = None, on_token=None,
             mla_decode: str | None = None, fast: bool | None = None, decoder: Decoder | None = None, *,
             temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
             min_p: float | None = None, repetition_penalty: float | None = None, seed: int | None = None,
             cache: KVCache | None = None, attention_mask=None):  # fmt: skip
    """`tinyslm.generate`: the reference decoder (tinyslm/generate.py, where the arguments are described) run
    through `fast_decoding(model, fast)`: None (default) and True take the runtime's paths, False the reference
    Decoder; a given `decoder` is used as it is (e.g. one from fast_decoding, to read its `path` afterwards).
    Greedy unless a temperature above 0, top_k, top_p or min_p is given: then sampled, with transformers'
    processors in transformers' order, from a generator seeded by `seed` (tinyslm/sampling.py): with fast=False
    drawn as transformers draws (the same tokens as its generate after torch.manual_seed(seed)), else by inverse
    CDF (the same distribution, a tenth of the cost: sampling.py)."""
    sampler = Sampler(temperature, top_k, top_p, min_p, repetition_penalty, seed)  # (checked before anything runs)
    with contextlib.ExitStack() as scope:
        if decoder is None:
            decoder = scope.enter_context(fast_decoding(model, fast))
        if type(decoder) is not Decoder:  # the reference draws as transformers; a fast path by inverse CDF (sampling.py)
            sampler = dataclasses.replace(sampler, draw="inverse_cdf")
        return reference.generate(model, input_ids, max_new_tokens, eos_token_id, on_token, mla_decode, decoder,
                                  sampler, cache, attention_mask)  # fmt: skip
