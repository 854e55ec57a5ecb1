"""The `modelyard ...` commands quoted in ```bash blocks of the hand-written pages exist in
the Typer app, and their arguments and options parse (types included)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from modelyard.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# The hand-written pages, and the CLI reference: its examples are the commands' own help.
PAGES = sorted([DOCS / "quickstart.md", DOCS / "concepts.md", DOCS / "security.md",
                *DOCS.glob("tutorials/*.md"), *DOCS.glob("operations/*.md"),
                DOCS / "reference" / "cli.md", ROOT / "README.md"])
ROOT_OPTIONS = {"--yard": 1, "--url": 1, "--key": 1, "--json": 0}


def bash_commands(text: str) -> list[str]:
    """`modelyard ...` invocations in ```bash blocks: continuations joined, comments, pipes,
    redirections and command chains cut off; each command of a line on its own."""
    commands, block = [], None
    for line in text.splitlines():
        if line.strip().startswith("```"):
            block = line.strip()[3:].strip() if block is None else None
            continue
        if block in ("bash", "sh", "console"):
            commands.append(line)
    joined = re.sub(r"\\\n", " ", "\n".join(commands))
    found, pending = [], ""
    for line in joined.splitlines():
        # punctuation_chars: operators are tokens of their own, quotes are respected
        pending += ("\n" if pending else "") + line.strip().removeprefix("$ ")
        lexer = shlex.shlex(pending, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = [*lexer, ";"]  # the last ";" ends the last command
        except ValueError:  # a quote goes on over the next line
            continue
        pending = ""
        words: list[str] = []
        redirected = False
        for token in tokens:
            if token in ("|", "||", "&&", ";", "&"):
                if words[:1] == ["modelyard"]:
                    found.append(shlex.join(words))
                words, redirected = [], False
            elif token in (">", ">>", "<", ">&"):
                redirected = True
                if words and words[-1].isdigit():  # 2>/dev/null: the 2 is no argument
                    words.pop()
            elif not redirected:
                words.append(token)
    return found


def resolve(words: list[str]) -> tuple[list[str], Any, list[str]]:
    """(command path, click command, its own arguments) for ``modelyard WORDS``."""
    command = typer.main.get_command(app)
    rest = words[1:]
    while rest and rest[0] in ROOT_OPTIONS:
        rest = rest[1 + ROOT_OPTIONS[rest[0]]:]
    path: list[str] = []
    while rest and hasattr(command, "commands"):
        sub = command.commands.get(rest[0])
        if sub is None:
            raise LookupError(f"no command {' '.join(['modelyard', *path, rest[0]])!r}")
        path.append(rest[0])
        command, rest = sub, rest[1:]
    return path, command, rest


def problems(line: str) -> list[str]:
    try:
        path, command, args = resolve(shlex.split(line))
    except LookupError as exc:
        return [str(exc)]
    if hasattr(command, "commands"):
        return [f"{line}: {' '.join(path)} needs a subcommand"]
    found = []
    result = CliRunner().invoke(app, [*path, "--help"])
    if result.exit_code != 0:
        found.append(f"{line}: --help exited {result.exit_code}")
    try:
        command.make_context(path[-1], list(args))  # types and required values, no run
    except Exception as exc:  # click's UsageError and BadParameter, typer's own
        # Files the reader made earlier in the page (train.npy, support.yaml) are not here.
        if "does not exist" not in str(exc):
            found.append(f"{line}: {type(exc).__name__}: {exc}")
    return found


CASES = [(page, line) for page in PAGES if page.is_file()
         for line in bash_commands(page.read_text())]


@pytest.mark.parametrize(("page", "line"), CASES,
                         ids=[f"{p.name}:{line[:60]}" for p, line in CASES])
def test_quoted_commands_exist_and_parse(page: Path, line: str) -> None:
    assert not problems(line), problems(line)


def test_the_quickstart_quotes_commands() -> None:
    assert len([1 for page, _ in CASES if page.name == "quickstart.md"]) >= 5


def test_the_checker_refuses_what_the_cli_would() -> None:
    text = ("```bash\nmodelyard --json models list --tag a=b | jq .\n"
            "modelyard endpoints create churn \\\n  --model churn@champion --timeout-ms 50\n"
            "modelyard endpoints create churn --timeout-ms soon\n"
            "modelyard modles list\nmodelyard models list --colour red  # no such option\n"
            "curl -d '{\"a\": 1,\n  \"b\": 2}' && modelyard --yard ./y endpoints list\n"
            "```\n```python\nmodelyard nothing here\n```\n")
    lines = bash_commands(text)
    assert lines[:2] == ["modelyard --json models list --tag a=b",
                         "modelyard endpoints create churn --model churn@champion "
                         "--timeout-ms 50"]
    assert lines[-1] == "modelyard --yard ./y endpoints list"  # after a quote over two lines
    assert [bool(problems(line)) for line in lines] == [False, False, True, True, True, False]
