"""bench.py: both implementations are measured on the same folder and decode the same tokens."""

import json

from hf_models import write_hf_checkpoint

from tinyslm.tools.bench import run_bench
from tinyslm.cli import main

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip


def test_bench_reports_both_implementations_with_identical_greedy_tokens(tmp_path, capsys):
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    assert main(["bench", str(tmp_path), "--prompt-tokens", "16", "--new-tokens", "8", "--json"]) == 0
    rows = {r["implementation"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"tinyslm", "transformers"}
    for row in rows.values():
        assert row["load_s"] > 0 and row["prefill_ms"] > 0 and row["decode_tokens_per_s"] > 0
        assert len(row["tokens"]) == 8
    assert rows["tinyslm"]["tokens"] == rows["transformers"]["tokens"]  # float32: same greedy path


def test_bench_refuses_a_request_beyond_the_context_in_one_line(tmp_path, capsys):
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    capsys.readouterr()  # drop transformers' own progress output
    assert main(["bench", str(tmp_path), "--prompt-tokens", "120", "--new-tokens", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "129" in err and "128" in err and len(err.strip().splitlines()) == 1


def test_bench_expands_a_home_relative_folder(tmp_path, monkeypatch):
    """Both workers get the expanded path: transformers reads "~/x" as a Hub repo id."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_hf_checkpoint(tmp_path / "ckpt", "LlamaConfig", **TINY)
    rows = run_bench("~/ckpt", prompt_tokens=4, new_tokens=2)
    assert [r["implementation"] for r in rows] == ["tinyslm", "transformers"]
    assert all(len(r["tokens"]) == 2 for r in rows)
