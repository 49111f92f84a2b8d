"""RoPE scaling in a GGUF, both ways: what llama.cpp's convert_hf_to_gguf.py writes for a config's rope_scaling.

Legend: d rotary dimensions, i = 0 .. d/2 - 1 one frequency, inv_i = theta^(-2i/d), wavelength 2 pi / inv_i.

    linear   metadata {arch}.rope.scaling.type = "linear" and {arch}.rope.scaling.factor
    yarn     metadata type = "yarn", factor, original_context_length (config.json's
             original_max_position_embeddings). YaRN's attention factor is then 0.1 ln(factor) + 1 and
             its betas 32 and 1 in both programs (measured: llama-cpp-python 0.3.36 on such a file gives
             transformers' logits as closely as without scaling). Betas of its own are read from
             yarn_beta_fast / yarn_beta_slow but not written (that llama.cpp ignored them: its logits
             then differed by 1.5%); an attention factor of its own (attn_factor, yarn_attn_factor,
             yarn_log_multiplier; config.json's attention_factor, mscale) or an ext_factor is refused.
    llama3   no metadata: a float32 tensor `rope_freqs.weight` of d/2 divisors f_i, inv_i / f_i being
             the scaled frequency (Llama 3.1+, Llama 3.2: factor 32, low 1, high 4, original 8192)
    longrope float32 tensors `rope_factors_long.weight` and `rope_factors_short.weight` (config.json's
             long_factor and short_factor, d/2 each), metadata original_context_length and attn_factor
             (the cos/sin multiplier, sqrt(1 + ln(context / original) / ln(original)) unless config.json
             states its own attention_factor); no scaling type (Phi-3-mini-128k, Phi-3.5-mini: the
             architectures whose gguf-py tensor list has the factors). The two programs pick the list
             differently: transformers (and tinyslm) per call, long_factor once the sequence passes the
             original context; llama.cpp once per context, long_factor when the context it is given
             (n_ctx) exceeds the original, so their logits agree for n_ctx <= original context (measured
             with llama-cpp-python 0.3.36: within 2.5e-4 there and for long sequences past it; 2.1% off
             for a short sequence in a long n_ctx, where llama.cpp uses long_factor).

Llama 3's divisors are 1 for short waves (wavelength < original / high), `factor` for long ones
(> original / low), and in between 1 / ((1 - s) / factor + s) with s = (original / wavelength - low)
/ (high - low), which is linear in inv_i. Reading them back, `factor` is the largest divisor, and
the band in between gives the line s(inv_i) by least squares: its slope and intercept fix
original / (high - low) and low / (high - low). Only those two ratios shape the frequencies, so
low = 1 (every Llama 3 release's value) makes the split unique. With fewer than two frequencies in
the band the line is undetermined and Llama 3's published values are assumed. Either way the
divisors are recomputed from the result and must equal the file's (relative 1e-4), or the file is
refused: a config that reproduces other frequencies is never guessed.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import UnsupportedModelError
from ..files import file_number, shown
from ..layers.rope import _base_inv_freq, compute_inv_freq, longrope_attention_factor, yarn_factor
from .names import arch_enum
from .reader import _gguf

ROPE_FREQS = "rope_freqs.weight"
LONG_FACTORS, SHORT_FACTORS = "rope_factors_long.weight", "rope_factors_short.weight"
ROPE_TENSORS = (ROPE_FREQS, LONG_FACTORS, SHORT_FACTORS)  # tensors that are RoPE scaling, read into the config
LLAMA3_DEFAULTS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def llama3_divisors(theta: float, d: int, scaling: dict[str, Any]) -> torch.Tensor:
    """The (d/2,) divisors f_i = inv_i / scaled inv_i that llama.cpp stores as rope_freqs for a llama3 config."""
    scaled, _ = compute_inv_freq(d, theta, scaling, 0)
    return (_base_inv_freq(theta, d) / scaled).float()


def scaling_from_gguf(source: str, arch: str, get, tensors: dict[str, torch.Tensor], theta: float, d: int,
                      context: int) -> dict | None:  # fmt: skip
    """The config.json rope_scaling that a GGUF's metadata (`get(key)`) and RoPE tensors (ROPE_TENSORS present
    in the file) describe, or None; d: rotary dimensions; context: the file's context length."""
    kind = get(f"{arch}.rope.scaling.type", "none")
    if not isinstance(kind, str):
        raise UnsupportedModelError(f"{source}: metadata {arch}.rope.scaling.type must be a string, found {shown(repr(kind))}")
    get = _numbers(get, source)
    longrope = LONG_FACTORS in tensors or SHORT_FACTORS in tensors
    allowed = {"none": True, "linear": not tensors, "yarn": not tensors, "longrope": longrope}  # with these tensors
    if not allowed.get(kind, False) or (longrope and ROPE_FREQS in tensors):
        found = [kind] + sorted(n for n in tensors)
        raise UnsupportedModelError(f"{source}: RoPE scaling {' + '.join(map(repr, found))} in a GGUF is not supported "
                                    "(linear, yarn, llama3's rope_freqs and LongRoPE's rope_factors are)")  # fmt: skip
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(get(f"{arch}.rope.scaling.factor", 1.0))}
    if kind == "yarn":
        return _yarn_from_gguf(source, arch, get)
    if longrope:
        return _longrope_from_gguf(source, arch, get, tensors, d, context)
    if ROPE_FREQS not in tensors:
        return None
    return _llama3_from_divisors(source, tensors[ROPE_FREQS].float().reshape(-1), theta, d)


def _numbers(get, source: str):
    """`get` for the RoPE scaling keys, all numbers: each value checked (a string, a bool, NaN refused by key)."""

    def number(key: str, default: Any = None, kind: type = float) -> Any:
        value = get(key)
        return default if value is None else file_number(value, kind, source, f"metadata {key}", UnsupportedModelError)

    return number


def _longrope_from_gguf(source: str, arch: str, get, tensors: dict[str, torch.Tensor], d: int, context: int) -> dict:
    lists = {}
    for name, hf_key in ((LONG_FACTORS, "long_factor"), (SHORT_FACTORS, "short_factor")):
        if name not in tensors:
            raise UnsupportedModelError(f"{source}: tensor {name!r} is missing: LongRoPE needs both "
                                        f"{LONG_FACTORS!r} and {SHORT_FACTORS!r}")  # fmt: skip
        values = tensors[name].float().reshape(-1)
        if values.numel() != d // 2:
            raise UnsupportedModelError(f"{source}: tensor {name!r} holds {values.numel()} values, expected {d // 2} "
                                        f"(one per frequency of {d} rotary dimensions)")  # fmt: skip
        lists[hf_key] = values.tolist()
    original = get(f"{arch}.rope.scaling.original_context_length", None, int)
    if original is None:
        raise UnsupportedModelError(f"{source}: LongRoPE factors without {arch}.rope.scaling.original_context_length "
                                    "(the context past which long_factor applies)")  # fmt: skip
    scaling = {"rope_type": "longrope", **lists, "original_max_position_embeddings": int(original)}
    # llama.cpp multiplies cos/sin by attn_factor, 1 when the key is absent; config.json derives its default
    attn = float(get(f"{arch}.rope.scaling.attn_factor", 1.0))
    if not math.isclose(attn, longrope_attention_factor(scaling, context), rel_tol=1e-6):
        scaling["attention_factor"] = attn
    return scaling


YARN_DEFAULTS = {"yarn_beta_fast": ("beta_fast", 32.0), "yarn_beta_slow": ("beta_slow", 1.0)}
YARN_UNSUPPORTED = {"attn_factor": 1.0, "yarn_attn_factor": 1.0, "yarn_log_multiplier": 0.0, "yarn_ext_factor": None}


def _yarn_from_gguf(source: str, arch: str, get) -> dict:
    for key, neutral in YARN_UNSUPPORTED.items():
        value = get(f"{arch}.rope.scaling.{key}")
        if value is not None and (neutral is None or value != neutral):
            raise UnsupportedModelError(f"{source}: YaRN with {arch}.rope.scaling.{key} = {value} is not supported "
                                        "(tinyslm reads YaRN's factor, original context and betas)")  # fmt: skip
    scaling = {"rope_type": "yarn", "factor": float(get(f"{arch}.rope.scaling.factor", 1.0))}
    original = get(f"{arch}.rope.scaling.original_context_length", None, int)
    if original is not None:
        scaling["original_max_position_embeddings"] = int(original)
    for key, (hf_key, _) in YARN_DEFAULTS.items():
        if get(f"{arch}.rope.scaling.{key}") is not None:
            scaling[hf_key] = float(get(f"{arch}.rope.scaling.{key}"))
    return scaling


def _llama3_from_divisors(source: str, f: torch.Tensor, theta: float, d: int) -> dict:
    if f.numel() != d // 2:
        raise UnsupportedModelError(f"{source}: tensor {ROPE_FREQS!r} holds {f.numel()} values, expected {d // 2} "
                                    f"(one per frequency of {d} rotary dimensions)")  # fmt: skip
    factor = float(f.max())
    inv = _base_inv_freq(theta, d).double()
    band = (f > 1 + 1e-6) & (f < factor * (1 - 1e-6))
    scaling = {"rope_type": "llama3", "factor": factor, **LLAMA3_DEFAULTS}
    if int(band.sum()) >= 2 and factor > 1:
        s = (1 / f[band].double() - 1 / factor) / (1 - 1 / factor)  # the ramp, 0 .. 1
        x = inv[band]
        slope = float(((x - x.mean()) * (s - s.mean())).sum() / ((x - x.mean()) ** 2).sum())
        intercept = float(s.mean() - slope * x.mean())
        # s = original * inv / (2 pi (high - low)) - low / (high - low), with low = 1
        high = 1 - 1 / intercept if intercept < 0 else math.inf
        if math.isfinite(high):
            scaling.update(high_freq_factor=high, original_max_position_embeddings=slope * 2 * math.pi * (high - 1))
    if factor <= 1 or not torch.allclose(llama3_divisors(theta, d, scaling), f, rtol=1e-4, atol=0):
        raise UnsupportedModelError(f"{source}: tensor {ROPE_FREQS!r} does not follow Llama 3's RoPE scaling "
                                    "(no factor, low, high and original context reproduce it)")  # fmt: skip
    return scaling


def rope_items(config, arch: str) -> tuple[list[tuple[str, Any, str]], dict[str, torch.Tensor]]:
    """(metadata (key, value, type) triples, extra tensors) that store `config.rope_scaling` as llama.cpp does."""
    scaling = config.rope_scaling
    if scaling is None:
        return [], {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return [(f"{arch}.rope.scaling.type", "linear", "string"),
                (f"{arch}.rope.scaling.factor", float(scaling["factor"]), "float32")], {}  # fmt: skip
    if kind == "llama3":
        d = int(config.head_dim * config.partial_rotary_factor)
        return [], {ROPE_FREQS: llama3_divisors(config.rope_theta, d, scaling)}
    if kind == "yarn":
        own = [k for k in ("attention_factor", "mscale", "mscale_all_dim") if scaling.get(k)]
        own += [hf_key for hf_key, default in YARN_DEFAULTS.values() if scaling.get(hf_key) not in (None, default)]
        if own or scaling.get("truncate", True) is False:
            raise UnsupportedModelError(f"config {config.name!r}: YaRN with {', '.join(own) or 'truncate=false'} has "
                                        "no GGUF form llama.cpp reads (factor and original context have)")  # fmt: skip
        items = [(f"{arch}.rope.scaling.type", "yarn", "string"),
                 (f"{arch}.rope.scaling.factor", float(yarn_factor(scaling, config.max_seq_len)), "float32")]  # fmt: skip
        if scaling.get("original_max_position_embeddings"):
            items.append((f"{arch}.rope.scaling.original_context_length", int(scaling["original_max_position_embeddings"]),
                          "uint32"))  # fmt: skip
        return items, {}
    if kind == "longrope":
        if not _has_rope_factors(arch):
            raise UnsupportedModelError(f"config {config.name!r}: llama.cpp's {arch} architecture reads no LongRoPE "
                                        "factors (rope_factors_long/short)")  # fmt: skip
        items = [(f"{arch}.rope.scaling.original_context_length", int(scaling["original_max_position_embeddings"]), "uint32"),
                 (f"{arch}.rope.scaling.attn_factor", longrope_attention_factor(scaling, config.max_seq_len), "float32")]  # fmt: skip
        tensors = {LONG_FACTORS: torch.tensor([float(x) for x in scaling["long_factor"]], dtype=torch.float32),
                   SHORT_FACTORS: torch.tensor([float(x) for x in scaling["short_factor"]], dtype=torch.float32)}  # fmt: skip
        return items, tensors
    raise UnsupportedModelError(f"config {config.name!r}: RoPE scaling {kind!r} has no GGUF form in tinyslm's writer "
                                "yet (linear, yarn, llama3 and longrope have)")  # fmt: skip


def _has_rope_factors(arch: str) -> bool:
    """Whether llama.cpp's graph for `arch` reads LongRoPE factors (gguf-py's tensor list for it names them)."""
    gguf = _gguf()
    return gguf.MODEL_TENSOR.ROPE_FACTORS_LONG in gguf.MODEL_TENSORS[arch_enum(arch)]
