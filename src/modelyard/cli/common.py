"""What every command shares: finding the yard (or a remote server), printing, errors."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.protocol import is_renderable
from rich.table import Table
from rich.text import Text

from modelyard.domain.errors import ModelyardError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    yard_path: Path | None = None
    url: str | None = None
    key: str | None = None
    as_json: bool = False


STATE = Context()

# Control characters but tab and newline: an escape sequence could restyle, retitle or
# otherwise drive the terminal of whoever looks at a description someone else wrote.
_CONTROL = {c: "\ufffd" for c in (*range(0, 9), *range(11, 32), 127)}


def visible(text: str) -> str:
    """``text`` with its control characters shown as U+FFFD."""
    return text.translate(_CONTROL)


def shown(value: Any) -> str:
    """Text someone typed (a description, an owner, an error quoting them) for the terminal:
    never read as Rich markup (a stray ``[/x]`` made the command crash), never driving it."""
    return "" if value is None else escape(visible(str(value)))


def handle_errors(fn: F) -> F:
    """Turn any Modelyard or connection error into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ModelyardError as exc:
            where = f" (field: {exc.field})" if exc.field else ""
            err_console.print(f"[red]error[/red] {escape(f'[{exc.code}]')}: "
                              f"{shown(exc.detail)}{shown(where)}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except httpx.HTTPError as exc:
            err_console.print(f"[red]error[/red]: cannot reach {shown(remote_url())}: "
                              f"{shown(exc)}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def to_data(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class Operations:
    """The same verbs in-process (a ``Yard``) or over HTTP (a ``Client``), as plain data."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.target, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return to_data(method(*args, **kwargs))

        return call


def remote_url() -> str | None:
    return STATE.url or os.environ.get("MODELYARD_URL")


def open_yard() -> Any:
    from modelyard.yard import Yard

    return Yard(STATE.yard_path)


def operations() -> Operations:
    url = remote_url()
    if url:
        from modelyard.client import Client

        return Operations(Client(url, STATE.key or os.environ.get("MODELYARD_API_KEY")
                                 or local_key()))
    return Operations(open_yard())


def local_key() -> str | None:
    from modelyard.settings import Settings

    path = Settings.load(STATE.yard_path).admin_key_file
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def emit(data: Any, render: Callable[[Any], None]) -> None:
    if STATE.as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render(data)


def as_text(value: Any) -> RenderableType:
    """A cell or a line for Rich: a renderable (a styled ``Text``, a table) as it is, any
    other value as plain text (never markup, control characters shown as U+FFFD)."""
    if is_renderable(value) and not isinstance(value, str):
        return value
    return Text(visible("" if value is None else str(value)))


def table(title: str, columns: list[str], rows: list[list[Any]], empty: str = ""
          ) -> Table | Text:
    """A table of plain values: what they hold is shown as text, whoever wrote it (a
    description, an inference input, a rejection comment); pass a ``Text`` to style a
    cell."""
    if not rows and empty:
        return Text(visible(empty))
    out = Table(title=Text(visible(title)), title_justify="left", header_style="bold")
    for col in columns:
        out.add_column(col)
    for row in rows:
        out.add_row(*[as_text(v) for v in row])
    return out


def parse_pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise typer.BadParameter(f"{what} {item!r} must look like key=value")
        out[key] = value
    return out
