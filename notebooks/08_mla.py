# %% [markdown]
# # 08 · Multi-head latent attention (MLA)
#
# **Goal.** Understand DeepSeek-V2's multi-head latent attention: a KV cache of one small latent per token
# from which every head's key and value are re-expanded, and the two exact ways to attend over it (expand the
# latents, or absorb the up-projection into the query), with what each costs.
#
# **Assumes.** Lesson 04 (MHA/GQA/MQA), lesson 03 (RoPE), lesson 06 (the KV cache); matrix products.
#
# **You will see** (each one asserted):
# - the cache holds kv_lora_rank + qk_rope_head_dim numbers per token and layer, whatever the number of heads:
#   in the cache tensors, in `model.cache_values_per_token()` and in `model_stats`;
# - decoding token by token on the naive path and on the absorbed path gives the same logits (to 1e-5);
# - the difference between the two paths' multiply-adds, written as formulas here, is exactly the difference
#   torch counts when the model runs; the `"auto"` path runs whichever costs less;
# - absorbed wins decoding and short chunks after a long cache (below `MLAttention.crossover_tokens()`), naive
#   wins longer chunks and every prompt that starts from an empty cache;
# - a tiny random DeepSeek-V2 from transformers, loaded into tinyslm, gives transformers' logits on both paths.
#
# **Sources.**
# - DeepSeek-AI 2024, *DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model*:
#   https://arxiv.org/abs/2405.04434 (section 2.1: low-rank key-value joint compression, decoupled RoPE)
# - DeepSeek-V2-Lite's config: https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite
# - transformers' DeepSeek-V2: https://github.com/huggingface/transformers/blob/main/src/transformers/models/deepseek_v2/modeling_deepseek_v2.py

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import tempfile

import matplotlib.pyplot as plt
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinyslm import CausalLM, ModelConfig
from tinyslm.course import FAST, lesson08, show
from tinyslm.layers.mla import MLACache, MLAttention, set_decode_path
from tinyslm.tools.stats import model_stats
from tinyslm.tools.variants import derive

torch.manual_seed(0)

# %% [markdown]
# ## 1. What MLA caches
#
# Names (DeepSeek-V2's): H heads, r = `kv_lora_rank` (the latent's width), dn = `qk_nope_head_dim` and
# dr = `qk_rope_head_dim` (each head's query/key is [dn position-free | dr rotated] wide), dv = `v_head_dim`.
#
# Each token is projected down to one latent c (r numbers) and one RoPE key k_pe (dr numbers, shared by all
# heads). Both are cached. A head's key and value are then `wkv_b(c)` split per head into k_nope (dn) and
# v (dv): they are functions of the cached latent, so they need not be cached. The RoPE part is split off
# because a rotation depends on the position and could not be folded into a position-free projection.
#
# A tiny model with DeepSeek-V2-Lite's proportions (r = 4·dn, dr = dn/2; dv != dn here on purpose, so that a
# dn/dv mix-up shows):

# %%
H, r, dn, dr, dv = 4, 32, 8, 4, 12
config = ModelConfig(vocab_size=128, dim=64, n_layers=2, n_heads=H, attention="mla", kv_lora_rank=r,
                     qk_nope_head_dim=dn, qk_rope_head_dim=dr, v_head_dim=dv, ffn_dim=96, rope_layout="interleaved",
                     max_seq_len=256)  # fmt: skip
model = CausalLM(config).init_weights(std=0.1, seed=0).eval()

S = 16
cache = model.new_cache(batch=1, capacity=S)
assert all(isinstance(layer, MLACache) for layer in cache.layers)
print("one layer's cache:", tuple(cache[0].latent.shape), "= (B, S, r + dr)")
assert cache[0].latent.shape == (1, S, r + dr)  # [normed c | roped k_pe] per token, no per-head tensor

per_layer = r + dr
expanded = H * (dn + dr + dv)  # what caching every head's key and value would take
assert model.cache_values_per_token() == config.n_layers * per_layer
assert model_stats(config).kv_cache_values_per_token == config.n_layers * per_layer
print(f"per token and layer: {per_layer} numbers cached, instead of {expanded} for the expanded keys and values")

# %% [markdown]
# At DeepSeek-V2-Lite's size (16 heads, r = 512, dn = 128, dr = 64, dv = 128, 27 layers) the saving is the
# paper's point. `model_stats` counts on the meta device, so nothing of that size is allocated:

# %%
lite = ModelConfig(vocab_size=102400, dim=2048, n_layers=27, n_heads=16, attention="mla", kv_lora_rank=512,
                   qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, ffn_dim=10944,
                   rope_layout="interleaved", max_seq_len=32768)  # fmt: skip  (dense FFN: MoE is not modelled)
lite_stats = model_stats(lite, torch.bfloat16, context=32768)
lite_expanded = 16 * (128 + 64 + 128)
print(f"DeepSeek-V2-Lite: {512 + 64} cached vs {lite_expanded} expanded per token and layer "
      f"({lite_expanded / 576:.1f}x); {lite_stats.kv_cache_bytes_at_context / 2**30:.2f} GiB at 32K tokens in bf16")  # fmt: skip
assert lite_stats.kv_cache_values_per_token == 27 * 576
assert lite_stats.kv_cache_bytes_at_context == 27 * 576 * 32768 * 2

# %% [markdown]
# The same comparison across all four attention types, on one shape: `derive` makes the MHA, GQA, MQA and MLA
# variants of one config (lesson 04 met the first three), and `model_stats` gives each one's cache at each
# context. Every line is straight: a cache grows by the same bytes with every token, and only that slope differs.

# %%
base = ModelConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
                   max_seq_len=8192)  # fmt: skip  (SmolLM-135M's shape)
variants = {"MHA": derive(base, "mha"), "GQA (K=3)": derive(base, "gqa", n_kv_heads=3), "MQA": derive(base, "mqa"),
            "MLA": derive(base, "mla")}  # fmt: skip
contexts = [512, 1024, 2048, 4096, 8192]
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, variant in variants.items():
    per_token = model_stats(variant, torch.bfloat16).kv_cache_bytes_per_token
    sizes = [model_stats(variant, torch.bfloat16, context=c).kv_cache_bytes_at_context for c in contexts]
    assert sizes == [per_token * c for c in contexts]  # linear in the context
    ax.plot(contexts, [b / 2**20 for b in sizes], marker="o", label=f"{name}: {per_token / 1024:.1f} KiB/token")
mla = variants["MLA"]
assert model_stats(mla, torch.bfloat16).kv_cache_bytes_per_token == mla.n_layers * (
    mla.kv_lora_rank + mla.qk_rope_head_dim) * 2  # the latent and the shared RoPE key, in bf16
ax.set(xlabel="context (tokens)", ylabel="KV cache (MiB, bf16)", title="one shape, four attention types")
ax.legend(fontsize=8)
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 2. Two exact ways to attend: naive and absorbed
#
# **Naive** (what transformers does): expand every cached latent through `wkv_b` into H keys and values, then
# ordinary attention.
#
# **Absorbed**: the score of head h is q_nope·(W_uk c) + q_pe·k_pe, and q_nope·(W_uk c) = (W_ukᵀ q_nope)·c.
# So fold W_uk into the query once, and attend directly over the cache: it becomes MQA with a single key head
# [c | k_pe] of width r + dr, whose first r columns also serve as the value; W_uv is applied once, after the
# weighted sum. Nothing is expanded.
#
# `set_decode_path(model, "naive" | "absorbed" | "auto")` picks the path. Decode 12 tokens, one at a time, on
# each, and compare every step:

# %%
ids = torch.randint(0, config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))  # (1, 12)


def decode_logits(path: str) -> torch.Tensor:
    """Logits of each position, computed one token at a time through the latent cache on `path`."""
    set_decode_path(model, path)
    cache = model.new_cache(1, ids.shape[1])
    with torch.no_grad():
        return torch.cat([model(ids[:, t : t + 1], cache) for t in range(ids.shape[1])], dim=1)  # (1, 12, V)


naive, absorbed = decode_logits("naive"), decode_logits("absorbed")
scale = naive.abs().max().item()
print(f"logits up to {scale:.2f}; max |naive - absorbed| = {(naive - absorbed).abs().max():.1e}")
assert torch.allclose(naive, absorbed, atol=1e-5 * scale)

set_decode_path(model, "naive")
with torch.no_grad():
    full = model(ids)  # (1, 12, V): one forward, no cache
assert torch.allclose(naive, full, atol=1e-5 * scale)  # and both equal recomputation

# %% [markdown]
# ## 3. What each path costs
#
# Count multiply-adds for one call with T new tokens attending over S cached ones, per layer (the projections
# into q, c and k_pe and out of the heads are the same on both paths, so they are left out):
#
# | | naive | absorbed |
# |---|---|---|
# | expand the S latents (`wkv_b`) | S·r·H·(dn + dv) | none |
# | fold W_uk into q, W_uv into the output | none | T·H·r·(dn + dv) |
# | scores and weighted sum | T·S·H·(dn + dr + dv) | T·S·H·(2r + dr) |
#
# Written as functions:

# %%
def naive_macs(t: int, s: int, h: int, r: int, dn: int, dr: int, dv: int) -> int:
    return s * r * h * (dn + dv) + t * s * h * (dn + dr + dv)


def absorbed_macs(t: int, s: int, h: int, r: int, dn: int, dr: int, dv: int) -> int:
    return t * h * r * (dn + dv) + t * s * h * (2 * r + dr)


# %% [markdown]
# Are the formulas right? torch's `FlopCounterMode` counts the FLOPs (2 per multiply-add) of every matrix
# product the model really runs. Run the same call on both paths; the difference must be exactly the formulas'
# difference, times 2, times the layers. (Each path's own count also holds the projections both share, which
# the formulas leave out, so it is the difference that is compared.) The `"auto"` path compares the two costs
# for each call's T and S, so it must count exactly the cheaper of the two:

# %%
def measured_flops(path: str, t: int, s: int) -> int:
    """FLOPs torch counts for one forward of t new tokens after s - t cached ones, on `path`."""
    set_decode_path(model, path)
    cache = model.new_cache(1, s)
    long_ids = torch.randint(0, config.vocab_size, (1, s), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(long_ids[:, : s - t], cache)  # fill the cache
        with FlopCounterMode(display=False) as counter:
            model(long_ids[:, s - t :], cache)
    return counter.get_total_flops()


picked = set()
for t, s in [(1, 10), (1, 40), (5, 20), (24, 24)]:
    naive_flops, absorbed_flops = measured_flops("naive", t, s), measured_flops("absorbed", t, s)
    measured = naive_flops - absorbed_flops
    formula = 2 * config.n_layers * (naive_macs(t, s, H, r, dn, dr, dv) - absorbed_macs(t, s, H, r, dn, dr, dv))
    print(f"T={t:2d} S={s:2d}: naive - absorbed = {measured:8,d} FLOPs measured, {formula:8,d} by the formulas")
    assert measured == formula
    assert measured_flops("auto", t, s) == min(naive_flops, absorbed_flops)  # "auto" runs the cheaper path
    picked.add("naive" if naive_flops < absorbed_flops else "absorbed")
assert picked == {"naive", "absorbed"}  # the cases above make "auto" take each path at least once

# %% [markdown]
# Subtracting the two formulas gives the whole story in one line:
#
#     naive - absorbed = H·r·(dn + dv)·(S - T)  -  T·S·H·(2r - dn - dv)
#
# The first term is the expansion of the S - T latents that were already cached (absorbed never expands them);
# the second is what the wider absorbed attention costs (per head 2r + dr numbers per key, against dn + dr + dv).
# Three cases follow, shown at DeepSeek-V2-Lite's size:
#
# - **decoding** (T = 1): naive re-expands every cached latent at every step; absorbed wins as soon as there is
#   a cache, by a factor that grows towards r·(dn + dv) / (2r + dr);
# - **a chunk of T tokens after a long cache** (S ≫ T): absorbed wins while T < r·(dn + dv) / (2r − dn − dv),
#   the limit `MLAttention.crossover_tokens()` gives (the `"auto"` path compares the two costs exactly, for
#   each call's own T and S, and so needs no limit);
# - **a prompt from an empty cache** (S = T): there is nothing cached to expand, so the first term is zero and
#   naive is cheaper at every length.

# %%
lite_dims = dict(h=16, r=512, dn=128, dr=64, dv=128)
with torch.device("meta"):  # the layer's shapes only, no memory
    lite_attn = MLAttention(2048, 16, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
crossover = lite_attn.crossover_tokens()
print(f"crossover_tokens(): {crossover:.1f} new tokens per call")

contexts = [2**k for k in range(0, 13 if FAST else 16)]
decode = [(naive_macs(1, s, **lite_dims), absorbed_macs(1, s, **lite_dims)) for s in contexts]
cached = 32768  # tokens already in the cache before the chunk
chunks = [2**k for k in range(0, 11 if FAST else 14)]
chunk = [(naive_macs(t, cached + t, **lite_dims), absorbed_macs(t, cached + t, **lite_dims)) for t in chunks]

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
panels = ((contexts, decode, "decoding: 1 new token, S - 1 cached", "context S (tokens)"),
          (chunks, chunk, f"a chunk of T tokens after {cached:,} cached", "new tokens T"))  # fmt: skip
for ax, (xs, costs, title, xlabel) in zip(axes, panels):
    ax.loglog(xs, [n for n, _ in costs], "o-", label="naive (expand the latents)")
    ax.loglog(xs, [a for _, a in costs], "s-", label="absorbed (attend in latent space)")
    ax.set(xlabel=xlabel, ylabel="multiply-adds per layer", title=title)
    ax.legend()
axes[1].axvline(crossover, color="gray", ls="--")
axes[1].annotate(f"crossover_tokens() = {crossover:.0f}", (crossover, chunk[0][1]), xytext=(4, 0),
                 textcoords="offset points")  # fmt: skip
fig.suptitle("MLA at DeepSeek-V2-Lite's size")
fig.tight_layout()
show(fig)

# decoding: absorbed wins from the second token on, by two orders of magnitude at 4K tokens of context
assert all(a < n for s, (n, a) in zip(contexts, decode) if s >= 2)
n, a = decode[contexts.index(4096)]
assert n / a > 100
# a chunk after a long cache: absorbed exactly while T < crossover * (1 - T/S), which tends to crossover_tokens()
for t, (n, a) in zip(chunks, chunk):
    assert (a < n) == (t < crossover * (1 - t / (cached + t))), t
# (with S = 32,768 and T ~ 171, the factor 1 - T/S is above 0.99: the crossover is crossover_tokens() to 1%)
# a prompt from an empty cache (S = T): naive is cheaper at every length
assert all(naive_macs(t, t, **lite_dims) < absorbed_macs(t, t, **lite_dims) for t in chunks)

# %% [markdown]
# ## 4. Against transformers
#
# A tiny random `DeepseekV2ForCausalLM` (every layer dense, no mixture of experts), built from its config class,
# saved and loaded into tinyslm. transformers expands the latents (the naive path); tinyslm must agree on both.

# %%
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()
torch.manual_seed(0)
hf_config = transformers.DeepseekV2Config(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=H,
    num_key_value_heads=H, q_lora_rank=None, kv_lora_rank=r, qk_nope_head_dim=dn, qk_rope_head_dim=dr,
    v_head_dim=dv, first_k_dense_replace=2, max_position_embeddings=256, attn_implementation="eager",
)  # fmt: skip
hf_model = transformers.DeepseekV2ForCausalLM(hf_config).eval()
with torch.no_grad():  # weights far from the init: norms around 1, matrices N(0, 0.15^2)
    for p in hf_model.parameters():
        p.copy_(1 + 0.2 * torch.randn(p.shape) if p.dim() == 1 else 0.15 * torch.randn(p.shape))

with tempfile.TemporaryDirectory() as folder:
    hf_model.save_pretrained(folder)
    deepseek = tinyslm.load_pretrained(folder, dtype=torch.float32)

with torch.no_grad():
    theirs = hf_model(ids).logits  # (1, 12, 128)
    for path in ("naive", "absorbed"):
        set_decode_path(deepseek, path)
        cache = deepseek.new_cache(1, ids.shape[1])
        ours = torch.cat([deepseek(ids[:, :5], cache), deepseek(ids[:, 5:8], cache),
                          *(deepseek(ids[:, t : t + 1], cache) for t in range(8, 12))], dim=1)  # fmt: skip
        difference = (ours - theirs).abs().max().item()
        print(f"{path:8s}: max |ours - transformers| = {difference:.1e} (logits up to {theirs.abs().max():.2f})")
        assert difference <= 1e-5 * theirs.abs().max()

# %% [markdown]
# ## Exercises
#
# **1. Weight absorption.** `wkv_b.weight` is (H·(dn + dv), r): for each head in turn, dn rows that make its
# key k_nope from the latent, then dv rows that make its value. Write `absorb_query`, which turns q_nope
# (B, H, T, dn) into the query that attends over the latents directly: (B, H, T, r), such that its dot
# product with a latent c equals q_nope's dot product with the key `wkv_b` makes from c.

# %%
def absorb_query(q_nope, wkv_b_weight, n_heads, qk_nope_head_dim, v_head_dim):
    # q_nope: (B, H, T, dn), wkv_b_weight: (H * (dn + dv), r) -> (B, H, T, r)
    raise NotImplementedError  # your code here


lesson08.check_absorb_query(absorb_query)

# %% [markdown]
# **2. The latent cache's size.** Write `latent_cache_values(config, context)`: how many numbers the KV cache
# of an MLA model (a `ModelConfig` with `attention="mla"`) holds for `context` tokens of one sequence (batch 1),
# over all its layers.

# %%
def latent_cache_values(config, context):
    # config: ModelConfig (attention="mla"), context: int -> int
    raise NotImplementedError  # your code here


lesson08.check_latent_cache_values(latent_cache_values)
