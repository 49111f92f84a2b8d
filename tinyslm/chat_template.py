"""Chat templates: how a chat model wants a conversation written out as one prompt.

An instruct model was fine-tuned on conversations in one exact layout (SmolLM2 and Qwen2.5 write each message
as `<|im_start|>role\\ncontent<|im_end|>\\n`, Llama-2 wraps user turns in `[INST] ... [/INST]`), and answers
well only when prompted in it. The layout ships with the checkpoint as a Jinja template:

    tokenizer_config.json   "chat_template": a string, or a list of {"name": ..., "template": ...} ("default" used)
    chat_template.jinja     the same as a file of its own (what transformers 5 writes)
    a GGUF file             tokenizer.chat_template (and tokenizer.chat_template.NAME for named ones)

It is rendered as transformers' `apply_chat_template(messages, add_generation_prompt=True, tokenize=False)`
renders it (transformers/utils/chat_template_utils.py): Jinja's sandbox (a template from a download is untrusted
code), trim_blocks and lstrip_blocks, the loop-control extension, a `tojson` that keeps non-ASCII text,
`raise_exception(message)` and `strftime_now(format)`, and the tokenizer's special tokens (bos_token, eos_token,
...) as variables. One difference, on purpose: a variable the template prints or loops over but nobody gave is an
error naming it, where Jinja would print nothing (`{% if x %}` on a missing x is still just false, and a special
token the tokenizer lacks still prints as nothing). The rendered text is then tokenized without adding a BOS:
the template writes every special token itself.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TokenizerError
from .files import read_json, read_text
from .tokenizer_types import token_text

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
FIX = "give a template file with --template FILE (Python: load_chat_template(path, template=FILE))"


class _MissingVariable(jinja2.Undefined):
    """A variable nobody gave: false in an `if` and of length 0 (as in transformers), an error where its value is
    printed or looped over; a special token the tokenizer does not have prints as nothing, as in transformers."""

    __slots__ = ()

    def __str__(self) -> str:
        if self._undefined_obj is jinja2.utils.missing and self._undefined_name in SPECIAL_TOKENS:
            return ""
        self._fail_with_undefined_error()

    def __iter__(self):
        self._fail_with_undefined_error()


class _Generation(jinja2.ext.Extension):
    """transformers' `{% generation %}...{% endgeneration %}`: marks the assistant's tokens (for training masks);
    rendering, the body as it is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller) -> str:
        return caller()


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _Generation],
        undefined=_MissingVariable,
    )
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env


@functools.lru_cache(maxsize=8)
def _compiled(text: str) -> jinja2.Template:
    """A template compiled once (a chat renders the same one every turn)."""
    return _environment().from_string(text)


@dataclass
class ChatTemplate:
    """A checkpoint's chat template: `render(messages)` gives the prompt text the model expects."""

    text: str | None  # the Jinja source (None: the checkpoint has none)
    source: str  # where it came from (file and key), for messages
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token, eos_token, ... as text

    def with_text(self, file: str | Path) -> ChatTemplate:
        """The same special tokens with the template of `file` (a Jinja file: `--template FILE`)."""
        file = Path(file).expanduser()
        return ChatTemplate(read_text(file, TokenizerError), str(file), self.special_tokens)

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True, **variables) -> str:
        """The conversation as one prompt, ending (add_generation_prompt) where the assistant's reply begins.
        messages: [{"role": "system" | "user" | "assistant", "content": text}, ...]; `variables` reach the
        template beside them (e.g. tools=None, date_string=...)."""
        if self.text is None:
            raise TokenizerError(f"{self.source}: no chat template in this checkpoint; {FIX}")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise TokenizerError(f"message {i}: expected {{'role': str, 'content': ...}}, found {message!r}")
        try:
            template = _compiled(self.text)
        except jinja2.TemplateSyntaxError as exc:
            raise TokenizerError(f"{self.source}: not a valid Jinja template (line {exc.lineno}: {exc.message})") from None
        context = {**self.special_tokens, "tools": None, "documents": None, **variables}
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **context)
        except jinja2.UndefinedError as exc:
            raise TokenizerError(f"{self.source}: the chat template needs a value nobody gave ({exc.message})") from None
        except jinja2.TemplateError as exc:  # raise_exception(...) in the template, a sandbox refusal
            raise TokenizerError(f"{self.source}: the chat template refused the conversation: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001  (a template is a program: 1 + "a", a missing key, ...)
            raise TokenizerError(f"{self.source}: the chat template failed ({type(exc).__name__}: {exc})") from None


def _named(value: Any, where: str) -> str:
    """A chat_template value: a string, or transformers' list of named templates (the "default" one)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, dict) and isinstance(t.get("template"), str) for t in value):
        named = {t.get("name"): t["template"] for t in value}
        if "default" in named:
            return named["default"]
        raise TokenizerError(f"{where}: several chat templates ({', '.join(map(str, named))}) and none named 'default'; {FIX}")
    raise TokenizerError(f"{where}: chat_template must be a string or a list of named templates, found "
                         f"{type(value).__name__}")  # fmt: skip


def folder_chat_template(folder: Path, text: bool = True) -> ChatTemplate:
    """A checkpoint folder's chat template (text None where it has none, or where text=False: only the special
    tokens are wanted, another template replaces this one) and its special tokens."""
    config_file = folder / "tokenizer_config.json"
    config = read_json(config_file, TokenizerError) if config_file.is_file() else {}
    special = {}
    for key in SPECIAL_TOKENS:
        token = token_text(config.get(key))
        if isinstance(token, str):
            special[key] = token
    if not text:
        return ChatTemplate(None, str(folder), special)
    if (folder / "chat_template.jinja").is_file():  # transformers 5 writes it beside tokenizer_config.json
        file = folder / "chat_template.jinja"
        return ChatTemplate(read_text(file, TokenizerError), str(file), special)
    if config.get("chat_template") is not None:
        where = f"{config_file}: chat_template"
        return ChatTemplate(_named(config["chat_template"], where), where, special)
    return ChatTemplate(None, str(folder), special)
