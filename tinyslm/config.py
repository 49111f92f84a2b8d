"""ModelConfig: one dataclass describes every decoder-only model tinyslm builds.

A config is data. The model reads it to decide which modules to build (composition, not flags
inside the forward pass), the loaders produce it from an HF config.json (see `families/`), and
`configs/*.toml` store real ones. The fields are grouped as the model is:

    embedding (+ scale, learned positions, norm) -> n_layers x block -> final norm -> head (+ soft-cap)
    block: sequential  x + attn(norm(x)), then + ffn(norm(.))      (Llama; optional sandwich norms: Gemma-2/3)
           parallel    x + attn(norm1(x)) + ffn(norm2(x))           (GPT-NeoX; one shared norm: Phi-2, StableLM)

What may differ from layer to layer is resolved once into a `LayerSpec` (`config.layer(i)`): head
counts and FFN width (OpenELM's layer-wise scaling), the attention window (Gemma-2 alternates,
Gemma-3 runs 5 local layers per global one, Mistral windows them all) and which RoPE table the layer
uses (Gemma-3's local layers rotate with their own base).

A config is frozen: it is validated once, in `__post_init__`, and `replace()` builds (and
validates) a new one, so no config in memory is ever in a state `validate` would refuse.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError
from .files import read_text
from .layerwise import expand_layer_scaling
from .rope_scaling import rope_type_of

ATTENTION_KINDS = ("mha", "mqa", "gqa", "mla")
NORMS = ("rmsnorm", "rmsnorm_1p", "layernorm", "layernorm_1p", "layernorm_plain")  # see layers/norms.py
FFN_KINDS = ("gated", "plain")
ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "gelu_new", "relu", "relu2")
ROPE_LAYOUTS = ("half", "interleaved")
POSITIONS = ("rope", "learned", "alibi")
BLOCKS = ("sequential", "parallel", "parallel_shared_norm")
LAYER_TYPES = ("full", "sliding")
BLOCK_SHARING = ("none", "immediate", "cyclic")


@dataclass(frozen=True)
class LayerSpec:
    """Everything about one transformer layer that may differ from the others, resolved once."""

    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    window: int | None = None  # sliding window (keys per query, itself included); None = full causal
    rope: str = "global"  # which RoPE table: "global" (rope_theta, rope_scaling) or "local" (rope_local_theta)


LayerShape = LayerSpec  # the name earlier versions used


@dataclass(frozen=True)
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
    qk_norm: bool = False  # Qwen3 / Gemma-3 / Phi: the block's norm over head_dim on q and k, before RoPE
    qk_norm_per_head: bool = False  # StableLM: a separate (bias-free) LayerNorm for every head
    qkv_clip: float | None = None  # OLMo: clamp q, k and v to [-clip, clip] right after the projections
    attn_scale: float | None = None  # softmax scale; None -> head_dim^-0.5 (Gemma-2: query_pre_attn_scalar^-0.5)
    attn_softcap: float | None = None  # Gemma-2: cap * tanh(score / cap) on attention logits
    sliding_window: int | None = None  # W: each query sees its last W keys, itself included
    layer_types: list[str] | None = None  # per layer "full" | "sliding"; None -> from sliding_pattern
    sliding_pattern: int | None = None  # every N-th layer is full, the others slide (Gemma-3: 6); None -> all slide

    # --- MLA (attention = "mla"), DeepSeek-V2 names ---------------------------------------
    q_lora_rank: int | None = None  # None -> plain query projection
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None

    # --- position encoding ----------------------------------------------------------------
    positions: str = "rope"  # rope | learned (GPT-2, OPT: a table added to the embedding) | alibi (Bloom)
    position_offset: int = 0  # learned table rows skipped before position 0 (OPT: 2)
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # HF form: {"rope_type": "llama3", "factor": 32, ...}
    partial_rotary_factor: float = 1.0  # fraction of head_dim that is rotated
    rope_layout: str = "half"  # "half" (rotate_half, HF) or "interleaved" (Meta / DeepSeek pairs)
    rope_fp32: bool = False  # rotate in float32 and cast back (OLMo); else in the activations' dtype
    rope_local_theta: float | None = None  # Gemma-3: base of the sliding layers' own RoPE table (no scaling)

    # --- block, FFN and norms -------------------------------------------------------------
    block: str = "sequential"  # sequential | parallel (two norms, GPT-NeoX) | parallel_shared_norm (Phi-2)
    sandwich_norms: bool = False  # Gemma-2/3: also norm each sub-layer's output before the residual add
    residual_scale: float | None = None  # MiniCPM: each sub-layer's output x scale_depth / sqrt(n_layers), then added
    ffn: str = "gated"  # gated: down(act(gate x) * up x); plain: down(act(up x))
    activation: str = "silu"
    ffn_bias: bool = False
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5

    # --- embeddings and head --------------------------------------------------------------
    embed_scale: float | None = None  # Gemma: token embeddings times sqrt(dim), in the weights' dtype
    embed_norm: bool = False  # Bloom: a norm right after the embedding
    tie_embeddings: bool = False  # lm-head weight *is* the embedding weight (one Parameter)
    head_bias: bool = False  # Phi-2's lm-head has a bias
    final_softcap: float | None = None  # Gemma-2: cap * tanh(logits / cap)
    logit_divisor: float | None = None  # MiniCPM: final hidden states / (dim / dim_model_base) before the head

    # --- layer-wise scaling (OpenELM) and block sharing (MobileLLM) -----------------------
    layer_n_heads: list[int] | None = None  # per-layer overrides; None -> the global value
    layer_n_kv_heads: list[int] | None = None
    layer_ffn_dim: list[int] | None = None
    block_sharing: str = "none"  # none | immediate (A A B B ...) | cyclic (A B ... A B ...)
    share_repeats: int = 2  # how many times each stored block runs when sharing
    block_schedule: list[int] | None = None  # explicit: the stored block run at each depth step (overrides the two above)
    shared_ffn: bool = False  # MobiLlama: one FFN module (one set of Parameters) used by every block

    # --- tokens and storage ---------------------------------------------------------------
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    dtype: str = "float32"  # dtype the weights were stored in (informational)

    def __post_init__(self) -> None:
        self._check_types()
        derive = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731  (frozen: only here)
        for key in ("layer_n_heads", "layer_n_kv_heads", "layer_ffn_dim", "layer_types", "block_schedule"):
            if getattr(self, key) is not None:  # tuples: a list inside a frozen config could still be mutated
                derive(key, tuple(getattr(self, key)))
        if self.rope_scaling is not None:
            derive("rope_scaling", dict(self.rope_scaling))  # our own copy
        derived = {key for key in DERIVED if getattr(self, key) is None}  # filled in below; `replace` refills them
        object.__setattr__(self, "_derived", frozenset(derived))
        if self.n_kv_heads is None:
            derive("n_kv_heads", self.n_heads)
        if self.head_dim is None:
            if self.n_heads <= 0 or self.dim % self.n_heads:
                raise ConfigError(
                    f"config {self.name!r}: dim={self.dim} is not divisible by n_heads={self.n_heads}; "
                    "set head_dim explicitly"
                )
            derive("head_dim", self.dim // self.n_heads)
        if self.attention is None:
            derive("attention", _attention_kind(self.n_heads, self.n_kv_heads))
        self.validate()

    # ------------------------------------------------------------------------------------
    def layer(self, i: int) -> LayerSpec:
        """Layer i's spec: per-layer sizes applied, its window and its RoPE table resolved."""
        pick = lambda per_layer, default: default if per_layer is None else per_layer[i]  # noqa: E731
        sliding = self.layer_type(i) == "sliding"
        return LayerSpec(
            n_heads=pick(self.layer_n_heads, self.n_heads),
            n_kv_heads=pick(self.layer_n_kv_heads, self.n_kv_heads),
            ffn_dim=pick(self.layer_ffn_dim, self.ffn_dim),
            window=self.sliding_window if sliding else None,
            rope="local" if sliding and self.rope_local_theta is not None else "global",
        )

    def layer_spec_counts(self) -> dict[LayerSpec, int]:
        """Each distinct layer spec and how many stored layers have it.

        Without per-layer lists the count is arithmetic (a pattern has at most two specs), so a
        config claiming ten million layers costs nothing to count.
        """
        n = self.n_layers
        lists = (self.layer_n_heads, self.layer_n_kv_heads, self.layer_ffn_dim, self.layer_types)
        if any(values is not None for values in lists):
            return dict(Counter(self.layer(i) for i in range(n)))
        if self.sliding_window is None or self.sliding_pattern is None:
            return {self.layer(0): n}  # every layer alike: all full, or all sliding
        full = n // self.sliding_pattern  # layers p-1, 2p-1, ... are full
        counts = {self.layer(self.sliding_pattern - 1): full} if full else {}
        if n - full:
            counts[self.layer(0)] = n - full
        return counts

    def layer_type(self, i: int) -> str:
        """"full" or "sliding": the explicit list, else the pattern (every N-th layer full), else all alike."""
        if self.sliding_window is None:
            return "full"
        if self.layer_types is not None:
            return self.layer_types[i]
        if self.sliding_pattern is not None:
            return "full" if (i + 1) % self.sliding_pattern == 0 else "sliding"
        return "sliding"

    def schedule(self) -> list[int]:
        """Which stored block runs at each depth step (MobileLLM's block-wise sharing).

        none:      [0, 1, 2]            immediate: [0, 0, 1, 1, 2, 2]      cyclic: [0, 1, 2, 0, 1, 2]
        block_schedule = [0, 1, 1, 2, 0]: any list naming every stored block at least once.
        Every step has its own KV-cache slot, even when the weights are shared (the effective depth
        is len(schedule); n_layers counts the stored blocks).
        """
        if self.block_schedule is not None:
            return list(self.block_schedule)
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

    @property
    def rope_tables(self) -> dict[str, tuple[float, dict[str, Any] | None]]:
        """The RoPE tables the layers use: {"global": (theta, scaling), "local": (theta, None)}; {} without RoPE."""
        if self.positions != "rope":
            return {}
        tables = {"global": (self.rope_theta, self.rope_scaling)}
        if any(self.layer(i).rope == "local" for i in range(self.n_layers)):
            tables["local"] = (self.rope_local_theta, None)
        return tables

    # ------------------------------------------------------------------------------------
    def _check_types(self) -> None:
        """Every field against its annotation, before anything is derived from it ("512" is not 512)."""
        for f in dataclasses.fields(self):
            value, alternatives = getattr(self, f.name), f.type.split(" | ")
            if not any(_TYPE_CHECKS[a](value) for a in alternatives):
                raise ConfigError(f"config {self.name!r}: {f.name} must be {' or '.join(alternatives)}, found {value!r}")
            numbers = value if isinstance(value, (list, tuple)) else [value]
            limit = 2**40 if f.name in ("max_seq_len", "sliding_window") else 2**31
            if f.name not in ("bos_token_id", "eos_token_id") and any(_INT(v) and abs(v) >= limit for v in numbers):
                raise ConfigError(f"config {self.name!r}: {f.name} is out of range (at most {limit - 1:,}), found {value!r}")

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
            ("positions", POSITIONS),
            ("block", BLOCKS),
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
        self._validate_layers(bad)  # before anything resolves a layer's spec
        self._validate_sharing(bad)
        if self.layer_n_heads is None and self.layer_n_kv_heads is None:  # one check, not one per layer
            if self.n_heads % self.n_kv_heads:
                raise bad(f"n_heads={self.n_heads} must be a positive multiple of n_kv_heads={self.n_kv_heads}")
        for i in range(self.n_layers if self.layer_n_heads or self.layer_n_kv_heads else 0):
            shape = self.layer(i)
            if shape.n_kv_heads <= 0 or shape.n_heads % shape.n_kv_heads:
                raise bad(
                    f"layer {i}: n_heads={shape.n_heads} must be a positive multiple of n_kv_heads={shape.n_kv_heads}"
                )
        mla_fields = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        if self.attention == "mla":
            self._validate_mla(bad)
            ignored = [k for k in ("sliding_window", "attn_softcap", "attn_scale", "qkv_clip", "rope_local_theta")
                       if getattr(self, k) is not None] + [k for k in ("qk_norm", "rope_fp32") if getattr(self, k)]  # fmt: skip
            if ignored:
                raise bad(f"{', '.join(ignored)} configure MHA/GQA attention; MLA (attention='mla') has no such option")
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
        try:
            rope_type_of(self.rope_scaling)
        except ConfigError as exc:
            raise bad(str(exc)) from None
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise bad(f"partial_rotary_factor must be in (0, 1], found {self.partial_rotary_factor}")
        if self.rotary_dim % 2:
            raise bad(f"the rotary dimension must be even, found {self.rotary_dim}")
        if not (self.norm_eps > 0 and math.isfinite(self.norm_eps)):
            raise bad(f"norm_eps must be > 0, found {self.norm_eps}")
        for key in ("attn_softcap", "final_softcap", "attn_scale", "qkv_clip", "embed_scale", "rope_local_theta",
                    "residual_scale", "logit_divisor"):  # fmt: skip
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise bad(f"{key} must be a positive number or absent, found {value}")
        if not (math.isfinite(self.rope_theta) and self.rope_theta > 0):
            raise bad(f"rope_theta must be a positive number, found {self.rope_theta}")
        if self.rope_theta == 1 and self.rope_scaling is not None and rope_type_of(self.rope_scaling) == "yarn":
            raise bad("YaRN RoPE scaling needs rope_theta != 1 (its correction range divides by log(rope_theta))")
        self._validate_positions(bad)
        for key in ("bos_token_id", "eos_token_id"):
            ids = getattr(self, key)
            ids = [ids] if isinstance(ids, int) else ids
            if ids is not None and (not ids or min(ids) < 0 or max(ids) >= 2**63):
                raise bad(f"{key} must be a token id >= 0 or a non-empty list of them, found {getattr(self, key)!r}")
        if self.sandwich_norms and self.block != "sequential":
            raise bad(f"sandwich_norms apply to the sequential block, not block={self.block!r}")
        if self.residual_scale is not None and self.block != "sequential":
            raise bad(f"residual_scale applies to the sequential block, not block={self.block!r}")
        if self.qk_norm_per_head and not self.qk_norm:
            raise bad("qk_norm_per_head=true needs qk_norm=true")

    def _validate_sharing(self, bad) -> None:
        schedule = self.block_schedule
        if schedule is not None:
            if self.block_sharing != "none":
                raise bad(f"give block_schedule or block_sharing={self.block_sharing!r}, not both")
            if not schedule:
                raise bad("block_schedule is empty; it lists the stored block run at each depth step")
            for step, block in enumerate(schedule):
                if not 0 <= block < self.n_layers:
                    raise bad(f"block_schedule step {step} runs block {block}, but the model stores blocks "
                              f"0..{self.n_layers - 1} (n_layers={self.n_layers})")  # fmt: skip
            unused = sorted(set(range(self.n_layers)) - set(schedule))
            if unused:
                raise bad(f"block_schedule never runs stored block(s) {unused[:8]}: their weights would be dead")
            if len(schedule) >= 2**31:
                raise bad("block_schedule is out of range")
        if self.shared_ffn and self.layer_ffn_dim is not None and len(set(self.layer_ffn_dim)) > 1:
            raise bad(f"shared_ffn uses one FFN in every block, but layer_ffn_dim varies: {list(self.layer_ffn_dim)}")

    def _validate_layers(self, bad) -> None:
        if self.layer_types is not None:
            if len(self.layer_types) != self.n_layers:
                raise bad(f"layer_types has {len(self.layer_types)} entries, expected one per layer ({self.n_layers})")
            unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
            if unknown:
                raise bad(f"layer_types may hold {' and '.join(LAYER_TYPES)} only, found {', '.join(map(repr, unknown))}")
            if "sliding" in self.layer_types and self.sliding_window is None:
                raise bad("layer_types names sliding layers but sliding_window is not set")
            if self.sliding_pattern is not None:
                raise bad("give layer_types or sliding_pattern, not both")
        if self.sliding_pattern is not None and self.sliding_window is None:
            raise bad("sliding_pattern says which layers slide, but sliding_window is not set")
        if self.sliding_pattern is not None and self.sliding_pattern < 1:
            raise bad(f"sliding_pattern must be a positive integer, found {self.sliding_pattern}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise bad(f"sliding_window must be a positive integer or absent, found {self.sliding_window}")
        if self.rope_local_theta is not None and not any(self.layer_type(i) == "sliding" for i in range(self.n_layers)):
            raise bad("rope_local_theta is the sliding layers' RoPE base, but no layer slides")

    def _validate_positions(self, bad) -> None:
        if self.positions != "rope":
            rope_fields = {"rope_scaling": self.rope_scaling is not None, "rope_local_theta": self.rope_local_theta is not None,
                           "partial_rotary_factor": self.partial_rotary_factor != 1.0,
                           "rope_layout": self.rope_layout != "half", "rope_fp32": self.rope_fp32}  # fmt: skip
            set_fields = [key for key, is_set in rope_fields.items() if is_set]
            if set_fields:
                raise bad(f"{', '.join(set_fields)} configure RoPE, but positions={self.positions!r} uses no RoPE")
            if self.attention == "mla":
                raise bad(f"MLA's decoupled key is rotated by RoPE; positions={self.positions!r} cannot be used with it")
        if self.position_offset < 0 or (self.position_offset and self.positions != "learned"):
            raise bad(f"position_offset applies to learned positions only and must be >= 0, found {self.position_offset}")

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
        """Build from plain data; a `layer_scaling` table expands into the per-layer lists (layerwise.py)."""
        if "layer_scaling" in values:
            values = expand_layer_scaling(values, source)
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
        if not path.exists():
            raise ConfigError(f"{path}: no such config file")
        try:
            values = tomllib.loads(read_text(path, ConfigError))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        values.setdefault("name", path.stem)
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples): what a TOML or JSON file would hold."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "ModelConfig":
        """A changed copy, checked as a new config is. A field this config derived rather than was given
        (n_kv_heads from n_heads, head_dim from dim / n_heads, attention from the head counts) is derived again
        when what it came from changes: replace(n_heads=4) halves an 8-head config's derived head_dim too."""
        for key, sources in DERIVED.items():
            if key in self._derived and key not in changes and sources & changes.keys():
                changes[key] = None
        return dataclasses.replace(self, **changes)


_INT = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731  (True is not a head count)
_TYPE_CHECKS = {  # the annotations ModelConfig uses, one checker each
    "str": lambda v: isinstance(v, str),
    "int": _INT,
    "float": lambda v: _INT(v) or isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "None": lambda v: v is None,
    "list[int]": lambda v: isinstance(v, (list, tuple)) and all(_INT(x) for x in v),
    "list[str]": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
    "dict[str, Any]": lambda v: isinstance(v, dict),
}


# fields __post_init__ fills in when they are None, and what each is derived from
DERIVED = {"n_kv_heads": {"n_heads"}, "head_dim": {"dim", "n_heads"}, "attention": {"n_heads", "n_kv_heads"}}


def _attention_kind(n_heads: int, n_kv_heads: int) -> str:
    if n_kv_heads == n_heads:
        return "mha"
    if n_kv_heads == 1:
        return "mqa"
    return "gqa"


def dtype_from_name(name: str):
    """'bfloat16' / 'bf16' / 'torch.float16' -> torch dtype, with a clear error."""
    aliases = {
        "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    }  # fmt: skip
    key = str(name).removeprefix("torch.").lower()
    if key not in aliases:
        raise ConfigError(f"unknown dtype {name!r}; use one of float32, bfloat16, float16")
    return aliases[key]

