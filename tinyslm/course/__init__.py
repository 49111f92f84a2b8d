"""The course's library side: what notebooks/NN_topic.py lessons import besides tinyslm itself.

    check.py       Exercise: runs a student's function against tinyslm's reference (and transformers' module
                   where there is one) and says what differs: shape, dtype, first differing position, magnitude
    lessonNN.py    the checkers of lesson NN's exercises, one function per exercise (check_rms_norm, ...)

A lesson runs as a plain script (`python notebooks/02_norms.py`) or as a notebook (jupytext). Where a lesson
trains or sweeps, `FAST` (the environment variable TINYSLM_COURSE_FAST=1, which the tests set) picks a smaller
setting that still shows, and asserts, the same thing.
"""

from __future__ import annotations

import os

FAST = os.environ.get("TINYSLM_COURSE_FAST", "") not in ("", "0")


def show(fig=None) -> None:
    """Show a matplotlib figure where someone can see it (a notebook, a window); close it when the lesson runs
    as a script without a display (matplotlib's non-interactive Agg backend), so that scripts stay quiet."""
    import matplotlib  # noqa: PLC0415  (extra [course]; only lessons that plot)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if matplotlib.get_backend().lower() == "agg":
        plt.close(fig if fig is not None else "all")
    else:
        plt.show()
