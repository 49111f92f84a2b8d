"""Chat templates (tinyslm/chat_template.py) render exactly what transformers' apply_chat_template renders.

The templates in chat_templates/ are those published with SmolLM2-Instruct (huggingface.co/HuggingFaceTB/
SmolLM2-135M-Instruct), Qwen2.5-Instruct (huggingface.co/Qwen/Qwen2.5-0.5B-Instruct), Zephyr/TinyLlama-Chat
(huggingface.co/TinyLlama/TinyLlama-1.1B-Chat-v1.0) and Llama-2-chat (huggingface.co/meta-llama/Llama-2-7b-chat-hf),
plus helpers.jinja, which uses every helper transformers gives a template. Each is saved with a transformers
tokenizer (save_pretrained: chat_template.jinja), read back by tinyslm, and both render the same conversations.
"""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyslm
from tinyslm import TokenizerError

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer  # noqa: E402
from tokenizers.models import WordLevel  # noqa: E402

TEMPLATES = {path.stem: path.read_text() for path in sorted((Path(__file__).parent / "chat_templates").glob("*.jinja"))}
SPECIAL = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")

CONVERSATIONS = {
    "one question": [{"role": "user", "content": "What is the capital of France?"}],
    "a system message": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hi"}],
    "turns": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "  Tell me a joke  "},
    ],
    "non-ASCII and markup": [{"role": "user", "content": "Ça va? 日本語 <b>&amp;</b> \"quoted\" {{ not jinja }}"}],
}  # fmt: skip


def hf_tokenizer(template: str | None):
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "hello"])}
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")), **SPECIAL)
    tok.chat_template = template
    return tok


def saved(tmp_path: Path, template: str | None) -> tuple[object, Path]:
    tok = hf_tokenizer(template)
    tok.save_pretrained(tmp_path)
    return tok, tmp_path


def reference(tok, messages, **kwargs) -> str:
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_rendering_equals_transformers(name, conversation, tmp_path):
    messages = CONVERSATIONS[conversation]
    tok, folder = saved(tmp_path, TEMPLATES[name])
    try:
        want = reference(tok, messages)
    except Exception as exc:  # noqa: BLE001  (the template refuses it: tinyslm must refuse it too, saying why)
        with pytest.raises(TokenizerError, match="refused the conversation"):
            tinyslm.load_chat_template(folder).render(messages)
        assert "alternate" in str(exc)  # (only Llama-2's does: a system message then... it accepts all of these)
        return
    assert tinyslm.load_chat_template(folder).render(messages) == want


def test_llama2_refuses_roles_that_do_not_alternate_as_transformers_does(tmp_path):
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    tok, folder = saved(tmp_path, TEMPLATES["llama2"])
    with pytest.raises(Exception, match="must alternate"):
        reference(tok, messages)
    with pytest.raises(TokenizerError, match="refused the conversation: Conversation roles must alternate"):
        tinyslm.load_chat_template(folder).render(messages)


def test_qwen_with_tools_equals_transformers(tmp_path):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Météo", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "22 °C"},
    ]  # fmt: skip
    tok, folder = saved(tmp_path, TEMPLATES["qwen2.5"])
    assert tinyslm.load_chat_template(folder).render(messages, tools=tools) == reference(tok, messages, tools=tools)


@given(st.lists(st.tuples(st.sampled_from(["user", "assistant", "system"]), st.text(max_size=30)), min_size=1,
                max_size=5))  # fmt: skip
def test_any_conversation_renders_as_transformers_renders_it(turns):
    import tempfile  # noqa: PLC0415  (a folder per example: hypothesis runs many in one test)

    messages = [{"role": role, "content": text} for role, text in turns]
    with tempfile.TemporaryDirectory() as folder:
        tok, _ = saved(Path(folder), TEMPLATES["qwen2.5"])
        assert tinyslm.load_chat_template(folder).render(messages) == reference(tok, messages)


def test_the_named_list_form_uses_the_default_template(tmp_path):
    _, folder = saved(tmp_path, None)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": TEMPLATES["zephyr"]}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    messages = CONVERSATIONS["turns"]
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert tinyslm.load_chat_template(folder).render(messages) == reference(tok, messages)
    config["chat_template"] = [{"name": "tool_use", "template": "TOOLS"}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="none named 'default'"):
        tinyslm.load_chat_template(folder)


def test_a_template_string_in_tokenizer_config_is_read(tmp_path):
    _, folder = saved(tmp_path, None)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = TEMPLATES["smollm2"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    messages = CONVERSATIONS["one question"]
    assert tinyslm.load_chat_template(folder).render(messages) == reference(tok, messages)


def test_a_checkpoint_without_a_template_names_the_fix(tmp_path):
    _, folder = saved(tmp_path, None)
    template = tinyslm.load_chat_template(folder)
    with pytest.raises(TokenizerError, match="no chat template.*--template FILE"):
        template.render(CONVERSATIONS["one question"])
    file = tmp_path / "mine.jinja"
    file.write_text(TEMPLATES["zephyr"])
    tok = hf_tokenizer(TEMPLATES["zephyr"])
    given_file = tinyslm.load_chat_template(folder, template=file)
    assert given_file.render(CONVERSATIONS["turns"]) == reference(tok, CONVERSATIONS["turns"])


@pytest.mark.parametrize("template, match", [
    ("{{ messages[0].content }}{{ undefined_thing }}", "needs a value nobody gave.*undefined_thing"),
    ("{% for m in messages %}{{ m.missing_key }}{% endfor %}", "needs a value nobody gave.*missing_key"),
    ("{{ raise_exception('no system messages, please') }}", "refused the conversation: no system messages, please"),
    ("{% if x %}", "not a valid Jinja template"),
    ("{{ ''.__class__.__mro__ }}", "the chat template"),  # the sandbox refuses it
    ("{{ messages.append(1) }}", "the chat template"),  # immutable: no changing the caller's list
    ("{{ 1 + 'a' }}", "failed \\(TypeError"),
])  # fmt: skip
def test_a_template_that_fails_says_why_in_one_error(template, match, tmp_path):
    _, folder = saved(tmp_path, template)
    with pytest.raises(TokenizerError, match=match):
        tinyslm.load_chat_template(folder).render(CONVERSATIONS["one question"])


def test_a_missing_variable_in_an_if_is_false_as_in_transformers(tmp_path):
    template = "{% if not_given %}yes{% else %}no{% endif %}{{ messages[0].content }}"
    tok, folder = saved(tmp_path, template)
    assert tinyslm.load_chat_template(folder).render(CONVERSATIONS["one question"]) == reference(
        tok, CONVERSATIONS["one question"]
    )


def test_bad_messages_are_refused(tmp_path):
    _, folder = saved(tmp_path, TEMPLATES["smollm2"])
    with pytest.raises(TokenizerError, match="message 0"):
        tinyslm.load_chat_template(folder).render(["hello"])


@pytest.mark.parametrize("template", [
    "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",  # transformers' tag
    "{{ sep_token }}{{ mask_token }}{{ messages[0].content }}",  # special tokens this tokenizer does not have
    "{{ not_given|length }}{{ messages[0].content }}",  # the length of a missing value
])  # fmt: skip
def test_what_transformers_renders_despite_a_missing_value_renders_the_same(template, tmp_path):
    tok, folder = saved(tmp_path, template)
    messages = CONVERSATIONS["one question"]
    assert tinyslm.load_chat_template(folder).render(messages) == reference(tok, messages)


def test_a_given_template_replaces_a_checkpoints_broken_one(tmp_path):
    _, folder = saved(tmp_path, None)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "TOOLS"}]  # no default: unusable
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    mine = tmp_path / "mine.jinja"
    mine.write_text(TEMPLATES["zephyr"])
    rendered = tinyslm.load_chat_template(folder, template=mine).render(CONVERSATIONS["one question"])
    assert rendered == reference(hf_tokenizer(TEMPLATES["zephyr"]), CONVERSATIONS["one question"])
