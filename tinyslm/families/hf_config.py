"""Reading an HF config.json, in both forms real checkpoints ship.

    legacy Hub form (what TinyLlama / Qwen2 folders carry):   "rope_theta": 1e6, "rope_scaling": {"type": ...},
                                                              "torch_dtype": "bfloat16"
    current transformers form (5.x save_pretrained):          "rope_parameters": {"rope_type": ..., "rope_theta": ...},
                                                              "dtype": "bfloat16"

`HFConfig` gives one view of either: `rope()` returns (theta, scaling, partial_rotary_factor)
with scaling in the current `rope_type` spelling, and `require(key)` fails with the file and key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError

# RoPE types whose formula needs the pre-training context; HF fills it from max_position_embeddings.
_NEEDS_ORIGINAL_CONTEXT = ("llama3", "yarn", "longrope")


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
        if not path.is_file():
            raise CheckpointError(f"{folder}: no config.json (a checkpoint folder needs config.json + *.safetensors)")
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise CheckpointError(f"{path}: expected a JSON object, found {type(values).__name__}")
        return cls(values, str(path))

    def require(self, key: str) -> Any:
        if self.get(key) is None:
            raise ConfigError(f"{self.source}: missing key {key!r} (model_type {self.get('model_type')!r})")
        return self[key]

    def dtype(self) -> str:
        return str(self.get("dtype") or self.get("torch_dtype") or "float32")

    def rope(self) -> tuple[float, dict[str, Any] | None, float]:
        """(rope_theta, rope_scaling or None, partial_rotary_factor) from either config form."""
        params = self.get("rope_parameters")
        if params:
            if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
                raise ConfigError(f"{self.source}: per-layer-type rope_parameters are not supported")
            theta = params.get("rope_theta", self.get("rope_theta", 10000.0))
            partial = params.get("partial_rotary_factor", self.get("partial_rotary_factor", 1.0))
            scaling = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
        else:
            theta = self.get("rope_theta", 10000.0)
            partial = self.get("partial_rotary_factor", 1.0)
            scaling = dict(self.get("rope_scaling") or {})
        if "type" in scaling:
            scaling.setdefault("rope_type", scaling.pop("type"))
        if scaling.get("rope_type", "default") == "default":
            return float(theta), None, float(partial)
        if scaling["rope_type"] in _NEEDS_ORIGINAL_CONTEXT:
            scaling.setdefault("original_max_position_embeddings", self.get("max_position_embeddings"))
        return float(theta), scaling, float(partial)
