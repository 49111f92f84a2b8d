"""Reference checkpoints for tests: seeded random-init transformers models written to disk.

Nothing is downloaded. A test names a transformers config class and (shrunken) real
hyper-parameters; `build_hf_model` builds the HF model and perturbs every parameter (so norm
weights are not all ones and biases not all zeros, which would hide mapping mistakes);
`write_hf_checkpoint` also saves it with `save_pretrained`, and can rewrite config.json in the
legacy Hub form real checkpoints ship. `hf_greedy` is greedy decoding over transformers' own forward.

Families that ship remote code (no transformers class) write their checkpoint with `write_folder`
(config.json + model.safetensors in the model's real layout) and assemble their reference from
transformers' own modules (tests/family_cases/openelm.py, mobilellm.py, mobillama.py, minicpm.py);
`small_llama` is the Llama most of them start from, `causal_mask` what eager attention adds.

transformers is imported when a helper is called, not when this module is imported, so a test
module that imports these helpers still runs its other tests where transformers is missing (the
tests that call them are skipped).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

PERTURBATIONS = ("add", "resample")

# DeepseekV2Config hyper-parameters: DeepSeek-V2-Lite proportions, tiny (r = 4 dn, dr = dn / 2,
# v_head_dim != qk_nope_head_dim, no query LoRA), every layer dense (first_k_dense_replace =
# num_hidden_layers; transformers 5.23 rejects n_routed_experts=None).
DEEPSEEK_V2_LITE_TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=8, qk_rope_head_dim=4,
    v_head_dim=12, first_k_dense_replace=2, max_position_embeddings=2560, rms_norm_eps=1e-6,
)  # fmt: skip


def _transformers():
    return pytest.importorskip("transformers")


def build_hf_model(
    config_cls: str, seed: int = 0, *, perturb: str = "add", attn_implementation: str | None = None, **hparams
):
    """A seeded random `AutoModelForCausalLM` for `config_cls(**hparams)`, in eval mode, every parameter perturbed.

    perturb="add": add 0.05 * N(0, 1) to the random init (norm weights around 1, biases around 0).
    perturb="resample": replace every parameter: 1-D ones (norms, biases) by 1 + 0.2 * N(0, 1), the
    others by 0.15 * N(0, 1) (weights far from the init, logits of order one; tests/reference/test_mla.py's
    tolerances were tuned on this distribution).
    attn_implementation (e.g. "eager") is passed to the config when given.
    """
    if perturb not in PERTURBATIONS:
        raise ValueError(f"perturb must be one of {', '.join(PERTURBATIONS)}; found {perturb!r}")
    transformers = _transformers()
    if attn_implementation is not None:
        hparams = {**hparams, "attn_implementation": attn_implementation}
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**hparams)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if perturb == "add":
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            elif p.dim() == 1:  # resample: norms (around 1) and biases
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
    return model


def to_legacy_config(folder: Path) -> None:
    """Rewrite config.json as the Hub ships it: rope_theta / rope_scaling / torch_dtype keys."""
    path = Path(folder) / "config.json"
    cfg = json.loads(path.read_text())
    if any(isinstance(v, dict) for v in (cfg.get("rope_parameters") or {}).values()):
        cfg["torch_dtype"] = cfg.pop("dtype", "float32")  # per-layer-type RoPE: the case's legacy_rewrite handles it
        path.write_text(json.dumps(cfg, indent=2))
        return
    rope = dict(cfg.pop("rope_parameters", None) or {})
    cfg["rope_theta"] = rope.pop("rope_theta", 10000.0)
    if "partial_rotary_factor" in rope:
        cfg["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
    rope_type = rope.pop("rope_type", "default")
    cfg["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **rope}
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    path.write_text(json.dumps(cfg, indent=2))


def write_hf_checkpoint(folder: Path, config_cls: str, legacy: bool = False, seed: int = 0, **options):
    """Save a seeded random HF model to `folder`; returns the HF model (the reference).

    `options`: build_hf_model's keywords (perturb, attn_implementation) and the hyper-parameters.
    """
    model = build_hf_model(config_cls, seed=seed, **options)
    model.save_pretrained(folder)
    if legacy:
        to_legacy_config(folder)
    return model


def hf_greedy(model, ids: torch.Tensor, new_tokens: int, stop_at_eos: bool = False) -> torch.Tensor:
    """transformers' greedy continuation of `ids` (B, T) -> (B, T + n).

    Greedy decoding written out over the HF model's own forward and KV cache (argmax of the last
    logits, fed back), not `model.generate`: that applies the checkpoint's generation_config.json
    (e.g. a repetition_penalty) and, with min_new_tokens, forbids the eos token.
    By default exactly `new_tokens` are decoded, end-of-sequence tokens included (as
    tinyslm.generate without eos_token_id). stop_at_eos=True stops once every row has produced one
    of the model's eos tokens (rows that finished earlier are padded with eos), as `tinyslm generate`
    does, so n <= new_tokens.
    """
    eos = model.generation_config.eos_token_id if stop_at_eos else None
    eos = torch.tensor([] if eos is None else eos, dtype=torch.long).reshape(-1)
    finished = torch.zeros(ids.shape[0], dtype=torch.bool)
    # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns); use the model's own
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out, x, past = ids, ids, None
    with torch.no_grad():
        for _ in range(new_tokens):
            step = model(input_ids=x, **{cache_arg: past}, use_cache=True)
            past = getattr(step, cache_arg)
            x = step.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            if eos.numel():
                x = torch.where(finished[:, None], eos[0], x)
                finished |= torch.isin(x[:, 0], eos)
            out = torch.cat([out, x], dim=1)
            if eos.numel() and bool(finished.all()):
                break
    return out


def write_folder(folder: Path, config: dict, tensors: dict[str, torch.Tensor], legacy: bool = False) -> Path:
    """config.json (in the Hub's legacy form, rope_theta at the top level, with legacy=True) + model.safetensors."""
    from safetensors.torch import save_file  # noqa: PLC0415

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if legacy:
        to_legacy_config(folder)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors")
    return folder


def small_llama(seed: int = 0, **hparams):
    """A seeded random LlamaForCausalLM (eager attention, parameters perturbed): 3 layers, 64 wide, vocabulary 96."""
    base = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5)  # fmt: skip
    return build_hf_model("LlamaConfig", seed, attn_implementation="eager", **{**base, **hparams})


def causal_mask(t: int) -> torch.Tensor:
    """(1, 1, T, T) additive mask: what transformers' eager attention adds to the scores."""
    mask = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)
    return mask[None, None]
