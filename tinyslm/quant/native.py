"""The hand-written CPU kernels (kernels/: ggml_mm.cpp, float_mv.cpp, decode_block.cpp), built on first use.

torch has no CPU kernel for weights in GGUF's own blocks (a float16 scale per 32 values), and its
int4 kernel reads its weights at a fraction of the memory's speed when decoding (docs/performance.md,
"Decisions in the code"). So `ggml_pack`, `ggml_mm`, `ggml_dequantize`
(blocks.py), `float_mv` (float_mv.py) and `decode_block` (decode_block.py) are compiled from kernels/ the first time a process needs them, with torch's own extension builder
(the C++ compiler torch.compile uses too; once per CPU), for the CPU it runs on
(-march=native: AVX2 intrinsics where there is AVX2, plain loops elsewhere; TINYSLM_KERNEL_ISA=avx2 or
generic forces either, machine.py), and cached by torch under ~/.cache/torch_extensions by a name
carrying the instruction set and the CPU's digest (_cpu_tag), so later processes on the same CPU load
them in a fraction of a second. They run on their own threads (kernels/threads.h), as many as torch's.

If they cannot be built (no compiler, no kernel sources found) or TINYSLM_NATIVE=0 is
set, `available()` is False, says why once, and callers fall back to torch's own kernels (and the
module path, or the compiled step, for decoding).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import warnings
from pathlib import Path

import torch

from .. import machine
from ..files import lock_within

# The C++ sources: inside the package when installed from a wheel (setup.py copies them there), else at the top of
# the repository (an editable install or a source checkout). Neither: available() names the missing file.
_PACKAGED = Path(__file__).resolve().parents[1] / "kernels"
KERNELS = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "kernels"
SOURCES = [KERNELS / "ggml_mm.cpp", KERNELS / "float_mv.cpp", KERNELS / "decode_block.cpp"]
KIND_CODES = {"Q4_0": 0, "Q4_1": 1, "Q8_0": 2, "Q4_K": 3, "Q6_K": 4}  # ggml_mm's `kind` argument
why_unavailable: str | None = None  # set when available() is False


OPS = ("ggml_pack", "ggml_unpack", "ggml_mm", "ggml_dequantize", "float_mv", "set_threads", "decode_block",
       "decode_stack")  # what a build of these sources registers: checked after every load
BUILD_WAIT_S = 600.0  # how long to wait for another process's build of the same kernels (TINYSLM_BUILD_WAIT_S)


@functools.cache
def available() -> bool:
    """Whether the torch.ops.tinyslm kernels can run in this process (building them now if needed)."""
    global why_unavailable
    if os.environ.get("TINYSLM_NATIVE", "1") == "0":
        why_unavailable = "TINYSLM_NATIVE=0"
        return False
    if hasattr(torch.ops.tinyslm, "float_mv"):  # already loaded in this process
        return True
    isa = machine.kernel_isa()  # (a bad TINYSLM_KERNEL_ISA is the user's error: raised, not a fallback)
    missing = [str(s) for s in SOURCES if not s.exists()]
    if missing:
        why_unavailable = f"kernel source {missing[0]} not found (reinstall tinyslm: a wheel carries the kernels as tinyslm/kernels/)"
        return False
    try:
        _build_and_load(isa[1])
    except _Unavailable as exc:
        why_unavailable = str(exc)
    except Exception as exc:  # noqa: BLE001  (no compiler, a failed build: fall back, say why)
        why_unavailable = f"building the kernels in {KERNELS} failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1:]})"
    if why_unavailable is not None:
        warnings.warn(f"tinyslm: {why_unavailable}; using torch's own kernels instead", stacklevel=2)
        return False
    return True


class _Unavailable(Exception):
    """Why the kernels cannot be loaded this time (one line; the caller falls back to torch's kernels)."""


def _build_and_load(march: str) -> None:
    """Build (if needed) and load the kernels, safely when other processes do the same or did it and were stopped.

    The build folder is torch's (~/.cache/torch_extensions/..., or TORCH_EXTENSIONS_DIR), named for the CPU and
    instruction set (_cpu_tag). Three guards:
    - a lock that the OS releases when its holder dies (flock), held while building and loading: a stopped
      build cannot block later runs, and a live one is waited for at most TINYSLM_BUILD_WAIT_S seconds, saying so.
      Under it no other tinyslm process builds here, so torch's own lock file, which an interrupted build leaves
      behind (and torch would wait on forever), is removed;
    - the library is loaded only if it is the one a completed build of ours recorded (size and SHA-256 in a
      file beside it): a truncated or half-written library (which would kill the process when loaded) or one of
      another build is deleted with its folder's build files, and built again;
    - after loading, every op of these sources must be there, or the build is deleted and torch's kernels used.
    """
    from torch.utils import cpp_extension  # noqa: PLC0415

    name = f"tinyslm_ggml_{_cpu_tag()}"
    try:  # (torch's own folder for `name`, made if missing; a private helper of torch's, stable since torch 1.x)
        build = Path(cpp_extension._get_build_directory(name, verbose=False))
    except OSError as exc:
        raise _Unavailable(f"cannot create the kernel cache ({exc.strerror}: {exc.filename})") from None
    library = build / f"{name}.so"
    with _build_lock(build) as writable:
        if not writable:  # a read-only cache: load a verified build as it is, build nothing
            if not _verified(library):
                raise _Unavailable(f"the kernel cache {build} is not writable and holds no complete build")
            torch.ops.load_library(str(library))
        else:
            if library.exists() and not _verified(library):
                _clear(build)
                machine.say(f"the kernel build in {build} was incomplete or not this one: building it again")
            with contextlib.suppress(FileNotFoundError):
                (build / "lock").unlink()  # torch's own lock, left by an interrupted build (see the docstring)
            if not library.exists():
                machine.say("compiling tinyslm's native kernels for this CPU (once; about a minute on 2 cores)")
            # the headers' digest is a flag so that editing a header rebuilds too (torch hashes only the sources)
            headers = hashlib.sha1(b"".join(h.read_bytes() for h in sorted(KERNELS.glob("*.h")))).hexdigest()[:12]
            cpp_extension.load(name=name, sources=[str(s) for s in SOURCES], build_directory=str(build),
                               extra_cflags=["-O3", march, f"-DTINYSLM_HEADERS={headers}"], is_python_module=False,
                               verbose=False)  # fmt: skip
        absent = [op for op in OPS if not hasattr(torch.ops.tinyslm, op)]
        if absent:
            if writable:
                _clear(build)
            raise _Unavailable(f"the kernel build {library} lacks tinyslm::{absent[0]} (another version's): "
                               "deleted, built again by the next run")  # fmt: skip
        if writable:
            _record(library)


@contextlib.contextmanager
def _build_lock(build: Path):
    """Holds `build`/tinyslm.lock (flock: released by the OS if this process dies); yields whether the folder is
    writable. Waits at most TINYSLM_BUILD_WAIT_S for another process's build, saying so once."""
    try:
        fd = os.open(build / "tinyslm.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        wait = float(os.environ.get("TINYSLM_BUILD_WAIT_S", BUILD_WAIT_S))
        say = lambda: machine.say(f"waiting for another process's build of the kernels in {build} (at most {wait:.0f} s)")  # noqa: E731
        if not lock_within(fd, wait, say):
            raise _Unavailable(f"another process has been building the kernels in {build} for over {wait:.0f} s "
                               "(TINYSLM_BUILD_WAIT_S)")  # fmt: skip
        yield True
    finally:
        os.close(fd)  # (releases the lock)


def _digest(library: Path) -> str:
    data = library.read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def _verified(library: Path) -> bool:
    """Whether `library` is the complete build recorded beside it (a read, never a load: loading a truncated
    library kills the process)."""
    try:
        return library.with_suffix(".ok").read_text().strip() == _digest(library)
    except OSError:
        return False


def _record(library: Path) -> None:
    tmp = library.with_suffix(".ok.tmp")
    tmp.write_text(_digest(library) + "\n")
    tmp.replace(library.with_suffix(".ok"))


def _clear(build: Path) -> None:
    """Delete a build folder's outputs (the library, objects, ninja's records); its lock file stays."""
    for f in build.iterdir():
        if f.name != "tinyslm.lock" and f.is_file():
            f.unlink()


def has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX), which make torch's
    bfloat16 GEMM fast; without them (AVX2) a float32 GEMM is several times faster. TINYSLM_NATIVE_BF16=1|0
    forces the answer (machine.native_bf16)."""
    return machine.native_bf16()


def _cpu_tag() -> str:
    """Part of the extension's cache name: a build for one CPU is not loaded on another. -march=native
    compiles for every instruction set extension the build machine has, so the name carries a digest
    of the CPU's model and feature flags (where /proc/cpuinfo tells them), not just torch's capability
    class: two AVX-512 CPUs, one with AMX, must not share a build (a home directory shared by a
    cluster's machines would otherwise load one's build on the other and die of an illegal instruction).
    It names the instruction set the build is for too (TINYSLM_KERNEL_ISA): each is its own build."""
    described = f"{machine.cpu_model()}\n{' '.join(sorted(machine.cpu_flags()))}\n{platform.machine()}"
    digest = hashlib.sha1(described.encode()).hexdigest()[:8]
    return f"{machine.kernel_isa()[0]}_{torch.backends.cpu.get_cpu_capability().lower()}_{digest}"


def ggml_pack(blocks: torch.Tensor, kind: str) -> torch.Tensor:
    """A GGUF `kind` weight's blocks (N, bytes per row) -> the kernel's layout: 8 rows interleaved block by
    block (ggml_mm.cpp), (ceil(N / 8), 8 x bytes per row) uint8, the same bytes reordered (padding rows zero).
    Builds or loads the kernels first (every GGMLLinear is made through here)."""
    if not available():
        raise RuntimeError(f"tinyslm's native kernels are unavailable: {why_unavailable}")
    return torch.ops.tinyslm.ggml_pack(blocks, KIND_CODES[kind])


def ggml_unpack(packed: torch.Tensor, kind: str, n: int) -> torch.Tensor:
    """ggml_pack's inverse: the first n rows' GGUF blocks (n, bytes per row), as the file holds them."""
    return torch.ops.tinyslm.ggml_unpack(packed, KIND_CODES[kind], n)


def ggml_mm(x: torch.Tensor, packed: torch.Tensor, kind: str, n: int) -> torch.Tensor:
    """x (M, K) float32 @ the (n, K) weight held as packed `kind` blocks -> (M, n) float32."""
    return torch.ops.tinyslm.ggml_mm(x, packed, KIND_CODES[kind], n)


def ggml_dequantize(packed: torch.Tensor, kind: str, n: int) -> torch.Tensor:
    """The (n, K) float32 weight that packed `kind` blocks hold, computed as llama.cpp does."""
    return torch.ops.tinyslm.ggml_dequantize(packed, KIND_CODES[kind], n)


@contextlib.contextmanager
def own_threads():
    """Within this block the kernels run on torch's thread count with their own pool (kernels/threads.h) and torch's
    own operations on one thread; `torch_threads()` lends torch its threads back for work of its own (a prompt).

    Why: a decoding step is one kernel call and a few small torch operations (the embedding row, an argmax over
    the vocabulary). An argmax of 49,152 values is one of torch's parallel regions, after which torch's OpenMP
    threads spin for milliseconds (libgomp's default), taking the core that the kernels' next call needs: 15%
    of a quiet token (SmolLM2-135M), far more on a busy machine. On one thread torch forks nothing."""
    if not available():
        yield
        return
    n = torch.get_num_threads()
    previous = torch.ops.tinyslm.set_threads(n)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
        torch.ops.tinyslm.set_threads(previous)


@contextlib.contextmanager
def torch_threads():
    """Inside `own_threads`: torch's thread count as it was, for the duration of this block (a prompt's forward)."""
    kernels = torch.ops.tinyslm.set_threads(0) if available() else 0
    if kernels > 0:
        torch.ops.tinyslm.set_threads(kernels)
        torch.set_num_threads(kernels)
    try:
        yield
    finally:
        if kernels > 0:
            torch.set_num_threads(1)


def register_fake() -> None:
    """Shapes for torch.compile, which traces the kernels as opaque calls: (M, K), (G, _), n -> (M, n)."""
    if available() and not getattr(register_fake, "done", False):
        torch.library.register_fake("tinyslm::ggml_mm")(lambda x, p, kind, n: x.new_empty(x.shape[0], n))
        torch.library.register_fake("tinyslm::float_mv")(lambda x, w: x.new_empty(x.shape[0], w.shape[0]))
        torch.library.register_fake("tinyslm::ggml_dequantize")(
            lambda p, kind, n: p.new_empty(n, p.shape[1] // (144, 160, 272, 1184, 1680)[kind] * (32, 32, 32, 256, 256)[kind],
                                           dtype=torch.float32))  # fmt: skip
        register_fake.done = True
