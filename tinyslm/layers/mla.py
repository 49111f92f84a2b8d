"""Multi-head latent attention (MLA, DeepSeek-V2 2024; also MiniCPM3): a cache of one small latent per token.

Legend: B batch, T new positions, S all key positions (cache + new), D model width, H heads,
r kv_lora_rank (latent width), rq q_lora_rank, dn qk_nope_head_dim, dr qk_rope_head_dim,
dv v_head_dim, dqk = dn + dr (query/key width per head).

GQA shrinks the KV cache by sharing K/V heads; MLA instead stores, per token and layer, one
latent c (r values) from which every head's key and value are *re-expanded*, plus one RoPE key
k_pe (dr values) shared by all heads. DeepSeek-V2-Lite: 512 + 64 = 576 values per token and
layer, where caching the expanded per-head keys and values would take H*(dqk + dv) = 16*(192 + 128)
= 5120.

    x ─┬─ q:   wq (or wq_b . q_norm . wq_a, "query LoRA") ──> per head [q_nope (dn) | q_pe (dr)]
       │                                                                          │ RoPE
       └─ kv:  wkv_a ──> [c (r) | k_pe (dr)]                                      │
                          │       └── RoPE ── one key shared by all heads ──┐     │
                       kv_norm                                              │     │
                          └── CACHE: [c | k_pe], r + dr values per token ───┤     │
                                   wkv_b: c -> per head [k_nope (dn) | v (dv)]    │
            score_h = q_nope_h . k_nope_h + q_pe_h . k_pe      (scale dqk^-0.5 x YaRN mscale^2)
            out     = wo( concat_h softmax(score_h) @ v_h )

Why the RoPE part is split off ("decoupled RoPE"): a rotation depends on the position, so a key
that carries it cannot be folded into a position-free up-projection. Keeping RoPE on a separate,
small, shared key lets the rest of the key stay a linear function of the latent.

Two exact ways to attend over the cached latents (choose with `set_decode_path`):

    naive     expand every cached latent through wkv_b into per-head K, V, then ordinary attention
              (transformers' DeepseekV2Attention does this). Cost per call ~ S*r*H*(dn+dv) for
              the expansion, recomputed at every decoding step, + T*S*H*(dqk+dv) for attention.
    absorbed  fold wkv_b into the query and the output:  q_nope . (W_uk c) = (W_uk^T q_nope) . c
              and  sum_s p_s (W_uv c_s) = W_uv (sum_s p_s c_s). Attention then runs *in latent
              space*: every head attends to the cache itself - it is MQA with a single key head
              [c | k_pe] of width r + dr whose first r columns double as the value. No expansion;
              cost ~ T*S*H*(2r + dr) + T*H*r*(dn+dv).
    auto      whichever needs fewer multiply-adds for this call's T new and S total positions.

The two costs differ by  naive - absorbed = H*r*(dn+dv)*(S-T) - T*S*H*(2r-dn-dv):  naive expands the S - T
cached latents it did not just compute, absorbed attends with a wider head. Where each wins: decoding one token
(T = 1) at a long context S, naive re-expands all S latents every step (DeepSeek-V2-Lite: ~2.1M multiply-adds
per cached token per layer) while absorbed does ~17K: absorbed wins by two orders of magnitude. A prompt over
an empty cache (T = S) has nothing to re-expand, and the absorbed attention is wider (2r + dr = 1088 vs
dqk + dv = 320 per head): naive wins at every length. A chunk of T new tokens after a long cache (S >> T)
is absorbed's while T < r*(dn+dv) / (2r-dn-dv) (`crossover_tokens`, ~171 for Lite).
Both give the same numbers up to float rounding (tests/reference/test_mla.py).

The RoPE layout is the checkpoint family's: DeepSeek-V2 weights pair dims (2i, 2i+1)
("interleaved", the config says so), MiniCPM3 pairs (i, i + dr/2) ("half").
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from einops import rearrange
from torch import nn

from ..errors import ConfigError
from .attention import attend
from .cache import LayerCache
from .norms import RMSNorm
from .positions import Step
from .rope import apply_rope, rope_type_of, yarn_factor, yarn_mscale

DECODE_PATHS = ("naive", "absorbed", "auto")

# q_a_layernorm / kv_a_layernorm are built without an eps argument in transformers 5.23
# (DeepseekV2RMSNorm(dim), MiniCPM3RMSNorm(dim)), so they use the class default 1e-6 whatever
# rms_norm_eps says (MiniCPM3's rms_norm_eps is 1e-5).
LATENT_NORM_EPS = 1e-6


def mla_softmax_scale(config) -> float:
    """dqk^-0.5, times mscale(factor, mscale_all_dim)^2 when the RoPE is scaled and mscale_all_dim is set.

    The rule of transformers' `yarn_apply_mscale` (DeepSeek-V2): YaRN stretches the positions
    and compensates the attention temperature; with mscale == mscale_all_dim the cos/sin factor is
    1 and the whole correction lands here (DeepSeek-V2-Lite: 192^-0.5 * 1.2608^2 = 0.114721).
    """
    scale = (config.qk_nope_head_dim + config.qk_rope_head_dim) ** -0.5
    scaling = config.rope_scaling or {}
    mscale_all_dim = scaling.get("mscale_all_dim") or 0
    if rope_type_of(config.rope_scaling) != "default" and mscale_all_dim:
        m = yarn_mscale(yarn_factor(scaling, config.max_seq_len), mscale_all_dim)
        scale = scale * m * m
    return scale


class MLACache(LayerCache):
    """One layer's MLA cache: latent (B, S, r + dr) = [normed c | roped k_pe] per token.

    That is all MLA keeps: no per-head keys or values. Both decode paths read the same tensor.
    """

    def __init__(self, batch: int, capacity: int, kv_lora_rank: int, rope_dim: int, dtype, device):
        self.capacity = capacity
        self.latent = torch.zeros(batch, capacity, kv_lora_rank + rope_dim, dtype=dtype, device=device)

    def update(self, latent: torch.Tensor, start: int) -> torch.Tensor:
        """Store latent (B, T, r + dr) at positions start..start+T; return everything so far (B, S, r + dr)."""
        end = self.check_room(start, latent.shape[1])
        self.latent[:, start:end] = latent
        return self.latent[:, :end]

    def tensors(self) -> list[torch.Tensor]:
        return [self.latent]


class MLAttention(nn.Module):
    """Multi-head latent attention with a decoupled, shared RoPE key (transformers' DeepseekV2Attention).

    Args:
        dim: model width D.
        n_heads: H.
        kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim: r, dn, dr, dv.
        q_lora_rank: rq for a low-rank query (D -> rq -> RMSNorm -> H*dqk); None for one projection.
        softmax_scale: see `mla_softmax_scale`.
        rope_layout: "half" or "interleaved" (see rope.py); the checkpoint family decides.
        bias: biases on the down-projections (wq_a, wkv_a), as HF's `attention_bias` sets them;
            wq, wq_b and wkv_b never have one (which is what makes absorption exact).
        out_bias: bias on wo (None -> same as `bias`).
        latent_norm_eps: eps of q_norm and kv_norm.
        decode: "naive", "absorbed" or "auto" (module docstring).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        *,
        kv_lora_rank: int,
        qk_nope_head_dim: int,
        qk_rope_head_dim: int,
        v_head_dim: int,
        q_lora_rank: int | None = None,
        softmax_scale: float | None = None,
        rope_layout: str = "half",
        bias: bool = False,
        out_bias: bool | None = None,
        latent_norm_eps: float = LATENT_NORM_EPS,
        decode: str = "naive",
    ):
        super().__init__()
        self.n_heads, self.kv_lora_rank, self.q_lora_rank = n_heads, kv_lora_rank, q_lora_rank
        self.dn, self.dr, self.dv = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        dqk = qk_nope_head_dim + qk_rope_head_dim
        if q_lora_rank is None:
            self.wq = nn.Linear(dim, n_heads * dqk, bias=False)  # D -> H*dqk
        else:
            self.wq_a = nn.Linear(dim, q_lora_rank, bias=bias)  # D -> rq
            self.q_norm = RMSNorm(q_lora_rank, latent_norm_eps)
            self.wq_b = nn.Linear(q_lora_rank, n_heads * dqk, bias=False)  # rq -> H*dqk
        self.wkv_a = nn.Linear(dim, kv_lora_rank + qk_rope_head_dim, bias=bias)  # D -> r + dr
        self.kv_norm = RMSNorm(kv_lora_rank, latent_norm_eps)
        self.wkv_b = nn.Linear(kv_lora_rank, n_heads * (qk_nope_head_dim + v_head_dim), bias=False)  # r -> H*(dn+dv)
        self.wo = nn.Linear(n_heads * v_head_dim, dim, bias=bias if out_bias is None else out_bias)  # H*dv -> D
        self.scale = dqk**-0.5 if softmax_scale is None else softmax_scale
        self.rope_layout = rope_layout
        self.decode = decode
        self.backend = "eager"  # or "sdpa" (attention.set_attention_backend)

    @classmethod
    def from_config(cls, config) -> "MLAttention":
        return cls(
            config.dim,
            config.n_heads,
            kv_lora_rank=config.kv_lora_rank,
            qk_nope_head_dim=config.qk_nope_head_dim,
            qk_rope_head_dim=config.qk_rope_head_dim,
            v_head_dim=config.v_head_dim,
            q_lora_rank=config.q_lora_rank,
            softmax_scale=mla_softmax_scale(config),
            rope_layout=config.rope_layout,
            bias=config.qkv_bias,
            out_bias=config.out_bias,
        )

    # ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, step: Step, cache: MLACache | None = None) -> torch.Tensor:
        """x (B, T, D) at positions step.start.. -> (B, T, D); the RoPE table is the step's "global" one (T, dr)."""
        q = self.wq(x) if self.q_lora_rank is None else self.wq_b(self.q_norm(self.wq_a(x)))  # (B, T, H*dqk)
        q = rearrange(q, "b t (h d) -> b h t d", h=self.n_heads)  # (B, H, T, dqk)
        q_nope, q_pe = q.split([self.dn, self.dr], dim=-1)  # (B, H, T, dn), (B, H, T, dr)

        c, k_pe = self.wkv_a(x).split([self.kv_lora_rank, self.dr], dim=-1)  # (B, T, r), (B, T, dr)
        c = self.kv_norm(c)  # (B, T, r)
        cos, sin = step.rope("global")
        q_pe = apply_rope(q_pe, cos, sin, self.rope_layout)  # (B, H, T, dr)
        k_pe = apply_rope(k_pe[:, None], cos, sin, self.rope_layout)[:, 0]  # (B, T, dr): one head for all

        latent = torch.cat((c, k_pe), dim=-1)  # (B, T, r + dr): what the cache keeps
        if cache is not None:
            latent = cache.update(latent, step.start)  # (B, S, r + dr)
        mask = step.mask(None, latent.shape[1], None)  # (T, S) causal, or None for one new token
        causal = step.causal(None, latent.shape[1], None)  # a prompt from position 0 (attend's flag)
        if self._path(x.shape[1], latent.shape[1]) == "absorbed":
            out = self._attend_absorbed(q_nope, q_pe, latent, mask, causal)
        else:
            out = self._attend_naive(q_nope, q_pe, latent, mask, causal)
        return self.wo(rearrange(out, "b h t d -> b t (h d)"))  # (B, T, D)

    def _attend_naive(self, q_nope, q_pe, latent, mask, causal) -> torch.Tensor:
        """Expand the latents into H keys and values, then ordinary attention with K = H heads."""
        c, k_pe = latent.split([self.kv_lora_rank, self.dr], dim=-1)  # (B, S, r), (B, S, dr)
        kv = rearrange(self.wkv_b(c), "b s (h d) -> b h s d", h=self.n_heads)  # (B, H, S, dn + dv)
        k_nope, v = kv.split([self.dn, self.dv], dim=-1)  # (B, H, S, dn), (B, H, S, dv)
        k_pe = k_pe[:, None].expand(-1, self.n_heads, -1, -1)  # (B, H, S, dr): the shared key, every head
        k = torch.cat((k_nope, k_pe), dim=-1)  # (B, H, S, dqk)
        q = torch.cat((q_nope, q_pe), dim=-1)  # (B, H, T, dqk)
        return attend(q, k, v, scale=self.scale, mask=mask, causal=causal, backend=self.backend)  # (B, H, T, dv)

    def _attend_absorbed(self, q_nope, q_pe, latent, mask, causal) -> torch.Tensor:
        """Attend in latent space: MQA over the cache itself, with wkv_b folded into q and the output."""
        w = rearrange(self.wkv_b.weight, "(h d) r -> h d r", h=self.n_heads)  # (H, dn + dv, r)
        w_uk, w_uv = w.split([self.dn, self.dv], dim=1)  # (H, dn, r), (H, dv, r)
        q_latent = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)  # (B, H, T, r): W_uk^T q_nope
        q = torch.cat((q_latent, q_pe), dim=-1)  # (B, H, T, r + dr)
        k = latent[:, None]  # (B, 1, S, r + dr): a single key head shared by all H query heads
        v = latent[:, None, :, : self.kv_lora_rank]  # (B, 1, S, r): the latent is the value
        out = attend(q, k, v, scale=self.scale, mask=mask, causal=causal, backend=self.backend)  # (B, H, T, r)
        return torch.einsum("bhtr,hvr->bhtv", out, w_uv)  # (B, H, T, dv): W_uv applied once, after

    def _path(self, t: int, s: int) -> str:
        """The path for T = t new positions over S = s in all: "auto" compares the two costs (module docstring)."""
        if self.decode == "auto":
            wider = 2 * self.kv_lora_rank - self.dn - self.dv
            return "absorbed" if self.kv_lora_rank * (self.dn + self.dv) * (s - t) > t * s * wider else "naive"
        if self.decode not in DECODE_PATHS:
            raise ConfigError(f"MLA decode path must be one of {', '.join(DECODE_PATHS)}; found {self.decode!r}")
        return self.decode

    def crossover_tokens(self) -> float:
        """New tokens per call above which naive needs fewer multiply-adds than absorbed, over a cache much longer
        than the call (S >> T): r(dn+dv)/(2r-dn-dv)."""
        wider = 2 * self.kv_lora_rank - self.dn - self.dv
        return float("inf") if wider <= 0 else self.kv_lora_rank * (self.dn + self.dv) / wider

    # ------------------------------------------------------------------------------------
    def new_cache(self, batch: int, capacity: int, dtype, device) -> MLACache:
        return MLACache(batch, capacity, self.kv_lora_rank, self.dr, dtype, device)

    def cache_values_per_token(self) -> int:
        """Numbers stored per token in this layer's cache: the latent and the shared RoPE key."""
        return self.kv_lora_rank + self.dr

    def cache_values(self, context: int) -> int:
        return self.cache_values_per_token() * context

    def extra_repr(self) -> str:
        return f"heads={self.n_heads}, decode={self.decode!r}, rope_layout={self.rope_layout!r}, scale={self.scale:.6g}"


# ----------------------------------------------------------------------------------------
def mla_layers(model: nn.Module) -> list[MLAttention]:
    return [m for m in model.modules() if isinstance(m, MLAttention)]


def set_decode_path(model: nn.Module, path: str) -> str:
    """Make every MLA layer of `model` attend by `path` ("naive" | "absorbed" | "auto"); returns the previous one."""
    if path not in DECODE_PATHS:
        raise ConfigError(f"MLA decode path must be one of {', '.join(DECODE_PATHS)}; found {path!r}")
    layers = mla_layers(model)
    if not layers:
        kind = getattr(getattr(model, "config", None), "attention", "?")
        raise ConfigError(f"this model has no MLA layers (attention={kind!r}); a decode path applies to MLA only")
    previous = layers[0].decode
    for layer in layers:
        layer.decode = path
    return previous


@contextmanager
def decode_path(model: nn.Module, path: str) -> Iterator[Any]:
    """`with decode_path(model, "absorbed"): tinyslm.generate(model, ...)` - restored afterwards."""
    previous = set_decode_path(model, path)
    try:
        yield model
    finally:
        set_decode_path(model, previous)
