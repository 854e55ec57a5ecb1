"""``modelyard demo``: the main job."""

from __future__ import annotations

import typer

from modelyard.cli.common import STATE, console, handle_errors


@handle_errors
def demo(
    check: bool = typer.Option(False, "--check", help="Verify the answers, stop, exit 0/1."),
    port: int = typer.Option(8000, help="Port to serve on (a free one if busy)."),
    lifecycle: bool = typer.Option(
        False, "--lifecycle", help="The whole life of a model (a few minutes): deploy, drift, "
        "retrain, gate, canary, approval, promotion, readiness before and after."),
) -> None:
    """Train two models, register them, serve them, call them over HTTP.

    Creates ./.yard (or --yard) if needed. Without --check it keeps serving until Ctrl+C.
    With --lifecycle it runs the lifecycle story in a fresh yard under <yard>/lifecycle/.

    Example: modelyard demo --check; modelyard demo --lifecycle
    """
    if lifecycle:
        from modelyard.demo.lifecycle import run as run_lifecycle

        raise typer.Exit(run_lifecycle(STATE.yard_path, port, check, console))
    from modelyard.demo.story import run

    raise typer.Exit(run(STATE.yard_path, port, check, console))
