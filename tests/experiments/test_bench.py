"""bench.py: both implementations are measured on the same folder and decode the same tokens."""

import json

import pytest

from hf_models import write_hf_checkpoint

from tinyslm.cli import main
from tinyslm.quant import native
from tinyslm.tools.bench import run_bench

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip


@pytest.mark.slow
def test_bench_reports_both_implementations_with_identical_greedy_tokens(tmp_path, capsys):
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    assert main(["bench", str(tmp_path), "--prompt-tokens", "16", "--new-tokens", "8", "--json"]) == 0
    rows = {r["implementation"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"tinyslm", "transformers"}
    for row in rows.values():
        assert row["load_s"] > 0 and row["prefill_ms"] > 0 and row["decode_tokens_per_s"] > 0
        assert len(row["tokens"]) == 8
        assert row["weights_in_memory_mb"] > 0 and row["load_rss_vs_weights"] == pytest.approx(
            row["load_rss_growth_mb"] / row["weights_in_memory_mb"])
    assert rows["tinyslm"]["tokens"] == rows["transformers"]["tokens"]  # float32: same greedy path
    assert rows["tinyslm"]["weights_in_memory_mb"] == pytest.approx(rows["transformers"]["weights_in_memory_mb"], rel=1e-2)
    assert rows["tinyslm"]["decode_path"] == ("native step" if native.available() else "module path")


@pytest.mark.slow
def test_bench_on_a_gguf_runs_every_implementation_installed(tmp_path, capsys):
    """A .gguf: tinyslm keeps its Q8_0 blocks, transformers dequantizes them, llama.cpp runs the file when
    llama-cpp-python is installed and can (else its row says why it is skipped: this file has no vocabulary,
    which llama.cpp needs)."""
    pytest.importorskip("gguf")
    write_hf_checkpoint(tmp_path / "hf", "LlamaConfig", **TINY)
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "m.gguf"), "--type", "q8_0"]) == 0
    capsys.readouterr()
    args = ["bench", str(tmp_path / "m.gguf"), "--prompt-tokens", "8", "--new-tokens", "4", "--prefill-tokens", "8",
            "--runs", "1", "--json"]  # fmt: skip
    assert main(args) == 0
    rows = {r["implementation"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["tinyslm", "transformers", "llama.cpp"]
    assert rows["tinyslm"]["decode_path"] == ("native step" if native.available() else "module path")
    for name, row in rows.items():
        if "skipped" in row:  # not installed, or (with no tokenizer in this file) failing to load it
            assert name == "llama.cpp" and ("not installed" in row["skipped"] or "Failed to load" in row["skipped"])
            continue
        assert len(row["tokens"]) == 4 and row["decode_tokens_per_s"] > 0 and row["load_rss_vs_weights"] >= 0
    # transformers holds the dequantized float32 weights, tinyslm the file's blocks: about 8.5 / 32 of them
    assert rows["tinyslm"]["weights_in_memory_mb"] < rows["transformers"]["weights_in_memory_mb"] / 2


@pytest.mark.slow
def test_bench_says_which_path_decoded(tmp_path, capsys):
    """Q8_0 blocks (tinyslm's native kernel): the native decoding step, named in the table."""
    from tinyslm.quant import native

    if not native.available():
        pytest.skip(f"native kernel unavailable: {native.why_unavailable}")
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    capsys.readouterr()
    args = ["bench", str(tmp_path), "--prompt-tokens", "8", "--new-tokens", "4", "--prefill-tokens", "8", "--runs", "1",
            "--quantize", "q8_0", "--no-transformers"]  # fmt: skip
    assert main(args) == 0
    assert "tinyslm decoded by the native step" in capsys.readouterr().out


def test_bench_refuses_a_request_beyond_the_context_in_one_line(tmp_path, capsys):
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    capsys.readouterr()  # drop transformers' own progress output
    assert main(["bench", str(tmp_path), "--prompt-tokens", "120", "--new-tokens", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "129" in err and "128" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_bench_expands_a_home_relative_folder(tmp_path, monkeypatch):
    """Both workers get the expanded path: transformers reads "~/x" as a Hub repo id."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_hf_checkpoint(tmp_path / "ckpt", "LlamaConfig", **TINY)
    rows = run_bench("~/ckpt", prompt_tokens=4, new_tokens=2)
    assert [r["implementation"] for r in rows] == ["tinyslm", "transformers"]
    assert all(len(r["tokens"]) == 2 for r in rows)


@pytest.mark.slow
def test_bench_reports_bandwidth_fraction_ratios_and_spread_for_a_quantized_model(tmp_path, capsys):
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    args = ["bench", str(tmp_path), "--prompt-tokens", "8", "--new-tokens", "4", "--prefill-tokens", "8,16,999",
            "--runs", "2", "--quantize", "int8", "--fast", "off", "--threads", "1"]  # fmt: skip
    assert main(args + ["--json"]) == 0
    rows = {r["implementation"]: r for r in json.loads(capsys.readouterr().out)}
    ours, theirs = rows["tinyslm"], rows["transformers"]
    assert set(ours["prefill"]) == {"8", "16"}  # 999 tokens exceed the model's context of 128: skipped
    assert ours["decode"]["runs"] == 2 and ours["decode"]["min"] <= ours["decode"]["median"] <= ours["decode"]["max"]
    assert ours["threads"] == 1 and ours["read_bandwidth_gbs"] > 0
    # int8 weights: a quarter of float32 bytes, plus the scales and float norms
    assert ours["weight_bytes_per_token"] < theirs["weight_bytes_per_token"] / 3
    assert ours["bandwidth_fraction"] == ours["decode_tokens_per_s"] / ours["bandwidth_bound_tokens_per_s"]
    assert ours["decode_vs_transformers"] == ours["decode_tokens_per_s"] / theirs["decode_tokens_per_s"]
    assert "int8" in ours["notes"][0]
    assert main(args + ["--runs", "1"]) == 0  # the table
    out = capsys.readouterr().out
    assert "tinyslm vs transformers: decode" in out and "read bandwidth" in out and "prefill 16" in out


@pytest.mark.slow
def test_bench_rounds_interleave_the_implementations_and_pool_their_runs(tmp_path, monkeypatch):
    """--rounds 2: each implementation's worker runs twice, the order reversed in the second round, and its
    runs are pooled into one row (4 decode runs from 2 x --runs 2)."""
    import subprocess

    from tinyslm.tools import bench

    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    order = []
    real_run = subprocess.run

    def run(cmd, **kw):
        order.append(cmd[3])  # python -m tinyslm.tools.bench IMPL ...
        return real_run(cmd, **kw)

    monkeypatch.setattr(bench.subprocess, "run", run)
    rows = run_bench(tmp_path, prompt_tokens=4, new_tokens=3, prefill_tokens=(4,), runs=2, rounds=2, bandwidth=False)
    assert order == ["tinyslm", "transformers", "transformers", "tinyslm"]
    for row in rows:
        assert row["rounds"] == 2 and row["decode"]["runs"] == 4 and len(row["decode_runs"]) == 4
        assert row["prefill"]["4"]["runs"] == 4
        assert row["decode"]["min"] <= row["decode_tokens_per_s"] <= row["decode"]["max"]
    text = bench.format_bench(rows, str(tmp_path), "float32", 4, 3)
    assert "median of 4 runs (min..max) in 2 interleaved rounds" in text
    with pytest.raises(bench.TinySLMError, match="--rounds must be >= 1"):
        run_bench(tmp_path, rounds=0)


@pytest.mark.slow
def test_bench_contention_measures_quiet_and_loaded_side_by_side_and_cleans_up(tmp_path, capsys, monkeypatch):
    import subprocess

    from tinyslm import machine
    from tinyslm.tools import contention

    started: list = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):  # the busy loops: counted, and checked to be gone afterwards
        p = real_popen(*args, **kwargs)
        started.append(p)
        return p

    monkeypatch.setattr(contention.subprocess, "Popen", popen)
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    capsys.readouterr()
    args = ["bench", str(tmp_path), "--contention", "2", "--prompt-tokens", "8", "--new-tokens", "4", "--runs", "2",
            "--rounds", "2", "--json"]  # fmt: skip  (4 worker processes: quiet and loaded, 2 rounds)
    assert main(args) == 0
    (row,) = json.loads(capsys.readouterr().out)  # a folder: tinyslm only (llama.cpp reads GGUF files)
    assert row["implementation"] == "tinyslm" and row["busy"] == 2
    assert len(row["quiet_runs"]) == len(row["loaded_runs"]) == 4  # 2 runs x 2 rounds each
    assert row["loaded_vs_quiet"] == pytest.approx(row["loaded_tokens_per_s"] / row["quiet_tokens_per_s"])
    loops = [p for p in started if p.args[1:2] == ["-c"]]  # (the workers are Popens too)
    assert len(loops) == 2 * 2 and all(p.poll() is not None for p in loops)  # 2 loops a loaded run, all ended
    table = contention.format_contention([row], str(tmp_path), 4, 8)
    assert machine.describe() in table and "loaded/quiet" in table and "beside 2 busy processes" in table
    assert main(["bench", str(tmp_path), "--contention", "0", "--prompt-tokens", "8"]) == 2
    assert "--contention" in capsys.readouterr().err


def test_bench_sampling_prints_each_sampler_beside_greedy(tmp_path, capsys):
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    capsys.readouterr()
    assert main(["bench", str(tmp_path), "--sampling", "--runs", "2", "--prompt-tokens", "8", "--new-tokens", "4", "--json"]) == 0
    rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["greedy"]["ratio_to_greedy"] == 1.0
    assert {"temperature 0.7", "temperature 0.7, multinomial draw", "temperature 0.7, top_p 0.9"} <= set(rows)
    assert all(len(r["tokens_per_s"]) == 2 and r["median_tokens_per_s"] > 0 for r in rows.values())
    for argv in (["--new-tokens", "1"], ["--runs", "0"]):  # no time between tokens, no round: refused up front
        assert main(["bench", str(tmp_path), "--sampling", "--prompt-tokens", "8", *argv]) == 2
        assert "--sampling needs" in capsys.readouterr().err
