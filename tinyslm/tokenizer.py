"""Tokenizers of checkpoint folders: `tokenizer.model` (sentencepiece) or `tokenizer.json` (HF tokenizers),
or of a GGUF file (rebuilt from its metadata, tinyslm/gguf/tokenizer.py); and their chat templates
(`load_chat_template`, rendered by chat_template.py).

Both are wrapped in one small interface (tokenizer_types.py): `encode(text) -> list[int]`,
`decode(ids) -> str`, `bos_id`, `eos_id`. Whether a BOS token is prepended follows the folder's
tokenizer_config.json (`add_bos_token`, true for Llama-2-style sentencepiece models) or, for
tokenizer.json, the tokenizer's own post-processor.
"""

from __future__ import annotations

from pathlib import Path

from .chat_template import ChatTemplate, folder_chat_template
from .errors import TokenizerError
from .files import file_bool, read_json, regular_file
from .gguf.loader import is_gguf
from .gguf.tokenizer import gguf_chat_template, gguf_tokenizer
from .tokenizer_types import JSONTokenizer, SentencePieceTokenizer, Tokenizer, token_text

__all__ = ["load_tokenizer", "load_chat_template", "Tokenizer", "JSONTokenizer", "SentencePieceTokenizer"]


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a checkpoint folder (or a tokenizer.model / tokenizer.json file itself)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TokenizerError(f"{path}: no such file or folder")
    if is_gguf(path):  # a .gguf, or a folder holding one: rebuilt from its metadata
        return gguf_tokenizer(path)
    folder = path if path.is_dir() else path.parent
    special = {}
    if (folder / "tokenizer_config.json").exists():
        special = read_json(folder / "tokenizer_config.json", TokenizerError)
        for key in ("bos_token", "eos_token"):
            token = token_text(special.get(key))
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


def load_chat_template(path: str | Path, template: str | Path | None = None) -> ChatTemplate:
    """The chat template of a checkpoint folder or GGUF (chat_template.py), or the Jinja file `template` in its place
    (the special tokens still the checkpoint's). One that has none is refused when rendered, naming the fix."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TokenizerError(f"{path}: no such file or folder")
    own = template is None  # a given template replaces the checkpoint's: that one is not even read
    folder = path if path.is_dir() else path.parent
    found = gguf_chat_template(path, text=own) if is_gguf(path) else folder_chat_template(folder, text=own)
    return found if own else found.with_text(template)
