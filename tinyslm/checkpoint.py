"""Loading and saving HF checkpoint folders (config.json + safetensors, sharded or not).

`tinyslm.load_pretrained` (pretrained.py) loads a folder with `load_hf_folder` below and a GGUF file with
gguf/loader.py; this module is the folder format only, beside the GGUF one (`load_config` reads either).

    folder/config.json                        -> family.from_hf -> ModelConfig
    folder/model.safetensors                  -> one file, or
    folder/model.safetensors.index.json       -> {"weight_map": {tensor name: shard file}}

Loading builds the model on the meta device (no memory), then hands each memory-mapped
safetensors tensor to its parameter: when the file's dtype is the requested one the parameter
*is* the mapped tensor (nothing is copied); otherwise each tensor is converted on its own, so
there is never a second full copy of the weights in memory. Every tensor is checked: unexpected
names, missing names and wrong shapes are errors naming the file, the key and both shapes. Which
files are read, and how each is opened (by content: pickles need the caller's opt-in and are read
with `torch.load(weights_only=True)`), is decided in files.py.

Saving is all or nothing: the new checkpoint is written into a temporary folder beside the target
and swapped in by renaming, so the target holds the old checkpoint or the new one, never a mix
(and never stale shards of an earlier checkpoint next to the new file).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .config import ModelConfig, dtype_from_name
from .errors import CheckpointError, ConfigError
from .families import check_expressible, config_from_hf, get_family
from .families.hf_config import HFConfig
from .files import (
    CHECKPOINT_PATTERNS,
    LOADABLE_DTYPES,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX,
    lock_within,
    open_weights,
    shown,
    weight_files as _weight_files,
)
from .gguf.loader import default_dtype as gguf_default_dtype, gguf_config, is_gguf
from .model import CausalLM
from .sizing import MAX_PARAMETERS, check_buildable  # noqa: F401  (re-exported: their old home)

__all__ = ["load_config", "load_pretrained", "load_hf_folder", "save_pretrained", "weight_files", "SAFETENSORS_FILE",
           "SAFETENSORS_INDEX"]  # fmt: skip


def __getattr__(name: str):
    """`tinyslm.checkpoint.load_pretrained`, the old import path of `tinyslm.load_pretrained`: it loads GGUF files
    too, and keeps their quantized weights in tinyslm.quant's kernels, so it lives above this module
    (pretrained.py); resolved on first use (PEP 562), as an import here would run in a circle."""
    if name == "load_pretrained":
        from .pretrained import load_pretrained  # noqa: PLC0415  (old import path; tests/test_imports.py)

        return load_pretrained
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_config(path: str | Path) -> ModelConfig:
    """A ModelConfig from a checkpoint folder, a config.json, a tinyslm TOML file or a GGUF file
    (its metadata; no weights are read)."""
    path = Path(path).expanduser()
    if path.suffix == ".toml":
        return ModelConfig.from_toml(path)
    if is_gguf(path):  # a .gguf, or a folder holding one
        return gguf_config(path)
    return config_from_hf(HFConfig.read(path))


def default_dtype(path: str | Path) -> torch.dtype:
    """The dtype `load_pretrained(path)` loads with when none is given: float32 for a folder, a GGUF's own."""
    return gguf_default_dtype(path) if is_gguf(path) else torch.float32


def weight_files(folder: str | Path, allow_pickle: bool = False) -> list[Path]:
    """The weight files of a checkpoint folder (files.py decides which), refusing pickles unless allowed."""
    return _weight_files(Path(folder).expanduser(), allow_pickle)[0]


def load_hf_folder(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
) -> CausalLM:
    """Build a CausalLM from an HF checkpoint folder and load its weights (strictly checked).

    dtype: of the parameters; None means float32 (as transformers loads a folder)."""
    folder = Path(path).expanduser()
    if folder.is_file() and folder.name != "config.json":
        raise CheckpointError(f"{folder}: is a file; give the checkpoint folder that holds it (config.json + weights)")
    hf = HFConfig.read(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: expected a checkpoint folder, found a file")
    config = config_from_hf(hf)
    family = get_family(config.family)
    dtype = torch.float32 if dtype is None else dtype_from_name(dtype) if isinstance(dtype, str) else dtype
    files, index = _weight_files(folder, allow_pickle)  # the one decision on which files make the checkpoint
    readers = [open_weights(f, allow_pickle) for f in files]  # by content: a pickle is a pickle whatever its name
    stored_values = sum(_numel(r.shape(k)) for r in readers for k in r.keys())
    expected = check_buildable(config, hf.source)
    if expected > 2 * stored_values + 10**6:  # before building: a config far larger than its weights
        raise CheckpointError(
            f"{hf.source}: describes a model of {expected:,} parameters, but the weight files hold only "
            f"{stored_values:,} values"
        )

    with torch.device("meta"):  # structure only: no memory is allocated for the weights
        model = CausalLM(config)
    key_map = family.key_map(model)  # HF tensor name -> the parameter(s) it holds
    stored_head = None  # a tied model's file may store lm_head too (see below)

    found_in: dict[str, Path] = {}
    copies = []  # (file, stored name, tensor, the entry it must equal)
    for reader in readers:
        file = reader.path
        for stored_key in reader.keys():
            key = family.canonical(stored_key)  # e.g. GPT-NeoX's hub name embed_out -> lm_head
            if key in found_in:
                raise CheckpointError(
                    f"{folder}: tensor {shown(key)!r} is stored twice, in {found_in[key].name} and {file.name}"
                )
            found_in[key] = file
            if index is not None and index.get(stored_key) != file.name:
                raise CheckpointError(
                    f"{file}: holds tensor {shown(stored_key)!r}, but {SAFETENSORS_INDEX} places it in "
                    f"{shown(str(index.get(stored_key)))!r}"
                )
            entry = key_map.entries.get(key)
            if entry is None and key == key_map.tied_head:
                stored_head = _checked(reader, stored_key, tuple(model.head.weight.shape))
                continue
            if entry is None and key in key_map.copies:  # a shared module stored under another layer's name too
                primary = key_map.entries[key_map.copies[key]]
                copies.append((file, stored_key, _checked(reader, stored_key, primary.hf_shape, primary), primary))
                continue
            if entry is None:
                if family.is_ignored(key):
                    continue
                raise CheckpointError(
                    f"{file}: unexpected tensor {shown(stored_key)!r}: no parameter of this {family.model_type} "
                    "model (config.json) is stored under that name"
                )
            stored = _checked(reader, stored_key, entry.hf_shape, entry)
            for ours, part in zip(entry.ours, entry.unpack(stored)):
                # .to() is a no-op when dtype and device already match: a renamed parameter then *is*
                # the memory-mapped tensor (copy-on-write), so loading costs no second copy.
                tensor = part.to(device=device, dtype=dtype)
                tensor = tensor if entry.rule is None else tensor.contiguous()
                module_name, _, leaf = ours.rpartition(".")
                model.get_submodule(module_name)._parameters[leaf] = nn.Parameter(tensor)
    missing = [e.hf_key for e in key_map.entries.values() if any(model.get_parameter(o).is_meta for o in e.ours)]
    if missing:
        listed = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"{folder}: missing tensor(s) {listed} (looked in {', '.join(f.name for f in files)})")
    for file, stored_key, tensor, primary in copies:
        loaded = primary.pack([model.get_parameter(o) for o in primary.ours])
        if not torch.equal(tensor.to(device=loaded.device, dtype=loaded.dtype), loaded):
            raise CheckpointError(
                f"{file}: tensor {shown(stored_key)!r} differs from {primary.hf_key!r}, but this {family.model_type} "
                "model shares one module between them (config.json); the file holds separate weights"
            )
    if config.tie_embeddings:
        model.head.weight = model.tok_emb.weight  # one Parameter again
        if stored_head is not None and not torch.equal(stored_head.to(dtype), model.tok_emb.weight.cpu()):
            # transformers loads a stored lm_head even when config.json says tie_word_embeddings: so do we
            model.head.weight = nn.Parameter(stored_head.to(device=device, dtype=dtype))
            model.config = config.replace(tie_embeddings=False)
    model.reset_buffers(device)
    return model.eval()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _checked(reader, key: str, expected: tuple[int, ...], entry=None) -> torch.Tensor:
    """The stored tensor, after its shape and dtype are checked against what the config expects."""
    found = reader.shape(key)
    if tuple(expected) != tuple(found):
        holds = ""
        if entry is not None and entry.rule is not None:
            holds = f" (it holds {', '.join(entry.ours)}: {' + '.join(str(list(s)) for s in entry.shapes)})"
        raise CheckpointError(
            f"{reader.path}: tensor {shown(key)!r} has shape {list(found)}, expected {list(expected)} from config.json"
            + holds
        )
    stored = reader.tensor(key)
    if stored.dtype not in LOADABLE_DTYPES:
        raise CheckpointError(
            f"{reader.path}: tensor {shown(key)!r} is stored as {stored.dtype}; tinyslm loads float32, float16, "
            "bfloat16 and float64 weights (quantised checkpoints are not supported)"
        )
    return stored


# ----------------------------------------------------------------------------------------------
# saving


def save_pretrained(model: CausalLM, path: str | Path) -> Path:
    """Write config.json + model.safetensors in the HF layout of the model's family.

    transformers' `AutoModelForCausalLM.from_pretrained(path)` loads the folder back with identical
    logits. All or nothing: the files are written into a temporary folder beside `path`, the other
    files already in `path` (a tokenizer, a README) are linked in, and the folder is swapped in by
    renaming. Files of an earlier checkpoint in `path` (shards, an index, pickles) do not survive.
    """
    config = model.config
    family = get_family(config.family, f"config {config.name!r}")
    quantized = [name for name, m in model.named_modules() if hasattr(m, "dequantize") and not isinstance(m, nn.Linear)]
    if quantized:
        raise CheckpointError(
            f"{path}: the model holds quantized layers ({quantized[0]}, and {len(quantized) - 1} more), which an HF "
            "safetensors folder cannot hold; save the float model (load the GGUF with keep_quantized=False, or save "
            "before tinyslm.quantize), or write a GGUF with `tinyslm convert`"
        )
    # refuses a config the family's config.json cannot express (it would load as another model)
    hf_config = check_expressible(family, config.replace(dtype=str(model.tok_emb.weight.dtype).removeprefix("torch.")))
    params = dict(model.named_parameters())
    tensors = {
        hf_key: entry.pack([params[o].detach().to("cpu") for o in entry.ours]).contiguous()
        for hf_key, entry in family.key_map(model).entries.items()
    }
    folder = _save_target(path)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with save_lock(folder):
            _save_locked(tensors, hf_config, folder)
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot save the checkpoint ({exc.strerror or exc})") from None
    return folder


def install_folder(prepared: Path, path: str | Path) -> Path:
    """Put a complete checkpoint folder `prepared` (beside `path`, on its file system) at `path` as save_pretrained
    puts its own: in one step, the other files already at `path` kept, one writer at a time (tinyslm convert)."""
    folder = _save_target(path)
    try:
        with save_lock(folder):
            _remove_leftovers(folder)
            _swap_in(prepared, folder)
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot write the checkpoint ({exc.strerror or exc})") from None
    return folder


def _save_target(path: str | Path) -> Path:
    """The folder a save writes: through a link to a folder; never a file, nor the working directory."""
    folder = Path(path).expanduser().absolute()
    if folder.is_symlink() and folder.is_dir():  # a link to a folder: save into the folder it names, keep the link
        folder = folder.resolve()
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder}: exists and is not a folder; cannot save a checkpoint there")
    cwd = Path.cwd().resolve()
    if folder.exists() and (cwd == folder.resolve() or folder.resolve() in cwd.parents):
        raise CheckpointError(f"{folder}: is the working directory (or holds it), which a save replaces as a whole; "
                              "save into a subfolder, or from another directory")  # fmt: skip
    return folder


SAVE_WAIT_S = 600.0  # how long a save waits for another save into the same folder to finish


@contextlib.contextmanager
def save_lock(folder: Path):
    """One save into `folder` at a time, across processes: a lock on the folder that holds it (flock on the
    directory itself: no file left behind; released by the OS if its holder dies); a save that waits more than
    SAVE_WAIT_S for another is refused. (Saves into other folders of the same parent wait for each other too.)"""
    fd = os.open(folder.parent, os.O_RDONLY)
    try:
        if not lock_within(fd, SAVE_WAIT_S):
            raise CheckpointError(f"{folder}: another process has been saving into it for over {SAVE_WAIT_S:.0f} s")
        yield
    finally:
        os.close(fd)


def _save_locked(tensors: dict, hf_config: dict, folder: Path) -> None:
    """save_pretrained's writing, under its lock: a staging folder beside `folder`, swapped in when complete."""
    _remove_leftovers(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tinyslm-save-", dir=folder.parent))
    try:
        save_file(tensors, staging / SAFETENSORS_FILE, metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes the folder private; give it the usual permissions
        for f in staging.iterdir():
            os.chmod(f, 0o666 & ~umask)
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # an interrupt or a failure leaves no half-written files
        raise


def _swap_in(staging: Path, folder: Path) -> None:
    """Move the finished checkpoint in `staging` to `folder`, keeping `folder`'s other files (tokenizer, ...)."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    for entry in folder.iterdir():  # what is not part of a checkpoint stays: hard links cost no copy
        if not any(entry.match(p) for p in CHECKPOINT_PATTERNS) and not (staging / entry.name).exists():
            target = staging / entry.name  # (a file the new checkpoint brings, its tokenizer, wins over the old one)
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
            else:
                _link_or_copy(entry, target)
    if _exchange(staging, folder):  # one atomic step: `folder` holds the old checkpoint, then the new one
        shutil.rmtree(staging, ignore_errors=True)  # (now the old checkpoint; a leftover if interrupted here)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tinyslm-old-", dir=folder.parent))
    os.rename(folder, old / folder.name)  # from here until the next rename the old checkpoint sits in `old`
    os.rename(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders' names in one atomic step (Linux's renameat2 RENAME_EXCHANGE); False where the OS or the
    file system cannot (the caller then renames twice, with a moment where `b` is absent)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _remove_leftovers(folder: Path) -> None:
    """Temporary folders of earlier saves to `folder` that were killed before they could clean up.

    A save killed between its two renames left the previous checkpoint in an "-old-" folder and
    none at `folder`: that one is put back, not deleted.
    """
    for stale in _leftovers(folder, "save"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in _leftovers(folder, "old"):
        if not folder.exists() and (old / folder.name).is_dir():
            os.rename(old / folder.name, folder)
        shutil.rmtree(old, ignore_errors=True)


def _leftovers(folder: Path, kind: str) -> list[Path]:
    """The temporary folders a save into `folder` makes: exactly ".NAME.tinyslm-KIND-" and mkdtemp's 8 characters
    (compared as text: a name like "run[12]" is not a pattern that matches another checkpoint's)."""
    prefix = f".{folder.name}.tinyslm-{kind}-"
    return [p for p in folder.parent.iterdir() if p.name.startswith(prefix) and len(p.name) == len(prefix) + 8
            and p.is_dir() and not p.is_symlink()]  # fmt: skip
