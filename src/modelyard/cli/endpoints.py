"""``modelyard endpoints``: what the data plane serves."""

from __future__ import annotations

from typing import Any

import typer

from modelyard.cli.approvals import is_pending, print_pending
from modelyard.cli.common import console, emit, handle_errors, operations, table
from modelyard.domain.errors import ValidationFailed

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


def _deployment(max_batch_size: int | None, max_queue_delay_ms: float | None,
                max_queue_size: int | None, replicas: int | None, cache_entries: int | None,
                cache_ttl_s: float | None) -> dict[str, Any] | None:
    values = {"max_batch_size": max_batch_size, "max_queue_delay_ms": max_queue_delay_ms,
              "max_queue_size": max_queue_size, "replicas": replicas,
              "cache_max_entries": cache_entries, "cache_ttl_s": cache_ttl_s}
    chosen = {k: v for k, v in values.items() if v is not None}
    return chosen or None


MAX_BATCH = typer.Option(None, help="Rows per batch (1 turns batching off).")
QUEUE_DELAY = typer.Option(None, help="How long a batch may wait to fill, in ms.")
QUEUE_SIZE = typer.Option(None, help="Requests that may wait; more are refused (503).")
REPLICAS = typer.Option(None, help="Model copies serving in parallel.")
CACHE = typer.Option(None, help="Response cache entries (deterministic models only).")
CACHE_TTL = typer.Option(None, help="Response cache time to live, in seconds.")
REDACT = typer.Option(None, "--redact", help="FIELD=RULE (drop, hash or mask) for what is "
                      "stored or logged from payloads; repeatable. 'update --redact none' "
                      "removes every rule.")


def _redaction(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    if items == ["none"]:
        return {}
    rules = {}
    for item in items:
        field, eq, rule = item.partition("=")
        if not eq or not field:
            raise ValidationFailed(f"--redact {item!r} must look like FIELD=RULE",
                                   field="redaction")
        rules[field] = rule
    return rules


AUTH_HELP = ("Who may call it: key (an API key; the default), jwt (an OIDC token) or public "
             "(no credentials; only an admin may make an endpoint public).")


@app.command()
@handle_errors
def create(
    name: str = typer.Argument(..., help="Endpoint name (the URL path)."),
    model: str = typer.Option(..., "--model", "-m", help="MODEL, MODEL:VERSION or MODEL@ALIAS"),
    timeout_ms: int | None = typer.Option(None, help="Default deadline per request."),
    description: str = typer.Option("", help="What this endpoint is for."),
    max_batch_size: int | None = MAX_BATCH,
    max_queue_delay_ms: float | None = QUEUE_DELAY,
    max_queue_size: int | None = QUEUE_SIZE,
    replicas: int | None = REPLICAS,
    cache_entries: int | None = CACHE,
    cache_ttl_s: float | None = CACHE_TTL,
    auth: str = typer.Option("key", help=AUTH_HELP),
    redact: list[str] | None = REDACT,
) -> None:
    """Create an endpoint serving a model version or alias.

    Example: modelyard endpoints create churn --model churn@champion --max-batch-size 32
    """
    endpoint = operations().create_endpoint(
        name, model, timeout_ms=timeout_ms, description=description,
        deployment=_deployment(max_batch_size, max_queue_delay_ms, max_queue_size, replicas,
                               cache_entries, cache_ttl_s), auth=auth,
        redaction=_redaction(redact))
    emit(endpoint, lambda e: console.print(
        f"endpoint [bold]{e['name']}[/bold] -> {e['model']} ({e['auth']}) "
        f"(POST /endpoints/{e['name']}/predict, /v2/models/{e['name']}/infer)"))


@app.command()
@handle_errors
def update(
    name: str = typer.Argument(...),
    model: str | None = typer.Option(None, "--model", "-m"),
    timeout_ms: int | None = typer.Option(None),
    description: str | None = typer.Option(None),
    max_batch_size: int | None = MAX_BATCH,
    max_queue_delay_ms: float | None = QUEUE_DELAY,
    max_queue_size: int | None = QUEUE_SIZE,
    replicas: int | None = REPLICAS,
    cache_entries: int | None = CACHE,
    cache_ttl_s: float | None = CACHE_TTL,
    auth: str | None = typer.Option(None, help="key, jwt or public (public needs an admin)."),
    redact: list[str] | None = REDACT,
) -> None:
    """Change what an endpoint serves, its deadline, batching or who may call it.

    When the project holds auth changes back for approval, the other changes apply at once
    and the auth change waits: the command prints the pending request.

    Example: modelyard endpoints update churn --model churn:4 --replicas 2
    """
    deployment = _deployment(max_batch_size, max_queue_delay_ms, max_queue_size, replicas,
                             cache_entries, cache_ttl_s)
    endpoint = operations().update_endpoint(
        name, model=model, timeout_ms=timeout_ms, description=description,
        deployment=deployment, auth=auth, redaction=_redaction(redact))
    if is_pending(endpoint):
        others = model is not None or timeout_ms is not None or description is not None \
            or deployment is not None or bool(redact)

        def render(a: dict[str, Any]) -> None:
            if others:
                console.print(f"endpoint {name}: the other changes are applied")
            print_pending(f"auth={auth} for endpoint {name}", a)

        emit(endpoint, render)
        return
    emit(endpoint, lambda e: console.print(f"endpoint {e['name']} -> {e['model']} "
                                           f"({e['auth']})"))


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
