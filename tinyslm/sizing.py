"""How many parameters a config describes, counted without building the model.

A model is counted on the meta device (no memory) from one block per distinct layer spec: a
26-layer Gemma-2 has two kinds of block (sliding and full), and a config.json that claims ten
million layers is counted as fast as one. Loading (checkpoint.py, gguf/loader.py) counts first and
refuses a config far beyond any real model before minutes go into building it; tools/stats.py
builds its breakdowns on the same two functions.
"""

from __future__ import annotations

import torch

from .config import ModelConfig
from .errors import ConfigError
from .model import CausalLM

MAX_PARAMETERS = 10**12  # what load_pretrained / inspect will build: far above any small (or large) LM


def meta_model(config: ModelConfig) -> CausalLM:
    """The model's structure on the meta device: every parameter's shape, no memory."""
    with torch.device("meta"):
        return CausalLM(config)


def representative(config: ModelConfig) -> tuple[ModelConfig, list[int]]:
    """A config with one layer per distinct layer spec, and how many stored layers each one stands for."""
    counts = config.layer_spec_counts()
    specs = list(counts)
    sliding = [s.window is not None for s in specs]
    varies = lambda values, default: None if all(v == default for v in values) else [*values]  # noqa: E731
    small = config.replace(
        n_layers=len(specs),
        layer_n_heads=varies([s.n_heads for s in specs], config.n_heads),
        layer_n_kv_heads=varies([s.n_kv_heads for s in specs], config.n_kv_heads),
        layer_ffn_dim=varies([s.ffn_dim for s in specs], config.ffn_dim),
        layer_types=["sliding" if s else "full" for s in sliding] if any(sliding) else None,
        sliding_pattern=None,
        sliding_window=config.sliding_window if any(sliding) else None,
        rope_local_theta=config.rope_local_theta if any(sliding) else None,
        block_sharing="none",
        block_schedule=None,
    )
    return small, list(counts.values())


def times_stored(config: ModelConfig, counts: list[int], name: str) -> int:
    """How many stored copies a parameter of `representative`'s model stands for: its block's count of
    layers, or once for a parameter outside the blocks and for MobiLlama's FFN, which every block shares."""
    if not name.startswith("blocks.") or (config.shared_ffn and ".ffn." in name):
        return 1
    return counts[int(name.split(".")[1])]


def estimate_parameters(config: ModelConfig) -> int:
    """The model's parameter count (distinct Parameters: a tied head or a shared block once)."""
    small, counts = representative(config)
    return sum(p.numel() * times_stored(config, counts, name) for name, p in meta_model(small).named_parameters())


def check_buildable(config: ModelConfig, source: str) -> int:
    """The model's parameter count; refuses a config of more than MAX_PARAMETERS, naming `source`."""
    n = estimate_parameters(config)
    if n > MAX_PARAMETERS:
        raise ConfigError(
            f"{source}: describes a model of {n:.3g} parameters (n_layers={config.n_layers}, dim={config.dim}, "
            f"vocab_size={config.vocab_size}); tinyslm builds at most {MAX_PARAMETERS:.0e}"
        )
    return n
