"""``modelyard endpoints``: what the data plane serves."""

from __future__ import annotations

from typing import Any

import typer

from modelyard.cli.common import console, emit, handle_errors, operations, table

app = typer.Typer(help="Create and manage serving endpoints.", no_args_is_help=True)


def _status(e: dict[str, Any]) -> str:
    status = e.get("status")
    if not isinstance(status, dict):
        return "-"
    text = str(status.get("status", "-"))
    if status.get("serving"):
        text += f" ({status['serving']})"
    if status.get("error"):
        text += f": {status['error']}"
    return text


@app.command()
@handle_errors
def create(
    name: str = typer.Argument(..., help="Endpoint name (the URL path)."),
    model: str = typer.Option(..., "--model", "-m", help="MODEL, MODEL:VERSION or MODEL@ALIAS"),
    timeout_ms: int | None = typer.Option(None, help="Default deadline per request."),
    description: str = typer.Option("", help="What this endpoint is for."),
) -> None:
    """Create an endpoint serving a model version or alias.

    Example: modelyard endpoints create churn --model churn@champion
    """
    endpoint = operations().create_endpoint(name, model, timeout_ms=timeout_ms,
                                            description=description)
    emit(endpoint, lambda e: console.print(
        f"endpoint [bold]{e['name']}[/bold] -> {e['model']} "
        f"(POST /endpoints/{e['name']}/predict, /v2/models/{e['name']}/infer)"))


@app.command()
@handle_errors
def update(
    name: str = typer.Argument(...),
    model: str | None = typer.Option(None, "--model", "-m"),
    timeout_ms: int | None = typer.Option(None),
    description: str | None = typer.Option(None),
) -> None:
    """Change what an endpoint serves, or its deadline.

    Example: modelyard endpoints update churn --model churn:4
    """
    endpoint = operations().update_endpoint(name, model=model, timeout_ms=timeout_ms,
                                            description=description)
    emit(endpoint, lambda e: console.print(f"endpoint {e['name']} -> {e['model']}"))


@app.command("list")
@handle_errors
def list_endpoints() -> None:
    """List endpoints (with live status when talking to a server).

    Example: modelyard endpoints list --json
    """
    endpoints = operations().list_endpoints()
    emit(endpoints, lambda es: console.print(table(
        "Endpoints", ["name", "model", "timeout ms", "status"],
        [[e["name"], e["model"], e["timeout_ms"], _status(e)] for e in es],
        empty="no endpoints yet: create one with "
        "'modelyard endpoints create NAME --model MODEL@ALIAS'")))


@app.command()
@handle_errors
def show(name: str = typer.Argument(...)) -> None:
    """Show one endpoint.

    Example: modelyard endpoints show churn
    """
    endpoint = operations().endpoint(name)
    emit(endpoint, lambda e: console.print(table(
        f"Endpoint {e['name']}", ["field", "value"],
        [[k, v] for k, v in e.items() if k != "status"] + [["status", _status(e)]])))


@app.command()
@handle_errors
def delete(name: str = typer.Argument(...),
           yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Delete an endpoint (its models stay in the registry).

    Example: modelyard endpoints delete churn --yes
    """
    if not yes and not typer.confirm(f"delete endpoint {name!r}?"):
        raise typer.Exit(1)
    operations().delete_endpoint(name)
    emit({"endpoint": name, "deleted": True}, lambda _: console.print(f"deleted {name}"))
