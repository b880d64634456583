"""Every command and subcommand of `digest` has help text, every option says what it does, and each command
appears in README.md (as `digest <command> ...`). Fails until a new command is documented: that is the point."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from digest.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, path + (name,))


COMMANDS = [(" ".join(path), command) for path, command in walk(main) if path]


@pytest.mark.parametrize("name, command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_has_help_text(name, command):
    assert (command.help or "").strip(), f"`digest {name}` has no help text (a docstring)"
    missing = [p.name for p in command.params if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not missing, f"`digest {name}` options without help: {missing}"


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_command_is_in_readme(name):
    assert re.search(rf"\bdigest {re.escape(name)}(?![\w-])", README), f"`digest {name}` does not appear in README.md"


def test_main_options_have_help():
    assert (main.help or "").strip()
    assert all((p.help or "").strip() for p in main.params if isinstance(p, click.Option))
