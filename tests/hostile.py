"""The guards every hostile-input test runs under (tests/formats/test_mutations.py, test_gguf_mutations.py,
tests/cli/test_cli_mutations.py): no hang, no runaway allocation, and the CLI run in this process with its exit
status and stderr.

TINYSLM_MUTATION_EXAMPLES sets the examples per property (default 30; raise it to hunt).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import resource
import signal

from tinyslm.cli import main

EXAMPLES = int(os.environ.get("TINYSLM_MUTATION_EXAMPLES", "30"))
TIMEOUT_S = 10  # per example (they take well under a second); a hang fails the example
EXTRA_ADDRESS_SPACE = 4 << 30  # what one example may allocate beyond the process's current size


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no `except Exception` in the code under test swallows it."""


def _address_space() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


@contextlib.contextmanager
def guarded():
    """No hang (SIGALRM after TIMEOUT_S, a hard faulthandler exit at 3x that) and no runaway allocation."""

    def on_alarm(signum, frame):
        raise Hang(f"still running after {TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    limits = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + EXTRA_ADDRESS_SPACE, limits[1]))
    faulthandler.dump_traceback_later(3 * TIMEOUT_S, exit=True)
    signal.alarm(TIMEOUT_S)
    try:
        yield
    except Hang as exc:  # hypothesis shrinks failures, not BaseExceptions
        raise AssertionError(f"hang: {exc}") from exc
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        resource.setrlimit(resource.RLIMIT_AS, limits)
        signal.signal(signal.SIGALRM, previous)


def run_cli(*argv: str) -> tuple[int, str]:
    """(exit status, stderr) of `tinyslm ARGV` run in this process; argparse's refusals (its usage line, then one
    error line) give their status and that one line."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.environ.get("TINYSLM_DEBUG")
    os.environ["TINYSLM_DEBUG"] = "1"  # an unexpected exception is raised here, traceback and all
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0), err.getvalue().strip().splitlines()[-1]
    finally:
        if previous is None:
            del os.environ["TINYSLM_DEBUG"]
        else:
            os.environ["TINYSLM_DEBUG"] = previous
    return status, err.getvalue()
