"""Training a byte-exact sentencepiece BPE tokenizer on a corpus (Kudo & Richardson 2018, arXiv:1808.06226).

Settings chosen so that decode(encode(text)) == text, byte for byte, for any UTF-8 text (the one
exception: the character U+2581 "▁", sentencepiece's own space marker, decodes as a space):

    normalization "identity"        no NFKC folding (NFKC rewrites e.g. full-width digits)
    remove_extra_whitespaces False  keep runs of spaces and leading/trailing spaces
    add_dummy_prefix False          no invented space before the first word
    byte_fallback True              a character outside the vocabulary becomes its UTF-8 bytes
                                    (<0x..> pieces), never <unk>; so do newlines and tabs
    split_digits True               one token per digit: arithmetic is learnable digit by digit

Byte exactness is what makes bits per byte well defined: val_bytes is the UTF-8 length of the
text the validation tokens decode to. Special ids follow Llama-2: <unk> 0, <s> 1, </s> 2 (the
end-of-document token). The vocabulary is a soft limit (`hard_vocab_limit=False`): a small corpus
gets fewer pieces than asked for, and the model's vocab_size is the count actually trained.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from ..errors import TokenizerError

TOKENIZER_FILE = "tokenizer.model"
TOKENIZER_CONFIG = {  # read by tinyslm.load_tokenizer (and transformers): no <s> before a prompt
    "add_bos_token": False, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
}  # fmt: skip
MIN_VOCAB = 300  # 3 special tokens + 256 byte pieces + a few dozen characters and merges
MAX_SENTENCES = 1_000_000  # lines sampled for training on a large corpus (sentencepiece keeps them in memory)


def train_tokenizer(documents: Iterable[str], vocab_size: int, out_dir: str | Path, *, seed: int = 0) -> Path:
    """Train on `documents` (each split into lines) and write out_dir/tokenizer.model + tokenizer_config.json.

    Written to a temporary folder and renamed, so out_dir is either complete or absent. Returns the
    tokenizer.model path.
    """
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < MIN_VOCAB:
        raise TokenizerError(f"vocab_size must be an integer >= {MIN_VOCAB} (256 byte pieces + specials), found {vocab_size!r}")
    if vocab_size >= 2**31:
        raise TokenizerError(f"vocab_size {vocab_size} is too large")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:  # sentencepiece's: 32 bits
        raise TokenizerError(f"seed must be an integer in 0..2^32-1, found {seed!r}")
    lines = (line for doc in documents for line in doc.split("\n") if line.strip())
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)  # the sample of lines drawn from a large corpus
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines, model_writer=model, model_type="bpe", vocab_size=vocab_size,
            hard_vocab_limit=False, byte_fallback=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, split_digits=True,
            allow_whitespace_only_pieces=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            input_sentence_size=MAX_SENTENCES, shuffle_input_sentence=True, num_threads=min(4, os.cpu_count() or 1),
            minloglevel=2,
        )  # fmt: skip
    except RuntimeError as exc:
        raise TokenizerError(f"sentencepiece could not train a {vocab_size}-piece tokenizer on this corpus: {exc}") from None
    return write_tokenizer(model.getvalue(), out_dir)


def write_tokenizer(model_bytes: bytes, out_dir: str | Path) -> Path:
    """out_dir/tokenizer.model + tokenizer_config.json, via a temporary folder renamed into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / TOKENIZER_FILE).write_bytes(model_bytes)
        (tmp / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
        if out_dir.exists():  # replacing an earlier tokenizer (the CLI's --out): swap file by file
            for name in (TOKENIZER_FILE, "tokenizer_config.json"):
                os.replace(tmp / name, out_dir / name)
            tmp.rmdir()
        else:
            try:
                os.rename(tmp, out_dir)
            except OSError:  # another process (a DDP rank) finished the same tokenizer first: keep theirs
                if not (out_dir / TOKENIZER_FILE).exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / TOKENIZER_FILE
