"""`tinyslm generate --prompt A --prompt B ...`: a batch of prompts of different lengths, each row printed as
decoding that prompt alone prints it."""

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from hf_models import write_hf_checkpoint
from hostile import run_cli
from tinyslm.cli import main

WORDS = ["<unk>", "<s>", "</s>", *(f"w{i}" for i in range(61))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch")
    write_hf_checkpoint(folder, "LlamaConfig", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, eos_token_id=2,
                        bos_token_id=1, perturb="resample")  # fmt: skip
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return folder


def generate(capsys, *argv) -> list[str]:
    assert main(["generate", *argv]) == 0
    return capsys.readouterr().out.strip().splitlines()


@pytest.mark.parametrize("fast", ["off", "auto"])
def test_each_row_prints_what_its_prompt_alone_prints(folder, capsys, fast):
    prompts = ["w3 w4", "w5 w6 w7 w8 w9 w10 w11", "w12"]
    lines = generate(capsys, str(folder), *[a for p in prompts for a in ("--prompt", p)], "--max-new-tokens", "6",
                     "--fast", fast)  # fmt: skip
    assert len(lines) == len(prompts) + 1 and "3 prompts of 1-7 tokens" in lines[-1]
    for i, prompt in enumerate(prompts):
        alone = generate(capsys, str(folder), "--prompt", prompt, "--max-new-tokens", "6", "--fast", fast)
        assert lines[i] == f"[{i + 1}] {alone[0]}"


def test_an_empty_prompt_in_a_batch_is_one_line_exit_2(folder):
    status, err = run_cli("generate", str(folder), "--prompt", "w3", "--prompt", "", "--max-new-tokens", "2")
    assert status == 2 and "--prompt number 2 is empty" in err
