"""``modelyard demo``: the main job."""

from __future__ import annotations

import typer

from modelyard.cli.common import STATE, console, handle_errors


@handle_errors
def demo(
    check: bool = typer.Option(False, "--check", help="Verify the answers, stop, exit 0/1."),
    port: int = typer.Option(8000, help="Port to serve on (a free one if busy)."),
) -> None:
    """Train two models, register them, serve them, call them over HTTP.

    Creates ./.yard (or --yard) if needed. Without --check it keeps serving until Ctrl+C.

    Example: modelyard demo --check
    """
    from modelyard.demo.story import run

    raise typer.Exit(run(STATE.yard_path, port, check, console))
