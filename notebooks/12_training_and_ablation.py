# %% [markdown]
# # 12 · Training and ablation
#
# **Goal.** Train a ~1M-parameter model from scratch on a small synthetic corpus and watch it learn; then run a
# small ablation, MHA vs GQA vs MQA vs MLA, the way `tinyslm ablate` does: every variant from the same seed on the
# same batches, what each variant's KV cache costs per token, and how far apart the seeds land.
#
# **Assumes.** Lessons 01-09 (the model), especially the attention lessons (KV heads, MLA's latent cache);
# next-token cross-entropy; what AdamW and a learning-rate schedule are.
#
# **You will see** (each one asserted):
# - a fresh model's first loss is ln(vocabulary size), the loss of a uniform guess;
# - after training, its validation loss is below 0.7 x ln(vocabulary size);
# - the learning rate of every step is warmup + cosine, exactly `tinyslm.train.optim.lr_at`;
# - each variant's KV bytes per token are exactly what `model_stats` (`tinyslm inspect`) says, what the
#   ablation reports, and what an allocated KV cache holds: MHA 2·L·H·hd values, GQA-2 half that, MQA a quarter,
#   MLA L·(r + dr);
# - the spread across seeds, shown, NOT ranked: a short run on one machine cannot rank the variants.
#
# **Sources.**
# - AdamW: https://arxiv.org/abs/1711.05101 · cosine schedule (SGDR): https://arxiv.org/abs/1608.03983
# - GQA: https://arxiv.org/abs/2305.13245 · MQA: https://arxiv.org/abs/1911.02150 ·
#   MLA (DeepSeek-V2): https://arxiv.org/abs/2405.04434
# - small models trained on synthetic stories: TinyStories https://arxiv.org/abs/2305.07759
# - transformers' attention with KV heads, for comparison:
#   https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import json
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from tinyslm.ablate import AblationSettings, parse_variants, run_ablation
from tinyslm.course import FAST, lesson12, show
from tinyslm.data import Batches, eval_batches, generate_documents, prepare_data
from tinyslm.tools.stats import model_stats
from tinyslm.train import TrainConfig, lr_at, train

torch.manual_seed(0)
workdir = tempfile.TemporaryDirectory()  # the corpus, its tokenizer and token streams go here

# FAST (the tests): fewer documents, shorter sequences, fewer steps; the same assertions. The full setting
# trains for several minutes on 2 CPU cores (most of it the ablation's 4 variants x 3 seeds).
DOCUMENTS = 1000 if FAST else 4000
SEQ_LEN = 64 if FAST else 128
STEPS = 50 if FAST else 300
ABLATION_STEPS, ABLATION_SEQ_LEN, SEEDS = (12, 32, 2) if FAST else (100, 64, 3)

# %% [markdown]
# ## The data
#
# `generate_documents` writes tinyslm's synthetic corpus: templated stories whose characters stay consistent,
# small arithmetic, facts stated and recalled later, lists. `prepare_data` trains a byte-exact BPE tokenizer
# (sentencepiece) of 512 pieces on it, splits off whole documents for validation, and stores both splits as
# token streams.

# %%
corpus = Path(workdir.name) / "corpus.jsonl"
with corpus.open("w", encoding="utf-8") as f:
    for doc in generate_documents(DOCUMENTS, seed=0):
        f.write(json.dumps({"text": doc}) + "\n")
data = prepare_data(corpus, vocab_size=512, cache_dir=Path(workdir.name) / "cache", progress=False)
V = data.vocab_size
print(f"{V} tokens in the vocabulary; {len(data.train):,} training and {len(data.val):,} validation tokens")
print(repr(data.tokenizer.decode(data.val[:40].tolist())))

# %% [markdown]
# ## The model: a ~1M-parameter Llama
#
# Four layers 128 wide, 4 heads of 32, a SwiGLU FFN of 384, the head tied to the embedding (the 512 x 128
# embedding is then counted once).

# %%
base = tinyslm.ModelConfig(name="llama-1m", family="llama", vocab_size=V, dim=128, n_layers=4, n_heads=4,
                           n_kv_heads=4, ffn_dim=384, max_seq_len=256, tie_embeddings=True)  # fmt: skip
stats = model_stats(base)
print(f"{stats.parameters:,} parameters: {stats.breakdown}")
assert 0.5e6 < stats.parameters < 2e6

# %% [markdown]
# ## Training
#
# `tinyslm.train.train` is a plain PyTorch loop: AdamW with weight decay on the weight matrices only, gradient
# clipping, and the learning rate set before every step by a pure function of the step, linear warmup then a
# cosine down to a tenth of the peak. The batches are a pure function of (seed, step), so a run is repeatable.
# `precision="fp32"` pins the arithmetic, so the run is the same on any CPU.

# %%
cfg = TrainConfig(steps=STEPS, batch_size=16, seq_len=SEQ_LEN, lr=3e-3, eval_every=STEPS // 5, eval_batches=4,
                  precision="fp32", seed=0)  # fmt: skip
run = train(base, Batches(data.train, SEQ_LEN, 16, seed=0), cfg,
            val=lambda: eval_batches(data.val, SEQ_LEN, 16), progress=False)  # fmt: skip
history = run.history  # one dict per step: step, loss, lr, grad_norm, tokens_per_s (+ val_loss)
print(f"first loss {history[0]['loss']:.3f} (ln V = {math.log(V):.3f}); final validation loss "
      f"{run.final_val_loss:.3f} (0.7 ln V = {0.7 * math.log(V):.3f}); {run.wall_s:.1f} s")  # fmt: skip

# %%
# a fresh model spreads its guesses nearly evenly over the vocabulary: its loss starts at ln V
assert abs(history[0]["loss"] - math.log(V)) < 0.05 * math.log(V)
# and it learned: well below a uniform guess, on documents it never trained on
assert run.final_val_loss < 0.7 * math.log(V)
# the learning rate of every step was the schedule's, exactly (history counts steps from 1, lr_at from 0)
for h in history:
    assert h["lr"] == lr_at(h["step"] - 1, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, steps=cfg.steps)

# %%
fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.5))
ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="training loss", alpha=0.7)
val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
ax.plot(*zip(*val), "o-", label="validation loss")
ax.axhline(math.log(V), color="gray", linestyle="--", label="ln V: a uniform guess")
ax.axhline(0.7 * math.log(V), color="gray", linestyle=":", label="0.7 ln V: the asserted margin")
ax.set(xlabel="step", ylabel="cross-entropy (nats)", title="A ~1M-parameter model learning")
ax.legend(fontsize=8)
ax_lr.plot([h["step"] for h in history], [h["lr"] for h in history])
ax_lr.set(xlabel="step", ylabel="learning rate", title=f"warmup ({cfg.warmup_steps} steps) + cosine")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## An ablation: what changes when only the attention changes
#
# `parse_variants` derives each variant from the one base config, changing the attention and nothing else
# (`same_heads` mode: the same 4 query heads of 32):
#
# - **mha**: 4 KV heads; **gqa:2**: 2 KV heads, each shared by 2 query heads; **mqa**: 1 KV head for all 4;
# - **mla**: DeepSeek-V2's latent attention: per token and layer the cache keeps one latent of r = 4·hd = 128
#   values plus one shared RoPE key of dr = hd/2 = 16, from which every head's K and V are re-expanded.
#
# What the variants change first is the KV cache, the memory that grows with every token of context. Three
# numbers should agree for each: `model_stats` (what `tinyslm inspect` prints), the ablation's own report, and
# the bytes of a cache the model actually allocates.

# %%
variants = parse_variants("mha,gqa:2,mqa,mla", base)
BYTES = 2  # bfloat16, `tinyslm inspect`'s default
L, H, hd = base.n_layers, base.n_heads, base.head_dim
for v in variants:
    c = v.config
    s = model_stats(c, torch.bfloat16)
    cache = tinyslm.CausalLM(c).new_cache(1, 64, dtype=torch.bfloat16)  # a real cache for 64 tokens
    print(f"{v.name:5s} kv heads {c.n_kv_heads}  {s.parameters:>9,} parameters  {s.kv_cache_bytes_per_token:>5,} "
          f"KV bytes/token  (allocated: {cache.nbytes // 64:,})")  # fmt: skip
    assert cache.nbytes == 64 * s.kv_cache_bytes_per_token

kv = {v.name: model_stats(v.config, torch.bfloat16).kv_cache_bytes_per_token for v in variants}
assert kv["mha"] == 2 * L * H * hd * BYTES  # K and V, every head, every layer
assert kv["mha"] == 2 * kv["gqa2"] == 4 * kv["mqa"]  # H / K times smaller
mla = variants[3].config
assert kv["mla"] == L * (mla.kv_lora_rank + mla.qk_rope_head_dim) * BYTES == L * (4 * hd + hd // 2) * BYTES

# %% [markdown]
# Now the training side: `run_ablation` trains every variant for every seed; for seed s each variant starts
# from the same RNG state and reads the same batches, so the variants differ only in their attention. (The
# MQAR recall probe, `mqar_steps`, is off here: it needs longer runs to say anything.)

# %%
t0 = time.perf_counter()
settings = AblationSettings(steps=ABLATION_STEPS, seeds=SEEDS, batch_size=16, seq_len=ABLATION_SEQ_LEN,
                            eval_every=ABLATION_STEPS, mqar_steps=0, decode_tokens=8, precision="fp32")  # fmt: skip
results = run_ablation(base, variants, settings, data=data)
print(f"ablation {time.perf_counter() - t0:.1f} s")
for row in results["variants"]:
    losses = [r["final_val_loss"] for r in row["runs"]]
    print(f"{row['name']:5s} {row['layout']:24s} val loss " + "  ".join(f"{x:.3f}" for x in losses))

# %%
for row, v in zip(results["variants"], variants):
    assert row["kv_cache_bytes_per_token"] == kv[v.name]  # the report's figure is inspect's
    assert len(row["runs"]) == SEEDS
    assert all(r["final_val_loss"] < math.log(V) for r in row["runs"])  # every run learned something
# every run starts from a near-uniform guess: its first loss sits at ln V
for seed in range(SEEDS):
    first = [row["runs"][seed]["history"][0]["loss"] for row in results["variants"]]
    assert max(abs(x - math.log(V)) for x in first) < 0.05 * math.log(V)

# %%
fig, (ax, ax_kv) = plt.subplots(1, 2, figsize=(10, 3.5))
colors = dict(zip(kv, ["C0", "C1", "C2", "C3"]))
for row in results["variants"]:
    for r in row["runs"]:
        ax.plot([h["step"] for h in r["history"]], [h["loss"] for h in r["history"]], color=colors[row["name"]],
                alpha=0.6, label=row["name"] if r["seed"] == 0 else None)  # fmt: skip
    losses = [r["final_val_loss"] for r in row["runs"]]
    ax_kv.scatter([kv[row["name"]]] * len(losses), losses, color=colors[row["name"]], label=row["name"])
    ax_kv.errorbar(kv[row["name"]], sum(losses) / len(losses), yerr=[[sum(losses) / len(losses) - min(losses)],
                   [max(losses) - sum(losses) / len(losses)]], color=colors[row["name"]], capsize=4)  # fmt: skip
ax.set(xlabel="step", ylabel="training loss", title=f"{len(variants)} variants x {SEEDS} seeds")
ax.legend(fontsize=8)
ax_kv.set(xscale="log", xlabel="KV-cache bytes per token (bfloat16)", ylabel="final validation loss",
          title="each dot one seed; bars: the spread")  # fmt: skip
ax_kv.legend(fontsize=8)
fig.tight_layout()
show(fig)

# %% [markdown]
# Read the right-hand plot for what it is. The KV axis is exact: a 4x smaller cache is 4x smaller on every
# machine. The loss axis is one short run per seed: where the variants' seed spreads overlap, this run cannot
# tell them apart, and even where they do not, a short budget can favour the variant with fewer parameters
# (MQA and GQA have smaller K/V projections). That is why nothing above asserts an order. `tinyslm ablate
# --seeds K` reports mean ± spread and says which differences the spread cannot separate.
#
# ## Exercise 1: the learning-rate schedule
#
# Write the learning rate of optimizer step `step` (0-based): linear warmup over `warmup_steps` steps (step 0
# already takes lr / warmup_steps, step warmup_steps - 1 the full lr), then a cosine from `lr` down to `min_lr`
# at step `steps`; after `steps` it stays at `min_lr`. With `warmup_steps == 0` there is no warmup.

# %%
def lr_schedule(step, lr, min_lr, warmup_steps, steps):
    # step, warmup_steps, steps: int; lr, min_lr: float -> float
    raise NotImplementedError  # your code here


lesson12.check_lr_schedule(lr_schedule)

# %% [markdown]
# ## Exercise 2: KV bytes per token
#
# Write the bytes the KV cache stores for one token, over all layers, for a `tinyslm.ModelConfig` whose
# `attention` is `"mha"`, `"gqa"`, `"mqa"` (these three differ only in `n_kv_heads`) or `"mla"`. Use
# `config.head_dim` (it need not be dim / n_heads), `n_kv_heads`, `n_layers`, and for MLA `kv_lora_rank` and
# `qk_rope_head_dim`.

# %%
def kv_bytes_per_token(config, bytes_per_value):
    # config: tinyslm.ModelConfig; bytes_per_value: 2 (bfloat16) or 4 (float32) -> int
    raise NotImplementedError  # your code here


lesson12.check_kv_bytes_per_token(kv_bytes_per_token)

# %%
workdir.cleanup()
