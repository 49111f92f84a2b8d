"""Rotary position embeddings (RoPE, Su et al. 2021) and their context-extension variants.

Legend: B batch, H heads, T positions, d rotary dims (<= head_dim), hd head_dim.

RoPE rotates each pair of dims of q and k by an angle `position * inv_freq_i`, so q.k depends
only on the *difference* of the two positions. Two conventions decide which dims form a pair:

    "half" (rotate_half, GPT-NeoX, every HF Llama/Qwen checkpoint):  pairs (i, i + d/2)
        x = [a | b]  ->  [a*cos - b*sin | b*cos + a*sin]
    "interleaved" (Meta's original, DeepSeek-V2 weights):              pairs (2i, 2i + 1)
        (x0, x1) -> (x0*cos - x1*sin, x0*sin + x1*cos)   i.e. complex multiplication

The two give identical attention only if the q/k weights are permuted accordingly (`permute`, the
permutation llama.cpp's converter applies to q_proj and k_proj rows), so the layout is a property of the
checkpoint family, not of this module.

Partial rotary (Phi-2, StableLM, Pythia): only the first d = partial_rotary_factor * hd dims are
rotated; the rest pass through unchanged.

Scaling variants change `inv_freq` (and, for YaRN, scale cos/sin by an attention factor). They
follow transformers' `modeling_rope_utils.py`:
    default  theta^(-2i/d)
    linear   inv_freq / factor                                   (position interpolation)
    dynamic  theta grows with the sequence length past max_seq_len (NTK-aware)
    llama3   low frequencies / factor, high unchanged, smooth ramp in between (Llama 3.1+)
    yarn     per-frequency blend of interpolation and extrapolation + attention factor
    longrope one searched stretch factor per frequency (LongRoPE, Ding et al. 2024, arXiv 2402.13753):
             short_factor within the pre-training context, long_factor beyond it, + attention factor
             (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini, MiniCPM3)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..rope_scaling import LONGROPE_LISTS, ROPE_TYPES, rope_type_of  # noqa: F401  (the dict's schema; re-exported)


def permute(rows, n_heads: int):
    """Split-half row order -> interleaved pairs, per head: the q/k projection rows (or any array whose first axis
    is n_heads * hd) that make the interleaved layout compute what the split-half one computes with `rows`
    (llama.cpp's convert_hf_to_gguf.py, LlamaModel.permute). A torch tensor or a numpy array."""
    shape = rows.shape
    return rows.reshape(n_heads, 2, shape[0] // n_heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def unpermute(rows, n_heads: int):
    """The inverse of `permute`: (H, hd/2, 2, ...) -> (H, 2, hd/2, ...) per head."""
    shape = rows.shape
    return rows.reshape(n_heads, shape[0] // n_heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _base_inv_freq(theta: float, d: int) -> torch.Tensor:  # (d/2,)
    return 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))


def compute_inv_freq(
    d: int, theta: float, scaling: dict[str, Any] | None = None, max_seq_len: int | None = None,
    seq_len: int | None = None,
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) and the factor cos/sin are multiplied by, for one RoPE variant.

    `max_seq_len` (the model's context) is needed by dynamic, yarn and longrope only. `seq_len` matters for the
    length-dependent variants only: dynamic (theta grows past max_seq_len) and longrope (long_factor past the
    original context; short_factor when None).
    """
    rope_type, p = rope_type_of(scaling, d), dict(scaling or {})
    if max_seq_len is None and rope_type in ("dynamic", "yarn", "longrope"):
        raise ConfigError(f"rope_type {rope_type!r} depends on the model's context: give max_seq_len")
    if rope_type == "default":
        return _base_inv_freq(theta, d), 1.0
    factor = p.get("factor")
    if rope_type == "linear":
        return _base_inv_freq(theta, d) / factor, 1.0
    if rope_type == "dynamic":
        seq_len = max(seq_len or max_seq_len, max_seq_len)
        theta = theta * ((factor * seq_len / max_seq_len) - (factor - 1)) ** (d / (d - 2))
        return _base_inv_freq(theta, d), 1.0
    if rope_type == "llama3":
        return _llama3_inv_freq(d, theta, p), 1.0
    if rope_type == "yarn":
        return _yarn_inv_freq(d, theta, p, max_seq_len)
    if rope_type == "longrope":
        return _longrope_inv_freq(d, theta, p, max_seq_len, seq_len)
    raise ConfigError(f"unsupported rope_type {rope_type!r}; supported: {', '.join(ROPE_TYPES)}")


def _llama3_inv_freq(d: int, theta: float, p: dict[str, Any]) -> torch.Tensor:
    inv_freq = _base_inv_freq(theta, d)
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_len = p["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)  # long waves: interpolate
    smooth = (old_len / wavelen - low) / (high - low)  # 0 -> fully scaled, 1 -> untouched
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature correction 0.1 * mscale * ln(scale) + 1 (1 when not stretched)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_factor(p: dict[str, Any], max_seq_len: int) -> float:
    """YaRN's stretch: `factor`, or (as DeepSeek-V3 configs imply) max_seq_len / the original context."""
    return p.get("factor") or max_seq_len / (p.get("original_max_position_embeddings") or max_seq_len)


def _yarn_inv_freq(d: int, theta: float, p: dict[str, Any], max_seq_len: int) -> tuple[torch.Tensor, float]:
    original = p.get("original_max_position_embeddings") or max_seq_len
    factor = yarn_factor(p, max_seq_len)
    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:  # which d completes `rotations` turns in `original`
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001  # avoid a division by zero in the ramp
    ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = theta ** (torch.arange(0, d, 2).float() / d)
    extrapolate = 1 - ramp  # 1 for high frequencies (kept), 0 for low ones (interpolated)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
    return inv_freq, float(attention_factor)


def longrope_attention_factor(p: dict[str, Any], max_seq_len: int) -> float:
    """cos/sin multiplier: `attention_factor`, else sqrt(1 + ln(factor) / ln(original)), 1 when not stretched.

    factor = `factor`, else max_seq_len / original (Phi-3-mini-128k: 131072 / 4096 = 32 -> 1.1902;
    MiniCPM3-4B: 32768 / 32768 = 1 -> 1.0), as transformers' `_compute_longrope_parameters` derives it.
    """
    if p.get("attention_factor") is not None:
        return float(p["attention_factor"])
    original = p["original_max_position_embeddings"]
    factor = p["factor"] if p.get("factor") is not None else max_seq_len / original
    if factor <= 1:
        return 1.0
    if original <= 1:
        raise ConfigError(f"LongRoPE's attention factor needs original_max_position_embeddings > 1, found {original}")
    return math.sqrt(1 + math.log(factor) / math.log(original))


def _longrope_inv_freq(
    d: int, theta: float, p: dict[str, Any], max_seq_len: int, seq_len: int | None
) -> tuple[torch.Tensor, float]:
    """inv_freq_i = 1 / (ext_i * theta^(2i/d)): ext = long_factor once seq_len > original, else short_factor.

    Both lists rescale *every* frequency, so LongRoPE changes the angles at short context too (a model
    that forgets short_factor is a different model at every length).
    """
    long = seq_len is not None and seq_len > p["original_max_position_embeddings"]
    ext = torch.tensor([float(x) for x in p["long_factor" if long else "short_factor"]], dtype=torch.float32)  # (d/2,)
    inv_freq = 1.0 / (ext * theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))  # (d/2,)
    return inv_freq, longrope_attention_factor(p, max_seq_len)


class RotaryEmbedding(nn.Module):
    """Computes cos/sin tables for given positions; shared by all layers of a model.

    `rotary_dim` (d) is how many dims of a head rotate: head_dim, a fraction of it (partial
    rotary), or MLA's qk_rope_head_dim.

    LongRoPE keeps two tables and picks one per call, by transformers' rule (`dynamic_rope_update`):
    the whole call uses long_factor when its last position + 1 exceeds original_max_position_embeddings,
    else short_factor. A full forward over S tokens is therefore all-short or all-long. In cached
    decoding transformers' cache holds keys already rotated, so once a decoding step crosses the
    threshold its new query and key use long_factor while the keys cached before stay short: cached
    decoding then differs from a full forward over the same tokens. tinyslm's caches also keep rotated
    keys and the table is chosen per call the same way, so both match transformers: a full forward its
    full forward, a cached decode its cached decode.
    """

    def __init__(self, rotary_dim: int, theta: float, scaling: dict[str, Any] | None, max_seq_len: int):
        super().__init__()
        self.rotary_dim, self.theta, self.scaling, self.max_seq_len = rotary_dim, theta, scaling, max_seq_len
        self.rope_type = rope_type_of(scaling, rotary_dim)
        inv_freq, self.attention_factor = compute_inv_freq(rotary_dim, theta, scaling, max_seq_len)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (d/2,)
        if self.rope_type == "longrope":
            self.original_max_seq_len = scaling["original_max_position_embeddings"]
            self.register_buffer("long_inv_freq", self._long_inv_freq(), persistent=False)  # (d/2,)

    def _long_inv_freq(self) -> torch.Tensor:
        inv_freq, _ = compute_inv_freq(self.rotary_dim, self.theta, self.scaling, self.max_seq_len,
                                       seq_len=self.original_max_seq_len + 1)  # fmt: skip
        return inv_freq

    def reset_buffers(self, device=None) -> None:
        """Recompute inv_freq (after the model was built on the meta device, or to move it)."""
        device = device or ("cpu" if self.inv_freq.is_meta else self.inv_freq.device)
        inv_freq, _ = compute_inv_freq(self.rotary_dim, self.theta, self.scaling, self.max_seq_len)
        self.inv_freq = inv_freq.to(device)
        if self.rope_type == "longrope":
            self.long_inv_freq = self._long_inv_freq().to(device)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) -> cos, sin (T, d) (or (B, T) -> (B, T, d)), computed in float32 (then cast to `dtype`).

        The model keeps them in float32: `apply_rope` casts them to the activations' dtype where
        transformers does (split-half) or rotates in float32 (interleaved, as DeepSeek-V2 does).
        """
        inv_freq = self.inv_freq
        if self.rope_type == "dynamic":
            seq_len = int(positions.max()) + 1  # only dynamic NTK depends on the length (and pays the sync)
            if seq_len > self.max_seq_len:
                inv_freq, _ = compute_inv_freq(self.rotary_dim, self.theta, self.scaling, self.max_seq_len, seq_len)
                inv_freq = inv_freq.to(positions.device)
        elif self.rope_type == "longrope":  # one table for the whole call (class docstring); no host sync
            seq_len = positions.max() + 1  # () tensor
            inv_freq = torch.where(seq_len > self.original_max_seq_len, self.long_inv_freq, self.inv_freq)  # (d/2,)
        freqs = positions.float()[..., None] * inv_freq.float()  # (T, d/2), or (B, T, d/2) for per-row positions
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, d)
        cos, sin = emb.cos() * self.attention_factor, emb.sin() * self.attention_factor
        return cos.to(dtype), sin.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)  # (..., d/2) each
    return torch.cat((-b, a), dim=-1)


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "half", fp32: bool = False
) -> torch.Tensor:
    """Rotate the first d dims of x (B, H, T, hd) by the angles in cos/sin (T, d); pass the rest through.

    Precision follows transformers: split-half rotates in x's dtype with cos/sin cast to it (Llama),
    or with fp32=True in float32, cast back afterwards (OLMo); interleaved always rotates in float32
    (DeepSeek-V2's complex product).
    """
    d = cos.shape[-1]
    x_rot, x_pass = x[..., :d], x[..., d:]  # (B, H, T, d), (B, H, T, hd - d)
    if layout == "half":
        work = torch.float32 if fp32 else x.dtype
        cos, sin, x_rot = cos.to(work), sin.to(work), x_rot.to(work)
        rotated = (x_rot * cos + rotate_half(x_rot) * sin).to(x.dtype)
    elif layout == "interleaved":
        cos_i, sin_i = cos[..., : d // 2].float(), sin[..., : d // 2].float()  # (T, d/2): one angle per pair
        even, odd = x_rot[..., 0::2].float(), x_rot[..., 1::2].float()  # (B, H, T, d/2)
        pairs = torch.stack((even * cos_i - odd * sin_i, even * sin_i + odd * cos_i), dim=-1)  # (B, H, T, d/2, 2)
        rotated = pairs.flatten(-2).to(x.dtype)  # (B, H, T, d)
    else:
        raise ConfigError(f"unknown rope layout {layout!r}; use 'half' or 'interleaved'")
    return rotated if x_pass.shape[-1] == 0 else torch.cat((rotated, x_pass), dim=-1)
