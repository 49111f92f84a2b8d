"""The one small tokenizer interface tinyslm uses, and its two wrappers.

    encode(text) -> list[int]   decode(ids) -> str   bos_id   eos_id   vocab_size

SentencePieceTokenizer wraps a `tokenizer.model` (sentencepiece), JSONTokenizer a `tokenizer.json`
(HF tokenizers) or a `tokenizers.Tokenizer` built in memory (gguf/tokenizer.py rebuilds one from a
GGUF's metadata). Which file a checkpoint's tokenizer is, is decided in tokenizer.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import sentencepiece as spm
from tokenizers import Tokenizer as HFTokenizer

from .errors import TokenizerError


def token_text(value):
    """A special token as tokenizer_config.json writes it: "<s>", or {"content": "<s>", ...} in older files."""
    return value.get("content") if isinstance(value, dict) else value


class Tokenizer:
    """Common interface; see SentencePieceTokenizer and JSONTokenizer."""

    bos_id: int | None = None
    eos_id: int | None = None
    vocab_size: int = 0

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError


class SentencePieceTokenizer(Tokenizer):
    """A `tokenizer.model`. Its control pieces (`<s>`, `</s>`) and `<unk>` written in the text are those tokens, as
    a chat template writes them (sentencepiece alone would spell them out character by character); the text
    between them is encoded as text, each stretch on its own (Meta's Llama-2 chat layout: `<s>[INST] ...`)."""

    def __init__(self, path: Path, add_bos: bool = True):
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"{path}: not a readable sentencepiece model ({exc})") from None
        self.add_bos = add_bos
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.vocab_size = self.sp.get_piece_size()
        self.specials = {self.sp.id_to_piece(i): i for i in range(self.vocab_size)
                         if self.sp.is_control(i) or self.sp.is_unknown(i)}  # fmt: skip
        longest_first = sorted(self.specials, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if self.specials else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self._split is None or not any(piece in text for piece in self.specials):
            ids = self.sp.encode(text)
        else:
            ids = []
            for part in self._split.split(text):
                ids += [self.specials[part]] if part in self.specials else self.sp.encode(part) if part else []
        if add_special_tokens and self.add_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(list(ids))


class JSONTokenizer(Tokenizer):
    def __init__(self, path: Path, special: dict):
        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises a bare Exception on bad files
            raise TokenizerError(f"{path}: not a readable tokenizer.json ({exc})") from None
        self.bos_id = self._token_id(special.get("bos_token"))
        self.eos_id = self._token_id(special.get("eos_token"))
        self.vocab_size = self.tok.get_vocab_size()

    @classmethod
    def wrap(cls, tok, bos_id: int | None, eos_id: int | None, source: str = "") -> "JSONTokenizer":
        """A tokenizer built in memory (a `tokenizers.Tokenizer`; e.g. rebuilt from GGUF metadata)."""
        self = cls.__new__(cls)
        self.tok, self.bos_id, self.eos_id, self.source = tok, bos_id, eos_id, source
        self.vocab_size = tok.get_vocab_size()
        return self

    def _token_id(self, token) -> int | None:
        token = token_text(token)
        return None if token is None else self.tok.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)
