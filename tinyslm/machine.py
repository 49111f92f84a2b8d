"""The machine tinyslm runs on: its CPU, the decisions taken from the CPU (each one forceable), and how busy it is.

CPUs differ between a user's laptop, a class server and CI: AMD EPYC with AVX2 only, Intel Xeon with AVX-512
and AMX (native bfloat16), older CPUs without AVX2. Every decision tinyslm takes from the CPU can be forced by
an environment variable, read when the decision is taken, so that each branch runs (and is tested) on any
machine that can execute it at all:

    TINYSLM_NATIVE_BF16=1|0   whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX). Decides the
                              trainer's precision="auto" (bf16 autocast, or float32), the GEMM of a bfloat16
                              layer's prompt (bfloat16, or a float32 copy of the weight) and the dense dtype of
                              a quantized layer's prompt (quant/linear.py). Emulated bf16 runs anywhere, slowly.
    TINYSLM_KERNEL_ISA=native|avx2|generic   what the native kernels (kernels/) are compiled for: this CPU
                              (-march=native), AVX2 with FMA and F16C (the intrinsics paths), or plain x86-64
                              (the portable loops). Each is its own cached build; avx2 needs an AVX2 CPU.
    TINYSLM_QUANT_PREFILL=kernel|float32|bfloat16   how a quantized layer computes a prompt (quant/linear.py).
    TINYSLM_NATIVE=0          no native kernels at all: torch's own.
    ATEN_CPU_CAPABILITY=default|avx2|avx512   torch's own switch for the kernels it dispatches to.

A busy machine: threads that wait for each other by spinning (OpenMP's default) lose whole time slices when
another process holds the core their partner needs; `busy_note` and `SlowSteps` tell the user when that is
likely, and what to do (docs/performance.md has the measurements); TINYSLM_NOTES=0 silences them.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from functools import cache
from pathlib import Path

import torch

from .errors import ConfigError

KERNEL_ISAS = {  # TINYSLM_KERNEL_ISA -> the compiler's target and what the CPU must have to run the build
    "native": ("-march=native", ()),
    "avx2": ("-march=haswell", ("avx2", "fma", "f16c")),
    "generic": ("-march=x86-64", ()),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str) -> bool | None:
    """An environment variable read as a boolean: None when unset or empty; a clear error for anything else."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    if value in _TRUE + _FALSE:
        return value in _TRUE
    raise ConfigError(f"{name}={os.environ[name]!r}: expected 1 or 0 (true/false, yes/no, on/off)")


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo ({} where there is none: macOS, Windows)."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}


def cpu_model() -> str:
    """The CPU's name as the OS reports it, e.g. 'AMD EPYC 7B13' or 'Intel(R) Xeon(R) Platinum 8481C CPU'."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux's names: avx2, avx512f, avx512_bf16, amx_bf16, ...); empty where unknown."""
    return set(_cpuinfo().get("flags", "").split())


def instruction_sets() -> list[str]:
    """The vector instruction sets that matter to tinyslm, e.g. ['AVX2', 'AVX-512', 'AVX512-BF16', 'AMX']."""
    flags = cpu_flags()
    named = [("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_bf16")]
    return [name for name, flag in named if flag in flags]


def describe() -> str:
    """The CPU for a figure's caption: model and instruction sets, e.g. 'AMD EPYC 7B13 (AVX2)'."""
    sets = instruction_sets()
    return f"{cpu_model()} ({', '.join(sets) if sets else 'no AVX2'})"


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), or TINYSLM_NATIVE_BF16 says so."""
    forced = env_flag("TINYSLM_NATIVE_BF16")
    return _cpu_native_bf16() if forced is None else forced


@cache
def _cpu_native_bf16() -> bool:
    """What the CPU has (asked once: a bfloat16 layer's prompt asks per forward)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def kernel_isa() -> tuple[str, str]:
    """(name, compiler flag) of the instruction set the native kernels are built for (TINYSLM_KERNEL_ISA)."""
    name = os.environ.get("TINYSLM_KERNEL_ISA", "").strip().lower() or "native"
    if name not in KERNEL_ISAS:
        raise ConfigError(f"TINYSLM_KERNEL_ISA={name!r}: expected one of {', '.join(KERNEL_ISAS)}")
    march, needs = KERNEL_ISAS[name]
    missing = [f for f in needs if cpu_flags() and f not in cpu_flags()]
    if missing:
        raise ConfigError(f"TINYSLM_KERNEL_ISA={name}: this CPU ({cpu_model()}) lacks {', '.join(missing)}")
    return name, march


# ---- a busy machine ------------------------------------------------------------------------------------------


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def runnable_others(samples: int = 5, interval: float = 0.01) -> float | None:
    """How many other threads want a CPU right now: Linux's count of runnable threads (/proc/stat procs_running,
    which includes the reading one), the least of a few samples; the one-minute load average elsewhere (which
    also counts what ran in the last minute, this process's earlier work included); None where neither exists."""
    counts = []
    for i in range(samples):
        try:
            line = next(x for x in Path("/proc/stat").read_text().splitlines() if x.startswith("procs_running"))
            counts.append(int(line.split()[1]) - 1)
        except (OSError, StopIteration, ValueError, IndexError):
            break
        if i + 1 < samples:
            time.sleep(interval)
    if counts:
        return float(min(counts))
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return None


def notes_enabled() -> bool:
    """Machine notes (busy machine, slow steps) are on unless TINYSLM_NOTES=0."""
    return env_flag("TINYSLM_NOTES") is not False


def busy_note(threads: int, load: float | None = None) -> str | None:
    """One line of advice when other work already occupies the cores this run's `threads` would need, else None.

    `load`: how many other threads want a CPU (default: `runnable_others()`, measured now). Threads that wait
    for each other then wait for a core too, and can run several times slower than fewer threads would."""
    if load is None:
        if not notes_enabled():
            return None
        load = runnable_others()
        if load is None:
            return None
    cpus = usable_cpus()
    if load + threads <= cpus + 0.5:
        return None
    fewer = max(1, min(threads - 1, round(cpus - load)))
    others = f"{load:.0f} other runnable thread{'' if round(load) == 1 else 's'}"
    return (f"the machine is busy ({others} on {cpus} CPUs) and this run uses {threads} threads: expect it to "
            f"run slower than on a quiet machine; fewer threads (--threads {fewer}) or "
            "OMP_WAIT_POLICY=passive in the environment may help")  # fmt: skip


class SlowSteps:
    """Watches the durations of repeated steps (tokens, training steps) and says once when one takes far longer
    than the steps before it: the typical sign that the machine became busy during the run."""

    def __init__(self, what: str, threads: int, factor: float = 10.0, after: int = 4):
        self.what, self.threads, self.factor, self.after = what, threads, factor, after
        self.seconds: list[float] = []
        self.told = False

    def add(self, seconds: float) -> str | None:
        """Record one step; returns the line to print the first time a step is `factor` x the usual, else None."""
        usual = statistics.median(self.seconds) if len(self.seconds) >= self.after else None
        self.seconds.append(seconds)
        if self.told or usual is None or seconds <= self.factor * usual or not notes_enabled():
            return None
        self.told = True
        return (f"a {self.what} took {seconds:.2f} s, {seconds / usual:.0f}x the usual {usual * 1000:.0f} ms: the "
                f"machine is probably busy with other work; with {self.threads} threads, fewer (--threads) or "
                "OMP_WAIT_POLICY=passive in the environment may help")  # fmt: skip


def add_threads_option(parser) -> None:
    """The commands' --threads N (generate, train, demo; bench has its own)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads (default: torch's, usually one per core); fewer help on a busy machine")  # fmt: skip


def use_threads(n: int | None) -> int:
    """Set torch's (and so the kernels') thread count when n is given; returns the count in use."""
    if n is not None:
        if n < 1:
            raise ConfigError(f"--threads must be >= 1, found {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


_said: set[str] = set()  # the notes this process has printed: each one once (the demo's training would repeat it)


def say(note: str | None, out=None) -> None:
    """Print a machine note as one line on stderr (or through `out`), once per process."""
    if note and note not in _said:
        _said.add(note)
        (out or (lambda line: print(line, file=sys.stderr, flush=True)))(f"note: {note}")
