"""The next steps the dashboard's empty states suggest are real: every `modelyard ...` line
in a template names an existing command whose arguments and options parse."""

from __future__ import annotations

import html
import re
import shlex
from pathlib import Path

import click
import pytest
import typer

from modelyard.cli.main import app

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "modelyard" / "ui" / "templates"


def hints() -> list[str]:
    found = set()
    for page in TEMPLATES.glob("*.html"):
        for block in re.findall(r"<code>(modelyard [^<]+)</code>", page.read_text()):
            for line in html.unescape(block).splitlines():
                # A page fills in names; any word will do for parsing.
                found.add(re.sub(r"\{\{[^}]+\}\}", "x", line.strip()))
    return sorted(found)


@pytest.mark.parametrize("line", hints())
def test_each_suggested_command_parses(line: str) -> None:
    words = shlex.split(line)[1:]
    command: click.Command = typer.main.get_command(app)
    name = "modelyard"
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        name, command, words = words[0], command.commands[words[0]], words[1:]
    if isinstance(command, click.Group):
        assert not words, f"{line}: no command {words[0]!r} in {name}"
        return  # a group named on its own (e.g. 'modelyard jobs schedule'): help follows
    command.make_context(name, words)  # raises on an unknown option or a missing argument


def test_there_are_hints_to_check() -> None:
    assert len(hints()) >= 10
