"""`tinyslm bench MODEL --contention N`: decode speed quiet and beside N busy processes, side by side.

On a shared machine (a class server, a laptop that is compiling) threads that wait for each other lose time
slices to other processes; this measures by how much. Each implementation (tinyslm; llama.cpp on a .gguf, when
llama-cpp-python is installed) decodes in a fresh process, as `tinyslm bench` measures it (bench.py's worker),
once on the quiet machine and once beside N processes that spin on a core each; `rounds` repeats the pair,
reversing the order every other round. The rows give the medians and the loaded/quiet ratio
(docs/machines.md has figures). Numbers are measurements on this machine, printed, never asserted.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .. import machine
from ..checkpoint import default_dtype, load_config
from ..errors import TinySLMError
from ..gguf.loader import gguf_path
from .bench import _run_worker


@contextlib.contextmanager
def busy_loops(n: int):
    """n processes that spin on a core each for the duration of the block (a shared machine's load), then end."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let the scheduler spread them
        yield
    finally:
        for p in loops:
            p.kill()
            p.wait()


def run_contention(folder: str | Path, busy: int, dtype: str | None = None, prompt_tokens: int = 16,
                   new_tokens: int = 32, *, runs: int = 3, threads: int | None = None, llama_cpp: bool = True,
                   timeout: float = 600.0, rounds: int = 1) -> list[dict]:  # fmt: skip
    """Decode speed quiet and beside `busy` busy processes, for tinyslm and (a .gguf, when installed) llama.cpp,
    each in a fresh process, one after the other; `rounds` repeats quiet/loaded pairs, order reversed every
    other round. A loaded run that takes longer than `timeout` seconds is reported as such. Rows: implementation,
    quiet and loaded tokens/s (medians over the runs of every round), their ratio."""
    path = Path(folder).expanduser()
    if busy < 1 or rounds < 1 or runs < 1:
        raise TinySLMError(f"--contention, --rounds and --runs must be >= 1, found {busy}, {rounds}, {runs}")

    config = load_config(path)
    dtype = dtype or str(default_dtype(path)).removeprefix("torch.")
    if path.is_dir() and not (path / "config.json").exists():
        path = gguf_path(path)
    opts = {"dtype": dtype, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "prefill_tokens": [], "runs": runs,
            "quantize": None, "fast": "auto", "vocab_size": config.vocab_size, "threads": threads, "attention": "sdpa"}  # fmt: skip
    impls = ["tinyslm"] + (["llama.cpp"] if path.suffix == ".gguf" and llama_cpp else [])
    runs_of: dict[str, dict[str, list[float]]] = {impl: {"quiet": [], "loaded": []} for impl in impls}
    notes: dict[str, str] = {}  # what failed (a run that did not finish, a reference not installed)
    remarks: dict[str, str] = {}  # how it was measured (the workers' notes)
    for r in range(rounds):
        for impl in impls if r % 2 == 0 else impls[::-1]:
            if impl in notes and not runs_of[impl]["quiet"]:
                continue  # not installed, or failing on this file
            for state in ("quiet", "loaded") if r % 2 == 0 else ("loaded", "quiet"):
                with busy_loops(busy) if state == "loaded" else contextlib.nullcontext():
                    row, message = _run_worker(impl, path, opts, timeout=timeout)
                if row is None:
                    if impl == "tinyslm" and state == "quiet":
                        raise TinySLMError(f"bench worker for tinyslm failed: {message}")
                    notes[impl] = f"{state}: {message}"
                    continue
                runs_of[impl][state].extend(row["decode_runs"])
                runs_of[impl]["threads"] = row["threads"]
                if row.get("notes"):
                    remarks[impl] = "; ".join(row["notes"])
    rows = []
    for impl in impls:
        quiet, loaded = runs_of[impl]["quiet"], runs_of[impl]["loaded"]
        row = {"implementation": impl, "busy": busy, "threads": runs_of[impl].get("threads"),
               "quiet_tokens_per_s": statistics.median(quiet) if quiet else None,
               "loaded_tokens_per_s": statistics.median(loaded) if loaded else None, "quiet_runs": quiet,
               "loaded_runs": loaded, "note": "; ".join(n for n in (notes.get(impl), remarks.get(impl)) if n) or None}  # fmt: skip
        row["loaded_vs_quiet"] = (row["loaded_tokens_per_s"] / row["quiet_tokens_per_s"]
                                  if quiet and loaded else None)  # fmt: skip
        rows.append(row)
    return rows


def format_contention(rows: list[dict], folder: str, new_tokens: int, prompt_tokens: int) -> str:

    busy = rows[0]["busy"]
    lines = [f"{folder}: decode {new_tokens} greedy tokens after a {prompt_tokens}-token prompt, quiet and beside "
             f"{busy} busy process{'es' if busy != 1 else ''} (the machine has {machine.usable_cpus()} CPUs); "
             f"{machine.describe()}",
             f"{'implementation':<13} {'threads':>7} {'quiet tok/s':>12} {'loaded tok/s':>13} {'loaded/quiet':>13}"]  # fmt: skip
    for r in rows:
        fmt = lambda v, spec: f"{v:{spec}}" if v is not None else "-"  # noqa: E731
        lines.append(f"{r['implementation']:<13} {fmt(r['threads'], '>7')} {fmt(r['quiet_tokens_per_s'], '>12.1f')} "
                     f"{fmt(r['loaded_tokens_per_s'], '>13.1f')} {fmt(r['loaded_vs_quiet'], '>13.2f')}"
                     + (f"  ({r['note']})" if r["note"] else ""))  # fmt: skip
    return "\n".join(lines)
