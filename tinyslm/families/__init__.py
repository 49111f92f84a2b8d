"""Model families: each is a config translation plus a key map, never a copy of the model.

A family module defines a `Family` with
    from_hf(HFConfig) -> ModelConfig      read a checkpoint's config.json
    to_hf(ModelConfig) -> dict            write one transformers loads back
    modules: {our module path: HF module path}, `{i}` standing for the layer index

The key map for a concrete model is derived from the model's own parameters (`key_map`), so a
family lists only module names, and a parameter the family forgot to map is an error, not a
silently random weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError, UnsupportedModelError
from .hf_config import HFConfig


@dataclass(frozen=True)
class Family:
    model_type: str
    architecture: str  # HF class name written to config.json "architectures"
    from_hf: Callable[[HFConfig], ModelConfig]
    to_hf: Callable[[ModelConfig], dict]
    modules: dict[str, str]  # our module path -> HF module path ("{i}" = layer index)
    ignored: tuple[str, ...] = ()  # regexes of non-parameter buffers real files carry
    examples: str = ""  # checkpoints known to load, listed when a model_type is not supported
    _patterns: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        for ours, theirs in self.modules.items():
            regex = re.compile(re.escape(ours).replace(r"\{i\}", r"(?P<i>\d+)"))
            self._patterns.append((regex, theirs))

    def hf_key(self, our_key: str) -> str:
        """'blocks.3.attn.wq.bias' -> 'model.layers.3.self_attn.q_proj.bias'."""
        module, _, leaf = our_key.rpartition(".")
        for regex, theirs in self._patterns:
            match = regex.fullmatch(module)
            if match:
                return theirs.format(**match.groupdict()) + "." + leaf
        raise CheckpointError(f"family {self.model_type!r} has no checkpoint name for parameter {our_key!r}")

    def key_map(self, model) -> dict[str, str]:
        """{our parameter name: HF tensor name} for every distinct parameter (a tied head is not stored)."""
        return {name: self.hf_key(name) for name, _ in model.named_parameters()}

    def is_ignored(self, hf_key: str) -> bool:
        return any(re.fullmatch(p, hf_key) for p in self.ignored)


def _registry() -> dict[str, Family]:
    from . import deepseek_v2, llama, qwen2, qwen3  # noqa: PLC0415

    return {f.model_type: f for f in (llama.FAMILY, qwen2.FAMILY, qwen3.FAMILY, deepseek_v2.FAMILY)}


def get_family(model_type, source: str = "config.json") -> Family:
    families = _registry()
    if not isinstance(model_type, str) or model_type not in families:
        known = "; ".join(f"{name} ({f.examples})" for name, f in sorted(families.items()))
        raise UnsupportedModelError(f"{source}: model_type {model_type!r} is not supported; supported: {known}")
    return families[model_type]


def config_from_hf(hf: HFConfig) -> ModelConfig:
    """The ModelConfig of a config.json; every error names the file."""
    family = get_family(hf.get("model_type"), hf.source)
    try:
        return family.from_hf(hf)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(hf.source) else f"{hf.source}: {message}") from None
