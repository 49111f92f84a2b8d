"""The training loop: next-token cross-entropy, AdamW, one optimizer step per global batch.

One step, as every rank runs it (B = batch_size global sequences, N ranks, A accumulation steps):

    inputs, targets = next(batches)            # this rank's B/N rows, (B/N, T) int64 each
    for each of A micro-batches (B/(N*A) rows):
        loss_sum = CE(model(x), y), summed over positions whose target is not -100
        backward(loss_sum * N / n_targets)     # n_targets: counted over the whole global batch
    clip the gradient norm, set lr(step), AdamW step

Dividing by the number of targets in the *global* batch (not the micro-batch's own mean) makes
the gradient the mean over every counted target, whatever A and N are and however the ignored
positions (-100, MQAR's non-answers) fall: DDP and FSDP average gradients over ranks (divide by
N), hence the factor N. So 1 process with A = 4 and 4 processes with A = 1 take the same step,
up to the order of float additions.

Mixed precision: under `precision="bf16"` the forward runs in torch.autocast(bfloat16); weights,
gradients and AdamW moments stay float32, and the loss is computed from float32 logits. "auto"
picks bf16 only where the hardware computes in it natively (CUDA with bf16, or a CPU with
AVX512-BF16/AMX; TINYSLM_NATIVE_BF16=1|0 forces the CPU's answer, machine.py); elsewhere bf16 is emulated
and slower than float32. So "auto" computes in another precision on another CPU: results that must agree
across machines pin precision="fp32".

Validation runs every `eval_every` steps on the first `eval_batches` batches of `val()`: the mean
loss over every counted target, and bits per byte, loss / (ln 2 x UTF-8 bytes per token), which
compares models with different tokenizers (Gao et al. 2020, "The Pile", section 3).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import machine
from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError, TinySLMError
from ..layers.attention import set_attention_backend
from ..model import CausalLM
from . import distributed as D
from .optim import lr_at, make_optimizer
from .stop import TrainInterrupted, _StopSignals  # noqa: F401  (TrainInterrupted: raised by train, re-exported)
from .state import (
    FORMAT,
    check_same_model,
    checkpoints,
    load_weights,
    read_state,
    step_dir,
    write_checkpoint,
)

IGNORE = -100  # targets that are not scored (F.cross_entropy's default ignore_index)
PRECISIONS = ("auto", "bf16", "fp32")
DATA_KEYS = ("batch_size", "seq_len", "seed")  # a resumed run must read the same stream


class TrainError(TinySLMError, ValueError):
    """A training run cannot start or continue (batches of the wrong shape, nothing to resume...)."""


FLOAT32_MAX = torch.finfo(torch.float32).max


@dataclass
class TrainConfig:
    """How to train; the defaults suit 1-5M-parameter models on a CPU."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # global sequences per optimizer step (all ranks and micro-batches together)
    seq_len: int = 128  # tokens per sequence
    lr: float = 2e-3  # peak learning rate
    min_lr: float | None = None  # end of the cosine; None -> lr / 10
    warmup_steps: int | None = None  # None -> 5% of steps, at most 200
    weight_decay: float = 0.1  # on Linear weight matrices only (optim.py)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    grad_accum: int = 1  # micro-batches per step: batch_size must be a multiple of grad_accum x ranks
    eval_every: int | None = None  # None -> steps // 10; 0 -> only after the last step
    eval_batches: int = 20  # validation batches per evaluation
    save_every: int = 0  # checkpoint every N steps (0: by time only, save_minutes); needs `out`
    save_minutes: float = 10.0  # and at least this often by wall time (0: never by time); needs `out`
    keep_checkpoints: int = 2  # step-N folders kept (0: all); OUT/final is always kept
    seed: int = 0  # model initialisation (and the data stream, which the caller seeds)
    precision: str = "auto"  # auto | bf16 | fp32
    fsdp: bool = False  # shard parameters and optimizer state (FSDP2) instead of replicating (DDP)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    attention: str = "sdpa"  # attention backend while training (layers/attention.py)

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "seq_len", "grad_accum", "eval_batches")
        non_negative = ("save_every", "keep_checkpoints", "eval_every", "warmup_steps", "seed")
        for key in positive + non_negative:
            value = getattr(self, key)
            if value is None and key in ("eval_every", "warmup_steps"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key in positive else 0):
                raise ConfigError(f"train config: {key} must be an integer >= {1 if key in positive else 0}, "
                                  f"found {value!r}")  # fmt: skip
        if self.seed >= 2**63:  # torch.manual_seed takes a 64-bit seed
            raise ConfigError(f"train config: seed must be below 2^63, found {self.seed}")
        for key in ("lr", "min_lr", "weight_decay", "grad_clip", "save_minutes"):
            value = getattr(self, key)
            # (the optimizer and the gradient clipping hold these as float32: 1e40 would overflow there, mid-run)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= FLOAT32_MAX):
                raise ConfigError(f"train config: {key} must be a number in [0, {FLOAT32_MAX:.3g}], found {value!r}")
        for key in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"train config: {key} must be in [0, 1), found {getattr(self, key)!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train config: precision must be one of {', '.join(PRECISIONS)}, found {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train config: device must be auto, cpu, cuda or cuda:N, found {self.device!r}")
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if self.warmup_steps is None:
            self.warmup_steps = min(200, self.steps // 20)
        if self.eval_every is None:
            self.eval_every = max(1, self.steps // 10)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    model: CausalLM  # the trained model (with fsdp: still sharded across the ranks)
    history: list[dict] = field(default_factory=list)  # per step: step, loss, lr, tokens_per_s, grad_norm (+ val)
    final_train_loss: float = math.nan
    final_val_loss: float | None = None
    val_bpb: float | None = None
    train_tokens_per_s: float = 0.0  # over the optimizer steps of this call (evaluation and saving excluded)
    wall_s: float = 0.0
    parameters: int = 0
    steps_trained: int = 0  # optimizer steps of this call (fewer than len(history) after a resume)
    checkpoint: Path | None = None  # OUT/final when `out` was given


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for autocast, or None for plain float32 (see the module docstring for "auto")."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if machine.native_bf16() else None  # AVX512-BF16 / AMX, or TINYSLM_NATIVE_BF16


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy (nats) of logits (B, T, V) against targets (B, T), the inputs shifted by one
    (targets[:, t] is the token after position t), IGNORE targets left out; computed from float32 logits.
    reduction: "mean" over the targets counted, or "sum"."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction=reduction)


def loss_sum(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy (nats) of model(inputs) over the targets that are not IGNORE."""
    return next_token_loss(model(inputs), targets, reduction="sum")  # (B, T, V) logits


def train(
    model_config: ModelConfig,
    batches: Iterator,
    cfg: TrainConfig,
    *,
    val: Callable[[], Iterable] | None = None,
    bytes_per_token: float | None = None,
    out: str | Path | None = None,
    resume: bool | str | Path = False,
    progress: bool = True,
    extra_files: Iterable[str | Path] = (),
) -> TrainResult:
    """Train a fresh `CausalLM(model_config)` on `batches` for `cfg.steps` optimizer steps.

    batches: an endless stream of this rank's rows of each global batch, (inputs, targets) int64
        of shape (batch_size / ranks, seq_len), with state_dict()/load_state_dict() for resuming
        (tinyslm.data.Batches or MQAR(...).batches()).
    val: returns a fresh iterator of validation (inputs, targets); None: no validation.
    bytes_per_token: UTF-8 bytes per validation token, for bits per byte.
    out: folder for checkpoints (step-N/, final/); None: nothing is written.
    resume: True continues from the newest checkpoint in `out`; a path continues from that one.
    extra_files: copied into every checkpoint (the tokenizer, so `tinyslm generate` can decode).
    """
    t_start = time.perf_counter()
    if cfg.seq_len > model_config.max_seq_len:
        raise ConfigError(f"sequence length {cfg.seq_len} exceeds the model's context: config {model_config.name!r} "
                          f"has max_seq_len={model_config.max_seq_len}")  # fmt: skip
    out = Path(out).expanduser() if out is not None else None
    if out is not None and out.exists() and not out.is_dir():  # checked now, not after the training it would lose
        raise TrainError(f"{out}: exists and is not a folder; --out names the folder for step-N/ and final/")
    resume_from = _resume_folder(out, resume)
    if resume_from is None and out is not None and checkpoints(out):
        raise TrainError(f"{out}: holds checkpoints of an earlier run ({checkpoints(out)[-1][1].name}); resume it "
                         "(--resume) or train into another --out")  # fmt: skip
    if resume_from is None and out is not None and (out / "final").exists():
        raise TrainError(f"{out}: holds final/ of an earlier run, which this one would replace; train into another "
                         "--out, or move it away first")  # fmt: skip
    state = None
    if resume_from is not None:
        state = read_state(resume_from)
        check_same_model(resume_from, state["model_config"], model_config)
        saved = state["train_config"]
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {getattr(cfg, k)!r}"
                 for k in DATA_KEYS if saved.get(k) != getattr(cfg, k)]  # fmt: skip
        if diffs:
            raise CheckpointError(f"{resume_from}: was trained on another data stream ({'; '.join(diffs)}); "
                                  "resume with the same batch size, sequence length and seed")  # fmt: skip

    world = D.setup(cfg.device, cfg.fsdp)
    if cfg.batch_size % (world.world_size * cfg.grad_accum):
        raise ConfigError(f"train config: batch_size={cfg.batch_size} must be a multiple of grad_accum={cfg.grad_accum} "
                          f"x {world.world_size} process(es)")  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = CausalLM(model_config).init_weights(seed=cfg.seed)
    set_attention_backend(model, cfg.attention)
    if state is not None:
        load_weights(resume_from, model)
    model.to(world.device)
    wrapped = D.wrap(model, world, cfg.fsdp)
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    start, history = 0, []
    if state is not None:
        from torch.distributed.checkpoint.state_dict import (  # noqa: PLC0415  (1.4 s to import: only on resume)
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(wrapped, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
        batches.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        start, history = state["step"], list(state["history"])

    dtype = autocast_dtype(cfg.precision, world.device)
    autocast = (lambda: torch.autocast(world.device.type, dtype=dtype)) if dtype else nullcontext
    rows = cfg.batch_size // world.world_size
    tokens_per_step = cfg.batch_size * cfg.seq_len
    n_params = sum(p.numel() for p in model.parameters())
    bar = _progress_bar(cfg.steps, start, enabled=progress and world.is_main)
    bar.set_description(f"train {n_params / 1e6:.2f}M params, {'bf16' if dtype else 'fp32'}")
    tell = bar.write if progress else (lambda line: warnings.warn(line, RuntimeWarning, stacklevel=3))
    threads = torch.get_num_threads()
    slow = machine.SlowSteps("training step", threads)
    if world.is_main and world.device.type == "cpu":
        machine.say(machine.busy_note(threads), tell)
    train_time, last, last_save = 0.0, None, time.perf_counter()
    # SIGINT/SIGTERM (one process, with `out`): the step in progress finishes, is saved, then TrainInterrupted
    with _StopSignals(enabled=world.world_size == 1 and out is not None) as stops:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, steps=cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = _checked_batch(next(batches), rows, cfg.seq_len, model_config.vocab_size)
            inputs, targets = inputs.to(world.device), targets.to(world.device)
            counted = D.all_reduce_sum([float((targets != IGNORE).sum())], world)[0]
            scale = world.world_size / max(counted, 1.0)
            total = torch.zeros((), dtype=torch.float64, device=world.device)
            chunks = list(zip(inputs.chunk(cfg.grad_accum), targets.chunk(cfg.grad_accum)))
            for i, (x, y) in enumerate(chunks):
                with D.no_grad_sync(wrapped, sync=i == len(chunks) - 1):
                    with autocast():
                        s = loss_sum(wrapped, x, y)
                    (s * scale).backward()
                total += s.detach()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss = D.all_reduce_sum([total.item()], world)[0] / max(counted, 1.0)
            dt = time.perf_counter() - t0
            train_time += dt
            if world.is_main and world.device.type == "cpu":
                machine.say(slow.add(dt), tell)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            last = {"step": step + 1, "loss": loss, "lr": lr, "tokens_per_s": tokens_per_step / dt, "grad_norm": grad_norm}
            history.append(last)
            if not math.isfinite(loss):
                bar.close()
                raise TrainError(f"step {step + 1}: the loss is {loss} (diverged); lower --lr (now {cfg.lr:g}) or check the data")
            done = step + 1 == cfg.steps
            if val is not None and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or done):
                last.update(_validate(model, val, cfg, world, autocast, bytes_per_token))
            due = (cfg.save_every and (step + 1) % cfg.save_every == 0) or (
                cfg.save_minutes and time.perf_counter() - last_save > 60 * cfg.save_minutes)
            stop = stops.signal is not None and not done  # asked to stop (SIGINT, SIGTERM): save this step, then stop
            if out is not None and (due or done or stop):
                _save(out, step + 1, model, wrapped, optimizer, batches, cfg, model_config, history, world, extra_files, done)
                last_save = time.perf_counter()
            bar.update(1)
            bar.set_postfix_str(_postfix(history))
            if stop:
                bar.close()
                raise TrainInterrupted(stops.signal, step + 1, step_dir(out, step + 1) if out is not None else None)
    bar.close()

    evaluated = next((h for h in reversed(history) if "val_loss" in h), {})
    if last is None and val is not None:  # resumed a finished run: nothing trained, evaluate what was loaded
        evaluated = _validate(model, val, cfg, world, autocast, bytes_per_token)
    return TrainResult(
        model=model.eval(),
        history=history,
        final_train_loss=history[-1]["loss"] if history else math.nan,
        final_val_loss=evaluated.get("val_loss"),
        val_bpb=evaluated.get("val_bpb"),
        train_tokens_per_s=tokens_per_step * (cfg.steps - start) / train_time if train_time else 0.0,
        wall_s=time.perf_counter() - t_start,
        parameters=n_params,
        steps_trained=max(0, cfg.steps - start),
        checkpoint=out / "final" if out is not None and (out / "final").is_dir() else None,
    )


@torch.no_grad()
def evaluate(model: nn.Module, val: Callable[[], Iterable], max_batches: int, world: D.World, autocast=nullcontext) -> float:
    """Mean cross-entropy (nats) over every counted target of the first `max_batches` validation batches.

    The batches are dealt out to the ranks in turn; a rank left without one runs a batch with
    nothing counted, so every rank makes the same number of forward calls (FSDP's gathers are
    collective).
    """
    was_training = model.training
    model.eval()
    batches = []
    for batch in val():
        batches.append(batch)
        if len(batches) == max_batches:
            break
    if not batches:
        raise TrainError("validation: the validation stream yielded no batches (is the validation split empty?)")
    per_rank = math.ceil(len(batches) / world.world_size)
    mine = batches[world.rank :: world.world_size]
    total = counted = 0.0
    for i in range(per_rank):
        x, y = (mine[i] if i < len(mine) else (batches[0][0], torch.full_like(batches[0][1], IGNORE)))
        x, y = torch.as_tensor(x).to(world.device), torch.as_tensor(y).to(world.device)
        with autocast():
            total += loss_sum(model, x, y).item()
        counted += float((y != IGNORE).sum())
    total, counted = D.all_reduce_sum([total, counted], world)
    if hasattr(model, "reshard"):  # FSDP2 keeps the root's gathered parameters after a forward without backward
        model.reshard()
    model.train(was_training)
    return total / max(counted, 1.0)


def _validate(model, val, cfg: TrainConfig, world: D.World, autocast, bytes_per_token: float | None) -> dict:
    """{"val_loss": mean nats per token, "val_bpb": bits per UTF-8 byte (when bytes_per_token is known)}."""
    loss = evaluate(model, val, cfg.eval_batches, world, autocast)
    return {"val_loss": loss, **({"val_bpb": loss / (math.log(2) * bytes_per_token)} if bytes_per_token else {})}


def _checked_batch(batch, rows: int, seq_len: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = (torch.as_tensor(t) for t in batch)
    if inputs.shape != (rows, seq_len) or targets.shape != inputs.shape:
        raise TrainError(f"batches: expected inputs and targets of shape ({rows}, {seq_len}) (batch_size / processes, "
                         f"seq_len), found {tuple(inputs.shape)} and {tuple(targets.shape)}")  # fmt: skip
    if inputs.dtype != torch.int64 or targets.dtype != torch.int64:
        raise TrainError(f"batches: expected int64 token ids, found {inputs.dtype} and {targets.dtype}")
    top = int(max(inputs.max(), targets.max()))
    if top >= vocab_size or int(inputs.min()) < 0:
        raise TrainError(f"batches: token id {top} is outside the model's vocabulary of {vocab_size} (set the model's "
                         "vocab_size to the tokenizer's)")  # fmt: skip
    return inputs, targets


def _resume_folder(out: Path | None, resume: bool | str | Path) -> Path | None:
    if resume is False or resume is None:
        return None
    if resume is True:
        if out is None:
            raise TrainError("resume=True needs `out`, the folder whose newest checkpoint to continue from")
        found = checkpoints(out)
        if not found:
            raise TrainError(f"{out}: no checkpoint to resume from (no step-N folder holding a trainer state)")
        return found[-1][1]
    folder = Path(resume).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder to resume from")
    return folder


def _save(out, step, model, wrapped, optimizer, batches, cfg, model_config, history, world, extra_files, final) -> None:
    """Gather the full model and optimizer state (collective under FSDP) and write them from rank 0."""
    from torch.distributed.checkpoint.state_dict import (  # noqa: PLC0415  (1.4 s to import: only when saving)
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    full = StateDictOptions(full_state_dict=True, cpu_offload=world.distributed or cfg.fsdp)
    optim_state = get_optimizer_state_dict(wrapped, optimizer, options=full)
    to_save = model
    if cfg.fsdp:  # the weights are shards: gather them into a plain CPU model on rank 0
        weights = get_model_state_dict(wrapped, options=full)
        if world.is_main:
            to_save = CausalLM(model_config)
            to_save.load_state_dict(weights)
    error = None
    if world.is_main:
        state = {
            "format": FORMAT,
            "step": step,
            "model_config": model_config.to_dict(),
            "train_config": dataclasses.asdict(cfg),
            "optimizer": optim_state,
            "data": batches.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "history": history,
        }
        try:
            write_checkpoint(out, step, to_save, state, extra_files, final=final, keep=cfg.keep_checkpoints)
        except TinySLMError as exc:
            error = str(exc)
            if final:  # the finished model is not lost to an output error: saved beside, and the error says where
                error += _save_elsewhere(out, step, to_save, state, extra_files)
    error = D.broadcast_object(error, world)
    if error:
        raise CheckpointError(error)


def _save_elsewhere(out: Path, step: int, model, state: dict, extra_files) -> str:
    """The final checkpoint in a new folder beside `out` (else in the temporary folder), for when `out` failed."""
    for parent in (out.parent, Path(tempfile.gettempdir())):
        try:
            rescue = Path(tempfile.mkdtemp(prefix=f"{out.name}-rescued-", dir=parent))
            write_checkpoint(rescue, step, model, state, extra_files, final=True)
            return f"; the trained model was saved to {rescue / 'final'} instead"
        except (OSError, TinySLMError):
            continue
    return "; saving it elsewhere failed too"


def _progress_bar(total: int, initial: int, enabled: bool):
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


def _postfix(history: list[dict]) -> str:
    recent = history[-10:]
    tps = len(recent) / sum(1 / h["tokens_per_s"] for h in recent)  # tokens/s over the last steps
    text = f"loss {history[-1]['loss']:.3f}, {tps:,.0f} tok/s, lr {history[-1]['lr']:.2e}"
    val = next((h for h in reversed(history) if "val_loss" in h), None)
    if val is not None:
        text += f", val {val['val_loss']:.3f}" + (f" ({val['val_bpb']:.3f} bpb)" if "val_bpb" in val else "")
    return text
