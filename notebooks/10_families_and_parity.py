# %% [markdown]
# # 10 · Families and parity debugging
#
# **Goal.** See that six model families, each written by transformers in its own checkpoint layout, load into
# tinyslm's one `CausalLM` and give transformers' logits; then find a planted bug the way you would find a
# real one: by comparing the two implementations layer by layer and naming the first layer that differs.
#
# **Assumes.** Lessons 01-09 (the model's parts: norms, RoPE, attention, FFN, blocks, the causal LM);
# a checkpoint folder is a `config.json` plus `model.safetensors`.
#
# **You will see** (each one asserted):
# - six families (Llama, Qwen2, Gemma, Phi-3, GPT-2, OLMo) saved by transformers and loaded by
#   `tinyslm.load_pretrained` give transformers' logits within 1e-5 relative, and the same greedy tokens;
# - a planted bug, a wrong RoPE pair layout in ONE layer, or a transposed weight in ONE layer, is found by the
#   per-layer hooks: every layer before it agrees, and the first diverging layer is the planted one.
#
# **Sources.**
# - transformers' model code, the reference here: the decoder layers in
#   https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py
#   (and the `models/qwen2`, `gemma`, `phi3`, `gpt2`, `olmo` folders beside it)
# - the per-layer debugging idea: https://github.com/rasbt/LLMs-from-scratch
# - Llama https://arxiv.org/abs/2302.13971 · Qwen2 https://arxiv.org/abs/2407.10671 ·
#   Gemma https://arxiv.org/abs/2403.08295 · Phi-3 https://arxiv.org/abs/2404.14219 ·
#   GPT-2 https://huggingface.co/openai-community/gpt2 · OLMo https://arxiv.org/abs/2402.00838
# - RoPE and its rotation of pairs: https://arxiv.org/abs/2104.09864

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import tempfile

import matplotlib.pyplot as plt
import torch
import transformers

from tinyslm.course import lesson10, show
from tinyslm.tools.parity import check_parity, compare_layers, relative

torch.manual_seed(0)
transformers.logging.set_verbosity_error()  # quiet: no "loading weights" bars in the lesson's output
transformers.utils.logging.disable_progress_bar()
workdir = tempfile.TemporaryDirectory()  # every checkpoint this lesson writes goes here

# %% [markdown]
# ## Six families, one model
#
# Each family below is a transformers config class with real hyper-parameter *names* but tiny sizes (64 wide,
# 2 layers, a vocabulary of 128). Their differences are what tinyslm's family files translate into config
# fields: Qwen2 has biases on q/k/v; Gemma scales the embedding by sqrt(D), uses RMSNorm with (1 + w) and GeGLU;
# Phi-3 stores q/k/v as one fused matrix and the gate and up projections as another; GPT-2 has learned positions,
# LayerNorm, a plain GELU MLP and `Conv1D` weights stored transposed; OLMo has a LayerNorm without parameters and
# clips q, k and v.
#
# A random init has norm weights of exactly 1 and biases of exactly 0, which would hide a swapped norm or a lost
# bias. So every parameter gets a small seeded perturbation before saving.

# %%
TINY = dict(vocab_size=128, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
LLAMA_LIKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64)  # fmt: skip
FAMILIES = {
    "llama": ("LlamaConfig", dict(LLAMA_LIKE, num_key_value_heads=2)),  # GQA: 2 query heads per KV head
    "qwen2": ("Qwen2Config", dict(LLAMA_LIKE, num_key_value_heads=2)),  # + q/k/v biases
    "gemma": ("GemmaConfig", dict(LLAMA_LIKE, num_key_value_heads=1, head_dim=16)),  # MQA, (1 + w) norms, GeGLU
    "phi3": ("Phi3Config", dict(LLAMA_LIKE, num_key_value_heads=2, pad_token_id=0)),  # fused qkv and gate_up
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64)),  # learned positions, Conv1D
    "olmo": ("OlmoConfig", dict(LLAMA_LIKE, num_key_value_heads=4, clip_qkv=8.0)),  # parameter-free LayerNorm
}


def write_checkpoint(folder, config_class, seed=0, **hparams):
    """A seeded random transformers model, every parameter perturbed, saved with save_pretrained."""
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**TINY, **hparams)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))  # norms near 1, biases near 0, but not exactly
    model.save_pretrained(folder)
    return model


# %% [markdown]
# `check_parity(folder)` is what `tinyslm parity FOLDER` runs: it loads the folder with both libraries in
# float32, compares the logits of a fixed random batch (max |ours - theirs| / max |theirs|), decodes a few greedy
# tokens with each (tinyslm with its KV cache, transformers with its own), and hooks every decoder layer of both
# to record per-layer differences.

# %%
reports = {}
for name, (config_class, hparams) in FAMILIES.items():
    folder = f"{workdir.name}/{name}"
    write_checkpoint(folder, config_class, **hparams)
    reports[name] = check_parity(folder, new_tokens=6)
    r = reports[name]
    print(f"{name:6s} family={tinyslm.load_config(folder).family:6s} relative logit diff {r.relative_diff:.1e}  "
          f"greedy tokens {'identical' if r.tokens_match else 'DIFFER'}")  # fmt: skip

# %%
for name, r in reports.items():
    assert r.relative_diff <= 1e-5, (name, r.relative_diff)
    assert r.tokens_match, (name, r.tokens_ours, r.tokens_reference)
    assert r.first_diverging_layer is None and len(r.layer_diffs) == 2, (name, r.layer_diffs)
    assert r.ok

# %% [markdown]
# Six checkpoint layouts, one model class: the differences live in each family's config translation and key
# map (which tensor goes where, which is split or transposed), never in `CausalLM.forward`.
#
# ## Debugging by layers
#
# When the logits disagree, the logits alone do not say where. The per-layer debugger does: a forward hook on
# every decoder layer of both models records its output hidden states `(B, T, D)`, and the first layer whose
# output differs is where to look. (Once one layer is wrong, every later layer is too: its input is wrong.)
#
# `check_parity` takes a folder; the comparison it runs inside is `compare_layers(ours, theirs, ids, n_layers)`,
# which takes any two models, so a copy of ours with a planted bug too. It hooks the decoder layers of both
# (`decoder_layers` finds them, `record_layer_outputs` records them), measures each layer with
# `relative(a, b)` = max |a - b| / max |b|, and names the first layer past the tolerance.

# %%
N_LAYERS = 4
folder = f"{workdir.name}/llama-4"
write_checkpoint(folder, "LlamaConfig", seed=3, **dict(LLAMA_LIKE, num_hidden_layers=N_LAYERS, num_key_value_heads=2))
theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                           attn_implementation="eager").eval()  # fmt: skip
ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))  # (B, T)


def layer_diffs(ours, theirs, ids):
    """Run both models on ids; the relative difference of each decoder layer's output (one float per layer)."""
    return compare_layers(ours, theirs, ids, N_LAYERS).layer_diffs


healthy = layer_diffs(tinyslm.load_pretrained(folder), theirs, ids)
print("healthy:", [f"{d:.1e}" for d in healthy])
assert max(healthy) <= 1e-5

# %% [markdown]
# ### Bug 1: the wrong RoPE pair layout in one layer
#
# RoPE rotates pairs of a head's channels. Hugging Face checkpoints pair channel i with channel i + hd/2
# ("split-half", `rotate_half`); Meta's original code and DeepSeek pair 2i with 2i + 1 ("interleaved"). Both
# are correct for weights trained that way, and a checkpoint converted with the wrong one loads without any
# error. tinyslm keeps the layout on each attention module (`rope_layout`), so we flip it in layer 2 only.

# %%
PLANTED = 2
buggy = tinyslm.load_pretrained(folder)
buggy.blocks[PLANTED].attn.rope_layout = "interleaved"  # the checkpoint is split-half
rope_bug = layer_diffs(buggy, theirs, ids)
print("RoPE layout bug in layer 2:", [f"{d:.1e}" for d in rope_bug])

# %% [markdown]
# ### Bug 2: a transposed weight in one layer
#
# GPT-2 stores its projections as `Conv1D` weights, (in, out) where `nn.Linear` wants (out, in); a key map that
# forgets the transpose for one tensor gives a square matrix that still loads. Here: the query projection of
# layer 1, transposed.

# %%
PLANTED_T = 1
buggy_t = tinyslm.load_pretrained(folder)
with torch.no_grad():
    wq = buggy_t.blocks[PLANTED_T].attn.wq.weight  # (H*hd, D) = (64, 64): square, so .T loads silently
    wq.copy_(wq.T.clone())
transpose_bug = layer_diffs(buggy_t, theirs, ids)
print("transposed wq in layer 1:  ", [f"{d:.1e}" for d in transpose_bug])

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
floor = 1e-12  # identical outputs (a difference of 0) drawn at the floor of the log scale
for diffs, label, marker in [(healthy, "as loaded", "o"), (rope_bug, "RoPE layout flipped in layer 2", "s"),
                             (transpose_bug, "wq transposed in layer 1", "^")]:  # fmt: skip
    ax.semilogy(range(N_LAYERS), [max(d, floor) for d in diffs], marker=marker, label=label)
ax.axhline(1e-5, color="gray", linestyle="--", label="tolerance 1e-5")
ax.set(xlabel="decoder layer", ylabel="max |ours - theirs| / max |theirs|", xticks=range(N_LAYERS),
       title="Where tinyslm and transformers part")  # fmt: skip
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
fig.tight_layout()
show(fig)

# %% [markdown]
# The curves stay at the floor (bit-identical) up to the planted layer, jump there, and stay up after it.
# The first layer over the tolerance is the bug's layer:

# %%
for diffs, planted in [(rope_bug, PLANTED), (transpose_bug, PLANTED_T)]:
    assert all(d <= 1e-5 for d in diffs[:planted]), diffs  # every layer before the bug agrees
    assert all(d > 1e-3 for d in diffs[planted:]), diffs  # the bug's layer and every later one do not
    assert next(i for i, d in enumerate(diffs) if d > 1e-5) == planted
assert compare_layers(buggy, theirs, ids, N_LAYERS, tolerance=1e-5).first_diverging_layer == PLANTED
with torch.no_grad():
    assert relative(buggy(ids), theirs(input_ids=ids).logits) > 1e-3  # the logits show *that*, not *where*

# %% [markdown]
# ## Exercise: name the first diverging layer
#
# Given the per-layer hidden states of both implementations (two lists of tensors of the same shapes, layer 0
# first) and a tolerance, return the index of the first layer whose relative difference
# max |ours - theirs| / max |theirs| is larger than the tolerance, or `None` when no layer's is. (Think about a
# layer whose hidden states hold zeros, and about one single element that is off.)

# %%
def first_diverging_layer(ours, theirs, tolerance):
    # ours, theirs: lists of (B, T, D) tensors, one per layer; tolerance: float -> int or None
    raise NotImplementedError  # your code here


lesson10.check_first_diverging_layer(first_diverging_layer)

# %%
workdir.cleanup()
