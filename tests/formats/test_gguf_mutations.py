"""Hostile GGUF metadata, drawn by hypothesis: a loaded model or one clear refusal, never a crash or a hang.

A small real GGUF (a random Llama with its byte-level BPE tokenizer, written by `tinyslm convert`) is rewritten
with one metadata value replaced by a value hypothesis draws, of any GGUF type (a string where an integer goes,
NaN, a negative id, a huge or empty array, nested arrays...), or one key removed. `tinyslm inspect` and
`tinyslm generate` must then exit 0 or 2 (a refusal in one line), within the mutation tests' time and memory
guards (tests/formats/test_mutations.py).
"""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

gguf = pytest.importorskip("gguf")

from hf_models import write_hf_checkpoint  # noqa: E402
from hostile import EXAMPLES, guarded, run_cli  # noqa: E402

KEYS = ["general.architecture", "llama.context_length", "llama.embedding_length", "llama.block_count",
        "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
        "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size",
        "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token", "general.name", "general.alignment"]  # fmt: skip
T = gguf.GGUFValueType


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from tinyslm.gguf import command

    folder = tmp_path_factory.mktemp("gguf-base") / "hf"
    write_hf_checkpoint(folder, "LlamaConfig", vocab_size=300, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=64)  # fmt: skip
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # byte-level BPE: the 256 byte symbols, then 44 more
    vocab = {symbol: i for i, symbol in enumerate(alphabet)} | {f"t{i}": 256 + i for i in range(44)}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.save(str(folder / "tokenizer.json"))
    path = folder.parent / "base.gguf"
    import argparse

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["convert", str(folder), str(path), "--type", "f32"])
    assert args.run(args) == 0
    return path


def rewrite(src: Path, dst: Path, key: str, value, **more) -> None:
    """dst: src with metadata `key` set to `value` (a (GGUFValueType, python value[, sub type]) triple) or removed
    (value None), and each of `more` ({key with "__" for ".": triple}) set too; every other field and tensor as it was."""
    changes = {key: value} | {k.replace("__", "."): v for k, v in more.items()}
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), arch=None)
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name in changes:
            continue
        vtype = T(field.types[0])
        sub = T(field.types[-1]) if vtype == T.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for name, value in changes.items():
        if value is not None:
            writer.add_key_value(name, value[1], value[0], sub_type=value[2] if len(value) > 2 else None)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data), raw_shape=list(reversed(t.shape.tolist())), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def values():
    ints = st.integers(-(2**31), 2**31 - 1)
    return st.one_of(
        st.tuples(st.just(T.STRING), st.text(max_size=20)),
        st.tuples(st.just(T.INT32), ints),
        st.tuples(st.just(T.UINT64), st.integers(0, 2**64 - 1)),
        st.tuples(st.just(T.FLOAT32), st.floats(width=32, allow_nan=True, allow_infinity=True)),
        st.tuples(st.just(T.BOOL), st.booleans()),
        st.tuples(st.just(T.ARRAY), st.lists(ints, max_size=5), st.just(T.INT32)),
        st.tuples(st.just(T.ARRAY), st.lists(st.text(max_size=5), max_size=5), st.just(T.STRING)),
        st.just(None),  # the key removed
    )


@settings(max_examples=EXAMPLES, deadline=None)
@given(key=st.sampled_from(KEYS), value=values())
def test_mutated_gguf_metadata_is_loaded_or_refused_in_one_line(base, tmp_path_factory, key, value):
    path = tmp_path_factory.mktemp("mutated") / "m.gguf"
    try:
        rewrite(base, path, key, value)
    except Exception:  # noqa: BLE001  (the gguf package cannot write this value: nothing to test)
        return
    with guarded():
        for argv in (["inspect", str(path)], ["generate", str(path), "--ids", "1,2,3", "--max-new-tokens", "2"]):
            status, err = run_cli(*argv)
            assert status in (0, 2), f"tinyslm {argv[0]} with {key} = {value!r}: exit status {status}: {err}"
            assert len(err.strip().splitlines()) <= 1 or status == 0, err


def _tokens(base: Path) -> list[str]:
    return gguf.GGUFReader(str(base)).fields["tokenizer.ggml.tokens"].contents()


STRINGS = (T.ARRAY, None, T.STRING)


@pytest.mark.parametrize("merges, named", [
    (["t0 nope"], "'nope'"),  # one merge, one unknown half
    (["Ġ t0", "zz Ġ"], "'zz'"),  # the first half unknown, after a good merge
    pytest.param([f"t{i % 44} t{(i * 7) % 44}" for i in range(200_000)] + ["t1 t4444"], "'t4444'",
                 marks=pytest.mark.slow),  # 200k merges, the last bad
])  # fmt: skip
def test_merges_naming_unknown_tokens_are_refused_naming_the_merge(base, tmp_path, merges, named):
    path = tmp_path / "m.gguf"
    rewrite(base, path, "tokenizer.ggml.merges", (T.ARRAY, merges, T.STRING))
    with guarded():
        status, err = run_cli("generate", str(path), "--prompt", "hi", "--max-new-tokens", "1")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert f"tokenizer.ggml.merges[{len(merges) - 1}] names {named}" in err


@pytest.mark.parametrize("bos", ["<s> x", "<|begin of text|>", "a:0", "$A", "\t"])
def test_a_bos_token_of_any_spelling_is_prepended(base, tmp_path, bos):
    from tinyslm.gguf.tokenizer import gguf_tokenizer

    tokens = _tokens(base)
    tokens[300 - 1] = bos
    path = tmp_path / "m.gguf"
    rewrite(base, path, "tokenizer.ggml.tokens", (T.ARRAY, tokens, T.STRING),
            tokenizer__ggml__bos_token_id=(T.UINT32, 299), tokenizer__ggml__add_bos_token=(T.BOOL, True))  # fmt: skip
    ids = gguf_tokenizer(path).encode("t1t2")
    assert ids[0] == 299 and 299 not in ids[1:]
    with guarded():
        status, err = run_cli("generate", str(path), "--prompt", "t1", "--max-new-tokens", "1")
    assert status == 0, err


@pytest.mark.parametrize("key, value, message", [
    ("llama.block_count", (T.BOOL, True), "llama.block_count must be an integer, found True"),
    ("llama.block_count", (T.FLOAT32, 2.0), "llama.block_count must be an integer, found 2.0"),
    ("llama.block_count", (T.STRING, "2"), "llama.block_count must be an integer, found '2'"),
    ("llama.rope.freq_base", (T.BOOL, False), "llama.rope.freq_base must be a finite number, found False"),
    ("llama.rope.freq_base", (T.FLOAT32, float("inf")), "llama.rope.freq_base must be a finite number, found inf"),
    ("llama.attention.layer_norm_rms_epsilon", (T.FLOAT32, float("nan")), "must be a finite number, found nan"),
    ("llama.rope.scaling.type", (T.INT32, 1), "llama.rope.scaling.type must be a string, found 1"),
    ("llama.rope.scaling.type", (T.ARRAY, ["linear"], T.STRING), "must be a string, found ['linear']"),
    ("llama.rope.scaling.factor", (T.STRING, "2"), "rope.scaling.factor must be a finite number, found '2'"),
    ("tokenizer.ggml.add_bos_token", (T.STRING, "false"), "add_bos_token must be true or false, found 'false'"),
    ("tokenizer.ggml.add_bos_token", (T.INT32, 0), "add_bos_token must be true or false, found 0"),
])  # fmt: skip
def test_metadata_of_the_wrong_type_is_refused_naming_the_key(base, tmp_path, key, value, message):
    """No coercion of GGUF metadata: int(True), float("2"), bool("false") would each load a different model."""
    more = {"llama__rope__scaling__type": (T.STRING, "linear")} if key == "llama.rope.scaling.factor" else {}
    path = tmp_path / "m.gguf"
    rewrite(base, path, key, value, **more)
    with guarded():
        status, err = run_cli("generate", str(path), "--prompt", "t1", "--max-new-tokens", "1")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err and str(path) in err
