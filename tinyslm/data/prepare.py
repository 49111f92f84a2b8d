"""From a corpus to two memory-mapped token streams (train, val), with every step cached.

    source ──read──> documents ──split by seed──> train docs / val docs
                         │                              │
                         └─ train tokenizer (cached) ──> encode, join with </s> ──> train.bin, val.bin

Each document is encoded and followed by the end-of-document token (eos), so the stream reads
`doc0 </s> doc1 </s> ...` and a model learns where documents end. The validation split holds out
whole documents, chosen by a seeded permutation: the same seed gives the same split everywhere.

The streams are flat binary files of uint16 ids (uint32 when the vocabulary has 65,536 tokens or
more) opened with `np.memmap`: a corpus larger than memory trains, and every DDP rank maps the
same pages instead of holding its own copy.

Caching. Tokenizing a corpus is done once per (corpus, tokenizer, seed, val_fraction): the result
lives in a folder named by a hash of those, beside the data (`<data folder>/.tinyslm-cache/`) when
that folder is writable, else under `cache_dir` (default ~/.cache/tinyslm). An explicit
`cache_dir` is always used. A corpus file that changes (size or modification time) gets a new
folder. Every cache folder is written under a temporary name and renamed when complete, so an
interrupted run leaves nothing that a later run would mistake for a finished cache, and two
processes preparing the same data at once (DDP ranks) both end up reading the same files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import TokenizerError
from ..gguf.loader import gguf_path, is_gguf
from ..gguf.reader import GGUFFile
from ..gguf.tokenizer import write_tokenizer_files
from ..tokenizer import JSONTokenizer, SentencePieceTokenizer, Tokenizer, load_tokenizer
from . import synthetic
from .corpus import DataError, corpus_files, count_documents, fingerprint, iter_documents, writable_dir
from .tokenizer_train import TOKENIZER_FILE, train_tokenizer

CACHE_VERSION = 1  # bump when the token-file layout changes
DEFAULT_CACHE = Path("~/.cache/tinyslm")
ENCODE_CHUNK = 1024  # documents encoded per call (sentencepiece and HF tokenizers batch them in C++)


@dataclass
class TokenData:
    """A tokenized corpus: what the trainer needs, and what a checkpoint needs to decode its output."""

    tokenizer: Tokenizer
    vocab_size: int  # the model's vocab_size is set to this
    eos_id: int  # the end-of-document token joining documents
    train: np.ndarray  # (N_train,) uint16/uint32, memory-mapped
    val: np.ndarray  # (N_val,) same
    val_bytes: int  # UTF-8 bytes of the text the val tokens encode (eos tokens encode none)
    source: str  # the corpus path, or "embedded" for the procedural corpus
    tokenizer_path: Path  # tokenizer.model / tokenizer.json: copied into checkpoints
    tokenizer_files: list[Path] = field(default_factory=list)  # it + tokenizer_config.json where there is one
    train_documents: int = 0
    val_documents: int = 0
    cache: Path | None = None  # the folder holding train.bin / val.bin / meta.json

    def bits_per_byte(self, mean_val_loss: float) -> float:
        """Mean val loss in nats per token -> bits per UTF-8 byte: loss x N_val / (ln 2 x val_bytes).

        Tokenizer-independent: a tokenizer with longer tokens has a higher loss per token but fewer
        tokens per byte. A mean over a subset of the val tokens estimates the same figure.
        """
        return mean_val_loss / (math.log(2) * self.bytes_per_token)

    @property
    def bytes_per_token(self) -> float:
        """Average UTF-8 bytes per val token (the trainer's bytes_per_token for bits per byte)."""
        return self.val_bytes / len(self.val)


def prepare_data(
    source: str | Path | None,
    *,
    tokenizer: str | Path | None = None,
    vocab_size: int = 2048,
    seed: int = 0,
    val_fraction: float = 0.05,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> TokenData:
    """Read, split, tokenize (training a tokenizer when none is given) and memory-map a corpus.

    source: None (the embedded procedural corpus), a .txt / .jsonl file, or a folder of them.
    tokenizer: None (train sentencepiece BPE with `vocab_size` pieces on the corpus, cached and
        reused), or a tokenizer.model / tokenizer.json file or a folder holding one.
    """
    say = _say if progress else (lambda message: None)
    if not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 1):
        raise DataError(f"val_fraction must be a number strictly between 0 and 1, found {val_fraction!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, found {seed!r}")
    user_cache = None if cache_dir is None else Path(cache_dir).expanduser()
    if source is None:
        files, root, corpus_id = embedded_corpus(user_cache or DEFAULT_CACHE.expanduser(), say)
        label = "embedded"
    else:
        files = corpus_files(source)
        base = Path(source).expanduser()
        base = base if base.is_dir() else base.parent
        root = user_cache or (base / ".tinyslm-cache" if writable_dir(base) else DEFAULT_CACHE.expanduser() / "data")
        corpus_id = fingerprint(files)
        label = str(source)

    n_docs = None  # counted (one pass, which also finds an empty or non-UTF-8 corpus) only when needed
    if tokenizer is None:
        tok_dir = root / f"tokenizer-{corpus_id}-bpe{vocab_size}"
        if not (tok_dir / TOKENIZER_FILE).exists():
            n_docs = count_documents(files)
            say(f"training a {vocab_size}-piece BPE tokenizer on {label} ...")
            train_tokenizer(iter_documents(files), vocab_size, tok_dir)
        tok_file = tok_dir / TOKENIZER_FILE
        tok = load_tokenizer(tok_dir)
    else:
        tok, tok_file = _given_tokenizer(Path(tokenizer).expanduser(), root)
    if tok.eos_id is None:
        raise TokenizerError(f"{tok_file}: the tokenizer has no end-of-sequence token; documents need one to be separated")
    tok_files = [tok_file] + [p for p in [tok_file.parent / "tokenizer_config.json"] if p.is_file()]

    key = hashlib.sha256(
        json.dumps([CACHE_VERSION, corpus_id, _file_hash(tok_file), seed, float(val_fraction)]).encode()
    ).hexdigest()[:16]
    cache = root / f"tokens-{key}"
    if not (cache / "meta.json").exists():
        n_docs = count_documents(files) if n_docs is None else n_docs
        _tokenize(files, n_docs, tok, seed, val_fraction, cache, label, progress, say)
    if len(tok_files) == 1 and isinstance(tok, SentencePieceTokenizer):
        tok_files.append(_no_bos_config(tok, cache))
    meta = json.loads((cache / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    return TokenData(
        tokenizer=tok, vocab_size=tok.vocab_size, eos_id=tok.eos_id,
        train=np.memmap(cache / "train.bin", dtype=dtype, mode="r", shape=(meta["train_tokens"],)),
        val=np.memmap(cache / "val.bin", dtype=dtype, mode="r", shape=(meta["val_tokens"],)),
        val_bytes=meta["val_bytes"], source=label, tokenizer_path=tok_file, tokenizer_files=tok_files,
        train_documents=meta["train_documents"], val_documents=meta["val_documents"], cache=cache,
    )  # fmt: skip


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def embedded_corpus(cache_root: Path, say=lambda message: None) -> tuple[list[Path], Path, str]:
    """The procedural corpus as a JSONL file in the cache (generated once): (files, cache root, id)."""
    corpus_id = f"v{synthetic.CORPUS_VERSION}-seed{synthetic.DEFAULT_SEED}-n{synthetic.DEFAULT_DOCUMENTS}"
    root = cache_root / f"embedded-{corpus_id}"
    path = root / "corpus" / "corpus.jsonl"
    if not path.exists():
        say("generating the embedded corpus ...")

        def build(tmp: Path) -> None:
            with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
                for doc in synthetic.generate_documents(synthetic.DEFAULT_DOCUMENTS, synthetic.DEFAULT_SEED):
                    f.write(json.dumps({"text": doc}) + "\n")

        _build_dir(root / "corpus", build)
    return [path], root, f"embedded-{corpus_id}"


def _tokenize(files, n_docs: int, tok: Tokenizer, seed: int, val_fraction: float, cache: Path, label: str,
              progress: bool, say) -> None:  # fmt: skip
    if n_docs < 2:
        raise DataError(
            f"{label}: only 1 document; holding out a validation split needs at least 2 (a .txt file is split "
            "into documents at blank lines or at <|endoftext|> lines)"
        )
    n_val = min(n_docs - 1, max(1, round(n_docs * val_fraction)))
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n_docs)[:n_val]] = True
    dtype = token_dtype(tok.vocab_size)
    say(f"tokenizing {n_docs:,} documents of {label} ({n_val:,} held out for validation) ...")

    def build(tmp: Path) -> None:
        counts = {"train": 0, "val": 0}
        val_bytes = 0
        bar = None
        if progress:
            bar = tqdm(total=n_docs, unit="doc", desc="tokenizing", file=sys.stderr, leave=False)
        with open(tmp / "train.bin", "wb") as f_train, open(tmp / "val.bin", "wb") as f_val:
            chunk: list[str] = []
            index = 0

            def flush() -> None:
                nonlocal index, val_bytes
                for doc, ids in zip(chunk, _encode_many(tok, chunk)):
                    ids.append(tok.eos_id)
                    arr = np.asarray(ids, dtype=np.int64)
                    if arr.size and (arr.min() < 0 or arr.max() >= tok.vocab_size):
                        raise TokenizerError(f"the tokenizer produced id {int(arr.max())} >= its vocab_size {tok.vocab_size}")
                    split = "val" if is_val[index] else "train"
                    (f_val if split == "val" else f_train).write(arr.astype(dtype).tobytes())
                    counts[split] += arr.size
                    if split == "val":
                        val_bytes += len(doc.encode("utf-8"))
                    index += 1
                if bar is not None:
                    bar.update(len(chunk))
                chunk.clear()

            for doc in iter_documents(files):
                chunk.append(doc)
                if len(chunk) == ENCODE_CHUNK:
                    flush()
            flush()
        if bar is not None:
            bar.close()
        meta = dict(version=CACHE_VERSION, source=label, dtype=dtype.name, train_tokens=counts["train"],
                    val_tokens=counts["val"], val_bytes=val_bytes, train_documents=n_docs - n_val,
                    val_documents=n_val, vocab_size=tok.vocab_size, eos_id=tok.eos_id)  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    _build_dir(cache, build)


def _encode_many(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Encode without BOS/EOS; batched in C++ where the tokenizer library offers it."""
    if isinstance(tok, SentencePieceTokenizer):
        return tok.sp.encode(texts, num_threads=min(4, os.cpu_count() or 1))
    if isinstance(tok, JSONTokenizer):
        return [e.ids for e in tok.tok.encode_batch(texts, add_special_tokens=False)]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def _no_bos_config(tok: SentencePieceTokenizer, cache: Path) -> Path:
    """A tokenizer_config.json saying "no <s> before a prompt" for a bare tokenizer.model.

    The streams hold no BOS (documents are separated by eos only), so a checkpoint trained on them
    must not get one prepended at generation time, which a bare tokenizer.model would (Llama-2's
    default).
    """
    path = cache / "tokenizer_config.json"
    if not path.exists():
        piece = lambda i: None if i is None else tok.sp.id_to_piece(i)  # noqa: E731
        config = {"add_bos_token": False, "add_eos_token": False, "bos_token": piece(tok.bos_id),
                  "eos_token": piece(tok.eos_id)}  # fmt: skip
        tmp = cache / f".tokenizer_config.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, path)
    return path


def _given_tokenizer(given: Path, root: Path) -> tuple[Tokenizer, Path]:
    """The tokenizer `--tokenizer` names and the file that holds it (hashed into the cache key, copied into the
    checkpoint). A GGUF's tokenizer lives in its metadata: it is written out as tokenizer files once, in the cache."""
    if given.exists() and is_gguf(given):
        file = GGUFFile(gguf_path(given))
        info = file.path.stat()
        stamp = hashlib.sha256(f"{file.path.resolve()}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:16]
        folder = root / f"tokenizer-gguf-{stamp}"
        if not (folder / "tokenizer.json").exists():
            _build_dir(folder, lambda tmp: write_tokenizer_files(file.metadata, tmp, str(file.path)))
        given = folder
    tok = load_tokenizer(given)
    if given.is_file():
        return tok, given
    return tok, given / ("tokenizer.json" if isinstance(tok, JSONTokenizer) else TOKENIZER_FILE)


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build_dir(final: Path, build) -> Path:
    """Run build(tmp) in a fresh temporary folder, then rename it to `final` (atomic; first writer wins)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same folder first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _say(message: str) -> None:
    print(f"data: {message}", file=sys.stderr, flush=True)
