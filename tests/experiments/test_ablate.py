"""tinyslm ablate: variants parsed and derived, a tiny-budget run writes its report, KV figures equal inspect's."""

from __future__ import annotations

import argparse
import io
import json
import math

import pytest
import torch

from tinyslm import cli
from tinyslm.ablate import parse_variants
from tinyslm.ablate.report import compare
from tinyslm.config import ModelConfig
from tinyslm.data import generate_documents
from tinyslm.errors import ConfigError
from tinyslm.tools.variants import count_parameters

BASE = """
name = "tiny-base"
family = "llama"
vocab_size = 512
dim = 32
n_layers = 2
n_heads = 4
n_kv_heads = 4   # MHA base
ffn_dim = 64
max_seq_len = 64
tie_embeddings = true
"""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: one thread is faster, and far faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def base_toml(tmp_path):
    path = tmp_path / "base.toml"
    path.write_text(BASE)
    return path


def _parser():
    from tinyslm.ablate import command

    parser = argparse.ArgumentParser(prog="tinyslm")
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_variants_are_derived_from_the_base(base_toml):
    base = ModelConfig.from_toml(base_toml)
    got = {v.name: v.config for v in parse_variants("mha, gqa:2, mqa, mla, swa:16, share:cyclic, mqa+swa:8", base)}
    assert list(got) == ["mha", "gqa2", "mqa", "mla", "swa16", "share-cyclic", "mqa+swa8"]
    assert [got[k].n_kv_heads for k in ("mha", "gqa2", "mqa")] == [4, 2, 1]
    assert got["mla"].attention == "mla" and got["mla"].kv_lora_rank == 4 * base.head_dim
    assert got["swa16"].sliding_window == 16 and got["swa16"].n_kv_heads == 4
    assert got["share-cyclic"].schedule() == [0, 1, 0, 1]
    assert got["mqa+swa8"].n_kv_heads == 1 and got["mqa+swa8"].sliding_window == 8
    matched = parse_variants("mqa,mla", base, matched_budget=True)
    target = count_parameters(base)[0]
    assert all(abs(count_parameters(v.config)[0] - target) <= 0.02 * target for v in matched)
    assert matched[0].config.ffn_dim > base.ffn_dim  # MQA's saved attention weights went into the FFN


def test_unknown_variant_is_one_clear_error_and_nothing_is_written(base_toml, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["tinyslm.tools.command", "tinyslm.ablate.command"])
    out = tmp_path / "out"
    code = cli.main(["ablate", "--base", str(base_toml), "--variants", "mha,gqa:2,mqb", "--steps", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --variants: unknown variant 'mqb'") and "\n" not in err
    assert "gqa:K" in err  # the message lists what is accepted
    assert not out.exists()
    for bad, message in (("gqa", "gqa needs its KV-head count"), ("gqa:3", "dividing every layer's head count"),
                         ("mha,mha", "names the same variant"), ("swa:64", "not smaller than the model's context")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            parse_variants(bad, ModelConfig.from_toml(base_toml))


def test_compare_says_which_differences_are_within_the_spread():
    def row(name, values):
        return {"name": name, "summary": {"final_val_loss": {"mean": sum(values) / len(values), "min": min(values),
                                                              "max": max(values), "n": len(values)}}}  # fmt: skip

    got = compare([row("mha", [2.0, 2.1, 2.2]), row("mqa", [2.15, 2.3, 2.4]), row("mla", [1.5, 1.6, 1.7])])
    assert [c["verdict"] for c in got] == ["within the spread", "better than mha on every seed"]
    assert compare([row("a", [2.0]), row("b", [3.0])])[0]["verdict"].startswith("single seed")


def test_tiny_ablation_writes_report_and_kv_matches_inspect(base_toml, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in generate_documents(150, seed=2)))
    out = tmp_path / "run"
    args = _parser().parse_args([
        "ablate", "--base", str(base_toml), "--variants", "mha,gqa:2,mqa,mla,swa:16", "--steps", "3", "--seeds", "2",
        "--data", str(corpus), "--vocab-size", "400", "--batch-size", "4", "--seq-len", "32", "--mqar-steps", "2",
        "--mqar-seq-len", "16", "--mqar-pairs", "2", "--mqar-vocab", "16", "--context", "48", "--out", str(out),
        "--no-progress",
    ])  # fmt: skip
    assert args.run(args) == 0
    capsys.readouterr()
    for name in ("report.md", "results.json", "loss_curves.png", "val_loss_vs_kv.png", "recall_vs_kv.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert [row["name"] for row in results["variants"]] == ["mha", "gqa2", "mqa", "mla", "swa16"]
    for row in results["variants"]:
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        for run in row["runs"]:
            assert math.isfinite(run["final_val_loss"]) and 0 <= run["mqar_accuracy"] <= 1
            assert run["val_bpb"] == pytest.approx(run["final_val_loss"] * results["data"]["val_tokens"]
                                                   / (math.log(2) * results["data"]["val_bytes"]))  # fmt: skip
            assert len(run["history"]) == 3 and run["train_tokens_per_s"] > 0 and run["decode_tokens_per_s"] > 0
        assert row["summary"]["final_val_loss"]["n"] == 2 and row["summary"]["final_val_loss"]["std"] is not None
        # the KV column is what `tinyslm inspect` prints for the variant's saved config
        assert cli.main(["inspect", str(out / "configs" / f"{row['name']}.toml"), "--context", "48", "--json"]) == 0
        inspected = json.loads(capsys.readouterr().out)
        assert inspected["kv_cache_bytes_per_token"] == row["kv_cache_bytes_per_token"]
        assert inspected["kv_cache_bytes_at_context"] == row["kv_cache_bytes_at_context"]
        assert inspected["parameters"] == row["parameters"]
        assert f"| `{row['name']}` |" in report and f"{row['kv_cache_bytes_per_token']:,} B" in report
    kv = {row["name"]: row["kv_cache_bytes_per_token"] for row in results["variants"]}
    assert kv["mha"] == 2 * kv["gqa2"] == 4 * kv["mqa"]  # 4, 2 and 1 KV heads
    at = {row["name"]: row["kv_cache_bytes_at_context"] for row in results["variants"]}
    assert at["swa16"] == at["mha"] * 16 // 48  # the window caps the cache at 16 of the 48 tokens
    assert len(results["comparisons"]) == 4 * 3 and "within the spread" in report
    assert results["mqar"]["chance"] == 1 / 8 and results["mqar"]["in_context"] == 1 / 2  # V = 16: values 8..15
    assert "chance 0.125" in report


def test_shipped_ablation_configs_are_small_llamas():
    from pathlib import Path

    from tinyslm.tools.stats import model_stats

    files = sorted((Path(__file__).resolve().parents[2] / "configs" / "ablation").glob("*.toml"))
    assert files
    for path in files:
        base = ModelConfig.from_toml(path)
        assert base.family == "llama" and 1_000_000 <= model_stats(base).parameters <= 5_000_000, path
        assert len(parse_variants("mha,gqa:2,mqa,mla,swa:64", base)) == 5


def test_sharing_and_scaling_variants_are_derived_from_the_base(base_toml):
    """MobiLlama's shared FFN, MobileLLM's block repeat and OpenELM's layer-wise scaling as ablation variants."""
    base = ModelConfig.from_toml(base_toml)
    got = {v.name: v.config for v in parse_variants("sharedffn, share:immediate, scale, gqa:2+scale:0.5-1/1-2", base)}
    assert list(got) == ["sharedffn", "share-immediate", "scale-q0.5-1-f0.5-4", "gqa2+scale-q0.5-1-f1-2"]
    ffn = 3 * base.dim * base.ffn_dim  # gate, up, down; no biases
    assert count_parameters(got["sharedffn"])[0] == count_parameters(base)[0] - (base.n_layers - 1) * ffn
    assert got["share-immediate"].schedule() == [0, 0, 1, 1]
    assert count_parameters(got["share-immediate"])[0] == count_parameters(base)[0]
    # OpenELM's rule over 2 layers, dim 32, head_dim 8, widths rounded to multiples of 16:
    # queries 0.5*32 -> 16 (2 heads) and 1.0*32 -> 32 (4 heads); FFN 0.5*32 -> 16 and 4*32 -> 128
    scaled = got["scale-q0.5-1-f0.5-4"]
    assert scaled.layer_n_heads == (2, 4) and scaled.layer_n_kv_heads == (2, 4) and scaled.layer_ffn_dim == (16, 128)
    gqa = got["gqa2+scale-q0.5-1-f1-2"]  # the base's 2 query heads per KV head are kept in every layer
    assert gqa.layer_n_heads == (2, 4) and gqa.layer_n_kv_heads == (1, 2) and gqa.layer_ffn_dim == (32, 64)
    for bad, message in (("mla+scale", "MLA does not support"), ("scale:0-1/1-2", "positive multipliers"),
                         ("scale+sharedffn", "one shared FFN needs one FFN width"),
                         ("sharedffn+sharedffn", "two settings of the same kind")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            parse_variants(bad, base)


def test_ablation_of_sharing_and_scaling_variants_reports_what_inspect_counts(base_toml, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in generate_documents(150, seed=2)))
    out = tmp_path / "run"
    args = _parser().parse_args([
        "ablate", "--base", str(base_toml), "--variants", "mha,sharedffn,share:immediate,scale", "--steps", "2",
        "--data", str(corpus), "--vocab-size", "400", "--batch-size", "2", "--seq-len", "16", "--mqar-steps", "0",
        "--context", "32", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert args.run(args) == 0
    capsys.readouterr()
    rows = {row["name"]: row for row in json.loads((out / "results.json").read_text())["variants"]}
    for name, row in rows.items():
        assert cli.main(["inspect", str(out / "configs" / f"{name}.toml"), "--context", "32", "--json"]) == 0
        inspected = json.loads(capsys.readouterr().out)
        assert (inspected["parameters"], inspected["kv_cache_bytes_per_token"]) == (
            row["parameters"], row["kv_cache_bytes_per_token"]), name
    assert rows["sharedffn"]["parameters"] < rows["mha"]["parameters"]
    assert rows["share-immediate"]["parameters"] == rows["mha"]["parameters"]
    assert rows["share-immediate"]["kv_cache_bytes_per_token"] == 2 * rows["mha"]["kv_cache_bytes_per_token"]


# ----------------------------------------------------------------------------------------------
# what the MQAR figures are read against, the plots' labels, the progress bars


class _ValueGuesser(torch.nn.Module):
    """Guesses uniformly among MQAR's value tokens [V/2, V): no format beyond the value range, no recall."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size, self.anchor = vocab_size, torch.nn.Parameter(torch.zeros(1))  # (a device to read)
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, ids):  # (b, T) -> (b, T, V)
        logits = torch.full((*ids.shape, self.vocab_size), -1e9)
        half = self.vocab_size // 2
        logits[..., half:] = torch.rand((*ids.shape, self.vocab_size - half), generator=self.gen)
        return logits


@pytest.mark.parametrize("vocab, pairs, values", [(64, 4, 32), (17, 3, 9)])
def test_mqar_chance_is_one_over_the_value_tokens(vocab, pairs, values):
    from tinyslm.ablate.run import AblationSettings, mqar_baselines, mqar_task

    task = mqar_task(AblationSettings(mqar_vocab=vocab, mqar_pairs=pairs, mqar_seq_len=64))
    got = mqar_baselines(task.vocab_size, task.n_pairs)
    assert got == {"chance": 1 / values, "in_context": 1 / pairs}
    assert got["in_context"] == task.chance  # MQAR.chance: the format learned, no recall
    guessed = task.accuracy(_ValueGuesser(vocab), n_examples=512)  # 512 x 28 answers: standard error < 0.003
    assert abs(guessed - got["chance"]) < 0.01, (guessed, got)


def test_plot_labels_say_which_seeds_and_steps_are_whole(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from tinyslm.ablate import report

    assert report.seeds_label([0]) == "seed 0" and report.seeds_label([2]) == "seed 2"
    assert report.seeds_label([0, 1, 2]) == "mean over 3 seeds"
    history = [{"step": k, "loss": 5.0 - k} for k in (1, 2, 3)] + [{"step": 3, "loss": 2.0, "val_loss": 2.1}]
    run = {"seed": 0, "history": history, "mqar_history": [{"step": k, "loss": 3.0 - k / 2} for k in (1, 2, 3)]}
    row = {"name": "mha", "kv_cache_bytes_per_token": 2048, "runs": [run],
           "summary": {"final_val_loss": {"mean": 2.1, "std": None}, "mqar_accuracy": {"mean": 0.06, "std": None}}}  # fmt: skip
    results = {"variants": [row], "settings": {"kv_dtype": "bfloat16"}, "mqar": {"vocab_size": 64, "n_pairs": 4}}
    figures = {}
    monkeypatch.setattr(report, "_save", lambda fig, path, plt: figures.setdefault(path.name, fig) and path.name)
    report.plot(results, tmp_path)
    try:
        lm, mqar = figures["loss_curves.png"].axes
        assert lm.get_title() == "LM loss (seed 0)" and mqar.get_title() == "MQAR training loss (seed 0)"
        for ax in (lm, mqar):
            assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_xticks()  # steps: no 2.5
        (recall,) = figures["recall_vs_kv.png"].axes
        levels = sorted(line.get_ydata()[0] for line in recall.get_lines() if line.get_linestyle() in (":", "--"))
        assert levels == [1 / 32, 1 / 4]  # guessing a value token; picking one of the 4 stated values
        assert "1 of 32 value tokens" in " ".join(t.get_text() for t in recall.get_legend().get_texts())
    finally:
        plt.close("all")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_each_run_has_a_progress_bar_labelled_with_variant_and_seed():
    from tinyslm.ablate.run import StepBar
    from tinyslm.data import MQAR
    from tinyslm.train import TrainConfig, train

    task = MQAR(vocab_size=16, seq_len=12, n_pairs=2)
    config = ModelConfig(name="t", family="llama", vocab_size=16, dim=16, n_layers=1, n_heads=2, n_kv_heads=2,
                         ffn_dim=32, max_seq_len=12)  # fmt: skip
    cfg = TrainConfig(steps=3, batch_size=4, seq_len=12, eval_every=0, device="cpu")
    shown = _Terminal()
    with StepBar(task.batches(4, seed=0), 3, "[1/2] mqa seed 1 MQAR", file=shown) as batches:
        train(config, batches, cfg, progress=False)
    assert batches.taken == batches.bar.n == 3 and "[1/2] mqa seed 1 MQAR: " in shown.getvalue()
    for file, enabled in ((io.StringIO(), True), (_Terminal(), False)):  # a file, or --no-progress: nothing
        with StepBar(task.batches(4, seed=0), 3, "mha seed 0 LM", file=file, enabled=enabled) as batches:
            train(config, batches, cfg, progress=False)
        assert file.getvalue() == ""
