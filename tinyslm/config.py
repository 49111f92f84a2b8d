"""ModelConfig: one dataclass describes every decoder-only model tinyslm builds.

A config is data. The model reads it to decide which modules to build (composition, not flags
inside the forward pass), the loaders produce it from an HF config.json (see `families/`), and
`configs/*.toml` store real ones. The fields are grouped as the model is:

    embedding -> n_layers x [norm -> attention -> residual, norm -> FFN -> residual] -> norm -> head

Room for what later issues need is here from the start: per-layer head / KV-head / FFN-width
overrides (OpenELM's layer-wise scaling), a block-sharing scheme (MobileLLM), an attention kind
(mha / mqa / gqa / mla) and MLA's latent dimensions.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

ATTENTION_KINDS = ("mha", "mqa", "gqa", "mla")
NORMS = ("rmsnorm", "layernorm")
FFN_KINDS = ("gated", "plain")
ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")
ROPE_LAYOUTS = ("half", "interleaved")
BLOCK_SHARING = ("none", "immediate", "cyclic")


@dataclass(frozen=True)
class LayerShape:
    """The sizes of one transformer layer (they differ per layer under layer-wise scaling)."""

    n_heads: int
    n_kv_heads: int
    ffn_dim: int


@dataclass
class ModelConfig:
    # --- identity -------------------------------------------------------------------------
    name: str = "custom"
    family: str = "llama"  # HF model_type used when saving; see tinyslm/families/

    # --- sizes ----------------------------------------------------------------------------
    vocab_size: int = 32000
    dim: int = 512  # hidden size (d_model)
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int | None = None  # None -> n_heads (MHA); 1 -> MQA; in between -> GQA
    head_dim: int | None = None  # None -> dim // n_heads; Qwen3 and Gemma set it explicitly
    ffn_dim: int = 1376  # FFN inner width (intermediate_size)
    max_seq_len: int = 2048  # context the model was trained for (max_position_embeddings)

    # --- attention ------------------------------------------------------------------------
    attention: str | None = None  # mha | mqa | gqa | mla; None -> derived from n_kv_heads
    qkv_bias: bool = False  # Qwen2 has biases on q/k/v only
    out_bias: bool = False  # bias on the attention output projection
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k, before RoPE
    attn_softcap: float | None = None  # extension point: tanh soft-capping of attention logits
    sliding_window: int | None = None  # extension point: each query sees at most this many keys

    # --- MLA (attention = "mla"), DeepSeek-V2 names ---------------------------------------
    q_lora_rank: int | None = None  # None -> plain query projection
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None

    # --- position encoding ----------------------------------------------------------------
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # HF form: {"rope_type": "llama3", "factor": 32, ...}
    partial_rotary_factor: float = 1.0  # fraction of head_dim that is rotated
    rope_layout: str = "half"  # "half" (rotate_half, HF) or "interleaved" (Meta / DeepSeek pairs)

    # --- FFN and norms --------------------------------------------------------------------
    ffn: str = "gated"  # gated: down(act(gate x) * up x); plain: down(act(up x))
    activation: str = "silu"
    ffn_bias: bool = False
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5

    # --- embeddings -----------------------------------------------------------------------
    tie_embeddings: bool = False  # lm-head weight *is* the embedding weight (one Parameter)

    # --- layer-wise scaling (OpenELM) and block sharing (MobileLLM) -----------------------
    layer_n_heads: list[int] | None = None  # per-layer overrides; None -> the global value
    layer_n_kv_heads: list[int] | None = None
    layer_ffn_dim: list[int] | None = None
    block_sharing: str = "none"  # none | immediate (A A B B ...) | cyclic (A B ... A B ...)
    share_repeats: int = 2  # how many times each stored block runs when sharing

    # --- tokens and storage ---------------------------------------------------------------
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    dtype: str = "float32"  # dtype the weights were stored in (informational)

    def __post_init__(self) -> None:
        self._check_types()
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.n_heads <= 0 or self.dim % self.n_heads:
                raise ConfigError(
                    f"config {self.name!r}: dim={self.dim} is not divisible by n_heads={self.n_heads}; "
                    "set head_dim explicitly"
                )
            self.head_dim = self.dim // self.n_heads
        if self.attention is None:
            self.attention = _attention_kind(self.n_heads, self.n_kv_heads)
        self.validate()

    # ------------------------------------------------------------------------------------
    def layer(self, i: int) -> LayerShape:
        """Sizes of layer i, with per-layer overrides applied."""
        pick = lambda per_layer, default: default if per_layer is None else per_layer[i]  # noqa: E731
        return LayerShape(
            n_heads=pick(self.layer_n_heads, self.n_heads),
            n_kv_heads=pick(self.layer_n_kv_heads, self.n_kv_heads),
            ffn_dim=pick(self.layer_ffn_dim, self.ffn_dim),
        )

    def schedule(self) -> list[int]:
        """Which stored block runs at each depth step (MobileLLM's block-wise sharing).

        none:      [0, 1, 2]            immediate: [0, 0, 1, 1, 2, 2]      cyclic: [0, 1, 2, 0, 1, 2]
        Every step has its own KV-cache slot, even when the weights are shared.
        """
        blocks = list(range(self.n_layers))
        if self.block_sharing == "immediate":
            return [b for b in blocks for _ in range(self.share_repeats)]
        if self.block_sharing == "cyclic":
            return blocks * self.share_repeats
        return blocks

    @property
    def rotary_dim(self) -> int:
        """How many dims of each query/key head RoPE rotates."""
        if self.attention == "mla":
            return self.qk_rope_head_dim
        return int(self.head_dim * self.partial_rotary_factor)

    # ------------------------------------------------------------------------------------
    def _check_types(self) -> None:
        """Every field against its annotation, before anything is derived from it ("512" is not 512)."""
        for f in dataclasses.fields(self):
            value, alternatives = getattr(self, f.name), f.type.split(" | ")
            if not any(_TYPE_CHECKS[a](value) for a in alternatives):
                raise ConfigError(f"config {self.name!r}: {f.name} must be {' or '.join(alternatives)}, found {value!r}")

    def validate(self) -> None:
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"config {self.name!r}: {msg}")

        for key in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "max_seq_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(f"{key} must be a positive integer, found {value!r}")
        for key, allowed in (
            ("attention", ATTENTION_KINDS),
            ("norm", NORMS),
            ("ffn", FFN_KINDS),
            ("activation", ACTIVATIONS),
            ("rope_layout", ROPE_LAYOUTS),
            ("block_sharing", BLOCK_SHARING),
        ):
            if getattr(self, key) not in allowed:
                raise bad(f"{key} must be one of {', '.join(allowed)}; found {getattr(self, key)!r}")
        if self.share_repeats < 1:
            raise bad(f"share_repeats must be >= 1, found {self.share_repeats}")
        for key in ("layer_n_heads", "layer_n_kv_heads", "layer_ffn_dim"):
            per_layer = getattr(self, key)
            if per_layer is not None and len(per_layer) != self.n_layers:
                raise bad(f"{key} has {len(per_layer)} entries, expected one per layer ({self.n_layers})")
            if per_layer is not None and min(per_layer) <= 0:
                raise bad(f"{key} must hold positive integers, found {list(per_layer)}")
        for i in range(self.n_layers):
            shape = self.layer(i)
            if shape.n_kv_heads <= 0 or shape.n_heads % shape.n_kv_heads:
                raise bad(
                    f"layer {i}: n_heads={shape.n_heads} must be a positive multiple of n_kv_heads={shape.n_kv_heads}"
                )
        mla_fields = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        if self.attention == "mla":
            self._validate_mla(bad)
            if self.layer_n_heads is not None or self.layer_n_kv_heads is not None:
                raise bad("per-layer head counts (layer_n_heads / layer_n_kv_heads) are not supported with MLA")
        elif any(getattr(self, key) is not None for key in mla_fields):
            set_fields = [key for key in mla_fields if getattr(self, key) is not None]
            verb = "applies" if len(set_fields) == 1 else "apply"
            raise bad(f"{', '.join(set_fields)} only {verb} to attention='mla', but attention={self.attention!r}")
        elif self.layer_n_heads is None and self.layer_n_kv_heads is None:
            derived = _attention_kind(self.n_heads, self.n_kv_heads)
            # an MHA/MQA model is also a (degenerate) GQA model; only flag real contradictions
            if self.attention != derived and self.attention != "gqa":
                raise bad(
                    f"attention={self.attention!r} contradicts n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads} "
                    f"(that is {derived})"
                )
        from .layers.rope import rope_type_of  # noqa: PLC0415  (checks the scaling dict's type and fields)

        try:
            rope_type_of(self.rope_scaling)
        except ConfigError as exc:
            raise bad(str(exc)) from None
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise bad(f"partial_rotary_factor must be in (0, 1], found {self.partial_rotary_factor}")
        if self.rotary_dim % 2:
            raise bad(f"the rotary dimension must be even, found {self.rotary_dim}")
        if self.norm_eps <= 0:
            raise bad(f"norm_eps must be > 0, found {self.norm_eps}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise bad(f"sliding_window must be a positive integer or absent, found {self.sliding_window}")
        if self.attn_softcap is not None and self.attn_softcap <= 0:
            raise bad(f"attn_softcap must be > 0 or absent, found {self.attn_softcap}")

    def _validate_mla(self, bad) -> None:
        for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise bad(f"attention='mla' needs {key} as a positive integer, found {value!r}")
        if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank <= 0):
            raise bad(f"q_lora_rank must be a positive integer or absent, found {self.q_lora_rank!r}")
        if self.qk_rope_head_dim % 2:
            raise bad(f"qk_rope_head_dim must be even (RoPE rotates pairs), found {self.qk_rope_head_dim}")

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "<dict>") -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:  # wrong types that dataclass construction trips over
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        values.setdefault("name", path.stem)
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


_INT = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731  (True is not a head count)
_TYPE_CHECKS = {  # the annotations ModelConfig uses, one checker each
    "str": lambda v: isinstance(v, str),
    "int": _INT,
    "float": lambda v: _INT(v) or isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "None": lambda v: v is None,
    "list[int]": lambda v: isinstance(v, (list, tuple)) and all(_INT(x) for x in v),
    "dict[str, Any]": lambda v: isinstance(v, dict),
}


def _attention_kind(n_heads: int, n_kv_heads: int) -> str:
    if n_kv_heads == n_heads:
        return "mha"
    if n_kv_heads == 1:
        return "mqa"
    return "gqa"


def dtype_from_name(name: str):
    """'bfloat16' / 'bf16' / 'torch.float16' -> torch dtype, with a clear error."""
    import torch

    aliases = {
        "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    }  # fmt: skip
    key = str(name).removeprefix("torch.").lower()
    if key not in aliases:
        raise ConfigError(f"unknown dtype {name!r}; use one of float32, bfloat16, float16")
    return aliases[key]

