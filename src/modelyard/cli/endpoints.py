"""``modelyard endpoints``: what the data plane serves."""

from __future__ import annotations

from collections.abc import Mapping
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
    pool = status.get("pool")
    if isinstance(pool, dict):  # a lazy deployment on Ray: many models per pool replica
        text += f", loaded on {pool.get('loaded_on', 0)} of {pool.get('replicas', 0)} pool " \
                "replicas"
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


LOG_SAMPLE = typer.Option(None, "--log-sample", min=0.0, max=1.0,
                          help="Share of requests written to the inference log, redacted "
                          "(0: none, 1: all; default 1).")
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
    log_sample: float | None = LOG_SAMPLE,
) -> None:
    """Create an endpoint serving a model version or alias.

    Example: modelyard endpoints create churn --model churn@champion --max-batch-size 32
    """
    endpoint = operations().create_endpoint(
        name, model, timeout_ms=timeout_ms, description=description,
        deployment=_deployment(max_batch_size, max_queue_delay_ms, max_queue_size, replicas,
                               cache_entries, cache_ttl_s), auth=auth,
        redaction=_redaction(redact), log_sample=log_sample)
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
    log_sample: float | None = LOG_SAMPLE,
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
        deployment=deployment, auth=auth, redaction=_redaction(redact), log_sample=log_sample)
    if is_pending(endpoint):
        others = model is not None or timeout_ms is not None or description is not None \
            or deployment is not None or bool(redact) or log_sample is not None

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

    Example: modelyard --json endpoints list
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
        [[k, traffic_text(v) if k == "traffic" else v] for k, v in e.items()
         if k != "status"] + [["status", _status(e)]])))


def traffic_text(traffic: Mapping[str, Any] | None) -> str | None:
    """``churn:2 10% | churn:1 90% (sticky by x-user-id); shadow churn:3 20%``."""
    if not traffic:
        return None
    text = " | ".join(f"{t['model']} {t['weight']:g}%" for t in traffic.get("split") or [])
    if traffic.get("sticky_header"):
        text += f" (sticky by {traffic['sticky_header']})"
    for shadow in traffic.get("shadows") or []:
        text += f"; shadow {shadow['model']} {float(shadow['sample']) * 100:g}% of requests"
    return text


def _targets(items: list[str], option: str, value: str, default: float | None
             ) -> list[tuple[str, float]]:
    """``churn:2=10,churn:1=90`` (comma-separated and/or repeated) -> (model, number)
    pairs; ranges and sums are left to ``TrafficPolicy`` so the CLI and the API agree."""
    out = []
    for item in (p.strip() for text in items for p in text.split(",")):
        model, eq, raw = item.partition("=")
        try:
            if not model or not (eq or default is not None):
                raise ValueError(item)
            out.append((model, float(raw) if eq else float(default or 0.0)))
        except ValueError:
            raise ValidationFailed(f"{option} {item!r} must look like MODEL:VERSION={value}",
                                   field=option.lstrip("-")) from None
    return out


@app.command()
@handle_errors
def traffic(
    name: str = typer.Argument(...),
    split: str | None = typer.Option(None, "--split", help="MODEL:VERSION=PERCENT, "
                                     "comma-separated, adding up to 100 (default: the "
                                     "endpoint's model takes 100)."),
    sticky_header: str | None = typer.Option(None, "--sticky-header", help="Keep each value "
                                             "of this header on one version."),
    shadow: list[str] | None = typer.Option(None, "--shadow", help="MODEL:VERSION=SAMPLE: a "
                                            "share (0-1, default 1) of requests copied to "
                                            "it, answers compared, never returned; "
                                            "repeatable."),
    clear: bool = typer.Option(False, "--clear", help="Send all traffic to the endpoint's "
                               "model again."),
) -> None:
    """Split an endpoint's traffic across versions, with shadows (or --clear it).

    Example: modelyard endpoints traffic churn --split churn:2=10,churn:1=90 --shadow churn:3=0.2
    """
    ops = operations()
    if clear:
        if split or sticky_header or shadow:
            raise ValidationFailed("--clear takes no --split, --sticky-header or --shadow",
                                   field="clear")
        endpoint = ops.set_traffic(name, None)
        emit(endpoint, lambda e: console.print(f"endpoint {e['name']}: all traffic to "
                                               f"{e['model']}", highlight=False))
        return
    if not split and not shadow:
        raise ValidationFailed("give --split and/or --shadow (or --clear)", field="split")
    # Shadows alone keep live traffic where it is: the endpoint's own model answers all.
    pairs = _targets([split], "--split", "PERCENT", None) if split else \
        [(str(ops.endpoint(name)["model"]), 100.0)]
    policy: dict[str, Any] = {"split": [{"model": m, "weight": w} for m, w in pairs]}
    if sticky_header:
        policy["sticky_header"] = sticky_header
    if shadow:
        policy["shadows"] = [{"model": m, "sample": s}
                             for m, s in _targets(shadow, "--shadow", "SAMPLE", 1.0)]
    endpoint = ops.set_traffic(name, policy)
    emit(endpoint, lambda e: console.print(f"endpoint {e['name']}: "
                                           f"{traffic_text(e.get('traffic'))}",
                                           highlight=False))


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
