"""`tinyslm train`: train any tinyslm architecture on a text corpus (or the embedded one), on 1..N processes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch.distributed as dist

from .. import machine
from ..config import ModelConfig
from ..data import Batches, eval_batches, prepare_data
from ..errors import ConfigError
from . import distributed as D
from .trainer import TrainConfig, TrainInterrupted, train

DESCRIPTION = """Train a model of any tinyslm architecture from scratch on a text corpus.

The model comes from CONFIG.toml (any file in configs/, or your own); its vocab_size is set to
the tokenizer's. The corpus is a UTF-8 .txt file, a .jsonl file with a "text" field, or a folder
of them; without --data, the embedded procedural corpus (generated offline). Without --tokenizer a
sentencepiece BPE tokenizer of --vocab-size pieces is trained on the corpus and cached beside it.

Prints a progress bar (loss, tokens/s, ETA), validates every --eval-every steps (loss and bits per
byte on held-out documents) and writes checkpoints into OUT: step-N/ every --save-every steps and
final/ at the end, each an HF folder (config.json + model.safetensors + the tokenizer) that
`tinyslm generate` and transformers load, plus trainer_state.pt for --resume.

Under torchrun the same command trains with DistributedDataParallel (gloo on CPU, nccl on GPU):
each process reads its share of every global batch, so the result does not depend on the number
of processes. --fsdp shards parameters and optimizer state instead (FSDP2)."""

EXAMPLES = """examples:
  tinyslm train configs/ablation/llama-1m.toml --steps 300 --out runs/base        # embedded corpus
  tinyslm train my.toml --data corpus/ --vocab-size 4096 --steps 5000 --batch-size 64 --seq-len 256 --out runs/mine
  tinyslm train my.toml --data corpus/ --steps 8000 --out runs/mine --resume      # continue the newest checkpoint
  torchrun --nproc_per_node=2 -m tinyslm.cli train my.toml --steps 5000 --out runs/ddp
  tinyslm generate runs/base/final --prompt "Once upon a time" --max-new-tokens 40"""


def add_parser(sub) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model from scratch on text (or the embedded corpus); DDP under torchrun",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("config", metavar="CONFIG.toml", help="the model to train (a tinyslm TOML config)")
    p.add_argument("--data", default=None, help="corpus: .txt / .jsonl file or a folder of them (default: the embedded corpus)")
    p.add_argument("--out", required=True, help="folder for checkpoints (step-N/, final/)")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument("--tokenizer", default=None, help="tokenizer.model / tokenizer.json (or a folder); default: train one")
    p.add_argument("--vocab-size", type=int, default=2048, help="pieces of the tokenizer trained when no --tokenizer (default 2048)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"sequences per optimizer step, all processes together (default {d.batch_size})")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help=f"tokens per sequence, at most the model's max_seq_len (default {d.seq_len})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--min-lr", type=float, default=None, help="learning rate at the last step (default: lr / 10)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps (default: 5%% of --steps, at most 200)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW decay of weight matrices (default {d.weight_decay:g})")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help=f"max gradient norm, 0 = off (default {d.grad_clip:g})")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per step (default 1)")
    p.add_argument("--eval-every", type=int, default=None, help="validate every N steps (default: --steps / 10; 0: at the end only)")
    p.add_argument("--eval-batches", type=int, default=d.eval_batches, help=f"validation batches per evaluation (default {d.eval_batches})")
    p.add_argument("--save-every", type=int, default=d.save_every, help="checkpoint every N steps (default 0: by time only)")
    p.add_argument("--save-minutes", type=float, default=d.save_minutes, help="and at least every M minutes of "
                   f"training (default {d.save_minutes:g}; 0: never by time). Ctrl-C or SIGTERM saves the step in "
                   "progress, then stops with the path to --resume from")
    p.add_argument("--keep", type=int, default=d.keep_checkpoints, help=f"step-N checkpoints kept, 0 = all (default {d.keep_checkpoints})")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the newest checkpoint in --out, or from the CHECKPOINT folder given")
    p.add_argument("--seed", type=int, default=d.seed, help="model initialisation, data order and validation split (default 0)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=d.precision,
                   help="bf16 autocast or float32; auto = bf16 where the hardware has it natively (default auto)")
    p.add_argument("--fsdp", action="store_true", help="shard parameters and optimizer state across processes (FSDP2)")
    p.add_argument("--device", default=d.device, help="auto (default: cuda when available), cpu, cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    machine.add_threads_option(p)
    p.set_defaults(run=run)


def run(args) -> int:
    machine.use_threads(args.threads)
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, min_lr=args.min_lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        grad_accum=args.grad_accum, eval_every=args.eval_every, eval_batches=args.eval_batches,
        save_every=args.save_every, save_minutes=args.save_minutes, keep_checkpoints=args.keep, seed=args.seed, precision=args.precision,
        fsdp=args.fsdp, device=args.device,
    )  # fmt: skip
    config = ModelConfig.from_toml(args.config)
    if cfg.seq_len > config.max_seq_len:  # before any data work
        raise ConfigError(f"--seq-len {cfg.seq_len} exceeds the model's context: {args.config} has max_seq_len="
                          f"{config.max_seq_len}")  # fmt: skip
    world = D.setup(cfg.device, cfg.fsdp)
    try:
        data = _prepare(args, world)
        config = config.replace(vocab_size=data.vocab_size, eos_token_id=data.eos_id, bos_token_id=data.tokenizer.bos_id)
        batches, val = _streams(data, cfg, world)
        result = train(config, batches, cfg, val=val, bytes_per_token=data.bytes_per_token, out=args.out,
                       resume=args.resume if args.resume is True or not args.resume else Path(args.resume),
                       progress=not args.no_progress, extra_files=data.tokenizer_files)  # fmt: skip
    except TrainInterrupted as stopped:  # saved: 130 for SIGINT, 143 for SIGTERM, as a shell reports them
        print(f"error: {stopped}", file=sys.stderr)
        return 128 + stopped.signum
    finally:
        _shutdown()
    if world.is_main:
        print(summary(result, data.source, Path(args.out)))
    return 0


def _prepare(args, world):
    """The tokenized corpus; rank 0 prepares (and caches) it first, the other ranks then read the cache."""
    def prepare():
        return prepare_data(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size, seed=args.seed,
                            progress=world.is_main and not args.no_progress)  # fmt: skip

    if not world.distributed:
        return prepare()
    data = prepare() if world.is_main else None
    D.barrier(world)
    return data if world.is_main else prepare()


def _streams(data, cfg, world):
    """(batches, val): this rank's rows of every global batch, and the validation windows."""
    batches = Batches(data.train, cfg.seq_len, cfg.batch_size, seed=cfg.seed, rank=world.rank, world_size=world.world_size)
    # every rank reads the same validation batches; evaluate() deals them out
    return batches, (lambda: eval_batches(data.val, cfg.seq_len, cfg.batch_size, max_batches=cfg.eval_batches))


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def summary(result, source: str, out: Path) -> str:
    resumed = len(result.history) - result.steps_trained
    lines = [f"trained {result.parameters / 1e6:.2f}M parameters on {source}: {result.steps_trained} steps"
             + (f" (after {resumed} resumed)" if resumed else "")
             + f" in {result.wall_s:.1f} s, {result.train_tokens_per_s:,.0f} tokens/s"]  # fmt: skip
    lines.append(f"final train loss {result.final_train_loss:.4f}")
    if result.final_val_loss is not None:
        bpb = f", {result.val_bpb:.4f} bits per byte" if result.val_bpb is not None else ""
        lines[-1] += f", validation loss {result.final_val_loss:.4f}{bpb}"
    if result.checkpoint is not None:
        lines.append(f"checkpoint: {result.checkpoint}  (try: tinyslm generate {result.checkpoint} --prompt \"...\" "
                     "--max-new-tokens 40)")  # fmt: skip
    return "\n".join(lines)
