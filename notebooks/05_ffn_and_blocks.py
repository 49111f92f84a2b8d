# %% [markdown]
# # 05 · FFNs and blocks: gated and plain FFNs, sequential and parallel blocks, sandwich norms
#
# **Goal.** Know the feed-forward networks small LMs use (gated SiLU "SwiGLU", GELU, squared ReLU) and the
# three ways a block wires attention and FFN around the residual stream, down to their exact parameter counts.
#
# **Assumes.** Lesson 02 (norms), lesson 04 (the attention module); `nn.Linear` and residual connections.
#
# **You will see** (each is an `assert`):
# - tinyslm's FFNs equal transformers' `LlamaMLP` (SwiGLU), `NemotronMLP` (squared ReLU) and `GPTNeoXMLP` (GELU);
# - parameter counts equal their closed forms: 3·D·F for a gated FFN, 2·D·F for a plain one, plus F + D (plain)
#   or 2F + D (gated) with biases; a block's count is attention + FFN + its norms; a gated FFN of width 8D/3
#   costs what a plain one of width 4D does;
# - each block computes its formula (sequential, parallel, sandwich-normed), and tiny transformers Llama,
#   GPT-NeoX, Phi and Gemma-2 models give tinyslm's logits and tinyslm's parameter counts.
#
# **Sources.**
# - Shazeer 2020, *GLU Variants Improve Transformer* (SwiGLU, GeGLU): https://arxiv.org/abs/2002.05202
# - Touvron et al. 2023, *LLaMA* (SwiGLU at width 2/3 · 4D): https://arxiv.org/abs/2302.13971
# - Hendrycks & Gimpel 2016, *Gaussian Error Linear Units*: https://arxiv.org/abs/1606.08415
# - So et al. 2021, *Primer* (squared ReLU): https://arxiv.org/abs/2109.08668
# - Black et al. 2022, *GPT-NeoX-20B* (parallel attention and FFN): https://arxiv.org/abs/2204.06745
# - Chowdhery et al. 2022, *PaLM* ("parallel layers", and why): https://arxiv.org/abs/2204.02311
# - Gemma Team 2024, *Gemma 2* (pre- and post-norms around each sub-layer): https://arxiv.org/abs/2408.00118
# - Phi-2's model card: https://huggingface.co/microsoft/phi-2
# - transformers' MLPs and decoder layers, e.g.
#   https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py and
#   https://github.com/huggingface/transformers/blob/main/src/transformers/models/gemma2/modeling_gemma2.py

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import tempfile

import matplotlib.pyplot as plt
import torch
import transformers
from transformers import AutoModelForCausalLM, Gemma2Config, GPTNeoXConfig, LlamaConfig, NemotronConfig, PhiConfig
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXMLP
from transformers.models.llama.modeling_llama import LlamaMLP
from transformers.models.nemotron.modeling_nemotron import NemotronMLP

from tinyslm.course import FAST, lesson05, show
from tinyslm.layers.block import ParallelBlock, SequentialBlock, build_block
from tinyslm.layers.ffn import ACTIVATIONS, GatedFFN, PlainFFN
from tinyslm.layers.positions import Step
from tinyslm.layers.rope import RotaryEmbedding
from tinyslm.sizing import estimate_parameters

torch.manual_seed(0)
torch.set_num_threads(1)  # models this small gain nothing from more threads; on a busy machine threads wait
transformers.utils.logging.disable_progress_bar()
n_params = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
print("FAST" if FAST else "full", "setting")  # nothing here trains: both settings run the same cells

# %% [markdown]
# ## The activations
#
# An FFN is two (plain) or three (gated) matrices around one nonlinearity. GPT-2 and Pythia use GELU, Llama,
# Qwen and SmolLM SiLU (x·sigmoid(x)) inside a gate, Nemotron squared ReLU. SiLU and GELU are smooth and dip
# slightly below zero; squared ReLU is zero for negative inputs and grows quadratically.

# %%
xs = torch.linspace(-4, 3, 281)
fig, ax = plt.subplots(figsize=(6, 3.5))
for name in ("relu", "gelu", "silu", "relu2"):
    ax.plot(xs, ACTIVATIONS[name](xs), label=name)
ax.set_ylim(-1, 4)
ax.axhline(0, color="grey", lw=0.5)
ax.legend()
ax.set_title("FFN activations (tinyslm.layers.ffn.ACTIVATIONS)")
show(fig)

assert torch.allclose(ACTIVATIONS["silu"](xs), xs * torch.sigmoid(xs))
assert torch.equal(ACTIVATIONS["relu2"](xs), torch.relu(xs) ** 2)
assert ACTIVATIONS["silu"](xs).min() < 0 and ACTIVATIONS["gelu"](xs).min() < 0  # the dip below zero
assert (ACTIVATIONS["gelu_tanh"](xs) - ACTIVATIONS["gelu"](xs)).abs().max() < 1e-3  # tanh approximation of GELU

# %% [markdown]
# ## Gated and plain FFNs
#
# ```
# gated (SwiGLU):  down( silu(gate(x)) * up(x) )     gate, up: D -> F, down: F -> D    3·D·F weights
# plain (GELU):    down( gelu(up(x)) )                up: D -> F, down: F -> D          2·D·F weights
# ```
#
# The gate multiplies, element by element, what the up projection proposes. Each is checked against
# transformers' module with the same weights.

# %%
D, F = 64, 176
x = torch.randn(2, 7, D)  # (B, T, D)

swiglu = GatedFFN(D, F, activation="silu")
llama_mlp = LlamaMLP(LlamaConfig(hidden_size=D, intermediate_size=F, hidden_act="silu"))
llama_mlp.load_state_dict({"gate_proj.weight": swiglu.gate.weight, "up_proj.weight": swiglu.up.weight,
                           "down_proj.weight": swiglu.down.weight})  # fmt: skip

squared_relu = PlainFFN(D, F, activation="relu2", bias=False)
nemotron_mlp = NemotronMLP(NemotronConfig(hidden_size=D, intermediate_size=F, hidden_act="relu2", mlp_bias=False))
nemotron_mlp.load_state_dict({"up_proj.weight": squared_relu.up.weight, "down_proj.weight": squared_relu.down.weight})

gelu = PlainFFN(D, 4 * D, activation="gelu", bias=True)
neox_mlp = GPTNeoXMLP(GPTNeoXConfig(hidden_size=D, intermediate_size=4 * D, hidden_act="gelu"))
neox_mlp.load_state_dict({"dense_h_to_4h.weight": gelu.up.weight, "dense_h_to_4h.bias": gelu.up.bias,
                          "dense_4h_to_h.weight": gelu.down.weight, "dense_4h_to_h.bias": gelu.down.bias})  # fmt: skip

with torch.no_grad():
    for name, ours, theirs in [("SwiGLU", swiglu, llama_mlp), ("squared ReLU", squared_relu, nemotron_mlp),
                               ("GELU", gelu, neox_mlp)]:  # fmt: skip
        y = ours(x)  # (B, T, D)
        print(f"{name:13s} max |tinyslm - transformers| = {(y - theirs(x)).abs().max().item():.1e}, "
              f"{n_params(ours):,} parameters")  # fmt: skip
        assert torch.allclose(y, theirs(x), atol=1e-6)
        assert n_params(ours) == n_params(theirs)

# %% [markdown]
# ## Parameter counts in closed form
#
# A gated FFN has three D x F matrices, a plain one two; biases add one per output unit (F for each
# D -> F matrix, D for the way back). So for the same width a gated FFN costs 1.5 times as much. Llama's
# recipe shrinks the gated width to 2/3 of the plain 4D, F = 8D/3, so the two cost the same: the gate is
# paid for with width.

# %%
assert n_params(swiglu) == 3 * D * F
assert n_params(squared_relu) == 2 * D * F
assert n_params(gelu) == 2 * D * (4 * D) + 4 * D + D
assert n_params(GatedFFN(D, F, bias=True)) == 3 * D * F + 2 * F + D

D3 = 96  # a width divisible by 3
assert n_params(GatedFFN(D3, 8 * D3 // 3)) == n_params(PlainFFN(D3, 4 * D3, bias=False)) == 8 * D3 * D3
print("gated FFN of width 8D/3 and plain FFN of width 4D:", n_params(GatedFFN(D3, 8 * D3 // 3)), "parameters each")

# %% [markdown]
# ## Three ways to wire a block
#
# ```
# sequential (Llama):            h = x + attn(norm1(x));            out = h + ffn(norm2(h))
# sandwich (Gemma-2/3):          h = x + norm3(attn(norm1(x)));     out = h + norm4(ffn(norm2(h)))
# parallel (GPT-NeoX, Phi-2):    out = x + attn(norm1(x)) + ffn(norm2(x))      (Phi-2: norm2 = norm1)
# ```
#
# In a parallel block the FFN reads the block's input, not the attention's output, so the two can run at the
# same time (GPT-J and PaLM did so for speed). The sandwich norms bound what each sub-layer adds to the residual
# stream. `build_block(config, layer)` picks the parts from a `ModelConfig`; the block itself never asks which
# model it is in. Below, each block's output is recomputed from its own parts by the formula above.

# %%
base = tinyslm.ModelConfig(vocab_size=97, dim=D, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=F, max_seq_len=64)
variants = {
    "sequential": base,
    "sandwich": base.replace(sandwich_norms=True),
    "parallel": base.replace(block="parallel", norm="layernorm", ffn="plain", activation="gelu", ffn_bias=True,
                             ffn_dim=4 * D, qkv_bias=True, out_bias=True),  # fmt: skip
    "parallel, one norm": base.replace(block="parallel_shared_norm", norm="layernorm", ffn="plain",
                                       activation="gelu_new", ffn_bias=True, ffn_dim=4 * D, qkv_bias=True,
                                       out_bias=True),  # fmt: skip
}
hd = base.head_dim
step = Step.with_rope({"global": RotaryEmbedding(hd, 10000.0, None, 64)}, start=0, length=7, device="cpu")
blocks = {}
with torch.no_grad():
    for name, config in variants.items():
        block = build_block(config, 0)
        for p in block.parameters():  # move norms off 1 and biases off 0, so that every part shows
            p.add_(torch.randn(p.shape) * 0.1)
        blocks[name] = block
        out = block(x, step)  # (B, T, D)
        if isinstance(block, SequentialBlock):
            h = x + block.attn_out_norm(block.attn(block.attn_norm(x), step))
            by_hand = h + block.ffn_out_norm(block.ffn(block.ffn_norm(h)))
        else:
            assert isinstance(block, ParallelBlock)
            ffn_in = block.attn_norm(x) if block.ffn_norm is None else block.ffn_norm(x)
            by_hand = x + block.attn(block.attn_norm(x), step) + block.ffn(ffn_in)
        print(f"{name:18s} {type(block).__name__:15s} max |block - formula| = {(out - by_hand).abs().max().item():.1e}")
        assert torch.allclose(out, by_hand, atol=1e-5)

# %% [markdown]
# ## A block's parameters
#
# Attention holds wq (D x H·hd), wk and wv (D x K·hd each) and wo (H·hd x D), plus biases where the config has
# them; the FFN its closed form; each RMSNorm D weights, each LayerNorm D weights and D biases. A sequential block
# has two norms, a sandwich block four, a parallel block two, Phi-2's one.

# %%
def attention_parameters(config):
    H, K, hd, D = config.n_heads, config.n_kv_heads, config.head_dim, config.dim
    weights = D * H * hd + 2 * D * K * hd + H * hd * D
    return weights + (H * hd + 2 * K * hd if config.qkv_bias else 0) + (D if config.out_bias else 0)


def ffn_parameters_of(config):
    D, F = config.dim, config.ffn_dim
    if config.ffn == "gated":
        return 3 * D * F + (2 * F + D if config.ffn_bias else 0)
    return 2 * D * F + (F + D if config.ffn_bias else 0)


norms_per_block = {"sequential": 2, "sandwich": 4, "parallel": 2, "parallel, one norm": 1}
fig, ax = plt.subplots(figsize=(7, 3))
for i, (name, config) in enumerate(variants.items()):
    norm_size = 2 * D if config.norm.startswith("layernorm") else D  # weight (+ bias)
    parts = {"attention": attention_parameters(config), "ffn": ffn_parameters_of(config),
             "norms": norms_per_block[name] * norm_size}  # fmt: skip
    assert n_params(blocks[name]) == sum(parts.values()), name
    assert n_params(blocks[name].attn) == parts["attention"] and n_params(blocks[name].ffn) == parts["ffn"]
    left = 0
    for j, (part, n) in enumerate(parts.items()):
        ax.barh(i, n, left=left, color=f"C{j}", label=part if i == 0 else None)
        left += n
ax.set_yticks(range(len(variants)), list(variants))
ax.set_xlabel("parameters in one block")
ax.legend(loc="lower right")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## The same blocks in transformers
#
# Four tiny random models from transformers' config classes (nothing downloaded): Llama (sequential, SwiGLU),
# GPT-NeoX (parallel, two LayerNorms, GELU), Phi (parallel, one LayerNorm) and Gemma-2 (sandwich norms, GeGLU).
# Each is saved to a temporary folder and loaded by tinyslm, which reads its block layout from config.json:
# the logits agree, and `tinyslm.sizing.estimate_parameters` (which counts on the meta device, never allocating
# the model) gives transformers' own count.

# %%
small = dict(vocab_size=97, hidden_size=D, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
hf_configs = {
    "Llama": LlamaConfig(**small, intermediate_size=F, num_key_value_heads=2),
    "GPT-NeoX": GPTNeoXConfig(**small, intermediate_size=4 * D, use_parallel_residual=True),
    "Phi": PhiConfig(**small, intermediate_size=4 * D),
    "Gemma-2": Gemma2Config(**small, intermediate_size=F, num_key_value_heads=2, head_dim=16, sliding_window=16),
}
ids = torch.randint(0, 97, (1, 10))  # (B, T)
for name, hf_config in hf_configs.items():
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():  # move every weight off its init (norms off 1, biases off 0)
            p.add_(torch.randn(p.shape) * 0.05)
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        model = tinyslm.load_pretrained(folder)
    c = model.config
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    print(f"{name:9s} block={c.block:21s} sandwich={c.sandwich_norms!s:5s} ffn={c.ffn}/{c.activation:9s} "
          f"norm={c.norm:12s} |logits diff| {diff:.1e}")  # fmt: skip
    assert diff < 1e-5
    assert estimate_parameters(c) == n_params(model) == n_params(hf)
    hf_layer = hf.base_model.layers[0]
    assert n_params(model.blocks[0]) == n_params(hf_layer)
    assert n_params(model.blocks[0].ffn) == ffn_parameters_of(c)
    assert n_params(model.blocks[0].attn) == attention_parameters(c)

# %% [markdown]
# ## Exercises
#
# **1. SwiGLU.** Write the gated SiLU FFN from its three weight matrices, stored as `nn.Linear` stores them
# (out_features x in_features): w_gate and w_up are (F, D), w_down is (D, F). No biases.

# %%
def swiglu(x, w_gate, w_up, w_down):
    # x: (..., D), w_gate: (F, D), w_up: (F, D), w_down: (D, F) -> (..., D)
    raise NotImplementedError  # your code here


lesson05.check_swiglu(swiglu)

# %% [markdown]
# **2. Counting.** Return the number of parameters of an FFN: `kind` is "gated" or "plain", `dim` is D,
# `hidden` is F, `bias` says whether every matrix has a bias.

# %%
def ffn_parameters(kind, dim, hidden, bias):
    # -> int
    raise NotImplementedError  # your code here


lesson05.check_ffn_parameters(ffn_parameters)
