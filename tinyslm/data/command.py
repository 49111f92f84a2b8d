"""`tinyslm tokenizer train`: train the byte-exact BPE tokenizer `tinyslm train` would train, into a folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..tokenizer import load_tokenizer
from .corpus import DataError, corpus_files, count_documents, iter_documents
from .prepare import DEFAULT_CACHE, embedded_corpus
from .tokenizer_train import train_tokenizer

TRAIN_DESCRIPTION = """Train a sentencepiece BPE tokenizer on a corpus: a .txt file, a .jsonl file with a "text"
field, or a folder of them (default: the embedded procedural corpus).

Byte-exact: byte fallback, no normalization, no dummy prefix, digits split, so
decode(encode(text)) == text and bits per byte are exact. Special ids: <unk> 0, <s> 1,
</s> 2 (end of document). --vocab-size is a maximum: a small corpus gets fewer pieces.
Writes OUT/tokenizer.model and OUT/tokenizer_config.json (add_bos_token false)."""

EXAMPLES = """examples:
  tinyslm tokenizer train --vocab-size 2048 --out tok/             # the embedded corpus
  tinyslm tokenizer train --data stories.txt --vocab-size 4096 --out tok/
  tinyslm tokenizer train --data corpus/ --vocab-size 8192 --out tok/   # every .txt/.jsonl file below corpus/

Use the result with `tinyslm train ... --tokenizer tok/` (or prepare_data(..., tokenizer="tok/")).
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="train a sentencepiece BPE tokenizer on a corpus",
        description="Tokenizer tools. `tinyslm tokenizer train` trains a byte-exact sentencepiece BPE tokenizer.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    t = tsub.add_parser(
        "train",
        help="train a byte-exact BPE tokenizer and write tokenizer.model + tokenizer_config.json",
        description=TRAIN_DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--data", default=None, metavar="PATH", help="corpus file or folder (default: the embedded corpus)")
    t.add_argument("--vocab-size", type=int, default=2048, help="number of pieces, at most (default 2048; >= 300)")
    t.add_argument("--out", required=True, metavar="DIR", help="folder to write tokenizer.model into (created)")
    t.add_argument("--seed", type=int, default=0, help="seed of the line sample on corpora over 1M lines (default 0)")
    t.set_defaults(run=run_train)


def run_train(args) -> int:
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a folder")
    if args.data is None:
        files, _, _ = embedded_corpus(DEFAULT_CACHE.expanduser(), lambda m: print(f"data: {m}"))
    else:
        files = corpus_files(args.data)
    n_docs = count_documents(files)  # fails early, with the file and offset, on an empty or non-UTF-8 corpus
    t0 = time.perf_counter()
    path = train_tokenizer(iter_documents(files), args.vocab_size, out, seed=args.seed)
    seconds = time.perf_counter() - t0
    tok = load_tokenizer(out)
    sample = [doc for _, doc in zip(range(2000), iter_documents(files))]
    n_bytes = sum(len(d.encode("utf-8")) for d in sample)
    n_tokens = sum(len(tok.encode(d, add_special_tokens=False)) for d in sample)
    print(f"wrote {path} ({tok.vocab_size:,} pieces, eos id {tok.eos_id}) from {n_docs:,} documents in {seconds:.1f} s; "
          f"{n_bytes / n_tokens:.2f} bytes per token on the first {len(sample):,} documents")  # fmt: skip
    return 0
