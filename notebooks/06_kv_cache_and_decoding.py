# %% [markdown]
# # 06 · The KV cache and decoding (greedy, cached, sampled)
#
# **Goal.** Understand why a decoder keeps every past key and value, what that costs in memory, what it
# saves in time, and how the next token is chosen from the logits (greedy, temperature, top-k, top-p).
#
# **Assumes.** Lesson 04 (attention heads, GQA and the cache's size); the causal LM of lesson 01;
# softmax and sampling from a categorical distribution.
#
# **You will see** (each is an `assert`):
# - cached decoding picks exactly the tokens that recomputing the whole sequence at every step picks
#   (`tinyslm.generate` against an argmax loop over `model(ids)`, and against transformers' `generate`);
# - the cache's bytes equal 2 x layers x kv_heads x head_dim x tokens x bytes per element, counted on its
#   own tensors, by `model.cache_values` and by `tinyslm.tools.stats.model_stats`;
# - a cached decoding step costs far less than recomputing the context, and the gap grows with the context;
# - sampling with a seed is reproducible; `tinyslm.sampling`'s filters equal transformers' logits warpers, and
#   top-p keeps the smallest set of most likely tokens whose probability reaches p.
#
# **Sources.**
# - Pope et al. 2022, *Efficiently Scaling Transformer Inference* (the KV cache's memory and time):
#   https://arxiv.org/abs/2211.05102
# - Holtzman et al. 2019, *The Curious Case of Neural Text Degeneration* (nucleus, top-p, sampling):
#   https://arxiv.org/abs/1904.09751
# - Fan et al. 2018, *Hierarchical Neural Story Generation* (top-k sampling): https://arxiv.org/abs/1805.04833
# - transformers' logits processors:
#   https://github.com/huggingface/transformers/blob/main/src/transformers/generation/logits_process.py

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import tempfile
import time

import matplotlib.pyplot as plt
import torch
import transformers
from transformers import LlamaForCausalLM, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from tinyslm.course import FAST, lesson06, show
from tinyslm.sampling import Sampler, warp
from tinyslm.tools.stats import model_stats

torch.manual_seed(0)
torch.set_num_threads(1)  # models this small gain nothing from more threads; on a busy machine threads wait
transformers.utils.logging.disable_progress_bar()

# %% [markdown]
# ## A tiny model
#
# A random 2-layer GQA model (4 query heads, 2 KV heads of 16 dims). Its weights are drawn five times larger
# than training's init (std 0.1 instead of 0.02) so that its greedy continuations are not one token repeated.

# %%
config = tinyslm.ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176,
                             max_seq_len=512)  # fmt: skip
model = tinyslm.CausalLM(config).init_weights(std=0.1, seed=0).eval()
prompt = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(0))  # (B, T)
n_new = 16

# %% [markdown]
# ## Decoding without a cache
#
# The plainest decoder runs the whole sequence through the model for every new token and keeps the last
# position's argmax. Step i processes T + i positions, though only the last one is new.

# %%
ids = prompt
recomputed_logits = []
with torch.no_grad():
    for _ in range(n_new):
        logits = model(ids)[:, -1]  # (B, T + i, V) -> (B, V): the last position's
        recomputed_logits.append(logits)
        ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)  # (B, T + i + 1)
recomputed = ids
print("positions computed without a cache:", sum(prompt.shape[1] + i for i in range(n_new)))

# %% [markdown]
# ## Decoding with a cache
#
# With a cache, the prompt runs once (the *prefill*), each attention layer storing its keys and values;
# then every step feeds only the newest token, whose query attends over the stored keys. `model.new_cache`
# allocates the buffers once, for exactly the positions the request needs; `cache.length` is the next position.

# %%
cache = model.new_cache(batch=2, capacity=prompt.shape[1] + n_new)
tokens = [prompt]
with torch.no_grad():
    logits = model(prompt, cache, last_only=True)[:, -1]  # prefill: (B, T) -> (B, V)
    for i in range(n_new):
        assert torch.allclose(logits, recomputed_logits[i], atol=1e-5)  # the same logits, step by step
        token = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        tokens.append(token)
        if i < n_new - 1:
            logits = model(token, cache, last_only=True)[:, -1]  # one position per step
cached = torch.cat(tokens, dim=1)
print("positions computed with a cache:", prompt.shape[1] + n_new - 1, "; cache.length =", cache.length)
assert torch.equal(cached, recomputed)

# `tinyslm.generate` is this loop (fast=False: the reference decoder, the model's own forward)
generated = tinyslm.generate(model, prompt, max_new_tokens=n_new, fast=False)
print(generated)
assert torch.equal(generated, recomputed)
assert len(set(generated[0, 8:].tolist())) > 1  # not a single token repeated: the test above has teeth

# %% [markdown]
# transformers decodes the same tokens: save the model with `tinyslm.save_pretrained` and load it as a
# `LlamaForCausalLM`.

# %%
with tempfile.TemporaryDirectory() as folder:
    tinyslm.save_pretrained(model, folder)
    hf = LlamaForCausalLM.from_pretrained(folder).eval()
hf_tokens = hf.generate(prompt, max_new_tokens=n_new, do_sample=False)
assert torch.equal(hf_tokens, generated)
print("transformers' greedy generate gives the same", n_new, "tokens per row")

# %% [markdown]
# ## What the cache holds
#
# One `KVBuffer` per layer, keys and values each (B, K, S, hd): 2 x layers x K x hd numbers per token and
# sequence. In float32 that is 4 bytes each; in bfloat16, 2.

# %%
B, S = 2, 100
cache = model.new_cache(batch=B, capacity=S)
keys, values = cache[0].tensors()
print("layer 0: keys", tuple(keys.shape), "values", tuple(values.shape), keys.dtype)
assert keys.shape == values.shape == (B, config.n_kv_heads, S, config.head_dim)
formula = 2 * config.n_layers * config.n_kv_heads * config.head_dim * S * 4 * B
assert sum(t.nbytes for layer in cache.layers for t in layer.tensors()) == cache.nbytes == formula
assert model.cache_values(S) * 4 * B == formula
assert model_stats(config, dtype=torch.float32, context=S).kv_cache_bytes_at_context * B == formula
assert model.new_cache(batch=B, capacity=S, dtype=torch.bfloat16).nbytes == formula // 2
print(f"{formula:,} bytes = 2 x {config.n_layers} layers x {config.n_kv_heads} kv heads x {config.head_dim} dims "
      f"x {S} tokens x 4 bytes x {B} sequences")  # fmt: skip

# %% [markdown]
# ## What the cache saves: time per token against context
#
# A cached step computes one position and reads the c stored keys; recomputing computes all c positions, and
# attention over them grows as c². Below, a wider model (4 layers of 256) times one decoding step at
# context c, with a cache and without (on one thread, the fastest of a few repetitions: the machine may be busy).

# %%
wide = tinyslm.ModelConfig(vocab_size=256, dim=256, n_layers=4, n_heads=8, n_kv_heads=2, ffn_dim=688,
                           max_seq_len=4096)  # fmt: skip
timed = tinyslm.CausalLM(wide).init_weights(seed=0).eval()
contexts = [32, 128, 512] if FAST else [32, 64, 128, 256, 512, 1024, 2048]
reps = 8
cached_s, recompute_s = [], []
with torch.inference_mode():
    for c in contexts:
        ids = torch.randint(0, 256, (1, c))
        cache = timed.new_cache(1, c + reps)
        timed(ids, cache, last_only=True)  # prefill c positions
        steps = []
        for r in range(reps):  # steps at contexts c, c + 1, ...: as good as c
            start = time.perf_counter()
            timed(ids[:, -1:], cache, last_only=True)
            steps.append(time.perf_counter() - start)
        full = []
        for r in range(3):
            start = time.perf_counter()
            timed(ids, last_only=True)  # what an uncached decoder runs for one token
            full.append(time.perf_counter() - start)
        cached_s.append(min(steps))
        recompute_s.append(min(full))
        print(f"context {c:5d}: cached step {1e3 * min(steps):7.2f} ms, recompute {1e3 * min(full):8.2f} ms")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.loglog(contexts, [1e3 * s for s in cached_s], "o-", label="with the KV cache")
ax.loglog(contexts, [1e3 * s for s in recompute_s], "s-", label="recomputing the context")
ax.set_xlabel("context (tokens)")
ax.set_ylabel("time for one new token (ms)")
ax.legend()
show(fig)
assert recompute_s[-1] > 3 * cached_s[-1]  # at the longest context a cached step is far cheaper
assert recompute_s[-1] / cached_s[-1] > recompute_s[0] / cached_s[0]  # and the gap grows with the context

# %% [markdown]
# ## Choosing the token: temperature, top-k, top-p
#
# Greedy decoding takes the argmax. Sampling draws from softmax(logits / temperature), usually after dropping
# the unlikely tail: top-k keeps the k most likely tokens, top-p (nucleus) the smallest set of most likely
# tokens whose probabilities sum to at least p. `tinyslm.generate(..., temperature=, top_k=, top_p=, seed=)`
# draws from a generator seeded by `seed`, so a seed gives the same tokens every time.

# %%
settings = dict(max_new_tokens=n_new, temperature=0.8, top_k=20, top_p=0.9, fast=False)
first = tinyslm.generate(model, prompt, seed=0, **settings)
again = tinyslm.generate(model, prompt, seed=0, **settings)
other = tinyslm.generate(model, prompt, seed=1, **settings)
print("seed 0:", first[0, 8:].tolist())
print("seed 0:", again[0, 8:].tolist())
print("seed 1:", other[0, 8:].tolist())
assert torch.equal(first, again)  # the same seed, the same tokens
assert not torch.equal(first, other)  # another seed, other tokens
assert not torch.equal(first, generated)  # sampling is not the greedy argmax
assert torch.equal(first[:, :8], prompt)

# %% [markdown]
# `tinyslm.sampling.warp` applies the filters in transformers' order (temperature, top-k, top-p), setting a
# dropped token's logit to -inf. On the model's logits for the prompt's next token, it equals transformers'
# warpers, and the picture shows which tokens each filter keeps.

# %%
with torch.no_grad():
    scores = model(prompt[:1], last_only=True)[:, -1] * 3  # (1, V); sharpened so the filters have a tail to cut
filtered = warp(scores, 0.8, 20, 0.9, None)
theirs = scores
for processor in (TemperatureLogitsWarper(0.8), TopKLogitsWarper(20), TopPLogitsWarper(0.9)):
    theirs = processor(prompt[:1], theirs)
assert torch.equal(filtered, theirs)

probs = (scores / 0.8).softmax(dim=-1)[0]  # (V,) after temperature
order = probs.argsort(descending=True)
kept_k = torch.isfinite(warp(scores, 0.8, 20, None, None))[0]
kept_p = torch.isfinite(warp(scores, 0.8, None, 0.9, None))[0]
n_p = int(kept_p.sum())
n_both = int(torch.isfinite(filtered).sum())
print(f"top-k=20 keeps {int(kept_k.sum())} tokens, top-p=0.9 keeps {n_p}, both together {n_both}")
# top-p keeps the most likely tokens, whose mass reaches p, and no smaller such set exists
assert torch.equal(kept_p[order], torch.arange(len(order)) < n_p)
mass = probs[order].cumsum(0)
assert mass[n_p - 1] >= 0.9 - 1e-6 and (n_p == 1 or mass[n_p - 2] < 0.9)
assert int(kept_k.sum()) == 20 and kept_k[order[:20]].all()

fig, ax = plt.subplots(figsize=(8, 3))
sorted_probs = probs[order]
colors = ["C2" if kept_p[t] and kept_k[t] else "C1" if kept_p[t] or kept_k[t] else "C7" for t in order]
ax.bar(range(len(order)), sorted_probs, color=colors)
ax.set_xlabel("tokens, most likely first")
ax.set_ylabel("probability (T = 0.8)")
ax.set_title("green: kept by top-k=20 and top-p=0.9; orange: by one of them; grey: dropped")
show(fig)

# %% [markdown]
# A `Sampler` draws from what the filters keep. Over many draws with a fixed seed, every drawn token is one
# top-p kept, and the frequencies follow the renormalised probabilities p: each token's frequency is within 4
# standard errors, 4·sqrt(p(1 − p)/N), of its p. That bound is tight enough to catch a sampler that ignores
# the temperature (at T = 1 some token is off by about 20 standard errors).

# %%
draws = 20000  # one batched call, cheap even in the FAST setting
sampler = Sampler(temperature=0.8, top_p=0.9, seed=0)
counts = torch.zeros(config.vocab_size)
batch = scores.expand(draws, -1)  # (N, V): the same logits, N independent draws
picked = sampler(batch, prompt[:1].expand(draws, -1))  # (N,)
counts += torch.bincount(picked, minlength=config.vocab_size)
assert kept_p[picked].all()  # nothing outside the nucleus is ever drawn
want = torch.where(kept_p, probs, 0.0)
want = want / want.sum()
standard_error = (want * (1 - want) / draws).sqrt()  # (V,), 0 outside the nucleus
print("largest |frequency - probability| / standard error:",
      ((counts / draws - want).abs() / standard_error.clamp(min=1e-12)).max().item())  # fmt: skip
assert ((counts / draws - want).abs() <= 4 * standard_error).all()

# %% [markdown]
# Temperature reshapes the distribution: below 1 it sharpens towards greedy, above 1 it flattens. The entropy
# of softmax(logits / T) grows with T.

# %%
temperatures = torch.tensor([0.25, 0.5, 0.8, 1.0, 1.5, 2.0, 4.0])
entropy = []
for t in temperatures:
    p = (scores[0] / t).softmax(dim=-1)
    entropy.append(-(p * p.log()).sum().item())
assert all(a < b for a, b in zip(entropy, entropy[1:]))
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(temperatures, entropy, "o-")
ax.axhline(torch.log(torch.tensor(float(config.vocab_size))).item(), color="grey", ls="--", label="uniform")
ax.set_xlabel("temperature")
ax.set_ylabel("entropy (nats)")
ax.legend()
show(fig)

# %% [markdown]
# ## Exercises
#
# **1. The cache update.** The cache's buffers k_cache, v_cache (B, K, S, hd) are allocated once. Write the new
# positions' keys and values k_new, v_new (B, K, T, hd) into them at positions start..start+T-1, in place, and
# return the keys and values of every position so far (0..start+T-1) as views of the buffers (slices, no
# copy: the checker tests that they share the buffers' memory).

# %%
def cache_update(k_cache, v_cache, k_new, v_new, start):
    # k_cache, v_cache: (B, K, S, hd); k_new, v_new: (B, K, T, hd) -> (keys, values), each (B, K, start + T, hd)
    raise NotImplementedError  # your code here


lesson06.check_cache_update(cache_update)

# %% [markdown]
# **2. Top-p.** Given logits (B, V) and p in (0, 1], set to -inf the logit of every token outside the nucleus:
# sort the probabilities, keep the smallest set of most likely tokens whose probabilities sum to at least p
# (always at least one token), and return the logits (kept ones unchanged).

# %%
def top_p_filter(logits, top_p):
    # logits: (B, V) -> (B, V), dropped tokens at -inf
    raise NotImplementedError  # your code here


lesson06.check_top_p_filter(top_p_filter)
