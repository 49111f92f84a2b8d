"""tinyslm/chat/: a conversation keeps its KV cache between turns and decodes exactly what decoding each turn's
whole prompt from scratch decodes; `tinyslm chat` and `generate --chat` on the command line; the real SmolLM2."""

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

import tinyslm
from hf_models import write_hf_checkpoint
from hostile import run_cli
from tinyslm.chat.session import ChatSession
from tinyslm.pretrained import end_ids
from tinyslm.runtime import fast_decoding

SMOLLM = Path(__file__).resolve().parents[3] / "shared" / "data" / "SmolLM2-135M-Instruct.Q4_1.gguf"
WORDS = ["<unk>", "<s>", "</s>", "user", "assistant", "system", *(f"w{i}" for i in range(58))]  # 64 tokens
TEMPLATE = "{% for m in messages %}{{ m.role }} {{ m.content }} {{ eos_token }} {% endfor %}" \
           "{% if add_generation_prompt %}assistant{% endif %}"  # fmt: skip
SHAPES = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, eos_token_id=2, bos_token_id=1)  # fmt: skip


def chat_folder(folder: Path, template: str | None = TEMPLATE, **extra) -> Path:
    """A seeded random Llama (or, with extra, e.g. a sliding window, Mistral) with a word-level tokenizer."""
    write_hf_checkpoint(folder, "MistralConfig" if extra else "LlamaConfig", **SHAPES, **extra)
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if template is not None:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def session(folder: Path, **kwargs) -> ChatSession:
    model = tinyslm.load_pretrained(folder)
    return ChatSession(model, tinyslm.load_tokenizer(folder), tinyslm.load_chat_template(folder),
                       end_ids(folder, model.config), context=200, **kwargs)  # fmt: skip


@pytest.mark.parametrize("extra", [{}, {"sliding_window": 6}], ids=["full cache", "ring buffer past its window"])
@pytest.mark.parametrize("fast", [False, None], ids=["module path", "runtime path"])
def test_each_turn_decodes_what_its_whole_prompt_decodes_from_scratch(tmp_path, extra, fast):
    folder = chat_folder(tmp_path, **extra)
    model = tinyslm.load_pretrained(folder)
    with fast_decoding(model, fast) as decoder:
        chat = ChatSession(model, tinyslm.load_tokenizer(folder), tinyslm.load_chat_template(folder), [], context=200,
                           decoder=decoder)  # fmt: skip  (no end ids: every turn decodes its full length)
        for turn, text in enumerate(["w1 w2 w3", "w4", "w5 w6 w7 w8 w9"]):
            prompt = chat.prompt_ids(text)
            reply = chat.say(text, 6)
            scratch = tinyslm.generate(model, torch.tensor([prompt]), 6, fast=False)[0, len(prompt) :].tolist()
            assert reply == chat.tokenizer.decode(scratch), turn
            if turn and not extra:  # a full cache is reused: only what follows the earlier turns is computed
                assert chat.reused > len(prompt) // 2, (chat.reused, len(prompt))
            assert chat.cache.length == chat.used
    chat.reset()
    assert chat.messages == [] and chat.used == 0


@pytest.mark.parametrize("extra", [{}, {"sliding_window": 6}], ids=["full cache", "ring buffer past its window"])
def test_a_repetition_penalty_counts_the_earlier_turns_held_in_the_cache(tmp_path, extra):
    folder = chat_folder(tmp_path, **extra)
    model = tinyslm.load_pretrained(folder)
    chat = ChatSession(model, tinyslm.load_tokenizer(folder), tinyslm.load_chat_template(folder), [], context=200,
                       repetition_penalty=1.8)  # fmt: skip
    for text in ["w1 w2 w3", "w4", "w5 w6 w7"]:
        prompt = chat.prompt_ids(text)
        reply = chat.say(text, 8)
        scratch = tinyslm.generate(model, torch.tensor([prompt]), 8, repetition_penalty=1.8, fast=False)
        assert reply == chat.tokenizer.decode(scratch[0, len(prompt) :].tolist())


def test_a_turn_that_does_not_fit_is_refused_naming_reset(tmp_path):
    chat = session(chat_folder(tmp_path))
    with pytest.raises(tinyslm.GenerationError, match="/reset"):
        chat.say(" ".join(["w1"] * 190), 20)
    assert chat.messages == []


def test_the_system_message_opens_the_conversation(tmp_path):
    chat = session(chat_folder(tmp_path), system="w9 w9")
    assert chat.tokenizer.decode(chat.prompt_ids("w1")).startswith("system w9 w9 </s> user w1")


def chat_cli(monkeypatch, *argv: str, stdin: bytes) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    status = tinyslm.cli.main(["chat", *argv])
    return status, out.getvalue(), err.getvalue()


def test_chat_reads_messages_and_commands_from_stdin(tmp_path, monkeypatch):
    folder = chat_folder(tmp_path)
    lines = b"w1 w2\n\n/reset\n/system w3\n\xff\xfe not utf-8\n/unknown\nw4\n/exit\nw5 never read\n"
    status, out, err = chat_cli(monkeypatch, str(folder), "--max-new-tokens", "4", stdin=lines)
    assert status == 0, err
    assert len(out.strip().splitlines()) == 2  # two replies: the empty line, commands and the bad line are not turns
    assert "[conversation forgotten]" in err and "system message: w3" in err
    assert "not UTF-8" in err and "unknown command '/unknown'" in err


@pytest.mark.parametrize("argv, match", [
    (["--temperature", "-1"], "temperature must be"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--context", "100000"], "exceeds the model's context"),
])  # fmt: skip
def test_chat_refuses_bad_options_in_one_line(tmp_path, argv, match):
    status, err = run_cli("chat", str(chat_folder(tmp_path)), *argv)
    assert status == 2 and match in err, err


def test_a_model_without_a_template_is_refused_naming_the_fix(tmp_path, monkeypatch):
    folder = chat_folder(tmp_path, template=None)
    for argv in (["chat", str(folder)], ["generate", str(folder), "--chat", "w1", "--max-new-tokens", "2"]):
        status, err = run_cli(*argv)
        assert status == 2 and "no chat template" in err and "--template FILE" in err, err
    mine = tmp_path / "mine.jinja"
    mine.write_text(TEMPLATE)
    status, out, err = chat_cli(monkeypatch, str(folder), "--template", str(mine), "--max-new-tokens", "2", stdin=b"w1\n")
    assert status == 0 and out.strip(), err


@pytest.mark.parametrize("template, message", [
    ("{{ raise_exception('system messages are not supported') }}", "refused the conversation: system messages are not supported"),
    ("{{ messages[0].content }}{{ date_string }}", "needs a value nobody gave ('date_string' is undefined)"),
])  # fmt: skip
@pytest.mark.parametrize("command", ["generate", "chat"])
def test_a_template_that_raises_or_needs_a_missing_value_is_one_line_exit_2(tmp_path, template, message, command):
    folder = chat_folder(tmp_path, template=template)
    argv = ["--chat", "w1", "--max-new-tokens", "2"] if command == "generate" else []
    status, err = run_cli(command, str(folder), *argv)
    assert status == 2 and message in err, err


def test_system_and_template_go_with_chat_only(tmp_path):
    status, err = run_cli("generate", str(chat_folder(tmp_path)), "--prompt", "w1", "--system", "x",
                          "--max-new-tokens", "2")  # fmt: skip
    assert status == 2 and "--system goes with --chat" in err


@pytest.mark.skipif(not SMOLLM.exists(), reason="SmolLM2-135M-Instruct.Q4_1.gguf not present")
def test_smollm2_answers_paris_through_generate_chat_and_chat(monkeypatch, capsys):
    question = "What is the capital of France?"
    status = tinyslm.cli.main(["generate", str(SMOLLM), "--chat", question, "--max-new-tokens", "24"])
    out = capsys.readouterr().out
    assert status == 0 and "Paris" in out.splitlines()[0], out
    assert "<|im_end|>" not in out and "<|im_start|>" not in out  # the reply alone, not the template's text
    status, out, err = chat_cli(monkeypatch, str(SMOLLM), "--max-new-tokens", "24",
                                stdin=f"{question}\nAnd the capital of Italy?\n".encode())  # fmt: skip
    replies = out.strip().splitlines()
    assert status == 0 and "Paris" in replies[0] and "Rome" in replies[1], (out, err)


def test_chat_notes_a_context_about_to_run_out_and_refuses_a_turn_that_cannot_fit(tmp_path, monkeypatch):
    folder = chat_folder(tmp_path)
    first = " ".join(f"w{i}" for i in range(24)).encode()  # 27 tokens with the template's, + 8 new fit in 40
    lines = first + b"\nw1\n/reset\nw2\n"
    status, out, err = chat_cli(monkeypatch, str(folder), "--context", "40", "--max-new-tokens", "8", stdin=lines)
    assert status == 0
    assert "positions used; /reset to start over" in err  # after the first turn: over 80% of 40
    assert "would not fit the context of 40 positions: /reset" in err  # the second turn
    assert "[conversation forgotten]" in err and len(out.strip().splitlines()) == 2  # turns 1 and 3 answered


def test_a_seeded_chat_is_reproducible_and_does_not_replay_one_draw_each_turn(tmp_path, monkeypatch):
    import tinyslm.chat.session as session_module  # noqa: PLC0415

    folder = chat_folder(tmp_path)
    seeds = []
    real = session_module.generate
    monkeypatch.setattr(session_module, "generate", lambda *a, **k: (seeds.append(k["seed"]), real(*a, **k))[1])
    runs = []
    for _ in range(2):
        chat = session(folder, temperature=1.5, seed=3)
        runs.append([chat.say("w1 w2", 8), chat.say("w1 w2", 8)])
        chat.reset()
        runs[-1].append(chat.say("w1 w2", 8))
    assert runs[0] == runs[1] and runs[0][2] == runs[0][0]  # the same seed, the same conversation; reset restarts it
    assert seeds == [3, 4, 3] * 2  # turn k draws with seed + k
