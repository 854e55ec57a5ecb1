"""``modelyard readiness`` (the scorecard) and ``modelyard loadtest`` (a bounded load whose
result the scorecard checks)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.cli.common import (
    STATE,
    console,
    err_console,
    handle_errors,
    local_key,
    operations,
    remote_url,
    shown,
)
from modelyard.domain.errors import InvalidJSON, ValidationFailed
from modelyard.readiness import html_scorecard, rich_scorecard, scorecard_for
from modelyard.readiness.loadtest import (
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    LoadTestResult,
    example_request,
    run_load,
)


def _write_atomically(path: Path, text: str) -> None:
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                               prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@handle_errors
def readiness(
    endpoint: str | None = typer.Argument(None, help="Grade this endpoint (default: every "
                                          "endpoint, and the yard)."),
    as_json: bool = typer.Option(False, "--json", help="Print the scorecard as JSON."),
    html: Path | None = typer.Option(None, "--html", metavar="FILE", dir_okay=False,
                                     help="Also write a self-contained HTML report."),
    min_score: float | None = typer.Option(None, "--min-score", min=0, max=100,
                                           help="Exit 1 when the overall score is below "
                                           "this (for CI)."),
    failing: bool = typer.Option(False, "--failing", help="List only checks that warn or "
                                 "fail."),
) -> None:
    """Grade a deployed system in six areas (architecture, deployment, performance,
    governance, interoperability, lifecycle): every check states its evidence, its fix and
    the rubric it stands for (docs/readiness.md).

    Example: modelyard readiness churn --min-score 70 --html readiness.html
    """
    card = scorecard_for(operations().target, endpoint)
    if html is not None:
        _write_atomically(html, html_scorecard(card))
    if as_json or STATE.as_json:
        sys.stdout.write(json.dumps(card.to_dict(), indent=2) + "\n")
    else:
        console.print(rich_scorecard(card, show_passed=not failing))
        if html is not None:
            console.print(f"HTML report written to {shown(html)}")
    if min_score is not None:
        score = "n/a" if card.score is None else f"{card.score:g}"
        if card.score is None or card.score < min_score:
            err_console.print(f"[red]readiness score {score} is below the minimum "
                              f"{min_score:g}[/red]", highlight=False)
            raise typer.Exit(1)


def _request_body(client: Any, endpoint: str, data: Path | None) -> bytes:
    if data is not None:
        try:
            body = json.loads(data.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidJSON(f"{data} is not valid JSON: {exc}", field="data") from exc
        if not isinstance(body, dict) or "inputs" not in body:
            raise ValidationFailed(f"{data} must hold an OIP v2 request: {{\"inputs\": "
                                   "[...]}", field="data")
        return json.dumps(body).encode()
    described = client.endpoint(endpoint)
    example = None
    target = (described.get("status") or {}).get("target")
    if described.get("graph") is None and described.get("traffic") is None and target:
        example = client.version(target).get("input_example")
    metadata = {} if example else client._call("GET", f"/v2/models/{endpoint}")
    return json.dumps(example_request(metadata, example)).encode()


@handle_errors
def loadtest(
    endpoint: str = typer.Argument(..., help="The endpoint to load."),
    duration: float = typer.Option(30.0, "--duration", min=0.1, max=MAX_DURATION_S,
                                   help="Seconds of load."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=MAX_CONCURRENCY,
                                    help="Requests in flight (closed loop: each worker "
                                    "waits for its answer)."),
    max_requests: int = typer.Option(1_000_000, "--max-requests", min=1,
                                     help="Stop after this many requests."),
    data: Path | None = typer.Option(None, "--data", dir_okay=False, help="An OIP v2 "
                                     "request body (JSON) to send (default: the version's "
                                     "input example, else one generated row)."),
    record: bool = typer.Option(True, "--record/--no-record", help="Record the result for "
                                "the readiness scorecard (needs endpoints:write)."),
) -> None:
    """Load an endpoint through the server for a bounded time, print p50/p99, throughput and
    errors, and record the result (the readiness scorecard checks a recent one met the SLO).

    Talks to --url (or MODELYARD_URL), else the yard's server on 127.0.0.1 (its port
    setting, 8000 by default).

    Example: modelyard loadtest churn --duration 30 --concurrency 8
    """
    from modelyard.client import Client
    from modelyard.settings import Settings

    url = (remote_url() or f"http://127.0.0.1:{Settings.load(STATE.yard_path).port}"
           ).rstrip("/")
    key = STATE.key or os.environ.get("MODELYARD_API_KEY") or local_key()
    with Client(url, key) as client:
        body = _request_body(client, endpoint, data)
        target = f"{url}/v2/models/{endpoint}/infer"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[requests]} requests, {task.fields[errors]} "
                              "errors"))
        with Progress(*columns, console=err_console, transient=True) as progress:
            task = progress.add_task(f"loading {endpoint}", total=duration, requests=0,
                                     errors=0)

            def advance(elapsed: float, requests: int, errors: int) -> None:
                progress.update(task, completed=min(elapsed, duration), requests=requests,
                                errors=errors)

            result = run_load(target, body, headers=headers, duration_s=duration,
                              concurrency=concurrency, max_requests=max_requests,
                              progress=advance)
        stored = client.record_loadtest(endpoint, result.to_dict()) if record else None
    if STATE.as_json:
        sys.stdout.write(json.dumps({"result": result.to_dict(), "recorded": stored},
                                    indent=2) + "\n")
        return
    console.print(_result_table(endpoint, result))
    if stored is not None:
        console.print(f"recorded as load test {stored['id']} of {endpoint} (generation "
                      f"{stored['generation']})")


def _result_table(endpoint: str, result: LoadTestResult) -> Table:
    out = Table(title=f"Load test of {endpoint}", title_justify="left", show_header=False)
    out.add_column("what", style="bold")
    out.add_column("value")

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} ms"

    statuses = ", ".join(f"{k}: {v}" for k, v in result.details.get("statuses", {}).items())
    for name, value in (("duration", f"{result.duration_s:.1f} s at concurrency "
                                     f"{result.concurrency}"),
                        ("requests", str(result.requests)),
                        ("errors", f"{result.errors} ({result.error_rate:.2%})"),
                        ("p50", ms(result.p50_ms)), ("p99", ms(result.p99_ms)),
                        ("throughput", f"{result.throughput:.1f} answered/s"),
                        ("statuses", statuses)):
        out.add_row(name, value)
    return out
