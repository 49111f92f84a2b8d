"""Batches of prompts of different lengths (tinyslm/generate.py, layers/positions.py's Step): left padding with an
attention mask, positions counted per row. Each row decodes exactly as its prompt decodes alone, and as
transformers' generate decodes the same left-padded batch (greedy, its eager attention), for RoPE (Llama),
learned positions (OPT, GPT-2), ALiBi (Bloom), sliding windows past the window (Mistral; Gemma-2 with soft caps)
and MLA (DeepSeek-V2); rows stop at their own end id."""

import pytest
import torch
from family_cases import all_cases
from hf_models import write_hf_checkpoint
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyslm
from tinyslm import GenerationError

CASES = all_cases()
FAMILIES = ["smollm", "opt-125m", "gpt2-cerebras", "bloom-560m", "mistral-danube", "gemma2-2b",
            "deepseek-v2-q-lora-bias"]  # fmt: skip
NEW = 8


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(name):
        if name not in made:
            case = CASES[name]
            folder = tmp_path_factory.mktemp(name)
            hf = write_hf_checkpoint(folder, case.config_cls, perturb=case.perturb, attn_implementation="eager",
                                     **case.hparams)  # fmt: skip
            made[name] = hf, tinyslm.load_pretrained(folder)
        return made[name]

    return get


def prompts_for(vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


def alone(model, prompt: list[int], new: int = NEW) -> list[int]:
    return tinyslm.generate(model, torch.tensor([prompt]), new, fast=False)[0, len(prompt) :].tolist()


@pytest.mark.parametrize("name", FAMILIES)
def test_each_row_decodes_as_alone_and_as_transformers_decodes_the_padded_batch(name, checkpoints):
    hf, model = checkpoints(name)
    window = CASES[name].window or 4
    lengths = [3, window + 6, 1, window + 2]  # the longest past any sliding window; one a single token
    prompts = prompts_for(model.config.vocab_size, lengths)
    out = tinyslm.generate(model, prompts, NEW)
    width = max(lengths)
    assert out.shape == (len(prompts), width + NEW)
    for row, prompt in enumerate(prompts):
        assert out[row, width:].tolist() == alone(model, prompt), f"row {row} ({len(prompt)} tokens)"
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    assert torch.equal(out[:, :width], ids)
    theirs = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                         eos_token_id=None)  # fmt: skip
    assert out[:, width:].tolist() == theirs[:, width:].tolist()
    # the same batch as transformers takes it: a padded tensor and its attention_mask
    assert torch.equal(tinyslm.generate(model, ids, NEW, attention_mask=mask), out)


@pytest.mark.parametrize("path", ["naive", "absorbed"])
def test_mla_decode_paths_serve_padded_batches(path, checkpoints):
    _, model = checkpoints("deepseek-v2-q-lora-bias")
    prompts = prompts_for(model.config.vocab_size, [2, 7, 4], seed=3)
    out = tinyslm.generate(model, prompts, NEW, mla_decode=path)
    for row, prompt in enumerate(prompts):
        assert out[row, 7:].tolist() == alone(model, prompt), row


@settings(max_examples=12)
@given(lengths=st.lists(st.integers(1, 14), min_size=2, max_size=4), seed=st.integers(0, 2**16),
       name=st.sampled_from(["smollm", "bloom-560m", "mistral-danube"]))  # fmt: skip
def test_any_batch_of_random_lengths_decodes_each_row_as_alone(lengths, seed, name, checkpoints):
    _, model = checkpoints(name)
    prompts = prompts_for(model.config.vocab_size, lengths, seed)
    out = tinyslm.generate(model, prompts, 5)
    for row, prompt in enumerate(prompts):
        assert out[row, max(lengths) :].tolist() == alone(model, prompt, 5), (row, lengths)


def test_rows_stop_at_their_own_end_id(checkpoints):
    _, model = checkpoints("smollm")
    prompts = prompts_for(model.config.vocab_size, [4, 9, 2], seed=5)
    firsts = [alone(model, p, 1)[0] for p in prompts]
    stop = firsts[1]  # row 1 ends at once; the others go on unless they produce it too
    out = tinyslm.generate(model, prompts, NEW, eos_token_id=stop)
    for row, prompt in enumerate(prompts):
        want = alone(model, prompt)
        if stop in want:
            want = want[: want.index(stop) + 1]
        got = out[row, 9:].tolist()
        assert got[: len(want)] == want and all(t == stop for t in got[len(want) :]), row


def test_sampled_rows_are_reproducible_with_a_seed(checkpoints):
    _, model = checkpoints("smollm")
    prompts = prompts_for(model.config.vocab_size, [3, 8], seed=7)
    a = tinyslm.generate(model, prompts, NEW, temperature=0.9, top_k=20, seed=11)
    b = tinyslm.generate(model, prompts, NEW, temperature=0.9, top_k=20, seed=11)
    assert torch.equal(a, b)


@pytest.mark.parametrize("prompts, mask, match", [
    ([[5, 6], []], None, "prompt 1 is empty"),
    ([[5, 6], "ab"], None, "prompt 1: expected a list of token ids"),
    (torch.tensor([[5, 6, 7]]), torch.tensor([[1, 0, 1]]), "only left padding"),
    (torch.tensor([[5, 6, 7]]), torch.tensor([[0, 0, 0]]), "row 0 of the batch is empty"),
    (torch.tensor([[5, 6, 7]]), torch.tensor([[0, 2, 1]]), "0 \\(padding\\) and 1"),
    (torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1]]), "attention_mask has shape"),
    ([[5, 6], [7]], torch.tensor([[1, 1], [0, 1]]), "not both"),
])  # fmt: skip
def test_bad_batches_are_refused_in_one_line(prompts, mask, match, checkpoints):
    _, model = checkpoints("smollm")
    with pytest.raises(GenerationError, match=match):
        tinyslm.generate(model, prompts, 2, attention_mask=mask)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", FAMILIES)
def test_padded_logits_equal_each_prompt_alone_and_transformers_cached_or_not(name, checkpoints):
    """Logits, not only greedy picks (a random model repeats itself): the padded prefill and three cached steps
    of each row, against that row's prompt alone and against transformers' forward on the padded batch."""
    import inspect  # noqa: PLC0415

    hf, model = checkpoints(name)
    window = CASES[name].window or 4
    lengths = [2, window + 5, 5]
    prompts = prompts_for(model.config.vocab_size, lengths, seed=1)
    width, more = max(lengths), torch.randint(3, model.config.vocab_size, (len(prompts), 3))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    padding = (mask == 0).sum(1)
    with torch.no_grad():
        full = model(torch.cat((ids, more), 1), padding=padding)  # (B, T + 3, V), no cache
        cache = model.new_cache(len(prompts), width + 3)
        cached = [model(ids, cache, padding=padding)] + [model(more[:, i : i + 1], cache) for i in range(3)]
        cached = torch.cat([cached[0], *cached[1:]], 1)
        extended = torch.cat((mask, torch.ones_like(more)), 1)
        kwargs = {"attention_mask": extended}
        if "position_ids" in inspect.signature(hf.forward).parameters:
            kwargs["position_ids"] = (extended.cumsum(-1) - 1).clamp(min=0)
        theirs = hf(torch.cat((ids, more), 1), **kwargs).logits
    for row, prompt in enumerate(prompts):
        real = slice(width - len(prompt), None)
        with torch.no_grad():
            solo = model(torch.tensor([prompt + more[row].tolist()]))[0]
        assert rel(full[row, real], solo) < 1e-5, row
        assert rel(cached[row, real], solo) < 1e-5, row
        assert rel(full[row, real], theirs[row, real]) < 1e-4, row


@pytest.mark.parametrize("name", ["smollm", "bloom-560m", "mistral-danube", "gemma2-2b", "opt-125m"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_native_step_decodes_padded_batches(name, dtype, checkpoints):
    """The native step (tinyslm/runtime/decode_block.py) serves padded rows: per-row RoPE angles, padding keys
    masked, ring buffers included. Its steps' logits equal the module path's on the same padded batch (float32
    rounding; bfloat16: its own rounding, runtime/decode_block.py), and its greedy rows equal each prompt alone."""
    from tinyslm.quant import native  # noqa: PLC0415
    from tinyslm.runtime import fast_decoding  # noqa: PLC0415
    from tinyslm.runtime.decode_block import native_decode  # noqa: PLC0415

    if not native.available():
        pytest.skip("the native kernels are not available here")
    _, model = checkpoints(name)
    model = model.to(dtype)
    try:
        window = CASES[name].window or 4
        lengths = [2, window + 5, 5]
        prompts = prompts_for(model.config.vocab_size, lengths, seed=2)
        width, more = max(lengths), torch.randint(3, model.config.vocab_size, (len(prompts), 4))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        padding = torch.tensor([width - len(p) for p in prompts])

        def steps():
            cache = model.new_cache(len(prompts), width + 4)
            out = [model(ids, cache, padding=padding, last_only=True)]
            return torch.cat(out + [model(more[:, i : i + 1], cache) for i in range(4)], 1).float()

        with torch.no_grad():
            reference = steps()
            with native_decode(model) as switched:
                assert switched, "every block of this model should run natively"
                fast = steps()
        assert rel(fast, reference) < (1e-5 if dtype == torch.float32 else 3e-2)
        if dtype == torch.float32:
            with fast_decoding(model) as decoder:
                out = tinyslm.generate(model, prompts, NEW, decoder=decoder)
                assert decoder.path == "native step"
            for row, prompt in enumerate(prompts):
                assert out[row, width:].tolist() == alone(model, prompt), row
    finally:
        model.float()


def test_a_repetition_penalty_sees_each_rows_text_not_its_padding(checkpoints):
    """The padding token (0) is no token of a padded row: penalising it would decode the row otherwise than alone."""
    _, model = checkpoints("smollm")
    prompts = prompts_for(model.config.vocab_size, [2, 9], seed=4)
    with torch.no_grad():
        top = int(model(torch.tensor([prompts[0]]))[0, -1].argmax())
        saved = model.head.weight[0].clone()
        model.head.weight[0] = model.head.weight[top] * 1.1  # token 0: the row's likeliest next token, by a margin
        assert int(model(torch.tensor([prompts[0]]))[0, -1].argmax()) == 0
    try:
        alone_row = tinyslm.generate(model, torch.tensor([prompts[0]]), 6, repetition_penalty=1.8, fast=False)[0, 2:]
        batch = tinyslm.generate(model, prompts, 6, repetition_penalty=1.8, fast=False)
        assert batch[0, 9:].tolist() == alone_row.tolist()
        assert batch[1, 9:].tolist() == tinyslm.generate(model, torch.tensor([prompts[1]]), 6, repetition_penalty=1.8,
                                                         fast=False)[0, 9:].tolist()  # fmt: skip
    finally:
        with torch.no_grad():
            model.head.weight[0] = saved


def test_prompts_as_1d_tensors_and_a_reused_cache_forget_their_padding(checkpoints):
    _, model = checkpoints("smollm")
    prompts = prompts_for(model.config.vocab_size, [3, 6], seed=6)
    as_lists = tinyslm.generate(model, prompts, 4)
    assert torch.equal(tinyslm.generate(model, [torch.tensor(p) for p in prompts], 4), as_lists)
    cache = model.new_cache(2, 16)
    model(torch.tensor([[0, 0, 0] + prompts[0], prompts[1]]), cache, padding=torch.tensor([3, 0]))
    assert cache.truncate(0) and cache.padding is None
