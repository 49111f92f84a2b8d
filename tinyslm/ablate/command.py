"""`tinyslm ablate`: train every attention variant of a base config on identical batches and compare them."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..config import ModelConfig
from ..data import prepare_data
from ..errors import ConfigError
from .report import summarize, write_outputs
from .run import AblationSettings, mqar_config, mqar_task, run_ablation
from ..tools.variants import parse_variants

DESCRIPTION = """Train the same small model with different attention types - same data, same batches, same
seeds, same step budget - and compare quality, KV-cache size and speed side by side.

Each variant is derived from --base with tinyslm's attention toolkit (the FFN resized to the base's
parameter count with --matched-budget). Each variant x seed gets an LM run on the corpus (final
train and validation loss, validation bits per byte) and a short MQAR run (multi-query associative
recall, Zoology 2023: the task where attention variants differ most), and is measured for
parameters, KV-cache bytes per token and at --context (the figures `tinyslm inspect` prints),
greedy decode tokens/s with the cache, training tokens/s and wall time. With --seeds K the report
gives mean and spread and says which differences are within the spread.

Writes OUT/report.md, OUT/results.json, OUT/configs/<variant>.toml and PNG plots (loss curves,
validation loss vs KV bytes per token, recall accuracy vs KV bytes; needs matplotlib)."""

EXAMPLES = """variants: mha | mqa | mla | gqa:K | swa:W          attention type, KV heads, sliding window
          share:immediate | share:cyclic         every block run twice (MobileLLM)
          sharedffn                              one FFN for all blocks (MobiLlama)
          scale | scale:A-B/C-D                  layer-wise scaling (OpenELM; default 0.5-1/0.5-4)
          comma-separated; join with + to combine (gqa:2+swa:64, gqa:2+scale)

examples:
  tinyslm ablate --base configs/ablation/llama-1m.toml --variants mha,gqa:2,mqa,mla --steps 300 --seeds 3 --out runs/ablation
  tinyslm ablate --base configs/ablation/llama-1m.toml --variants mha,mqa,mla --matched-budget --steps 300 --out runs/matched
  tinyslm ablate --base configs/ablation/llama-1m.toml --variants mha,share:immediate,sharedffn,scale --steps 300 --out runs/sharing
  tinyslm ablate --base my.toml --variants mha,swa:32,share:immediate --data corpus/ --steps 2000 --out runs/mine"""


def add_parser(sub) -> None:

    d = AblationSettings()
    p = sub.add_parser("ablate", help="train attention, sharing and scaling variants on identical batches and compare",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--base", required=True, metavar="CONFIG.toml", help="the model every variant is derived from")
    p.add_argument("--variants", required=True, help="comma-separated variants, e.g. mha,gqa:4,mqa,mla (see below)")
    p.add_argument("--steps", type=int, required=True, help="LM training steps per run")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, results.json, plots")
    p.add_argument("--matched-budget", action="store_true",
                   help="resize each attention variant's FFN to the base's parameter count (within 2%%); default: same heads")
    p.add_argument("--seeds", type=int, default=1, help="runs per variant, seeds 0..K-1 (default 1; 3 gives a spread)")
    p.add_argument("--data", default=None, help="corpus: .txt / .jsonl file or folder (default: the embedded corpus)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.model / tokenizer.json (default: train one on the corpus)")
    p.add_argument("--vocab-size", type=int, default=2048, help="pieces of the trained tokenizer (default 2048)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"LM sequences per step (default {d.batch_size})")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help=f"LM tokens per sequence (default {d.seq_len})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"LM peak learning rate (default {d.lr:g})")
    p.add_argument("--mqar-steps", type=int, default=None, help="MQAR training steps per run (default: --steps; 0: skip MQAR)")
    p.add_argument("--mqar-pairs", type=int, default=d.mqar_pairs, help=f"MQAR key-value pairs (default {d.mqar_pairs})")
    p.add_argument("--mqar-seq-len", type=int, default=d.mqar_seq_len, help=f"MQAR sequence length (default {d.mqar_seq_len})")
    p.add_argument("--mqar-vocab", type=int, default=d.mqar_vocab, help=f"MQAR vocabulary (default {d.mqar_vocab})")
    p.add_argument("--mqar-queries", type=int, default=None, help="MQAR queries per sequence (default: every "
                   "query slot, (seq_len - 2 x pairs) / 2; the pairs count asks each key once, as in Zoology)")
    p.add_argument("--mqar-layers", type=int, default=None, help="depth of the MQAR model (default: the variant's own)")
    p.add_argument("--mqar-batch-size", type=int, default=d.mqar_batch_size,
                   help=f"MQAR sequences per step (default {d.mqar_batch_size})")
    p.add_argument("--context", type=int, default=None, help="context for the KV-cache-size column (default: the base's max_seq_len)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=d.precision, help="training precision (default auto)")
    p.add_argument("--no-progress", action="store_true", help="print nothing while running")
    p.set_defaults(run=run)


def run(args) -> int:

    # everything that can be refused is refused before any data work or training, and before OUT exists
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    base = ModelConfig.from_toml(args.base)
    variants = parse_variants(args.variants, base, matched_budget=args.matched_budget)
    if args.mqar_steps is not None and args.mqar_steps < 0:
        raise ConfigError(f"--mqar-steps must be >= 0, found {args.mqar_steps}")
    if args.context is not None and args.context <= 0:
        raise ConfigError(f"--context must be positive, found {args.context}")
    settings = AblationSettings(
        steps=args.steps, seeds=args.seeds, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
        mqar_steps=args.mqar_steps, mqar_pairs=args.mqar_pairs, mqar_seq_len=args.mqar_seq_len,
        mqar_vocab=args.mqar_vocab, mqar_queries=args.mqar_queries, mqar_layers=args.mqar_layers, mqar_batch_size=args.mqar_batch_size,
        context=args.context, precision=args.precision,
    )  # fmt: skip
    if settings.mqar_steps:
        task = mqar_task(settings)  # a bad MQAR shape is refused here, before any training
        for v in variants:
            mqar_config(v.config, task, settings.mqar_layers)
    for v in variants:
        if args.seq_len > v.config.max_seq_len:
            raise ConfigError(f"--seq-len {args.seq_len} exceeds the context of {args.base} (max_seq_len="
                              f"{v.config.max_seq_len})")  # fmt: skip

    say = (lambda message: None) if args.no_progress else (lambda message: print(message, file=sys.stderr, flush=True))
    data = prepare_data(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size, progress=not args.no_progress)
    say(f"ablating {len(variants)} variants x {settings.seeds} seed(s) of {base.name}: "
        + ", ".join(v.name for v in variants))  # fmt: skip
    results = summarize(run_ablation(base, variants, settings, data=data, on_run=say, progress=not args.no_progress))
    argv = sys.argv[sys.argv.index("ablate") + 1 :] if "ablate" in sys.argv else None  # as typed, for the report
    command = None if argv is None else "tinyslm ablate " + " ".join(shlex.quote(a) for a in argv)
    files = write_outputs(results, out, command)
    print(f"wrote {', '.join(str(f) for f in files)} ({results['wall_s'] / 60:.1f} min)")
    return 0
