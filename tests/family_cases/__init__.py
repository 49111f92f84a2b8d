"""Parity cases for the families tested by tests/test_families.py, grouped in modules by family
(gemma.py holds gemma, gemma2 and gemma3_text; phi.py holds phi and phi3).

Each module defines CASES = {name: Case(...)}: a transformers config class and shrunken real
hyper-parameters (the source of each shape is cited beside it). `all_cases()` gathers them all, so
adding a family means adding a file here, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Case:
    config_cls: str  # transformers config class, e.g. "MistralConfig"
    hparams: dict = field(default_factory=dict)  # shrunken real hyper-parameters
    prompt: int = 11  # prompt length; longer than the sliding window wherever the family has one
    bf16_tolerance: float = 1e-3  # max |ours - theirs| / max |theirs| in bfloat16, as measured (see the case)
    window: int | None = None  # the sliding window, when the case has one (cache tests probe around it)
    # the family's legacy Hub spelling, applied to config.json after hf_models.to_legacy_config
    # (e.g. GPT-NeoX's rotary_pct / rotary_emb_base); None when the generic rewrite is the Hub form
    legacy_rewrite: Callable[[dict], dict] | None = None


def all_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, case in module.CASES.items():
            assert name not in cases, f"duplicate case name {name}"
            cases[name] = case
    return dict(sorted(cases.items()))
