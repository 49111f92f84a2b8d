"""Reading an HF config.json, in both forms real checkpoints ship.

    legacy Hub form (what TinyLlama / Qwen2 folders carry):   "rope_theta": 1e6, "rope_scaling": {"type": ...},
                                                              "torch_dtype": "bfloat16"
    current transformers form (5.x save_pretrained):          "rope_parameters": {"rope_type": ..., "rope_theta": ...},
                                                              "dtype": "bfloat16"

`HFConfig` gives one view of either: `rope()` returns (theta, scaling, partial_rotary_factor)
with scaling in the current `rope_type` spelling, and `require(key)` fails with the file and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, UnsupportedModelError
from ..files import file_bool, file_number, read_json

# hidden_act / activation_function spellings -> ours, and ours -> what we write (transformers' ACT2FN names)
ACTIVATIONS_FROM_HF = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
                       "gelu_new": "gelu_new", "relu": "relu", "relu2": "relu2"}  # fmt: skip
ACTIVATIONS_TO_HF = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "gelu_new": "gelu_new",
                     "relu": "relu", "relu2": "relu2"}  # fmt: skip
# RoPE types whose formula needs the pre-training context; HF fills it from max_position_embeddings.
_NEEDS_ORIGINAL_CONTEXT = ("llama3", "yarn", "longrope")
_REQUIRED = object()


class HFConfig(dict):
    """A config.json's contents plus where they came from (for error messages)."""

    def __init__(self, values: dict[str, Any], source: str = "config.json"):
        super().__init__(values)
        self.source = source

    @classmethod
    def read(cls, folder: str | Path) -> "HFConfig":
        folder = Path(folder).expanduser()
        if not folder.exists():
            raise CheckpointError(f"{folder}: no such checkpoint folder")
        path = folder / "config.json" if folder.is_dir() else folder
        if not path.exists():
            raise CheckpointError(f"{folder}: no config.json (a checkpoint folder needs config.json + *.safetensors)")
        if path.suffix in (".safetensors", ".bin", ".pt", ".gguf"):
            raise CheckpointError(f"{path}: is a weights file; give the checkpoint folder that holds it and its config.json")
        return cls(read_json(path), str(path))

    def with_defaults(self, defaults: dict[str, Any]) -> "HFConfig":
        """This config.json with every key it leaves out set to the config class's default (an explicit value,
        null included, wins): a folder then loads as transformers, which fills the same defaults, loads it."""
        return HFConfig({**defaults, **self}, self.source)

    def require(self, key: str) -> Any:
        if self.get(key) is None:
            raise ConfigError(f"{self.source}: missing key {key!r} (model_type {self.get('model_type')!r})")
        return self[key]

    def typed(self, key: str, kind: type, default: Any = _REQUIRED) -> Any:
        """config.json[key] as an int, float or bool, with an error naming the key; `default` when absent."""
        value = self.get(key)
        if value is None:
            return self.require(key) if default is _REQUIRED else default
        if kind is bool:
            return file_bool(value, default, self.source, key, ConfigError)
        return file_number(value, kind, self.source, key, ConfigError)

    def activation(self, key: str = "hidden_act", default: str = "silu") -> str:
        """Our name for the activation config.json names under `key` (`default`: the config class's)."""
        act = self.get(key, default)
        if not isinstance(act, str) or act not in ACTIVATIONS_FROM_HF:
            raise UnsupportedModelError(f"{self.source}: {key} {act!r} is not supported ({', '.join(ACTIVATIONS_FROM_HF)})")
        return ACTIVATIONS_FROM_HF[act]

    def model_name(self, family: str) -> str:
        """_name_or_path, else the checkpoint folder's name, else the family."""
        return self.get("_name_or_path") or Path(self.source).parent.name or family

    def sized(self, key: str, alias: str, default: int) -> int:
        """An int under its family-specific name (n_layer) or its generic alias (num_hidden_layers), which wins."""
        return self.typed(alias, int) if self.get(alias) is not None else self.typed(key, int, default)

    def partial_rotary(self, default: float) -> float:
        """partial_rotary_factor as transformers resolves it: the RoPE dict, else the top level, else `default`
        (the config class's: 0.5 for Phi and Nemotron, 0.25 for StableLM)."""
        _, _, partial = self.rope()  # validates the RoPE keys
        params = self.get("rope_scaling") or self.get("rope_parameters") or {}
        given = params.get("partial_rotary_factor") is not None or self.get("partial_rotary_factor") is not None
        return partial if given else default

    def dtype(self) -> str:
        return str(self.get("dtype") or self.get("torch_dtype") or "float32")

    def rope(self) -> tuple[float, dict[str, Any] | None, float]:
        """(rope_theta, rope_scaling or None, partial_rotary_factor) from either config form.

        As transformers reads it: a non-empty `rope_scaling` wins over `rope_parameters`; theta and
        partial_rotary_factor come from that dict, else from the top level.
        """
        params = self.get("rope_scaling") or self.get("rope_parameters") or {}
        if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
            raise ConfigError(
                f"{self.source}: rope_scaling / rope_parameters must be one flat object (per-layer-type RoPE is "
                f"not supported), found {params!r}"
            )
        scaling = dict(params)
        theta = scaling.pop("rope_theta", self.get("rope_theta", 10000.0))
        partial = scaling.pop("partial_rotary_factor", self.get("partial_rotary_factor", 1.0))
        for key, value in (("rope_theta", theta), ("partial_rotary_factor", partial)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{self.source}: {key} must be a number, found {value!r}")
        if "type" in scaling:
            scaling.setdefault("rope_type", scaling.pop("type"))
        if scaling.get("rope_type", "default") == "default":
            return float(theta), None, float(partial)
        if scaling["rope_type"] in _NEEDS_ORIGINAL_CONTEXT:
            scaling.setdefault("original_max_position_embeddings", self.get("max_position_embeddings"))
        return float(theta), scaling, float(partial)
