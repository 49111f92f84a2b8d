"""tokenizer.py: a checkpoint folder's tokenizer.model (sentencepiece) or tokenizer.json (HF tokenizers).

Both kinds are trained here on a small generated corpus (nothing downloaded). The real Llama-2
tokenizer is used when ../shared/data/llama2-tokenizer.model is present beside the repository
and skipped otherwise (a user's clone does not have that folder).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import tinyslm
from tinyslm.errors import TokenizerError
from tinyslm.tokenizer import JSONTokenizer, SentencePieceTokenizer, load_tokenizer

LLAMA2_TOKENIZER = Path(__file__).resolve().parents[3] / "shared/data/llama2-tokenizer.model"
LLAMA2_TEXT = "Once upon a time, there was a little girl."
LLAMA2_IDS = [9038, 2501, 263, 931, 29892, 727, 471, 263, 2217, 7826, 29889]  # the Llama-2 tokenizer (sentencepiece), no BOS

WORDS = ("once upon a time there was little girl who lived in the forest with her cat and dog they played "
         "every day sun was warm birds sang she found big red ball under tree").split()  # fmt: skip
TEXTS = ["Once upon a time there was a little girl.", "the cat and the dog played every day",
         "She found a big red ball."]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "." for _ in range(n)]


def train_sentencepiece(folder: Path, vocab_size: int = 128, model_type: str = "bpe") -> Path:
    """Train a small sentencepiece model and store it as folder/tokenizer.model (unk 0, bos 1, eos 2)."""
    spm = pytest.importorskip("sentencepiece")
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(corpus()) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "sp"), vocab_size=vocab_size, model_type=model_type,
        character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    (folder / "sp.model").rename(folder / "tokenizer.model")
    (folder / "sp.vocab").unlink()
    text.unlink()
    return folder / "tokenizer.model"


def train_bpe_json(folder: Path, vocab_size: int = 320) -> Path:
    """Train a byte-level BPE with <s> / </s>, prepending <s> like Llama-3 / SmolLM tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(corpus(), trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


# ----------------------------------------------------------------------------------------------
# sentencepiece (tokenizer.model)


@pytest.fixture(scope="module")
def sp_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sp")
    train_sentencepiece(folder)
    return folder


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_decode_inverts_encode(sp_folder, text):
    tok = load_tokenizer(sp_folder)
    assert isinstance(tok, SentencePieceTokenizer)
    ids = tok.encode(text, add_special_tokens=False)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_sentencepiece_prepends_bos_by_default_and_knows_eos(sp_folder):
    tok = load_tokenizer(sp_folder)
    assert (tok.bos_id, tok.eos_id) == (1, 2)  # sentencepiece's defaults: unk 0, bos 1, eos 2
    plain = tok.encode(TEXTS[0], add_special_tokens=False)
    assert tok.encode(TEXTS[0]) == [1] + plain
    assert tok.decode([1] + plain) == TEXTS[0]  # bos is a control piece: decodes to nothing


def test_sentencepiece_add_bos_token_false_in_tokenizer_config_is_obeyed(sp_folder, tmp_path):
    (tmp_path / "tokenizer.model").write_bytes((sp_folder / "tokenizer.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    tok = load_tokenizer(tmp_path)
    assert tok.encode(TEXTS[0]) == tok.encode(TEXTS[0], add_special_tokens=False)


def test_unigram_sentencepiece_round_trips(tmp_path):
    tok = load_tokenizer(train_sentencepiece(tmp_path, vocab_size=100, model_type="unigram"))
    assert tok.decode(tok.encode(TEXTS[1], add_special_tokens=False)) == TEXTS[1]


def test_tokenizer_model_file_path_loads_directly(sp_folder):
    tok = load_tokenizer(sp_folder / "tokenizer.model")
    assert tok.decode(tok.encode(TEXTS[0], add_special_tokens=False)) == TEXTS[0]


# ----------------------------------------------------------------------------------------------
# HF tokenizers (tokenizer.json + tokenizer_config.json)


@pytest.fixture(scope="module")
def json_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hf-tok")
    train_bpe_json(folder)
    # the older form of a special token: a dict with "content"
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}}))
    return folder


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_json_decode_inverts_encode(json_folder, text):
    tok = load_tokenizer(json_folder)
    assert isinstance(tok, JSONTokenizer)
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) < len(text.encode())  # merges were learned, not just bytes
    assert tok.decode(ids) == text


def test_tokenizer_json_bos_and_eos_ids_come_from_tokenizer_config(json_folder):
    tok = load_tokenizer(json_folder)
    assert (tok.bos_id, tok.eos_id) == (0, 1)  # "<s>" and "</s>" were the trainer's first special tokens
    assert tok.encode(TEXTS[0]) == [0] + tok.encode(TEXTS[0], add_special_tokens=False)  # the post-processor


def test_tokenizer_json_is_preferred_over_tokenizer_model(json_folder, sp_folder, tmp_path):
    for src in (json_folder / "tokenizer.json", json_folder / "tokenizer_config.json", sp_folder / "tokenizer.model"):
        (tmp_path / src.name).write_bytes(src.read_bytes())
    assert isinstance(load_tokenizer(tmp_path), JSONTokenizer)


def test_word_level_tokenizer_json_without_config_has_no_bos_or_eos(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(sorted(set(WORDS)))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path)
    assert loaded.bos_id is None and loaded.eos_id is None
    ids = loaded.encode("the cat and the dog")
    assert ids == [vocab[w] for w in "the cat and the dog".split()]
    assert loaded.decode(ids) == "the cat and the dog"


# ----------------------------------------------------------------------------------------------
# no usable tokenizer


def test_folder_without_tokenizer_is_a_tokenizer_error(tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer"):
        load_tokenizer(tmp_path)


def test_missing_path_is_an_error_not_the_parents_tokenizer(sp_folder):
    """A typo in the path must not silently load a tokenizer that happens to sit one folder up."""
    with pytest.raises(TokenizerError) as err:
        load_tokenizer(sp_folder / "no-such-model")
    assert "no-such-model" in str(err.value)


def test_corrupt_tokenizer_model_names_the_file(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"not a protobuf" * 10)
    with pytest.raises(TokenizerError, match="tokenizer.model"):
        load_tokenizer(tmp_path)


def test_corrupt_tokenizer_json_names_the_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_invalid_tokenizer_config_json_names_the_file(sp_folder, tmp_path):
    (tmp_path / "tokenizer.model").write_bytes((sp_folder / "tokenizer.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{bos_token: <s>")
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        load_tokenizer(tmp_path)


# ----------------------------------------------------------------------------------------------
# the real Llama-2 tokenizer (TinyLlama ships it), when the shared data folder is there


@pytest.fixture(scope="module")
def llama2():
    if not LLAMA2_TOKENIZER.is_file():
        pytest.skip(f"{LLAMA2_TOKENIZER} not present (optional test data)")
    return load_tokenizer(LLAMA2_TOKENIZER)


def test_llama2_tokenizer_encodes_the_published_ids(llama2):
    assert llama2.encode(LLAMA2_TEXT, add_special_tokens=False) == LLAMA2_IDS
    assert llama2.encode(LLAMA2_TEXT) == [1] + LLAMA2_IDS  # bos prepended by default
    assert (llama2.bos_id, llama2.eos_id, llama2.vocab_size) == (1, 2, 32000)


def test_control_pieces_in_the_text_are_their_tokens_as_a_chat_template_writes_them(sp_folder):
    """`<s>` and `</s>` written by a chat template are the BOS and EOS tokens (sentencepiece alone spells them out
    character by character); the text between them is encoded as text, each stretch on its own."""
    tok = load_tokenizer(sp_folder)
    text = "<s>[INST] hello [/INST] world </s><s>[INST] again"
    ids = tok.encode(text, add_special_tokens=False)
    plain = tok.sp.encode
    assert ids == [1, *plain("[INST] hello [/INST] world "), 2, 1, *plain("[INST] again")]
    assert tok.encode(text) == [1, *ids]  # add_bos: one more in front, as before
    assert tok.encode("no special pieces here") == [1, *plain("no special pieces here")]


def test_llama2_chat_layout_encodes_as_meta_writes_it(llama2):
    # Meta's chat format: BOS, then "[INST] {prompt} [/INST]" encoded as text (llama/generation.py)
    assert llama2.encode("<s>[INST] Hi [/INST]", add_special_tokens=False) == [1, *llama2.sp.encode("[INST] Hi [/INST]")]


def test_llama2_tokenizer_decodes_the_published_ids_back(llama2):
    assert llama2.decode(LLAMA2_IDS) == LLAMA2_TEXT
    assert llama2.decode([1] + LLAMA2_IDS + [2]) == LLAMA2_TEXT


# --- booleans from files are booleans ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "true", "0", 0, 1, 1.0, [], {"x": 1}])
def test_add_bos_token_that_is_not_a_boolean_is_refused_naming_the_file(tmp_path, value):
    # Python's bool("false") is True: read as a truthy value, "false" prepended BOS
    from tinyslm.files import file_bool

    with pytest.raises(TokenizerError, match=r"tokenizer_config\.json: add_bos_token must be true or false, found"):
        file_bool(value, True, str(tmp_path / "tokenizer_config.json"), "add_bos_token", TokenizerError)
    assert file_bool(None, True, "f", "k") is True and file_bool(False, True, "f", "k") is False


def test_a_tokenizer_config_with_a_string_add_bos_token_is_one_clear_error(tmp_path):
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "llama2-tokenizer.model"
    if not shared.is_file():
        pytest.skip("the Llama-2 tokenizer is not in ../shared/data")
    import shutil

    shutil.copy(shared, tmp_path / "tokenizer.model")
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": "false"}')
    with pytest.raises(TokenizerError, match="add_bos_token must be true or false, found 'false'"):
        tinyslm.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": false}')
    assert tinyslm.load_tokenizer(tmp_path).encode("Once upon a time")[0] == 9038  # no BOS (1) in front


@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling-link"])
@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer.model"])
def test_a_tokenizer_file_that_is_not_a_file_is_named_for_what_it_is(tmp_path, kind, name):
    import os

    target = tmp_path / name
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(tmp_path / "gone")
    expected = {"fifo": "is not a regular file \\(a FIFO", "folder": "is a folder, expected a file",
                "dangling-link": "no such file"}[kind]  # fmt: skip
    with pytest.raises(TokenizerError, match=f"{name}: {expected}"):
        load_tokenizer(tmp_path)
