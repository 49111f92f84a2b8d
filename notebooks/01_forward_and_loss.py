# %% [markdown]
# # 01 · The forward pass and the loss
#
# **Goal.** Follow token ids through a small decoder-only language model to its logits, turn the logits into
# the next-token cross-entropy a model is trained on, and count the parameters that produce them.
#
# **Assumes.** PyTorch tensors and `nn.Module`; softmax and cross-entropy. No earlier lesson.
#
# **You will see** (each one is an `assert` below):
# - tinyslm's logits equal those of transformers' `LlamaForCausalLM` holding the same weights;
# - an untrained model's loss is close to ln(vocabulary size): it guesses uniformly;
# - the model is causal: changing token t+1 leaves the logits at positions <= t bit-identical;
# - the parameter count printed by `tinyslm inspect` equals a hand count and `sum(p.numel())` of the model.
#
# **Sources.**
# Vaswani et al., *Attention Is All You Need* (2017), https://arxiv.org/abs/1706.03762 ·
# Touvron et al., *LLaMA* (2023), https://arxiv.org/abs/2302.13971 ·
# transformers' Llama, https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py ·
# SmolLM-135M's config.json, https://huggingface.co/HuggingFaceTB/SmolLM-135M/blob/main/config.json

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import math
import tempfile

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import transformers

from tinyslm.course import FAST, lesson01, show
from tinyslm.sizing import estimate_parameters
from tinyslm.tools.stats import format_stats, model_stats
from tinyslm.train import loss_sum

torch.manual_seed(0)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

# %% [markdown]
# ## A model is a config
#
# `tinyslm.ModelConfig` describes the architecture as data; `tinyslm.CausalLM` builds the modules it names.
# This one is a miniature Llama: 2 blocks, width 64, 4 query heads sharing 2 key/value heads, a 256-token
# vocabulary. `init_weights(seed=0)` draws every matrix from N(0, 0.02²), reproducibly.

# %%
config = tinyslm.ModelConfig(
    name="tiny-llama", vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=64
)
model = tinyslm.CausalLM(config).init_weights(seed=0)
print(model)

# %% [markdown]
# ## The forward pass
#
# `ids (B, T)` → token embedding `(B, T, D)` → each block adds attention and an FFN to the residual stream →
# final norm → head `(B, T, V)`. Position t's logits are the model's guess for token t + 1.

# %%
B, T, V = (2 if FAST else 4), 32, config.vocab_size
ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))  # (B, T)
with torch.no_grad():
    logits = model(ids)  # (B, T, V)
print("ids", tuple(ids.shape), "-> logits", tuple(logits.shape))
assert logits.shape == (B, T, V)

# %% [markdown]
# The same weights in transformers: `tinyslm.save_pretrained` writes a Hugging Face folder (a `config.json`
# and safetensors), which `transformers.AutoModelForCausalLM` loads as a `LlamaForCausalLM`. The two
# implementations share no code, yet give the same logits (float32 rounding apart).

# %%
with tempfile.TemporaryDirectory() as folder:
    tinyslm.save_pretrained(model, folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
with torch.no_grad():
    hf_out = hf(ids, labels=ids)  # with labels, transformers also returns the loss
print(type(hf).__name__, "max |ours - theirs| =", (logits - hf_out.logits).abs().max().item())
assert type(hf).__name__ == "LlamaForCausalLM"
assert torch.allclose(logits, hf_out.logits, atol=1e-5, rtol=0)

# %% [markdown]
# ## The loss: predict the next token
#
# The target at position t is the token at t + 1, so the inputs are `ids[:, :-1]` and the targets `ids[:, 1:]`:
# T tokens give T - 1 predictions. The loss is the mean of -log p(target), in nats.
#
# An untrained model's logits are all close to 0, so its softmax is close to uniform, 1/V for every token,
# and its loss close to -log(1/V) = ln V. A loss far above ln V at step 0 means a bad initialisation.

# %%
targets = ids[:, 1:]  # (B, T-1)
loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten())  # (B*(T-1), V) vs (B*(T-1),)
trainer_loss = loss_sum(model, ids[:, :-1], targets) / targets.numel()  # what `tinyslm train` minimises
print(f"loss {loss.item():.4f}, ln V = {math.log(V):.4f}, transformers {hf_out.loss.item():.4f}, "
      f"trainer {trainer_loss.item():.4f}")  # fmt: skip
assert abs(loss.item() - math.log(V)) < 0.05  # std 0.1 would already be ~0.35 above
assert torch.allclose(loss, hf_out.loss, atol=1e-5) and torch.allclose(loss, trainer_loss.detach(), atol=1e-5)

# %% [markdown]
# Why N(0, 0.02²)? Draw the same model with larger initial weights: the logits spread, the untrained model is
# confidently wrong, and the loss starts far above ln V.

# %%
stds = [0.02, 0.05, 0.1, 0.2, 0.5] if FAST else [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
start_losses = []
for std in stds:
    m = tinyslm.CausalLM(config).init_weights(std=std, seed=0)
    with torch.no_grad():
        start_losses.append(F.cross_entropy(m(ids)[:, :-1].flatten(0, 1), targets.flatten()).item())

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(stds, start_losses, "o-", label="loss of the untrained model")
ax.axhline(math.log(V), color="gray", ls="--", label=f"ln V = ln {V}")
ax.set_xscale("log")
ax.set_xlabel("init std of the weight matrices")
ax.set_ylabel("cross-entropy (nats)")
ax.legend()
show(fig)
assert start_losses[-1] > start_losses[0] + 1  # large weights: far above ln V
assert abs(start_losses[stds.index(0.02)] - math.log(V)) < 0.05

# %% [markdown]
# ## Causality
#
# Each position may only look at itself and earlier positions (the causal mask inside attention). So changing
# the token at position j must leave the logits at positions < j *exactly* as they were, bit for bit, not
# just close: masked keys get weight exp(-inf) = 0. Below, every position j is changed in turn, and the
# largest change of the logits at every position i is drawn: everything below the diagonal (i < j) is
# exactly zero, everything from the diagonal on (i >= j) is not.

# %%
one = ids[:1]  # (1, T)
with torch.no_grad():
    base = model(one)  # (1, T, V)
    change = torch.zeros(T, T)  # [j changed, i read]
    for j in range(T):
        edited = one.clone()
        edited[0, j] = (edited[0, j] + 1) % V
        out = model(edited)
        change[j] = (out - base).abs().amax(dim=-1)[0]  # (T,)
        assert torch.equal(out[:, :j], base[:, :j]), f"position {j} leaked into earlier positions"
before = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)  # [j, i] with i < j: below the diagonal
assert bool((change[before] == 0).all()) and bool((change[~before] > 0).all())

fig, ax = plt.subplots(figsize=(4.5, 4))
im = ax.imshow(change.log10().clamp(min=-8), cmap="magma")
ax.set_xlabel("position i whose logits are read")
ax.set_ylabel("position j whose token changed")
fig.colorbar(im, ax=ax, label="log10 max |Δ logits| (−8: none)")
show(fig)

# %% [markdown]
# ## Counting parameters
#
# `tinyslm.tools.stats.model_stats` is what `tinyslm inspect` prints. It counts the model on the meta device
# (no memory), so it also works for a 7B config on a laptop. By hand, for a Llama block with width D, H query
# heads and K key/value heads of size hd, and FFN width F:
#
# - attention: q and o are D × H·hd each, k and v are D × K·hd each;
# - gated FFN: three D × F matrices (gate, up, down);
# - two RMSNorm weights of D each per block, one more before the head;
# - the embedding V × D, and an untied head V × D again.

# %%
stats = model_stats(config)
print(format_stats(stats, "bfloat16"))
D, H, K, hd, Fw, L = config.dim, config.n_heads, config.n_kv_heads, config.head_dim, config.ffn_dim, config.n_layers
by_hand = {
    "embedding": V * D,
    "attention": L * (2 * D * H * hd + 2 * D * K * hd),
    "ffn": L * 3 * D * Fw,
    "norms": L * 2 * D + D,
    "lm_head": V * D,
}
assert stats.breakdown == by_hand
assert stats.parameters == sum(by_hand.values()) == sum(p.numel() for p in model.parameters())
assert stats.parameters == estimate_parameters(config) == hf.num_parameters()

# %% [markdown]
# A real small model: SmolLM-135M's shape (its config.json: width 576, 30 layers, 9 heads sharing 3
# key/value heads, FFN 1536, a 49,152-token vocabulary). Its head is *tied*: it is the embedding matrix
# itself, one Parameter, counted once. At this size the embedding alone is a fifth of the whole model.

# %%
smollm = tinyslm.ModelConfig(
    name="smollm-135m-shape", vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
    max_seq_len=2048, tie_embeddings=True,
)
s = model_stats(smollm)
print(format_stats(s, "bfloat16"))
assert s.breakdown["lm_head"] == 0 and s.tied_head
untied = model_stats(smollm.replace(tie_embeddings=False))
assert untied.parameters - s.parameters == smollm.vocab_size * smollm.dim  # the tie saves one V x D matrix

fig, ax = plt.subplots(figsize=(6, 3))
parts = [k for k in s.breakdown if s.breakdown[k]]
ax.barh(parts, [s.breakdown[k] / 1e6 for k in parts])
ax.set_xlabel("parameters (millions)")
ax.set_title(f"SmolLM-135M's shape: {s.parameters / 1e6:.1f}M parameters")
show(fig)

# %% [markdown]
# ## Exercise 1: the shifted loss
#
# Write `shifted_loss(logits, ids)`: logits `(B, T, V)` and the token ids `(B, T)` they were computed
# from; return the mean cross-entropy (a 0-dim tensor) of predicting `ids[:, t + 1]` from position t. Your
# function does the shift itself, as transformers' `ForCausalLMLoss` does. The library's
# `tinyslm.train.next_token_loss(logits, targets)` does not: it takes targets already shifted, so
# `shifted_loss(logits, ids)` equals `tinyslm.train.next_token_loss(logits[:, :-1], ids[:, 1:])`. The checker
# compares yours with torch's cross-entropy, transformers' `ForCausalLMLoss` and tinyslm's trainer.

# %%
def shifted_loss(logits, ids):
    # logits: (B, T, V), ids: (B, T) -> () mean over the B * (T - 1) predictions
    raise NotImplementedError  # your code here


lesson01.check_shifted_loss(shifted_loss)

# %% [markdown]
# ## Exercise 2: the causal mask
#
# Write `causal_mask(q_pos, k_pos)`: the positions of T queries `(T,)` and of S keys `(S,)`; return a bool
# `(T, S)` tensor, True where the query may attend the key. Mind the decoding case: 3 new queries at
# positions 5, 6, 7 after 5 cached keys is not `torch.tril` of a 3 × 8 matrix.

# %%
def causal_mask(q_pos, k_pos):
    # q_pos: (T,), k_pos: (S,) -> (T, S) bool
    raise NotImplementedError  # your code here


lesson01.check_causal_mask(causal_mask)
