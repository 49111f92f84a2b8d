"""`tinyslm bench MODEL --sampling`: what sampling costs beside greedy decoding, side by side in one process.

A run's speed is 1 / the median time between its tokens (a shared machine's bursts of load move a mean more).

Each round decodes the same prompt greedily, then with each sampler (SETTINGS), all on the fastest decoding
path the model has (runtime.fast_decoding); `runs` rounds, interleaved, so that a machine whose speed drifts
weighs on every row alike. A row's ratio is the median over rounds of its speed / that round's greedy speed.
"multinomial draw" is the temperature row drawn as the reference decoder (and transformers) draws; the others
draw by inverse CDF, as the fast paths do (sampling.py). Figures on a named CPU: docs/performance.md#sampling.
"""

from __future__ import annotations

import statistics
import time

import torch

from ..generate import generate as reference_generate
from ..pretrained import load_pretrained
from ..runtime import fast_decoding, generate
from ..sampling import Sampler

SETTINGS = {  # row -> (sampling options, draw)
    "greedy": ({}, None),
    "temperature 0.7": ({"temperature": 0.7}, "inverse_cdf"),
    "temperature 0.7, multinomial draw": ({"temperature": 0.7}, "multinomial"),
    "temperature 0.7, top_k 50": ({"temperature": 0.7, "top_k": 50}, "inverse_cdf"),
    "temperature 0.7, top_p 0.9": ({"temperature": 0.7, "top_p": 0.9}, "inverse_cdf"),
    "temperature 0.7, min_p 0.05": ({"temperature": 0.7, "min_p": 0.05}, "inverse_cdf"),
}


def run_sampling_bench(path, dtype: str | None = None, prompt_tokens: int = 16, new_tokens: int = 64,
                       runs: int = 5) -> list[dict]:  # fmt: skip
    """One row per SETTINGS entry: decode speeds of each round (tok/s), their median, the median ratio to greedy."""
    model = load_pretrained(path, dtype=dtype)
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(0))
    speeds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with fast_decoding(model) as decoder:
        path_name = None
        for _ in range(runs + 1):  # the first round warms up (caches, the kernels' threads) and is dropped
            for name, (options, draw) in SETTINGS.items():
                times: list[float] = []
                stamp = lambda _token: times.append(time.perf_counter())  # noqa: E731
                if draw == "multinomial":  # the reference's draw on the fast path's logits
                    reference_generate(model, prompt, new_tokens, on_token=stamp, decoder=decoder,
                                       sampler=Sampler(**options, seed=0))  # fmt: skip
                else:
                    generate(model, prompt, new_tokens, on_token=stamp, decoder=decoder, seed=0, **options)
                # the median time between tokens: a burst of load on a shared machine moves it less than the mean
                speeds[name].append(1 / statistics.median(b - a for a, b in zip(times, times[1:])))
                path_name = decoder.path
    rows = []
    for name, values in speeds.items():
        values = values[1:]
        ratios = [v / g for v, g in zip(values, speeds["greedy"][1:])]
        rows.append({"setting": name, "tokens_per_s": values, "median_tokens_per_s": statistics.median(values),
                     "ratio_to_greedy": statistics.median(ratios), "path": path_name})  # fmt: skip
    return rows


def format_sampling_bench(rows: list[dict], path, new_tokens: int) -> str:
    lines = [f"{path}: {new_tokens} new tokens a run, {len(rows[0]['tokens_per_s'])} interleaved rounds, decoded by "
             f"the {rows[0]['path']}, {torch.get_num_threads()} threads",
             f"{'sampling':40s} {'median tok/s':>13s} {'x greedy':>9s}   per round"]  # fmt: skip
    for row in rows:
        rounds = ", ".join(f"{v:.0f}" for v in row["tokens_per_s"])
        lines.append(f"{row['setting']:40s} {row['median_tokens_per_s']:13.1f} {row['ratio_to_greedy']:9.3f}   {rounds}")
    return "\n".join(lines)
