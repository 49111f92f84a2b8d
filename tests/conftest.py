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


# Long tests in modules whose marks are set here rather than beside the test (other work had those files open when
# the marker came in); module file name -> test function names. Everywhere else the mark sits on the test itself.
SLOW_ELSEWHERE = {
    "test_quant_native.py": ["test_a_truncated_or_foreign_library_is_built_again_not_loaded"],  # two kernel builds
    "test_checkpoint.py": ["test_a_save_stopped_at_any_point_leaves_the_old_or_the_new_checkpoint_and_loses_nothing"],
    "test_quant.py": ["test_smollm2_q4_1_kept_4_bit_matches_its_float32_dequantization"],  # the real SmolLM2 file
    # torch.compile
    "test_generate.py": ["test_fast_path_gives_the_plain_paths_tokens_and_compiles_once",
                         "test_auto_compiles_long_requests_only"],  # fmt: skip
    "test_quant_blocks.py": ["test_compiled_layer_equals_eager"],
    "test_quant_float_mv.py": ["test_compiled_layer_equals_eager"],
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.originalname in SLOW_ELSEWHERE.get(item.path.name, ()):
            item.add_marker(pytest.mark.slow)
