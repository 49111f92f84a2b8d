"""The files of a checkpoint folder: which ones make the checkpoint, and what each one is.

One place decides a folder's weight files (`weight_files`), in transformers' order of preference:

    model.safetensors                 a single file wins
    model.safetensors.index.json      else the index and the shards it names
    *.safetensors                     else every safetensors file in the folder
    pytorch_model*.bin                else pickles, and only with allow_pickle

One place opens a weights file (`open_weights`), by its *content*, not its name: a pickle called
`model.safetensors`, or named by an index, is still a pickle and is refused without the opt-in.
Special files (a FIFO, a device, a folder) are refused before they are opened, so nothing blocks.

Text files (config.json, an index, tokenizer_config.json, a TOML config) are read with
`read_text` / `read_json`, whose errors name the file and say what is wrong: missing, unreadable,
not UTF-8, not JSON, nested too deep.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from .errors import CheckpointError, ConfigError, TinySLMError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_PATTERNS = ("pytorch_model.bin", "pytorch_model-*-of-*.bin")  # not training_args.bin, optimizer.pt
# every file a checkpoint writer may have left in a folder (what saving replaces)
CHECKPOINT_PATTERNS = ("config.json", "model*.safetensors", SAFETENSORS_INDEX, "pytorch_model*.bin",
                       "pytorch_model.bin.index.json")  # fmt: skip
LOADABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def shown(name: str) -> str:
    """A name from a file, safe to print: control characters (terminal escapes) are escaped."""
    return name if name.isprintable() else ascii(name)


def file_number(value: Any, kind: type, where: str, key: str, error: type[TinySLMError] = ConfigError) -> Any:
    """An int or a float read from a file (JSON, GGUF metadata), as `kind`; a bool (Python's int(True) is 1), a string
    ("8"), a float where an int goes (2.5 layers), NaN or infinity is refused naming the file and the key."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    ok = is_int or (kind is float and isinstance(value, (float, np.floating)) and math.isfinite(value))
    if not ok:
        wanted = "an integer" if kind is int else "a finite number"
        raise error(f"{where}: {key} must be {wanted}, found {shown(repr(value))}")
    return kind(value)


def file_bool(value: Any, default: bool, where: str, key: str, error: type[TinySLMError] = CheckpointError) -> bool:
    """A boolean read from a file (JSON true/false, GGUF's bool): `default` when absent (None); anything else, the
    string "false" above all (which Python's bool() reads as True), is refused naming the file and the key."""
    if value is None:
        return default
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # (numpy's, as GGUF readers return it)
        return bool(value)
    raise error(f"{where}: {key} must be true or false, found {shown(repr(value))}")


def lock_within(fd: int, seconds: float, waiting: Callable[[], None] | None = None) -> bool:
    """An exclusive flock on `fd` (released by the OS if this process dies), waiting at most `seconds` for another
    process's; `waiting()` is called once if it must wait. False when the time ran out; True where there is no
    flock (Windows)."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:
        return True
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            if waiting is not None:
                waiting()
                waiting = None
            time.sleep(0.05)


# C0 controls but tab, newline and carriage return (progress bars redraw with it), DEL, and C1 controls (0x9b is
# a one-byte escape sequence introducer): what lets text change a terminal's title, clear it or move its cursor
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """Text with every terminal control character written as \\xNN, e.g. ESC as \\x1b."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class EscapedStream:
    """A text stream (stdout, stderr) whose every write is escaped (`escape_controls`): the CLI prints through
    it, so no string from a file (a GGUF's general.name, a config's _name_or_path, a token's text) reaches the
    terminal as a control sequence, wherever it is printed."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(escape_controls(text))

    def __getattr__(self, name: str):  # flush, isatty, encoding, fileno, ... as the stream has them
        return getattr(self.stream, name)


_KERNEL_FILES = ("/proc", "/sys")  # files the kernel makes up as they are read (/proc/self/mem, /proc/kcore)


def regular_file(path: Path, error: type[TinySLMError] = CheckpointError) -> Path:
    """`path` if it is a regular file we may read; else an error saying what it is instead."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except PermissionError:
        raise error(f"{path}: permission denied") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a folder, expected a file")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is not a regular file (a FIFO, socket or device); refusing to read it")
    real = os.path.realpath(path)
    if any(real == top or real.startswith(top + "/") for top in _KERNEL_FILES):
        raise error(f"{path}: is the kernel's file {shown(real)}, not a file of data; refusing to read it")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: permission denied")
    return path


def read_text(path: Path, error: type[TinySLMError] = CheckpointError) -> str:
    regular_file(path, error)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from None


def read_json(path: Path, error: type[TinySLMError] = CheckpointError) -> dict[str, Any]:
    """A JSON object from `path`; anything else (not JSON, nested too deep, a list) is `error` naming the file."""
    text = read_text(path, error)
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to read") from None
    except ValueError as exc:  # a number of thousands of digits (Python's int limit), and the like
        raise error(f"{path}: a value cannot be read ({str(exc).split(';')[0]})") from None
    if not isinstance(values, dict):
        raise error(f"{path}: expected a JSON object, found {type(values).__name__}")
    return values


# ----------------------------------------------------------------------------------------------
# which files


def read_index(folder: Path) -> dict[str, str] | None:
    """The {tensor name: shard file} map of a sharded checkpoint, or None when there is no index."""
    index = folder / SAFETENSORS_INDEX
    if not index.exists() and not index.is_symlink():
        return None
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: not a valid safetensors index: weight_map must map tensor names to shard file names")
    bad = sorted({v for v in weight_map.values() if not v or Path(v).name != v or v in (".", "..")})
    if bad:
        names = ", ".join(shown(v) if v else "'' (empty)" for v in bad)
        raise CheckpointError(f"{index}: shard names must be plain file names in the folder, found {names}")
    return weight_map


def weight_files(folder: Path, allow_pickle: bool = False) -> tuple[list[Path], dict[str, str] | None]:
    """The weight files of a checkpoint folder and, when they come from an index, its weight_map."""
    if (folder / SAFETENSORS_FILE).exists():
        return [regular_file(folder / SAFETENSORS_FILE)], None  # transformers' first choice, whatever else is there
    index = read_index(folder)
    if index is not None:
        files = [folder / name for name in sorted(set(index.values()))]
        missing = [shown(f.name) for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{folder / SAFETENSORS_INDEX} names shard(s) that are not in the folder: {', '.join(missing)}")
        return [regular_file(f) for f in files], index
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return [regular_file(f) for f in shards], None
    pickles = sorted({p for pattern in PICKLE_PATTERNS for p in folder.glob(pattern)})
    if pickles and not allow_pickle:
        raise CheckpointError(refusal(folder, [p.name for p in pickles]))
    if pickles:
        return [regular_file(p) for p in pickles], None
    raise CheckpointError(f"{folder}: no weights found (expected {SAFETENSORS_FILE} or {SAFETENSORS_INDEX})")


def refusal(where: Path, names: list[str]) -> str:
    return (
        f"{where}: pickle weights ({', '.join(shown(n) for n in names)}). Pickle files can run code when loaded, "
        "so they are refused by default. Convert them to safetensors, or opt in with "
        "load_pretrained(..., allow_pickle=True) / `--allow-pickle` (read with torch.load(weights_only=True))."
    )


# ----------------------------------------------------------------------------------------------
# what a file is


def sniff(path: Path) -> str:
    """"safetensors", "pickle" (torch's zip format or a raw pickle stream) or "unknown", from the first bytes."""
    try:
        with open(regular_file(path), "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    # safetensors: an 8-byte little-endian header length, then the JSON header
    if len(head) == 9 and head[8:9] == b"{" and 1 < struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch's zip format, or a raw pickle stream
        return "pickle"
    return "unknown"


def open_weights(path: Path, allow_pickle: bool = False):
    """A reader for one weights file, chosen by what the file contains."""
    kind = sniff(path)
    if kind == "safetensors":
        return SafetensorsReader(path)
    if kind == "pickle":
        if not allow_pickle:
            raise CheckpointError(refusal(path.parent, [path.name]))
        return PickleReader(path)
    raise CheckpointError(f"{path}: neither a safetensors file nor a torch pickle (its first bytes match neither)")


class SafetensorsReader:
    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")  # memory-mapped
        except Exception as exc:  # safetensors raises its own error types for truncated/corrupt headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None

    def keys(self) -> list[str]:
        return list(self._file.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())

    def tensor(self, key: str) -> torch.Tensor:
        try:
            return self._file.get_tensor(key)
        except Exception as exc:  # data section shorter than the header claims, or a dtype torch lacks
            raise CheckpointError(f"{self.path}: tensor {shown(key)!r} cannot be read ({exc})") from None


class PickleReader:
    def __init__(self, path: Path):
        self.path = path
        try:
            if path.suffix == ".safetensors":  # torch.load would take the name's word for it: give it the bytes
                with open(path, "rb") as f:
                    self._state = torch.load(f, map_location="cpu", weights_only=True)
            else:
                self._state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True) ({first_line})") from None
        if not isinstance(self._state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in self._state.items()
        ):
            raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(self._state).__name__}")

    def keys(self) -> list[str]:
        return list(self._state)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._state[key].shape)

    def tensor(self, key: str) -> torch.Tensor:
        return self._state[key]
