"""``modelyard retrain``: a model's retraining policy, cycles started by hand, and the status
of cycles (trigger, state, champion vs challenger, gate verdict, rollout)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from modelyard.cli.common import console, emit, handle_errors, operations, shown
from modelyard.domain.errors import NotReady, ValidationFailed

app = typer.Typer(help="Retraining: policies, cycles (train a challenger, gate it against "
                  "the champion, roll it out) and their status.", no_args_is_help=True)
policies = typer.Typer(help="A model's retraining policy.", no_args_is_help=True)
app.add_typer(policies, name="policy")

_COLOURS = {"queued": "cyan", "training": "yellow", "evaluating": "yellow",
            "awaiting_approval": "magenta", "approved": "magenta", "rolling_out": "blue",
            "promoted": "green", "rejected": "red", "rolled_back": "red", "failed": "red"}
_FINAL = ("promoted", "rejected", "rolled_back", "failed")


def _read(file: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(file.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
        raise ValidationFailed(f"cannot read {file}: {exc}", field="file") from None
    if not isinstance(loaded, dict):
        raise ValidationFailed(f"{file} must hold a mapping (the policy)", field="file")
    return loaded


@policies.command("set")
@handle_errors
def set_policy(
    model: str = typer.Argument(..., help="The model the policy retrains."),
    file: Path = typer.Option(..., "--file", "-f", help="The policy, YAML or JSON."),
) -> None:
    """Create or replace a model's retraining policy.

    Example: modelyard retrain policy set churn -f retrain.yaml
    """
    saved = operations().set_retrain_policy(model, _read(file))
    emit(saved, lambda p: console.print(
        f"retraining policy of [bold]{shown(p['model'])}[/bold] saved: "
        f"{shown(p['policy']['entrypoint'])} -> endpoint {shown(p['policy']['endpoint'])}",
        highlight=False))


@policies.command("show")
@handle_errors
def show_policy(model: str = typer.Argument(..., help="The model.")) -> None:
    """Show a model's retraining policy.

    Example: modelyard retrain policy show churn
    """
    found = operations().retrain_policy(model)
    emit(found, lambda p: console.print(yaml.safe_dump(p["policy"], sort_keys=False),
                                        highlight=False, markup=False))


@app.command("run")
@handle_errors
def run(
    model: str = typer.Argument(..., help="The model to retrain."),
    reason: str = typer.Option("", help="Why (kept with the cycle and in the audit chain)."),
    wait: bool = typer.Option(False, help="Wait until the cycle has a verdict."),
    timeout_s: float = typer.Option(600, help="How long --wait waits."),
) -> None:
    """Start a retraining cycle now (a worker runs it: the server's, or 'modelyard worker').

    Example: modelyard retrain run churn --reason "new labels" --wait
    """
    ops = operations()
    cycle = ops.retrain(model, reason)
    if wait:
        deadline = time.monotonic() + timeout_s
        while (cycle := ops.retrain_cycle(cycle["id"]))["state"] in (
                "queued", "training", "evaluating"):
            if time.monotonic() > deadline:
                raise NotReady(f"cycle {cycle['id']} is still {cycle['state']}")
            time.sleep(0.2)
    emit(cycle, lambda c: console.print(cycles_table([c])))


@app.command("status")
@handle_errors
def status(
    model: str | None = typer.Argument(None, help="Only this model."),
    limit: int = typer.Option(20, min=1, max=1000, help="At most this many, newest first."),
    cycle: int | None = typer.Option(None, "--cycle", help="One cycle in full."),
) -> None:
    """Retraining cycles: trigger, state, champion vs challenger, gate verdict, rollout.

    Example: modelyard retrain status churn
    """
    ops = operations()
    if cycle is not None:
        emit(ops.retrain_cycle(cycle), _show)
        return
    emit(ops.retrain_cycles(model, limit=limit), lambda cs: console.print(cycles_table(cs)))


def _state(state: str) -> str:
    colour = _COLOURS.get(state)
    return f"[{colour}]{state}[/{colour}]" if colour else state


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def cycles_table(cycles: list[dict[str, Any]]) -> Table | str:
    if not cycles:
        return "no retraining cycles"
    out = Table(title="Retraining cycles", title_justify="left", header_style="bold")
    for column in ("id", "model", "trigger", "state", "champion", "challenger", "metric",
                   "gate", "rollout", "started"):
        out.add_column(column, overflow="fold")
    for c in cycles:
        metric = f"{c['metric']}: {_number(c['champion_value'])} -> " \
                 f"{_number(c['challenger_value'])}" if c.get("metric") else "-"
        verdict = {"pass": "[green]pass[/green]", "fail": "[red]fail[/red]"}.get(
            c.get("verdict") or "", "-")
        rollout = c.get("rollout")
        progress = f"{rollout['id']} {rollout['status']} (step {rollout['step']})" if rollout \
            else "-"
        out.add_row(str(c["id"]), shown(c["model"]), shown(c["trigger"]),
                    _state(c["state"]), shown(c.get("champion") or "-"),
                    shown(c.get("challenger") or "-"), shown(metric), verdict,
                    shown(progress), c["created_at"][:19].replace("T", " "))
    return out


def _show(c: dict[str, Any]) -> None:
    console.print(cycles_table([c]))
    result = (c.get("gate") or {}).get("result")
    if result:
        console.print(f"gate: {shown(result['reason'])}", highlight=False)
        for s in result.get("slices", []):
            console.print(f"  {shown(s['feature'])}={shown(s['group'])}: {s['status']} "
                          f"({_number(s['champion'])} -> {_number(s['challenger'])}, "
                          f"n={s['n']})", highlight=False)
    if c.get("error"):
        console.print(f"[red]{shown(c['error'])}[/red]", highlight=False)
    if c.get("data"):
        console.print(f"data: {shown(json.dumps(c['data'], default=str))}", highlight=False)
