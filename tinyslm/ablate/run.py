"""Running an ablation: every variant x seed trained on identical batches and measured the same way.

For each seed s and each variant, in turn:

    LM run     train(variant, Batches(corpus, seed=s)) for `steps`; init seed s as well, so for a
               given s every variant starts from the same RNG state and reads the same batches
               -> final train loss, validation loss and bits per byte (whole validation split),
                  training tokens/s, loss curve
    MQAR run   train(variant with MQAR's vocabulary, MQAR batches seed s) for `mqar_steps`
               -> recall accuracy on held-out examples (against `mqar_baselines`)
    measures   parameters and KV-cache bytes per token / at a context, from tools/stats.py's
               `model_stats` (the very numbers `tinyslm inspect` prints for the variant's config);
               decode tokens/s of greedy decoding with the KV cache (tinyslm.generate)

Speeds are wall-clock figures of this process on this machine: comparable between the variants
of one run, not between machines (or while other work shares the CPU).
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..config import ModelConfig, dtype_from_name
from ..data import MQAR, Batches, eval_batches
from ..errors import ConfigError
from ..runtime import generate
from ..tools.stats import model_stats
from ..tools.attention_costs import layout_of
from ..train import TrainConfig, train
from ..tools.variants import Variant


@dataclass
class AblationSettings:
    steps: int = 300  # LM optimizer steps per run
    seeds: int = 1  # runs per variant (seeds 0 .. seeds-1)
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    eval_every: int | None = None  # None -> steps // 2 (each evaluation reads the whole validation split)
    mqar_steps: int | None = None  # None -> same as steps; 0 -> no MQAR run
    mqar_vocab: int = 64
    mqar_seq_len: int = 64
    mqar_pairs: int = 4
    mqar_batch_size: int = 32
    mqar_lr: float = 3e-3
    mqar_queries: int | None = None  # None -> every query slot (MQAR n_queries; the most signal per step)
    mqar_layers: int | None = None  # None -> the variant's own depth; Zoology's probes use 2
    context: int | None = None  # KV-cache figure at this context; None -> the base's max_seq_len
    kv_dtype: str = "bfloat16"  # the dtype of the KV figures (`tinyslm inspect`'s default)
    decode_tokens: int = 64  # greedy tokens timed for decode speed
    precision: str = "auto"  # passed to TrainConfig

    def __post_init__(self) -> None:
        for key in ("steps", "seeds", "batch_size", "seq_len", "mqar_vocab", "mqar_seq_len", "mqar_pairs",
                    "mqar_batch_size", "decode_tokens"):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ablation: {key.replace('_', '-')} must be a positive integer, found {value!r}")
        if self.mqar_steps is None:
            self.mqar_steps = self.steps
        if self.eval_every is None:
            self.eval_every = max(1, self.steps // 2)
        dtype_from_name(self.kv_dtype)


def kv_figures(config: ModelConfig, dtype: str, context: int) -> dict[str, int]:
    """Parameters and KV-cache bytes exactly as `tinyslm inspect CONFIG --dtype DTYPE --context N` reports them."""
    stats = model_stats(config, dtype_from_name(dtype), context)
    return {
        "parameters": stats.parameters,
        "attention_parameters": stats.breakdown["attention"],
        "kv_cache_bytes_per_token": stats.kv_cache_bytes_per_token,
        "kv_cache_bytes_at_context": stats.kv_cache_bytes_at_context,
    }


def mqar_task(s: AblationSettings):

    probe = MQAR(vocab_size=s.mqar_vocab, seq_len=s.mqar_seq_len, n_pairs=s.mqar_pairs)
    return MQAR(vocab_size=s.mqar_vocab, seq_len=s.mqar_seq_len, n_pairs=s.mqar_pairs,
                n_queries=s.mqar_queries or probe.max_queries)  # fmt: skip


def mqar_baselines(vocab_size: int, n_pairs: int) -> dict[str, float]:
    """The two accuracies that MQAR recall is read against, for a task of V tokens and P pairs.

    chance      guessing: an answer is one of the value tokens [V/2, V) (data/mqar.py), so a guess is
                right 1 / (V - V // 2) of the time (1/32 for V = 64)
    in_context  picking one of the P values the sequence stated, not the one bound to the key: 1 / P
                (MQAR.chance). A model that learned the format but not recall sits here, so an
                accuracy at or below it is no evidence of recall.
    """
    return {"chance": 1.0 / (vocab_size - vocab_size // 2), "in_context": 1.0 / n_pairs}


def mqar_config(config: ModelConfig, task, n_layers: int | None = None) -> ModelConfig:
    """The variant as an MQAR model: MQAR's vocabulary, an untied head, optionally another depth.

    Untied because it learned recall sooner in our short CPU runs: on MQAR(16, 12, 2) a 2-layer
    model of width 64 reached 98% in 160 steps untied and stayed at chance tied (one seed each).
    """
    return config.replace(
        name=f"{config.name}-mqar", vocab_size=task.vocab_size, max_seq_len=max(config.max_seq_len, task.seq_len),
        tie_embeddings=False, n_layers=n_layers or config.n_layers, eos_token_id=None, bos_token_id=None,
    )  # fmt: skip


def describe(config: ModelConfig) -> str:
    """'4 q / 1 kv heads x 32, window 64': the head layout, plus a window or block sharing where there is one."""

    text = layout_of(config)
    if config.sliding_window is not None and any(config.layer(i).window for i in range(config.n_layers)):
        text += f", window {config.sliding_window}"
    if config.block_sharing != "none" or config.block_schedule is not None:
        text += f", {len(config.schedule())} steps over {config.n_layers} blocks"
    return text


def decode_speed(model, prompt: torch.Tensor, new_tokens: int) -> float:
    """Greedy decode tokens/s with the KV cache, prefill excluded (first to last new token)."""

    new_tokens = min(new_tokens, model.config.max_seq_len - prompt.shape[1])
    if new_tokens < 2:
        return math.nan
    stamps: list[float] = []
    generate(model, prompt, new_tokens, on_token=lambda token: stamps.append(time.perf_counter()))
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


class StepBar:
    """A training run's batches, passed through, with a progress bar labelled with the run ("mha seed 0 LM").

    train() takes batch k + 1 when step k is done, so each batch after the first advances the bar
    by one step, and leaving the `with` block counts the last. Wrapping the batches labels the run
    without the trainer knowing about variants. The bar is shown only when `enabled` and `file`
    (default stderr) is a terminal, and is cleared when the run ends (the ablation then prints the
    run's one-line summary).
    """

    def __init__(self, batches, steps: int, label: str, *, enabled: bool = True, file=None):
        self.batches, self.taken = batches, 0
        self.bar = tqdm(total=steps, desc=label, unit="step", dynamic_ncols=True, leave=False, file=file,
                        disable=None if enabled else True)  # None: shown on a terminal only  # fmt: skip

    def __iter__(self):
        return self

    def __next__(self):
        if self.taken:
            self.bar.update(1)
        self.taken += 1
        return next(self.batches)

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)

    def __enter__(self) -> "StepBar":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None and self.taken:
            self.bar.update(self.taken - self.bar.n)
        self.bar.close()


def run_ablation(
    base: ModelConfig,
    variants: list[Variant],
    settings: AblationSettings,
    *,
    data=None,
    on_run: Callable[[str], None] = lambda message: None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train and measure every variant x seed; returns the JSON-able results (see report.py for the files).

    data: a tinyslm.data.TokenData (the LM corpus); its tokenizer's vocabulary replaces the configs'.
    on_run: called with a one-line summary after each variant x seed.
    progress: a progress bar on stderr for each LM and MQAR run, labelled with the variant and seed
        (shown only when stderr is a terminal).
    """

    s = settings
    for v in variants:  # refuse before any training starts
        if s.seq_len > v.config.max_seq_len:
            raise ConfigError(f"--seq-len {s.seq_len} exceeds the context of variant {v.name!r} "
                              f"(max_seq_len={v.config.max_seq_len})")  # fmt: skip
    context = s.context or base.max_seq_len
    task = mqar_task(s) if s.mqar_steps else None
    n_val_windows = (len(data.val) - 1) // s.seq_len
    val_batches = -(-n_val_windows // s.batch_size)  # the whole validation split, every evaluation
    prompt = torch.from_numpy(data.val[: min(32, s.seq_len)].astype("int64"))[None]  # (1, P)
    t_start = time.perf_counter()
    rows = []
    for v in variants:
        lm_config = v.config.replace(vocab_size=data.vocab_size, eos_token_id=data.eos_id,
                                     bos_token_id=data.tokenizer.bos_id)  # fmt: skip
        rows.append({"name": v.name, "spec": v.spec, "attention": lm_config.attention, "layout": describe(lm_config),
                     "config": lm_config,
                     **kv_figures(lm_config, s.kv_dtype, context), "runs": []})  # fmt: skip
    total = len(variants) * s.seeds
    done = 0
    for seed in range(s.seeds):
        for row in rows:
            lm_config = row["config"]
            cfg = TrainConfig(steps=s.steps, batch_size=s.batch_size, seq_len=s.seq_len, lr=s.lr,
                              eval_every=s.eval_every, eval_batches=val_batches, seed=seed, precision=s.precision)  # fmt: skip
            t0 = time.perf_counter()
            label = f"[{done + 1}/{total}] {row['name']} seed {seed}"
            with StepBar(Batches(data.train, s.seq_len, s.batch_size, seed=seed), s.steps, f"{label} LM",
                         enabled=progress) as batches:  # fmt: skip
                lm = train(lm_config, batches, cfg, val=lambda: eval_batches(data.val, s.seq_len, s.batch_size),
                           bytes_per_token=data.bytes_per_token, progress=False)  # fmt: skip
            run = {
                "seed": seed,
                "final_train_loss": lm.final_train_loss,
                "final_val_loss": lm.final_val_loss,
                "val_bpb": lm.val_bpb,
                "train_tokens_per_s": lm.train_tokens_per_s,
                "decode_tokens_per_s": decode_speed(lm.model, prompt, s.decode_tokens),
                "history": [{k: h[k] for k in ("step", "loss", "val_loss", "val_bpb") if k in h} for h in lm.history],
            }
            del lm
            if task is not None:
                mq_config = mqar_config(lm_config, task, s.mqar_layers)
                mcfg = TrainConfig(steps=s.mqar_steps, batch_size=s.mqar_batch_size, seq_len=task.seq_len, lr=s.mqar_lr,
                                   weight_decay=0.0, eval_every=0, seed=seed, precision=s.precision)  # fmt: skip
                with StepBar(task.batches(s.mqar_batch_size, seed=seed), s.mqar_steps, f"{label} MQAR",
                             enabled=progress) as batches:  # fmt: skip
                    mq = train(mq_config, batches, mcfg, progress=False)
                run["mqar_accuracy"] = task.accuracy(mq.model)
                run["mqar_history"] = [{"step": h["step"], "loss": h["loss"]} for h in mq.history]
                del mq
            run["wall_s"] = time.perf_counter() - t0
            row["runs"].append(run)
            done += 1
            recall = f", MQAR {run['mqar_accuracy']:.3f}" if "mqar_accuracy" in run else ""
            on_run(f"[{done}/{total}] {row['name']} seed {seed}: val loss {run['final_val_loss']:.4f} "
                   f"({run['val_bpb']:.4f} bpb){recall}, {run['train_tokens_per_s']:,.0f} train tok/s, "
                   f"{run['wall_s']:.1f} s")  # fmt: skip
    for row in rows:
        row["config"] = row["config"].to_dict()
    return {
        "base": base.name,
        "settings": dataclasses.asdict(settings) | {"context": context},
        "mqar": None if task is None else {"vocab_size": task.vocab_size, "seq_len": task.seq_len,
                                           "n_pairs": task.n_pairs, "n_queries": task.n_queries,
                                           **mqar_baselines(task.vocab_size, task.n_pairs)},  # fmt: skip
        "data": {"source": data.source, "vocab_size": data.vocab_size, "train_tokens": len(data.train),
                 "val_tokens": len(data.val), "val_bytes": data.val_bytes},  # fmt: skip
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "platform": platform.platform(), "processor": platform.processor() or platform.machine()},  # fmt: skip
        "variants": rows,
        "wall_s": time.perf_counter() - t_start,
    }


def variant_toml(config: dict[str, Any]) -> str:
    """A ModelConfig dict as TOML (what `tinyslm inspect` and ModelConfig.from_toml read back)."""
    lines = []
    for key, value in config.items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_text_atomic(path: Path, text: str | bytes) -> None:
    """Write to a temporary name in the same folder, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
