"""Exercise checking: a student's function against the library's reference, with a report that says where.

    from tinyslm.course.check import Exercise

    def check_rms_norm(rms_norm) -> bool:
        with Exercise("rms_norm", against="tinyslm's RMSNorm and transformers' LlamaRMSNorm") as ex:
            for shape in [(2, 5, 8), (1, 1, 64)]:
                x, w = ...
                ex.compare(f"rms_norm(x {shape})", rms_norm(x, w, 1e-6), RMSNorm(...)(x), atol=1e-6)
        return ex.passed

A function the student has not written yet (its body still raises NotImplementedError) is reported as not
attempted, and the lesson goes on; a wrong one raises ExerciseFailed (an AssertionError) naming the case, the
shape or dtype that differs, or the first differing position with both values and the largest difference.
"""

from __future__ import annotations

import math
import site
import sys
import traceback
from pathlib import Path
from typing import Any

import torch


class ExerciseFailed(AssertionError):
    """A student's answer differs from the reference; the message says which case, where and by how much."""


def _index(flat: int, shape: torch.Size) -> tuple[int, ...]:
    """The index in `shape` of element `flat` of the flattened tensor."""
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape))


def _kind(t: torch.Tensor) -> str:
    return "bool" if t.dtype == torch.bool else "complex" if t.is_complex() else "float" if t.is_floating_point() else "int"


def difference(got: Any, want: Any, *, atol: float = 0.0, rtol: float = 0.0) -> str | None:
    """None if `got` equals `want` (tensors within atol + rtol * |want|, anything else by ==); otherwise one
    line saying what differs."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor of shape {tuple(want.shape)}, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if _kind(got) != _kind(want):  # float32 for float64 is fine; bool or int for float is not
            return f"dtype {got.dtype}, expected {want.dtype}"
        if want.numel() == 0:
            return None
        g, w = got.detach().double().cpu(), want.detach().double().cpu()
        both_nan = torch.isnan(g) & torch.isnan(w)
        same_inf = torch.isinf(w) & (g == w)
        err = (g - w).abs()
        bad = ~(both_nan | same_inf) & ~(err <= atol + rtol * w.abs())  # NaN in either side counts as bad
        if not bool(bad.any()):
            return None
        first = int(bad.flatten().nonzero()[0])
        where = _index(first, want.shape)
        finite = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
        worst = int(finite.flatten().argmax())
        return (
            f"first differs at index {where}: got {g.flatten()[first].item():.6g}, expected "
            f"{w.flatten()[first].item():.6g}; {int(bad.sum())} of {want.numel()} elements differ, the largest "
            f"|difference| is {finite.flatten()[worst].item():.3g} at {_index(worst, want.shape)} "
            f"(tolerance {atol:g}{f' + {rtol:g} x |expected|' if rtol else ''})"
        )
    if isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        if len(got) != len(want):
            return f"length {len(got)}, expected {len(want)}"
        for i, (a, b) in enumerate(zip(got, want)):
            why = difference(a, b, atol=atol, rtol=rtol)
            if why is not None:
                return f"item {i}: {why}"
        return None
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if abs(got - want) <= atol + rtol * abs(want) or (math.isnan(got) and math.isnan(want)):
            return None
        return f"got {got:.6g}, expected {want:.6g} (|difference| {abs(got - want):.3g}, tolerance {atol:g})"
    if got != want:
        return f"got {got!r}, expected {want!r}"
    return None


class Exercise:
    """One exercise's checking session (a context manager); `passed` is True once every comparison held."""

    def __init__(self, name: str, *, against: str):
        self.name = name
        self.against = against  # what the answer is compared with, for the success line
        self.cases = 0
        self.passed = False

    def compare(self, case: str, got: Any, want: Any, *, atol: float = 0.0, rtol: float = 0.0) -> None:
        """Raise ExerciseFailed unless `got` equals `want`; `case` names the inputs (it opens the message)."""
        why = difference(got, want, atol=atol, rtol=rtol)
        if why is not None:
            raise ExerciseFailed(f"{self.name}: {case}: {why}")
        self.cases += 1

    def __enter__(self) -> Exercise:
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if kind is None:
            self.passed = True
            print(f"✓ {self.name}: equals {self.against} on {self.cases} cases")
            return False
        if issubclass(kind, NotImplementedError):
            print(f"· {self.name}: not written yet (replace its `raise NotImplementedError`, then run this cell again)")
            return True
        if issubclass(kind, ExerciseFailed):
            return False
        if not _through_student_code(tb):  # the checker's own setup failed: its traceback, not the student's fault
            return False
        raise ExerciseFailed(f"{self.name} raised {kind.__name__}: {error}") from error


_LIBRARY_DIRS = tuple(
    str(Path(p).resolve()) for p in {Path(__file__).parents[1], sys.prefix, sys.base_prefix, *site.getsitepackages()}
)


def _through_student_code(tb) -> bool:
    """Whether the exception passed through a function defined outside tinyslm and the installed libraries (the
    student's, in a notebook cell or a script) on its way up."""
    for frame in traceback.extract_tb(tb):
        name = frame.filename
        if name.startswith("<") or not str(Path(name).resolve()).startswith(_LIBRARY_DIRS):
            return True
    return False
