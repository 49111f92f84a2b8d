# %% [markdown]
# # 04 · MHA, GQA and MQA: how many key/value heads
#
# **Goal.** See that multi-head (MHA), grouped-query (GQA) and multi-query (MQA) attention are one
# computation that differs only in how many key/value heads the query heads share, and that the
# KV cache shrinks by exactly that sharing factor.
#
# **Assumes.** Lessons 01-03 (the causal LM, norms, RoPE); scaled dot-product attention
# (softmax(q k^T / sqrt(hd)) v); PyTorch tensors and `nn.Linear`.
#
# **You will see** (each is an `assert`):
# - GQA equals MHA whose key/value projections are the GQA ones, each repeated for its group (to 1e-6);
# - tinyslm's eager attention equals its SDPA backend, and a tiny transformers Llama with GQA gives the
#   same logits as tinyslm after a save/load round trip;
# - KV-cache bytes shrink by exactly heads / kv_heads, by `tinyslm.tools.stats.model_stats`, by the cache
#   tensors' own `nbytes`, and by the closed form 2 x layers x kv_heads x head_dim x tokens x bytes.
#
# **Sources.**
# - Vaswani et al. 2017, *Attention Is All You Need* (MHA): https://arxiv.org/abs/1706.03762
# - Shazeer 2019, *Fast Transformer Decoding: One Write-Head is All You Need* (MQA): https://arxiv.org/abs/1911.02150
# - Ainslie et al. 2023, *GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
#   Checkpoints*: https://arxiv.org/abs/2305.13245
# - transformers' Llama attention and `repeat_kv`:
#   https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py
# - SmolLM-135M's config.json (9 query heads, 3 KV heads): https://huggingface.co/HuggingFaceTB/SmolLM-135M/blob/main/config.json

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import tempfile

import matplotlib.pyplot as plt
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from tinyslm.course import lesson04, show
from tinyslm.layers.attention import Attention, set_attention_backend
from tinyslm.layers.positions import Step
from tinyslm.layers.rope import RotaryEmbedding
from tinyslm.tools.stats import model_stats
from tinyslm.tools.variants import derive

torch.manual_seed(0)
torch.set_num_threads(1)  # models this small gain nothing from more threads; on a busy machine threads wait
transformers.utils.logging.disable_progress_bar()

# %% [markdown]
# ## Who shares what
#
# With H query heads and K key/value heads, each KV head serves a group of G = H / K consecutive query
# heads: query head h reads KV head h // G. MHA is K = H (G = 1), MQA is K = 1 (G = H), GQA anything in
# between that divides H. The picture below draws the three for H = 8.

# %%
H = 8
layouts = {"MHA (K = 8)": 8, "GQA (K = 2)": 2, "MQA (K = 1)": 1}
fig, axes = plt.subplots(1, 3, figsize=(11, 2.6))
for ax, (name, k) in zip(axes, layouts.items()):
    g = H // k
    for h in range(H):
        ax.plot([h, (h // g) * g + (g - 1) / 2], [1, 0], color=f"C{h // g}", lw=2)  # query h -> its KV head
    ax.scatter(range(H), [1] * H, s=160, c=[f"C{h // g}" for h in range(H)], zorder=3)
    ax.scatter([j * g + (g - 1) / 2 for j in range(k)], [0] * k, s=320, marker="s", c=[f"C{j}" for j in range(k)],
               zorder=3)  # fmt: skip
    ax.set_title(name)
    ax.set_yticks([0, 1], ["kv heads", "q heads"])
    ax.set_xticks([])
    ax.set_ylim(-0.4, 1.4)
fig.tight_layout()
show(fig)

for name, k in layouts.items():  # the same in text: which query heads read each KV head
    g = H // k
    print(f"{name:12s}", "  ".join(f"kv{j}<-q{j * g}..q{j * g + g - 1}" if g > 1 else f"kv{j}<-q{j}" for j in range(k)))

# %% [markdown]
# ## One module for all three
#
# `tinyslm.layers.attention.Attention(dim, n_heads, n_kv_heads, head_dim)` projects x to H query heads but
# only K key and value heads: `wk` and `wv` are (K·hd, D) instead of (H·hd, D). A `Step` carries the
# positions and RoPE tables of one forward call.

# %%
D, hd, T = 64, 8, 12
K = 2
G = H // K
rope = RotaryEmbedding(hd, 10000.0, None, 128)
step = Step.with_rope({"global": rope}, start=0, length=T, device="cpu")  # positions 0..T-1, cos/sin tables

gqa = Attention(D, n_heads=H, n_kv_heads=K, head_dim=hd)
print(gqa)
print("wq", tuple(gqa.wq.weight.shape), " wk", tuple(gqa.wk.weight.shape), " wv", tuple(gqa.wv.weight.shape))
x = torch.randn(2, T, D)  # (B, T, D)
with torch.no_grad():
    y_gqa = gqa(x, step)  # (B, T, D)
print("output", tuple(y_gqa.shape))

# %% [markdown]
# ## GQA is MHA with repeated key/value heads
#
# Build an MHA layer (K = H) and give it the GQA layer's weights, with each of the K key (and value)
# projections copied G times, in the order query heads read them. The outputs agree to rounding: GQA
# *is* MHA with tied key/value heads. What GQA saves is computing and storing those copies. tinyslm never
# makes them: `attend` folds each group's G query heads into rows of one matmul against their one KV head.

# %%
mha = Attention(D, n_heads=H, n_kv_heads=H, head_dim=hd)
with torch.no_grad():
    mha.wq.weight.copy_(gqa.wq.weight)
    mha.wo.weight.copy_(gqa.wo.weight)
    for name in ("wk", "wv"):
        w = getattr(gqa, name).weight.view(K, hd, D)  # (K, hd, D): one block of rows per KV head
        getattr(mha, name).weight.copy_(w.repeat_interleave(G, dim=0).reshape(H * hd, D))  # (H*hd, D)
    y_mha = mha(x, step)
print("max |MHA - GQA| =", (y_mha - y_gqa).abs().max().item())
assert torch.allclose(y_mha, y_gqa, atol=1e-6)

# the wrong order (tiling kv0 kv1 kv0 kv1 ... instead of kv0 kv0 kv0 kv0 kv1 ...) is a different model
with torch.no_grad():
    for name in ("wk", "wv"):
        w = getattr(gqa, name).weight.view(K, hd, D)
        getattr(mha, name).weight.copy_(w.repeat(G, 1, 1).reshape(H * hd, D))
    y_tiled = mha(x, step)
print("max |tiled MHA - GQA| =", (y_tiled - y_gqa).abs().max().item())
assert not torch.allclose(y_tiled, y_gqa, atol=1e-3)

# %% [markdown]
# ## Two backends, one attention
#
# `set_attention_backend(module, "sdpa")` switches every attention layer to torch's fused
# `scaled_dot_product_attention` (it takes the grouped K heads as they are: `enable_gqa`); "eager" is the
# written-out reference. They agree to float32 rounding, for a prompt and for decoding with a cache.

# %%
previous = set_attention_backend(gqa, "sdpa")
with torch.no_grad():
    y_sdpa = gqa(x, step)
set_attention_backend(gqa, previous)
print(f"backend was {previous!r}; max |sdpa - eager| =", (y_sdpa - y_gqa).abs().max().item())
assert torch.allclose(y_sdpa, y_gqa, atol=1e-5)

# decoding: positions 0..T-2 as a prompt, then position T-1 alone, reading the past from a KV cache
for backend in ("eager", "sdpa"):
    set_attention_backend(gqa, backend)
    buffer = gqa.new_cache(2, T, torch.float32, "cpu")  # keys and values: (B, K, T, hd) each, K = 2 heads wide
    with torch.no_grad():
        gqa(x[:, :-1], Step.with_rope({"global": rope}, start=0, length=T - 1, device="cpu"), buffer)
        last = gqa(x[:, -1:], Step.with_rope({"global": rope}, start=T - 1, length=1, device="cpu"), buffer)
    print(f"{backend}: cache keys {tuple(buffer.k.shape)}, max |cached last position - full| =",
          (last - y_gqa[:, -1:]).abs().max().item())  # fmt: skip
    assert torch.allclose(last, y_gqa[:, -1:], atol=1e-5)  # (B, 1, D)
set_attention_backend(gqa, "eager")

# %% [markdown]
# ## The same GQA in transformers
#
# A tiny random Llama with 8 query heads and 2 KV heads, built from transformers' `LlamaConfig` (nothing
# downloaded) and its weights perturbed, saved to a temporary folder and loaded by `tinyslm.load_pretrained`:
# the two give the same logits, under both of tinyslm's backends.

# %%
hf_config = LlamaConfig(vocab_size=97, hidden_size=D, intermediate_size=96, num_hidden_layers=2, num_attention_heads=H,
                        num_key_value_heads=K, max_position_embeddings=128)  # fmt: skip
hf = LlamaForCausalLM(hf_config).eval()
with torch.no_grad():
    for p in hf.parameters():  # move every weight off its init (norms off 1), so that a mix-up would show
        p.add_(torch.randn(p.shape) * 0.05)
with tempfile.TemporaryDirectory() as folder:
    hf.save_pretrained(folder)
    model = tinyslm.load_pretrained(folder)
print(model.config.attention, "heads", model.config.n_heads, "kv heads", model.config.n_kv_heads)
ids = torch.randint(0, 97, (2, T))  # (B, T)
with torch.no_grad():
    want = hf(ids).logits  # (B, T, V)
    for backend in ("eager", "sdpa"):
        set_attention_backend(model, backend)
        got = model(ids)
        print(f"{backend}: max |tinyslm - transformers| = {(got - want).abs().max().item():.2e}")
        assert torch.allclose(got, want, atol=1e-5)

# %% [markdown]
# ## What it buys: the KV cache
#
# Decoding keeps every past token's key and value in every layer: 2 x layers x K x hd numbers per token.
# MHA, GQA and MQA versions of one model (SmolLM-135M's shape: 30 layers, 9 query heads of 64 dims) differ
# only in K, so their caches differ by exactly H / K. `model_stats` counts it on the meta device (nothing
# allocated); a real `new_cache` on a small model shows the same in its tensors' `nbytes`.
# `tinyslm.tools.variants.derive(config, "mha" | "gqa" | "mqa", n_kv_heads=...)` builds the three variants
# of one config, changing the attention and nothing else.

# %%
smollm = tinyslm.ModelConfig(name="smollm-135m-shape", vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
                             ffn_dim=1536, max_seq_len=2048, tie_embeddings=True)  # fmt: skip
context = 2048
rows = {}
for k in (9, 3, 1):
    variant = derive(smollm, {9: "mha", 3: "gqa", 1: "mqa"}[k], n_kv_heads=k)
    stats = model_stats(variant, dtype=torch.bfloat16, context=context)
    rows[k] = stats
    print(f"K = {k}: {stats.kv_cache_bytes_at_context / 2**20:7.1f} MiB of bf16 cache at {context} tokens, "
          f"{stats.parameters / 1e6:.1f} M parameters")  # fmt: skip
    assert stats.kv_cache_bytes_at_context == 2 * 30 * k * 64 * context * 2  # 2 x L x K x hd x tokens x bytes
for k in (3, 1):
    assert rows[9].kv_cache_bytes_at_context == rows[k].kv_cache_bytes_at_context * (9 // k)  # exactly H / K

fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(["MHA\nK=9", "GQA\nK=3", "MQA\nK=1"], [rows[k].kv_cache_bytes_at_context / 2**20 for k in (9, 3, 1)])
ax.set_ylabel(f"KV cache at {context} tokens (MiB, bf16)")
ax.set_title("SmolLM-135M's shape with 9, 3 or 1 KV heads")
fig.tight_layout()
show(fig)

# %%
small = tinyslm.ModelConfig(vocab_size=97, dim=D, n_layers=2, n_heads=H, ffn_dim=96, max_seq_len=128)
tokens = 100
nbytes = {}
for k in (8, 2, 1):
    variant = derive(small, {8: "mha", 2: "gqa", 1: "mqa"}[k], n_kv_heads=k)
    cache = tinyslm.CausalLM(variant).new_cache(batch=1, capacity=tokens)
    first = cache[0].tensors()[0]  # layer 0's keys: (B, K, S, hd)
    nbytes[k] = sum(t.nbytes for layer in cache.layers for t in layer.tensors())
    print(f"K = {k}: keys of layer 0 {tuple(first.shape)}, whole cache {nbytes[k]:,} bytes")
    assert first.shape == (1, k, tokens, hd)
    assert nbytes[k] == cache.nbytes == 2 * small.n_layers * k * hd * tokens * first.element_size()
assert nbytes[8] == 4 * nbytes[2] == 8 * nbytes[1]  # heads / kv_heads

# %% [markdown]
# GQA also trims parameters: `wk` and `wv` shrink from H·hd x D to K·hd x D. For SmolLM's shape that is a
# small change in the total; the cache, which grows with every token, is where the factor H / K counts.

# %%
for k in (3, 1):
    saved = rows[9].breakdown["attention"] - rows[k].breakdown["attention"]
    assert saved == 30 * 2 * (9 - k) * 64 * 576  # layers x (wk + wv) x removed heads x hd x D
    print(f"K = {k}: {saved / 1e6:.2f} M fewer attention parameters")

# %% [markdown]
# ## Exercises
#
# **1. `repeat_kv`.** Write transformers' `repeat_kv`: given keys or values of shape (B, K, S, hd) and
# `n_rep` = G, return (B, K·G, S, hd) where head h is KV head h // G. The checker compares it with
# transformers' own, and checks that MHA attention over your repeated heads equals tinyslm's grouped attention.

# %%
def repeat_kv(x, n_rep):
    # x: (B, K, S, hd) -> (B, K * n_rep, S, hd)
    raise NotImplementedError  # your code here


lesson04.check_repeat_kv(repeat_kv)

# %% [markdown]
# **2. Causal attention by hand.** Given q, k, v of shape (B, H, T, hd), return
# softmax(q k^T / sqrt(hd) + mask) v, where the mask lets position i see keys 0..i only.

# %%
def causal_attention(q, k, v):
    # q, k, v: (B, H, T, hd) -> (B, H, T, hd)
    raise NotImplementedError  # your code here


lesson04.check_causal_attention(causal_attention)
