"""`tinyslm bench`: load time, memory, prefill and decode speed, side by side with transformers.

Each implementation runs in its own fresh Python process, so its peak memory is its own: the
figure is the growth of the process's peak resident set from just before loading to the end.
Both decode greedily with their KV cache, one token per forward, on the same random prompt:
tinyslm.generate, and parity.reference_greedy over transformers' forward (the loop parity checks).
Numbers are measurements on this machine, printed, never asserted.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..errors import TinySLMError

IMPLEMENTATIONS = ("tinyslm", "transformers")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _measure(impl: str, folder: str, dtype_name: str, prompt_tokens: int, new_tokens: int) -> dict:
    """Runs inside the worker process."""
    from ..config import dtype_from_name  # noqa: PLC0415

    dtype = dtype_from_name(dtype_name)
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    if impl == "tinyslm":
        from ..checkpoint import load_pretrained  # noqa: PLC0415
        from ..generate import generate  # noqa: PLC0415

        model = load_pretrained(folder, dtype=dtype)
    else:
        from .parity import import_transformers, reference_greedy  # noqa: PLC0415

        model = import_transformers().AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(0))

    def run() -> tuple[float, float, list[int]]:
        """One greedy decode -> (prefill seconds, seconds for the remaining tokens, the tokens)."""
        times: list[float] = []  # when each new token was decoded
        on_token = lambda _token: times.append(time.perf_counter())  # noqa: E731
        with torch.inference_mode():
            t0 = time.perf_counter()
            if impl == "tinyslm":
                new = generate(model, ids, new_tokens, on_token=on_token)[0, prompt_tokens:]
            else:
                new = reference_greedy(model, ids, new_tokens, on_token=on_token)[0]
        return times[0] - t0, times[-1] - times[0], new.tolist()

    run()  # warm-up: first-call allocations and kernel selection
    prefill_s, decode_s, tokens = run()
    return {
        "implementation": impl,
        "load_s": load_s,
        "peak_rss_growth_mb": _peak_rss_mb() - base,
        "prefill_ms": 1000 * prefill_s,
        "decode_tokens_per_s": (new_tokens - 1) / decode_s if new_tokens > 1 else float("nan"),
        "tokens": tokens,
    }


def run_bench(folder: str | Path, dtype: str = "float32", prompt_tokens: int = 128, new_tokens: int = 32) -> list[dict]:
    """Measure each implementation in a fresh process; transformers is skipped if not installed."""
    folder = Path(folder).expanduser()  # the workers' transformers reads "~/x" as a Hub repo id
    if prompt_tokens < 1 or new_tokens < 1:
        raise TinySLMError(f"--prompt-tokens and --new-tokens must be >= 1, found {prompt_tokens}, {new_tokens}")
    rows = []
    for impl in IMPLEMENTATIONS:
        cmd = [sys.executable, "-m", "tinyslm.tools.bench", impl, str(folder), dtype, str(prompt_tokens), str(new_tokens)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            if impl == "tinyslm" or "transformers is not installed" not in message:
                raise TinySLMError(f"bench worker for {impl} failed: {message}")
            rows.append({"implementation": impl, "skipped": message})
            continue
        rows.append(json.loads(lines[-1]))
    return rows


def format_bench(rows: list[dict], folder: str, dtype: str, prompt_tokens: int, new_tokens: int) -> str:
    lines = [
        f"{folder}: {dtype}, prompt {prompt_tokens} tokens, {new_tokens} greedy tokens, {torch.get_num_threads()} threads",
        f"{'implementation':<14} {'load':>8} {'peak RSS +':>11} {'prefill':>10} {'decode':>13}",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['implementation']:<14} skipped: {r['skipped']}")
            continue
        lines.append(
            f"{r['implementation']:<14} {r['load_s']:>7.2f}s {r['peak_rss_growth_mb']:>8.0f} MB "
            f"{r['prefill_ms']:>8.1f}ms {r['decode_tokens_per_s']:>8.1f} tok/s"
        )
    done = [r for r in rows if "tokens" in r]
    if len(done) == 2:
        same = done[0]["tokens"] == done[1]["tokens"]
        lines.append(f"greedy tokens {'identical' if same else 'DIFFER'} between the two implementations")
    return "\n".join(lines)


def _worker(argv: list[str]) -> int:
    impl, folder, dtype, prompt_tokens, new_tokens = argv
    try:
        row = _measure(impl, folder, dtype, int(prompt_tokens), int(new_tokens))
    except TinySLMError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
