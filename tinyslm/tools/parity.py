"""Parity with transformers: the same checkpoint folder through both implementations.

    1. logits of a fixed batch, float32: max |ours - theirs|, relative to max |theirs|
    2. a greedy continuation: tinyslm.generate (KV cache) vs `reference_greedy`, plain argmax over
       transformers' own forward and KV cache
    3. if they differ, forward hooks on every decoder layer of both models name the first layer
       whose output differs (the per-layer debugger of LLMs-from-scratch)

transformers is only the reference here; it is imported lazily and is an optional extra.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..checkpoint import load_config, weight_files
from ..errors import GenerationError, TinySLMError
from ..gguf.loader import gguf_path, is_gguf
from ..pretrained import load_pretrained
from ..runtime import generate

DEFAULT_TOLERANCE = 1e-5  # max |diff| / max |logit| in float32


def import_transformers():
    try:
        import transformers  # noqa: PLC0415
    except ImportError:
        raise TinySLMError(
            "transformers is not installed; it is only needed as the parity reference: "
            "pip install 'tinyslm[test]' (or pip install transformers)"
        ) from None
    return transformers


@dataclass
class ParityReport:
    folder: str
    max_abs_diff: float
    max_abs_logit: float
    relative_diff: float
    tolerance: float
    prompt: list[int]  # the prompt both implementations continue greedily
    tokens_ours: list[int]
    tokens_reference: list[int]
    first_diverging_layer: int | None = None
    layer_diffs: list[float] = field(default_factory=list)

    @property
    def tokens_match(self) -> bool:
        return self.tokens_ours == self.tokens_reference

    @property
    def ok(self) -> bool:
        return self.relative_diff <= self.tolerance and self.tokens_match

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_match": self.tokens_match, "ok": self.ok}

    def summary(self) -> str:
        lines = [
            f"checkpoint            {self.folder}",
            f"max |logit diff|      {self.max_abs_diff:.3e}  (relative {self.relative_diff:.3e}, tolerance {self.tolerance:g})",
            f"greedy continuation   {'identical' if self.tokens_match else 'DIFFERS'} ({len(self.tokens_ours)} tokens)",
        ]
        if self.first_diverging_layer is not None:
            lines.append(f"first diverging layer {self.first_diverging_layer} (relative diff {self.layer_diffs[self.first_diverging_layer]:.3e})")
        lines.append("PARITY OK" if self.ok else "PARITY FAILED")
        return "\n".join(lines)


def decoder_layers(model: nn.Module, n: int) -> nn.ModuleList:
    """The first ModuleList of exactly n modules: the decoder layers, whatever the family calls them."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise TinySLMError(f"cannot find the {n} decoder layers of {type(model).__name__}")


def record_layer_outputs(layers: nn.ModuleList) -> tuple[list[torch.Tensor], list]:
    """Register hooks that append each layer call's output hidden states, in call order."""
    outputs: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        outputs.append((output[0] if isinstance(output, tuple) else output).detach().float())

    return outputs, [layer.register_forward_hook(hook) for layer in layers]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


class LayerComparison(NamedTuple):
    layer_diffs: list[float]  # per decoder layer: relative difference of the two models' outputs
    first_diverging_layer: int | None  # the first above the tolerance (None: every layer agrees)
    logits_ours: torch.Tensor  # (B, T, V)
    logits_theirs: torch.Tensor  # (B, T, V)


@torch.no_grad()
def compare_layers(ours: nn.Module, theirs: nn.Module, ids: torch.Tensor, n_layers: int,
                   tolerance: float = DEFAULT_TOLERANCE) -> LayerComparison:  # fmt: skip
    """Run ids (B, T) through two models (any two, e.g. tinyslm's and transformers', or a model and a copy with a
    planted bug) with hooks on their n_layers decoder layers: each layer's relative difference, the first one past
    `tolerance`, and both logits. Where two models diverge, the first diverging layer is where to look."""
    our_out, our_hooks = record_layer_outputs(decoder_layers(ours, n_layers))
    their_out, their_hooks = record_layer_outputs(decoder_layers(theirs, n_layers))
    try:
        logits_ours = ours(ids)
        out = theirs(input_ids=ids)
        logits_theirs = out.logits if hasattr(out, "logits") else out
    finally:
        for h in our_hooks + their_hooks:
            h.remove()
    diffs = [relative(a, b) for a, b in zip(our_out, their_out)]
    first = next((i for i, d in enumerate(diffs) if d > tolerance), None)
    return LayerComparison(diffs, first, logits_ours, logits_theirs)


@torch.inference_mode()
def reference_greedy(
    hf_model, ids: torch.Tensor, new_tokens: int, on_token: Callable[[torch.Tensor], None] | None = None
) -> torch.Tensor:
    """transformers' greedy continuation of ids (B, T) -> exactly new_tokens new tokens (B, new_tokens).

    Greedy decoding written out over the model's own forward and KV cache: argmax of the last
    logits, feed it back, repeat. Not `hf_model.generate`: that applies the checkpoint's
    generation_config.json (Qwen2.5-Instruct ships repetition_penalty 1.05-1.1), and its
    min_new_tokens forbids the eos token, so its tokens can differ where the logits agree.
    `on_token` is called with each new column (B,) as soon as it is decoded, as in
    tinyslm.generate (bench times prefill and decode with it).
    """
    # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns); use the model's own
    cache_arg = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"
    past, x, tokens = None, ids, []
    for _ in range(new_tokens):
        # logits_to_keep=1: the last position's logits only, as tinyslm's last_only and generate() do
        out = hf_model(input_ids=x, **{cache_arg: past}, use_cache=True, logits_to_keep=1)
        past = getattr(out, cache_arg)
        x = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        tokens.append(x)
        if on_token is not None:
            on_token(x[:, 0])
    return torch.cat(tokens, dim=1) if tokens else ids[:, :0]  # (B, new_tokens)


def check_parity(
    folder: str | Path,
    new_tokens: int = 16,
    tolerance: float = DEFAULT_TOLERANCE,
    batch: int = 2,
    length: int = 12,
    seed: int = 0,
    allow_pickle: bool = False,
    progress: Callable[[str], None] = lambda _message: None,
) -> ParityReport:
    """Compare tinyslm with transformers on one folder, or one GGUF file (both dequantize it to float32: the
    comparison is of the two models, not of the quantization); `progress` hears about each (slow) stage."""
    folder = Path(folder).expanduser()  # transformers reads "~/x" as a Hub repo id
    transformers = import_transformers()
    gguf = gguf_path(folder) if is_gguf(folder) else None
    if gguf is None:
        load_config(folder)  # a missing folder, config or weights fails here, before any progress line
        weight_files(folder, allow_pickle)
    progress("loading with tinyslm (float32)")
    ours = load_pretrained(folder, dtype=torch.float32, allow_pickle=allow_pickle, keep_quantized=False)
    if not 1 <= new_tokens < ours.config.max_seq_len:
        raise GenerationError(
            f"parity needs 1 <= tokens < the model's context ({ours.config.max_seq_len}), found {new_tokens}"
        )
    progress("loading with transformers (float32)")
    # eager: transformers' reference path (its SDPA path skips, e.g., Gemma-2's attention soft-cap)
    try:
        where = {"pretrained_model_name_or_path": str(folder)} if gguf is None else {
            "pretrained_model_name_or_path": str(gguf.parent), "gguf_file": gguf.name}
        theirs = transformers.AutoModelForCausalLM.from_pretrained(
            **where, dtype=torch.float32, attn_implementation="eager"
        ).eval()
    except Exception as exc:  # noqa: BLE001  (the reference refused a folder tinyslm loads: say so, in one line)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TinySLMError(f"{gguf or folder}: transformers cannot load this {'file' if gguf else 'folder'} "
                           f"({type(exc).__name__}: {message})") from None
    config = ours.config
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, min(length, config.max_seq_len - new_tokens)), generator=gen)

    progress(f"comparing logits and per-layer outputs on a {tuple(ids.shape)} batch")
    layer_diffs, first_bad, logits_ours, logits_theirs = compare_layers(ours, theirs, ids, config.n_layers, tolerance)

    prompt = ids[:1]
    progress(f"decoding {new_tokens} greedy tokens with both")
    tokens_ours = generate(ours, prompt, new_tokens)[0, prompt.shape[1] :].tolist()
    tokens_ref = reference_greedy(theirs, prompt, new_tokens)[0].tolist()
    return ParityReport(
        folder=str(folder),
        max_abs_diff=float((logits_ours - logits_theirs).abs().max()),
        max_abs_logit=float(logits_theirs.abs().max()),
        relative_diff=relative(logits_ours, logits_theirs),
        tolerance=tolerance,
        prompt=prompt[0].tolist(),
        tokens_ours=tokens_ours,
        tokens_reference=tokens_ref,
        first_diverging_layer=first_bad,
        layer_diffs=layer_diffs,
    )
