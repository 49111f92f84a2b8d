# %% [markdown]
# # 03 · Rotary position embeddings (RoPE)
#
# **Goal.** See how RoPE tells attention where tokens are by *rotating* queries and keys, why the result
# depends only on how far apart two tokens are, how the two pair layouts of real checkpoints relate, and what
# the context-extension schemes (linear, NTK/dynamic, Llama 3, YaRN, LongRoPE) do to its frequencies.
#
# **Assumes.** Lesson 01 (attention scores are dot products of queries and keys); 2-D rotations
# (cos/sin), complex numbers help but are not needed.
#
# **You will see** (each one is an `assert` below):
# - a rotation keeps a vector's length; the score q·k depends only on the offset: shifting both positions by
#   the same amount changes it by less than 1e-5;
# - a token's score with itself is largest at offset 0 and decays with the offset: its mean |score| over offsets
#   256..511 is under 0.6 times the mean over offsets 1..63;
# - split-half (HF Llama) and interleaved (Meta, llama.cpp) RoPE give the same scores once the q/k weight
#   rows are permuted as llama.cpp's GGUF converter does;
# - tinyslm's frequencies under every scaling scheme equal transformers' `ROPE_INIT_FUNCTIONS`, and each
#   scheme keeps or stretches the frequency bands it says it does.
#
# **Sources.**
# Su et al., *RoFormer* (2021), https://arxiv.org/abs/2104.09864 ·
# Chen et al., *Position Interpolation* (2023), https://arxiv.org/abs/2306.15595 ·
# Peng et al., *YaRN* (2023), https://arxiv.org/abs/2309.00071 ·
# Ding et al., *LongRoPE* (2024), https://arxiv.org/abs/2402.13753 ·
# Llama Team, AI @ Meta, *The Llama 3 Herd of Models* (2024), https://arxiv.org/abs/2407.21783 ·
# transformers' `modeling_rope_utils.py`, https://github.com/huggingface/transformers/blob/main/src/transformers/modeling_rope_utils.py ·
# llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel.permute`), https://github.com/ggml-org/llama.cpp/blob/master/convert_hf_to_gguf.py

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import math

import matplotlib.pyplot as plt
import torch
import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tinyslm.course import FAST, lesson03, show
from tinyslm.layers.rope import RotaryEmbedding, apply_rope, compute_inv_freq, permute

torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
transformers.logging.set_verbosity_error()

# %% [markdown]
# ## Rotating pairs of dimensions
#
# A head of width hd is cut into hd/2 pairs of numbers. Pair i of the query (and key) at position m is
# rotated by the angle m · θ_i, with θ_i = theta^(-2i/hd) (theta = 10,000 in most models): pair 0 turns by one
# radian per position, the last pair by 1.3e-4 here. `RotaryEmbedding` turns positions into the tables
# cos(m θ_i) and sin(m θ_i); `apply_rope` rotates. Below, one pair traced over 40 positions, for a fast and a
# slow frequency: each point moves on a circle, its length never changes.

# %%
hd, theta = 64, 10000.0
rope = RotaryEmbedding(hd, theta, None, max_seq_len=4096)
print("inv_freq", tuple(rope.inv_freq.shape), "from", rope.inv_freq[0].item(), "to", rope.inv_freq[-1].item())

positions = torch.arange(40)
cos, sin = rope(positions)  # (T, hd) each: the hd/2 angles, written twice (once per half)
x = torch.randn(hd, generator=gen)
x_all = x.expand(1, 1, len(positions), hd)  # (B=1, H=1, T, hd): the same vector at every position
rotated = apply_rope(x_all, cos, sin)[0, 0]  # (T, hd)
assert torch.allclose(rotated.norm(dim=-1), x.norm().expand(len(positions)), rtol=1e-6)

fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, i in zip(axes, (0, 12)):
    a, b = rotated[:, i], rotated[:, i + hd // 2]  # split-half layout: dims i and i + hd/2 are a pair
    ax.plot(a, b, "o-", ms=3)
    ax.plot(a[:1], b[:1], "r*", ms=12, label="position 0")
    ax.set_aspect("equal")
    ax.set_title(f"pair {i}: {rope.inv_freq[i].item():.3g} rad per position")
    ax.legend(loc="lower right")
show(fig)

# %% [markdown]
# ## Scores depend only on the offset
#
# Rotate q by m θ and k by n θ: their dot product is that of q and k rotated by (m − n) θ. So the score of a
# query at position m and a key at n is a function of m − n alone: no absolute position leaks into attention.
# Shift both by s and the score stays the same, up to float32 rounding of the angles (unit vectors here, so
# the tolerance is relative).

# %%
q = torch.randn(hd, generator=gen)
k = torch.randn(hd, generator=gen)
q, k = q / q.norm(), k / k.norm()


def score(m, n):
    """q at position m against k at position n, after RoPE."""
    cq, sq = rope(torch.tensor([m]))
    ck, sk = rope(torch.tensor([n]))
    return (apply_rope(q.view(1, 1, 1, hd), cq, sq) * apply_rope(k.view(1, 1, 1, hd), ck, sk)).sum().item()


for m, n in [(3, 0), (10, 4), (0, 7), (5, 5)]:
    for shift in (1, 10, 100, 1000):
        assert abs(score(m + shift, n + shift) - score(m, n)) < 1e-5, (m, n, shift)
assert abs(score(5, 5) - (q @ k).item()) < 1e-6  # the same position: no rotation between them at all

# %% [markdown]
# How the score varies with the offset: for q = k (a token matching itself), the score is largest at offset
# 0 and, summed over many frequencies, tends to shrink as the offset grows (the RoFormer paper's "long-term
# decay"), with ripples from the fast pairs. The asserts: nothing beats offset 0, and the mean |score| over
# offsets 256..511 is well under (less than 0.6 times) the mean over offsets 1..63.

# %%
offsets = torch.arange(0, 512 if FAST else 2048)
ones = torch.ones(1, 1, 1, hd) / math.sqrt(hd)  # unit vector, every pair alike
c0, s0 = rope(torch.tensor([0]))
co, so = rope(offsets)
self_scores = (apply_rope(ones.expand(1, 1, len(offsets), hd), co, so) * apply_rope(ones, c0, s0)).sum(-1)[0, 0]
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(offsets, self_scores)
ax.set_xlabel("offset m − n (positions)")
ax.set_ylabel("q·k after RoPE (q = k)")
show(fig)
assert abs(self_scores[0].item() - 1) < 1e-6 and self_scores[1:].max() < self_scores[0]
near, far = self_scores[1:64].abs().mean(), self_scores[256:512].abs().mean()
print(f"mean |score|: offsets 1..63 {near:.3f}, offsets 256..511 {far:.3f}")
assert far < 0.6 * near  # the long-term decay

# %% [markdown]
# ## Two layouts of the same pairs
#
# Which dims form a pair is a convention of the checkpoint, not of RoPE:
#
# - **split-half** (GPT-NeoX, every HF Llama/Qwen checkpoint): dims i and i + hd/2, via `rotate_half`;
# - **interleaved** (Meta's original Llama code, llama.cpp, DeepSeek-V2): dims 2i and 2i + 1, a complex product.
#
# The two are the same model if the q and k projections' output rows are reordered within each head, so
# that row i + hd/2 of an HF head sits next to row i. llama.cpp's converter does exactly that when it writes a
# GGUF; `tinyslm.layers.rope.permute` is that reordering. Below, a q projection in both layouts: the rotated
# queries are the same numbers reordered, and the attention scores are equal.

# %%
D, H, T = 128, 2, 6
Wq = torch.randn(H * hd, D, generator=gen) / math.sqrt(D)  # HF layout: (H*hd, D) rows
Wk = torch.randn(H * hd, D, generator=gen) / math.sqrt(D)
Wq_gguf, Wk_gguf = permute(Wq, H), permute(Wk, H)  # rows reordered within each head
x = torch.randn(1, T, D, generator=gen)  # (B, T, D)
cos, sin = rope(torch.arange(T))


def heads(t):  # (B, T, H*hd) -> (B, H, T, hd)
    return t.view(1, T, H, hd).transpose(1, 2)


q_half = apply_rope(heads(x @ Wq.T), cos, sin, layout="half")
k_half = apply_rope(heads(x @ Wk.T), cos, sin, layout="half")
q_inter = apply_rope(heads(x @ Wq_gguf.T), cos, sin, layout="interleaved")
k_inter = apply_rope(heads(x @ Wk_gguf.T), cos, sin, layout="interleaved")

order = permute(torch.arange(hd), 1)  # interleaved dim j holds split-half dim order[j]
print("interleaved dims hold split-half dims", order[:8].tolist(), "...")
assert torch.allclose(q_inter, q_half[..., order], atol=1e-5)
assert torch.allclose(q_inter @ k_inter.transpose(-1, -2), q_half @ k_half.transpose(-1, -2), atol=1e-5)
q_wrong = apply_rope(heads(x @ Wq.T), cos, sin, layout="interleaved")  # HF weights, interleaved rotation
assert not torch.allclose(q_wrong @ k_inter.transpose(-1, -2), q_half @ k_half.transpose(-1, -2), atol=1e-2)

# %% [markdown]
# ## Stretching the context: what the scaling schemes do
#
# A model trained on 512 positions has only ever seen angles m θ_i with m < 512. Pairs whose wavelength
# 2π/θ_i is shorter than that have seen every angle; the slow pairs (long wavelengths) have not. The schemes
# that extend a context change θ_i:
#
# - **linear** (position interpolation): every θ_i / factor, positions squeezed into the trained range;
# - **dynamic** (NTK-aware): theta itself grows once the sequence passes the trained length; pair 0 stays
#   put, and the higher a pair's frequency, the less it moves: the slow pairs are interpolated the most;
# - **llama3**: slow pairs / factor, fast pairs untouched, a smooth ramp between;
# - **yarn**: the same idea with a ramp set by rotation counts, and cos/sin multiplied by an attention factor;
# - **longrope**: one searched stretch per pair, a short list within the trained length and a long list past it.
#
# tinyslm's `compute_inv_freq` holds them; transformers' `ROPE_INIT_FUNCTIONS` is the reference.

# %%
original, factor, extended = 512, 8.0, 4096
schemes = {
    "linear": ({"rope_type": "linear", "factor": factor}, original, None),
    "dynamic": ({"rope_type": "dynamic", "factor": factor}, original, extended),  # at 4096 positions
    "llama3": ({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": original}, extended, None),
    "yarn": ({"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}, extended, None),
    "longrope": ({"rope_type": "longrope", "factor": factor, "original_max_position_embeddings": original,
                  "short_factor": [1.0 + 0.02 * i for i in range(hd // 2)],
                  "long_factor": [1.0 + (factor - 1) * i / (hd // 2 - 1) for i in range(hd // 2)]}, extended, extended),
}  # fmt: skip
default, _ = compute_inv_freq(hd, theta, None, original)
inv_freqs, factors = {}, {}
for name, (scaling, max_len, seq_len) in schemes.items():
    ours, attention_factor = compute_inv_freq(hd, theta, scaling, max_len, seq_len=seq_len)
    hf = LlamaConfig(hidden_size=H * hd, num_attention_heads=H, max_position_embeddings=max_len,
                     rope_parameters={**scaling, "rope_theta": theta})  # fmt: skip
    theirs, their_factor = ROPE_INIT_FUNCTIONS[name](hf, "cpu", seq_len=seq_len)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0), name
    assert abs(attention_factor - their_factor) < 1e-9, name
    inv_freqs[name], factors[name] = ours, attention_factor
    print(f"{name:<9} attention factor {attention_factor:.4f}")

fig, ax = plt.subplots(figsize=(8, 4.5))
pair = torch.arange(hd // 2)
ax.plot(pair, default, "k-", lw=2.5, label="default")
for name, f in inv_freqs.items():
    ax.plot(pair, f, ".-", label=name)
ax.axhline(2 * math.pi / original, color="gray", ls=":", label="one turn in 512 positions")
ax.set_yscale("log")
ax.set_xlabel("pair i")
ax.set_ylabel("θ_i (radians per position)")
ax.legend(fontsize=8)
show(fig)

# %% [markdown]
# What each one keeps, as identities:

# %%
fast, slow = 0, hd // 2 - 1  # pair 0 turns by 1 rad per position; the last turns once in ~47,000 positions
assert torch.allclose(inv_freqs["linear"], default / factor, rtol=1e-6)
assert torch.allclose(compute_inv_freq(hd, theta, schemes["dynamic"][0], original, seq_len=original)[0], default)
ratio = inv_freqs["dynamic"] / default  # 1 at pair 0, then falling: the slower the pair, the more it is slowed
assert bool((ratio[1:] < ratio[:-1]).all()) and bool((ratio <= 1).all())
for name in ("llama3", "yarn"):  # fast pairs kept, slow pairs interpolated by the full factor
    assert torch.allclose(inv_freqs[name][fast], default[fast], rtol=1e-6), name
    assert torch.allclose(inv_freqs[name][slow], default[slow] / factor, rtol=1e-6), name
assert abs(factors["yarn"] - (0.1 * math.log(factor) + 1)) < 1e-12
long_list = torch.tensor(schemes["longrope"][0]["long_factor"])
assert torch.allclose(inv_freqs["longrope"], default / long_list, rtol=1e-6)
short = compute_inv_freq(hd, theta, schemes["longrope"][0], extended, seq_len=original)[0]
assert torch.allclose(short, default / torch.tensor(schemes["longrope"][0]["short_factor"]), rtol=1e-6)

# %% [markdown]
# ## Exercise 1: the frequencies
#
# Write `rope_inv_freq(d, theta)`: the d/2 default frequencies θ_i = theta^(-2i/d), i = 0 .. d/2 − 1, as a
# tensor. The checker compares with tinyslm's `compute_inv_freq` and transformers' default RoPE.

# %%
def rope_inv_freq(d, theta):
    # d (even), theta -> (d/2,)
    raise NotImplementedError  # your code here


lesson03.check_rope_inv_freq(rope_inv_freq)

# %% [markdown]
# ## Exercise 2: the rotation
#
# Write `apply_rotary(x, cos, sin)` in the split-half form: with x = [a | b] (its two halves), the result is
# x · cos + [−b | a] · sin. `cos` and `sin` are `RotaryEmbedding`'s `(T, d)` tables (each angle written once
# per half). The checker compares with tinyslm's `apply_rope` and transformers' `apply_rotary_pos_emb`.

# %%
def apply_rotary(x, cos, sin):
    # x: (B, H, T, d), cos/sin: (T, d) -> (B, H, T, d)
    raise NotImplementedError  # your code here


lesson03.check_apply_rotary(apply_rotary)
