"""``modelyard monitor``: what endpoints did (the inference log) and how well (drift and
quality, from the log and delayed labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich.text import Text

from modelyard.cli.common import console, emit, handle_errors, operations, table
from modelyard.domain.errors import ValidationFailed

app = typer.Typer(help="Monitoring: the inference log, drift and quality per endpoint.",
                  no_args_is_help=True)

SINCE = typer.Option(None, "--since", help="ISO 8601 time or a time ago (15m, 2h, 7d).")
UNTIL = typer.Option(None, "--until", help="ISO 8601 time or a time ago.")


def _short(value: Any, width: int = 60) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


@app.command("log")
@handle_errors
def log_(
    endpoint: str = typer.Argument(..., help="Endpoint name."),
    since: str | None = SINCE,
    until: str | None = UNTIL,
    version: str | None = typer.Option(None, help="Only this MODEL:VERSION."),
    status: str | None = typer.Option(None, help="ok or error."),
    limit: int = typer.Option(20, min=1, max=1000, help="Records per page."),
    before_id: int | None = typer.Option(None, help="Continue a listing (its 'next')."),
    payloads: bool = typer.Option(True, help="Show inputs and outputs."),
) -> None:
    """Logged requests of an endpoint (sampled and redacted), newest first.

    Example: modelyard monitor log churn --since 1h --version churn:2 --status error
    """
    page = operations().inference_log(endpoint, since=since, until=until, version=version,
                                      status=status, limit=limit, before_id=before_id,
                                      payloads=payloads)

    def render(data: dict[str, Any]) -> None:
        columns = ["id", "at", "version", "status", "ms", "request id"]
        if payloads:
            columns += ["inputs", "outputs"]
        rows = []
        for r in data["records"]:
            row = [r["id"], r["at"][:23], r["version"], r["status"], r["latency_ms"],
                   r["request_id"]]
            if payloads:
                row += [_short(r.get("inputs")), _short(r.get("outputs"))]
            rows.append(row)
        console.print(table(f"inference log of {endpoint}", columns, rows,
                            empty=f"nothing logged for {endpoint} in that window (is its "
                            "log_sample 0?)"))
        if data["next"] is not None:
            console.print(f"more: --before-id {data['next']}")

    emit(page, render)


@app.command()
@handle_errors
def summary(
    endpoint: str = typer.Argument(..., help="Endpoint name."),
    since: str | None = SINCE,
    until: str | None = UNTIL,
) -> None:
    """Per version: logged requests, errors, mean latency, first and last time.

    Example: modelyard monitor summary churn --since 1d
    """
    data = operations().inference_log_summary(endpoint, since=since, until=until)
    emit(data, lambda d: console.print(table(
        f"inference log of {endpoint}",
        ["version", "records", "errors", "mean ms", "first", "last"],
        [[v["version"], v["records"], v["errors"], v["mean_latency_ms"],
          (v["first"] or "")[:19], (v["last"] or "")[:19]] for v in d["versions"]],
        empty=f"nothing logged for {endpoint} in that window")))


# -- monitors ------------------------------------------------------------------------------
STATUS_STYLE = {"ok": "green", "warn": "yellow", "drift": "red", "insufficient_data": "dim",
                "no_reference": "yellow", "invalid": "red", "firing": "red",
                "pending": "yellow", "inactive": "green"}
BAR = 20


def _bar(score: float | None, style: str) -> Text:
    """A horizontal bar for a 0..1 score: the series reads at a glance."""
    if score is None:
        return Text("-", style="dim")
    filled = max(0, min(BAR, round(score * BAR)))
    return Text("█" * filled + "·" * (BAR - filled) + f" {score:.2f}", style=style)


@app.command("set")
@handle_errors
def set_(
    endpoint: str = typer.Argument(..., help="Endpoint name."),
    file: Path | None = typer.Option(None, "--file", "-f", help="The spec as YAML or JSON "
                                     "(window_s, drift, quality, slo, alerts, webhook)."),
    window: float | None = typer.Option(None, "--window-s", help="Window length (seconds)."),
    every: float | None = typer.Option(None, "--every-s", help="Evaluate alerts this often."),
    task: str | None = typer.Option(None, "--quality", help="classification or regression: "
                                    "live quality from labels sent to /feedback."),
    slo: float | None = typer.Option(None, help="Availability target (e.g. 0.999): adds "
                                     "the SRE workbook's burn-rate alerts."),
    webhook: str | None = typer.Option(None, help="POST alert events to this URL."),
    disabled: bool = typer.Option(False, "--disabled", help="Keep the spec, do not run."),
) -> None:
    """Watch an endpoint: drift per window against each version's reference profile,
    quality from delayed labels, alert rules. Options override the file's settings.

    Example: modelyard monitor set churn --window-s 3600 --quality classification --slo 0.999
    """
    spec: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text())
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
            raise ValidationFailed(f"cannot read {file}: {exc}", field="file") from exc
        if not isinstance(loaded, dict):
            raise ValidationFailed(f"{file} must hold a mapping of settings", field="file")
        spec.update(loaded)
    for key, value in (("window_s", window), ("evaluate_every_s", every), ("slo", slo),
                       ("webhook", webhook)):
        if value is not None:
            spec[key] = value
    if task is not None:
        spec["quality"] = {**(spec.get("quality") or {}), "task": task}
    result = operations().set_monitor(endpoint, spec, enabled=not disabled)
    emit(result, lambda r: console.print(
        f"monitor of [bold]{endpoint}[/bold]: windows of {r['spec']['window_s']:g} s, alerts "
        f"every {r['spec']['evaluate_every_s']:g} s" + ("" if r["enabled"] else " (disabled)")))


@app.command()
@handle_errors
def show(endpoint: str = typer.Argument(..., help="Endpoint name.")) -> None:
    """The monitor of an endpoint, with its alerts.

    Example: modelyard monitor show churn
    """
    ops = operations()
    data = {"monitor": ops.monitor(endpoint), "alerts": ops.alerts(endpoint=endpoint)}

    def render(d: dict[str, Any]) -> None:
        console.print_json(data=d["monitor"])
        console.print(table("alerts", ["rule", "severity", "status", "value", "since",
                                       "labels", "summary"],
                            [[a["rule"], a["severity"], a["status"], a["value"], a["since"],
                              ",".join(f"{k}={v}" for k, v in a["labels"].items()),
                              a["summary"]] for a in d["alerts"]],
                            empty="no alert has been evaluated yet"))

    emit(data, render)


@app.command()
@handle_errors
def run(endpoint: str = typer.Argument(..., help="Endpoint name.")) -> None:
    """Run the monitor now: closed windows, labels that arrived, alert rules (the server
    also runs it on its own every evaluate_every_s).

    Example: modelyard monitor run churn
    """
    with console.status(f"monitoring {endpoint}..."):
        result = operations().run_monitor(endpoint)
    emit(result, lambda r: console.print(
        f"{r['drift_windows']} drift and {r['quality_windows']} quality results; events: "
        + (", ".join(f"{e['rule']} {e['kind']}" for e in r["events"]) or "none")))


def _series(kind: str, endpoint: str, since: str | None, version: str | None,
            limit: int) -> None:
    ops = operations()
    data = ops.drift(endpoint, since=since, version=version, limit=limit) if kind == "drift" \
        else ops.quality(endpoint, since=since, version=version, limit=limit)

    def render(d: dict[str, Any]) -> None:
        rows = []
        for w in d["windows"]:
            style = STATUS_STYLE.get(w["status"], "")
            report = w.get("report") or {}
            if kind == "drift":
                detail = ", ".join(report.get("drifted_features", [])) or report.get(
                    "reason", "")
            else:
                metric = report.get("main_metric", "")
                interval = report.get("interval") or []
                detail = f"{metric} [{interval[0]:.3f}, {interval[1]:.3f}]" \
                    if len(interval) == 2 else metric
            rows.append([w["window_end"][:19], w["version"], Text(w["status"], style=style),
                         _bar(w["score"], style), w["n"], detail])
        title = f"{kind} of {endpoint}" + (" (score: share of features drifted)"
                                           if kind == "drift" else "")
        empty = f"no {kind} results yet: is a monitor set ('modelyard monitor set " \
            f"{endpoint}') and did a window close?"
        console.print(table(title, ["window end", "version", "status", "score", "n",
                                    "detail"], rows, empty=empty))

    emit(data, render)


@app.command()
@handle_errors
def drift(
    endpoint: str = typer.Argument(..., help="Endpoint name."),
    since: str | None = SINCE,
    version: str | None = typer.Option(None, help="Only this MODEL:VERSION."),
    limit: int = typer.Option(48, min=1, max=5000, help="Newest windows shown."),
) -> None:
    """Drift per window and version, against each version's reference profile.

    Example: modelyard monitor drift churn --since 1d
    """
    _series("drift", endpoint, since, version, limit)


@app.command()
@handle_errors
def quality(
    endpoint: str = typer.Argument(..., help="Endpoint name."),
    since: str | None = SINCE,
    version: str | None = typer.Option(None, help="Only this MODEL:VERSION."),
    limit: int = typer.Option(48, min=1, max=5000, help="Newest windows shown."),
) -> None:
    """Live quality per window and version, from labels sent to /feedback.

    Example: modelyard monitor quality churn --version churn:2
    """
    _series("quality", endpoint, since, version, limit)


@app.command()
@handle_errors
def alerts(
    endpoint: str | None = typer.Option(None, help="Only this endpoint."),
    status: str | None = typer.Option(None, help="inactive, pending or firing."),
) -> None:
    """Alerts of every endpoint you may see.

    Example: modelyard monitor alerts --status firing
    """
    found = operations().alerts(endpoint=endpoint, status=status)
    emit(found, lambda rows: console.print(table(
        "alerts", ["endpoint", "rule", "severity", "status", "value", "since", "summary"],
        [[a["endpoint"], a["rule"], a["severity"],
          Text(a["status"], style=STATUS_STYLE.get(a["status"], "")), a["value"], a["since"],
          a["summary"]] for a in rows], empty="no alerts")))

