"""Test-wide settings.

The `slow` marker: the long tests (bench, demo, torch.compile, the gloo multi-process runs, the forced-branch
reruns, the mutation-heavy ones, every parity case but the first of each family). `pytest -m "not slow"` is the
fast loop (under 3 minutes on 2 cores); CI runs everything.

hypothesis: no deadline anywhere (an example that runs a model takes what the machine gives it: a loaded
machine made a 200 ms deadline fail at random), and the same examples on every CI run (CI=true), so a red CI
is reproducible.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

# The machine notes (a busy machine, a slow step: machine.py) depend on what else the machine runs; tests that
# compare a command's exact output must not see them. tests/foundation/test_machine.py turns them on where it tests them.
os.environ["TINYSLM_NOTES"] = "0"

settings.register_profile("tinyslm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("tinyslm"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "tinyslm")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test, left out of the fast loop (pytest -m 'not slow')")
