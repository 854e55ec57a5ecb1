"""``modelyard rollout``: start, watch and steer progressive rollouts.

The analysis runs in the server (``modelyard serve``): these commands only start a rollout,
read its state and steer it, so they work the same in-process (a yard the server shares) and
through ``--url``. ``status --watch`` and ``start --watch`` end with an exit code a CI
pipeline can gate on: 0 when the new version is promoted (or a shadow rollout completed),
1 when it was rolled back or aborted, 2 when it was still undecided at ``--timeout-s``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from modelyard.cli.common import (
    STATE,
    Operations,
    as_text,
    console,
    emit,
    err_console,
    handle_errors,
    operations,
    table,
    visible,
)
from modelyard.domain.errors import NotFound, ValidationFailed

app = typer.Typer(help="Progressive rollouts: canary, blue_green and shadow, analysed and "
                  "promoted (or rolled back) by the server.", no_args_is_help=True)

SUCCEEDED = ("promoted", "completed")
FAILED = ("rolled_back", "aborted")
EXIT_UNDECIDED = 2  # --watch ran out of time: neither success (0) nor a rollback (1)
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl+C
POLL_S = 1.0
BAR_WIDTH = 30
_ID = re.compile(r"[0-9]{1,18}")  # str.isdigit() would accept '²'

STATUS_STYLE = {"running": "cyan", "paused": "yellow", "awaiting_approval": "yellow",
                "promoted": "green", "completed": "green", "rolled_back": "red",
                "aborted": "red"}
CHECK_STYLE = {"pass": "green", "fail": "red", "wait": "yellow"}


# -- building the spec -------------------------------------------------------------------
def parse_steps(text: str) -> list[dict[str, float]]:
    """``5:120,25:300`` -> ``[{weight: 5, duration_s: 120}, {weight: 25, ...}]``; the ranges
    are checked by ``RolloutSpec`` so the CLI and the API say the same thing."""
    steps = []
    for item in (part.strip() for part in text.split(",")):
        weight, colon, seconds = item.partition(":")
        try:
            if not colon:
                raise ValueError(item)
            steps.append({"weight": float(weight), "duration_s": float(seconds)})
        except ValueError:
            raise ValidationFailed(f"--steps {item!r} must look like WEIGHT:SECONDS "
                                   "(e.g. 5:120,25:300)", field="steps") from None
    return steps


def _load_file(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
        raise ValidationFailed(f"cannot read {path}: {exc}", field="file") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValidationFailed(f"{path} must hold a mapping of rollout fields (strategy, "
                               "target, steps, ...)", field="file")
    return doc


def build_spec(file: Path | None, *, to: str | None, strategy: str | None,
               steps: str | None, bake_s: float | None, duration_s: float | None,
               interval_s: float | None, sticky_header: str | None,
               analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The rollout spec: the file's fields, then every option given on top of them."""
    spec = _load_file(file) if file is not None else {}
    chosen = spec.get("strategy", "canary") if strategy is None else strategy
    # Each shape option belongs to one strategy; the domain would silently ignore the
    # others, and a CI job that thinks it asked for 5% steps must hear that it did not.
    for option, value, owner in (("--steps", steps, "canary"),
                                 ("--bake-s", bake_s, "blue_green"),
                                 ("--duration-s", duration_s, "shadow")):
        if value is not None and chosen != owner:
            raise ValidationFailed(f"{option} is for {owner} rollouts (this one is "
                                   f"{chosen})", field=option.lstrip("-").replace("-", "_"))
    if strategy is not None and strategy != spec.get("strategy", "canary"):
        # Another strategy than the file's: its shape (steps, bake or duration) no longer
        # applies, and stored steps would otherwise be taken as they are.
        for shape in ("steps", "bake_s", "duration_s"):
            spec.pop(shape, None)
    given = {"target": to, "strategy": strategy, "bake_s": bake_s, "duration_s": duration_s,
             "interval_s": interval_s, "sticky_header": sticky_header,
             "steps": parse_steps(steps) if steps is not None else None}
    spec.update({k: v for k, v in given.items() if v is not None})
    limits = {k: v for k, v in analysis.items() if v is not None}
    if limits:
        base = spec.get("analysis") or {}
        if not isinstance(base, dict):
            raise ValidationFailed("analysis holds thresholds (min_requests, ...)",
                                   field="analysis")
        spec["analysis"] = {**base, **limits}
    if "target" not in spec:
        raise ValidationFailed("name the new version: --to MODEL:VERSION (or target: in "
                               "the file)", field="to")
    return spec


# -- reading -------------------------------------------------------------------------------
def resolve(ops: Operations, endpoint_or_id: str) -> int:
    """A rollout id, or an endpoint name meaning its latest rollout (an all-digit argument
    is an id)."""
    if _ID.fullmatch(endpoint_or_id):
        return int(endpoint_or_id)
    latest = ops.rollouts_of(endpoint_or_id)  # newest first
    if not latest:
        # The domain's NotFound, not the controller's subclass: the CLI needs nothing of
        # the control plane to say this (and --help stays free of SQLAlchemy).
        raise NotFound(f"endpoint {endpoint_or_id!r} has no rollout (that you may see)",
                       field="endpoint")
    return int(latest[0]["id"])


def last_verdict(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The latest analysis: ``last`` in a listing, the end of ``history`` in a get."""
    if state.get("last"):
        return dict(state["last"])
    history = state.get("history") or []
    return dict(history[-1]) if history else None


def exit_code(state: Mapping[str, Any]) -> int:
    return 1 if state.get("status") in FAILED else 0


# -- rendering -----------------------------------------------------------------------------
def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock(text: Any) -> str:
    try:
        at = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text or "-")
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%H:%M:%S UTC")


def _status(status: str) -> Text:
    return Text(status, style=f"bold {STATUS_STYLE.get(status, '')}".strip())


def traffic_bar(state: Mapping[str, Any]) -> Text:
    """``████░░ churn:1 75% | churn:2 25%``: where live traffic goes at this step."""
    baseline, target = str(state["baseline"]), str(state["target"])
    if state["strategy"] == "shadow":
        sample = float((state.get("spec") or {}).get("shadow_sample", 1.0))
        shadowing = state.get("status") in ("running", "paused")
        return Text.assemble(("█" * BAR_WIDTH, "blue"),
                             f"  {baseline} 100%",
                             f" | {target} shadow ({sample * 100:g}% copied)" if shadowing
                             else "")
    weight = float(state.get("weight") or 0.0)
    new = round(BAR_WIDTH * weight / 100)
    return Text.assemble(("█" * (BAR_WIDTH - new), "blue"), ("█" * new, "green"),
                         f"  {baseline} {100 - weight:g}% | {target} {weight:g}%")


def last_analysis(last: Mapping[str, Any]) -> Group:
    """A line saying when, at which step and what was decided, then the checks (a table
    title would wrap at the table's narrow width)."""
    verdict = last.get("verdict") or {}
    title = Text.assemble(f"Last analysis at {_clock(last.get('at'))} (step "
                          f"{int(last.get('step', 0)) + 1}, {_num(last.get('weight'))}%): ",
                          (str(verdict.get("status", "-")),
                           CHECK_STYLE.get(str(verdict.get("status")), "")),
                          f" -> {last.get('action', '-')}")
    checks = Table(header_style="bold")
    for column in ("check", "value", "limit", "status"):
        checks.add_column(column)
    for check in verdict.get("checks") or []:
        status = str(check.get("status", "-"))
        checks.add_row(as_text(check.get("name", "-")), _num(check.get("value")),
                       _num(check.get("limit")),
                       Text(status, style=CHECK_STYLE.get(status, "")))
    return Group(title, checks)


def view(state: Mapping[str, Any]) -> RenderableType:
    """One rollout as people read it; built from plain data, so in-process and ``--url``
    show the same thing."""
    spec = state.get("spec") or {}
    to_rollback = (spec.get("analysis") or {}).get("failures_to_rollback")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("status", _status(str(state["status"])))
    facts.add_row("strategy", as_text(state["strategy"]))
    facts.add_row("versions", as_text(f"{state['baseline']} -> {state['target']}"))
    facts.add_row("step", f"{state['step']}/{state['steps']}")
    facts.add_row("traffic", traffic_bar(state))
    facts.add_row("failures", f"{state.get('failures', 0)} in a row" +
                  (f" ({to_rollback} roll it back)" if to_rollback else ""))
    if state.get("reason"):
        facts.add_row("reason", as_text(state["reason"]))
    if state.get("status") == "awaiting_approval" and state.get("approval_id"):
        facts.add_row("approval", f"modelyard approvals approve {state['approval_id']}")
    parts: list[RenderableType] = [
        Text.assemble(("Rollout ", "bold"), (str(state["id"]), "bold"),
                      f" on {visible(str(state['endpoint']))}"), facts]
    last = last_verdict(state)
    parts.append(last_analysis(last) if last else Text("no analysis yet (the server analyses "
                                                      "every interval_s)", style="dim"))
    return Group(*parts)


# -- watching ------------------------------------------------------------------------------
def progress_line(state: Mapping[str, Any]) -> Text:
    """``12:08:07 UTC rollout 1 running, step 1/2, churn:2 at 50%, 0 failure(s): ...``."""
    last = last_verdict(state) or {}
    return Text.assemble(f"{_clock(last.get('at') or state.get('updated_at'))} rollout "
                         f"{state['id']} ", _status(str(state["status"])),
                         f", step {state['step']}/{state['steps']}, {state['target']} at "
                         f"{float(state.get('weight') or 0):g}%, {state.get('failures', 0)} "
                         f"failure(s): {visible(str(state.get('reason') or '-'))}")


def watch(ops: Operations, rollout_id: int, timeout_s: float) -> dict[str, Any]:
    """Poll the rollout every second until it is final or ``timeout_s`` passes. A terminal
    gets a live view; a log (CI) gets a line per change, then the final view; --json only
    the final state. Exits 130 on Ctrl+C (the rollout goes on in the server)."""
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = ops.rollout(rollout_id)

    def poll() -> bool:
        """Wait a second (never past the deadline) and read again; False when done."""
        nonlocal state
        if state["final"] or time.monotonic() >= deadline:
            return False
        time.sleep(max(0.0, min(POLL_S, deadline - time.monotonic())))
        state = ops.rollout(rollout_id)
        return True

    try:
        if STATE.as_json:
            while poll():
                pass
        elif console.is_terminal:
            # Only the data changes, once a poll: refresh on update, not on a timer.
            with Live(view(state), console=console, auto_refresh=False) as live:
                while poll():
                    live.update(view(state), refresh=True)
        else:
            # A Live display in a log shows nothing until it stops: a pipeline that watches
            # for an hour must see each step, decision and failure as it happens.
            seen: tuple[Any, ...] | None = None
            while True:
                last = last_verdict(state) or {}
                key = (state["status"], state["step"], state["weight"], state["failures"],
                       last.get("action"))
                if key != seen:
                    console.print(progress_line(state), highlight=False, soft_wrap=True)
                    seen = key
                if not poll():
                    break
            console.print(view(state))
        return state
    except KeyboardInterrupt:
        err_console.print(f"stopped watching: rollout {rollout_id} goes on in the server "
                          f"(modelyard rollout status {rollout_id})", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def finish_watch(state: Mapping[str, Any], timeout_s: float) -> NoReturn:
    """The exit code of a watch: 0 promoted/completed, 1 rolled back/aborted, 2 undecided."""
    if STATE.as_json:
        emit(dict(state), lambda _: None)
    if not state["final"]:
        err_console.print(f"rollout {state['id']} is still {state['status']} after "
                          f"{timeout_s:g} s", highlight=False)
        raise typer.Exit(EXIT_UNDECIDED)
    raise typer.Exit(exit_code(state))


# -- commands ------------------------------------------------------------------------------
TIMEOUT = typer.Option(3600.0, "--timeout-s", min=0,
                       help="With --watch: give up after this long (exit code 2).")


@app.command()
@handle_errors
def start(
    endpoint: str = typer.Argument(..., help="The endpoint to roll out on (its current "
                                   "version is the baseline)."),
    to: str | None = typer.Option(None, "--to", help="The new version: MODEL:VERSION or "
                                  "MODEL@ALIAS (pinned when the rollout starts)."),
    strategy: str | None = typer.Option(None, "--strategy",
                                        help="canary (default), blue_green, shadow or ab_test "
                                        "(its weight, min_n, alpha, promote_winner: in -f)."),
    steps: str | None = typer.Option(None, "--steps", help="Canary steps WEIGHT:SECONDS, "
                                     "comma-separated, e.g. 5:120,25:300,50:300 (100% "
                                     "follows)."),
    bake_s: float | None = typer.Option(None, "--bake-s", help="blue_green: how long 100% "
                                        "must hold before promotion."),
    duration_s: float | None = typer.Option(None, "--duration-s",
                                            help="shadow: how long to compare."),
    interval_s: float | None = typer.Option(None, "--interval-s",
                                            help="Seconds between analyses (default 10)."),
    sticky_header: str | None = typer.Option(None, "--sticky-header", help="Keep each "
                                             "value of this header on one version."),
    max_error_rate: float | None = typer.Option(None, "--max-error-rate",
                                                help="Highest error rate, 0-1 (0.01)."),
    min_requests: int | None = typer.Option(None, "--min-requests", help="Requests the new "
                                            "version needs before a verdict (50)."),
    max_p99_ratio: float | None = typer.Option(None, "--max-p99-ratio", help="Highest p99 "
                                               "latency as a multiple of the baseline's "
                                               "(1.5)."),
    file: Path | None = typer.Option(None, "--file", "-f", dir_okay=False,
                                     help="A YAML rollout spec; options override it."),
    watch_: bool = typer.Option(False, "--watch", help="Follow it until it ends; exit 0 "
                                "promoted/completed, 1 rolled back/aborted."),
    timeout_s: float = TIMEOUT,
) -> None:
    """Start a progressive rollout of a new version on an endpoint.

    Example: modelyard rollout start churn --to churn:4 --steps 5:120,25:300,50:300 --watch
    """
    spec = build_spec(file, to=to, strategy=strategy, steps=steps, bake_s=bake_s,
                      duration_s=duration_s, interval_s=interval_s,
                      sticky_header=sticky_header,
                      analysis={"max_error_rate": max_error_rate,
                                "min_requests": min_requests,
                                "max_p99_ratio": max_p99_ratio})
    ops = operations()
    started = ops.start_rollout(endpoint, spec)
    if not watch_:
        emit(started, lambda r: console.print(
            Text.assemble("rollout ", (str(r["id"]), "bold"),
                          f" started on {r['endpoint']}: {r['baseline']} -> {r['target']} "
                          f"({r['strategy']}, {r['steps']} step(s))\nfollow it: modelyard "
                          f"rollout status {r['id']} --watch")))
        return
    finish_watch(watch(ops, int(started["id"]), timeout_s), timeout_s)


@app.command()
@handle_errors
def status(
    endpoint_or_id: str = typer.Argument(..., metavar="ENDPOINT_OR_ID",
                                         help="A rollout id, or an endpoint (its latest "
                                         "rollout)."),
    watch_: bool = typer.Option(False, "--watch", help="Refresh every second until it "
                                "ends; exit 0 promoted/completed, 1 rolled back/aborted."),
    timeout_s: float = TIMEOUT,
) -> None:
    """Show a rollout: status, step, traffic weights and the last analysis' checks.

    Exits 1 when it was rolled back or aborted, else 0 (also while it runs).

    Example: modelyard rollout status churn --watch
    """
    ops = operations()
    rollout_id = resolve(ops, endpoint_or_id)
    if watch_:
        finish_watch(watch(ops, rollout_id, timeout_s), timeout_s)
    state = ops.rollout(rollout_id)
    emit(state, lambda s: console.print(view(s)))
    raise typer.Exit(exit_code(state))


@app.command("list")
@handle_errors
def list_rollouts(
    endpoint: str | None = typer.Option(None, "--endpoint", "-e", help="Only this endpoint."),
) -> None:
    """List rollouts, newest first.

    Example: modelyard rollout list --endpoint churn
    """
    rollouts = operations().rollouts_of(endpoint)
    emit(rollouts, lambda rs: console.print(table(
        "Rollouts", ["id", "endpoint", "strategy", "versions", "status", "step", "weight",
                     "reason"],
        [[r["id"], r["endpoint"], r["strategy"], f"{r['baseline']} -> {r['target']}",
          r["status"], f"{r['step']}/{r['steps']}", f"{r['weight']:g}%", r["reason"]]
         for r in rs],
        empty="no rollouts yet: start one with 'modelyard rollout start ENDPOINT --to "
        "MODEL:VERSION'")))


def _steer(verb: str, target: str) -> None:
    ops = operations()
    state = getattr(ops, f"{verb}_rollout")(resolve(ops, target))
    emit(state, lambda s: console.print(Text.assemble(
        f"rollout {s['id']} on {s['endpoint']}: ", _status(str(s["status"])),
        f" ({visible(str(s['reason']))})" if s.get("reason") else "")))


ID = typer.Argument(..., help="The rollout id, or an endpoint (its latest rollout).")


@app.command()
@handle_errors
def pause(rollout_id: str = ID) -> None:
    """Hold a rollout at its step (traffic keeps its weights; no analysis decides).

    Example: modelyard rollout pause 7
    """
    _steer("pause", rollout_id)


@app.command()
@handle_errors
def resume(rollout_id: str = ID) -> None:
    """Go on with a paused rollout (its step starts over).

    Example: modelyard rollout resume 7
    """
    _steer("resume", rollout_id)


@app.command()
@handle_errors
def promote(rollout_id: str = ID) -> None:
    """Skip the remaining steps: the new version takes the endpoint now.

    When the endpoint follows production and the project holds promotions back for
    approval, the rollout waits for it (status awaiting_approval).

    Example: modelyard rollout promote 7
    """
    _steer("promote", rollout_id)


@app.command()
@handle_errors
def abort(rollout_id: str = ID) -> None:
    """Send all traffic back to the baseline at once.

    Example: modelyard rollout abort 7
    """
    _steer("abort", rollout_id)
