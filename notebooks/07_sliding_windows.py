# %% [markdown]
# # 07 · Sliding windows and the ring buffer
#
# **Goal.** See how a sliding-window layer limits each query to its last W keys, and why its KV cache then
# needs only W slots, reused in a ring, to give exactly what full recomputation gives.
#
# **Assumes.** Lesson 01 (the causal mask), lesson 04 (attention, GQA) and lesson 06 (the KV cache and
# decoding token by token); a little matplotlib.
#
# **You will see** (each one asserted):
# - the windowed mask is the causal mask with everything older than W keys removed: row i keeps min(i + 1, W) keys;
# - decoding token by token through a ring-buffer cache of W = 4 slots gives the same logits as a full forward
#   with the windowed mask at every step, including each time the ring wraps around, and after a prompt longer
#   than the window;
# - the ring's memory stays at W positions however long the context, while a full layer's cache is sized by it;
# - a tiny Gemma-2 (sliding and global layers alternating) loaded into tinyslm matches transformers past the
#   window: float32 logits to 1e-5, and the same greedy tokens.
#
# **Sources.**
# - Beltagy et al. 2020, *Longformer*: https://arxiv.org/abs/2004.05150 (sliding-window attention)
# - Jiang et al. 2023, *Mistral 7B*: https://arxiv.org/abs/2310.06825 (the rolling buffer cache)
# - Gemma Team 2024, *Gemma 2*: https://arxiv.org/abs/2408.00118 (local and global layers, alternating)
# - transformers' Gemma-2: https://github.com/huggingface/transformers/blob/main/src/transformers/models/gemma2/modeling_gemma2.py
#   and its masks: https://github.com/huggingface/transformers/blob/main/src/transformers/masking_utils.py

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import tempfile

import matplotlib.pyplot as plt
import torch

from tinyslm import CausalLM, ModelConfig
from tinyslm.course import FAST, lesson07, show
from tinyslm.layers.cache import KVBuffer, RingKVBuffer
from tinyslm.layers.positions import attention_mask

torch.manual_seed(0)
W = 4  # the window: each query sees its last W keys, itself included
T = 12 if FAST else 16  # tokens: several times the window, so the ring wraps around more than once

# %% [markdown]
# ## 1. The mask
#
# A causal layer lets the query at position q see every key k <= q. A sliding-window layer also requires
# k > q - W: the query sees the W most recent keys, itself included (the rule transformers uses).
# tinyslm builds both from positions with `attention_mask(q_pos, k_pos, window)`.

# %%
positions = torch.arange(T)  # (T,)
causal = attention_mask(positions, positions, None)  # (T, T) bool: True = may attend
windowed = attention_mask(positions, positions, W)  # (T, T)

fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
for ax, mask, title in zip(axes, (causal, windowed), ("causal", f"sliding window W = {W}")):
    ax.imshow(mask.int(), cmap="Blues", vmin=0, vmax=1.3)
    ax.set(title=title, xlabel="key position", ylabel="query position")
fig.tight_layout()
show(fig)

assert bool((windowed <= causal).all())  # the window only removes keys
assert windowed.sum(1).tolist() == [min(i + 1, W) for i in range(T)]  # row i keeps min(i + 1, W) keys
assert torch.equal(windowed[:W], causal[:W])  # the first W queries do not notice the window

# %% [markdown]
# One windowed layer sees W keys, but layers stack: layer 2 reads outputs of layer 1 that already summarise W
# keys each, so information can still travel about L·(W - 1) positions through L layers. Mistral and Gemma-2
# rely on that (Gemma-2 also keeps every other layer global).
#
# ## 2. A tiny windowed model
#
# Every layer of this model slides (`sliding_window=W`, no `sliding_pattern`). The weights are random but
# larger than the default init, so that the logits are of order one and a wrong key would show.

# %%
config = ModelConfig(vocab_size=96, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, sliding_window=W,
                     max_seq_len=64)  # fmt: skip
model = CausalLM(config).init_weights(std=0.1, seed=0).eval()
ids = torch.randint(0, config.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))  # (1, T)

full_config = config.replace(sliding_window=None)  # the same weights without the window
full_model = CausalLM(full_config).eval()
full_model.load_state_dict(model.state_dict())

with torch.no_grad():
    logits = model(ids)  # (1, T, V): one forward, the windowed mask inside every layer
    logits_full = full_model(ids)  # (1, T, V)
scale = logits.abs().max().item()
print(f"logits up to {scale:.2f}; window vs no window, per position:",
      [f"{d:.1e}" for d in (logits - logits_full).abs().amax(-1)[0].tolist()])  # fmt: skip

# the first W positions cannot tell the difference; from position W on, the window changes the answer
assert torch.allclose(logits[:, :W], logits_full[:, :W], atol=1e-6)
assert (logits[:, W:] - logits_full[:, W:]).abs().amax(-1).min() > 1e-3 * scale

# %% [markdown]
# ## 3. The ring buffer
#
# A windowed layer never reads a key older than W positions, so its cache only needs W slots. Position p is
# written into slot p % W, overwriting position p - W, which has just left the window. The slots are then out
# of order, so the buffer also remembers each slot's position (`pos`, -1 for an empty slot) and the mask is
# built from those positions, not from the slot order.
#
# We decode the sequence one token at a time through the cache, and at every step compare the new logits with
# a full forward over the whole prefix (no cache, windowed mask).

# %%
cache = model.new_cache(batch=1, capacity=T)
assert all(isinstance(layer, RingKVBuffer) for layer in cache.layers)  # a ring in every windowed layer

rows, differences = [], []
with torch.no_grad():
    for t in range(T):
        step_logits = model(ids[:, t : t + 1], cache)[:, -1]  # (1, V): one new token, the past from the ring
        recomputed = model(ids[:, : t + 1])[:, -1]  # (1, V): the whole prefix again
        differences.append((step_logits - recomputed).abs().max().item())
        rows.append(cache[0].pos.tolist())  # (W,) the position in each slot after this step
        assert cache[0].k.shape[2] == W  # the ring never grows

for t in range(T):
    wrap = "  <- wraps: slot 0 is overwritten" if t >= W and t % W == 0 else ""
    print(f"after token {t:2d}: slots hold positions {rows[t]}, |step - recomputed| = {differences[t]:.1e}{wrap}")

assert max(differences) <= 1e-5 * scale  # every step, every wrap: the ring gives the windowed result
assert rows[-1] == sorted(range(T - W, T), key=lambda p: p % W)  # the last W positions, each in slot p % W

# %% [markdown]
# A prompt longer than the window is the other case: the chunk's early queries still need keys that its later
# tokens will overwrite, so the ring attends over (the W stored keys + the chunk) first, and only then keeps
# the chunk's last W keys. A prefill of 7 tokens, then the rest one by one:

# %%
prompt = 7
cache = model.new_cache(batch=1, capacity=T)
with torch.no_grad():
    chunk_logits = model(ids[:, :prompt], cache)  # (1, prompt, V)
    kept = sorted(range(prompt - W, prompt), key=lambda p: p % W)  # positions 3..6, each in slot p % W
    assert cache[0].pos.tolist() == kept
    steps = [model(ids[:, t : t + 1], cache)[:, -1] for t in range(prompt, T)]  # (1, V) each
cached = torch.cat([chunk_logits, torch.stack(steps, dim=1)], dim=1)  # (1, T, V)
assert torch.allclose(cached, logits, atol=1e-5 * scale)

# %% [markdown]
# ## 4. Memory
#
# A full layer's cache is sized by the request's length (prompt + new tokens); a windowed layer's ring is W
# slots whatever the request. `KVCache.nbytes` counts what is really allocated.

# %%
contexts = [8, 64, 512, 4096]
ring_bytes = [model.new_cache(1, c).nbytes for c in contexts]
full_bytes = [full_model.new_cache(1, c).nbytes for c in contexts]
per_position = config.n_layers * 2 * config.n_kv_heads * config.head_dim * 4  # K and V, float32, all layers
for c, r, f in zip(contexts, ring_bytes, full_bytes):
    print(f"context {c:5d}: ring {r:8,d} bytes   full {f:10,d} bytes")

assert full_bytes == [per_position * c for c in contexts]  # grows with the context
assert ring_bytes == [per_position * W] * len(contexts)  # stays at W positions
assert isinstance(model.new_cache(1, 3)[0], KVBuffer)  # capacity <= W: a plain buffer is already small
assert model.cache_values(4096) == per_position // 4 * W  # the model's own count agrees

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.loglog(contexts, full_bytes, "o-", label="full attention")
ax.loglog(contexts, ring_bytes, "s-", label=f"sliding window, W = {W}")
ax.set(xlabel="context (tokens)", ylabel="KV cache bytes", title="cache memory")
ax.legend()
show(fig)

# %% [markdown]
# ## 5. Gemma-2: local and global layers, checked against transformers
#
# Gemma-2 alternates a sliding layer (even index) and a global one, with soft-capped attention scores and
# logits. We build a tiny random `Gemma2ForCausalLM` from its config class (nothing is downloaded), save it,
# load it into tinyslm, and compare on a prompt three times the window.

# %%
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()
torch.manual_seed(0)
hf_config = transformers.Gemma2Config(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=W, max_position_embeddings=64,
    attn_implementation="eager",
)  # fmt: skip
hf_model = transformers.Gemma2ForCausalLM(hf_config).eval()
with torch.no_grad():  # move every weight off its init (norm weights 0, which would hide a wrong norm)
    for p in hf_model.parameters():
        p.add_(0.05 * torch.randn(p.shape))

with tempfile.TemporaryDirectory() as folder:
    hf_model.save_pretrained(folder)
    gemma = tinyslm.load_pretrained(folder, dtype=torch.float32)

print("transformers:", hf_config.layer_types)
print("tinyslm:     ", [gemma.config.layer(i).window for i in range(gemma.config.n_layers)])
assert [gemma.config.layer(i).window for i in range(4)] == [W, None, W, None]

prompt_ids = torch.randint(0, 128, (1, 3 * W), generator=torch.Generator().manual_seed(1))  # (1, 12)
with torch.no_grad():
    ours, theirs = gemma(prompt_ids), hf_model(prompt_ids).logits  # (1, 12, 128) each
print(f"max |ours - transformers| = {(ours - theirs).abs().max():.2e} (logits up to {theirs.abs().max():.2f})")
assert torch.allclose(ours, theirs, atol=1e-5)

new = 6 if FAST else 12
# fast=False: the reference decoder (the model's own forward and cache), no native kernels to build
out = tinyslm.generate(gemma, prompt_ids, max_new_tokens=new, fast=False)  # (1, 12 + new): rings on layers 0, 2
expected = prompt_ids
with torch.no_grad():  # transformers' greedy continuation, recomputing the whole sequence each step
    for _ in range(new):
        expected = torch.cat([expected, hf_model(expected).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
print("greedy tokens:", out[0, 3 * W :].tolist())
assert torch.equal(out, expected)

# %% [markdown]
# ## Exercises
#
# **1. The windowed causal mask.** Write `windowed_causal_mask(q_pos, k_pos, window)`: a boolean (T, S) tensor,
# True where the query at position `q_pos[i]` may attend the key at position `k_pos[j]`, that is where
# k <= q and k > q - window (with q = q_pos[i], k = k_pos[j]). Keys come in any order (ring slots), and a
# negative key position is an empty slot that is never attended.

# %%
def windowed_causal_mask(q_pos, k_pos, window):
    # q_pos: (T,) int, k_pos: (S,) int, window: int -> (T, S) bool
    raise NotImplementedError  # your code here


lesson07.check_windowed_causal_mask(windowed_causal_mask)

# %% [markdown]
# **2. The ring slots.** Write `ring_positions(n_tokens, window)`: after positions 0 .. n_tokens - 1 have gone
# through a ring of `window` slots, which position does each slot hold? Return a list of `window` ints, -1 for a
# slot never written.

# %%
def ring_positions(n_tokens, window):
    # -> list of `window` ints: the position stored in slot 0, 1, ..., window - 1
    raise NotImplementedError  # your code here


lesson07.check_ring_positions(ring_positions)
