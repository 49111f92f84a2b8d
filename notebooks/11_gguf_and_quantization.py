# %% [markdown]
# # 11 · Real checkpoints, GGUF and quantization
#
# **Goal.** Load a GGUF file (llama.cpp's single-file format) into tinyslm and check it against transformers'
# own GGUF loading; then quantize its weights to Q8_0 and Q4_0 blocks and measure what that costs: how often the
# next-token prediction changes, and how much the perplexity of some text moves.
#
# **Assumes.** Lesson 10 (parity: the same checkpoint through two implementations); lesson 12's picture of a
# small trained model helps but is not needed. What a float16 is.
#
# **You will see** (each one asserted):
# - tinyslm's model of the file gives transformers' logits within 1e-5 relative, and the same greedy tokens;
# - a Q8_0 or Q4_0 file holds exactly the gguf package's blocks of each weight (llama.cpp's quantizer), and every
#   weight lies within one quantization step of its block's largest value (1/127 for Q8_0, 1/8 for Q4_0);
# - the logit error grows as the bits shrink (F16 < Q8_0 < Q4_0); Q8_0 keeps at least 90% of the top-1 next-token
#   predictions and moves the perplexity by less than 2%. (How much Q4_0 costs is shown, not asserted: it
#   depends on the model.)
#
# **Runs on real weights when you point it at a file**: set the environment variable `TINYSLM_COURSE_GGUF` (or
# `GGUF_FILE` in the parameter cell below the imports) to a llama-architecture GGUF that transformers can read,
# for instance a SmolLM2-135M-Instruct GGUF (model card: https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct).
# Without one, the lesson trains a tiny model for a few seconds and writes its own GGUF, so it always runs.
#
# **Sources.**
# - the GGUF format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
# - llama.cpp's block formats (`block_q8_0`, `block_q4_0`) and its reference quantizers:
#   https://github.com/ggml-org/llama.cpp/blob/master/ggml/src/ggml-common.h and `ggml/src/ggml-quants.c`;
#   the same in Python: https://github.com/ggml-org/llama.cpp/blob/master/gguf-py/gguf/quants.py
# - transformers' GGUF loading: https://huggingface.co/docs/transformers/gguf and
#   https://github.com/huggingface/transformers/blob/main/src/transformers/modeling_gguf_pytorch_utils.py
# - LLM.int8() on what 8-bit weights cost: https://arxiv.org/abs/2208.07339 · GPTQ (4-bit):
#   https://arxiv.org/abs/2210.17323

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import json
import math
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import transformers

from tinyslm.course import FAST, lesson11, show
from tinyslm.data import Batches, eval_batches, generate_documents, prepare_data
from tinyslm.gguf import gguf_tensor_bytes, write_gguf
from tinyslm.quant.blocks import quantize_blocks
from tinyslm.quant.ggml import BLOCK, BLOCK_BYTES, dequantize_blocks
from tinyslm.tools.parity import check_parity, relative
from tinyslm.train import TrainConfig, train

torch.manual_seed(0)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
workdir = tempfile.TemporaryDirectory()  # every file this lesson writes goes here
STEPS = 30 if FAST else 200  # training steps of the lesson's own model (when no file is given)

# %%
# Parameters: a real GGUF to study (None: the lesson trains a tiny model and writes its own)
GGUF_FILE = os.environ.get("TINYSLM_COURSE_GGUF") or None

# %% [markdown]
# ## A checkpoint to study
#
# With no file given, we train a tiny Llama (2 layers, 64 wide, GQA with 1 KV head) on tinyslm's synthetic
# stories for a few seconds and write it as an F32 GGUF with `write_gguf`, its tokenizer included. Every width
# is a multiple of 32, the block size of llama.cpp's quantized formats.

# %%
if GGUF_FILE is None:
    corpus = Path(workdir.name) / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in generate_documents(600, seed=0)))
    data = prepare_data(corpus, vocab_size=512, cache_dir=Path(workdir.name) / "cache", progress=False)
    config = tinyslm.ModelConfig(name="tiny-llama", family="llama", vocab_size=data.vocab_size, dim=64, n_layers=2,
                                 n_heads=2, n_kv_heads=1, ffn_dim=192, max_seq_len=256, tie_embeddings=False,
                                 bos_token_id=data.tokenizer.bos_id, eos_token_id=data.eos_id)  # fmt: skip
    cfg = TrainConfig(steps=STEPS, batch_size=16, seq_len=64, lr=5e-3, eval_every=0, eval_batches=4,
                      precision="fp32")  # fmt: skip
    trained = train(config, Batches(data.train, 64, 16, seed=0), cfg,
                    val=lambda: eval_batches(data.val, 64, 16), progress=False).model  # fmt: skip
    GGUF_FILE = write_gguf(trained.eval(), Path(workdir.name) / "tiny-llama.F32.gguf", "f32",
                           tokenizer=data.tokenizer_path.parent)  # fmt: skip
GGUF_FILE = Path(GGUF_FILE).expanduser()
print(GGUF_FILE.name, {kind: f"{n / 2**20:.2f} MiB" for kind, n in gguf_tensor_bytes(GGUF_FILE).items()})

# %% [markdown]
# ## Parity with transformers' GGUF loading
#
# `check_parity` (what `tinyslm parity FILE.gguf` runs) loads the file twice, both times dequantized to float32:
# with `tinyslm.load_pretrained(path, keep_quantized=False)`, and with transformers'
# `AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)`. It compares the logits of a fixed batch and a
# greedy continuation. This checks the two *readers* of the format (metadata -> config, llama.cpp's tensor names
# and its permuted q/k rows -> the model), not the quantization.

# %%
report = check_parity(GGUF_FILE, new_tokens=4)
print(report.summary())
assert report.relative_diff <= 1e-5 and report.tokens_match

# %% [markdown]
# ## The same weights, in fewer bits
#
# We take the float32 model (a quantized file's weights, dequantized) and write it again, as F16, Q8_0, Q4_1 and
# Q4_0. Loading each with `keep_quantized=False` gives a float model holding exactly the values the file's blocks
# stand for, so comparing it with the float model measures the quantization and nothing else.
#
# A block holds 32 consecutive weights of one row:
#
# | type | bytes per block | stores | a weight is |
# |---|---|---|---|
# | Q8_0 | 34 | d (float16), 32 int8 q | q · d, with d = max\|w\| / 127 |
# | Q4_1 | 20 | d, m (float16), 32 4-bit q | q · d + m |
# | Q4_0 | 18 | d (float16), 32 4-bit q | (q - 8) · d, with d = (the w of largest \|w\|) / -8 |

# %%
ours = tinyslm.load_pretrained(GGUF_FILE, dtype=torch.float32, keep_quantized=False).eval()
tok = tinyslm.load_tokenizer(GGUF_FILE)
text = "\n".join(generate_documents(3 if FAST else 12, seed=2026))  # stories the model did not train on
ids = torch.tensor([tok.encode(text)[: min(ours.config.max_seq_len, 512)]])  # (1, T)
print(f"{ids.shape[1]} tokens of text:", repr(text[:80]), "...")

TYPES = ["f16", "q8_0", "q4_1", "q4_0"]
models = {}
for kind in TYPES:
    path = write_gguf(ours, Path(workdir.name) / f"model.{kind.upper()}.gguf", kind)
    models[kind] = tinyslm.load_pretrained(path, dtype=torch.float32, keep_quantized=False).eval()

# %% [markdown]
# First, the file holds exactly llama.cpp's blocks. The gguf package's `quants.quantize` is llama.cpp's
# reference quantizer in numpy; `quantize_blocks` applies it to a weight, `dequantize_blocks` reads the blocks
# back. The query weight goes through llama.cpp's row permutation on writing and its inverse on loading, and
# comes back bit for bit.

# %%
w = ours.blocks[0].attn.wq.weight.detach()  # (H*hd, D): blocks of 32 along D
for kind in ["Q8_0", "Q4_0"]:
    blocks = quantize_blocks(w, kind)  # (rows, D / 32 * bytes per block) uint8
    assert torch.equal(models[kind.lower()].blocks[0].attn.wq.weight, dequantize_blocks(kind, blocks, tuple(w.shape)))

# every weight within one step of its block's scale: 1/127 of the block's largest |w| (Q8_0), 1/8 (Q4_0)
amax = w.reshape(w.shape[0], -1, BLOCK).abs().amax(-1, keepdim=True)  # (rows, D / 32, 1)
errors = {}
for kind, steps in [("q8_0", 127), ("q4_0", 8)]:
    err = (models[kind].blocks[0].attn.wq.weight.detach() - w).reshape(amax.shape[0], -1, BLOCK).abs() / amax
    errors[kind] = err.flatten()
    assert float(err.max()) <= (1 + 2**-10) / steps, (kind, float(err.max()))  # (2^-10: d rounded to float16)

# %% [markdown]
# Then what the model does with them: for each type, the largest logit difference relative to the largest logit,
# the share of positions whose top-1 next token is unchanged, and the perplexity of the text.

# %%
def perplexity(logits, ids):
    """exp of the mean next-token cross-entropy: logits (1, T, V) predict ids[:, 1:]."""
    return math.exp(F.cross_entropy(logits[0, :-1], ids[0, 1:]).item())


with torch.no_grad():
    ref = ours(ids)  # (1, T, V)
    rows = {}
    for kind, model in models.items():
        logits = model(ids)
        rows[kind] = dict(
            bits=16.0 if kind == "f16" else 8 * BLOCK_BYTES[kind.upper()] / BLOCK,  # bits per weight, scales included
            error=relative(logits, ref),
            top1=float((logits.argmax(-1) == ref.argmax(-1)).float().mean()),
            ppl=perplexity(logits, ids),
        )
ppl = perplexity(ref, ids)
print(f"float32: perplexity {ppl:.3f}")
for kind, r in rows.items():
    print(f"{kind:5s} {r['bits']:4.1f} bits/weight  logit error {r['error']:.2e}  top-1 kept {r['top1']:.1%}  "
          f"perplexity {r['ppl']:.3f} ({r['ppl'] / ppl - 1:+.2%})")  # fmt: skip

# %%
assert rows["f16"]["error"] < rows["q8_0"]["error"] < rows["q4_0"]["error"]
assert rows["q8_0"]["top1"] >= 0.9
assert abs(rows["q8_0"]["ppl"] / ppl - 1) < 0.02

# %%
fig, (ax_w, ax_l) = plt.subplots(1, 2, figsize=(10, 3.5))
bins = torch.logspace(-6, 0, 61).numpy()  # errors on a log scale (an exact 0 drawn at 1e-6)
for color, (kind, steps) in zip(["C0", "C1"], [("q8_0", 127), ("q4_0", 8)]):
    ax_w.hist(errors[kind].clamp_min(1e-6).numpy(), bins=bins, alpha=0.6, color=color, label=f"{kind}: bound 1/{steps}")
    ax_w.axvline(1 / steps, color=color, linestyle="--")
ax_w.set(xscale="log", xlabel="|w_q - w| / max |w| of its block", ylabel="weights", title="layer 0's query weight")
ax_w.legend(fontsize=8)
ax_l.plot([r["bits"] for r in rows.values()], [r["error"] for r in rows.values()], "-", color="gray")
for kind, r in rows.items():
    ax_l.plot(r["bits"], r["error"], "o", label=f"{kind}: top-1 kept {r['top1']:.0%}, perplexity {r['ppl'] / ppl - 1:+.1%}")
ax_l.set(yscale="log", xlabel="bits per weight", ylabel="max |logit diff| / max |logit|", title="cost of fewer bits")
ax_l.legend(fontsize=7)
fig.tight_layout()
show(fig)

# %% [markdown]
# Q8_0's error is small for the same reason as int8 inference in general: a step of 1/127 of a block's largest
# weight is well below the noise the model tolerates. Four bits is a step of 1/8 (Q4_0) or about 1/15 of the
# block's range (Q4_1, which stores an offset too). With real weights the top-1 predictions and the perplexity
# move visibly there; llama.cpp's K-quants (Q4_K) add scales per sub-block for that reason.
#
# When tinyslm loads a quantized file with the default `keep_quantized=True`, it does not dequantize: the
# linear layers keep the file's blocks and multiply with a kernel that rounds the activations to 8 bits per
# block of 32, as llama.cpp's CPU code does (see the docs' GGUF page).
#
# ## Exercise: a Q8_0 block, both ways
#
# Write `q8_0_quantize(x)`: for x of shape (..., 32), one block per row of 32, return `d`, the block scale
# max |x| / 127 as **float16** (shape (...,)), and `q`, the codes as **int8** (shape (..., 32)). Compute q from
# the float32 scale (before rounding it to float16), as x · (1 / d), rounded half *away from zero* (C's
# `roundf`, which llama.cpp uses; `torch.round` rounds halves to even). A block of zeros has d = 0 and q = 0.
# Then `q8_0_dequantize(d, q)`: the float32 values q · d, shape (..., 32).

# %%
def q8_0_quantize(x):
    # x: (..., 32) float32 -> d: (...,) float16, q: (..., 32) int8
    raise NotImplementedError  # your code here


def q8_0_dequantize(d, q):
    # d: (...,) float16, q: (..., 32) int8 -> (..., 32) float32
    raise NotImplementedError  # your code here


lesson11.check_q8_0(q8_0_quantize, q8_0_dequantize)

# %%
workdir.cleanup()
