"""Loading a GGUF file into a CausalLM: the GGUF counterpart of checkpoint.load_hf_folder.

    model.gguf metadata  -> config.py -> config.json dict -> family.from_hf -> ModelConfig
    model.gguf tensors   -> names.py  -> HF names         -> family key map -> our parameters

Every tensor is checked as a safetensors one is: an unexpected name, a missing one or a wrong
shape is an error naming the file and the tensor. Float tensors (F32/F16/BF16) are converted to
the requested dtype; quantized ones are dequantized with llama.cpp's formulas (`gguf.quants`).

A quantized linear weight can stay quantized, but this format does not know the kernels that would
compute with it: the caller hands in a `KeptLinears` (the seam), and the loader gives it each such
layer's raw blocks. `tinyslm.load_pretrained` and `tinyslm.gguf.load_gguf` (pretrained.py) hand in
tinyslm.quant's: Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K as the file's own blocks (`GGMLLinear`, native
kernel), the other types (Q5_K, Q3_K, ...) dequantized and re-quantized to Q8_0 blocks (8.5 bits a
weight instead of float32's 32); without the native kernel, Q8_0 / Q4_0 / Q4_1 go to torch's
int8/int4 kernels (`QuantizedLinear.from_gguf`) and K-quants stay dequantized.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import dtype_from_name
from ..errors import CheckpointError
from ..families import config_from_hf, get_family
from ..files import shown
from ..model import CausalLM
from ..sizing import check_buildable
from .config import arch_of, hf_config_from_gguf
from .names import gguf_name, qk_heads, split_fused_qkv, unpermute
from .reader import FLOAT_TYPES, GGUFFile
from .rope import ROPE_TENSORS


@dataclass(frozen=True)
class KeptLinears:
    """What keeps a GGUF's quantized linear weights quantized: the seam where a runtime (tinyslm.quant, through
    `tinyslm.pretrained.kept_linears`) plugs into this format. Without one, every weight is dequantized.

        make(ggml type, raw blocks (out, bytes per row), (out, in), bias=None) -> a module in place of nn.Linear
    """

    make: Callable[..., nn.Module]
    kinds: tuple[str, ...]  # the ggml types `make` takes as they are stored (other types are dequantized)
    # floats (N, K) -> blocks of a type: given, the linear weights of every other quantized type (Q5_K, ...)
    # are dequantized and re-quantized to Q8_0 rather than left in floats, and a tied head over a quantized
    # embedding gets a quantized copy of it (llama.cpp's head reads the embedding's blocks)
    requantize: Callable[[torch.Tensor, str], np.ndarray] | None = None


def __getattr__(name: str):
    """Old import paths of what moved to pretrained.py (it joins this format to tinyslm.quant's kernels, so it
    sits above both): `loader.load_gguf`, `loader.quantized_linear_factory`. Resolved on first use (PEP 562)."""
    if name in ("load_gguf", "quantized_linear_factory"):
        from .. import pretrained  # noqa: PLC0415  (old import path; tests/test_imports.py)

        return getattr(pretrained, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gguf_path(path: str | Path) -> Path:
    """The .gguf file itself, or the one .gguf file in a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) or "none"
            raise CheckpointError(f"{path}: expected exactly one .gguf file in the folder, found {listed}")
        return found[0]
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    return path


def is_gguf(path: str | Path) -> bool:
    """True for a .gguf file, or a folder holding .gguf files and no config.json (what load_pretrained dispatches)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path.suffix == ".gguf"  # a missing model.gguf is then reported as a missing GGUF file
    return path.is_dir() and not (path / "config.json").exists() and any(path.glob("*.gguf"))


def gguf_config(path: str | Path):
    """The ModelConfig a GGUF's metadata describes (nothing is built; for `inspect` and `bench`)."""
    return config_from_hf(hf_config_from_gguf(GGUFFile(gguf_path(path))))


def gguf_tensor_bytes(path: str | Path) -> dict[str, int]:
    """Bytes the file's tensors occupy, by ggml type ({"Q4_1": ..., "F32": ...}): what the weights cost
    as stored, which `inspect`'s float-dtype figure does not say for a quantized file."""
    by_kind: dict[str, int] = {}
    for tensor in GGUFFile(gguf_path(path)).tensors.values():
        by_kind[tensor.kind] = by_kind.get(tensor.kind, 0) + tensor.data.nbytes
    return dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))


def model_from_gguf(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    linears: KeptLinears | None = None,
) -> CausalLM:
    """Build a CausalLM from a GGUF file (or a folder holding one).

    dtype: of the float parameters; None means bfloat16 for a file whose matrices are all BF16, else
    float32 (F16 and every quantized type upcast exactly).
    linears: what keeps quantized linear weights quantized (see KeptLinears); None dequantizes
    everything, as transformers does.
    """
    file = GGUFFile(gguf_path(path))
    arch = arch_of(file)
    hf = hf_config_from_gguf(file)
    config = config_from_hf(hf)
    family = get_family(config.family, hf.source)
    dtype = _default_dtype(file) if dtype is None else dtype_from_name(dtype) if isinstance(dtype, str) else dtype
    factory = None if linears is None else linears.make
    requantize = None if linears is None else linears.requantize
    kept = () if linears is None else linears.kinds
    stored = sum(int(np.prod(t.shape)) for t in file.tensors.values())
    if check_buildable(config, hf.source) > 2 * stored + 10**6:
        raise CheckpointError(f"{file.path}: its metadata describes a model far larger than its {stored:,} stored values")

    with torch.device("meta"):
        model = CausalLM(config)
    key_map = family.key_map(model)
    by_gguf = {gguf_name(arch.name, config.n_layers, hf_key): entry for hf_key, entry in key_map.entries.items()}
    split_fused_qkv(file, set(by_gguf), config.n_layers, config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim)

    def keep_quantized_layers(modules: list[str], kind: str, raw: np.ndarray, rows: list[int], in_features: int,
                              gguf_name: str) -> None:
        """Replace each linear layer in `modules` by `factory`'s quantized one over its `rows` of the `raw` blocks
        (one layer; or q, k and v from a fused tensor stored [q | k | v]). They hold new memory (interleaved,
        repacked), so the file's pages can go now: loading holds about one tensor of the file at a time.
        A bias loaded later replaces the (meta) one passed here."""
        start = 0
        for module_name, n in zip(modules, rows):
            owner, _, leaf = module_name.rpartition(".")
            bias = model.get_submodule(module_name).bias
            setattr(model.get_submodule(owner), leaf, factory(kind, raw[start : start + n], (n, in_features), bias=bias))
            start += n
        file.release(gguf_name)

    for name, tensor in file.tensors.items():
        if name in ROPE_TENSORS:  # RoPE scaling, read into the config (rope.py)
            continue
        entry = by_gguf.get(name)
        if entry is None:
            raise CheckpointError(
                f"{file.path}: unexpected tensor {shown(name)!r}: no parameter of this {arch.name} model "
                "(GGUF metadata) is stored under that name"
            )
        # llama.cpp stores every matrix [out, in]; GPT-2's Conv1D tensors are [in, out] in HF files
        transposed = entry.rule is not None and entry.rule.transposed and len(entry.hf_shape) == 2
        expected = tuple(reversed(entry.hf_shape)) if transposed else tuple(entry.hf_shape)
        if tuple(tensor.shape) != expected:
            raise CheckpointError(
                f"{file.path}: tensor {shown(name)!r} has shape {list(tensor.shape)}, expected {list(expected)} "
                "from the GGUF metadata"
            )
        heads = qk_heads(entry.hf_key, config.n_heads, config.n_kv_heads) if arch.permuted_qk else None
        # a fused matrix is stored as its parts' rows one after the other ([q | k | v], [gate | up]): GPT-NeoX's and
        # Bloom's q/k/v too (per head in HF files; llama.cpp's converter regroups them), GPT-2's untransposed
        by_part = arch.qkv_by_part and entry.rule is not None and entry.rule.per_head
        modules = [ours.rpartition(".")[0] for ours in entry.ours]
        row_parts = entry.rule is None or not entry.rule.per_head or by_part
        linear_weight = (factory is not None and row_parts and len(tensor.shape) == 2
                         and all(o.endswith(".weight") and type(model.get_submodule(m)) is nn.Linear
                                 for o, m in zip(entry.ours, modules)))  # fmt: skip
        rows = [s[0] for s in entry.shapes]  # each part's rows (one part: all of them)
        if linear_weight and tensor.kind in kept:
            raw = np.asarray(tensor.data)  # (out, bytes per row): whole rows of blocks
            raw = raw if heads is None else unpermute(raw, heads)
            keep_quantized_layers(modules, tensor.kind, raw, rows, tensor.shape[1], name)
            continue
        value = file.float_tensor(name)
        if heads is not None:
            value = unpermute(value, heads)
        if linear_weight and tensor.kind not in FLOAT_TYPES and requantize:  # another quantized type (Q5_K, ...):
            # dequantized as transformers does, then kept 8-bit: each weight moves by at most half a step of its
            # block (max |w| / 254), on top of the file's own rounding
            keep_quantized_layers(modules, "Q8_0", requantize(value, "Q8_0"), rows, tensor.shape[1], name)
            continue
        if transposed:
            value = value.t()
        if arch.norm_offset and entry.hf_key.endswith("norm.weight"):
            value = value.float() - arch.norm_offset  # in float32, then rounded once to dtype
        parts = value.split(rows) if by_part else entry.unpack(value)
        for ours, part in zip(entry.ours, parts):
            # .to() is a no-op for a tensor loaded in its stored dtype (F32 as float32, BF16 as bfloat16...):
            # the parameter is then the file's copy-on-write map, and loading copies nothing
            part = part.to(device=device, dtype=dtype).contiguous()
            owner, _, leaf = ours.rpartition(".")
            model.get_submodule(owner)._parameters[leaf] = nn.Parameter(part)
        if tensor.kind not in FLOAT_TYPES:  # dequantized into new memory: the file's pages can go
            file.release(name)

    missing = [n for n, e in by_gguf.items() if n not in file.tensors]
    if missing:
        listed = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"{file.path}: missing tensor(s) {listed}")
    if config.tie_embeddings:
        model.head.weight = model.tok_emb.weight
        embedding = next(file.tensors[n] for n, e in by_gguf.items() if e.ours == ["tok_emb.weight"])
        if requantize and embedding.kind not in FLOAT_TYPES:
            # llama.cpp's tied head reads the embedding's blocks (Q8_0: 8.5 bits a weight, not float32's 32):
            # the same values as the float embedding the lookups use, as a second, quantized copy
            kind = embedding.kind if embedding.kind in kept else "Q8_0"
            raw = np.asarray(embedding.data) if kind == embedding.kind else requantize(model.tok_emb.weight, kind)
            keep_quantized_layers(["head"], kind, raw, [embedding.shape[0]], embedding.shape[1], embedding.name)
    model.reset_buffers(device)
    return model.eval()


def default_dtype(path: str | Path) -> torch.dtype:
    """The dtype `model_from_gguf(path)` gives the float parameters when none is asked for."""
    return _default_dtype(GGUFFile(gguf_path(path)))


def _default_dtype(file: GGUFFile) -> torch.dtype:
    kinds = {t.kind for t in file.tensors.values() if len(t.shape) == 2}
    return torch.bfloat16 if kinds == {"BF16"} else torch.float32  # F16 upcasts exactly; CPUs compute it slowly
