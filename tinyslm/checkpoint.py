"""Loading and saving HF checkpoint folders (config.json + safetensors, sharded or not).

    folder/config.json                        -> family.from_hf -> ModelConfig
    folder/model.safetensors                  -> one file, or
    folder/model.safetensors.index.json       -> {"weight_map": {tensor name: shard file}}

Loading builds the model on the meta device (no memory), then hands each memory-mapped
safetensors tensor to its parameter: when the file's dtype is the requested one the parameter
*is* the mapped tensor (nothing is copied); otherwise each tensor is converted on its own, so
there is never a second full copy of the weights in memory. Every tensor
is checked: unexpected names, missing names and wrong shapes are errors naming the file, the
key and both shapes. Pickle checkpoints (`*.bin`, `*.pt`) can run arbitrary code when loaded;
they are refused unless the caller opts in, and then read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig, dtype_from_name
from .errors import CheckpointError
from .families import check_expressible, config_from_hf, get_family
from .families.hf_config import HFConfig
from .model import CausalLM

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_PATTERNS = ("pytorch_model.bin", "pytorch_model-*-of-*.bin")  # not training_args.bin, optimizer.pt


def load_config(path: str | Path) -> ModelConfig:
    """A ModelConfig from a checkpoint folder, a config.json or a tinyslm TOML file."""
    path = Path(path).expanduser()
    if path.suffix == ".toml":
        return ModelConfig.from_toml(path)
    return config_from_hf(HFConfig.read(path))


def read_index(folder: Path) -> dict[str, str] | None:
    """The {tensor name: shard file} map of a sharded checkpoint, or None for a single file."""
    index = folder / SAFETENSORS_INDEX
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: not a valid safetensors index ({exc!r})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: weight_map must map tensor names to shard file names")
    outside = sorted({v for v in weight_map.values() if Path(v).name != v or v in (".", "..")})
    if outside:
        raise CheckpointError(f"{index}: shard names must be plain file names in the folder, found {', '.join(outside)}")
    return weight_map


def weight_files(folder: Path, allow_pickle: bool = False) -> list[Path]:
    """The weight files of a checkpoint folder, refusing pickles unless allowed."""
    return _weight_files(folder, read_index(folder), allow_pickle)


def _weight_files(folder: Path, weight_map: dict[str, str] | None, allow_pickle: bool) -> list[Path]:
    if weight_map is not None:
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder / SAFETENSORS_INDEX} names shard(s) that are not in the folder: {', '.join(missing)}")
        return files
    if (folder / SAFETENSORS_FILE).is_file():
        return [folder / SAFETENSORS_FILE]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickles = sorted({p for pattern in PICKLE_PATTERNS for p in folder.glob(pattern)})
    if pickles and not allow_pickle:
        raise CheckpointError(
            f"{folder}: only pickle weights found ({', '.join(p.name for p in pickles)}). Pickle files can run code "
            "when loaded, so they are refused by default. Convert them to safetensors, or opt in with "
            "load_pretrained(..., allow_pickle=True) / `--allow-pickle` (read with torch.load(weights_only=True))."
        )
    if pickles:
        return pickles
    raise CheckpointError(f"{folder}: no weights found (expected {SAFETENSORS_FILE} or {SAFETENSORS_INDEX})")


class _SafetensorsReader:
    def __init__(self, path: Path):
        from safetensors import safe_open  # noqa: PLC0415

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
        except Exception as exc:  # data section shorter than the header claims
            raise CheckpointError(f"{self.path}: tensor {key!r} cannot be read ({exc})") from None


class _PickleReader:
    def __init__(self, path: Path):
        self.path = path
        try:
            self._state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True) ({first_line})") from None
        if not isinstance(self._state, dict):
            raise CheckpointError(f"{path}: expected a state dict, found {type(self._state).__name__}")

    def keys(self) -> list[str]:
        return list(self._state)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._state[key].shape)

    def tensor(self, key: str) -> torch.Tensor:
        return self._state[key]


def _open_weights(path: Path) -> _SafetensorsReader | _PickleReader:
    return _SafetensorsReader(path) if path.suffix == ".safetensors" else _PickleReader(path)


def load_pretrained(
    path: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
) -> CausalLM:
    """Build a CausalLM from an HF checkpoint folder and load its weights (strictly checked)."""
    folder = Path(path).expanduser()
    hf = HFConfig.read(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: expected a checkpoint folder, found a file")
    config = config_from_hf(hf)
    family = get_family(config.family)
    dtype = dtype_from_name(dtype) if isinstance(dtype, str) else dtype
    index = read_index(folder)  # read once: it lists the files and says which tensor each holds
    files = _weight_files(folder, index, allow_pickle)

    with torch.device("meta"):  # structure only: no memory is allocated for the weights
        model = CausalLM(config)
    key_map = family.key_map(model)  # HF tensor name -> the parameter(s) it holds
    tied_head = key_map.tied_head

    found_in: dict[str, Path] = {}
    for file in files:
        reader = _open_weights(file)
        for stored_key in reader.keys():
            key = family.canonical(stored_key)  # e.g. GPT-NeoX's hub name embed_out -> lm_head
            if key in found_in:
                raise CheckpointError(f"{folder}: tensor {key!r} is stored twice, in {found_in[key].name} and {file.name}")
            found_in[key] = file
            if index is not None and index.get(stored_key) != file.name:
                raise CheckpointError(
                    f"{file}: holds tensor {stored_key!r}, but {SAFETENSORS_INDEX} places it in {index.get(stored_key)!r}"
                )
            entry = key_map.entries.get(key)
            if entry is None:
                if family.is_ignored(key) or key == tied_head:  # a tied copy some files store
                    continue
                raise CheckpointError(
                    f"{file}: unexpected tensor {stored_key!r}: no parameter of this {family.model_type} model "
                    f"(config.json) is stored under that name"
                )
            expected, found = entry.hf_shape, reader.shape(stored_key)
            if expected != found:
                holds = f" (it holds {', '.join(entry.ours)}: {' + '.join(str(list(s)) for s in entry.shapes)})"
                raise CheckpointError(
                    f"{file}: tensor {stored_key!r} has shape {list(found)}, expected {list(expected)} from config.json"
                    + (holds if entry.rule is not None else "")
                )
            stored = reader.tensor(stored_key)
            if not stored.dtype.is_floating_point:
                raise CheckpointError(
                    f"{file}: tensor {stored_key!r} is stored as {stored.dtype}; tinyslm loads floating-point weights "
                    "only (quantised checkpoints are not supported)"
                )
            for ours, part in zip(entry.ours, entry.unpack(stored)):
                # .to() is a no-op when dtype and device already match: a renamed parameter then *is*
                # the memory-mapped tensor (copy-on-write), so loading costs no second copy.
                tensor = part.to(device=device, dtype=dtype)
                tensor = tensor if entry.rule is None else tensor.contiguous()
                module_name, _, leaf = ours.rpartition(".")
                model.get_submodule(module_name)._parameters[leaf] = nn.Parameter(tensor)
    missing = [e.hf_key for e in key_map.entries.values() if any(model.get_parameter(o).is_meta for o in e.ours)]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"{folder}: missing tensor(s) {shown} (looked in {', '.join(f.name for f in files)})")
    if config.tie_embeddings:
        model.head.weight = model.tok_emb.weight  # one Parameter again
    model.reset_buffers(device)
    return model.eval()


def save_pretrained(model: CausalLM, path: str | Path) -> Path:
    """Write config.json + model.safetensors in the HF layout of the model's family.

    transformers' `AutoModelForCausalLM.from_pretrained(path)` loads the folder back with identical
    logits. Files are written to temporary names and renamed, so a failure never leaves a
    half-written checkpoint.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    config = model.config
    family = get_family(config.family, f"config {config.name!r}")
    # refuses a config the family's config.json cannot express (it would load as another model)
    hf_config = check_expressible(family, config.replace(dtype=str(model.tok_emb.weight.dtype).removeprefix("torch.")))
    params = dict(model.named_parameters())
    tensors = {
        hf_key: entry.pack([params[o].detach().to("cpu") for o in entry.ours]).contiguous()
        for hf_key, entry in family.key_map(model).entries.items()
    }
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    outputs = {
        SAFETENSORS_FILE: lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}),
        "config.json": lambda tmp: Path(tmp).write_text(json.dumps(hf_config, indent=2) + "\n"),
    }
    umask = os.umask(0)
    os.umask(umask)
    for name, write in outputs.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return folder
