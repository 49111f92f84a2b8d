"""Model families: each is a config translation plus a key map, never a copy of the model.

A family module defines a `Family` with
    from_hf(HFConfig) -> ModelConfig      read a checkpoint's config.json
    to_hf(ModelConfig) -> dict            write one transformers loads back
    modules: {our module path: HF module path}, `{i}` standing for the layer index
    fused:   rules for HF tensors that hold several of ours, or hold one transposed (keymap.py)
    aliases: other names real files use for the same tensor (older hub layouts)

The key map for a concrete model is derived from the model's own parameters (`key_map`), so a
family lists only module names, and a parameter the family forgot to map is an error, not a
silently random weight.

What a family can express is decided by its own two functions: a config can be saved in a
family's format only if reading back what `to_hf` writes gives the same config
(`check_expressible`). A llama config with a sliding window, say, is refused rather than written
as a checkpoint that means something else.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Callable

from ..config import ModelConfig
from ..errors import ConfigError, UnsupportedModelError
from .gguf_arch import Arch
from .hf_config import HFConfig
from .keymap import Fused, KeyMap

__all__ = ["Family", "Fused", "KeyMap", "get_family", "families", "config_from_hf", "check_expressible"]


@dataclass(frozen=True)
class Family:
    model_type: str
    architecture: str  # HF class name written to config.json "architectures"
    from_hf: Callable[[HFConfig], ModelConfig]
    to_hf: Callable[[ModelConfig], dict]
    modules: dict[str, str]  # our module path -> HF module path ("{i}" = layer index)
    fused: tuple[Fused, ...] = ()  # split / transposed tensors (keymap.py)
    aliases: tuple[tuple[str, str], ...] = ()  # (regex, replacement): other spellings of HF tensor names
    ignored: tuple[str, ...] = ()  # regexes of non-parameter buffers real files carry
    examples: str = ""  # checkpoints known to load, listed when a model_type is not supported
    by_architecture: bool = False  # chosen by config.json's "architectures" (its model_type is another family's)
    gguf: Arch | None = None  # its GGUF form (llama.cpp architecture and metadata keys), if it has one
    _aliases: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._aliases.extend((re.compile(p), r) for p, r in self.aliases)

    def key_map(self, model) -> KeyMap:
        """The entries mapping every distinct parameter of `model` to a checkpoint tensor."""
        return KeyMap.build(model, self.modules, self.fused, self.model_type)

    def canonical(self, hf_key: str) -> str:
        """A tensor name as this family's current transformers class spells it."""
        for regex, replacement in self._aliases:
            hf_key = regex.sub(replacement, hf_key)
        return hf_key

    def is_ignored(self, hf_key: str) -> bool:
        return any(re.fullmatch(p, hf_key) for p in self.ignored)


# compared by what they resolve to (below): several spellings mean one model
_NOT_COMPARED = ("name", "dtype", "layer_types", "sliding_pattern", "sliding_window", "rope_local_theta", "attn_scale",
                 "attention")  # fmt: skip


def check_expressible(family: Family, config: ModelConfig) -> dict:
    """`family.to_hf(config)`, after checking that reading it back gives `config` again.

    Every field that does not survive the round trip is one the format cannot express; saving
    would write a checkpoint that transformers (and tinyslm) load as a different model.
    """
    hf = family.to_hf(config)
    source = f"config {config.name!r} as a {family.model_type} config.json"
    back = family.from_hf(HFConfig(json.loads(json.dumps(hf)), source))
    lost = [
        f"{f.name}={getattr(config, f.name)!r} (reads back as {getattr(back, f.name)!r})"
        for f in dataclasses.fields(ModelConfig)
        if f.name not in _NOT_COMPARED and getattr(config, f.name) != getattr(back, f.name)
    ]
    # fields with several spellings of one model (a pattern or its list, a scale or its default) are
    # compared by what they resolve to
    resolved = {
        "sliding windows per layer": lambda c: [c.layer(i).window for i in range(c.n_layers)],
        "RoPE (theta, scaling) per layer": lambda c: [c.rope_tables.get(c.layer(i).rope) for i in range(c.n_layers)],
        "attention scale": lambda c: c.head_dim**-0.5 if c.attn_scale is None else c.attn_scale,
        "attention kind": lambda c: "mla" if c.attention == "mla" else [c.layer(i).n_kv_heads for i in range(c.n_layers)],
    }
    lost += [f"{what} {view(config)!r} (reads back as {view(back)!r})" for what, view in resolved.items()
             if view(config) != view(back)]  # fmt: skip
    if lost:
        raise UnsupportedModelError(
            f"config {config.name!r}: a checkpoint of family {family.model_type!r} cannot express {'; '.join(lost)}. "
            f"Choose a family whose format has these features, or change the config"
        )
    return hf


@functools.cache
def _registry() -> dict[str, Family]:
    """Every module of this package that defines FAMILY (one file per family; nothing else to register)."""
    families = {}
    for info in pkgutil.iter_modules(__path__):
        family = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
        if isinstance(family, Family):
            families[family.model_type] = family
    return families


def families() -> dict[str, Family]:
    """{model_type: Family} of every supported family."""
    return dict(_registry())


def get_family(model_type, source: str = "config.json") -> Family:
    known = _registry()
    if not isinstance(model_type, str) or model_type not in known:
        listed = "; ".join(f"{name} ({f.examples})" for name, f in sorted(known.items()))
        raise UnsupportedModelError(f"{source}: model_type {model_type!r} is not supported; supported: {listed}")
    return known[model_type]


def by_architecture(hf: HFConfig) -> Family | None:
    """A family that claims config.json's architecture (MobiLlama's files say model_type "llama")."""
    architectures = hf.get("architectures")
    if not isinstance(architectures, list):
        return None
    claims = {f.architecture: f for f in _registry().values() if f.by_architecture}
    return next((claims[a] for a in architectures if isinstance(a, str) and a in claims), None)


def config_from_hf(hf: HFConfig) -> ModelConfig:
    """The ModelConfig of a config.json; every error names the file."""
    family = by_architecture(hf) or get_family(hf.get("model_type"), hf.source)
    try:
        return family.from_hf(hf)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(hf.source) else f"{hf.source}: {message}") from None
