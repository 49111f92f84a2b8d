"""`tinyslm bench`: load time, memory, prefill and decode speed; tinyslm, transformers and llama.cpp side by side.

Each implementation runs in its own fresh Python process, so its load time and peak memory are its
own: load RSS is the growth of the process's peak resident set over the load (the library already
imported: an import is not a load), also as a multiple of the bytes the weights then take in memory
(each parameter and buffer once; llama.cpp: the file's tensors); peak RSS, its growth to the end.
Every implementation decodes greedily with its KV cache, one token per step, from the same random
prompt; prefill is timed separately at each of `prefill_tokens` (one forward over the prompt).
Each measurement is repeated `runs` times after one warm-up; the report gives the median and the
spread (min..max). With `rounds` > 1 the whole comparison runs that many times, the implementations'
order reversed every other round, and each one's runs are pooled: on a shared machine whose speed
drifts over minutes (measured here: 10-30% between runs), the drift then weighs on every
implementation alike instead of on whichever happened to run during a slow spell.

The bandwidth bound: decoding one token reads every weight of the decoder and the head once (the
embedding only one row), so tokens/s <= read bandwidth / weight bytes. The bandwidth is measured
here, by a streaming read (a sum over a buffer far larger than the caches), and each row reports
the fraction of that bound it reached: near 1, decoding is as fast as the memory allows; far
below, something else (Python dispatch, a slow kernel) bounds it.

    tinyslm        tinyslm.load_pretrained (+ tinyslm.quantize with --quantize) + tinyslm.generate
    transformers   AutoModelForCausalLM on the same folder (a .gguf: its `gguf_file` loader, which
                   dequantizes), greedy over its own forward and cache (parity.reference_greedy)
    llama.cpp      llama-cpp-python on the same .gguf, when installed (the optional `llamacpp` extra)

Numbers are measurements on this machine, printed, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import machine
from ..checkpoint import default_dtype, load_config, load_pretrained
from ..config import dtype_from_name
from ..errors import TinySLMError
from ..runtime import generate
from ..gguf.loader import gguf_path
from ..gguf.reader import GGUFFile
from ..layers.attention import set_attention_backend
from ..quant import native
from ..quant import quantize as quantize_model
from ..quant.float_mv import float_kernels
from ..runtime import FAST_CHOICES, fast_decoding
from .parity import import_transformers, reference_greedy

IMPLEMENTATIONS = ("tinyslm", "transformers", "llama.cpp")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def read_bandwidth_gbs(mb: int = 512, repeats: int = 5) -> float:
    """Best GB/s of summing a float32 buffer of `mb` MB with torch's threads (a streaming read)."""
    buf = torch.ones(mb * 2**20 // 4)
    buf.sum()  # fault the pages in
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        buf.sum()
        times.append(time.perf_counter() - t0)
    return buf.numel() * 4 / min(times) / 1e9  # the fastest read: what the memory can do when nothing else runs


def decode_bytes(model) -> int:
    """Bytes one decoding step reads: every parameter and buffer except the token embedding (one row
    per token), counting a tied head once, as it is read in full."""
    seen, total = set(), 0
    head = getattr(model, "head", None)
    tied = head is not None and getattr(head, "weight", None) is model.tok_emb.weight
    skip = set() if tied else {model.tok_emb.weight.data_ptr()}
    for t in list(model.parameters()) + list(model.buffers()):
        ptr = t.data_ptr()
        if ptr in seen or ptr in skip or t.dtype == torch.long:
            continue
        seen.add(ptr)
        total += t.numel() * t.element_size()
    return total


def held_bytes(model) -> int:
    """Bytes of every parameter and buffer (each storage once): the weights as they sit in memory."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in list(model.parameters()) + list(model.buffers())}  # fmt: skip
    return sum(storages.values())


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


# ---- the workers (each in its own process) ------------------------------------------------------


def _load(impl: str, path: Path, dtype_name: str, quantize: str | None, threads: int, attention: str = "sdpa",
          extra_buffers: bool = True):  # fmt: skip
    """-> (an object to measure, weight bytes per decoded token, notes)."""
    dtype = dtype_from_name(dtype_name)
    if impl == "tinyslm":
        model = load_pretrained(str(path), dtype=dtype)
        set_attention_backend(model, attention)  # sdpa by default: transformers' own default
        notes = []
        if quantize:
            quantize_model(model, quantize)
            notes.append(f"{quantize}: {len(model.quantization['layers'])} layers")
        return model, decode_bytes(model), held_bytes(model), notes
    if impl == "transformers":
        auto = import_transformers().AutoModelForCausalLM
        if path.suffix == ".gguf":  # transformers dequantizes GGUF weights to `dtype`
            model = auto.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype,
                                         attn_implementation=attention).eval()  # fmt: skip
        else:
            model = auto.from_pretrained(str(path), dtype=dtype, attn_implementation=attention).eval()
        nbytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n)
        if model.config.tie_word_embeddings:
            nbytes += model.get_input_embeddings().weight.numel() * model.get_input_embeddings().weight.element_size()
        notes = [] if not quantize else ["unquantized (transformers has no CPU int kernel here)"]
        return model, nbytes, held_bytes(model), notes
    try:
        from llama_cpp import Llama
    except ImportError:
        raise TinySLMError("llama-cpp-python is not installed (pip install llama-cpp-python)") from None
    notes = []
    if not extra_buffers:  # (llama-cpp-python has no argument for it: its default model parameters, changed)
        import llama_cpp.llama as llama_module

        defaults = llama_module.llama_cpp.llama_model_default_params

        def without_extra_buffers():
            params = defaults()
            params.use_extra_bufts = False
            return params

        llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
        notes.append("without its extra buffer types (AMX, repacked weights): with them it crashed on this CPU")
    llm = Llama(model_path=str(path), n_ctx=4096, n_batch=512, n_threads=threads, n_threads_batch=threads,
                verbose=False, logits_all=False)  # fmt: skip
    tensors = GGUFFile(path).tensors
    nbytes = sum(t.data.nbytes for name, t in tensors.items() if name != "token_embd.weight" or "output.weight" not in tensors)
    return llm, nbytes, sum(t.data.nbytes for t in tensors.values()), notes


def _greedy(impl: str, model, ids: torch.Tensor, new_tokens: int, fast: bool | None) -> tuple[float, float, list, object]:
    """One greedy decode -> (prefill seconds, decode tokens/s, the new tokens, tinyslm's decoder or None)."""
    times: list[float] = []
    decoder = None
    if impl == "llama.cpp":
        model.reset()
        t0 = time.perf_counter()
        model.eval(ids[0].tolist())
        tokens = []
        for i in range(new_tokens):
            token = int(np.argmax(model.scores[model.n_tokens - 1]))
            times.append(time.perf_counter())
            tokens.append(token)
            if i < new_tokens - 1:
                model.eval([token])
    else:
        on_token = lambda _token: times.append(time.perf_counter())
        with torch.inference_mode():
            t0 = time.perf_counter()
            if impl == "tinyslm":
                with fast_decoding(model, fast) as decoder:  # (it says which path decoded)
                    out = generate(model, ids, new_tokens, on_token=on_token, decoder=decoder)
                tokens = out[0, ids.shape[1] :].tolist()
            else:
                tokens = reference_greedy(model, ids, new_tokens, on_token=on_token)[0].tolist()
    rate = (new_tokens - 1) / (times[-1] - times[0]) if new_tokens > 1 else float("nan")
    return times[0] - t0, rate, tokens, decoder


def _prefill(impl: str, model, ids: torch.Tensor) -> float:
    """Seconds of one forward over the prompt with an empty cache (last position's logits only)."""
    if impl == "llama.cpp":
        model.reset()
        t0 = time.perf_counter()
        model.eval(ids[0].tolist())
        return time.perf_counter() - t0
    with torch.inference_mode():
        if impl == "tinyslm":
            cache = model.new_cache(1, ids.shape[1])
            with float_kernels(model):  # as generate's prefill computes
                t0 = time.perf_counter()
                model(ids, cache=cache, last_only=True)
        else:
            t0 = time.perf_counter()
            model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return time.perf_counter() - t0


def _measure(impl: str, path: str, opts: dict) -> dict:
    """Runs inside the worker process."""
    torch.manual_seed(0)
    if opts.get("threads"):
        torch.set_num_threads(opts["threads"])
    threads = torch.get_num_threads()
    if impl == "tinyslm":  # its native kernels are built once per machine (then cached): not part of loading
        native.available()
    elif impl == "transformers":  # importing a library (seconds, ~100s of MB) is not loading the model either
        with contextlib.suppress(Exception):  # (_load reports it missing)
            import_transformers().AutoModelForCausalLM
    else:
        with contextlib.suppress(ImportError):
            import llama_cpp  # noqa: F401
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    model, nbytes, held, notes = _load(impl, Path(path), opts["dtype"], opts.get("quantize"), threads,
                                       opts.get("attention", "sdpa"), opts.get("extra_buffers", True))  # fmt: skip
    load_s = time.perf_counter() - t0
    load_rss = _peak_rss_mb() - base
    vocab, prompt, new = opts["vocab_size"], opts["prompt_tokens"], opts["new_tokens"]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, max([prompt, *opts["prefill_tokens"]])), generator=gen)
    fast = FAST_CHOICES[opts.get("fast", "auto")]

    t_warm = time.perf_counter()
    # warm-up: first-call allocations, kernel choice, compile
    decoder = _greedy(impl, model, ids[:, :prompt], new, fast)[3]
    compile_s, decode_path = (decoder.compile_s, decoder.path) if decoder is not None else (None, None)
    warm_s = time.perf_counter() - t_warm
    prefill: dict[str, list[float]] = {str(n): [] for n in opts["prefill_tokens"]}
    decode, first_prefill, tokens = [], [], None
    for _ in range(opts["runs"]):
        for n in opts["prefill_tokens"]:
            prefill[str(n)].append(1000 * _prefill(impl, model, ids[:, :n]))
        p, rate, tokens, _ = _greedy(impl, model, ids[:, :prompt], new, fast)
        first_prefill.append(1000 * p)
        decode.append(rate)
    return {
        "implementation": impl,
        "load_s": load_s,
        "load_rss_growth_mb": load_rss,
        "weights_in_memory_mb": held / 2**20,
        "load_rss_vs_weights": load_rss / (held / 2**20),  # issue target: at most 1.1
        "peak_rss_growth_mb": _peak_rss_mb() - base,
        "weight_bytes_per_token": nbytes,
        "warmup_s": warm_s,
        "compile_s": compile_s,
        "decode_path": decode_path,  # tinyslm's: "native step", "compiled step" or "module path"
        "prefill_ms": statistics.median(first_prefill),  # the decode run's own prefill (prompt_tokens)
        "prefill": {n: _summary(v) for n, v in prefill.items()},
        "prefill_runs": prefill,
        "decode_tokens_per_s": statistics.median(decode),
        "decode": _summary(decode),
        "decode_runs": decode,
        "tokens": tokens,
        "threads": threads,
        "attention": opts.get("attention", "sdpa"),
        "notes": notes,
    }


def _worker(argv: list[str]) -> int:
    impl, path, opts = argv[0], argv[1], json.loads(argv[2])
    try:
        row = _measure(impl, path, opts)
    except TinySLMError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps(row))
    return 0


# ---- the driver ---------------------------------------------------------------------------------


def run_bench(folder: str | Path, dtype: str | None = None, prompt_tokens: int = 128, new_tokens: int = 32, *,
              prefill_tokens: tuple[int, ...] = (128, 512), runs: int = 3, quantize: str | None = None,
              fast: str = "auto", llama_cpp: bool = True, bandwidth: bool = True,
              threads: int | None = None, transformers: bool = True, attention: str = "sdpa",
              rounds: int = 1) -> list[dict]:  # fmt: skip
    """Measure each implementation in a fresh process (`rounds` times, interleaved: the module docstring); one
    missing (transformers, llama-cpp-python) is skipped.

    dtype: None means what `load_pretrained` loads by default (float32; a GGUF's own precision).
    Returns one row per implementation (`bench.py` docstring); each row also carries the machine's
    measured read bandwidth, the bandwidth-bound decode speed and the fraction of it reached, and
    its decode/prefill ratios against the other implementations.
    """
    path = Path(folder).expanduser()  # the workers' transformers reads "~/x" as a Hub repo id
    if prompt_tokens < 1 or new_tokens < 1 or runs < 1 or rounds < 1:
        raise TinySLMError(f"--prompt-tokens, --new-tokens, --runs and --rounds must be >= 1, found {prompt_tokens}, "
                           f"{new_tokens}, {runs}, {rounds}")  # fmt: skip
    config = load_config(path)
    dtype = dtype or str(default_dtype(path)).removeprefix("torch.")
    if path.is_dir() and not (path / "config.json").exists():  # a folder holding a .gguf: bench the file
        path = gguf_path(path)
    sizes = [n for n in prefill_tokens if 0 < n <= config.max_seq_len]
    opts = {"dtype": dtype, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "prefill_tokens": sizes,
            "runs": runs, "quantize": quantize, "fast": fast, "vocab_size": config.vocab_size, "threads": threads,
            "attention": attention}  # fmt: skip
    gguf = path.is_file() and path.suffix == ".gguf"
    impls = [i for i in IMPLEMENTATIONS if (i != "llama.cpp" or (gguf and llama_cpp)) and (i != "transformers" or transformers)]
    if threads:
        torch.set_num_threads(threads)  # the bandwidth probe reads with as many threads as the workers
    gbs = read_bandwidth_gbs() if bandwidth else None
    measured: dict[str, list[dict]] = {impl: [] for impl in impls}
    skipped: dict[str, str] = {}
    for r in range(rounds):
        for impl in impls if r % 2 == 0 else impls[::-1]:  # every other round in reverse order
            if impl in skipped:
                continue
            row, message = _run_worker(impl, path, opts)
            if row is None:
                if impl == "tinyslm":
                    raise TinySLMError(f"bench worker for {impl} failed: {message}")
                # a reference missing, or failing on this file (llama.cpp on a GGUF with no vocabulary...): its row
                # says so and the others are still measured
                known = "is not installed" in message or "skipped" in message
                skipped[impl] = message if known else f"failed: {message}"
                continue
            measured[impl].append(row)
    rows = [{"implementation": impl, "skipped": skipped[impl]} if impl in skipped else _pool(measured[impl])
            for impl in impls]  # fmt: skip
    _add_ratios(rows, gbs)
    return rows


def _run_worker(impl: str, path: Path, opts: dict, timeout: float | None = None) -> tuple[dict | None, str]:
    """One implementation measured in a fresh process: (its row, "") or (None, why not)."""
    cmd = [sys.executable, "-m", "tinyslm.tools.bench", impl, str(path), json.dumps(opts)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if impl != "tinyslm" and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys():
        env["GOMP_SPINCOUNT"] = "300000"  # libgomp's own default for the references (tinyslm's import sets 10000)
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, f"did not finish in {timeout:.0f} s"
    lines = proc.stdout.strip().splitlines()
    if impl == "llama.cpp" and proc.returncode < 0 and opts.get("extra_buffers", True):
        # killed by a signal: llama-cpp-python 0.3.36's AMX buffers crash on a Xeon with AMX (SIGSEGV, measured);
        # measured again without its extra buffer types, and the row says so
        return _run_worker(impl, path, {**opts, "extra_buffers": False}, timeout)
    if proc.returncode != 0 or not lines:
        return None, (proc.stderr.strip().splitlines() or [f"no output (exit status {proc.returncode})"])[-1]
    return json.loads(lines[-1]), ""


def _pool(rounds: list[dict]) -> dict:
    """One implementation's row from its rounds: runs pooled (medians and spread over all of them), load time
    the median, memory the largest, tokens and notes the first round's."""
    row = dict(rounds[0], rounds=len(rounds))
    if len(rounds) == 1:
        return row
    decode = [v for r in rounds for v in r["decode_runs"]]
    prefill = {n: [v for r in rounds for v in r["prefill_runs"][n]] for n in row["prefill_runs"]}
    row.update(load_s=statistics.median(r["load_s"] for r in rounds),
               load_rss_growth_mb=max(r["load_rss_growth_mb"] for r in rounds),
               load_rss_vs_weights=max(r["load_rss_vs_weights"] for r in rounds),
               peak_rss_growth_mb=max(r["peak_rss_growth_mb"] for r in rounds),
               prefill_ms=statistics.median(r["prefill_ms"] for r in rounds),
               prefill={n: _summary(v) for n, v in prefill.items()}, prefill_runs=prefill,
               decode_tokens_per_s=statistics.median(decode), decode=_summary(decode), decode_runs=decode)  # fmt: skip
    return row


def _add_ratios(rows: list[dict], gbs: float | None) -> None:
    done = {r["implementation"]: r for r in rows if "skipped" not in r}
    for row in done.values():
        row["read_bandwidth_gbs"] = gbs
        if gbs:
            bound = gbs * 1e9 / row["weight_bytes_per_token"]
            row["bandwidth_bound_tokens_per_s"] = bound
            row["bandwidth_fraction"] = row["decode_tokens_per_s"] / bound
        for other, o in done.items():
            if other == row["implementation"]:
                continue
            row[f"decode_vs_{other}"] = row["decode_tokens_per_s"] / o["decode_tokens_per_s"]
            row[f"prefill_speed_vs_{other}"] = {
                n: o["prefill"][n]["median"] / s["median"] for n, s in row["prefill"].items() if n in o["prefill"]
            }


def format_bench(rows: list[dict], folder: str, dtype: str, prompt_tokens: int, new_tokens: int,
                 quantize: str | None = None) -> str:  # fmt: skip
    done = [r for r in rows if "skipped" not in r]
    sizes = list(done[0]["prefill"]) if done else []
    gbs = done[0].get("read_bandwidth_gbs") if done else None
    threads = done[0]["threads"] if done else torch.get_num_threads()
    runs = done[0]["decode"]["runs"] if done else 0
    rounds = done[0].get("rounds", 1) if done else 1
    attention = done[0].get("attention", "sdpa") if done else "sdpa"
    lines = [
        f"{folder}: {dtype}{', ' + quantize if quantize else ''}, decode {new_tokens} greedy tokens after a "
        f"{prompt_tokens}-token prompt, {attention} attention, {threads} thread{'s' if threads != 1 else ''}, "
        f"median of {runs} runs (min..max)" + (f" in {rounds} interleaved rounds" if rounds > 1 else "")
        + (f"; read bandwidth {gbs:.1f} GB/s" if gbs else ""),
        f"machine: {machine.describe()}",
        f"{'implementation':<13} {'load':>6} {'load RSS +':>17} {'peak RSS +':>10} {'weights/tok':>11}"
        + "".join(f" {'prefill ' + n:>20}" for n in sizes)
        + f" {'decode tok/s':>20} {'of bound':>8}",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['implementation']:<13} skipped: {r['skipped']}")
            continue
        line = (f"{r['implementation']:<13} {r['load_s']:>5.2f}s {r['load_rss_growth_mb']:>7.0f} MB "
                f"({r['load_rss_vs_weights']:.2f}x) {r['peak_rss_growth_mb']:>7.0f} MB "
                f"{r['weight_bytes_per_token'] / 1e6:>8.0f} MB")  # fmt: skip
        for n in sizes:
            s = r["prefill"].get(n)
            line += f" {s['median']:>7.1f} ms ({s['min']:.0f}..{s['max']:.0f})" if s else f" {'-':>20}"
        d = r["decode"]
        line += f" {d['median']:>7.1f} ({d['min']:.1f}..{d['max']:.1f})"
        line += f" {r['bandwidth_fraction']:>7.0%}" if r.get("bandwidth_fraction") else f" {'-':>8}"
        lines.append(line)
    names = [r["implementation"] for r in done]
    if "tinyslm" in names:
        t = done[names.index("tinyslm")]
        for other in names:
            if other != "tinyslm":
                pre = ", ".join(f"{n}: {v:.2f}x" for n, v in t[f"prefill_speed_vs_{other}"].items())
                lines.append(f"tinyslm vs {other}: decode {t[f'decode_vs_{other}']:.2f}x, prefill speed {pre}")
        lines.append(f"tinyslm decoded by the {t['decode_path']}")
        if t.get("compile_s") is not None:
            lines.append(f"tinyslm compiled its decoding step in {t['compile_s']:.1f} s (once per process; not in the figures)")
    for r in done:
        for note in r.get("notes", []):
            lines.append(f"note ({r['implementation']}): {note}")
    if len(done) >= 2:
        same = all(r["tokens"] == done[0]["tokens"] for r in done)
        lines.append(f"greedy tokens {'identical' if same else 'DIFFER'} between {', '.join(names)}"
                     + ("" if same or dtype == "float32" else " (expected where rounding differs: bf16/quantized)"))  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
