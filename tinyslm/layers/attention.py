"""Causal self-attention for MHA, MQA and GQA: one module, the KV-head count decides which.

Legend: B batch, T new positions, S all key positions (cache + new), D model width,
H query heads, K = n_kv KV heads, G = H / K query heads per KV head, hd head_dim.

    MHA (Vaswani 2017)    K = H   every query head has its own key/value head
    GQA (Ainslie 2023)    1<K<H   G query heads share one key/value head
    MQA (Shazeer 2019)    K = 1   all query heads share a single key/value head

    q heads:   q0 q1 q2 q3 q4 q5 q6 q7          H = 8
               \\___/ \\___/ \\___/ \\___/
    kv heads:   kv0   kv1   kv2   kv3            K = 4, G = 2  (GQA)

Query head h reads KV head h // G (transformers' `repeat_kv` order). Instead of copying K and V
G times we fold the G query heads of each group into the row dimension, so one batched matmul
per group does the work and the cache stays K heads wide: that is the whole memory win of
GQA/MQA, KV-cache bytes scale with K, not H.

What the families vary, each an argument of the module (never a branch on the family):
    scale      head_dim^-0.5, or query_pre_attn_scalar^-0.5 (Gemma-2/3)
    softcap    cap * tanh(score / cap) before the mask (Gemma-2)
    window     sliding-window mask; the layer's cache then keeps only W keys (cache.py)
    pos_bias   an additive score bias from key positions (ALiBi, Bloom)
    q/k norm   per-head norms before RoPE (Qwen3, Gemma-3, Phi, StableLM)
    qkv_clip   clamp q, k, v after the projections (OLMo)

Two backends compute the same attention (`set_attention_backend`):
    eager   written out below: scores, cap, bias, mask, float32 softmax. The reference, and what
            transformers' eager path computes op for op.
    sdpa    torch.nn.functional.scaled_dot_product_attention: fused, never materialises float32
            probabilities for every layer (what training needs). It cannot soft-cap, so a
            soft-capped layer stays on the eager path. Agreement: tests/reference/test_attention.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import ConfigError
from .cache import KVBuffer, RingKVBuffer
from .positions import Step, attention_mask
from .rope import apply_rope

BACKENDS = ("eager", "sdpa")


def causal_mask(t: int, s: int, start: int, window: int | None, device) -> torch.Tensor:
    """Boolean (T, S) mask for queries at start..start+T-1 over keys at 0..S-1 (see positions.attention_mask)."""
    return attention_mask(torch.arange(start, start + t, device=device), torch.arange(s, device=device), window)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    causal: bool = False,
    backend: str = "eager",
) -> torch.Tensor:
    """Grouped scaled-dot-product attention.

    q (B, H, T, hd_qk), k (B, K, S, hd_qk), v (B, K, S, hd_v) -> (B, H, T, hd_v), H a multiple of K.
    mask: bool (T, S), or per row (B, 1, T, S), True = may attend (None = all); bias: additive (H, T or 1, S), or
    per row (B, H, 1, S), added after scaling.
    causal: the mask is the plain causal triangle with S == T (Step.causal); sdpa then passes
    `is_causal` instead of the mask, which skips the masked half (eager reads the mask as always).
    """
    if backend == "sdpa" and softcap is None:
        return _attend_sdpa(q, k, v, scale=scale, mask=mask, bias=bias, causal=causal)
    if backend not in BACKENDS:
        raise ConfigError(f"attention backend must be one of {', '.join(BACKENDS)}; found {backend!r}")
    b, h, t, _ = q.shape
    n_kv, s = k.shape[1], k.shape[2]
    g = h // n_kv
    q = rearrange(q, "b (k g) t d -> b k (g t) d", k=n_kv)  # (B, K, G*T, hd): a group's heads as rows
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, K, G*T, S)
    if softcap is not None:  # Gemma-2: bound the logits smoothly to (-cap, cap)
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(b, n_kv, g, t, s)  # (B, K, G, T, S)
    if bias is not None:  # (H, T or 1, S) -> (K, G, T or 1, S) broadcast over B; per row (B, H, 1, S) -> (B, K, G, 1, S)
        scores = scores + (bias.view(n_kv, g, -1, s) if bias.dim() == 3 else bias.view(b, n_kv, g, -1, s))
    if mask is not None:  # (T, S), or per row (B, 1, T, S) -> (B, 1, 1, T, S)
        scores = scores.masked_fill(~(mask if mask.dim() == 2 else mask[:, :, None]), float("-inf"))
    # softmax in (at least) float32, as transformers does
    probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype)
    out = probs.view(b, n_kv, g * t, s) @ v  # (B, K, G*T, hd_v)
    return rearrange(out, "b k (g t) d -> b (k g) t d", g=g)  # (B, H, T, hd_v)


def _attend_sdpa(q, k, v, *, scale: float, mask, bias, causal: bool) -> torch.Tensor:
    """The same attention through torch's fused kernel (mask and bias become one additive float mask)."""
    enable_gqa = q.shape[1] != k.shape[1]
    if causal and bias is None:  # a prompt's triangle: SDPA skips the masked half (docs/performance.md)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa)
    attn_mask = mask  # (T, S) or (B, 1, T, S)
    if bias is not None:
        bias = bias if bias.dim() == 4 else bias[None]  # (1 or B, H, T or 1, S)
        attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=enable_gqa)


class Attention(nn.Module):
    """Multi-head causal self-attention with n_kv_heads key/value heads.

    Args:
        dim: model width D.
        n_heads, n_kv_heads, head_dim: H, K, hd (n_heads % n_kv_heads == 0).
        qkv_bias: biases on the q/k/v projections (Qwen2); out_bias: on the output projection.
        q_norm, k_norm: optional per-head norms over hd applied before RoPE (QK-norm).
        rope_layout: "half" or "interleaved" (see rope.py); rope_fp32: rotate in float32 (OLMo).
        rope_key: which of the model's RoPE tables this layer reads ("global" / "local"); RoPE is
            skipped when the step has no such table (learned positions, ALiBi).
        scale: softmax scale (None -> hd^-0.5); softcap: tanh cap on the scores.
        window: sliding window W (None: full causal); pos_bias: e.g. `ALiBi(n_heads)`.
        qkv_clip: clamp q, k, v to [-clip, clip] (OLMo).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        qkv_bias: bool = False,
        out_bias: bool = False,
        q_norm: nn.Module | None = None,
        k_norm: nn.Module | None = None,
        rope_layout: str = "half",
        rope_fp32: bool = False,
        rope_key: str = "global",
        scale: float | None = None,
        softcap: float | None = None,
        window: int | None = None,
        pos_bias: nn.Module | None = None,
        qkv_clip: float | None = None,
    ):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.wq = nn.Linear(dim, n_heads * head_dim, bias=qkv_bias)  # D -> H*hd
        self.wk = nn.Linear(dim, n_kv_heads * head_dim, bias=qkv_bias)  # D -> K*hd
        self.wv = nn.Linear(dim, n_kv_heads * head_dim, bias=qkv_bias)  # D -> K*hd
        self.wo = nn.Linear(n_heads * head_dim, dim, bias=out_bias)  # H*hd -> D
        self.q_norm, self.k_norm = q_norm, k_norm
        self.rope_layout, self.rope_fp32, self.rope_key = rope_layout, rope_fp32, rope_key
        self.scale = head_dim**-0.5 if scale is None else scale
        self.softcap, self.window, self.pos_bias, self.qkv_clip = softcap, window, pos_bias, qkv_clip
        self.backend = "eager"

    def forward(self, x: torch.Tensor, step: Step, cache: KVBuffer | RingKVBuffer | None = None) -> torch.Tensor:
        """x (B, T, D) at positions step.start.. -> (B, T, D); with a cache, the past is read from it."""
        q, k, v = self.wq(x), self.wk(x), self.wv(x)  # (B, T, H*hd), (B, T, K*hd) x 2
        if self.qkv_clip is not None:
            q, k, v = (t.clamp(-self.qkv_clip, self.qkv_clip) for t in (q, k, v))
        q = rearrange(q, "b t (h d) -> b h t d", d=self.head_dim)  # (B, H, T, hd)
        k = rearrange(k, "b t (k d) -> b k t d", d=self.head_dim)  # (B, K, T, hd)
        v = rearrange(v, "b t (k d) -> b k t d", d=self.head_dim)  # (B, K, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        rope = step.rope(self.rope_key)
        if rope is not None:
            q, k = (apply_rope(t, *rope, self.rope_layout, fp32=self.rope_fp32) for t in (q, k))
        k_pos = None  # None: keys sit at positions 0..S-1
        if cache is not None:
            k, v, k_pos = cache.update(k, v, step.start)  # (B, K, S, hd) with S = keys kept + T
        mask = step.mask(k_pos, k.shape[2], self.window)
        causal = step.causal(k_pos, k.shape[2], self.window)
        bias = None
        if self.pos_bias is not None:
            slots = k_pos if k_pos is not None else torch.arange(k.shape[2], device=x.device)
            bias = self.pos_bias(step.key_positions(slots), q.dtype)  # (H, 1, S), or (B, H, 1, S) with padding
        out = attend(q, k, v, scale=self.scale, mask=mask, bias=bias, softcap=self.softcap, causal=causal,
                     backend=self.backend)  # fmt: skip
        return self.wo(rearrange(out, "b h t d -> b t (h d)"))  # (B, T, D)

    def new_cache(self, batch: int, capacity: int, dtype, device) -> KVBuffer | RingKVBuffer:
        """A full cache, or for a sliding-window layer a ring of the last W keys (never more than capacity)."""
        if self.window is not None and self.window < capacity:
            return RingKVBuffer(batch, self.n_kv_heads, self.window, capacity, self.head_dim, dtype, device)
        return KVBuffer(batch, self.n_kv_heads, capacity, self.head_dim, self.head_dim, dtype, device)

    def cache_values_per_token(self) -> int:
        """Numbers stored per token in this layer's cache: K and V for each KV head."""
        return 2 * self.n_kv_heads * self.head_dim

    def cache_values(self, context: int) -> int:
        """Numbers this layer's cache holds for `context` tokens: a sliding window stops growing at W."""
        return self.cache_values_per_token() * (context if self.window is None else min(context, self.window))

    def extra_repr(self) -> str:
        extras = [f"heads={self.n_heads}", f"kv_heads={self.n_kv_heads}", f"head_dim={self.head_dim}"]
        extras += [f"{k}={v}" for k, v in (("window", self.window), ("softcap", self.softcap)) if v is not None]
        return ", ".join(extras)


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """Every module of `model` that attends (has a `backend`)."""
    return [m for m in model.modules() if hasattr(m, "backend") and hasattr(m, "new_cache")]


def set_attention_backend(model: nn.Module, backend: str) -> str:
    """Make every attention layer of `model` use `backend` ("eager" | "sdpa"); returns the previous one."""
    if backend not in BACKENDS:
        raise ConfigError(f"attention backend must be one of {', '.join(BACKENDS)}; found {backend!r}")
    layers = attention_layers(model)
    previous = layers[0].backend if layers else "eager"
    for layer in layers:
        layer.backend = backend
    return previous
