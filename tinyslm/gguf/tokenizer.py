"""The tokenizer a GGUF describes in its metadata, rebuilt as an HF `tokenizers` pipeline; and back.

A GGUF stores no tokenizer.json, only the pieces (llama.cpp's key names):

    tokenizer.ggml.model        "llama" (sentencepiece-style BPE) or "gpt2" (byte-level BPE)
    tokenizer.ggml.tokens       the vocabulary, in id order
    tokenizer.ggml.scores       sentencepiece piece scores (merge priority when no merges are given)
    tokenizer.ggml.token_type   1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
    tokenizer.ggml.merges       "a b" merge rules, best first
    tokenizer.ggml.pre          which pre-tokenizer regex the merges were learned with
    tokenizer.ggml.bos_token_id / eos_token_id / add_bos_token

The pipeline around them is the one transformers' GGUF loader builds (its LlamaTokenizer and
GPT2Tokenizer classes plus integrations/gguf/gguf_tokenizer_mapping.py), so both give the same
ids for the same text; tests/formats/test_gguf.py checks that on a real file.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

from ..chat_template import ChatTemplate, folder_chat_template
from ..errors import TokenizerError
from ..files import file_bool, read_json, shown
from ..tokenizer_types import JSONTokenizer, Tokenizer, token_text
from .loader import gguf_path
from .reader import GGUFFile

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# pre-tokenizer regexes by their llama.cpp name (llama-vocab.cpp); names not listed use GPT-2's own
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
          "dbrx": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}  # fmt: skip


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of the 256 byte values (openai/gpt-2 encoder.py)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def tokenizer_from_metadata(meta: dict[str, Any], source: str) -> Tokenizer:
    """A tinyslm Tokenizer for GGUF metadata (see the module docstring for the keys)."""
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None or (isinstance(tokens, list) and not tokens):
        raise TokenizerError(f"{source}: no tokenizer.ggml.tokens in the GGUF metadata")
    if not isinstance(tokens, list):
        raise TokenizerError(f"{source}: tokenizer.ggml.tokens must be an array of strings, found {_brief(tokens)}")
    types = meta.get("tokenizer.ggml.token_type")
    types = [NORMAL] * len(tokens) if types is None else types
    merges = meta.get("tokenizer.ggml.merges")
    _check_vocabulary(tokens, types, merges, source)
    if kind == "gpt2":
        spelling = bytes_to_unicode()
        alphabet = set(spelling.values())
        vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i for i, t in enumerate(tokens)}
        pairs = _known_pairs([tuple(m.split(" ", 1)) for m in merges or []], vocab, source)
        tok = HFTokenizer(BPE(vocab=vocab, merges=pairs, dropout=None,
                              continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))  # fmt: skip
        split = SPLITS.get(meta.get("tokenizer.ggml.pre"))
        tok.pre_tokenizer = (
            pre_tokenizers.ByteLevel(add_prefix_space=False) if split is None else pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(split), behavior="isolated"),
                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        )  # fmt: skip
        tok.decoder = decoders.ByteLevel()
        control_ok = lambda t: set(t) <= alphabet  # noqa: E731  (a control token outside the byte alphabet is a mislabel)
        add_bos = file_bool(meta.get("tokenizer.ggml.add_bos_token"), False, str(source), "tokenizer.ggml.add_bos_token",
                            TokenizerError)  # fmt: skip
    elif kind == "llama":
        vocab = {t: i for i, t in enumerate(tokens)}
        pairs = _known_pairs([tuple(m.split(" ", 1)) for m in merges], vocab, source) if merges else \
            _merges_from_scores(tokens, meta, source)
        tok = HFTokenizer(BPE(vocab=vocab, merges=pairs, fuse_unk=True, byte_fallback=True, dropout=None))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence(
            [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
        )
        control_ok = lambda t: True  # noqa: E731
        add_bos = file_bool(meta.get("tokenizer.ggml.add_bos_token"), True, str(source), "tokenizer.ggml.add_bos_token",
                            TokenizerError)  # (True: llama.cpp's default for sentencepiece)  # fmt: skip
    else:
        raise TokenizerError(f"{source}: tokenizer.ggml.model {kind!r} is not supported (tinyslm reads 'llama' and 'gpt2')")

    special = [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types) if k == CONTROL and control_ok(t)]
    ids = {name: meta.get(f"tokenizer.ggml.{name}_token_id") for name in ("bos", "eos", "unknown", "padding")}
    for i in ids.values():  # the special ids are special whatever their type says (transformers adds them too)
        if isinstance(i, int) and 0 <= i < len(tokens) and tokens[i] not in {a.content for a in special}:
            special.append(AddedToken(tokens[i], normalized=False, special=True))
    tok.add_special_tokens(special)
    user = [AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types) if k == USER_DEFINED and t in vocab]
    if user:
        tok.add_tokens(user)
    bos = ids["bos"] if isinstance(ids["bos"], int) and 0 <= ids["bos"] < len(tokens) else None
    if add_bos and bos is not None:
        # the template names the token; a name with a space or a colon cannot be written in one, so it gets a plain one
        name = tokens[bos] if tokens[bos] and not any(c.isspace() or c in ":$" for c in tokens[bos]) else "BOS"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{name}:0 $A:0", pair=f"{name}:0 $A:0 {name}:1 $B:1",
            special_tokens=[{"id": name, "ids": [bos], "tokens": [tokens[bos]]}],
        )  # fmt: skip
    eos = ids["eos"] if isinstance(ids["eos"], int) and 0 <= ids["eos"] < len(tokens) else None
    return JSONTokenizer.wrap(tok, bos_id=bos, eos_id=eos, source=source)


def _brief(value: Any) -> str:
    text = shown(repr(value))
    return text if len(text) <= 100 else text[:100] + "..."


def _check_vocabulary(tokens: list, types, merges, source: str) -> None:
    """The tokenizer's arrays as GGUF defines them, or one clear error naming the key (not a TypeError later)."""
    bad = next((i for i, t in enumerate(tokens) if not isinstance(t, str)), None)
    if bad is not None:
        raise TokenizerError(f"{source}: tokenizer.ggml.tokens must be strings; token {bad} is {shown(repr(tokens[bad]))}")
    if not isinstance(types, list) or len(types) != len(tokens) or not all(type(k) is int for k in types):
        raise TokenizerError(f"{source}: tokenizer.ggml.token_type must hold one integer per token ({len(tokens)})")
    if merges is not None:
        if not isinstance(merges, list):
            raise TokenizerError(f"{source}: tokenizer.ggml.merges must be an array of strings, found {_brief(merges)}")
        bad = next((i for i, m in enumerate(merges) if not isinstance(m, str) or " " not in m.strip(" ")), None)
        if bad is not None:
            raise TokenizerError(f"{source}: tokenizer.ggml.merges[{bad}] must be two tokens separated by a space, "
                                 f"found {shown(repr(merges[bad]))}")  # fmt: skip


def _known_pairs(pairs: list[tuple[str, str]], vocab: dict[str, int], source: str) -> list[tuple[str, str]]:
    """The merges, each naming two tokens of the vocabulary, or one error naming the first merge that does not."""
    bad = next((i for i, (a, b) in enumerate(pairs) if a not in vocab or b not in vocab), None)
    if bad is not None:
        unknown = next(t for t in pairs[bad] if t not in vocab)
        raise TokenizerError(f"{source}: tokenizer.ggml.merges[{bad}] names {shown(repr(unknown))}, which is not in "
                             f"tokenizer.ggml.tokens")  # fmt: skip
    return pairs


def _merges_from_scores(tokens: list[str], meta: dict, source: str) -> list[tuple[str, str]]:
    """Merges a sentencepiece vocabulary implies: every split of a piece into two pieces, best score first
    (transformers' generate_merges, which its GGUF loader uses for files that list no merges)."""
    scores = meta.get("tokenizer.ggml.scores")
    if not isinstance(scores, list) or len(scores) != len(tokens):
        raise TokenizerError(f"{source}: a 'llama' tokenizer needs tokenizer.ggml.scores (one per token) or merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for piece, score in dict(zip(tokens, scores)).items():
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


# tokenizer_config.json's special tokens and the GGUF key of each one's id, both ways (convert writes these)
SPECIAL_IDS = {"bos_token": "tokenizer.ggml.bos_token_id", "eos_token": "tokenizer.ggml.eos_token_id",
               "unk_token": "tokenizer.ggml.unknown_token_id", "pad_token": "tokenizer.ggml.padding_token_id"}  # fmt: skip
SEPARATOR_ID = {"sep_token": "tokenizer.ggml.seperator_token_id"}  # (llama.cpp's spelling) one more a template may name


def special_tokens(meta: dict[str, Any], keys: dict[str, str] = SPECIAL_IDS) -> dict[str, str]:
    """The special tokens as text (bos_token -> "<s>", ...) whose ids GGUF metadata declares, of `keys`."""
    tokens, found = meta.get("tokenizer.ggml.tokens"), {}
    for key, id_key in keys.items():
        i = meta.get(id_key)
        if type(i) is int and isinstance(tokens, list) and 0 <= i < len(tokens) and isinstance(tokens[i], str):
            found[key] = tokens[i]
    return found


def gguf_chat_template(path: str | Path, text: bool = True) -> ChatTemplate:
    """A GGUF's chat template (tokenizer.chat_template; text None where it has none, or where text=False: only the
    special tokens are wanted) and its special tokens."""
    file = GGUFFile(gguf_path(path))
    special = special_tokens(file.metadata, SPECIAL_IDS | SEPARATOR_ID)
    template = file.get("tokenizer.chat_template") if text else None
    if template is not None and not isinstance(template, str):
        raise TokenizerError(f"{file.path}: tokenizer.chat_template must be a string, found {type(template).__name__}; "
                             "give a template file with --template FILE")  # fmt: skip
    return ChatTemplate(template, f"{file.path}: tokenizer.chat_template", special)


def gguf_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a GGUF file (or of the one .gguf in a folder), rebuilt from its metadata."""
    file = GGUFFile(gguf_path(path))
    return tokenizer_from_metadata(file.metadata, str(file.path))


# ----------------------------------------------------------------------------------------------
# the other way: a folder's tokenizer -> GGUF metadata, and GGUF metadata -> tokenizer files


def tokenizer_metadata(folder: Path) -> dict[str, Any]:
    """GGUF tokenizer metadata for an HF folder's tokenizer.model (sentencepiece) or byte-level tokenizer.json,
    written as llama.cpp's convert_hf_to_gguf.py writes them."""
    config = read_json(folder / "tokenizer_config.json", TokenizerError) if (folder / "tokenizer_config.json").is_file() else {}
    special = {k: token_text(v) for k, v in config.items() if k.endswith("_token")}
    if (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file():
        sp = spm.SentencePieceProcessor()
        sp.Load(str(folder / "tokenizer.model"))
        n = sp.get_piece_size()
        kinds = [UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else UNUSED if sp.is_unused(i)
                 else BYTE if sp.is_byte(i) else NORMAL for i in range(n)]  # fmt: skip
        meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
                "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
                "tokenizer.ggml.scores": [float(sp.get_score(i)) for i in range(n)], "tokenizer.ggml.token_type": kinds,
                "tokenizer.ggml.add_bos_token": file_bool(config.get("add_bos_token"), True, str(folder / "tokenizer_config.json"),
                                                          "add_bos_token", TokenizerError)}  # fmt: skip
        for name, i in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unknown", sp.unk_id()), ("padding", sp.pad_id())):
            if i >= 0:
                meta[f"tokenizer.ggml.{name}_token_id"] = i
        return meta | _chat_template(folder)
    if not (folder / "tokenizer.json").is_file():
        raise TokenizerError(f"{folder}: no tokenizer.json or tokenizer.model to write into the GGUF")
    data = json.loads((folder / "tokenizer.json").read_text())
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or "ByteLevel" not in json.dumps(data.get("decoder")):
        raise TokenizerError(f"{folder / 'tokenizer.json'}: only byte-level BPE tokenizers (GPT-2 style) are written to GGUF")
    vocab = dict(model["vocab"])
    added = {a["content"]: a for a in data.get("added_tokens") or []}
    vocab.update({content: a["id"] for content, a in added.items()})
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    for t, i in vocab.items():
        tokens[i] = t
    kinds = [CONTROL if t in added and added[t].get("special") else USER_DEFINED if t in added else NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": _pre_name(data.get("pre_tokenizer"), folder),
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": kinds, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.add_bos_token": file_bool(config.get("add_bos_token"), False, str(folder / "tokenizer_config.json"),
                                                      "add_bos_token", TokenizerError)}  # fmt: skip
    for key, id_key in SPECIAL_IDS.items():
        if special.get(key) in vocab:
            meta[id_key] = vocab[special[key]]
    return meta | _chat_template(folder)


def _chat_template(folder: Path) -> dict[str, str]:
    """The folder's chat template as GGUF metadata (llama.cpp and Ollama read it from there), if it has one."""
    try:
        text = folder_chat_template(folder).text
    except TokenizerError:  # several named templates and none the default, say: the GGUF goes without one
        return {}
    return {} if text is None else {"tokenizer.chat_template": text}


def _pre_name(pre: dict | None, folder: Path) -> str:
    """llama.cpp's name for a tokenizer.json pre-tokenizer: plain ByteLevel is GPT-2's regex, a Split one of SPLITS."""
    if isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    text = json.dumps(pre)
    for name, regex in SPLITS.items():
        if json.dumps(regex)[1:-1] in text:
            return name
    raise TokenizerError(f"{folder / 'tokenizer.json'}: its pre-tokenizer has no llama.cpp name tinyslm knows ({text[:120]})")


def write_tokenizer_files(meta: dict[str, Any], folder: Path, source: str) -> None:
    """tokenizer.json + tokenizer_config.json for the tokenizer in GGUF metadata (GGUF -> HF folder)."""
    tok = tokenizer_from_metadata(meta, source)
    tok.tok.save(str(folder / "tokenizer.json"))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                              "add_bos_token": tok.tok.post_processor is not None, **special_tokens(meta)}  # fmt: skip
    if isinstance(meta.get("tokenizer.chat_template"), str):
        config["chat_template"] = meta["tokenizer.chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
