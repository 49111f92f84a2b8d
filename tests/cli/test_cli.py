"""cli.py: the `tinyslm` command (inspect, generate, parity, bench, demo), run in-process via `main([...])`.

The contract checked here: figures and tokens a user can trust (equal to independent numbers
and to transformers' greedy output), and failures that print exactly one line `error: ...` to
stderr, never a traceback, with a non-zero exit status. One test runs the real executable
(`python -m tinyslm.cli`) to prove the entry point works outside pytest.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hf_models import DEEPSEEK_V2_LITE_TINY, hf_greedy, write_hf_checkpoint
from safetensors.torch import load_file, save_file

import tinyslm
import tinyslm.cli as cli
import tinyslm.tools.command
import tinyslm.tools.parity
from tinyslm.cli import main
from tinyslm.config import ModelConfig
from tinyslm.layers.mla import MLAttention
from tinyslm.model import CausalLM
from tinyslm.tools.stats import model_stats
from tinyslm.tools.variants import derive

REPO = Path(__file__).resolve().parents[2]
SMOLLM = REPO / "configs/smollm-135m.toml"  # 30 layers, 9 query / 3 KV heads of 64
SMOLLM_PARAMETERS = 134_515_008
VOCAB = 128  # model vocabulary == the trained sentencepiece vocabulary, so every id decodes
TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip
WORDS = "once upon a time there was a little girl who lived in the forest with her cat and dog every day".split()


def hf_new_ids(model, ids: list[int], new_tokens: int) -> list[int]:
    """The ids transformers' greedy decoding appends to `ids`, stopping at eos as `tinyslm generate` does."""
    return hf_greedy(model, torch.tensor([ids]), new_tokens, stop_at_eos=True)[0, len(ids) :].tolist()


def train_sentencepiece(folder: Path) -> Path:
    spm = pytest.importorskip("sentencepiece")
    rng = random.Random(0)
    text = folder / "corpus.txt"
    text.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(8)).capitalize() + "." for _ in range(400)))
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "sp"), vocab_size=VOCAB, model_type="bpe", minloglevel=2
    )
    return folder / "sp.model"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """main(argv) in-process -> (exit status, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed while fixtures were built
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def copy_checkpoint(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(HF model, checkpoint folder written by transformers)."""
    folder = tmp_path_factory.mktemp("hf-llama")
    return write_hf_checkpoint(folder, "LlamaConfig", **TINY), folder


@pytest.fixture(scope="module")
def deepseek_reference(tmp_path_factory):
    """(HF model, checkpoint folder) for a tiny dense DeepSeek-V2 (MLA) written by transformers."""
    folder = tmp_path_factory.mktemp("hf-deepseek-v2")
    model = write_hf_checkpoint(folder, "DeepseekV2Config", perturb="resample", attn_implementation="eager",
                                **DEEPSEEK_V2_LITE_TINY)  # fmt: skip
    return model, folder


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory) -> Path:
    return train_sentencepiece(tmp_path_factory.mktemp("sp"))


# ----------------------------------------------------------------------------------------------
# the executable


def test_help_runs_as_a_program_and_lists_every_subcommand():
    proc = subprocess.run([sys.executable, "-m", "tinyslm.cli", "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for command in ("inspect", "generate", "parity", "bench", "demo", "convert", "tokenizer", "train", "train-bench",
                    "ablate"):  # fmt: skip
        assert command in proc.stdout


def test_error_from_the_program_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tinyslm.cli", "inspect", str(tmp_path / "missing")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error:")


# ----------------------------------------------------------------------------------------------
# inspect


def test_inspect_tinyllama_json_equals_the_architecture_reference(capsys):
    code, out, _ = run(capsys, "inspect", REPO / "configs/tinyllama-1.1b.toml", "--json")
    assert code == 0
    stats = json.loads(out)
    # transformers 5.23's meta-device count of TinyLlama-1.1B's config.json
    assert stats["parameters"] == 1_100_048_384
    assert stats["non_embedding_parameters"] == 968_976_384
    assert stats["kv_cache_bytes_per_token"] == 22_528  # bf16: 2 (K, V) x 22 layers x 4 KV heads x 64 x 2 B
    assert stats["weight_bytes"] == 2 * 1_100_048_384  # bf16
    # By hand from the config: V 32000, D 2048, 22 layers, 32 heads / 4 KV heads of 64, FFN 5632, untied.
    assert stats["breakdown"] == {
        "embedding": 32000 * 2048,
        "attention": 22 * (2048 * 2048 * 2 + 2048 * 256 * 2),  # q, o: D x D; k, v: D x (4 x 64)
        "ffn": 22 * 3 * 2048 * 5632,  # gate, up, down
        "norms": 22 * 2 * 2048 + 2048,  # two per layer + the final one
        "lm_head": 32000 * 2048,
    }
    assert sum(stats["breakdown"].values()) == stats["parameters"]


def test_inspect_text_output_shows_the_figures(capsys):
    code, out, _ = run(capsys, "inspect", REPO / "configs/tinyllama-1.1b.toml")
    assert code == 0
    assert "1,100,048,384" in out and "968,976,384" in out and "22,528" in out


@pytest.mark.parametrize("target", ["folder", "config.json"])
def test_inspect_checkpoint_counts_what_transformers_counts(reference, capsys, target):
    theirs, folder = reference
    code, out, _ = run(capsys, "inspect", folder if target == "folder" else folder / "config.json", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["parameters"] == sum(p.numel() for p in theirs.parameters())
    assert stats["non_embedding_parameters"] == stats["parameters"] - 2 * VOCAB * TINY["hidden_size"]  # untied
    assert stats["kv_cache_bytes_per_token"] == 2 * 2 * 2 * 16 * 2  # K,V x layers x KV heads x head_dim x bf16


# ----------------------------------------------------------------------------------------------
# inspect --compare-attention


def compare_attention_json(capsys, *options: str) -> dict:
    argv = ["inspect", "--compare-attention", SMOLLM, "--context", "2048,32768", "--json", *options]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def test_inspect_compare_attention_prints_a_row_per_variant_and_columns_per_context(capsys):
    code, out, err = run(capsys, "inspect", "--compare-attention", SMOLLM, "--context", "2048,32768")
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    assert "cache @2,048" in lines[header] and "cache @32,768" in lines[header]
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    rows = lines[header + 2 : lines.index("", header)]
    assert [row.split()[0] for row in rows] == ["mha", "gqa3", "mqa", "mla"]
    assert rows[1].startswith("gqa3 *")  # SmolLM-135M itself is the GQA-3 row
    for row in rows:
        assert len(re.findall(r"\d+\.\d%", row)) == 2, row  # the cache's share at each context


def test_inspect_compare_attention_kv_bytes_are_those_of_the_derived_configs(capsys):
    result = compare_attention_json(capsys)
    variants = {v["name"]: v for v in result["variants"]}
    assert list(variants) == ["mha", "gqa3", "mqa", "mla"] and result["base_variant"] == "gqa3"
    assert result["contexts"] == [2048, 32768] and result["dtype"] == "bfloat16"
    base = tinyslm.load_config(SMOLLM)
    derived = {"mha": derive(base, "mha"), "gqa3": derive(base, "gqa", n_kv_heads=3), "mqa": derive(base, "mqa"),
               "mla": derive(base, "mla")}  # fmt: skip
    for name, config in derived.items():
        stats = model_stats(config)  # bfloat16, the CLI's default
        assert variants[name]["kv_bytes_per_token"] == stats.kv_cache_bytes_per_token, name
        assert variants[name]["parameters"] == stats.parameters, name
        assert [a["cache_bytes"] for a in variants[name]["at_context"]] == [
            context * stats.kv_cache_bytes_per_token for context in (2048, 32768)
        ], name
    # By hand: K and V x 30 layers x KV heads x 64 x 2 B, so MHA : GQA-3 : MQA = 9 : 3 : 1;
    # MLA caches r + dr = 4 x 64 + 32 values per layer.
    mqa = 2 * 30 * 64 * 2
    assert [variants[n]["kv_bytes_per_token"] for n in ("mha", "gqa3", "mqa")] == [9 * mqa, 3 * mqa, mqa]
    assert variants["mla"]["kv_bytes_per_token"] == 30 * (4 * 64 + 32) * 2


def test_inspect_compare_attention_matched_budget_keeps_every_total_within_2_percent(capsys):
    same_heads = compare_attention_json(capsys)
    matched = compare_attention_json(capsys, "--matched-budget")
    assert matched["mode"] == "matched_budget" and matched["base_parameters"] == SMOLLM_PARAMETERS
    assert [v["name"] for v in matched["variants"]] == ["mha", "gqa3", "mqa", "mla"]
    for variant in matched["variants"]:
        assert abs(variant["parameters"] - SMOLLM_PARAMETERS) <= 0.02 * SMOLLM_PARAMETERS, variant["name"]
    # the FFN absorbs the difference; the attention layout, and so the cache, is unchanged
    assert [v["kv_bytes_per_token"] for v in matched["variants"]] == [
        v["kv_bytes_per_token"] for v in same_heads["variants"]
    ]
    ffn_dim = tinyslm.load_config(SMOLLM).ffn_dim
    for same, variant in zip(same_heads["variants"], matched["variants"]):  # a smaller attention, a wider FFN
        assert (variant["ffn_dim"] > ffn_dim, variant["ffn_dim"] < ffn_dim) == (
            same["parameters"] < SMOLLM_PARAMETERS, same["parameters"] > SMOLLM_PARAMETERS
        ), variant["name"]
    code, out, _ = run(capsys, "inspect", "--compare-attention", SMOLLM, "--context", "2048,32768", "--matched-budget")
    assert code == 0 and "FFN width matched to 134,515,008 parameters" in out


# ----------------------------------------------------------------------------------------------
# generate


def test_generate_ids_prints_the_greedy_tokens_of_transformers(reference, capsys):
    theirs, folder = reference
    expected = hf_new_ids(theirs, [1, 2, 3], 5)
    assert len(expected) == 5, "precondition: this seed must not hit eos within 5 tokens"
    code, out, _ = run(capsys, "generate", folder, "--ids", "1,2,3", "--max-new-tokens", "5")
    assert code == 0
    lines = out.strip().splitlines()
    assert [int(t) for t in lines[0].split(",")] == expected
    assert "prefill" in lines[-1] and "tokens/s" in lines[-1]


def test_generate_samples_transformers_tokens_for_a_seed(reference, capsys):
    theirs, folder = reference
    ids = torch.tensor([[1, 2, 3]])
    options = dict(temperature=0.8, top_k=40, top_p=0.95)
    torch.manual_seed(7)
    expected = theirs.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=6,
                               pad_token_id=0, **options)[0, 3:].tolist()  # fmt: skip
    assert len(expected) == 6, "precondition: this seed must not draw eos within 6 tokens"
    flags = ["--temperature", "0.8", "--top-k", "40", "--top-p", "0.95", "--seed", "7"]
    # the module path (--fast off) draws as transformers does; the fast paths by inverse CDF (reproducible too)
    for fast in ("off", "auto"):
        runs = [run(capsys, "generate", folder, "--ids", "1,2,3", "--max-new-tokens", "6", *flags, "--fast", fast)
                for _ in range(2)]  # fmt: skip
        assert [r[0] for r in runs] == [0, 0] and runs[0][1].splitlines()[0] == runs[1][1].splitlines()[0]
        assert "sampled, decoded by the" in runs[0][1].strip().splitlines()[-1]
        if fast == "off":
            assert [int(t) for t in runs[0][1].splitlines()[0].split(",")] == expected


@pytest.mark.parametrize("flags, message", [(["--temperature", "-1"], "temperature must be a number >= 0"),
                                            (["--top-p", "0"], "top_p must be a number in (0, 1]"),
                                            (["--top-k", "-3"], "top_k must be an integer >= 0"),
                                            (["--repetition-penalty", "0"], "repetition_penalty must be a number > 0")])
def test_generate_refuses_bad_sampling_values_in_one_line(reference, capsys, flags, message):
    _, folder = reference
    code, _, err = run(capsys, "generate", folder, "--ids", "1,2,3", "--max-new-tokens", "2", *flags)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and message in err


def test_generate_stops_at_every_end_id_the_checkpoint_declares(reference, tmp_path, capsys):
    """generation_config.json's eos_token_id list (where chat models put their end-of-turn token) stops decoding
    as config.json's eos does; a value that is no token id is refused naming the file."""
    theirs, folder = reference
    expected = hf_new_ids(theirs, [1, 2, 3], 6)
    copy = copy_checkpoint(folder, tmp_path / "ckpt")
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": [expected[2]]}))
    code, out, _ = run(capsys, "generate", copy, "--ids", "1,2,3", "--max-new-tokens", "6")
    assert code == 0 and [int(t) for t in out.splitlines()[0].split(",")] == expected[: expected.index(expected[2]) + 1]
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": ["</s>"]}))
    code, _, err = run(capsys, "generate", copy, "--ids", "1,2,3", "--max-new-tokens", "6")
    assert code == 2 and "generation_config.json: eos_token_id must be token ids" in err and len(err.splitlines()) == 1
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": [10**6]}))  # past the vocabulary
    code, out, _ = run(capsys, "generate", copy, "--ids", "1,2,3", "--max-new-tokens", "6")
    assert code == 0 and len(out.splitlines()[0].split(",")) == len(expected)  # never produced: no stop


def test_generate_stop_text_cuts_the_continuation_before_it(reference, sp_model, tmp_path, capsys):
    _, folder = reference
    copy = copy_checkpoint(folder, tmp_path / "ckpt")
    shutil.copy(sp_model, copy / "tokenizer.model")
    code, out, _ = run(capsys, "generate", copy, "--prompt", "Once upon a time", "--max-new-tokens", "24")
    full = out.splitlines()[0]
    continuation = full[len("Once upon a time"):]
    stop = next(w for w in continuation.split() if len(w) > 1)  # a word the greedy continuation writes
    code, out, _ = run(capsys, "generate", copy, "--prompt", "Once upon a time", "--max-new-tokens", "24",
                       "--stop", "zzz-never", "--stop", stop)  # fmt: skip
    cut = out.splitlines()[0]
    assert code == 0 and cut == full[: len("Once upon a time") + continuation.index(stop)]
    assert int(re.search(r"(\d+) new tokens", out).group(1)) < 24  # decoding ended there


@pytest.mark.parametrize("flags, message", [(["--stop", ""], "--stop: an empty stop text"),
                                            (["--ids", "1,2", "--stop", "x"], "--stop needs --prompt")])
def test_generate_refuses_a_stop_it_cannot_use(reference, capsys, flags, message):
    _, folder = reference
    argv = ["generate", folder, "--max-new-tokens", "2", *flags] + ([] if "--ids" in flags else ["--prompt", "hi"])
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_generate_prompt_streams_the_decoded_continuation(reference, sp_model, tmp_path, capsys):
    theirs, folder = reference
    folder = copy_checkpoint(folder, tmp_path / "ckpt")
    shutil.copy(sp_model, folder / "tokenizer.model")
    tok = tinyslm.load_tokenizer(folder)
    prompt = "Once upon a time"
    ids = tok.encode(prompt)  # with bos
    new = hf_new_ids(theirs, ids, 6)
    code, out, _ = run(capsys, "generate", folder, "--prompt", prompt, "--max-new-tokens", "6")
    assert code == 0
    lines = out.rstrip("\n").splitlines()
    assert lines[0] == tok.decode(ids + new)
    assert "prefill" in lines[-1] and "tokens/s" in lines[-1]


def test_generate_prompt_keeps_the_space_before_a_word_initial_piece(sp_model, tmp_path, capsys):
    """The printed text is prompt + continuation as one decoded sequence: "a time there", not "a timethere".

    The model is built so that greedy decoding always picks one word-initial piece ("▁there"):
    every embedding row is the same vector c, attention and FFN outputs are zero (so the residual
    stream stays c), and the head scores only that piece.
    """
    folder = tmp_path / "ckpt"
    tok_path = shutil.copy(sp_model, tmp_path / "tokenizer.model")
    tok = tinyslm.load_tokenizer(tok_path)
    there = tok.sp.piece_to_id("\u2581there")
    assert tok.sp.id_to_piece(there) == "\u2581there", "precondition: the trained vocabulary has '▁there'"

    config = ModelConfig(name="constant", family="llama", vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, ffn_dim=64, max_seq_len=64, bos_token_id=1, eos_token_id=2)  # fmt: skip
    model = CausalLM(config).init_weights(seed=0)
    c = torch.randn(config.dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.tok_emb.weight.copy_(c.expand_as(model.tok_emb.weight))
        for block in model.blocks:
            block.attn.wo.weight.zero_()
            block.ffn.down.weight.zero_()
        model.head.weight.zero_()
        model.head.weight[there] = c
    tinyslm.save_pretrained(model, folder)
    shutil.copy(tok_path, folder / "tokenizer.model")

    prompt = "Once upon a time"
    code, out, _ = run(capsys, "generate", folder, "--prompt", prompt, "--max-new-tokens", "3")
    assert code == 0
    assert out.splitlines()[0] == "Once upon a time there there there"


@pytest.mark.parametrize("path", ["naive", "absorbed", "auto"])
def test_generate_mla_decode_prints_the_greedy_tokens_of_transformers(deepseek_reference, capsys, monkeypatch, path):
    theirs, folder = deepseek_reference
    expected = hf_new_ids(theirs, [1, 2, 3], 4)
    assert len(expected) == 4, "precondition: this seed must not hit eos within 4 tokens"
    seen, forward = [], MLAttention.forward  # the decode path of every MLA attention call

    def spy(self, *args, **kwargs):
        seen.append(self.decode)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(MLAttention, "forward", spy)
    code, out, err = run(capsys, "generate", folder, "--ids", "1,2,3", "--max-new-tokens", "4", "--mla-decode", path)
    assert code == 0, err
    assert [int(t) for t in out.splitlines()[0].split(",")] == expected
    assert seen == [path] * 2 * 4  # 2 layers x (prefill + 3 decode steps), all on the chosen path


# ----------------------------------------------------------------------------------------------
# parity


def test_parity_of_a_transformers_checkpoint_exits_0(reference, capsys):
    code, out, _ = run(capsys, "parity", reference[1], "--tokens", "8")
    assert code == 0
    assert "PARITY OK" in out


def test_parity_json_reports_ok_true(reference, capsys):
    code, out, _ = run(capsys, "parity", reference[1], "--tokens", "8", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True and report["tokens_match"] is True
    assert report["relative_diff"] <= 1e-5 and report["first_diverging_layer"] is None


def test_parity_mismatch_exits_1_and_names_the_first_diverging_layer(reference, capsys, monkeypatch):
    """tinyslm and transformers read the same folder, so the mismatch is injected into tinyslm's copy."""
    real_load = tinyslm.tools.parity.load_pretrained

    def load_with_layer_1_perturbed(*args, **kwargs):
        model = real_load(*args, **kwargs)
        with torch.no_grad():
            model.blocks[1].ffn.down.weight.add_(0.5)
        return model

    monkeypatch.setattr(tinyslm.tools.parity, "load_pretrained", load_with_layer_1_perturbed)
    code, out, _ = run(capsys, "parity", reference[1], "--tokens", "8")
    assert code == 1
    assert "first diverging layer 1" in out
    assert "PARITY FAILED" in out

    code, out, _ = run(capsys, "parity", reference[1], "--tokens", "8", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["first_diverging_layer"] == 1
    assert report["layer_diffs"][0] <= 1e-5 < report["layer_diffs"][1]


# ----------------------------------------------------------------------------------------------
# every anticipated failure: one `error:` line on stderr, no traceback, a non-zero exit (2 for generate)


def unknown_model_type(folder: Path) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_type": "mamba42"}))


def wrong_shape(folder: Path) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(16, 64)
    save_file(tensors, path, metadata={"format": "pt"})


def pickle_only(folder: Path) -> None:
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


# name -> (damage to the folder or None, argv after the folder, substrings the message must contain)
OK_ARGS = ["--ids", "1,2,3", "--max-new-tokens", "2"]
ERROR_CASES = {
    "missing-folder": (None, OK_ARGS, ["no-such-model"]),
    "unknown-model-type": (unknown_model_type, OK_ARGS, ["mamba42", "llama"]),
    "wrong-shape": (wrong_shape, OK_ARGS, ["model.layers.0.self_attn.k_proj.weight"]),
    "bin-refused": (pickle_only, OK_ARGS, ["pytorch_model.bin", "--allow-pickle"]),
    "ids-with-letters": (None, ["--ids", "1,two,3", "--max-new-tokens", "2"], ["1,two,3"]),
    "prompt-too-long": (None, ["--ids", "1,2,3", "--max-new-tokens", "100"], ["103", "64"]),
    "negative-max-new-tokens": (None, ["--ids", "1,2,3", "--max-new-tokens", "-1"], ["-1"]),
    "empty-ids": (None, ["--ids", "", "--max-new-tokens", "2"], ["empty"]),
    "id-out-of-range": (None, ["--ids", "1,2,999", "--max-new-tokens", "2"], ["999", str(VOCAB)]),
    "mla-decode-without-mla": (None, [*OK_ARGS, "--mla-decode", "absorbed"], ["no MLA layers", "'gqa'"]),
}  # fmt: skip


@pytest.mark.parametrize("case", ERROR_CASES)
def test_generate_error_is_one_line_on_stderr_naming_the_problem(case, reference, tmp_path, capsys):
    damage, argv, needles = ERROR_CASES[case]
    if case == "missing-folder":
        folder = tmp_path / "no-such-model"
    else:
        folder = copy_checkpoint(reference[1], tmp_path / "ckpt")
        if damage is not None:
            damage(folder)
    code, out, err = run(capsys, "generate", folder, *argv)
    assert code == 2, err  # every anticipated failure (cli.py)
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert not err.startswith("error: unexpected"), "an anticipated failure surfaced as an unexpected exception"


@pytest.mark.parametrize("command", ["inspect", "parity"])
def test_missing_folder_is_one_error_line_for_every_command(command, tmp_path, capsys):
    code, _, err = run(capsys, command, tmp_path / "no-such-model")
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "no-such-model" in err


INSPECT_ERRORS = {
    "unknown-dtype": (["--dtype", "int8"], ["int8"]),
    "zero-context": (["--context", "0"], ["--context"]),
    "context-list-without-compare-attention": (["--context", "2048,32768"], ["--compare-attention", "2048,32768"]),
    "compare-attention-bad-context": (["--compare-attention", "--context", "2048,abc"], ["2048,abc"]),
    "compare-attention-zero-context": (["--compare-attention", "--context", "2048,0"], ["[2048, 0]", "positive integers"]),
}


@pytest.mark.parametrize("case", INSPECT_ERRORS)
def test_inspect_bad_option_is_one_error_line(case, capsys):
    argv, needles = INSPECT_ERRORS[case]
    code, _, err = run(capsys, "inspect", REPO / "configs/tinyllama-1.1b.toml", *argv)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert all(needle in err for needle in needles), err


def test_inspect_missing_toml_names_the_file(tmp_path, capsys):
    code, _, err = run(capsys, "inspect", tmp_path / "nope.toml")
    assert code == 2 and err.startswith("error:") and "nope.toml" in err


@pytest.mark.parametrize("tokens", [0, 64, 100])
def test_parity_tokens_outside_the_context_is_an_error_not_a_mismatch(reference, capsys, tokens):
    """Exit 1 means "tinyslm and transformers disagree"; a request the context cannot hold is exit 2."""
    code, _, err = run(capsys, "parity", reference[1], "--tokens", str(tokens))
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # transformers may log progress
    assert len(errors) == 1 and errors[0].startswith("error:") and "Traceback" not in err, err
    assert not errors[0].startswith("error: unexpected"), err


def test_pickle_checkpoint_generates_with_allow_pickle(reference, tmp_path, capsys):
    theirs, folder = reference
    folder = copy_checkpoint(folder, tmp_path / "ckpt")
    pickle_only(folder)
    code, out, _ = run(capsys, "generate", folder, "--ids", "1,2,3", "--max-new-tokens", "5", "--allow-pickle")
    assert code == 0
    assert [int(t) for t in out.splitlines()[0].split(",")] == hf_new_ids(theirs, [1, 2, 3], 5)


# ----------------------------------------------------------------------------------------------
# demo (about 40 s: six real-vocabulary models written, loaded, checked and decoded, then the short training
# run; run whole once)

DEMO_MODELS = ("tinyllama-shaped", "qwen2.5-shaped", "qwen3-shaped", "gemma2-shaped", "phi2-shaped", "bloom-shaped")


@pytest.mark.slow
def test_demo_prints_its_table_with_parity_ok_for_every_model(capsys):
    code, out, err = run(capsys, "demo", "--tokens", "4")
    assert code == 0, err
    for name in DEMO_MODELS:
        row = next(line for line in out.splitlines() if name in line)
        assert " ok " in row, row
    assert "family" in out and "tok/s" in out and "demo finished" in out
    assert "validation loss" in out and "trained:" in out  # the training part ran (tests/experiments/test_demo.py checks it)


def test_parity_without_transformers_says_how_to_install_it(reference, capsys, monkeypatch):
    """transformers is an optional extra: without it, parity is one clear line, not an ImportError."""
    _, folder = reference
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    code, out, err = run(capsys, "parity", folder)
    assert code == 2 and out == ""
    assert err.startswith("error: transformers is not installed") and "pip install" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_without_transformers_still_runs_and_says_parity_was_skipped(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    code, out, _ = run(capsys, "demo", "--tokens", "2", "--no-train")
    assert code == 0
    assert "parity is skipped" in out and "n/a" in out and "validation loss" not in out
    assert all(name in out for name in DEMO_MODELS)


def test_generate_ids_with_an_empty_item_is_refused_not_skipped(reference, capsys):
    _, folder = reference
    code, out, err = run(capsys, "generate", folder, "--ids", "1,,2", "--max-new-tokens", "2")
    assert code == 2 and err.startswith("error: --ids must be comma-separated integers") and "1,,2" in err


# --- refused input exits 2 with one line, never 1 ("unexpected") -------------------------------


@pytest.mark.parametrize("tolerance", ["nan", "-1", "inf"])
def test_parity_refuses_a_tolerance_that_cannot_be_met_or_failed(reference, capsys, tolerance):
    _, folder = reference
    code, out, err = run(capsys, "parity", folder, "--tolerance", tolerance)
    assert code == 2 and err.startswith("error: --tolerance must be a finite number >= 0")


def test_generate_refuses_an_id_beyond_int64_in_one_line(reference, capsys):
    _, folder = reference
    code, _, err = run(capsys, "generate", folder, "--ids", "99999999999999999999999", "--max-new-tokens", "2")
    assert code == 2 and "out of range" in err and len(err.strip().splitlines()) == 1


def test_inspect_counts_a_ten_million_layer_config_without_building_it(tmp_path, capsys):
    config = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
              "num_hidden_layers": 10_000_000, "num_attention_heads": 32, "num_key_value_heads": 4}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    code, out, _ = run(capsys, "inspect", tmp_path)
    assert code == 0 and "440,443,011,074,048" in out  # 10M x 44,044,288 per layer + 65,536,000 x 2 (untied)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"eos_token_id": []}, "eos_token_id must be a token id >= 0 or a non-empty list"),
        ({"num_hidden_layers": 10_000_000}, "describes a model of"),
        ({"rope_theta": -1.0, "rope_parameters": None}, "rope_theta must be a positive number"),
    ],
)
def test_generate_on_a_config_it_refuses_exits_2_with_the_reason(reference, tmp_path, capsys, edit, message):
    _, folder = reference
    folder = copy_checkpoint(folder, tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({k: v for k, v in {**config, **edit}.items() if v is not None}))
    code, _, err = run(capsys, "generate", folder, "--ids", "1,2", "--max-new-tokens", "2")
    assert code == 2 and message in err, err


# --- a busy machine ----------------------------------------------------------------------------------------------


def test_generate_says_once_when_the_machine_is_busy_and_what_helps(reference, capsys, monkeypatch):
    from tinyslm import machine

    _, folder = reference
    monkeypatch.setenv("TINYSLM_NOTES", "1")
    monkeypatch.setattr(machine, "runnable_others", lambda: 8.0)  # eight other threads want a CPU
    threads = torch.get_num_threads()  # (--threads sets this process's torch: restored below)
    try:
        _busy_generate(folder, capsys, monkeypatch, machine)
    finally:
        torch.set_num_threads(threads)


def _busy_generate(folder, capsys, monkeypatch, machine):
    code, out, err = run(capsys, "generate", folder, "--ids", "1,2,3", "--max-new-tokens", "3", "--threads", "2")
    assert code == 0 and "2 threads" in out
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "the machine is busy (8 other runnable threads" in notes[0]
    assert "--threads 1" in notes[0] and "OMP_WAIT_POLICY=passive" in notes[0]
    monkeypatch.setattr(machine, "runnable_others", lambda: 0.0)
    code, _, err = run(capsys, "generate", folder, "--ids", "1,2,3", "--max-new-tokens", "3", "--threads", "1")
    assert code == 0 and "note:" not in err
    code, _, err = run(capsys, "generate", folder, "--ids", "1,2,3", "--max-new-tokens", "3", "--threads", "0")
    assert code == 2 and err.strip() == "error: --threads must be >= 1, found 0"


@pytest.mark.slow
def test_demo_names_the_cpu_its_figures_come_from(capsys):
    from tinyslm import machine

    code, out, _ = run(capsys, "demo", "--tokens", "2", "--no-train")
    assert code == 0 and out.splitlines()[0].startswith(f"machine: {machine.describe()}, ")


# --- text from files reaches the terminal escaped -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["\x1b]0;pwned\x07", "evil\x1b[2J\x1b[H", "csi\x9b31m", "bell\x07\x00nul"])
def test_strings_from_files_are_printed_escaped(reference, tmp_path, capsys, name):
    _, folder = reference
    target = copy_checkpoint(Path(folder), tmp_path / "ckpt")
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps(dict(config, _name_or_path=name)))
    code, out, err = run(capsys, "inspect", str(target))
    assert code == 0 and "model" in out
    for text in (out, err):
        assert not any(c in text for c in "\x1b\x07\x00\x9b")  # no control sequence reached the terminal
    assert "\\x1b" in out or "\\x9b" in out or "\\x07" in out
    # errors that name a file's strings too: an unknown model_type
    (target / "config.json").write_text(json.dumps(dict(config, model_type=name)))
    code, out, err = run(capsys, "inspect", str(target))
    assert code == 2 and not any(c in err for c in "\x1b\x07\x00\x9b")


# --- refusals are one line with exit 2; only a true TINYSLM_DEBUG shows a traceback --------------------------------


@pytest.mark.parametrize("debug", ["0", "false", "", "no"])
def test_tinyslm_debug_turns_tracebacks_on_only_when_true(reference, capsys, monkeypatch, debug):
    _, folder = reference
    monkeypatch.setenv("TINYSLM_DEBUG", debug)
    monkeypatch.setattr(tinyslm.tools.command, "cmd_inspect", lambda args: 1 / 0)  # an unexpected failure
    code, _, err = run(capsys, "inspect", folder)
    assert code == 1 and "Traceback" not in err and err.startswith("error: unexpected ZeroDivisionError")
    monkeypatch.setenv("TINYSLM_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["inspect", str(folder)])


@pytest.mark.parametrize("errno_, strerror", [(13, "Permission denied"), (30, "Read-only file system"),
                                              (28, "No space left on device")])  # fmt: skip
def test_an_environment_that_refuses_a_write_is_one_line_exit_2(reference, capsys, monkeypatch, tmp_path, errno_, strerror):
    _, folder = reference
    import tinyslm.gguf.command as convert_command

    def refuse(*args, **kwargs):
        raise OSError(errno_, strerror, str(tmp_path / "out.gguf"))

    monkeypatch.setattr(convert_command, "run", refuse)
    parser_args = ["convert", folder, str(tmp_path / "out.gguf")]
    code, _, err = run(capsys, *parser_args)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'out.gguf'}: {strerror}"


def test_a_config_with_a_number_of_thousands_of_digits_is_one_clear_line(reference, tmp_path, capsys):
    _, folder = reference
    target = copy_checkpoint(Path(folder), tmp_path / "ckpt")
    text = (target / "config.json").read_text()
    (target / "config.json").write_text(text.replace('"vocab_size":', '"vocab_size": 1' + "0" * 5000 + ', "x":', 1))
    code, _, err = run(capsys, "inspect", str(target))
    assert code == 2 and err.startswith(f"error: {target / 'config.json'}: a value cannot be read")
    assert len(err.strip().splitlines()) == 1


def test_a_prompt_that_is_not_utf8_is_one_clear_line(reference, capsys):
    _, folder = reference
    code, _, err = run(capsys, "generate", str(folder), "--prompt", "caf\udce9", "--max-new-tokens", "2")
    assert code == 2 and err.strip() == "error: --prompt is not valid UTF-8 text (at character 3); check the " \
        "terminal's or the file's encoding"
