"""Batches from a token stream: random training windows, fixed validation windows.

Legend: b rows per rank, B = global batch (rows across all ranks), T sequence length.

Training draws B random windows of T + 1 tokens per step; inputs are the first T, targets the
last T (the next token at every position). A window may cross a document boundary: the eos
token between documents tells the model that what follows is unrelated (as in GPT-2 and nanoGPT
packing), so no token is wasted on padding.

Determinism without state. The windows of global batch k are a pure function of (seed, k):

    starts_k = default_rng([seed, k]).integers(0, N - T, size=B)          # (B,)

so the whole loader state is one integer, `state_dict()` is `{"step": k, ...}`, and resuming at
step k gives exactly the batches an uninterrupted run would have seen. Rank r of W takes rows
[r*b, (r+1)*b) of the same global batch (b = B / W): W processes together see exactly what one
process sees, which is what makes a DDP run match a single-process run step for step.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from .corpus import DataError


class RankedStream:
    """The protocol shared by Batches and MQAR streams: endless, (seed, step)-determined, sliced by rank."""

    kind = "stream"

    def __init__(self, global_batch: int, *, seed: int, rank: int = 0, world_size: int = 1):
        for name, value in (("global_batch", global_batch), ("world_size", world_size), ("seed", seed), ("rank", rank)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise DataError(f"{name} must be an integer, found {value!r}")
        if global_batch <= 0 or world_size <= 0 or seed < 0:
            raise DataError(f"global_batch and world_size must be positive and seed >= 0, found "
                            f"global_batch={global_batch}, world_size={world_size}, seed={seed}")  # fmt: skip
        if global_batch % world_size:
            raise DataError(f"global_batch {global_batch} is not divisible by world_size {world_size}: every rank "
                            "must get the same number of rows")  # fmt: skip
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, {world_size}), found {rank}")
        self.global_batch, self.seed, self.rank, self.world_size = global_batch, seed, rank, world_size
        self.batch = global_batch // world_size  # b: rows this rank gets
        self.step = 0

    def global_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of the whole global batch `step`, each (B, T) int64. Subclasses define it."""
        raise NotImplementedError

    def __iter__(self) -> "RankedStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.global_rows(self.step)
        self.step += 1
        rows = slice(self.rank * self.batch, (self.rank + 1) * self.batch)
        return torch.from_numpy(inputs[rows].copy()), torch.from_numpy(targets[rows].copy())

    def _identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "global_batch": self.global_batch}

    def state_dict(self) -> dict[str, Any]:
        """Plain ints and strings: the next step, and what the stream must match to resume it."""
        return {**self._identity(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at state["step"]; a state saved by a different stream (seed, batch, length) is refused."""
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
            raise DataError(f"data-loader state must be a dict with a non-negative integer 'step', found {state!r}")
        mine = self._identity()
        differ = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in mine.items() if state.get(k) != v]
        if differ:
            raise DataError("cannot resume the data stream: it was saved for different data (" + "; ".join(differ) + ")")
        self.step = state["step"]


class Batches(RankedStream):
    """Endless deterministic global batches of random windows from a 1-D token array (see module docstring)."""

    kind = "lm"

    def __init__(self, tokens: np.ndarray, seq_len: int, global_batch: int, *, seed: int, rank: int = 0,
                 world_size: int = 1):  # fmt: skip
        super().__init__(global_batch, seed=seed, rank=rank, world_size=world_size)
        if not isinstance(seq_len, int) or seq_len <= 0:
            raise DataError(f"seq_len must be a positive integer, found {seq_len!r}")
        if tokens.ndim != 1 or len(tokens) < seq_len + 1:
            raise DataError(f"the token stream holds {len(tokens):,} tokens; a window of seq_len + 1 = {seq_len + 1} "
                            "needs at least that many (use a shorter seq_len or more data)")  # fmt: skip
        self.tokens, self.seq_len = tokens, seq_len

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "seq_len": self.seq_len, "n_tokens": len(self.tokens)}

    def global_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.seq_len
        starts = np.random.default_rng([self.seed, step]).integers(0, len(self.tokens) - t, size=self.global_batch)
        windows = np.stack([np.asarray(self.tokens[s : s + t + 1], dtype=np.int64) for s in starts])  # (B, T+1)
        return windows[:, :-1], windows[:, 1:]


def eval_batches(tokens: np.ndarray, seq_len: int, batch: int, max_batches: int | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Consecutive non-overlapping windows, in order: window i predicts tokens[i*T + 1 : (i+1)*T + 1].

    With max_batches=None every full window is used: all val tokens but the first and the fewer
    than T at the end. The last batch may have fewer than `batch` rows. Nothing is random.
    """
    if not isinstance(seq_len, int) or seq_len <= 0 or not isinstance(batch, int) or batch <= 0:
        raise DataError(f"seq_len and batch must be positive integers, found seq_len={seq_len!r}, batch={batch!r}")
    n_windows = (len(tokens) - 1) // seq_len
    if n_windows == 0:
        raise DataError(f"the validation stream holds {len(tokens):,} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    n_batches = -(-n_windows // batch)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for k in range(n_batches):
        first, last = k * batch, min(n_windows, (k + 1) * batch)  # window indices
        flat = np.asarray(tokens[first * seq_len : last * seq_len + 1], dtype=np.int64)
        inputs = flat[:-1].reshape(last - first, seq_len)  # (b, T)
        targets = flat[1:].reshape(last - first, seq_len)  # (b, T)
        yield torch.from_numpy(inputs), torch.from_numpy(targets)
