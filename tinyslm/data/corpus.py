"""Reading a training corpus: a UTF-8 text file, a JSONL file with a "text" field, or a folder of them.

A corpus is a sequence of *documents*; the validation split holds out whole documents, and the
token stream marks where one ends (the end-of-document token). Where a document ends:

    .jsonl   one JSON object per line, the document is its "text" string
    .txt     documents are separated by a line holding only <|endoftext|> (the GPT-2 / TinyStories
             convention) when the file has one; otherwise by blank lines (each paragraph is a document)
    folder   every .txt and .jsonl file below it, in sorted path order (hidden files and folders skipped)

Everything is read as a stream, line by line, so a corpus larger than memory can be tokenized.
Every error names the file and where in it: a non-UTF-8 file is reported with the byte offset of
the first bad byte, a JSONL record without "text" with its line number and the keys it has.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from ..errors import TinySLMError
from ..files import regular_file

SUFFIXES = (".txt", ".jsonl")
EOT_MARKER = "<|endoftext|>"  # a .txt line holding only this separates documents


class DataError(TinySLMError, ValueError):
    """A corpus that cannot be read or used: missing, empty, not UTF-8, a malformed JSONL record."""


def corpus_files(source: str | Path) -> list[Path]:
    """The text files a source stands for: itself (a .txt / .jsonl file) or those below a folder."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (expected a .txt or .jsonl file, or a folder of them)")
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.suffix in SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )  # fmt: skip
        if not files:
            raise DataError(f"{path}: empty corpus: the folder holds no .txt or .jsonl files")
        return files
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported corpus file type {path.suffix!r}; expected .txt or .jsonl")
    return [regular_file(path, DataError)]


def fingerprint(files: list[Path]) -> str:
    """A short hash of the files' paths, sizes and modification times: a changed corpus gets a new cache."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, decoded line with its newline), with a byte-exact error on non-UTF-8 input."""
    offset = 0
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path}: not UTF-8 text: byte offset {offset + exc.start} (line {number}) is "
                        f"0x{raw[exc.start]:02x} ({exc.reason}); re-encode the file as UTF-8"
                    ) from None
                offset += len(raw)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None


def _text_documents(path: Path) -> Iterator[str]:
    """Documents of a .txt file: split at <|endoftext|> lines if there are any, else at blank lines."""
    by_marker = _has_marker(path)
    lines: list[str] = []
    for _, line in _lines(path):
        boundary = line.strip() == EOT_MARKER if by_marker else not line.strip()
        if boundary:
            if lines:
                yield "".join(lines).strip("\n")
            lines = []
        else:
            lines.append(line)
    if lines:
        yield "".join(lines).strip("\n")


def _has_marker(path: Path) -> bool:
    marker = EOT_MARKER.encode()
    with open(path, "rb") as f:
        return any(line.strip() == marker for line in f)


def _jsonl_documents(path: Path) -> Iterator[str]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict) or "text" not in record:
            found = f"keys {sorted(record)}" if isinstance(record, dict) else f"a JSON {type(record).__name__}"
            raise DataError(f'{path}: line {number}: expected an object with a "text" field, found {found}')
        if not isinstance(record["text"], str):
            raise DataError(f'{path}: line {number}: "text" must be a string, found {type(record["text"]).__name__}')
        yield record["text"]


def iter_documents(files: list[Path]) -> Iterator[str]:
    """Every non-empty document of the corpus, in file order. Streams; raises DataError on bad input."""
    for path in files:
        read = _jsonl_documents if path.suffix == ".jsonl" else _text_documents
        for doc in read(path):
            if doc.strip():
                yield doc


def count_documents(files: list[Path]) -> int:
    """How many documents `iter_documents` yields (one pass over the corpus); an empty corpus is an error."""
    n = sum(1 for _ in iter_documents(files))
    if n == 0:
        where = files[0] if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"
        raise DataError(f"{where}: empty corpus: no non-empty documents")
    return n


def writable_dir(path: Path) -> bool:
    """Whether `path` (existing, or creatable under an existing parent) accepts new files."""
    while not path.exists():
        path = path.parent
    return os.access(path, os.W_OK | os.X_OK)
