"""The `tinyslm` command line: the parser, and the one way a command is registered (COMMAND_MODULES: each
module's `add_parser(subparsers)` adds its commands with `set_defaults(run=...)`): inspect, generate, parity,
bench and demo (tools/command.py), chat, convert, tokenizer, train, train-bench, ablate.

Every failure tinyslm anticipates prints one line `error: ...` and exits with status 2; an
unexpected one prints one line too (set TINYSLM_DEBUG=1 for the traceback). Never a raw
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

from . import machine
from .errors import TinySLMError
from .files import EscapedStream

EPILOG = """examples:
  tinyslm demo                                       # small real-architecture models, end to end, offline
  tinyslm inspect configs/tinyllama-1.1b.toml --context 2048
  tinyslm inspect --compare-attention configs/smollm-135m.toml --context 2048,32768
  tinyslm inspect ~/models/Qwen2.5-0.5B --json
  tinyslm generate ~/models/TinyLlama-1.1B --prompt "Once upon a time" --max-new-tokens 32
  tinyslm parity ~/models/SmolLM-135M
  tinyslm bench ~/models/TinyLlama-1.1B --dtype bfloat16
  tinyslm generate SmolLM2-135M-Instruct.Q4_1.gguf --prompt "Gravity is" --max-new-tokens 40
  tinyslm chat SmolLM2-135M-Instruct.Q4_1.gguf       # a conversation, in the model's chat template
  tinyslm generate SmolLM2-135M-Instruct.Q4_1.gguf --chat "What is the capital of France?" --max-new-tokens 40
  tinyslm convert ~/models/SmolLM2-135M model.Q8_0.gguf --type q8_0
  tinyslm train configs/ablation/llama-1m.toml --steps 500 --out runs/llama-1m
  tinyslm ablate --base configs/ablation/llama-1m.toml --variants mha,gqa:2,mqa,mla --steps 300 --out runs/ablation
"""


def _version() -> str:
    """The installed package's version; tinyslm.__version__ in a source tree that was never installed."""
    try:
        return importlib.metadata.version("tinyslm")
    except importlib.metadata.PackageNotFoundError:
        return sys.modules[__package__].__version__  # (the package, loaded before any of its modules)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyslm",
        description="Small-language-model architectures from scratch, checked against transformers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print tinyslm's version and exit")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in COMMAND_MODULES:  # commands that live beside their subject: add_parser(sub) + run(args)
        importlib.import_module(name).add_parser(sub)
    return parser


# Each module defines `add_parser(subparsers)`, which registers its command with
# `set_defaults(run=...)`; the function gets the parsed args and returns the exit status.
COMMAND_MODULES: list[str] = [
    "tinyslm.tools.command",  # inspect, generate, parity, bench, demo
    "tinyslm.chat.command",  # chat
    "tinyslm.gguf.command",  # convert
    "tinyslm.data.command",  # tokenizer train, data prepare
    "tinyslm.train.command",  # train
    "tinyslm.train.bench",  # train-bench
    "tinyslm.ablate.command",  # ablate
]


def _debug() -> bool:
    """TINYSLM_DEBUG set to a true value (1, true, yes, on): tracebacks instead of one line."""
    try:
        return machine.env_flag("TINYSLM_DEBUG") is True
    except Exception:  # noqa: BLE001  (an unreadable value: no debugging)
        return False


def main(argv: list[str] | None = None) -> int:

    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapedStream(sys.stdout), EscapedStream(sys.stderr)  # text from files, escaped
    try:
        return _main(argv)
    finally:
        if isinstance(sys.stdout, EscapedStream):  # (not when a broken pipe replaced it)
            sys.stdout = streams[0]
        sys.stderr = streams[1]


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)

    if args.command in ("parity", "demo", "train-bench", "convert"):  # keep transformers' per-load progress bars out of our report
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        return args.run(args)
    except TinySLMError as exc:  # (UsageError, a bad option value, among them)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (silence the flush at exit)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the environment refused (permission denied, a read-only or full disk): not a bug
        if _debug():
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001  (one clear line, never a raw traceback)
        if _debug():
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set TINYSLM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
