"""Every `tinyslm ...` example a user can copy (the parsers' help texts, README.md, docs/) parses, and --version.

Parsing proves the example names existing commands and options, gives every required option and
picks valid choices; it does not run the command, so the files it names need not exist.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shlex
import tomllib
from pathlib import Path

import pytest

import tinyslm
from tinyslm.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}  # a bare fence holds commands (and their output) too


def _parsers(parser: argparse.ArgumentParser, name: str = "tinyslm"):
    """(name, parser) for the parser and every subparser below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _commands(line: str) -> list[str]:
    """The tinyslm command lines in one line of text: a line that is one, or an inline `Example: a; b`."""
    line = line.strip().removeprefix("$ ")
    if line.startswith("tinyslm ") or " -m tinyslm.cli " in line:
        return [line]
    _, found, rest = line.partition("Example: ") if "Example: " in line else line.partition("Examples: ")
    return [part.strip().rstrip(".") for part in rest.split("; ") if part.strip().startswith("tinyslm ")] if found else []


def _short(command: str) -> str:
    return " ".join(command.split())[:60]


def _help_examples():
    for name, parser in _parsers(build_parser()):
        for field in ("description", "epilog"):
            for line in (getattr(parser, field) or "").splitlines():
                for command in _commands(line):
                    yield pytest.param(command, id=f"{name} {field}: {_short(command)}")


def _doc_examples():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in files:
        if not path.is_file():
            continue
        fence = None  # the language of the fenced block we are in, or None outside one
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                fence = line.strip()[3:].strip() if fence is None else None
                continue
            if fence in SHELL_FENCES:
                for command in _commands(line):
                    where = f"{path.relative_to(ROOT)}:{number}"
                    yield pytest.param(command, id=f"{where}: {_short(command)}")


def _argv(command: str) -> list[str]:
    """argv after the program name: `tinyslm ARGS` or `torchrun ... -m tinyslm.cli ARGS`, # comments dropped."""
    words = shlex.split(command, comments=True)
    if "tinyslm.cli" in words:
        return words[words.index("tinyslm.cli") + 1 :]
    assert words[0] == "tinyslm", command
    return words[1:]


def _parses(command: str) -> None:
    if "..." in command or re.search(r"\s[|<>]\s|\s>{1,2}\S", command):
        pytest.skip(f"a placeholder or a pipe, not one command: {command}")
    try:
        build_parser().parse_args(_argv(command))
    except SystemExit as exc:
        pytest.fail(f"`{command}` does not parse (exit {exc.code}); see the argparse message above")


@pytest.mark.parametrize("command", list(_help_examples()))
def test_help_example_parses(command):
    _parses(command)


@pytest.mark.parametrize("command", list(_doc_examples()))
def test_doc_example_parses(command):
    _parses(command)


def test_every_command_with_examples_is_covered():
    """The collectors find the examples where they are: in the top-level epilog and in each command's."""
    found = {param.values[0].split()[1] for param in _help_examples() if param.values[0].startswith("tinyslm ")}
    assert {"demo", "inspect", "generate", "parity", "bench", "convert", "tokenizer", "train", "train-bench",
            "ablate"} <= found  # fmt: skip


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"tinyslm {importlib.metadata.version('tinyslm')}\n"


def test_version_fallback_matches_pyproject():
    """tinyslm.__version__ (what --version prints when the package metadata is missing) is pyproject's version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert tinyslm.__version__ == project["version"]


def test_version_without_package_metadata(monkeypatch, capsys):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"tinyslm {tinyslm.__version__}\n"
