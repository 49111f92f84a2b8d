"""Key maps: how a checkpoint's tensors become our parameters, and back.

Most tensors are renamed (`modules`: our module path -> HF module path, `{i}` = layer index; the
rest of the name, `.weight`, `.bias` or a sub-module path, carries over). Some HF tensors hold
several of ours, or hold one transposed; each such case is one small declarative rule with its
inverse:

    Fused("...qkv_proj", ("...wq", "...wk", "...wv"))             rows [q | k | v]        Phi-3, OpenELM
    Fused("...gate_up_proj", ("...gate", "...up"))                 rows [gate | up]        Phi-3
    Fused("...query_key_value", (...), per_head=True)              rows (H, [q k v], hd)   GPT-NeoX, Bloom
    Fused("...c_attn", (...), transposed=True)                     Conv1D [in, out]        GPT-2
    Fused("...c_fc", ("...up",), transposed=True)                  one tensor, transposed  GPT-2

Part sizes come from our parameters' shapes (so a rule never repeats the config), and the HF
tensor's expected shape is computed from them: a fused tensor that does not split as the config
says is refused with both shapes. A `KeyMap` is built for one concrete model: every distinct
parameter belongs to exactly one entry, and every entry is one HF tensor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import CheckpointError


@dataclass(frozen=True)
class Fused:
    """One HF module whose tensors concatenate (and maybe transpose or interleave) several of our modules'."""

    theirs: str  # HF module path, "{i}" = layer index
    ours: tuple[str, ...]  # our module paths in the order the HF tensor concatenates them
    transposed: bool = False  # stored [in, out] (GPT-2's Conv1D): 2-D weights are transposed
    per_head: bool = False  # rows grouped per head: (H, parts, hd) instead of [part 0 | part 1 | ...]


def _pattern(path: str) -> re.Pattern:
    return re.compile(re.escape(path).replace(r"\{i\}", r"(?P<i>\d+)"))


@dataclass
class Entry:
    """One HF tensor and the parameter(s) it holds."""

    hf_key: str
    ours: list[str]  # our parameter names, in concatenation order
    shapes: list[tuple[int, ...]]  # their shapes
    rule: Fused | None = None  # None: a plain rename
    n_heads: int = 0  # for per_head rules

    @property
    def hf_shape(self) -> tuple[int, ...]:
        """The shape the checkpoint must store for this entry."""
        if self.rule is None:
            return self.shapes[0]
        rows = sum(s[0] for s in self.shapes)
        shape = (rows, *self.shapes[0][1:])
        return tuple(reversed(shape)) if self.rule.transposed and len(shape) == 2 else shape

    def unpack(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """HF tensor -> our tensors (views where possible)."""
        if self.rule is None:
            return [tensor]
        if self.rule.transposed and tensor.dim() == 2:
            tensor = tensor.t()
        if self.rule.per_head:
            h = self.n_heads
            grouped = tensor.reshape(h, len(self.ours), -1, *tensor.shape[1:])  # (H, parts, hd, ...)
            return [grouped[:, p].reshape(self.shapes[p]) for p in range(len(self.ours))]
        return list(tensor.split([s[0] for s in self.shapes], dim=0))

    def pack(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Our tensors -> the HF tensor (the inverse of unpack)."""
        if self.rule is None:
            return tensors[0]
        if self.rule.per_head:
            h = self.n_heads
            parts = [t.reshape(h, -1, *t.shape[1:]) for t in tensors]  # (H, hd, ...)
            out = torch.stack(parts, dim=1).reshape(-1, *tensors[0].shape[1:])  # (H * parts * hd, ...)
        else:
            out = torch.cat(tensors, dim=0)
        return out.t() if self.rule.transposed and out.dim() == 2 else out


class KeyMap:
    """The entries of one concrete model: {HF tensor name: Entry}, built from the model's own parameters."""

    def __init__(self, entries: dict[str, Entry], tied_head: str | None = None, copies: dict[str, str] | None = None):
        self.entries = entries
        self.tied_head = tied_head  # the name an untied head would have; some files of tied models store it
        # a shared module's tensors under its other names (MobiLlama's FFN under every layer):
        # {HF name of a copy: HF name of the entry it must equal}
        self.copies = copies or {}

    @classmethod
    def build(cls, model, modules: dict[str, str], fused: tuple[Fused, ...], model_type: str) -> "KeyMap":
        longest_first = sorted(modules.items(), key=lambda kv: -len(kv[0]))  # "a.b.c" before a prefix "a.b"
        renames = [(_pattern(ours), theirs) for ours, theirs in longest_first]
        fused_parts = [(_pattern(part), rule, k) for rule in fused for k, part in enumerate(rule.ours)]
        entries: dict[str, Entry] = {}
        pending: dict[str, dict[int, tuple[str, tuple[int, ...]]]] = {}
        for name, param in model.named_parameters():  # distinct parameters only: a tied head is not listed
            hf_key, rule, part = _match(name, renames, fused_parts, model_type)
            if rule is None:
                entries[hf_key] = Entry(hf_key, [name], [tuple(param.shape)])
                continue
            entry = entries.setdefault(hf_key, Entry(hf_key, [], [], rule))
            if rule.per_head:
                entry.n_heads = _heads_of(model, name)
            pending.setdefault(hf_key, {})[part] = (name, tuple(param.shape))
        for hf_key, parts in pending.items():
            entry = entries[hf_key]
            if len(parts) != len(entry.rule.ours):
                raise CheckpointError(f"family {model_type!r}: {hf_key} fuses {len(entry.rule.ours)} tensors, "
                                      f"but this model has {len(parts)} of them")  # fmt: skip
            entry.ours = [parts[k][0] for k in sorted(parts)]
            entry.shapes = [parts[k][1] for k in sorted(parts)]
        tied = getattr(model, "head", None) is not None and model.head.weight is model.tok_emb.weight
        tied_head = _match("head.weight", renames, fused_parts, model_type)[0] if tied else None
        return cls(entries, tied_head, _copies(model, renames, fused_parts, model_type))

    def our_names(self) -> dict[str, str]:
        """{our parameter name: HF tensor name}."""
        return {ours: e.hf_key for e in self.entries.values() for ours in e.ours}


def _copies(model, renames, fused_parts, model_type: str) -> dict[str, str]:
    """{HF name of a shared parameter's second (third, ...) name: HF name of its first}; a tied head excluded."""
    first: dict[int, str] = {}
    copies = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in first:
            first[id(param)] = name
        elif name != "head.weight":
            copies[_match(name, renames, fused_parts, model_type)[0]] = _match(first[id(param)], renames, fused_parts,
                                                                              model_type)[0]  # fmt: skip
    return copies


def _match(name: str, renames, fused_parts, model_type: str) -> tuple[str, Fused | None, int]:
    """Our parameter name -> (HF tensor name, the fused rule or None, our part's index in it)."""
    for regex, rule, part in fused_parts:
        tail = _tail(regex, name)
        if tail is not None:
            return _format(rule.theirs, regex, name) + tail, rule, part
    for regex, theirs in renames:
        tail = _tail(regex, name)
        if tail is not None:
            return _format(theirs, regex, name) + tail, None, 0
    raise CheckpointError(f"family {model_type!r} has no checkpoint name for parameter {name!r}")


def _tail(regex: re.Pattern, name: str) -> str | None:
    """'.weight' (or '.norms.3.weight') when `regex` matches a module path that `name` starts with."""
    match = regex.match(name)
    if match and name[match.end() :].startswith("."):
        return name[match.end() :]
    return None


def _format(theirs: str, regex: re.Pattern, name: str) -> str:
    return theirs.format(**regex.match(name).groupdict())


def _heads_of(model, name: str) -> int:
    """Query heads of the attention module a per-head fused parameter belongs to."""
    module = model.get_submodule(name.rpartition(".")[0].rpartition(".")[0])  # blocks.{i}.attn
    return module.n_heads
