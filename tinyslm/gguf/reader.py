"""Opening a GGUF file (llama.cpp's single-file format) and checking it before anything is built.

    magic "GGUF" | version | n_tensors | n_kv | key/values (metadata) | tensor infos | padding | data

Each tensor info holds a name, its dims (innermost first, as ggml counts them), a ggml type and
an offset into the data section; the byte size is implied by the type and the dims. The header is
parsed here (the format is small: ggml's docs/gguf.md), in one pass over a memory map, because
gguf-py's GGUFReader builds a numpy array per vocabulary string (seconds for a 50k vocabulary);
the tensors stay memory-mapped. Every damaged file is one clear line naming the file and the tensor:

    truncated header or data        CheckpointError   ("... the file ends at byte N")
    unknown or unsupported type     UnsupportedModelError (IQ*, TQ*, integer tensors, ...)
    size not matching type + shape  CheckpointError   (a row not a whole number of blocks, or a
                                                       tensor overlapping the next one)

Dequantization uses `gguf.quants.dequantize` (llama.cpp's reference formulas in numpy), the one
transformers' GGUF loader uses too, so a dequantized weight is bit-identical on both sides.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, UnsupportedModelError
from ..files import regular_file, shown

# ggml types tinyslm reads: floats as they are, the rest dequantized (or kept packed, see loader.py)
FLOAT_TYPES = ("F32", "F16", "BF16")
QUANT_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
SUPPORTED_TYPES = FLOAT_TYPES + QUANT_TYPES


def _gguf():
    """The `gguf` package, or an error saying how to install it (it is an optional extra)."""
    try:
        import gguf  # noqa: PLC0415
    except ImportError:
        raise UnsupportedModelError("reading or writing GGUF files needs the gguf package: pip install 'tinyslm[gguf]'") from None
    return gguf


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file. `shape` is in PyTorch order (rows first): (out, in) for a linear weight."""

    name: str
    kind: str  # ggml type name: "F32", "Q4_1", ...
    shape: tuple[int, ...]
    data: np.ndarray  # memory-mapped: floats for F32/F16, raw bytes (rows, bytes per row) otherwise (BF16 too)


class GGUFFile:
    """A checked, memory-mapped GGUF file: `metadata` (key -> value) and `tensors` (name -> GGUFTensor)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        regular_file(self.path)
        gguf = _gguf()
        size = self.path.stat().st_size
        if size < 24:  # magic, version and two counts
            raise CheckpointError(f"{self.path}: truncated GGUF file ({size} bytes, shorter than its header)")
        self._map = np.memmap(self.path, mode="c")  # copy-on-write: tensors may be handed out as they lie
        stat = self.path.stat()
        metadata, infos, offset = _parsed(self._map, self.path, (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, size))
        self.metadata: dict[str, Any] = dict(metadata)  # (a copy: the cached one stays as the file says)
        self.tensors: dict[str, GGUFTensor] = {}
        alignment = self.metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointError(f"{self.path}: general.alignment must be a power of two, found {alignment!r}")
        data_start = -(-offset // alignment) * alignment
        for name, kind, shape, start, n_bytes in _check_tensor_infos(gguf, self.path, data_start, infos, size):
            raw = self._map[start : start + n_bytes]
            if kind in ("F32", "F16"):
                data = raw.view(np.float32 if kind == "F32" else np.float16).reshape(shape)
            else:
                data = raw.reshape(shape[:-1] + (-1,) if shape else (-1,))  # (rows, bytes per row)
            self.tensors[name] = GGUFTensor(name, kind, shape, data)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise CheckpointError(f"{self.path}: no general.architecture in the GGUF metadata")
        return arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def release(self, name: str) -> None:
        """Drop the resident pages of a tensor whose values were copied out (dequantized, or repacked by
        tinyslm.quant), so that loading a quantized file holds about one tensor of the file at a time
        beside the model, not the whole file. Only pages wholly inside the tensor are dropped; nothing
        has written to them (the map is copy-on-write and loading only reads), so a later read would
        fault them back in from the file unchanged."""
        data = self.tensors[name].data
        start = data.ctypes.data - self._map.ctypes.data  # byte offset in the map (which starts at offset 0)
        first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        last = (start + data.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first and hasattr(mmap, "MADV_DONTNEED") and getattr(self._map, "_mmap", None) is not None:
            self._map._mmap.madvise(mmap.MADV_DONTNEED, first, last - first)

    def float_tensor(self, name: str) -> torch.Tensor:
        """The tensor as a float tensor, shape `tensor.shape`: F32, F16 and BF16 in their own dtype,
        sharing the file's copy-on-write pages (no copy until converted); quantized types dequantized
        to float32 with llama.cpp's formulas."""
        t = self.tensors[name]
        if t.kind in ("F32", "F16"):
            return torch.from_numpy(np.asarray(t.data))  # shares the copy-on-write pages
        if t.kind == "BF16":  # numpy has no bfloat16: the words, viewed as bfloat16
            return torch.from_numpy(np.asarray(t.data).view(np.int16)).view(torch.bfloat16).reshape(t.shape)
        values = _gguf().quants.dequantize(np.asarray(t.data), _gguf().GGMLQuantizationType[t.kind])
        return torch.from_numpy(values).reshape(t.shape)


# GGUF value types (docs/gguf.md): id -> (struct format, size); 8 is a string, 9 an array
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4),
            7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}  # fmt: skip
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}


MAX_NESTING = 8  # arrays of arrays: none of llama.cpp's keys nests at all
LIST_LIMIT = 1 << 20  # numeric arrays longer than this stay numpy views of the file (a vocabulary is ~150k)


_PARSED: dict[tuple, tuple] = {}  # the last few files' headers, by path and (device, inode, mtime, ctime, size)


def _parsed(buf: np.ndarray, path: Path, identity: tuple) -> tuple[dict[str, Any], list, int]:
    """The header's (metadata, tensor infos, end offset), parsed once per file version (any write changes the
    ctime, which `touch -r` or `cp -p` cannot set back): loading a model, its
    tokenizer, its chat template and its end ids each open the file (a 49k-token vocabulary: 0.1-0.2 s a parse)."""
    key = (str(path.resolve()), *identity)
    if key not in _PARSED:
        header = _Header(buf, path)
        if len(_PARSED) >= 2:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = (header.metadata, header.tensor_infos, header.offset)
    return _PARSED[key]


class _Header:
    """One pass over the header: metadata values as Python values, tensor infos as tuples; bounds-checked."""

    def __init__(self, buf: np.ndarray, path: Path):
        self.buf, self.path, self.offset = memoryview(buf), path, 0
        self.where = "the header"
        if bytes(self.buf[:4]) != b"GGUF":
            raise CheckpointError(f"{path}: not a GGUF file (it starts with {bytes(self.buf[:4])!r}, not b'GGUF')")
        self.offset = 4
        version = self.scalar(4)
        if version not in (2, 3):
            raise CheckpointError(f"{path}: GGUF version {version} is not supported (tinyslm reads versions 2 and 3)")
        n_tensors, n_kv = self.scalar(10), self.scalar(10)
        if n_tensors > len(buf) or n_kv > len(buf):
            raise CheckpointError(f"{path}: corrupt GGUF header ({n_tensors} tensors and {n_kv} keys in {len(buf)} bytes)")
        self.metadata: dict[str, Any] = {}
        for i in range(n_kv):
            self.where = f"metadata key #{i}"
            key = self.string()
            self.where = f"metadata key {shown(key)!r}"
            self.metadata[key] = self.value(self.scalar(4))
        self.tensor_infos = []
        for i in range(n_tensors):
            self.where = f"tensor info #{i}"
            name = self.string()
            self.where = f"tensor {shown(name)!r}"
            n_dims = self.scalar(4)
            if n_dims > 4:
                raise CheckpointError(f"{path}: tensor {shown(name)!r} has {n_dims} dimensions; GGUF allows at most 4")
            dims = [self.scalar(10) for _ in range(n_dims)]
            self.tensor_infos.append((name, dims, self.scalar(4), self.scalar(10)))

    def take(self, n: int) -> memoryview:
        if self.offset + n > len(self.buf):
            raise CheckpointError(
                f"{self.path}: truncated or corrupt GGUF header: {self.where} runs past the end of the file "
                f"({len(self.buf)} bytes)"
            )
        out = self.buf[self.offset : self.offset + n]
        self.offset += n
        return out

    def scalar(self, kind: int):
        fmt, n = _SCALARS[kind]
        return struct.unpack(fmt, self.take(n))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.scalar(10)))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path}: corrupt GGUF header: {self.where} holds a string that is not UTF-8") from None

    def value(self, kind: int, depth: int = 0):
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == 8:
            return self.string()
        if kind == 9:
            item, count = self.array_header(depth)
            if item in _NUMPY:
                size = np.dtype(_NUMPY[item]).itemsize
                values = np.frombuffer(self.take(count * size), dtype=_NUMPY[item])
                # a long one stays a read-only view of the file (no copy: a 50 MB array of junk cost 440 MB as
                # Python ints); the short ones every model has (token types, scores) become lists
                return values.tolist() if count <= LIST_LIMIT else values
            if item in (8, 9) and count > LIST_LIMIT:  # walked over, not built: ~50 bytes of Python objects each
                for _ in range(count):
                    self.skip(item, depth + 1)
                return LongArray(count, "strings" if item == 8 else "arrays")
            if item == 8:
                return [self.string() for _ in range(count)]
            if item == 9:
                return [self.value(9, depth + 1) for _ in range(count)]
        raise self.undefined(kind)

    def array_header(self, depth: int) -> tuple[int, int]:
        """(item type, count) of an array `depth` arrays deep, refusing absurd nesting."""
        if depth >= MAX_NESTING:
            raise CheckpointError(f"{self.path}: corrupt GGUF header: {self.where} nests arrays more than "
                                  f"{MAX_NESTING} deep")  # fmt: skip
        return self.scalar(4), self.scalar(10)

    def undefined(self, kind: int) -> CheckpointError:
        return CheckpointError(f"{self.path}: corrupt GGUF header: {self.where} has value type {kind}, which GGUF "
                               "does not define")  # fmt: skip

    def skip(self, kind: int, depth: int) -> None:
        """Step over one value of `kind` (a string, or an array of anything) without building it."""
        if kind == 8:
            self.take(self.scalar(10))
            return
        item, count = self.array_header(depth)
        if item in _NUMPY:
            self.take(count * np.dtype(_NUMPY[item]).itemsize)
        elif item in (8, 9):
            for _ in range(count):
                self.skip(item, depth + 1)
        else:
            raise self.undefined(item)


class LongArray:
    """A metadata array of strings or arrays longer than LIST_LIMIT, stepped over, not read: no key tinyslm uses
    is that long (a vocabulary holds ~150k tokens), and as Python objects it would cost ~10x its bytes."""

    def __init__(self, count: int, of: str):
        self.count, self.of = count, of

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<{self.count:,} {self.of}, not read: tinyslm reads arrays of at most {LIST_LIMIT:,}>"


def _check_tensor_infos(gguf, path: Path, data_start: int, infos: list, file_size: int) -> list[tuple]:
    """Type known and supported, rows a whole number of blocks, data inside the file and not overlapping.

    Returns (name, type name, shape rows-first, first byte, byte count) per tensor."""
    spans, seen = [], set()
    for name, dims, raw_type, offset in infos:
        name = shown(name)
        if name in seen:
            raise CheckpointError(f"{path}: tensor {name!r} is stored twice")
        seen.add(name)
        shape = tuple(reversed(dims))
        try:
            kind = gguf.GGMLQuantizationType(raw_type)
        except ValueError:
            raise UnsupportedModelError(
                f"{path}: tensor {name!r} has ggml type id {raw_type}, which is no known ggml type "
                f"(tinyslm reads {', '.join(SUPPORTED_TYPES)})"
            ) from None
        if kind.name not in SUPPORTED_TYPES:
            raise UnsupportedModelError(
                f"{path}: tensor {name!r} is stored as {kind.name}, which tinyslm does not read "
                f"(supported: {', '.join(SUPPORTED_TYPES)})"
            )
        block, type_size = gguf.GGML_QUANT_SIZES[kind]
        if any(d == 0 or d >= 1 << 40 for d in dims):
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(shape)}: a dimension of 0 or beyond 2^40 "
                                  "is no tensor a model holds (a corrupt header)")  # fmt: skip
        if dims and dims[0] % block:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({kind.name}, shape {list(shape)}) has rows of {dims[0]} values, not a whole "
                f"number of {kind.name} blocks of {block}: its size does not match its type"
            )
        n = 1
        for d in dims:
            n *= d
        n_bytes = n // block * type_size
        start = data_start + offset
        if start + n_bytes > file_size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({kind.name}, shape {list(shape)}) needs {n_bytes} bytes from byte {start}, "
                f"but the file ends at byte {file_size}: truncated file (or a shape larger than the data)"
            )
        spans.append((start, n_bytes, name, kind.name, shape))
    ordered = sorted(spans)
    for (start, n_bytes, name, kind, shape), nxt in zip(ordered, ordered[1:]):
        if start + n_bytes > nxt[0]:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({kind}, shape {list(shape)}) needs {n_bytes} bytes, but tensor {nxt[2]!r} "
                f"starts {nxt[0] - start} bytes after it: its byte size does not match its type and shape"
            )
    return [(name, kind, shape, start, n_bytes) for start, n_bytes, name, kind, shape in spans]
