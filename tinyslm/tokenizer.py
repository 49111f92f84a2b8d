"""Tokenizers of checkpoint folders: `tokenizer.model` (sentencepiece) or `tokenizer.json` (HF tokenizers),
or of a GGUF file (rebuilt from its metadata, tinyslm/gguf/tokenizer.py).

Both are wrapped in one small interface: `encode(text) -> list[int]`, `decode(ids) -> str`,
`bos_id`, `eos_id`. Whether a BOS token is prepended follows the folder's tokenizer_config.json
(`add_bos_token`, true for Llama-2-style sentencepiece models) or, for tokenizer.json, the
tokenizer's own post-processor.
"""

from __future__ import annotations

from pathlib import Path

from .errors import TokenizerError
from .files import file_bool, read_json, regular_file


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
    def __init__(self, path: Path, add_bos: bool = True):
        import sentencepiece as spm  # noqa: PLC0415

        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"{path}: not a readable sentencepiece model ({exc})") from None
        self.add_bos = add_bos
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.vocab_size = self.sp.get_piece_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.sp.encode(text)
        if add_special_tokens and self.add_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(list(ids))


class JSONTokenizer(Tokenizer):
    def __init__(self, path: Path, special: dict):
        from tokenizers import Tokenizer as HFTokenizer  # noqa: PLC0415

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
        if isinstance(token, dict):  # {"content": "<s>", ...} in older tokenizer_config files
            token = token.get("content")
        return None if token is None else self.tok.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a checkpoint folder (or a tokenizer.model / tokenizer.json file itself)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TokenizerError(f"{path}: no such file or folder")
    from .gguf.loader import is_gguf  # noqa: PLC0415  (a .gguf, or a folder holding one: rebuilt from its metadata)

    if is_gguf(path):
        from .gguf import gguf_tokenizer  # noqa: PLC0415

        return gguf_tokenizer(path)
    folder = path if path.is_dir() else path.parent
    special = {}
    if (folder / "tokenizer_config.json").exists():
        special = read_json(folder / "tokenizer_config.json", TokenizerError)
        for key in ("bos_token", "eos_token"):
            token = special.get(key)
            if isinstance(token, dict):  # {"content": "<s>", ...} in older tokenizer_config files
                token = token.get("content")
            if token is not None and not isinstance(token, str):
                raise TokenizerError(f"{folder / 'tokenizer_config.json'}: {key} must be a token string, found {token!r}")
    candidates = [path] if path.is_file() else [folder / "tokenizer.json", folder / "tokenizer.model"]
    for file in candidates:
        if file.exists() or file.is_symlink():  # there, but perhaps a FIFO, a device, a folder, a dangling link:
            regular_file(file, TokenizerError)  # say what it is, not "not found"
        if file.is_file() and file.suffix == ".json":
            return JSONTokenizer(file, special)
        if file.is_file() and file.suffix == ".model":
            add_bos = file_bool(special.get("add_bos_token"), True, str(folder / "tokenizer_config.json"), "add_bos_token",
                                TokenizerError)  # fmt: skip
            return SentencePieceTokenizer(file, add_bos=add_bos)
    raise TokenizerError(f"{path}: no tokenizer.json or tokenizer.model found")
