"""Training checkpoints: an HF model folder plus everything needed to continue exactly.

    OUT/step-000200/config.json            the model, as `tinyslm.save_pretrained` writes it: loads in
    OUT/step-000200/model.safetensors      `tinyslm generate` and transformers' from_pretrained
    OUT/step-000200/tokenizer.model        the training tokenizer (extra files), so text prompts work
    OUT/step-000200/trainer_state.pt       step, optimizer moments, data-stream position, RNG states,
                                           the model and training configs, the loss history
    OUT/final/                             the last step's checkpoint again (hard links, no copy)

A checkpoint is written whole into a hidden staging folder beside its target and renamed into
place, so a crash leaves the previous checkpoints and at most a hidden leftover, never a folder
that looks finished but is not. trainer_state.pt holds plain data and tensors only, so it is read
with `torch.load(weights_only=True)`: loading it runs no code. The optimizer state is stored in
the "full" form of `torch.distributed.checkpoint.state_dict` (keyed by parameter name, unsharded),
so a run saved by one process resumes under DDP or FSDP on any number of processes, and back.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from ..checkpoint import save_pretrained
from ..config import ModelConfig
from ..errors import CheckpointError
from ..model import CausalLM
from ..pretrained import load_pretrained

STATE_FILE = "trainer_state.pt"
FORMAT = 1
STEP_DIR = re.compile(r"^step-(\d+)$")
# Model-config fields that may differ between a checkpoint and the run resuming it.
IGNORED_ON_RESUME = ("name", "dtype")


def step_dir(out: Path, step: int) -> Path:
    return out / f"step-{step:06d}"


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """The finished checkpoints in `out` (folders step-N holding a trainer state), oldest first."""
    if not out.is_dir():
        return []
    found = []
    for entry in out.iterdir():
        match = STEP_DIR.match(entry.name)
        if match and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def write_checkpoint(out: Path, step: int, model: CausalLM, state: dict, extra_files=(), *, final: bool = False,
                     keep: int = 0) -> Path:  # fmt: skip
    """Write OUT/step-N (and with `final`, OUT/final) atomically; keep the newest `keep` step folders (0: all)."""
    target = step_dir(out, step)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=out))
    try:
        folder = save_pretrained(model, staging / "model")  # save_pretrained makes its own folder atomically
        for extra in extra_files:
            extra = Path(extra)
            if extra.is_file():
                shutil.copy2(extra, folder / extra.name)
        torch.save(state, folder / STATE_FILE)
        _replace(folder, target)
        if final:
            linked = Path(tempfile.mkdtemp(prefix=".final.staging-", dir=out))
            shutil.copytree(target, linked / "final", copy_function=_link_or_copy)
            _replace(linked / "final", out / "final")
            shutil.rmtree(linked, ignore_errors=True)
    except OSError as exc:
        raise CheckpointError(f"{target}: cannot write the checkpoint ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if keep > 0:
        for _, old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _replace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; an existing `dst` is moved aside first and removed after."""
    if dst.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.rename(dst, aside / dst.name)
        os.rename(src, dst)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(src, dst)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def read_state(folder: Path) -> dict:
    """trainer_state.pt of a checkpoint folder, read without running code (weights_only=True)."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a training checkpoint (no {STATE_FILE}); resume needs a folder "
                              "written by `tinyslm train`")  # fmt: skip
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises several kinds for a damaged file)
        raise CheckpointError(f"{path}: cannot be read as a trainer state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: trainer state format {found!r}, expected {FORMAT}")
    return state


def check_same_model(folder: Path, saved: dict, config: ModelConfig) -> None:
    """Refuse to resume a run of one model config from a checkpoint of another, naming the differences."""
    ours = config.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {ours.get(k)!r}" for k in sorted(set(saved) | set(ours))
             if k not in IGNORED_ON_RESUME and saved.get(k) != ours.get(k)]  # fmt: skip
    if diffs:
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise CheckpointError(
            f"{folder}: was trained with another model config ({'; '.join(diffs[:4])}{more}); resume with the "
            "config it was trained with, or train into a new --out"
        )


def load_weights(folder: Path, model: CausalLM) -> None:
    """Copy the checkpoint's weights into `model` (checked tensor by tensor by load_pretrained)."""
    loaded = load_pretrained(folder, dtype=model.tok_emb.weight.dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: weights do not match the model (missing {missing[:4]}, unexpected "
                              f"{unexpected[:4]})")  # fmt: skip
