"""tinyslm.data: corpus reading, tokenizer training and caching, token streams, MQAR."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyslm.data import MQAR, Batches, DataError, eval_batches, generate_documents, iter_documents, prepare_data
from tinyslm.data import prepare as prepare_module
from tinyslm.data.corpus import corpus_files
from tinyslm.data.mqar import IGNORE
from tinyslm.errors import TinySLMError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A JSONL corpus of 400 generated documents (varied enough to train a tokenizer on)."""
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "docs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for doc in generate_documents(400, seed=7):
            f.write(json.dumps({"text": doc}) + "\n")
    return path


@pytest.fixture(scope="module")
def data(corpus, tmp_path_factory):
    return prepare_data(corpus, vocab_size=600, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


# ---------------------------------------------------------------------------------------------
# reading corpora


def test_reads_jsonl_text_and_folder(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "first doc"}\n\n{"text": "second\\ndoc", "id": 3}\n')
    (tmp_path / "b.txt").write_text("para one\nstill one\n\n\npara two\n")
    (tmp_path / "c.txt").write_text("x\n\ny\n<|endoftext|>\nz\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "skip.txt").write_text("never read")
    (tmp_path / "notes.md").write_text("not a corpus file")
    assert list(iter_documents(corpus_files(tmp_path / "a.jsonl"))) == ["first doc", "second\ndoc"]
    assert list(iter_documents(corpus_files(tmp_path / "b.txt"))) == ["para one\nstill one", "para two"]
    # a file with <|endoftext|> lines splits there only (blank lines stay inside documents)
    assert list(iter_documents(corpus_files(tmp_path / "c.txt"))) == ["x\n\ny", "z"]
    assert [p.name for p in corpus_files(tmp_path)] == ["a.jsonl", "b.txt", "c.txt"]
    assert len(list(iter_documents(corpus_files(tmp_path)))) == 6


def test_empty_corpus_is_one_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"text": "  "}\n')
    for source in ("empty.txt", "nothing", "blank.jsonl"):
        with pytest.raises(DataError, match="empty corpus") as info:
            prepare_data(tmp_path / source, cache_dir=tmp_path / "cache", progress=False)
        assert source in str(info.value) and "\n" not in str(info.value)
    assert not list((tmp_path / "cache").glob("tokens-*"))  # nothing half-written


def test_non_utf8_file_names_file_and_byte_offset(tmp_path):
    good = "caf\u00e9 au lait\n\nsecond paragraph\n".encode()
    path = tmp_path / "latin1.txt"
    path.write_bytes(good + b"third \xe9t\xe9\n")  # Latin-1 e-acute: not UTF-8
    with pytest.raises(DataError) as info:
        prepare_data(path, cache_dir=tmp_path / "cache", progress=False)
    message = str(info.value)
    assert str(path) in message and f"byte offset {len(good) + 6}" in message and "0xe9" in message
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_dir()] if (tmp_path / "cache").exists() else []
    assert not leftovers  # nothing half-written: no tokenizer, no token folder, no temporary folder


def test_jsonl_record_without_text_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text here", "id": 2}\n')
    with pytest.raises(DataError, match=r'bad.jsonl: line 2: expected an object with a "text" field, found keys \[\'body\', \'id\'\]'):
        list(iter_documents(corpus_files(path)))
    path.write_text('{"text": "fine"}\n{"text": 5}\n')
    with pytest.raises(DataError, match='line 2: "text" must be a string'):
        list(iter_documents(corpus_files(path)))
    path.write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        list(iter_documents(corpus_files(path)))


def test_missing_source_and_wrong_suffix(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        prepare_data(tmp_path / "nope.txt", progress=False)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported corpus file type '.csv'"):
        prepare_data(tmp_path / "data.csv", progress=False)


# ---------------------------------------------------------------------------------------------
# the embedded corpus


def test_generated_corpus_is_deterministic_and_self_consistent():
    docs = generate_documents(600, seed=3)
    assert docs == generate_documents(600, seed=3)
    assert docs != generate_documents(600, seed=4)
    sums = facts = 0
    for doc in docs:
        for x, op, y, z in re.findall(r"^(\d+) ([+x-]) (\d+) = (\d+)$", doc, flags=re.M):
            x, y, z = int(x), int(y), int(z)
            assert z == {"+": x + y, "-": x - y, "x": x * y}[op], doc
            sums += 1
        stated = dict(re.findall(r"^(\w+'s [\w ]+?) is (\w+)\.$", doc, flags=re.M))
        for key, value in re.findall(r"^Q: What is (\w+'s [\w ]+?)\? A: (\w+)\.$", doc, flags=re.M):
            assert stated[key] == value, doc  # every question is answered by a fact stated earlier
            facts += 1
        counts = [int(n) for n in re.findall(r"has (\d+) \w+\.", doc)]
        if counts:  # the story's last sentence repeats the running total
            assert int(re.search(r"had (\d+) \w+ and felt", doc).group(1)) == counts[-1]
    assert sums > 500 and facts > 300


def test_embedded_corpus_is_cached(tmp_path):
    first = prepare_data(None, cache_dir=tmp_path, progress=False)
    assert first.source == "embedded" and 1_000_000 < first.val_bytes / 0.05 < 4_000_000  # ~1-3 MB of text
    assert isinstance(first.train, np.memmap) and first.train.dtype == np.uint16
    again = prepare_data(None, cache_dir=tmp_path, progress=False)
    assert again.cache == first.cache and np.array_equal(again.val, first.val)


# ---------------------------------------------------------------------------------------------
# tokenizer, split and byte accounting


def test_val_bytes_equals_decoded_val_text(corpus, data):
    docs = list(iter_documents(corpus_files(corpus)))
    val = np.asarray(data.val)
    assert val[-1] == data.eos_id
    pieces = np.split(val, np.flatnonzero(val == data.eos_id) + 1)[:-1]  # one per document, each ending in eos
    texts = [data.tokenizer.decode(p[:-1].tolist()) for p in pieces]
    assert len(texts) == data.val_documents and data.train_documents + data.val_documents == len(docs)
    assert all(t in docs for t in texts)  # byte-exact round trip of every held-out document
    assert sum(len(t.encode("utf-8")) for t in texts) == data.val_bytes
    assert data.tokenizer.decode(val[val != data.eos_id].tolist()).encode("utf-8").__len__() == data.val_bytes
    assert data.bits_per_byte(2.0) == pytest.approx(2.0 * len(val) / (math.log(2) * data.val_bytes))


def test_split_is_fixed_by_seed(corpus, tmp_path):
    a = prepare_data(corpus, vocab_size=600, seed=1, cache_dir=tmp_path, progress=False)
    b = prepare_data(corpus, vocab_size=600, seed=1, cache_dir=tmp_path / "other", progress=False)
    c = prepare_data(corpus, vocab_size=600, seed=2, cache_dir=tmp_path, progress=False)
    assert np.array_equal(a.val, b.val) and np.array_equal(a.train, b.train)  # rebuilt from scratch: same bytes
    assert not np.array_equal(a.val, c.val)
    assert a.val_documents == 20  # 5% of 400 documents


def test_tokenizer_and_tokens_are_cached_and_reused(corpus, tmp_path, monkeypatch):
    first = prepare_data(corpus, vocab_size=600, cache_dir=tmp_path, progress=False)
    assert first.tokenizer_path.name == "tokenizer.model" and first.tokenizer_path.is_file()
    assert {p.name for p in first.tokenizer_files} == {"tokenizer.model", "tokenizer_config.json"}

    def refuse(*args, **kwargs):
        raise AssertionError("retrained or retokenized although the cache holds the result")

    monkeypatch.setattr(prepare_module, "train_tokenizer", refuse)
    monkeypatch.setattr(prepare_module, "_tokenize", refuse)
    again = prepare_data(corpus, vocab_size=600, cache_dir=tmp_path, progress=False)
    assert again.tokenizer_path == first.tokenizer_path and np.array_equal(again.train, first.train)
    with pytest.raises(AssertionError, match="retrained"):  # a different vocabulary is a different tokenizer
        prepare_data(corpus, vocab_size=700, cache_dir=tmp_path, progress=False)


def test_cache_beside_the_data_by_default(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in generate_documents(60, seed=1)))
    got = prepare_data(path, vocab_size=400, progress=False)
    assert got.cache.parent == tmp_path / ".tinyslm-cache"
    assert not [p for p in (tmp_path / ".tinyslm-cache").iterdir() if ".tmp-" in p.name]


@pytest.mark.skipif(not (SHARED / "llama2-tokenizer.model").exists(), reason="no Llama-2 tokenizer.model here")
def test_user_tokenizer_model(corpus, tmp_path):
    got = prepare_data(corpus, tokenizer=SHARED / "llama2-tokenizer.model", cache_dir=tmp_path, progress=False)
    assert got.vocab_size == 32000 and got.eos_id == 2 and got.train.dtype == np.uint16
    assert got.tokenizer_path == SHARED / "llama2-tokenizer.model"
    config = json.loads(got.tokenizer_files[1].read_text())  # copied into checkpoints: no BOS at generation
    assert got.tokenizer_files[1].name == "tokenizer_config.json" and config["add_bos_token"] is False
    assert 1 not in set(np.asarray(got.val).tolist())  # no BOS inserted between documents
    first_doc = np.asarray(got.val)[: int(np.argmax(np.asarray(got.val) == 2))]
    assert got.tokenizer.decode(first_doc.tolist()) in list(iter_documents(corpus_files(corpus)))


@pytest.mark.parametrize("given", ["file", "folder"])
def test_a_gguf_tokenizer_is_written_out_for_the_checkpoint(corpus, tmp_path, given):
    """A GGUF holds its tokenizer in metadata: training on it writes tokenizer files (never the GGUF itself) that a
    trained checkpoint carries, and the tokens are the GGUF tokenizer's."""
    gguf = SHARED / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        pytest.skip(f"{gguf.name} not in ../shared/data")
    from tinyslm.gguf import gguf_tokenizer

    if given == "folder":
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / gguf.name).symlink_to(gguf)
    got = prepare_data(corpus, tokenizer=gguf if given == "file" else tmp_path / "model", cache_dir=tmp_path / "cache",
                       progress=False)  # fmt: skip
    assert [f.name for f in got.tokenizer_files] == ["tokenizer.json", "tokenizer_config.json"]
    assert all(f.is_file() and f.stat().st_size < 10 << 20 for f in got.tokenizer_files)
    val = np.asarray(got.val).tolist()
    first_doc = val[: val.index(got.eos_id)]
    text = gguf_tokenizer(gguf).decode(first_doc)
    assert text in list(iter_documents(corpus_files(corpus))) and gguf_tokenizer(gguf).encode(text) == first_doc


def test_tokenizer_cli_writes_a_tokenizer(corpus, tmp_path, capsys):
    from tinyslm.data import command
    from tinyslm.tokenizer import load_tokenizer

    parser = argparse.ArgumentParser(prog="tinyslm")
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tokenizer", "train", "--data", str(corpus), "--vocab-size", "500", "--out", str(tmp_path / "tok")])
    assert args.run(args) == 0
    assert "pieces" in capsys.readouterr().out
    tok = load_tokenizer(tmp_path / "tok")
    text = "Mia has 12 apples.\n  Twice  spaced, caf\u00e9 \U0001f600"
    assert tok.decode(tok.encode(text)) == text and tok.encode(text)[0] != tok.bos_id  # byte-exact, no BOS
    args = parser.parse_args(["tokenizer", "train", "--data", str(corpus), "--vocab-size", "10", "--out", str(tmp_path / "t2")])
    with pytest.raises(TinySLMError, match="vocab_size must be an integer >= 300"):
        args.run(args)
    assert not (tmp_path / "t2").exists()


# ---------------------------------------------------------------------------------------------
# batches


def test_batches_are_deterministic_for_a_seed(data):
    a, b, c = (Batches(data.train, 16, 8, seed=s) for s in (3, 3, 4))
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = next(a), next(b), next(c)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)
        assert xa.shape == (8, 16) and xa.dtype == torch.int64
        assert torch.equal(xa[:, 1:], ya[:, :-1])  # targets are the inputs shifted by one


def test_rank_slices_concatenate_to_the_global_batch(data):
    whole = Batches(data.train, 16, 12, seed=5)
    for world in (2, 3, 4):
        ranks = [Batches(data.train, 16, 12, seed=5, rank=r, world_size=world) for r in range(world)]
        whole = Batches(data.train, 16, 12, seed=5)
        for _ in range(3):
            x, y = next(whole)
            parts = [next(r) for r in ranks]
            assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(DataError, match="not divisible by world_size 5"):
        Batches(data.train, 16, 12, seed=5, world_size=5)


def test_state_dict_resumes_exactly(data):
    straight = Batches(data.train, 16, 4, seed=9)
    expected = [next(straight) for _ in range(6)]
    first = Batches(data.train, 16, 4, seed=9)
    for _ in range(3):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # plain data: survives JSON / torch.save
    resumed = Batches(data.train, 16, 4, seed=9)
    resumed.load_state_dict(state)
    for x, y in expected[3:]:
        rx, ry = next(resumed)
        assert torch.equal(rx, x) and torch.equal(ry, y)
    other = Batches(data.train, 32, 4, seed=9)
    with pytest.raises(DataError, match="seq_len: saved 16, now 32"):
        other.load_state_dict(state)


def test_eval_batches_cover_consecutive_windows(data):
    t, val = 16, np.asarray(data.val)
    got = list(eval_batches(data.val, t, 5))
    inputs = torch.cat([x for x, _ in got])
    targets = torch.cat([y for _, y in got])
    n = (len(val) - 1) // t
    assert inputs.shape == (n, t) and all(x.shape[0] == 5 for x, _ in got[:-1])
    assert np.array_equal(inputs.flatten().numpy(), val[: n * t]) and np.array_equal(targets.flatten().numpy(), val[1 : n * t + 1])
    assert len(list(eval_batches(data.val, t, 5, max_batches=2))) == 2
    with pytest.raises(DataError, match="fewer than seq_len"):
        list(eval_batches(data.val[:10], 16, 2))


def test_short_stream_is_refused(data):
    with pytest.raises(DataError, match="a window of seq_len \\+ 1 = 101"):
        Batches(data.train[:50], 100, 2, seed=0)


# ---------------------------------------------------------------------------------------------
# MQAR


def _bindings(inputs: np.ndarray, n_pairs: int) -> dict[int, int]:
    return {int(inputs[2 * i]): int(inputs[2 * i + 1]) for i in range(n_pairs)}


def test_mqar_targets_mask_only_recalled_values():
    task = MQAR(vocab_size=64, seq_len=48, n_pairs=6)
    inputs, targets = task.examples(np.random.default_rng(0), 50)
    assert inputs.shape == targets.shape == (50, 48)
    for x, y in zip(inputs, targets):
        binding = _bindings(x, 6)
        assert len(binding) == 6 and all(1 <= k < 32 <= v < 64 for k, v in binding.items())
        answers = np.flatnonzero(y != IGNORE)
        assert len(answers) == 6  # every key asked exactly once
        assert sorted(int(x[p]) for p in answers) == sorted(binding)
        for p in answers:  # the target after a query key is the value bound to it earlier
            assert p >= 12 and y[p] == binding[int(x[p])]
        assert set(x[12:].tolist()) <= set(binding) | {0}


def test_mqar_dense_queries_ask_every_key_and_recall_only():
    task = MQAR(vocab_size=32, seq_len=32, n_pairs=4, n_queries=12)
    assert task.max_queries == 12
    inputs, targets = task.examples(np.random.default_rng(1), 40)
    for x, y in zip(inputs, targets):
        binding = _bindings(x, 4)
        answers = np.flatnonzero(y != IGNORE)
        assert len(answers) == 12 and set(int(x[p]) for p in answers) == set(binding)  # every key at least once
        assert all(y[p] == binding[int(x[p])] for p in answers)
        assert not set(x[8:].tolist()) & set(binding.values())  # values never reappear: each answer is recalled
    with pytest.raises(DataError, match="n_queries must be an integer from n_pairs \\(4\\) to the 12 query slots"):
        MQAR(vocab_size=32, seq_len=32, n_pairs=4, n_queries=13)


def test_mqar_stream_protocol():
    task = MQAR(vocab_size=64, seq_len=32, n_pairs=4)
    whole, halves = task.batches(8, seed=1), [task.batches(8, seed=1, rank=r, world_size=2) for r in range(2)]
    x, y = next(whole)
    assert torch.equal(torch.cat([next(h)[0] for h in halves]), x)
    state = whole.state_dict()
    after = next(whole)
    again = task.batches(8, seed=1)
    again.load_state_dict(state)
    assert torch.equal(next(again)[1], after[1])
    with pytest.raises(DataError, match="n_pairs"):
        task2 = MQAR(vocab_size=64, seq_len=32, n_pairs=3)
        task2.batches(8, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match="seq_len must be at least"):
        MQAR(vocab_size=64, seq_len=10, n_pairs=4)


class _Oracle(torch.nn.Module):
    """Logits from reading the context: perfect recall, or a random guess among the context's values."""

    def __init__(self, task: MQAR, recall: bool):
        super().__init__()
        self.task, self.recall = task, recall
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        logits = torch.zeros(b, t, self.task.vocab_size)
        for i in range(b):
            binding = _bindings(ids[i].numpy(), self.task.n_pairs)
            values = list(binding.values())
            for p in range(t):
                key = int(ids[i, p])
                if p >= 2 * self.task.n_pairs and key in binding:
                    guess = binding[key] if self.recall else values[int(torch.randint(len(values), (1,), generator=self.gen))]
                    logits[i, p, guess] = 1.0
        return logits


def test_mqar_accuracy_and_chance_level():
    task = MQAR(vocab_size=64, seq_len=40, n_pairs=8)
    assert task.chance == 1 / 8
    assert task.accuracy(_Oracle(task, recall=True), n_examples=64) == 1.0
    guess = task.accuracy(_Oracle(task, recall=False), n_examples=256)
    assert abs(guess - task.chance) < 0.04  # 2048 answers: the standard error is 0.007
    untrained = torch.nn.Linear(1, 1)
    untrained.forward = lambda ids: torch.zeros(*ids.shape, 64)  # argmax 0: never a value
    assert task.accuracy(untrained, n_examples=16) == 0.0


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70])
def test_a_tokenizer_seed_sentencepiece_cannot_take_is_one_clear_line(tmp_path, seed, capsys):
    from tinyslm.cli import main

    (tmp_path / "c.txt").write_text("hello world\n" * 10)
    assert main(["tokenizer", "train", "--data", str(tmp_path / "c.txt"), "--out", str(tmp_path / "tk"),
                 "--vocab-size", "300", "--seed", str(seed)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err == f"error: seed must be an integer in 0..2^32-1, found {seed}"
    assert not (tmp_path / "tk").exists()
