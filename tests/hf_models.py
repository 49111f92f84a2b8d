"""Reference checkpoints for tests: seeded random-init transformers models written to disk.

Nothing is downloaded. A test names a transformers config class and (shrunken) real
hyper-parameters; `write_hf_checkpoint` builds the HF model, perturbs every parameter (so norm
weights are not all ones and biases not all zeros, which would hide mapping mistakes), saves it
with `save_pretrained`, and can rewrite config.json in the legacy Hub form real checkpoints ship.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

transformers = __import__("pytest").importorskip("transformers")


def build_hf_model(config_cls: str, seed: int = 0, **hparams):
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**hparams)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def to_legacy_config(folder: Path) -> None:
    """Rewrite config.json as the Hub ships it: rope_theta / rope_scaling / torch_dtype keys."""
    path = Path(folder) / "config.json"
    cfg = json.loads(path.read_text())
    rope = dict(cfg.pop("rope_parameters", None) or {})
    cfg["rope_theta"] = rope.pop("rope_theta", 10000.0)
    if "partial_rotary_factor" in rope:
        cfg["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
    rope_type = rope.pop("rope_type", "default")
    cfg["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **rope}
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    path.write_text(json.dumps(cfg, indent=2))


def write_hf_checkpoint(folder: Path, config_cls: str, legacy: bool = False, seed: int = 0, **hparams):
    """Save a seeded random HF model to `folder`; returns the HF model (the reference)."""
    model = build_hf_model(config_cls, seed=seed, **hparams)
    model.save_pretrained(folder)
    if legacy:
        to_legacy_config(folder)
    return model


def hf_greedy(model, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, pad_token_id=0,
        )  # fmt: skip
