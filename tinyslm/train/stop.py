"""Stopping a training run cleanly: SIGINT or SIGTERM let the step in progress finish and be saved.

A run killed mid-step loses everything since its last checkpoint; one stopped by a signal that the trainer
catches loses nothing: `_StopSignals` turns the first SIGINT (Ctrl-C) or SIGTERM (a scheduler, `timeout`) into a
flag the training loop reads at the end of the step, which it then saves and ends with `TrainInterrupted`
(the CLI exits 130 or 143, as a shell reports those signals, naming the folder to --resume from). A second
signal stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from ..errors import TinySLMError


class TrainInterrupted(TinySLMError):
    """Training stopped by SIGINT or SIGTERM after saving the step it was in: `checkpoint` resumes it."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        where = f"; saved {checkpoint}, continue with --resume" if checkpoint is not None else ""
        super().__init__(f"{name}: stopped after step {step}{where}")


class _StopSignals:
    """Within this block SIGINT and SIGTERM set `signal` instead of stopping the process at once (the training
    loop saves and stops at the end of the step); a second one stops at once (KeyboardInterrupt, SystemExit)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal: int | None = None
        self.previous: dict = {}

    def __enter__(self):
        if self.enabled:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # the second: now
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step and saving it (again to stop at once)",
              file=sys.stderr, flush=True)  # fmt: skip

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
