"""Parity for every family: one harness, the same checks for every case of tests/family_cases/.

A case is a real architecture, shrunken (fewer layers, a smaller vocabulary, sometimes narrower), whose
reference is a seeded random-init model: a transformers class (its eager attention path; MLA's
DeepseekV2 included) or, for the families that ship remote code, a forward assembled from
transformers' own modules over a checkpoint written in the model's real layout. tinyslm loads the
folder through its real loading path. For each case:

  * test_logits_and_greedy_tokens_match_the_reference, in both config.json forms (as save_pretrained
    writes it, and as the Hub ships it; for the legacy form transformers' own reading of the file is the
    reference, and the same model as the one written): float32 logits within 1e-5 of the logit scale;
    a 16-token greedy continuation (tinyslm decodes with its KV cache) identical to the reference's and
    to tinyslm's own greedy decoding by recomputation; every decode step's logits those of the
    reference's full forward over the sequence; the head tied as the reference ties it, and the case's
    own facts about the loaded model (case.expect);
  * test_bfloat16_logits_match_transformers_eager_attention: within the tolerance measured and stated in
    the case, and no further from the float32 reference than transformers' own bf16 logits (x 1.25);
  * test_cached_decode_equals_full_forward: prefill, then chunks of every size through the cache, around
    the sliding window;
  * test_eager_and_sdpa_attention_agree;
  * test_save_pretrained_round_trips: the folder tinyslm writes loads back in tinyslm (same config, same
    logits) and in transformers (no missing or unexpected key, the same class, identical logits);
  * test_cli_inspect_and_generate_work_for_every_family, test_cli_parity_passes_for_every_family.

MLA cases run every check on each decode path (case.decode_paths). The full-width cases (a real
model's hidden size at 2 layers) run the first check only. The fast set (pytest -m "not slow") keeps
the first case of each family, in the current config form; the others are marked slow.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from family_cases import Case, all_cases
from hf_models import hf_greedy, write_hf_checkpoint
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyslm
from tinyslm.layers.attention import set_attention_backend
from tinyslm.layers.mla import decode_path

ALL_CASES = all_cases()
CASES = {name: case for name, case in ALL_CASES.items() if not case.full_width}
TOL = 1e-5  # float32: max |ours - theirs| / max |theirs|
NEW_TOKENS = 16


def fast_cases() -> set[str]:
    """The first case (by name) of each family: what `pytest -m "not slow"` runs."""
    first: dict[str, str] = {}
    for name, case in CASES.items():
        first.setdefault(case.family, name)
    return set(first.values())


FAST = fast_cases()


def param(name: str, *form: str):
    """The test's parameters, marked slow unless `name` is its family's fast case (in the current config form)."""
    fast = name in FAST and form in ((), ("current",))
    return pytest.param(name, *form, marks=() if fast else pytest.mark.slow)


cases = pytest.mark.parametrize("name", [param(name) for name in CASES])
case_forms = pytest.mark.parametrize(
    "name, form", [param(name, form) for name, case in CASES.items() for form in case.forms]
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread. A second only adds synchronisation (measured: 10x the time on a busy
    2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# the reference


@dataclass
class Checkpoint:
    folder: Path
    forward: Callable[[torch.Tensor], torch.Tensor]  # the reference: ids (B, T) -> float32 logits (B, T, V)
    hf_model: torch.nn.Module | None  # the transformers model, where the family has a transformers class


def write_checkpoint(case: Case, folder: Path, form: str) -> Checkpoint:
    """Write the case's seeded random-init checkpoint to `folder` in config form `form`; returns its reference."""
    legacy = form == "legacy"
    if case.remote is not None:
        return Checkpoint(folder, case.remote(folder, legacy), None)
    hf = write_hf_checkpoint(folder, case.config_cls, legacy=legacy, perturb=case.perturb, attn_implementation="eager",
                             **case.hparams)  # fmt: skip
    if legacy and case.legacy_rewrite is not None:
        path = folder / "config.json"
        path.write_text(json.dumps(case.legacy_rewrite(json.loads(path.read_text())), indent=2))
    if legacy:  # transformers' reading of the Hub's form is the reference: the very model written
        transformers = pytest.importorskip("transformers")
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        ids = prompt_ids(case)
        with torch.no_grad():
            assert torch.equal(reloaded(ids).logits, hf(ids).logits), "the legacy config.json is another model"
        assert torch.equal(hf_greedy(reloaded, ids, NEW_TOKENS), hf_greedy(hf, ids, NEW_TOKENS))
        hf = reloaded
    return Checkpoint(folder, lambda ids: hf(ids).logits, hf)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Callable[[str, str], Checkpoint]:
    """checkpoint(name, form): the case's checkpoint and reference, written once, for the checks that only read them."""
    return functools.cache(lambda name, form: write_checkpoint(CASES[name], tmp_path_factory.mktemp(name), form))


@pytest.fixture(scope="module")
def loaded(checkpoint) -> Callable[[str], tinyslm.CausalLM]:
    """loaded(name): tinyslm's model of the case's checkpoint (current config form), loaded once."""
    return functools.cache(lambda name: tinyslm.load_pretrained(checkpoint(name, "current").folder))


def prompt_ids(case: Case, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, case.vocab_size, (batch, case.prompt), generator=torch.Generator().manual_seed(seed))


def max_relative_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


def greedy_by_recomputation(forward, ids: torch.Tensor, n: int = NEW_TOKENS) -> torch.Tensor:
    """(B, T) -> (B, T + n): argmax of a full forward over everything so far, n times (no cache)."""
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, forward(ids)[:, -1:].argmax(-1)], dim=1)
    return ids


def reference_greedy(ck: Checkpoint, ids: torch.Tensor) -> torch.Tensor:
    """transformers' greedy continuation over its own KV cache; remote code's by recomputation."""
    if ck.hf_model is not None:
        return hf_greedy(ck.hf_model, ids, NEW_TOKENS)
    return greedy_by_recomputation(ck.forward, ids)


def paths(case: Case) -> tuple[str | None, ...]:
    return case.decode_paths or (None,)


def on_path(model, path: str | None):
    """MLA's decode path `path` for the duration (restored afterwards); no-op for None."""
    return contextlib.nullcontext() if path is None else decode_path(model, path)


# ---------------------------------------------------------------------------------------------
# the checks


def check_against_reference(case: Case, ck: Checkpoint) -> None:
    model = tinyslm.load_pretrained(ck.folder)
    ids = prompt_ids(case)
    expected = reference_greedy(ck, ids)  # (B, T + 16)
    with torch.no_grad():
        theirs, over_sequence = ck.forward(ids), ck.forward(expected)
    for path in paths(case):
        with on_path(model, path), torch.no_grad():
            diff = max_relative_diff(model(ids), theirs)
            assert diff < TOL, f"{path or ''} max relative diff {diff:.3e}"
            assert torch.equal(tinyslm.generate(model, ids, NEW_TOKENS), expected)
            if case.crosses_rope_switch:
                continue
            assert torch.equal(greedy_by_recomputation(model, ids), expected)  # cached == full recomputation
            cache = model.new_cache(*expected.shape)
            steps = [model(ids, cache=cache)] + [model(expected[:, t : t + 1], cache=cache)
                                                 for t in range(ids.shape[1], expected.shape[1])]  # fmt: skip
            diff = max_relative_diff(torch.cat(steps, dim=1), over_sequence)
            assert diff < TOL, f"{path or ''} decode steps: max relative diff {diff:.3e}"
    if ck.hf_model is not None:
        assert model.config.tie_embeddings == ck.hf_model.config.tie_word_embeddings
    if model.config.tie_embeddings:
        assert model.head.weight is model.tok_emb.weight  # one Parameter: an update to one is an update to both
    if case.expect is not None:
        case.expect(model, ck.hf_model)


@pytest.mark.parametrize(
    "name, form", [param(name, form) for name, case in ALL_CASES.items() for form in case.forms]
)
def test_logits_and_greedy_tokens_match_the_reference(name, form, tmp_path):
    case = ALL_CASES[name]
    check_against_reference(case, write_checkpoint(case, tmp_path, form))


@pytest.mark.parametrize("name", [param(name) for name, case in CASES.items() if case.bf16_tolerance])
def test_bfloat16_logits_match_transformers_eager_attention(name, checkpoint):
    """bf16 logits within the case's measured tolerance of transformers' bf16 logits, and no further from the
    float32 reference than transformers' own bf16 logits are (x 1.25).

    The second bound matters where the two round differently (an op order, a fused kernel): there the
    bf16-vs-bf16 difference is of the size of bf16's own error, and a real cast bug (a norm or RoPE
    left in bf16 where transformers computes float32) shows as a larger error against float32.
    """
    transformers = pytest.importorskip("transformers")
    case, ck = CASES[name], checkpoint(name, "current")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(ck.folder, dtype=torch.bfloat16,
                                                               attn_implementation="eager").eval()  # fmt: skip
    ours = tinyslm.load_pretrained(ck.folder, dtype=torch.bfloat16)
    ids = prompt_ids(case, seed=2)
    with torch.no_grad():
        theirs_bf16, exact = theirs(ids).logits, ck.forward(ids)
    for path, tolerance in case.bf16_tolerances().items():
        with on_path(ours, path), torch.no_grad():
            ours_bf16 = ours(ids)
        diff = max_relative_diff(ours_bf16, theirs_bf16)
        assert diff <= tolerance, f"{path or ''} bf16 relative diff {diff:.3e} > {tolerance}"
        ours_error, their_error = max_relative_diff(ours_bf16, exact), max_relative_diff(theirs_bf16, exact)
        assert ours_error <= 1.25 * their_error + 1e-6, f"{path or ''} bf16 error {ours_error:.3e} vs {their_error:.3e}"


@cases
@settings(max_examples=8)
@given(data=st.data())
def test_cached_decode_equals_full_forward(name, data, loaded):
    """Prefill, then chunks of 1-4 tokens through the cache: every position's logits as in one full forward.

    Prompt lengths are drawn around the sliding window (shorter, equal, longer, and more than twice it).
    """
    case, model = CASES[name], loaded(name)
    window = case.window or 4
    total = data.draw(st.integers(window + 1, 3 * window + 3), label="total tokens")
    prefill = data.draw(st.integers(1, total - 1), label="prefill")
    ids = torch.randint(0, case.vocab_size, (2, total), generator=torch.Generator().manual_seed(total))
    for path in paths(case):
        with on_path(model, path), torch.no_grad():
            full = model(ids)
            cache = model.new_cache(2, total)
            pieces, at = [model(ids[:, :prefill], cache=cache)], prefill
            while at < total:
                size = data.draw(st.integers(1, 4), label="chunk")
                pieces.append(model(ids[:, at : at + size], cache=cache))
                at += size
        assert max_relative_diff(torch.cat(pieces, dim=1), full) < TOL


@cases
def test_eager_and_sdpa_attention_agree(name, monkeypatch, loaded):
    """Same weights, the two attention backends: float32 logits within 1e-5 of the logit scale.

    The fused kernel must really run, except where every layer is soft-capped (Gemma-2), which SDPA
    cannot express: there the sdpa backend stays on the eager path, and the test checks exactly that.
    """
    model = loaded(name)
    ids = prompt_ids(CASES[name], seed=3)
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused(*a, **k))
    with torch.no_grad():
        eager = model(ids)
        assert not calls
        set_attention_backend(model, "sdpa")
        try:
            sdpa = model(ids)
        finally:
            set_attention_backend(model, "eager")
    assert len(calls) == (0 if model.config.attn_softcap is not None else len(model.schedule))
    assert max_relative_diff(sdpa, eager) < TOL


@case_forms
def test_save_pretrained_round_trips(name, form, tmp_path, checkpoint):
    """What tinyslm.save_pretrained writes loads back: in tinyslm as the same config and logits, and in
    transformers (where the family has a class) with every key used and the reference's logits, bit for bit."""
    case, ck = CASES[name], checkpoint(name, form)
    ours = tinyslm.load_pretrained(ck.folder)
    tinyslm.save_pretrained(ours, tmp_path)
    ids = prompt_ids(case, seed=4)
    assert tinyslm.load_config(tmp_path).replace(name="x") == ours.config.replace(name="x")
    again = tinyslm.load_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids), ours(ids))
    if ck.hf_model is None:
        return
    transformers = pytest.importorskip("transformers")
    back, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(back) is type(ck.hf_model)
    with torch.no_grad():
        assert torch.equal(back.eval()(ids).logits, ck.hf_model(ids).logits)


@pytest.mark.parametrize("name", sorted(FAST))
def test_cli_inspect_and_generate_work_for_every_family(name, capsys, checkpoint):
    from tinyslm.cli import main  # noqa: PLC0415

    folder = checkpoint(name, "current").folder
    assert main(["inspect", str(folder), "--context", "64"]) == 0
    assert "parameters" in capsys.readouterr().out
    assert main(["generate", str(folder), "--ids", "1,2,3,4,5,6,7,8,9", "--max-new-tokens", "4", "--attention", "sdpa"]) == 0
    assert "4 new tokens" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(name for name in FAST if CASES[name].config_cls is not None))
def test_cli_parity_passes_for_every_family(name, capsys, checkpoint):
    from tinyslm.cli import main  # noqa: PLC0415

    assert main(["parity", str(checkpoint(name, "current").folder), "--tokens", "8"]) == 0
    assert "PARITY OK" in capsys.readouterr().out
