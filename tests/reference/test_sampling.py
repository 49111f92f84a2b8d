"""sampling.py: each processor as transformers' applies it, and sampled text equal to transformers' generate.

The reference is transformers' own processors (generation/logits_process.py) and its `generate(do_sample=True)`
after `torch.manual_seed(seed)`, on seeded random models of three families in float32.
"""

from __future__ import annotations

import math

import pytest
import torch
from hf_models import build_hf_model
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinyslm
from tinyslm.errors import GenerationError
from tinyslm.sampling import Sampler, inverse_cdf, repetition_penalty, warp

transformers = pytest.importorskip("transformers")
from transformers.generation import logits_process as lp  # noqa: E402


def their_scores(scores, seen, temperature=None, top_k=None, top_p=None, min_p=None, penalty=None):
    """transformers' processors, in the order its generate builds them (a processor only where it would add one)."""
    processors = lp.LogitsProcessorList()
    if penalty not in (None, 1):
        processors.append(lp.RepetitionPenaltyLogitsProcessor(float(penalty)))
    if temperature not in (None, 1):
        processors.append(lp.TemperatureLogitsWarper(float(temperature)))
    if top_k:
        processors.append(lp.TopKLogitsWarper(top_k))
    if top_p not in (None, 1):
        processors.append(lp.TopPLogitsWarper(float(top_p)))
    if min_p:
        processors.append(lp.MinPLogitsWarper(float(min_p)))
    return processors(seen, scores.clone())


settings_ = st.fixed_dictionaries({
    "temperature": st.one_of(st.none(), st.floats(0.05, 3.0)),
    "top_k": st.one_of(st.none(), st.integers(0, 40)),
    "top_p": st.one_of(st.none(), st.floats(0.01, 1.0)),
    "min_p": st.one_of(st.none(), st.floats(0.0, 1.0)),
    "penalty": st.one_of(st.none(), st.floats(0.5, 2.0)),
})  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(options=settings_, seed=st.integers(0, 2**16), vocab=st.integers(2, 64), rows=st.integers(1, 4))
def test_the_filtered_distribution_equals_transformers_processors(options, seed, vocab, rows):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, vocab, generator=gen) * 3
    seen = torch.randint(0, vocab, (rows, 5), generator=gen)
    theirs = their_scores(scores, seen, **options)
    ours = scores
    if options["penalty"] not in (None, 1):
        ours = repetition_penalty(ours, seen, options["penalty"])
    ours = warp(ours, options["temperature"], options["top_k"], options["top_p"], options["min_p"])
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))  # the same tokens kept
    torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), rtol=0, atol=1e-6)


CASES = {  # three families, shrunken (vocab 128 so that sampling has somewhere to go)
    "llama": ("LlamaConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2)),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64)),
}  # fmt: skip
SAMPLING = [dict(temperature=1.0), dict(temperature=0.7, top_k=20), dict(temperature=1.3, top_p=0.9),
            dict(temperature=0.9, min_p=0.05, repetition_penalty=1.2),
            dict(temperature=0.8, top_k=30, top_p=0.95, min_p=0.02, repetition_penalty=1.1)]  # fmt: skip


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    cls, hparams = CASES[request.param]
    theirs = build_hf_model(cls, vocab_size=128, attn_implementation="eager", **hparams)
    theirs.generation_config.eos_token_id = None  # no stop: both decode every token
    folder = tmp_path_factory.mktemp(request.param)
    theirs.save_pretrained(folder)
    return theirs, tinyslm.load_pretrained(folder, dtype="float32")


@pytest.mark.parametrize("options", SAMPLING, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_seeded_sampling_draws_transformers_tokens(pair, options):
    theirs, ours = pair
    ids = torch.tensor([[5, 17, 99, 3, 64, 7]])
    for seed in (0, 1):
        torch.manual_seed(seed)
        expected = theirs.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=16,
                                   top_k=options.get("top_k", 0), pad_token_id=0,
                                   **{k: v for k, v in options.items() if k != "top_k"})  # fmt: skip
        got = tinyslm.generate(ours, ids, 16, seed=seed, fast=False, **options)
        assert got.tolist() == expected.tolist(), seed


def test_greedy_with_a_repetition_penalty_equals_transformers(pair):
    theirs, ours = pair
    ids = torch.tensor([[5, 17, 99, 3, 64, 7]])
    expected = theirs.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                               repetition_penalty=1.5, pad_token_id=0)  # fmt: skip
    assert tinyslm.generate(ours, ids, 16, repetition_penalty=1.5).tolist() == expected.tolist()


def test_a_seed_gives_the_same_text_and_another_seed_another(pair):
    _, ours = pair
    ids = torch.tensor([[5, 17, 99]])
    runs = [tinyslm.generate(ours, ids, 24, temperature=1.5, seed=seed).tolist() for seed in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert tinyslm.generate(ours, ids, 24, temperature=0).tolist() == tinyslm.generate(ours, ids, 24).tolist()


@pytest.mark.parametrize("options, message", [
    (dict(temperature=-0.1), "temperature must be a number >= 0"),
    (dict(temperature=math.nan), "temperature must be a number >= 0"),
    (dict(top_p=0.0), "top_p must be a number in (0, 1]"),
    (dict(top_p=1.5), "top_p must be a number in (0, 1]"),
    (dict(top_k=-1), "top_k must be an integer >= 0"),
    (dict(top_k=2.5), "top_k must be an integer >= 0"),
    (dict(min_p=2.0), "min_p must be a number in [0, 1]"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be a number > 0"),
    (dict(seed=-1), "seed must be an integer in [0, 2^63)"),
    (dict(seed=True), "seed must be an integer in [0, 2^63)"),
])  # fmt: skip
def test_bad_sampling_values_are_one_clear_error(options, message):
    with pytest.raises(GenerationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("^", r"\^")):  # fmt: skip
        Sampler(**options)


# ----------------------------------------------------------------------------------------------
# the fast paths' draw: inverse CDF, the same distribution as torch.multinomial


def test_inverse_cdf_draws_follow_the_distribution():
    logits = torch.tensor([2.0, 0.5, -1.0, 1.5, -math.inf, 0.0])
    probs = logits.softmax(-1).double()
    n = 60_000
    draws = inverse_cdf(logits.expand(n, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=6).double()
    assert counts[4] == 0  # probability 0: never
    sigma = (n * probs * (1 - probs)).sqrt()
    assert ((counts - n * probs).abs() <= 5 * sigma + 1e-9).all(), (counts / n, probs)


@given(st.lists(st.one_of(st.floats(-30, 30), st.just(-math.inf)), min_size=1, max_size=40), st.integers(0, 2**32))
def test_inverse_cdf_never_draws_a_dropped_token(values, seed):
    assume(any(math.isfinite(v) for v in values))
    logits = torch.tensor(values).expand(64, -1)
    draws = inverse_cdf(logits, torch.Generator().manual_seed(seed))
    assert torch.isfinite(logits[0, draws]).all()


def test_the_fast_paths_draw_by_inverse_cdf_reproducibly(pair):
    _, ours = pair
    ids = torch.tensor([[5, 17, 99]])
    runs = [tinyslm.generate(ours, ids, 12, temperature=1.3, seed=5).tolist() for _ in range(2)]
    assert runs[0] == runs[1]
    generator = torch.Generator().manual_seed(5)  # the same draws, by hand: inverse_cdf over the model's logits
    tokens = ids.tolist()[0]
    for _ in range(12):
        logits = ours(torch.tensor([tokens]))[:, -1].float()
        tokens.append(int(inverse_cdf(logits / 1.3, generator)[0]))
    assert runs[0][0] == tokens
    assert Sampler(temperature=1.0, draw="inverse_cdf").samples
    with pytest.raises(tinyslm.GenerationError, match="draw must be one of"):
        Sampler(temperature=1.0, draw="gumbel")
