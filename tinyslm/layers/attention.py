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

head_dim is independent of D / H (Qwen3-0.6B: D=1024, H=16, hd=128).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .cache import KVBuffer
from .rope import apply_rope


def causal_mask(t: int, s: int, start: int, window: int | None, device) -> torch.Tensor:
    """Boolean (T, S): True where query at position start+i may attend key at position j.

    Causal: j <= start+i. With a sliding window W (Mistral / Gemma-2 / Phi-3): also j > start+i-W,
    i.e. each query sees its last W keys including itself.
    """
    q_pos = torch.arange(start, start + t, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(s, device=device)[None, :]  # (1, S)
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= k_pos > q_pos - window
    return allowed


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    start: int,
    softcap: float | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Grouped scaled-dot-product attention, written out.

    q (B, H, T, hd_qk), k (B, K, S, hd_qk), v (B, K, S, hd_v) -> (B, H, T, hd_v), H a multiple of K.
    """
    b, h, t, _ = q.shape
    n_kv, s = k.shape[1], k.shape[2]
    g = h // n_kv
    q = rearrange(q, "b (k g) t d -> b k (g t) d", k=n_kv)  # (B, K, G*T, hd): a group's heads as rows
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, K, G*T, S)
    if softcap is not None:  # Gemma-2: bound the logits smoothly to (-cap, cap)
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(b, n_kv, g, t, s)  # (B, K, G, T, S)
    if t > 1 or window is not None:  # a single new token with a full cache sees every key
        mask = causal_mask(t, s, start, window, q.device)  # (T, S)
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = F.softmax(scores.float(), dim=-1).to(v.dtype)  # softmax in float32, as transformers does
    out = probs.view(b, n_kv, g * t, s) @ v  # (B, K, G*T, hd_v)
    return rearrange(out, "b k (g t) d -> b (k g) t d", g=g)  # (B, H, T, hd_v)


class Attention(nn.Module):
    """Multi-head causal self-attention with n_kv_heads key/value heads and RoPE.

    Args:
        dim: model width D.
        n_heads, n_kv_heads, head_dim: H, K, hd (n_heads % n_kv_heads == 0).
        qkv_bias: biases on the q/k/v projections (Qwen2).
        out_bias: bias on the output projection.
        q_norm, k_norm: optional per-head norms over hd applied before RoPE (Qwen3's QK-norm).
        rope_layout: "half" or "interleaved" (see rope.py).
        softcap: optional tanh cap on attention logits (Gemma-2); sliding_window: optional window.
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
        softcap: float | None = None,
        sliding_window: int | None = None,
    ):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.wq = nn.Linear(dim, n_heads * head_dim, bias=qkv_bias)  # D -> H*hd
        self.wk = nn.Linear(dim, n_kv_heads * head_dim, bias=qkv_bias)  # D -> K*hd
        self.wv = nn.Linear(dim, n_kv_heads * head_dim, bias=qkv_bias)  # D -> K*hd
        self.wo = nn.Linear(n_heads * head_dim, dim, bias=out_bias)  # H*hd -> D
        self.q_norm, self.k_norm = q_norm, k_norm
        self.rope_layout, self.softcap, self.sliding_window = rope_layout, softcap, sliding_window
        self.scale = head_dim**-0.5

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D)
        rope: tuple[torch.Tensor, torch.Tensor],  # cos, sin (T, d)
        start: int = 0,  # position of x's first token
        cache: KVBuffer | None = None,
    ) -> torch.Tensor:
        q = rearrange(self.wq(x), "b t (h d) -> b h t d", d=self.head_dim)  # (B, H, T, hd)
        k = rearrange(self.wk(x), "b t (k d) -> b k t d", d=self.head_dim)  # (B, K, T, hd)
        v = rearrange(self.wv(x), "b t (k d) -> b k t d", d=self.head_dim)  # (B, K, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin, self.rope_layout), apply_rope(k, cos, sin, self.rope_layout)
        if cache is not None:
            k, v = cache.update(k, v, start)  # (B, K, S, hd) with S = start + T
        out = attend(q, k, v, scale=self.scale, start=start, softcap=self.softcap, window=self.sliding_window)
        return self.wo(rearrange(out, "b h t d -> b t (h d)"))  # (B, T, D)

    def new_cache(self, batch: int, capacity: int, dtype, device) -> KVBuffer:
        return KVBuffer(batch, self.n_kv_heads, capacity, self.head_dim, self.head_dim, dtype, device)

    def cache_values_per_token(self) -> int:
        """Numbers stored per token in this layer's cache: K and V for each KV head."""
        return 2 * self.n_kv_heads * self.head_dim
