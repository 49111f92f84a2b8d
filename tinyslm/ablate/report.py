"""The ablation's outputs: seed statistics, report.md, results.json and the plots.

Spread. With K seeds each metric gets mean, standard deviation (K-1 in the denominator) and
the [min, max] range over seeds. Two variants' difference is called *within the spread* when
their seed ranges overlap: some seed of one did at least as well as some seed of the other, so
the run does not show which is better. It is a deliberately conservative reading for small K (a
difference outside it is not a significance test either); with one seed there is no spread and
the report says so instead of ranking noise.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..tools.stats import human
from .run import mqar_baselines, variant_toml, write_text_atomic

METRICS = {  # key in a run -> (label, format, lower is better)
    "final_val_loss": ("val loss", "{:.4f}", True),
    "val_bpb": ("val bits/byte", "{:.4f}", True),
    "final_train_loss": ("train loss", "{:.4f}", True),
    "mqar_accuracy": ("MQAR accuracy", "{:.3f}", False),
    "train_tokens_per_s": ("train tok/s", "{:,.0f}", False),
    "decode_tokens_per_s": ("decode tok/s", "{:,.0f}", False),
    "wall_s": ("wall s", "{:.1f}", True),
}
COMPARED = ("final_val_loss", "val_bpb", "mqar_accuracy")  # the quality metrics the report compares
PLOTS = ("loss_curves.png", "val_loss_vs_kv.png", "recall_vs_kv.png")


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Add per-variant {"summary": {metric: {mean, std, min, max, n}}} and the pairwise spread statements."""
    for row in results["variants"]:
        row["summary"] = {}
        for key in METRICS:
            values = [r[key] for r in row["runs"] if r.get(key) is not None and math.isfinite(r[key])]
            if values:
                row["summary"][key] = {
                    "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
                    "min": min(values), "max": max(values), "n": len(values),
                }  # fmt: skip
    results["comparisons"] = compare(results["variants"])
    return results


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant against the first one listed (the reference), per quality metric."""
    out = []
    if len(rows) < 2:
        return out
    ref = rows[0]
    for row in rows[1:]:
        for key in COMPARED:
            a, b = ref["summary"].get(key), row["summary"].get(key)
            if a is None or b is None:
                continue
            lower_better = METRICS[key][2]
            delta = b["mean"] - a["mean"]
            if min(a["n"], b["n"]) < 2:
                verdict = "single seed: no spread to compare against"
            elif b["max"] >= a["min"] and a["max"] >= b["min"]:
                verdict = "within the spread"
            else:
                better = (delta < 0) == lower_better
                verdict = f"{'better' if better else 'worse'} than {ref['name']} on every seed"
            out.append({"metric": key, "reference": ref["name"], "variant": row["name"], "delta": delta,
                        "verdict": verdict})  # fmt: skip
    return out


def _cell(summary: dict[str, Any], key: str) -> str:
    s = summary.get(key)
    if s is None:
        return "-"
    fmt = METRICS[key][1]
    text = fmt.format(s["mean"])
    if s["std"] is not None:
        text += " ± " + fmt.format(s["std"])
    return text


def render_markdown(results: dict[str, Any], command: str | None = None) -> str:
    s, rows = results["settings"], results["variants"]
    k = s["seeds"]
    ctx = s["context"]
    dtype = s["kv_dtype"]
    lines = [f"# Attention ablation of `{results['base']}`", ""]
    if command:
        lines += ["```", command, "```", ""]
    data = results["data"]
    lines += [
        f"LM runs: {s['steps']} steps x {s['batch_size']} sequences x {s['seq_len']} tokens on `{data['source']}` "
        f"({data['train_tokens']:,} train / {data['val_tokens']:,} validation tokens, vocabulary {data['vocab_size']:,}); "
        f"AdamW, peak lr {s['lr']:g}. Every variant reads the same batches and starts from the same seed.",
    ]
    if results.get("mqar"):
        m = results["mqar"]
        bars = mqar_baselines(m["vocab_size"], m["n_pairs"])
        lines.append(
            f"MQAR runs: {s['mqar_steps']} steps x {s['mqar_batch_size']} sequences, {m['n_pairs']} key-value pairs and "
            f"{m['n_queries']} queries in {m['seq_len']} tokens, vocabulary {m['vocab_size']}, the variant's attention "
            f"in {'its own depth' if not s.get('mqar_layers') else str(s['mqar_layers']) + ' layers'} with an untied "
            f"head; accuracy on 512 held-out examples (chance {bars['chance']:.3f}, guessing one of "
            f"{m['vocab_size'] - m['vocab_size'] // 2} value tokens; {bars['in_context']:.3f} picking one of the "
            f"{m['n_pairs']} stated values without recall)."
        )
    seeds = f"mean ± standard deviation over {k} seeds" if k > 1 else "one seed (no spread: use --seeds 3)"
    machine = results["machine"]
    lines += [f"Figures: {seeds}. Total wall time {results['wall_s'] / 60:.1f} min on {machine['cpus']} CPUs "
              f"(torch threads: {machine['torch_threads']}).", ""]  # fmt: skip

    head = ["variant", "layout", "params", f"KV/token ({dtype})", f"KV @ {ctx:,}", "val loss", "val bits/byte",
            "MQAR acc", "train tok/s", "decode tok/s", "wall s"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        sm = row["summary"]
        cells = [f"`{row['name']}`", row["layout"], human(row["parameters"]),
                 f"{row['kv_cache_bytes_per_token']:,} B", human(row["kv_cache_bytes_at_context"], "B"),
                 _cell(sm, "final_val_loss"), _cell(sm, "val_bpb"), _cell(sm, "mqar_accuracy"),
                 _cell(sm, "train_tokens_per_s"), _cell(sm, "decode_tokens_per_s"), _cell(sm, "wall_s")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"KV columns: the cache of all layers, as `tinyslm inspect configs/<variant>.toml --context {ctx}` "
                 f"reports it ({dtype}; the configs/ folder beside this report). Speeds are wall-clock figures of "
                 "this machine, slowed by whatever else ran on it at the time.")  # fmt: skip
    lines.append("")

    m = results.get("mqar")
    recall = [row["summary"]["mqar_accuracy"]["max"] for row in rows if "mqar_accuracy" in row["summary"]]
    if m and recall and max(recall) < (bar := mqar_baselines(m["vocab_size"], m["n_pairs"])["in_context"]) + 0.05:
        lines += [f"No variant recalled better than picking one of the {m['n_pairs']} stated values ({bar:.3f}) within "
                  f"{s['mqar_steps']} MQAR steps: recall "
                  "is learned suddenly, when an induction circuit forms after a plateau (Olsson et al. 2022), and these "
                  "runs ended before it; "
                  "raise --mqar-steps to compare the variants on it.", ""]  # fmt: skip
    if results["comparisons"]:
        ref = results["comparisons"][0]["reference"]
        lines += ["## Which differences are within the spread", "",
                  f"Each variant against `{ref}`. A difference is *within the spread* when the two variants' ranges "
                  "over seeds overlap: this run cannot tell them apart.", ""]  # fmt: skip
        by_variant: dict[str, list[str]] = {}
        for c in results["comparisons"]:
            label, fmt, _ = METRICS[c["metric"]]
            by_variant.setdefault(c["variant"], []).append(f"{label} {_signed(fmt, c['delta'])} ({c['verdict']})")
        lines += [f"- `{name}`: " + "; ".join(parts) for name, parts in by_variant.items()]
        lines.append("")
    plots = [p for p in PLOTS if p in results.get("plots", [])]
    if plots:
        lines += ["## Plots", ""]
        captions = {"loss_curves.png": "Loss curves", "val_loss_vs_kv.png": "Validation loss vs KV bytes per token",
                    "recall_vs_kv.png": "MQAR recall accuracy vs KV bytes per token"}  # fmt: skip
        lines += [f"![{captions[p]}]({p})" for p in plots] + [""]
    elif results.get("plots_skipped"):
        lines += [f"(Plots skipped: {results['plots_skipped']}.)", ""]
    return "\n".join(lines)


def _signed(fmt: str, value: float) -> str:
    return ("+" if value >= 0 else "-") + fmt.format(abs(value))


def plot(results: dict[str, Any], out: Path) -> list[str]:
    """The three PNGs; returns the file names written. Needs matplotlib (the `plots` extra)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    rows = results["variants"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    written = []
    over = seeds_label(sorted({r["seed"] for row in rows for r in row["runs"]}))

    has_mqar = any("mqar_history" in r for row in rows for r in row["runs"])
    fig, axes = plt.subplots(1, 2 if has_mqar else 1, figsize=(12 if has_mqar else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for i, row in enumerate(rows):
        color = colors[i % len(colors)]
        steps, train = _mean_curve([r["history"] for r in row["runs"]], "loss")
        ax.plot(steps, _smooth(train), color=color, alpha=0.9, label=f"{row['name']} train")
        vsteps, val = _mean_curve([[h for h in r["history"] if "val_loss" in h] for r in row["runs"]], "val_loss")
        ax.plot(vsteps, val, "o--", color=color, markersize=4, label=f"{row['name']} val")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=f"LM loss ({over})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: no tick at 2.5
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    if has_mqar:
        ax = axes[0][1]
        for i, row in enumerate(rows):
            steps, loss = _mean_curve([r["mqar_history"] for r in row["runs"] if "mqar_history" in r], "loss")
            ax.plot(steps, _smooth(loss), color=colors[i % len(colors)], label=row["name"])
        mqar_over = seeds_label(sorted({r["seed"] for row in rows for r in row["runs"] if "mqar_history" in r}))
        ax.set(xlabel="step", ylabel="loss on answers (nats)", title=f"MQAR training loss ({mqar_over})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out / "loss_curves.png", plt))

    m = results.get("mqar")
    for key, name, ylabel, baselines in (
        ("final_val_loss", "val_loss_vs_kv.png", "validation loss (nats/token)", None),
        ("mqar_accuracy", "recall_vs_kv.png", "MQAR accuracy", m and mqar_baselines(m["vocab_size"], m["n_pairs"])),
    ):
        points = [(row, row["summary"].get(key)) for row in rows if row["summary"].get(key)]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        seen: dict[int, int] = {}  # variants with the same KV bytes per token: stack their labels
        for row, sm in points:
            x = row["kv_cache_bytes_per_token"]
            ax.errorbar(x, sm["mean"], yerr=sm["std"] or 0, fmt="o", capsize=4,
                        color=colors[rows.index(row) % len(colors)])  # fmt: skip
            ax.annotate(row["name"], (x, sm["mean"]), textcoords="offset points", xytext=(6, 4 - 11 * seen.get(x, 0)),
                        fontsize=9)  # fmt: skip
            seen[x] = seen.get(x, 0) + 1
        if key == "mqar_accuracy":
            ax.set_ylim(0, 1.02)
        if baselines:
            values = m["vocab_size"] - m["vocab_size"] // 2
            ax.axhline(baselines["chance"], color="gray", linestyle=":",
                       label=f"chance: 1 of {values} value tokens ({baselines['chance']:.3f})")  # fmt: skip
            ax.axhline(baselines["in_context"], color="gray", linestyle="--",
                       label=f"1 of the {m['n_pairs']} stated values, no recall ({baselines['in_context']:.3f})")  # fmt: skip
            ax.legend(fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set(xlabel=f"KV-cache bytes per token ({results['settings']['kv_dtype']}, all layers, log scale)",
               ylabel=ylabel, title=f"{ylabel} vs KV cache ({over})")  # fmt: skip
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        written.append(_save(fig, out / name, plt))
    return written


def seeds_label(seeds: list[int]) -> str:
    """What a plotted figure is: "mean over 3 seeds", or "seed 0" when there is one run per variant."""
    return f"mean over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}" if seeds else "no runs"


def _save(fig, path: Path, plt) -> str:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path.name


def _mean_curve(histories: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """Mean over seeds at each step that every seed has."""
    if not histories:
        return [], []
    common = set.intersection(*(set(h["step"] for h in hist if key in h) for hist in histories))
    steps = sorted(common)
    by = [{h["step"]: h[key] for h in hist if key in h} for hist in histories]
    return steps, [statistics.fmean(b[s] for b in by) for s in steps]


def _smooth(values: list[float]) -> list[float]:
    """Centered moving average over ~4% of the run (no lag, unlike an exponential average)."""
    half = len(values) // 50
    return [statistics.fmean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]


def write_outputs(results: dict[str, Any], out: Path, command: str | None = None) -> list[Path]:
    """results.json, report.md, configs/<variant>.toml and the plots, each written whole then renamed."""

    out.mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(exist_ok=True)
    for row in results["variants"]:
        write_text_atomic(out / "configs" / f"{row['name']}.toml", variant_toml(row["config"]))
    try:
        results["plots"] = plot(results, out)
    except ImportError:
        results["plots"], results["plots_skipped"] = [], "matplotlib is not installed (pip install 'tinyslm[plots]')"
    write_text_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_text_atomic(out / "report.md", render_markdown(results, command))
    return [out / "report.md", out / "results.json", *(out / p for p in results["plots"])]
