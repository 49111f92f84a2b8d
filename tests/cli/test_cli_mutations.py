"""Hostile command-line options, drawn by hypothesis: a run that ends, or one clear refusal, never a crash or a hang.

For each command a user runs on a model (inspect, generate, chat, convert, train), hypothesis draws a set of its options
from the parser itself (so a new option is covered the day it is added), each with a value of the wrong kind or at
an edge: empty, negative, zero, NaN, 1e308, a 40-digit integer, a lone surrogate, a terminal escape, a path that is
a folder or missing. `tinyslm` must then exit 0, or 2 with one line `error: ...` (argparse's own refusals print its
usage line above it), within the mutation tests' time and memory guards (tests/formats/test_mutations.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from unittest import mock

import pytest
from hf_models import write_hf_checkpoint
from hostile import EXAMPLES, guarded, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyslm.cli import build_parser

VALUES = ["", "-1", "0", "1", "2", "3.5", "nan", "inf", "-inf", "1e308", "1" + "0" * 40, "auto", "x", "\udcff",
          "\x1b]0;title\x07", "1,2", ",", "-", "a" * 300]  # fmt: skip
# options whose size is the size of the work: drawn from small and broken values only (a 10^40-step run is a
# request to run forever, not hostile input)
SIZES = {"--steps", "--batch-size", "--seq-len", "--grad-accum", "--eval-batches", "--eval-every", "--vocab-size",
         "--max-new-tokens", "--warmup-steps", "--save-every", "--keep", "--context"}  # fmt: skip
SMALL = ["", "-1", "0", "1", "2", "3.5", "nan", "x", "1,2"]
SKIP = {"-h", "--help", "--threads", "--device", "--fsdp", "--resume"}  # --threads: the suite's; --fsdp: torchrun's
# put before the drawn options (argparse keeps the last value): a run that gets past its options is small
PINNED = {"generate": ["--max-new-tokens", "2"], "chat": ["--max-new-tokens", "2"],
          "train": ["--steps", "2", "--batch-size", "2", "--seq-len", "16", "--no-progress", "--eval-batches", "1"]}


def options(command: str) -> list[argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return [a for a in sub.choices[command]._actions if a.option_strings and a.option_strings[-1] not in SKIP]  # noqa: SLF001


def drawn_option(action: argparse.Action, paths: list[str]):
    name = action.option_strings[-1]
    if action.nargs == 0:
        return st.just([name])
    hostile = st.sampled_from(SMALL if name in SIZES else VALUES + paths)
    if action.choices:  # mostly valid: the run goes on to use it with the hostile ones
        valid = st.sampled_from(list(action.choices))
    elif action.type in (int, float):
        valid = st.integers(-1, 4).map(str)
    else:
        valid = st.sampled_from(paths + ["1,2,3", "hello"])
    return st.one_of(valid, valid, hostile).map(lambda value: [name, value])  # two in three valid


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    root = tmp_path_factory.mktemp("cli-mutations")
    folder = root / "hf"
    write_hf_checkpoint(folder, "LlamaConfig", vocab_size=300, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=32)  # fmt: skip
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(alphabet)} | {f"t{i}": 256 + i for i in range(44)},
                               merges=[]))  # fmt: skip
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.save(str(folder / "tokenizer.json"))
    gguf = root / "m.gguf"
    assert run_cli("convert", str(folder), str(gguf), "--type", "q8_0")[0] == 0
    assert run_cli("generate", str(gguf), "--ids", "1", "--max-new-tokens", "1")[0] == 0  # the kernels built, unguarded
    corpus = root / "corpus.txt"
    corpus.write_text("once upon a time there was a little model that read its options carefully\n\n" * 40)
    config = root / "tiny.toml"
    config.write_text('name = "tiny"\nfamily = "llama"\nvocab_size = 300\ndim = 32\nn_layers = 1\nn_heads = 4\n'
                      'n_kv_heads = 2\nffn_dim = 64\nmax_seq_len = 32\n')  # fmt: skip
    template = root / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:")
    return {"folder": str(folder), "gguf": str(gguf), "corpus": str(corpus), "config": str(config), "root": str(root),
            "missing": str(root / "no-such-file"), "tokenizer": str(folder / "tokenizer.json"),
            "template": str(template)}  # fmt: skip


def positionals(command: str, paths: dict[str, str]) -> st.SearchStrategy[list[str]]:
    model = st.sampled_from([paths["folder"], paths["gguf"], paths["missing"], paths["root"], paths["corpus"]])
    if command in ("inspect", "generate", "chat"):
        return model.map(lambda m: [m])
    if command == "convert":
        return model.map(lambda m: [m, "OUT.gguf" if not m.endswith(".gguf") else "OUT"])
    return st.sampled_from([paths["config"], paths["folder"], paths["missing"]]).map(lambda c: [c])


@pytest.mark.parametrize("command", ["inspect", "generate", "chat", "convert", "train"])
def test_hostile_options_end_in_a_run_or_one_line_refusal(paths, tmp_path_factory, command):
    path_values = [paths["missing"], paths["root"], paths["corpus"], paths["tokenizer"]]
    drawn = st.lists(st.sampled_from(options(command)), max_size=4, unique_by=lambda a: a.dest).flatmap(
        lambda actions: st.tuples(*[drawn_option(a, path_values) for a in actions])
    )

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(drawn=drawn, positional=positionals(command, paths))
    def check(drawn, positional):
        out = tmp_path_factory.mktemp("out")
        positional = [str(out / p) if p.startswith("OUT") else p for p in positional]
        extra = ["--out", str(out / "run")] if command == "train" and not any(o[0] == "--out" for o in drawn) else []
        argv = [command, *positional, *PINNED.get(command, []), *[part for option in drawn for part in option], *extra]
        if command == "train" and not any(o[0] == "--data" for o in drawn):
            argv += ["--data", paths["corpus"]]
        if command == "generate" and not any(o[0] in ("--ids", "--prompt", "--chat") for o in drawn):
            argv += ["--ids", "1,2"]
        if command == "chat" and not any(o[0] == "--template" for o in drawn):
            argv += ["--template", paths["template"]]  # (the tiny checkpoint has none of its own)
        stdin = io.TextIOWrapper(io.BytesIO(b"hello\n/system be brief\n\xff\n/reset\nhello again\n"))
        with guarded(), contextlib.chdir(out), mock.patch.object(sys, "stdin", stdin):  # (relative paths land in out)
            status, err = run_cli(*argv)
        assert status in (0, 2), f"tinyslm {argv!r}: exit status {status}: {err}"
        assert status == 0 or len(err.strip().splitlines()) == 1, f"tinyslm {argv!r}: {err}"

    check()
