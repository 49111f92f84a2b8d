# %% [markdown]
# # 09 · Sharing and scaling: where the parameters go
#
# **Goal.** See three ways small models spend a fixed parameter budget differently from a uniform stack:
# OpenELM gives each layer its own number of heads and FFN width (layer-wise scaling; the residual width stays
# the same), MobileLLM runs each block twice (block sharing), and MobiLlama uses one FFN in every block (a
# shared FFN).
#
# **Assumes.** Lesson 05 (blocks: attention + FFN, and their parameter counts), lesson 04 (GQA), and what
# `loss.backward()` does.
#
# **You will see** (each one asserted):
# - OpenELM-270M's per-layer heads and FFN widths, from its two multipliers, and its parameter count: a closed
#   form over the layers equals `tinyslm.sizing.estimate_parameters`, `model_stats` and a built model;
# - MobileLLM's block sharing doubles the depth and adds no parameter; the shared block's gradient is the sum of
#   the gradients of its two uses (compared with an unshared copy), and transformers' Llama with the same layer
#   module used twice gives the same logits and the same gradient;
# - MobiLlama's shared FFN: one set of FFN parameters, whose gradient sums over every block, again equal to
#   transformers' Llama sharing one MLP module.
#
# **Sources.**
# - Mehta et al. 2024, *OpenELM*: https://arxiv.org/abs/2404.14619, and its config:
#   https://huggingface.co/apple/OpenELM-270M (the rule comes from *DeLighT*, https://arxiv.org/abs/2008.00623)
# - Liu et al. 2024, *MobileLLM*: https://arxiv.org/abs/2402.14905 (section 2.3, immediate block-wise sharing),
#   https://huggingface.co/facebook/MobileLLM-125M
# - Thawakar et al. 2024, *MobiLlama*: https://arxiv.org/abs/2402.16840, https://huggingface.co/MBZUAI/MobiLlama-05B
# - transformers' Llama: https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py

# %%
import tinyslm  # first, before torch: it shortens OpenMP's spin-wait, which a busy machine pays for

import matplotlib.pyplot as plt
import torch

from tinyslm import CausalLM, ModelConfig
from tinyslm.course import lesson09, show
from tinyslm.layerwise import make_divisible, multipliers, openelm_layer_sizes
from tinyslm.sizing import estimate_parameters
from tinyslm.tools.stats import model_stats
from tinyslm.train import next_token_loss

torch.manual_seed(0)


def n_parameters(model: torch.nn.Module) -> int:
    """Distinct Parameters (a tied or shared one counted once: .parameters() yields each tensor once)."""
    return sum(p.numel() for p in model.parameters())


# %% [markdown]
# ## 1. OpenELM: layer-wise scaling
#
# A uniform transformer gives every layer the same heads and FFN width. OpenELM instead spaces two multipliers
# linearly over the L layers, endpoints included (layer 0 gets the first value, layer L − 1 the last, as
# `np.linspace(first, last, L)` spaces them), α for the query width and β for the FFN width, each rounded to 2
# decimals:
#
#     query dims of layer l = make_divisible(α_l · dim, head_dim · groups),   heads = query dims / head_dim
#     KV heads              = heads / groups
#     FFN width             = make_divisible(β_l · dim, divisor)
#
# `make_divisible(value, divisor)` rounds to the nearest multiple of the divisor (a half rounds up), never below
# the divisor itself, and never more than 10% below the value; exactly, as `tinyslm.layerwise` writes it:
#
#     m = max(divisor, int(value + divisor / 2) // divisor * divisor)
#     if m < 0.9 * value: m += divisor
#
# OpenELM-270M: dim 1280, head_dim 64, 16 layers, α from 0.5 to 1.0, β from 0.5 to 4.0,
# 4 query heads per KV head, FFN divisor 256.

# %%
openelm_270m = ModelConfig.from_dict(dict(
    name="openelm-270m", family="openelm", vocab_size=32000, dim=1280, n_layers=16, head_dim=64, max_seq_len=2048,
    qk_norm=True, rope_fp32=True, norm_eps=1e-6, tie_embeddings=True,
    layer_scaling=dict(qkv_multipliers=[0.5, 1.0], ffn_multipliers=[0.5, 4.0], gqa_groups=4, ffn_divisor=256),
))  # fmt: skip
L = openelm_270m.n_layers
alphas = multipliers([0.5, 1.0], L, "qkv_multipliers")
betas = multipliers([0.5, 4.0], L, "ffn_multipliers")
sizes = openelm_layer_sizes(dim=1280, head_dim=64, n_layers=L, qkv_multipliers=[0.5, 1.0], ffn_multipliers=[0.5, 4.0],
                            gqa_groups=4, ffn_divisor=256)  # fmt: skip
specs = [openelm_270m.layer(i) for i in range(L)]  # what the model builds, layer by layer
print("alpha:   ", alphas)
print("heads:   ", [s.n_heads for s in specs])
print("KV heads:", [s.n_kv_heads for s in specs])
print("FFN:     ", [s.ffn_dim for s in specs])

assert [s.n_heads for s in specs] == sizes["layer_n_heads"]
assert [s.n_kv_heads for s in specs] == sizes["layer_n_kv_heads"]
assert [s.ffn_dim for s in specs] == sizes["layer_ffn_dim"]
for a, b, s in zip(alphas, betas, specs):  # each layer follows the rule
    assert s.n_heads * 64 == make_divisible(1280 * a, 64 * 4) and s.n_heads == 4 * s.n_kv_heads
    assert s.ffn_dim == make_divisible(1280 * b, 256) and s.ffn_dim % 256 == 0
assert sizes["layer_n_heads"] == sorted(sizes["layer_n_heads"])  # widths only grow with depth
assert sizes["layer_ffn_dim"][-1] > 6 * sizes["layer_ffn_dim"][0]

# %% [markdown]
# The parameters of one layer, written out (GQA attention with a q/k RMSNorm over each head's head_dim, one
# weight shared by all heads, a SwiGLU FFN of three matrices, two RMSNorms), and the model's total (a tied head: the embedding is stored once):

# %%
def openelm_layer_parameters(dim: int, head_dim: int, heads: int, kv_heads: int, ffn: int) -> int:
    attention = dim * (heads + 2 * kv_heads) * head_dim + heads * head_dim * dim  # wq, wk, wv, wo
    qk_norms = 2 * head_dim  # one RMSNorm over head_dim for q, one for k, each weight shared by all heads
    return attention + qk_norms + 3 * dim * ffn + 2 * dim  # + gate, up, down + attn_norm, ffn_norm


def openelm_parameters(config: ModelConfig) -> int:
    layers = [config.layer(i) for i in range(config.n_layers)]
    blocks = sum(openelm_layer_parameters(config.dim, config.head_dim, s.n_heads, s.n_kv_heads, s.ffn_dim) for s in layers)
    return config.vocab_size * config.dim + blocks + config.dim  # embedding (= head) + blocks + final norm


per_layer = [openelm_layer_parameters(1280, 64, s.n_heads, s.n_kv_heads, s.ffn_dim) for s in specs]
total = openelm_parameters(openelm_270m)
print(f"OpenELM-270M: {total:,} parameters; layer 0 holds {per_layer[0]:,}, layer {L - 1} holds {per_layer[-1]:,}")
assert total == estimate_parameters(openelm_270m) == model_stats(openelm_270m).parameters  # on the meta device

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.step(range(L), [s.n_heads for s in specs], where="mid", label="query heads")
ax1.step(range(L), [s.n_kv_heads for s in specs], where="mid", label="KV heads")
ax1.set(xlabel="layer", ylabel="heads", title="OpenELM-270M: heads per layer")
ax1.legend()
ax2.bar(range(L), [p / 1e6 for p in per_layer], color="tab:green", label="parameters (M)")
ax2b = ax2.twinx()
ax2b.plot(range(L), [s.ffn_dim for s in specs], "k.-", label="FFN width")
ax2.set(xlabel="layer", ylabel="parameters (M)", title="parameters and FFN width per layer")
ax2b.set_ylabel("FFN width")
fig.tight_layout()
show(fig)

# %% [markdown]
# The same rule on a tiny OpenELM, built for real: its parameters, counted one by one, equal the closed form.

# %%
tiny_openelm = ModelConfig.from_dict(dict(
    family="openelm", vocab_size=96, dim=128, n_layers=4, head_dim=16, max_seq_len=64, qk_norm=True,
    tie_embeddings=True, layer_scaling=dict(qkv_multipliers=[0.5, 1.0], ffn_multipliers=[0.5, 4.0], gqa_groups=2,
                                            ffn_divisor=32),
))  # fmt: skip
tiny = CausalLM(tiny_openelm)
print("tiny OpenELM heads per layer:", [b.attn.n_heads for b in tiny.blocks])
assert [b.attn.n_heads for b in tiny.blocks] == list(tiny_openelm.layer_n_heads)
assert n_parameters(tiny) == openelm_parameters(tiny_openelm) == estimate_parameters(tiny_openelm)

# %% [markdown]
# ## 2. MobileLLM: run each block twice
#
# MobileLLM found that, below a billion parameters, depth matters more than width, and that depth can be had
# at no parameter cost: store L blocks and run each twice in a row (0, 0, 1, 1, ...). The weights are the same, so the
# parameter count is unchanged; compute and the KV cache (one slot per depth step) double.

# %%
base = dict(vocab_size=96, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=64, tie_embeddings=True)
shared_config = ModelConfig(**base, block_sharing="immediate")
shared = CausalLM(shared_config).init_weights(std=0.1, seed=0)
print("stored blocks:", shared_config.n_layers, " schedule:", shared_config.schedule())

# the unshared copy: 4 stored blocks, block 2i and 2i + 1 holding shared block i's weights
deep = CausalLM(ModelConfig(**{**base, "n_layers": 4}))
state = {k: v for k, v in shared.state_dict().items() if not k.startswith("blocks.")}
for step, block in enumerate(shared_config.schedule()):
    state |= {f"blocks.{step}.{k}": v for k, v in shared.blocks[block].state_dict().items()}
deep.load_state_dict(state)

assert shared_config.schedule() == [0, 0, 1, 1]
assert n_parameters(shared) == n_parameters(CausalLM(ModelConfig(**base)))  # sharing adds no parameter
assert n_parameters(deep) > n_parameters(shared)
assert len(shared.new_cache(1, 8).layers) == 4  # one KV-cache slot per depth step
stats = model_stats(shared_config)
assert stats.effective_depth == 4 and stats.parameters == n_parameters(shared)

# %% [markdown]
# What does training see? A Parameter used twice receives the sum of the gradients of both uses (autograd adds
# them up). Train-step both models on the same tokens and compare. The loss is `tinyslm.train.next_token_loss`,
# which takes targets already shifted: the logits of positions 0..T−2 against the tokens 1..T−1.

# %%
ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
targets = ids[:, 1:]  # (B, T - 1): position t predicts token t + 1


for model in (shared, deep):
    model.zero_grad()
    next_token_loss(model(ids)[:, :-1], targets).backward()
assert torch.allclose(shared(ids), deep(ids), atol=1e-6)  # the same function

worst = 0.0
for block in range(shared_config.n_layers):
    for name, p in shared.blocks[block].named_parameters():
        uses = [deep.blocks[step].get_parameter(name).grad for step, b in enumerate(shared_config.schedule()) if b == block]
        assert len(uses) == 2
        worst = max(worst, (p.grad - sum(uses)).abs().max().item())
        assert torch.allclose(p.grad, sum(uses), atol=1e-6), name
print(f"shared block grad vs the sum over its two uses: max difference {worst:.1e}")

# %% [markdown]
# transformers has no MobileLLM class (the checkpoints ship their own code), but its Llama can run the same
# thing: put the *same* decoder-layer module at two depths. We build a Llama of 4 depths that hold 2 distinct
# layer modules (0, 0, 1, 1), give its weights to tinyslm's shared model, and compare logits and the shared layer's gradient.

# %%
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()
torch.manual_seed(0)
hf_config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                     rms_norm_eps=shared_config.norm_eps, tie_word_embeddings=True,
                                     attn_implementation="eager")  # fmt: skip
hf = transformers.LlamaForCausalLM(hf_config)
layers = hf.model.layers
hf.model.layers = torch.nn.ModuleList([layers[0], layers[0], layers[1], layers[1]])  # 0, 0, 1, 1: shared modules
with torch.no_grad():
    for p in hf.parameters():
        p.add_(0.05 * torch.randn(p.shape))

# tinyslm's names for transformers' Llama tensors (what the llama family's key map does when loading a folder)
names = {"tok_emb.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}
for i in range(2):
    hf_layer = f"model.layers.{2 * i}."
    for ours, theirs in [("attn.wq", "self_attn.q_proj"), ("attn.wk", "self_attn.k_proj"), ("attn.wv", "self_attn.v_proj"),
                         ("attn.wo", "self_attn.o_proj"), ("ffn.gate", "mlp.gate_proj"), ("ffn.up", "mlp.up_proj"),
                         ("ffn.down", "mlp.down_proj"), ("attn_norm", "input_layernorm"),
                         ("ffn_norm", "post_attention_layernorm")]:  # fmt: skip
        names[f"blocks.{i}.{ours}.weight"] = hf_layer + theirs + ".weight"
hf_params = dict(hf.named_parameters(remove_duplicate=False))
shared.load_state_dict({ours: hf_params[theirs].detach() for ours, theirs in names.items()}, strict=False)
assert shared.head.weight is shared.tok_emb.weight

for model, logits_of in ((shared, lambda: shared(ids)), (hf, lambda: hf(ids, use_cache=False).logits)):
    model.zero_grad()
    next_token_loss(logits_of()[:, :-1], targets).backward()
with torch.no_grad():
    assert torch.allclose(shared(ids), hf(ids, use_cache=False).logits, atol=1e-5)
for ours, theirs in names.items():
    assert torch.allclose(shared.get_parameter(ours).grad, hf_params[theirs].grad, atol=1e-5), ours
print("tinyslm's shared blocks = transformers' Llama with one layer module at two depths: logits and gradients")

# %% [markdown]
# ## 3. MobiLlama: one FFN for every block
#
# MobiLlama keeps each block's attention but shares a single FFN module across all blocks: the FFN is most of a
# block's parameters (3·dim·ffn_dim against 4·dim² for MHA attention), so the model stores it once. With
# `shared_ffn=True` every block holds the very same module.

# %%
mobillama_config = ModelConfig(**{**base, "n_layers": 3, "n_kv_heads": 4, "tie_embeddings": False}, shared_ffn=True)
mobillama = CausalLM(mobillama_config).init_weights(std=0.1, seed=0)
unshared = CausalLM(mobillama_config.replace(shared_ffn=False))
unshared.load_state_dict(mobillama.state_dict())  # every block's FFN a copy of the one shared FFN

ffn_parameters = n_parameters(mobillama.blocks[0].ffn)
assert all(block.ffn is mobillama.blocks[0].ffn for block in mobillama.blocks)
assert ffn_parameters == 3 * 64 * 96
assert n_parameters(unshared) - n_parameters(mobillama) == 2 * ffn_parameters  # stored once instead of 3 times
assert model_stats(mobillama_config).parameters == n_parameters(mobillama) == estimate_parameters(mobillama_config)

for model in (mobillama, unshared):
    model.zero_grad()
    next_token_loss(model(ids)[:, :-1], targets).backward()
for name, p in mobillama.blocks[0].ffn.named_parameters():
    total_grad = sum(block.ffn.get_parameter(name).grad for block in unshared.blocks)
    assert torch.allclose(p.grad, total_grad, atol=1e-6), name
print(f"FFN stored once ({ffn_parameters:,} parameters), its gradient = the sum over the 3 blocks")

# %% [markdown]
# And against transformers: a 3-layer Llama (MHA) whose layers hold one and the same `LlamaMLP` module.

# %%
torch.manual_seed(1)
hf_config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                                     rms_norm_eps=mobillama_config.norm_eps, tie_word_embeddings=False,
                                     attn_implementation="eager")  # fmt: skip
hf = transformers.LlamaForCausalLM(hf_config)
for layer in hf.model.layers[1:]:
    layer.mlp = hf.model.layers[0].mlp  # one module, three uses
with torch.no_grad():
    for p in hf.parameters():
        p.add_(0.05 * torch.randn(p.shape))

names = {"tok_emb.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
         "head.weight": "lm_head.weight"}  # fmt: skip
for i in range(3):
    for ours, theirs in [("attn.wq", "self_attn.q_proj"), ("attn.wk", "self_attn.k_proj"), ("attn.wv", "self_attn.v_proj"),
                         ("attn.wo", "self_attn.o_proj"), ("attn_norm", "input_layernorm"),
                         ("ffn_norm", "post_attention_layernorm")]:  # fmt: skip
        names[f"blocks.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
for ours, theirs in [("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")]:
    names[f"blocks.0.ffn.{ours}.weight"] = f"model.layers.0.mlp.{theirs}.weight"
hf_params = dict(hf.named_parameters(remove_duplicate=False))
mobillama.load_state_dict({ours: hf_params[theirs].detach() for ours, theirs in names.items()}, strict=False)

for model, logits_of in ((mobillama, lambda: mobillama(ids)), (hf, lambda: hf(ids, use_cache=False).logits)):
    model.zero_grad()
    next_token_loss(logits_of()[:, :-1], targets).backward()
with torch.no_grad():
    assert torch.allclose(mobillama(ids), hf(ids, use_cache=False).logits, atol=1e-5)
for ours, theirs in names.items():
    assert torch.allclose(mobillama.get_parameter(ours).grad, hf_params[theirs].grad, atol=1e-5), ours
print("tinyslm's shared FFN = transformers' Llama with one MLP module in every layer: logits and gradients")

# %% [markdown]
# ## Exercise
#
# **OpenELM's per-layer sizes.** Write `openelm_sizes(dim, head_dim, n_layers, qkv_multipliers, ffn_multipliers,
# gqa_groups, ffn_divisor)`, with the multipliers given as (first, last) pairs, returning a dict with
# `"layer_n_heads"`, `"layer_n_kv_heads"` and `"layer_ffn_dim"`, one int per layer. Space each multiplier
# linearly from first to last over the n_layers, both endpoints included, and round each to 2 decimals. Write
# `make_divisible` yourself too, exactly as section 1 gives it: m = max(divisor, int(value + divisor / 2) //
# divisor · divisor), plus one more divisor if m < 0.9 · value.

# %%
def openelm_sizes(dim, head_dim, n_layers, qkv_multipliers, ffn_multipliers, gqa_groups, ffn_divisor):
    # -> {"layer_n_heads": [...], "layer_n_kv_heads": [...], "layer_ffn_dim": [...]}, n_layers ints each
    raise NotImplementedError  # your code here


lesson09.check_openelm_sizes(openelm_sizes)
