"""generate.py: cached greedy decoding is exactly full recomputation; requests are validated."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyslm
import tinyslm.layers.mla
from tinyslm import CausalLM, ModelConfig


def tiny_model(n_heads=4, n_kv_heads=2, head_dim=8, **overrides) -> CausalLM:
    config = ModelConfig(vocab_size=97, dim=32, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads,
                         head_dim=head_dim, ffn_dim=48, max_seq_len=64, **overrides)  # fmt: skip
    return CausalLM(config).init_weights(std=0.3, seed=0).double().eval()


def greedy_by_recomputation(model, ids, new_tokens):
    """The definition of greedy decoding: rerun the whole sequence, take the argmax, append."""
    for _ in range(new_tokens):
        with torch.no_grad():
            nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 3),
    prompt_len=st.integers(1, 9),
    n_kv_heads=st.sampled_from([1, 2, 4]),
    group=st.sampled_from([1, 2, 3]),
    head_dim=st.sampled_from([4, 8, 12]),
    new_tokens=st.integers(1, 8),
)
def test_cached_decode_equals_full_recomputation(batch, prompt_len, n_kv_heads, group, head_dim, new_tokens):
    model = tiny_model(n_heads=n_kv_heads * group, n_kv_heads=n_kv_heads, head_dim=head_dim)
    ids = torch.randint(0, 97, (batch, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    cached = tinyslm.generate(model, ids, new_tokens)
    assert cached.shape == (batch, prompt_len + new_tokens)
    assert torch.equal(cached, greedy_by_recomputation(model, ids, new_tokens))


@pytest.mark.parametrize("sharing", ["none", "immediate", "cyclic"])
def test_cached_decode_with_shared_blocks_equals_recomputation(sharing):
    model = tiny_model(block_sharing=sharing)
    assert len(model.new_cache(1, 8).layers) == (2 if sharing == "none" else 4)  # one slot per depth step
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(tinyslm.generate(model, ids, 6), greedy_by_recomputation(model, ids, 6))


def test_cached_decode_with_sliding_window_and_softcap_equals_recomputation():
    model = tiny_model(sliding_window=3, attn_softcap=5.0)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    assert torch.equal(tinyslm.generate(model, ids, 8), greedy_by_recomputation(model, ids, 8))


def test_cache_is_sized_to_the_request_not_the_context():
    model = tiny_model()
    seen = []
    original = model.new_cache
    model.new_cache = lambda batch, capacity, *a, **k: seen.append(capacity) or original(batch, capacity, *a, **k)
    tinyslm.generate(model, torch.tensor([[1, 2, 3]]), 5)
    assert seen == [8] and model.config.max_seq_len == 64


def test_last_only_logits_are_the_last_row_of_the_full_logits():
    model = tiny_model()
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, last = model(ids), model(ids, last_only=True)
    assert full.shape == (2, 7, 97) and last.shape == (2, 1, 97)
    torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-12)  # float64: equal up to summation order
    cache = model.new_cache(2, 9)
    with torch.no_grad():
        model(ids, cache=cache, last_only=True)  # the cache still receives every prompt position
        step = model(ids[:, :1], cache=cache, last_only=True)
        again = model(torch.cat([ids, ids[:, :1]], dim=1))[:, -1:]
    torch.testing.assert_close(step, again, rtol=0, atol=1e-12)


def test_generate_asks_for_last_position_logits_only():
    model = tiny_model()
    calls = []  # (number of input positions, last_only) of every forward
    forward = model.forward

    def spy(ids, *args, **kwargs):
        calls.append((ids.shape[1], kwargs.get("last_only")))
        return forward(ids, *args, **kwargs)

    model.forward = spy
    tinyslm.generate(model, torch.tensor([[1, 2, 3, 4]]), 3)
    assert calls == [(4, True), (1, True), (1, True)]  # prefill, then two decode steps


def test_stops_early_only_when_eos_is_given():
    model = tiny_model()
    ids = torch.tensor([[3, 1, 4]])
    full = tinyslm.generate(model, ids, 10)
    eos = int(full[0, 5])  # the third generated token
    stopped = tinyslm.generate(model, ids, 10, eos_token_id=eos)
    first = (full[0, 3:] == eos).nonzero()[0].item()
    assert torch.equal(stopped, full[:, : 3 + first + 1])
    assert tinyslm.generate(model, ids, 10, eos_token_id=[96, eos]).shape[1] == stopped.shape[1]


def test_finished_rows_are_padded_with_eos_in_a_batch():
    model = tiny_model()
    ids = torch.tensor([[3, 1, 4], [2, 7, 1]])
    full = tinyslm.generate(model, ids, 6)
    eos = int(full[0, 3])  # row 0 produces it at once
    out = tinyslm.generate(model, ids, 6, eos_token_id=eos)
    stops = []
    for row in range(2):
        hits = (full[row, 3:] == eos).nonzero()
        stops.append(hits[0].item() + 1 if hits.numel() else 6)  # new tokens up to and including eos
    assert out.shape[1] == 3 + max(stops)  # decoding ends when every row has finished
    for row, stop in enumerate(stops):
        assert torch.equal(out[row, : 3 + stop], full[row, : 3 + stop])
        assert (out[row, 3 + stop :] == eos).all()


def test_on_token_streams_every_new_column():
    model = tiny_model()
    got = []
    out = tinyslm.generate(model, torch.tensor([[1, 2], [3, 4]]), 4, on_token=lambda t: got.append(t.clone()))
    assert torch.equal(torch.stack(got, dim=1), out[:, 2:])


@pytest.mark.parametrize(
    "ids, new, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), 3, "empty prompt"),
        (torch.tensor([[1, 2]]), -1, "non-negative"),
        (torch.tensor([[1] * 60]), 5, "exceeds the model's context of 64"),
        (torch.tensor([[1, 200]]), 1, "[0, 97)"),
    ],
    ids=["empty", "negative", "too-long", "out-of-vocab"],
)
def test_bad_requests_raise_generation_error(ids, new, message):
    with pytest.raises(tinyslm.GenerationError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        tinyslm.generate(tiny_model(), ids, new)


def test_zero_new_tokens_returns_the_prompt():
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(tinyslm.generate(tiny_model(), ids, 0), ids)


@pytest.mark.parametrize("q_lora_rank", [None, 12], ids=["plain-query", "query-lora"])
def test_mla_decode_argument_changes_no_token_and_restores_the_model(q_lora_rank):
    config = ModelConfig(attention="mla", vocab_size=97, dim=32, n_layers=2, n_heads=4, ffn_dim=48, max_seq_len=64,
                         kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
                         q_lora_rank=q_lora_rank)  # fmt: skip
    model = CausalLM(config).init_weights(std=0.3, seed=0).double().eval()
    layers = tinyslm.layers.mla.mla_layers(model)
    assert len(layers) == 2
    ids = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    during = []  # the layers' decode paths while each token is decoded
    track = lambda _: during.append([m.decode for m in layers])
    naive = tinyslm.generate(model, ids, 8, mla_decode="naive", on_token=track)
    assert during == [["naive", "naive"]] * 8
    during.clear()
    absorbed = tinyslm.generate(model, ids, 8, mla_decode="absorbed", on_token=track)
    assert during == [["absorbed", "absorbed"]] * 8
    assert torch.equal(absorbed, naive)
    assert torch.equal(naive, greedy_by_recomputation(model, ids, 8))
    assert [m.decode for m in layers] == ["naive", "naive"]  # the default, restored

    tinyslm.layers.mla.set_decode_path(model, "auto")  # a path the caller chose is restored too
    assert torch.equal(tinyslm.generate(model, ids, 8, mla_decode="absorbed"), naive)
    assert [m.decode for m in layers] == ["auto", "auto"]


@pytest.mark.slow
def test_fast_path_gives_the_plain_paths_tokens_and_compiles_once():
    """The compiled step over a static cache (sliding window, soft-cap, int8 weights: the parts it must
    carry) decodes exactly the plain path's tokens; a second request of another length reuses the compile."""
    from tinyslm.quant import quantize
    from tinyslm.runtime import fast_decoding

    config = tiny_model().config.replace(n_layers=1, sliding_window=3, attn_softcap=5.0)  # one layer: a short compile
    model = quantize(CausalLM(config).init_weights(std=0.3, seed=0).eval(), "int8")
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    with fast_decoding(model, fast=True) as run:
        fast = tinyslm.generate(model, ids, 10, decoder=run)
    assert run.path == "compiled step" and run.compile_s is not None  # it compiled (warm-up before the prefill)
    assert torch.equal(fast, tinyslm.generate(model, ids, 10, fast=False))
    with fast_decoding(model, fast=True) as run:
        again = tinyslm.generate(model, ids[:, :4], 12, decoder=run)
    assert run.compile_s is None  # same static cache bucket: nothing compiled
    assert torch.equal(again, tinyslm.generate(model, ids[:, :4], 12, fast=False))


def test_fast_path_refuses_mla_and_auto_stays_plain_for_short_requests():
    config = ModelConfig(attention="mla", vocab_size=97, dim=32, n_layers=1, n_heads=4, ffn_dim=48, max_seq_len=64,
                         kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6)  # fmt: skip
    model = CausalLM(config).init_weights(std=0.3, seed=0).eval()
    with pytest.raises(tinyslm.GenerationError, match="MHA/GQA/MQA attention only"):
        tinyslm.generate(model, torch.tensor([[1, 2]]), 3, fast=True)
    assert tinyslm.generate(model, torch.tensor([[1, 2]]), 3).shape == (1, 5)  # auto: the plain path


@pytest.mark.slow
def test_auto_compiles_long_requests_only(monkeypatch):
    from tinyslm.quant import quantize
    from tinyslm.runtime import decoding, fast_decoding

    monkeypatch.setattr(decoding, "AUTO_COMPILE_TOKENS", 8)  # a short "long" request keeps the test quick
    config = tiny_model().config.replace(n_layers=1)
    model = quantize(CausalLM(config).init_weights(std=0.3, seed=0).eval(), "int8")  # (not the native step's)
    ids = torch.tensor([[1, 2, 3]])
    short = tinyslm.generate(model, ids, 7)
    assert "_tinyslm_compiled_step" not in model.__dict__  # below the threshold: the plain path
    with fast_decoding(model) as run:
        long = tinyslm.generate(model, ids, 8, decoder=run)
    assert "_tinyslm_compiled_step" in model.__dict__ and run.compile_s is not None
    assert torch.equal(long[:, :10], short) and torch.equal(long, tinyslm.generate(model, ids, 8, fast=False))


# --- every step's logits are checked ------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, None, True], ids=["module-path", "native-step", "compiled-step"])
@pytest.mark.parametrize("at", [1, 3])
def test_non_finite_logits_at_any_step_stop_with_an_error_naming_the_step(fast, at):
    from tinyslm.errors import GenerationError

    model = CausalLM(ModelConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64,
                                 tie_embeddings=False)).init_weights(std=0.3, seed=0).eval()  # fmt: skip
    ids = torch.tensor([[5, 6, 7]])
    tokens = tinyslm.generate(model, ids, at, fast=False)[0, 3:].tolist()
    with torch.no_grad():  # the embedding row of the token fed at step `at`: NaN (a damaged checkpoint)
        model.tok_emb.weight[tokens[at - 1]] = float("nan")
    if tokens[at - 1] in ids[0].tolist() + tokens[: at - 1]:
        pytest.skip("precondition: the poisoned token must appear first at that step")
    with pytest.raises(GenerationError, match=f"logits at decoding step {at} \\(after {at} new tokens\\) are NaN"):
        tinyslm.generate(model, ids, 6, fast=fast)


def test_logits_that_are_all_equal_are_worth_a_warning():
    model = tiny_model().float()
    with torch.no_grad():
        model.head.weight.zero_() if not model.config.tie_embeddings else model.final_norm.weight.zero_()
    with pytest.warns(RuntimeWarning, match="every logit after the prompt is equal"):
        tinyslm.generate(model, torch.tensor([[1, 2]]), 2)
