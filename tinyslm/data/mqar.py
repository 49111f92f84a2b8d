"""Multi-query associative recall (MQAR): the attention probe of the ablation.

Zoology (Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language
Models", arXiv:2312.04927) shows that the gap between attention and cheaper token mixers is
mostly recall: looking up a value stated earlier in the context. MQAR isolates that skill. Each
example states key-value pairs, then asks for several keys again; the model must emit the value
bound to each key:

    position   0  1   2  3   4  5   ...  | 2P ...                                     T
    token      k1 v1  k2 v2  k3 v3  ...  | 0  0  k2  0  0  0  k1  0  ...  k3  0 ...
    target     -100 everywhere           | ...    v2 ...         v1  ...      v3       (the token after
                                                                                     each query key)

Keys come from [1, V/2), values from [V/2, V) (disjoint, so a key is never mistaken for a
value), both drawn without replacement within an example; token 0 fills the gaps. Queries sit at
random even offsets of the query region. With the default n_queries = P each key is asked exactly
once, as in Zoology's generator (which spaces queries with power-law gaps; we place them
uniformly). n_queries > P asks every key once and then random keys again, up to one query per
two positions: more answers per sequence, so a small model gets more signal per step, and the
task is unchanged (the values never appear in the query region, so every answer must be
recalled from the pairs at the start). Only the answer positions carry a target, so the loss and
the accuracy measure recall and nothing else.

Chance: a model that has learned the format but cannot recall picks one of the P values in the
context, right 1/P of the time; that, not 1/(V/2), is the bar to clear (`MQAR.chance`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .corpus import DataError
from .stream import RankedStream

IGNORE = -100  # targets with this value are skipped by cross_entropy(ignore_index=-100)


class MQAR:
    """The task: a vocabulary of V tokens, sequences of T tokens, P key-value pairs per sequence."""

    def __init__(self, vocab_size: int = 256, seq_len: int = 128, n_pairs: int = 16, n_queries: int | None = None):
        for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("n_pairs", n_pairs)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise DataError(f"MQAR {name} must be a positive integer, found {value!r}")
        if n_pairs > vocab_size // 2 - 1:
            raise DataError(f"MQAR needs n_pairs <= vocab_size / 2 - 1 distinct keys; found n_pairs={n_pairs}, "
                            f"vocab_size={vocab_size}")  # fmt: skip
        if seq_len + 1 < 4 * n_pairs:  # 2P tokens of pairs, then P queries at even offsets of >= 2P slots
            raise DataError(f"MQAR seq_len must be at least 4 * n_pairs - 1 = {4 * n_pairs - 1} to state and query "
                            f"{n_pairs} pairs; found {seq_len}")  # fmt: skip
        self.vocab_size, self.seq_len, self.n_pairs = vocab_size, seq_len, n_pairs
        slots = len(range(2 * n_pairs, seq_len, 2))
        if n_queries is not None and (not isinstance(n_queries, int) or not n_pairs <= n_queries <= slots):
            raise DataError(f"MQAR n_queries must be an integer from n_pairs ({n_pairs}) to the {slots} query slots "
                            f"of a {seq_len}-token sequence, found {n_queries!r}")  # fmt: skip
        self.n_queries = n_pairs if n_queries is None else n_queries

    def __repr__(self) -> str:
        return (f"MQAR(vocab_size={self.vocab_size}, seq_len={self.seq_len}, n_pairs={self.n_pairs}, "
                f"n_queries={self.n_queries})")  # fmt: skip

    @property
    def max_queries(self) -> int:
        """Query slots of a sequence: even offsets after the 2P tokens of pairs."""
        return len(range(2 * self.n_pairs, self.seq_len, 2))

    @property
    def chance(self) -> float:
        """Accuracy of guessing one of the P values in the context."""
        return 1.0 / self.n_pairs

    def examples(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n examples: inputs (n, T) int64 and targets (n, T) int64 with IGNORE off the answer positions."""
        v, t, p, q = self.vocab_size, self.seq_len, self.n_pairs, self.n_queries
        half = v // 2
        keys = np.stack([rng.choice(np.arange(1, half), p, replace=False) for _ in range(n)])  # (n, P)
        values = np.stack([rng.choice(np.arange(half, v), p, replace=False) for _ in range(n)])  # (n, P)
        seq = np.zeros((n, t + 1), dtype=np.int64)  # (n, T+1): inputs are [:, :T], targets [:, 1:]
        seq[:, 0 : 2 * p : 2], seq[:, 1 : 2 * p : 2] = keys, values
        answers = np.full((n, t + 1), IGNORE, dtype=np.int64)
        slots = np.arange(2 * p, t, 2)  # even offsets of the query region; the answer sits at slot + 1 <= T
        rows = np.arange(n)[:, None]
        where = np.stack([np.sort(rng.choice(slots, q, replace=False)) for _ in range(n)])  # (n, Q)
        # which pair each query asks: every pair once, in random order, then (Q > P) pairs drawn at random
        order = np.stack([rng.permutation(p) if q == p else
                          np.concatenate([rng.permutation(p), rng.integers(0, p, q - p)])[rng.permutation(q)]
                          for _ in range(n)])  # (n, Q)  # fmt: skip
        seq[rows, where] = np.take_along_axis(keys, order, axis=1)
        answers[rows, where + 1] = np.take_along_axis(values, order, axis=1)
        return seq[:, :-1], answers[:, 1:]

    def batches(self, global_batch: int, *, seed: int, rank: int = 0, world_size: int = 1) -> "MQARBatches":
        """An endless deterministic stream with Batches' protocol (state_dict, rank slices)."""
        return MQARBatches(self, global_batch, seed=seed, rank=rank, world_size=world_size)

    def eval_batches(self, batch: int = 64, n_batches: int = 4, seed: int = 10_000):
        """A fixed set of held-out examples (a seed no training stream uses by default), for validation loss."""
        stream = self.batches(batch, seed=seed)
        return (next(stream) for _ in range(n_batches))

    @torch.no_grad()
    def accuracy(self, model, n_examples: int = 512, seed: int = 10_000, batch: int = 128) -> float:
        """Fraction of answer positions where the model's argmax is the bound value (held-out examples)."""
        config = getattr(model, "config", None)
        if config is not None and config.vocab_size < self.vocab_size:
            raise DataError(f"the model's vocab_size {config.vocab_size} is smaller than MQAR's {self.vocab_size}")
        if config is not None and config.max_seq_len < self.seq_len:
            raise DataError(f"MQAR seq_len {self.seq_len} exceeds the model's context of {config.max_seq_len}")
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rng = np.random.default_rng([seed, 1, 1])  # a key no training stream ([seed, step]) uses
        right = total = 0
        try:
            for start in range(0, n_examples, batch):
                inputs, targets = self.examples(rng, min(batch, n_examples - start))
                logits = model(torch.from_numpy(inputs).to(device))  # (b, T, V)
                targets = torch.from_numpy(targets).to(device)
                mask = targets != IGNORE
                right += int((logits.argmax(-1)[mask] == targets[mask]).sum())
                total += int(mask.sum())
        finally:
            model.train(was_training)
        return right / total


class MQARBatches(RankedStream):
    """Global batch k of seed s is MQAR.examples(default_rng([s, k]), B); rank r takes its rows."""

    kind = "mqar"

    def __init__(self, task: MQAR, global_batch: int, *, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(global_batch, seed=seed, rank=rank, world_size=world_size)
        self.task = task

    def _identity(self) -> dict[str, Any]:
        t = self.task
        return {**super()._identity(), "vocab_size": t.vocab_size, "seq_len": t.seq_len, "n_pairs": t.n_pairs,
                "n_queries": t.n_queries}  # fmt: skip

    def global_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self.task.examples(np.random.default_rng([self.seed, step]), self.global_batch)
