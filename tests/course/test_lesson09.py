"""Lesson 09's checker: OpenELM's per-layer sizes from its scaling rule."""

import numpy as np
import pytest

from tinyslm.course import lesson09
from tinyslm.course.check import ExerciseFailed

from course_support import solutions


@pytest.fixture(scope="module")
def ref():
    return solutions("09_sharing_and_scaling")


def unwritten(*_args):
    raise NotImplementedError


def sizes_with(make_divisible, *, round_multipliers=True, unit_groups=True):
    """openelm_sizes with one step done a plausible wrong way."""

    def openelm_sizes(dim, head_dim, n_layers, qkv, ffn, groups, divisor):
        spaced = lambda ends: [round(float(v), 2) if round_multipliers else float(v)  # noqa: E731
                               for v in np.linspace(*ends, num=n_layers)]  # fmt: skip
        unit = head_dim * groups if unit_groups else head_dim
        heads = [make_divisible(dim * a, unit) // head_dim for a in spaced(qkv)]
        return {"layer_n_heads": heads, "layer_n_kv_heads": [h // groups for h in heads],
                "layer_ffn_dim": [make_divisible(dim * b, divisor) for b in spaced(ffn)]}  # fmt: skip

    return openelm_sizes


def right_make_divisible(value, divisor):
    result = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return result + divisor if result < 0.9 * value else result


def test_reference_solution_passes(ref):
    assert lesson09.check_openelm_sizes(ref.openelm_sizes) is True
    assert lesson09.check_openelm_sizes(sizes_with(right_make_divisible)) is True  # the planted ones' baseline


def test_unwritten_function_is_not_attempted():
    assert lesson09.check_openelm_sizes(unwritten) is False


def test_unrounded_multipliers_fail():
    with pytest.raises(ExerciseFailed, match=r"\(OpenELM-270M\)\['layer_n_heads'\]: item 5: got 12, expected 16"):
        lesson09.check_openelm_sizes(sizes_with(right_make_divisible, round_multipliers=False))


def test_plain_rounding_without_the_ten_percent_rule_fails():
    plain = lambda value, divisor: max(divisor, round(value / divisor) * divisor)  # noqa: E731
    with pytest.raises(ExerciseFailed, match=r"openelm_sizes\(dim=1280, .*\['layer_n_heads'\]: item 0: got 8, expected 12"):
        lesson09.check_openelm_sizes(sizes_with(plain))


def test_rounding_heads_without_the_groups_fails():
    with pytest.raises(ExerciseFailed, match=r"\['layer_n_heads'\]: item \d+: got \d+, expected \d+"):
        lesson09.check_openelm_sizes(sizes_with(right_make_divisible, unit_groups=False))


def test_a_missing_key_is_named(ref):
    def no_kv(*args):
        sizes = ref.openelm_sizes(*args)
        del sizes["layer_n_kv_heads"]
        return sizes

    with pytest.raises(ExerciseFailed, match=r"\['layer_n_kv_heads'\]: got None, expected \[3, 3"):
        lesson09.check_openelm_sizes(no_kv)
