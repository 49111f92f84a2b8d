"""parity.py as a tool: check_parity / `tinyslm parity` compare plain greedy decoding, not `generate`.

transformers' `generate` is not plain greedy decoding: it applies the checkpoint's
generation_config.json (Qwen2.5-Instruct ships a repetition_penalty of 1.05-1.1), and its
min_new_tokens forbids the eos token. Each checkpoint below makes one of those change the tokens:
a control shows that the `generate` call parity used to make disagrees with greedy decoding, and
parity, whose logits agree, still reports ok.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hf_models import hf_greedy, write_hf_checkpoint

from tinyslm.cli import main
from tinyslm.tools.parity import check_parity, import_transformers

NEW_TOKENS = 16
TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip


def update_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}, indent=2))


def generate_tokens(folder: Path, prompt: list[int]) -> list[int]:
    """The call check_parity used to make: transformers' generate, with the folder's generation_config.json."""
    model = import_transformers().AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)  # fmt: skip
    return out[0, len(prompt) :].tolist()


def parity_json(capsys, *argv: str) -> tuple[int, dict]:
    capsys.readouterr()  # drop transformers' progress output
    code = main(["parity", *argv, "--tokens", str(NEW_TOKENS), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_parity_ignores_the_generation_configs_repetition_penalty(tmp_path, capsys):
    write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    update_json(tmp_path / "generation_config.json", repetition_penalty=1.3)
    code, report = parity_json(capsys, str(tmp_path))
    assert code == 0 and report["ok"] is True and report["tokens_match"] is True
    assert len(set(report["tokens_reference"])) < NEW_TOKENS, "precondition: greedy decoding repeats a token"
    assert generate_tokens(tmp_path, report["prompt"]) != report["tokens_reference"]  # the penalty changed them


def test_parity_decodes_through_an_early_eos_token(tmp_path):
    hf_model = write_hf_checkpoint(tmp_path, "LlamaConfig", **TINY)
    before = check_parity(tmp_path, new_tokens=NEW_TOKENS)
    eos = before.tokens_reference[1]  # make the second greedy token the end of sequence
    assert eos != before.tokens_reference[0], "precondition: eos first appears at the second new token"
    update_json(tmp_path / "config.json", eos_token_id=eos)
    update_json(tmp_path / "generation_config.json", eos_token_id=eos)

    report = check_parity(tmp_path, new_tokens=NEW_TOKENS)
    assert report.ok and report.tokens_ours == report.tokens_reference == before.tokens_reference
    prompt = torch.tensor([report.prompt])
    assert report.tokens_reference == hf_greedy(hf_model, prompt, NEW_TOKENS)[0, prompt.shape[1] :].tolist()
    assert generate_tokens(tmp_path, report.prompt)[:2] != report.tokens_reference[:2]  # min_new_tokens forbids eos


def test_parity_expands_a_home_relative_folder(tmp_path, capsys, monkeypatch):
    """`tinyslm parity ~/x`: transformers gets the expanded path, not "~/x" (which it reads as a Hub repo id)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_hf_checkpoint(tmp_path / "ckpt", "LlamaConfig", **TINY)
    code, report = parity_json(capsys, "~/ckpt")
    assert code == 0 and report["ok"] is True
    assert report["folder"] == str(tmp_path / "ckpt")
    assert check_parity("~/ckpt", new_tokens=4).ok


def test_a_folder_transformers_cannot_load_is_one_line_and_exit_2(tmp_path, capsys):
    """An index without "metadata" loads in tinyslm; transformers 5.23 raises KeyError on it: reported, not a crash."""
    from hf_models import build_hf_model  # noqa: PLC0415

    build_hf_model("LlamaConfig", **TINY).save_pretrained(tmp_path, max_shard_size="50KB")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": json.loads(index.read_text())["weight_map"]}))
    capsys.readouterr()
    assert main(["parity", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "transformers cannot load this folder" in err
