# %% [markdown]
# # 02 · Norms
#
# **Goal.** Know the five normalisation layers small language models use (LayerNorm, RMSNorm, Gemma's
# RMSNorm with weight (1 + w), Nemotron's LayerNorm1P and OLMo's parameter-free LayerNorm), what each one
# removes from a vector, and why the *order* of its float32/bfloat16 casts matters.
#
# **Assumes.** Lesson 01 (a block norms its input before attention and the FFN); mean and variance.
#
# **You will see** (each one is an `assert` below):
# - LayerNorm gives every position mean 0 and variance 1; RMSNorm gives root-mean-square 1 and keeps the mean;
# - each of tinyslm's norms equals transformers' module to 1e-6 in float32, and bit for bit in bfloat16;
# - both are invariant to scaling the input; only LayerNorm is invariant to shifting it;
# - Gemma's (1 + w) is RMSNorm with weight 1 + w; eps caps the gain at 1/sqrt(eps) (a knee at |x| ~ sqrt(eps)).
#
# **Sources.**
# Ba et al., *Layer Normalization* (2016), https://arxiv.org/abs/1607.06450 ·
# Zhang & Sennrich, *Root Mean Square Layer Normalization* (2019), https://arxiv.org/abs/1910.07467 ·
# Groeneveld et al., *OLMo* (2024), https://arxiv.org/abs/2402.00838 ·
# Gemma Team, *Gemma* (2024), https://arxiv.org/abs/2403.08295 ·
# transformers' `LlamaRMSNorm`, https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py
# and `GemmaRMSNorm`, https://github.com/huggingface/transformers/blob/main/src/transformers/models/gemma/modeling_gemma.py
# (its comment links the bfloat16 discussion, https://github.com/huggingface/transformers/pull/29402)

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import math

import matplotlib.pyplot as plt
import torch
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.nemotron.modeling_nemotron import NemotronLayerNorm1P
from transformers.models.olmo.modeling_olmo import OlmoLayerNorm

from tinyslm.course import FAST, lesson02, show
from tinyslm.layers.norms import NORM_CLASSES, make_norm

torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)

# %% [markdown]
# ## What a norm does to one position
#
# A norm acts on each position's vector `x` of width D on its own (the last dim), never across positions.
# With μ the mean and σ² the variance of the D numbers:
#
# | config name | formula | used by |
# |---|---|---|
# | `layernorm` | w · (x − μ) / sqrt(σ² + eps) + b | GPT-2, OPT, Pythia, Phi-2 |
# | `rmsnorm` | w · x / sqrt(mean(x²) + eps) | Llama, Qwen, Mistral, SmolLM |
# | `rmsnorm_1p` | (1 + w) · x / sqrt(mean(x²) + eps) | Gemma 1, 2, 3 |
# | `layernorm_1p` | LayerNorm with weight (1 + w) | Nemotron / Minitron |
# | `layernorm_plain` | (x − μ) / sqrt(σ² + eps), nothing learned | OLMo (the first) |
#
# `make_norm(kind, D, eps)` builds the one a config names. Each starts as the identity scaling: w = 1, or
# w = 0 for the "1p" kinds, which apply 1 + w. Their parameter counts differ: D for a weight alone, 2D for a
# weight and a bias, nothing for OLMo's.

# %%
D = 64
norms = {kind: make_norm(kind, D, eps=1e-5) for kind in NORM_CLASSES}
for kind, norm in norms.items():
    print(f"{kind:<16} {type(norm).__name__:<15} {sum(p.numel() for p in norm.parameters()):>4} parameters")
assert [sum(p.numel() for p in n.parameters()) for n in norms.values()] == [D, D, 2 * D, 2 * D, 0]

# %% [markdown]
# Take 200 positions whose vectors have different means and scales, and look at each position's mean and
# root-mean-square (rms) before and after. LayerNorm moves every point to (0, 1); RMSNorm only fixes the
# rms, so the means stay spread (scaled down with their vector).

# %%
n_pos = 200
means = 2 * torch.randn(n_pos, 1, generator=gen)
scales = torch.exp(torch.randn(n_pos, 1, generator=gen))
x = means + scales * torch.randn(n_pos, D, generator=gen)  # (positions, D)


def rms(t):
    return t.pow(2).mean(-1).sqrt()  # (..., D) -> (...)


with torch.no_grad():
    outs = {"input": x, **{kind: norms[kind](x) for kind in ("rmsnorm", "layernorm", "layernorm_plain")}}

fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), sharex=True, sharey=True)
for ax, (name, t) in zip(axes, outs.items()):
    ax.scatter(t.mean(-1), rms(t), s=6)
    ax.set_title(name)
    ax.set_xlabel("mean over D")
axes[0].set_ylabel("rms over D")
axes[0].set_yscale("log")
show(fig)

# exactly 1 up to eps: variance var / (var + eps), rms sqrt(ms / (ms + eps)) (ms = mean(x^2), 1e-5 beside ~0.01..100)
var_in, ms_in = x.double().var(-1, unbiased=False), x.double().pow(2).mean(-1)
for kind in ("layernorm", "layernorm_plain"):
    out = outs[kind].double()
    assert out.mean(-1).abs().max() < 1e-5
    assert torch.allclose(out.var(-1, unbiased=False), var_in / (var_in + 1e-5), atol=1e-5)
assert torch.allclose(rms(outs["rmsnorm"].double()), (ms_in / (ms_in + 1e-5)).sqrt(), atol=1e-5)
assert outs["rmsnorm"].mean(-1).abs().max() > 0.5  # the mean is not removed

# %% [markdown]
# ## The same modules as transformers'
#
# tinyslm writes its norms itself; transformers has one class per family. With random weights (so that a
# forgotten weight or bias would show), each pair agrees to 1e-6 in float32. transformers uses torch's own
# `nn.LayerNorm` for GPT-2-style models.

# %%
pairs = {
    "rmsnorm": LlamaRMSNorm(D, eps=1e-5),
    "rmsnorm_1p": GemmaRMSNorm(D, eps=1e-5),
    "layernorm": torch.nn.LayerNorm(D, eps=1e-5),
    "layernorm_1p": NemotronLayerNorm1P(D, eps=1e-5),
    "layernorm_plain": OlmoLayerNorm(D),  # OLMo's eps is fixed at 1e-5
}
with torch.no_grad():
    for kind, theirs in pairs.items():
        ours = norms[kind]
        for p in ours.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen) + (1.0 if kind in ("rmsnorm", "layernorm") else 0.0))
        theirs.load_state_dict(ours.state_dict())  # same names: weight (and bias)
        diff = (ours(x) - theirs(x)).abs().max().item()
        print(f"{kind:<16} vs {type(theirs).__name__:<19} max |diff| = {diff:.2e}")
        assert diff <= 1e-6

# %% [markdown]
# ## bfloat16: where the cast happens
#
# Models run in bfloat16, which keeps 8 significant bits (7 stored). The statistics are computed in float32 either way;
# what differs is *when* the result is rounded back to bfloat16. Llama rounds the normalised x and then
# multiplies by w in bfloat16; Gemma multiplies by (1 + w) in float32 and rounds once at the end. Both
# orders are reasonable, they are not the same function, and a reimplementation must follow the checkpoint's
# own to match it bit for bit. Below: tinyslm equals transformers exactly (`torch.equal`) for every norm,
# and the "other" order for Llama's RMSNorm differs in a good fraction of the elements.

# %%
xb = x.bfloat16()
with torch.no_grad():
    for kind, theirs in pairs.items():
        ours_b = make_norm(kind, D, eps=1e-5).bfloat16()
        ours_b.load_state_dict(norms[kind].state_dict())  # the float32 weights, rounded to bfloat16
        theirs_b = theirs.bfloat16()
        assert torch.equal(ours_b(xb), theirs_b(xb)), kind
    llama = make_norm("rmsnorm", D, eps=1e-5).bfloat16()
    llama.load_state_dict(norms["rmsnorm"].state_dict())
    xf = xb.float()
    other_order = (llama.weight.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).bfloat16()
    differ = (other_order != llama(xb)).float().mean().item()
print(f"multiplying by w before rounding changes {100 * differ:.0f}% of the bfloat16 outputs")
assert differ > 0.05

# %% [markdown]
# ## Invariances
#
# Multiply a position's vector by c > 0: both norms give the same output (up to float rounding with eps = 0;
# eps matters only for vectors whose rms is near sqrt(eps), see below). So the residual stream may grow
# through the layers without changing what the next sub-layer sees. Add a constant to every entry: LayerNorm
# removes it, RMSNorm does not. RMSNorm skips the mean, which saves work, and Zhang & Sennrich report that
# models train as well without it.

# %%
rmsnorm, layernorm = make_norm("rmsnorm", D, eps=0.0), make_norm("layernorm", D, eps=0.0)  # eps = 0: exact
with torch.no_grad():
    for c in (0.5, 3.0, 40.0):
        assert torch.allclose(rmsnorm(c * x), rmsnorm(x), atol=1e-4)
        assert torch.allclose(layernorm(c * x), layernorm(x), atol=1e-4)
    assert torch.allclose(layernorm(x + 5.0), layernorm(x), atol=1e-4)
    assert not torch.allclose(rmsnorm(x + 5.0), rmsnorm(x), atol=1e-2)

# %% [markdown]
# ## Gemma's (1 + w)
#
# Gemma stores the weight zero-centred and applies 1 + w. It is the same function as RMSNorm with weight
# 1 + w, in float32; what changes is the stored number (a checkpoint's w ≈ 0 means "scale 1", and weight decay
# pulls towards that scale instead of towards 0). Loading a Gemma checkpoint into a plain RMSNorm would
# silently scale every activation by w instead of 1 + w.

# %%
w = 0.2 * torch.randn(D, generator=gen)
gemma, plain = make_norm("rmsnorm_1p", D, 1e-6), make_norm("rmsnorm", D, 1e-6)
with torch.no_grad():
    gemma.weight.copy_(w)
    plain.weight.copy_(1 + w)
    assert torch.allclose(gemma(x), plain(x), atol=1e-6, rtol=1e-6)
    assert torch.equal(make_norm("rmsnorm_1p", D, 1e-6)(x), make_norm("rmsnorm", D, 1e-6)(x))  # at initialisation

# %% [markdown]
# ## What eps does
#
# eps keeps the division finite for an all-zero vector. It also caps the gain: a vector whose rms is s comes
# out with rms s / sqrt(s² + eps). Far above sqrt(eps) that is 1; at s = sqrt(eps) it is exactly 1/√2, and
# below it the norm stops normalising and passes small vectors through, scaled by 1/sqrt(eps).

# %%
signs = torch.where(torch.randn(D, generator=gen) > 0, 1.0, -1.0)  # (D,), rms exactly 1
n_scales = 25 if FAST else 81
scales = torch.logspace(-6, 1, n_scales)
fig, ax = plt.subplots(figsize=(6, 3.5))
for eps in (1e-6, 1e-5):
    norm = make_norm("rmsnorm", D, eps)
    with torch.no_grad():
        out_rms = torch.stack([rms(norm(s * signs)) for s in scales])
        at_knee = rms(norm(math.sqrt(eps) * signs)).item()
    ax.plot(scales, out_rms, label=f"eps = {eps:g}")
    ax.axvline(math.sqrt(eps), color="gray", lw=0.5)
    assert abs(at_knee - 1 / math.sqrt(2)) < 1e-5
    assert abs(out_rms[-1].item() - 1) < 1e-5
ax.set_xscale("log")
ax.set_xlabel("rms of the input vector")
ax.set_ylabel("rms of RMSNorm's output")
ax.legend()
show(fig)

# %% [markdown]
# ## Exercise 1: RMSNorm
#
# Write `rms_norm(x, weight, eps)` as Llama computes it: the statistics in float32, the normalised x cast back
# to x's dtype, then times `weight`. The checker compares it with tinyslm's `RMSNorm` and transformers'
# `LlamaRMSNorm`, including inputs so small that the place of eps decides the answer, and bfloat16 inputs,
# compared bit for bit, where the order of the casts decides it.

# %%
def rms_norm(x, weight, eps):
    # x: (..., D), weight: (D,) -> (..., D)
    raise NotImplementedError  # your code here


lesson02.check_rms_norm(rms_norm)

# %% [markdown]
# ## Exercise 2: Gemma's RMSNorm
#
# Write `rms_norm_1p(x, weight, eps)`: the weight is stored zero-centred and applied as (1 + weight), in
# float32, before the result is cast back to x's dtype. Its bfloat16 cases are compared bit for bit too.

# %%
def rms_norm_1p(x, weight, eps):
    # x: (..., D), weight: (D,) zero-centred -> (..., D)
    raise NotImplementedError  # your code here


lesson02.check_rms_norm_1p(rms_norm_1p)
