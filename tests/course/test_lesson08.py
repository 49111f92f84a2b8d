"""Lesson 08's checkers: the weight absorption and the latent cache's size."""

import pytest
import torch

from tinyslm.course import lesson08
from tinyslm.course.check import ExerciseFailed

from course_support import solutions


@pytest.fixture(scope="module")
def ref():
    return solutions("08_mla")


def unwritten(*_args):
    raise NotImplementedError


def test_reference_solutions_pass(ref):
    assert lesson08.check_absorb_query(ref.absorb_query) is True
    assert lesson08.check_latent_cache_values(ref.latent_cache_values) is True


def test_unwritten_functions_are_not_attempted():
    assert lesson08.check_absorb_query(unwritten) is False
    assert lesson08.check_latent_cache_values(unwritten) is False


def test_rows_split_feature_major_fail():
    def feature_major(q_nope, w, n_heads, dn, dv):  # rows read as (dn + dv, H): not per head
        w_uk = w.view(dn + dv, n_heads, -1).transpose(0, 1)[:, :dn]
        return torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)

    with pytest.raises(ExerciseFailed, match=r"absorb_query\(q_nope \(2, 4, 3, 8\), wkv_b \(80, 32\).*first differs at index"):
        lesson08.check_absorb_query(feature_major)


def test_the_value_rows_fail():
    def value_rows(q_nope, w, n_heads, dn, dv):  # the last dn rows of each head's block: W_uv's, not W_uk's
        w_uk = w.view(n_heads, dn + dv, -1)[:, -dn:]
        return torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)

    with pytest.raises(ExerciseFailed, match="absorb_query"):
        lesson08.check_absorb_query(value_rows)


def test_one_head_for_all_fails():
    def first_head_only(q_nope, w, n_heads, dn, dv):
        return torch.einsum("bhtn,nr->bhtr", q_nope, w[:dn])

    with pytest.raises(ExerciseFailed, match="absorb_query"):
        lesson08.check_absorb_query(first_head_only)


def test_a_wrong_shape_is_named(ref):
    with pytest.raises(ExerciseFailed, match=r"shape \(2, 3, 4, 32\), expected \(2, 4, 3, 32\)"):
        lesson08.check_absorb_query(lambda *a: ref.absorb_query(*a).transpose(1, 2))


def test_a_cache_without_the_rope_key_fails():
    with pytest.raises(ExerciseFailed, match=r"latent_cache_values\(n_layers=2, .*context=1\): got 64, expected 72"):
        lesson08.check_latent_cache_values(lambda config, context: config.n_layers * config.kv_lora_rank * context)


def test_a_per_head_cache_fails():
    def per_head(config, context):
        return config.n_layers * config.n_heads * (config.kv_lora_rank + config.qk_rope_head_dim) * context

    with pytest.raises(ExerciseFailed, match="got 288, expected 72"):
        lesson08.check_latent_cache_values(per_head)
