"""Parity cases for every family tests/families/test_parity.py checks, grouped in modules by family
(gemma.py holds gemma, gemma2 and gemma3_text; phi.py holds phi and phi3; llama.py the Llama-bodied
TinyLlama / SmolLM / Llama-3.2 / Danube shapes).

Each module defines CASES = {name: Case(...)}: how to build the seeded random-init reference and
the shrunken real hyper-parameters (the source of each shape is cited beside it). A case's
reference is one of
  * a transformers class: `config_cls` + `hparams`, built by hf_models.build_hf_model (MLA's
    DeepseekV2Config included; its `decode_paths` make every check run on each MLA decode path);
  * remote code (OpenELM, MobileLLM, MobiLlama, MiniCPM 1B/2B): `remote` writes the checkpoint in
    the model's real layout and returns a forward assembled from transformers' own modules.
`all_cases()` gathers them all, so adding a family means adding a file here, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class Case:
    config_cls: str | None  # transformers config class, e.g. "MistralConfig"; None for a remote-code family
    hparams: dict = field(default_factory=dict)  # shrunken real hyper-parameters (vocab_size sizes the prompts)
    prompt: int = 11  # prompt length; longer than the sliding window wherever the family has one
    # max |ours - theirs| / max |theirs| in bfloat16, as measured (see the case); a dict gives one per MLA decode
    # path; None where there is no transformers class to run in bfloat16 (remote code)
    bf16_tolerance: float | dict[str, float] | None = 1e-3
    window: int | None = None  # the sliding window, when the case has one (cache tests probe around it)
    # the family's legacy Hub spelling, applied to config.json after hf_models.to_legacy_config
    # (e.g. GPT-NeoX's rotary_pct / rotary_emb_base); None when the generic rewrite is the Hub form
    legacy_rewrite: Callable[[dict], dict] | None = None
    perturb: str = "add"  # hf_models.build_hf_model's perturbation of the random init
    decode_paths: tuple[str, ...] = ()  # MLA: the decode paths each check runs on; () for one-path attention
    # LongRoPE: the 16-token greedy continuation crosses into long_factor, where transformers' cached keys keep
    # the short rotation (layers/rope.py), so a decode step no longer equals a full forward over the sequence
    crosses_rope_switch: bool = False
    # a real model's full width at 2 layers: only the float32 logits / greedy check, in the legacy config form
    full_width: bool = False
    # remote code: remote(folder, legacy) writes config.json + model.safetensors to folder (config.json in the
    # legacy Hub form when legacy) and returns the reference forward, ids (B, T) -> float32 logits (B, T, V)
    remote: Callable[[Path, bool], Callable[[torch.Tensor], torch.Tensor]] | None = None
    family: str = ""  # the family (one fast case each); default: the transformers config class
    # facts about the loaded model beyond its numbers (a shared head, per-layer widths, MLA's softmax scale),
    # expect(model, hf_model) with hf_model None for remote code
    expect: Callable[[torch.nn.Module, torch.nn.Module | None], None] | None = None
    forms: tuple[str, ...] = ("current", "legacy")  # the config.json forms the checkpoint is written in

    def __post_init__(self):
        if (self.config_cls is None) == (self.remote is None):
            raise ValueError("a case names a transformers config class or a remote-code reference, not both")
        if not self.family:
            object.__setattr__(self, "family", self.config_cls)

    @property
    def vocab_size(self) -> int:
        return self.hparams["vocab_size"]

    def bf16_tolerances(self) -> dict[str | None, float]:
        """{decode path (None: the model's only one): bf16 tolerance}."""
        tol = self.bf16_tolerance
        if isinstance(tol, dict):
            return dict(tol)
        return {path: tol for path in (self.decode_paths or (None,))}


def all_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, case in module.CASES.items():
            assert name not in cases, f"duplicate case name {name}"
            cases[name] = case
    return dict(sorted(cases.items()))
