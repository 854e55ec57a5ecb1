"""``modelyard jobs``: list, show, follow and cancel background jobs, queue one, keep cron
schedules; ``modelyard worker``: run jobs in this process (besides or instead of the server's
own worker thread)."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from modelyard.cli.common import STATE, console, emit, handle_errors, operations, shown
from modelyard.domain.errors import InvalidJSON, ValidationFailed
from modelyard.domain.jobs import FINISHED

app = typer.Typer(help="Background jobs (training, evaluation, drift...): queued, leased "
                  "by workers, retried, restart-safe.", no_args_is_help=True)
schedules = typer.Typer(help="Cron schedules (UTC) that enqueue a job at every slot.",
                        no_args_is_help=True)
app.add_typer(schedules, name="schedule")

_COLOURS = {"queued": "cyan", "running": "yellow", "succeeded": "green", "failed": "red",
            "cancelled": "magenta"}


def _state(job: dict[str, Any]) -> str:
    state = str(job.get("state"))
    colour = _COLOURS.get(state)
    extra = " (cancelling)" if job.get("cancel_requested") and state == "running" else ""
    return f"[{colour}]{state}[/{colour}]{extra}" if colour else state


def _when(text: Any) -> str:
    if not isinstance(text, str):
        return "-"
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _payload(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidJSON(f"--payload is not valid JSON: {exc}", field="payload") from exc
    if not isinstance(value, dict):
        raise InvalidJSON("--payload must be a JSON object", field="payload")
    return value


def jobs_table(jobs: list[dict[str, Any]]) -> Table | str:
    if not jobs:
        return "no jobs"
    out = Table(title="Jobs", title_justify="left", header_style="bold")
    for column in ("id", "kind", "project", "state", "attempt", "created by", "created",
                   "finished"):
        out.add_column(column, overflow="fold")
    for j in jobs:
        out.add_row(str(j["id"]), shown(j["kind"]), shown(j["project"]), _state(j),
                    f"{j['attempt']}/{j['max_attempts']}", shown(str(j["created_by"])),
                    _when(j.get("created_at")), _when(j.get("finished_at")))
    return out


def _show(j: dict[str, Any]) -> None:
    console.print(f"job [bold]{j['id']}[/bold] {shown(j['kind'])} in project "
                  f"{shown(j['project'])}: {_state(j)} (attempt {j['attempt']} of "
                  f"{j['max_attempts']})", highlight=False)
    for label, key in (("created", "created_at"), ("started", "started_at"),
                       ("finished", "finished_at"), ("lease until", "lease_expires_at")):
        if j.get(key):
            console.print(f"  {label}: {_when(j[key])} UTC", highlight=False)
    if j.get("lease_owner"):
        console.print(f"  worker: {shown(j['lease_owner'])}", highlight=False)
    if j.get("steps"):
        console.print(f"  steps done: {shown(', '.join(j['steps']))}", highlight=False)
    if j.get("error"):
        console.print(f"  [red]error[/red]: {shown(j['error'])}", highlight=False)
    if j.get("result") is not None:
        console.print(f"  result: {shown(json.dumps(j['result']))}", highlight=False)


@app.command("list")
@handle_errors
def list_jobs(
    state: str | None = typer.Option(None, help="queued, running, succeeded, failed, "
                                     "cancelled."),
    kind: str | None = typer.Option(None, help="Only this kind."),
    project: str | None = typer.Option(None, help="Only this project."),
    limit: int = typer.Option(50, min=1, max=1000, help="At most this many (newest first)."),
    before: int | None = typer.Option(None, help="Only ids below this (the next page)."),
) -> None:
    """List jobs, newest first.

    Example: modelyard jobs list --state failed
    """
    found = operations().list_jobs(state=state, kind=kind, project=project, limit=limit,
                                   before=before)
    emit(found, lambda js: console.print(jobs_table(js)))


@app.command("show")
@handle_errors
def show(job_id: int = typer.Argument(..., help="The job's id.")) -> None:
    """A job's state, attempts, worker, steps done, result or error.

    Example: modelyard jobs show 12
    """
    emit(operations().job(job_id), _show)


def _print_lines(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        colour = {"error": "red", "warning": "yellow"}.get(line["level"], "dim")
        console.print(f"[{colour}]{_when(line['at'])} #{line['attempt']} "
                      f"{line['level']:7}[/{colour}] {shown(line['line'])}",
                      highlight=False, soft_wrap=True)


@app.command("logs")
@handle_errors
def logs(
    job_id: int = typer.Argument(..., help="The job's id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines "
                                "until the job ends."),
) -> None:
    """A job's log lines (every attempt), redacted when they were written.

    Example: modelyard jobs logs 12 --follow
    """
    ops = operations()
    after = 0
    while True:
        lines = ops.job_logs(job_id, after=after)
        if STATE.as_json and not follow:
            emit(lines, lambda _: None)
            return
        _print_lines(lines)
        after = lines[-1]["id"] if lines else after
        if not follow or (not lines and ops.job(job_id)["state"] in FINISHED):
            return
        if not lines:
            time.sleep(0.5)


@app.command("cancel")
@handle_errors
def cancel(job_id: int = typer.Argument(..., help="The job's id.")) -> None:
    """Cancel a job: a queued one at once, a running one when its handler next looks.

    Example: modelyard jobs cancel 12
    """
    emit(operations().cancel_job(job_id), _show)


@app.command("run")
@handle_errors
def run(
    kind: str = typer.Argument(..., help="A job kind the server knows (call: a trusted "
                               "project function)."),
    payload: str | None = typer.Option(None, "--payload", "-p", help='JSON object, e.g. '
                                       '\'{"function": "pkg.train:main", "args": {}, '
                                       '"trusted": true}\''),
    project: str | None = typer.Option(None, help="The job's project (default: default)."),
    max_attempts: int | None = typer.Option(None, min=1, max=100, help="Attempts before it "
                                            "fails for good (default 3)."),
    delay_s: float | None = typer.Option(None, min=0, help="Run no sooner than this."),
    dedupe_key: str | None = typer.Option(None, help="Queue at most one job with this key."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the outcome; exit 1 unless "
                              "it succeeded."),
    timeout_s: float = typer.Option(3600, help="With --wait: give up after this long."),
) -> None:
    """Queue a job (a worker runs it: the server's, or 'modelyard worker').

    Example: modelyard jobs run call -p '{"function": "churn.train:main", "trusted": true}'
    """
    ops = operations()
    job = ops.enqueue_job(kind, _payload(payload), project=project,
                          max_attempts=max_attempts, delay_s=delay_s, dedupe_key=dedupe_key)
    if wait:
        job = ops.wait_job(job["id"], timeout_s=timeout_s)
    emit(job, _show)
    if wait and job["state"] != "succeeded":
        raise typer.Exit(1)


@schedules.command("set")
@handle_errors
def schedule_set(
    name: str = typer.Argument(..., help="The schedule's name."),
    cron: str = typer.Option(..., help="Five fields, UTC: '0 3 * * *' is 03:00 daily."),
    kind: str = typer.Option(..., help="The kind of job to enqueue."),
    payload: str | None = typer.Option(None, "--payload", "-p", help="JSON object."),
    project: str | None = typer.Option(None, help="The jobs' project."),
    disabled: bool = typer.Option(False, "--disabled", help="Keep it, but enqueue nothing."),
    max_attempts: int = typer.Option(3, min=1, max=100, help="Attempts per job."),
) -> None:
    """Create or replace a schedule; its jobs act as you.

    Example: modelyard jobs schedule set nightly --cron '0 3 * * *' --kind call -p '{...}'
    """
    found = operations().set_schedule(name, cron, kind, _payload(payload), project=project,
                                      enabled=not disabled, max_attempts=max_attempts)
    emit(found, lambda s: console.print(
        f"schedule {shown(s['name'])}: {shown(s['cron'])} -> {shown(s['kind'])}, next at "
        f"{_when(s['next_run_at'])} UTC{'' if s['enabled'] else ' (disabled)'}",
        highlight=False))


@schedules.command("list")
@handle_errors
def schedule_list() -> None:
    """Every schedule you may see, with its next slot.

    Example: modelyard jobs schedule list
    """

    def render(found: list[dict[str, Any]]) -> None:
        if not found:
            console.print("no schedules")
            return
        out = Table(title="Schedules", title_justify="left", header_style="bold")
        for column in ("name", "cron", "kind", "project", "next (UTC)", "last job",
                       "enabled"):
            out.add_column(column, overflow="fold")
        for s in found:
            out.add_row(shown(s["name"]), shown(s["cron"]), shown(s["kind"]),
                        shown(s["project"]), _when(s["next_run_at"]),
                        str(s["last_job_id"] or "-"), "yes" if s["enabled"] else "no")
        console.print(out)

    emit(operations().list_schedules(), render)


@schedules.command("delete")
@handle_errors
def schedule_delete(name: str = typer.Argument(..., help="The schedule's name.")) -> None:
    """Delete a schedule (jobs it already queued stay).

    Example: modelyard jobs schedule delete nightly
    """
    operations().delete_schedule(name)
    emit({"deleted": name}, lambda _: console.print(f"deleted schedule {shown(name)}"))


@handle_errors
def worker(
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, max=64,
                                    help="Jobs run at once (threads)."),
    lease_s: float | None = typer.Option(None, min=1, help="Lease per job (default: the "
                                         "job_lease_s setting, 30)."),
    poll_s: float | None = typer.Option(None, min=0.05, help="Idle polling interval "
                                        "(default: the job_poll_s setting, 1)."),
    no_schedules: bool = typer.Option(False, "--no-schedules", help="Do not enqueue due "
                                      "cron slots from this process."),
    ray_address: str = typer.Option(
        "", "--ray-address", help="Run the jobs' offloaded work (ctx.offload, a retraining "
        "cycle's training) as Ray tasks on this cluster: 'auto', 'ray://host:port' or a GCS "
        "address. Needs the ray extra. Default: in this process."),
) -> None:
    """Run jobs in this process until SIGTERM or Ctrl+C (the server runs one worker thread
    itself unless jobs_in_process is off). A worker that dies loses its jobs to another
    once their leases expire; steps they finished are not run again.

    Example: modelyard worker --concurrency 4 --ray-address auto
    """
    from modelyard.cli.common import open_yard
    from modelyard.jobs.worker import Worker

    tasks = None
    if ray_address:
        try:
            from modelyard.backends.ray import RayTasks
        except ImportError as exc:
            raise ValidationFailed("--ray-address needs the ray extra: pip install "
                                   "'modelyard[ray]'", field="ray_address") from exc
        tasks = RayTasks(ray_address)
    yard = open_yard()
    counts = {"succeeded": 0, "failed": 0, "cancelled": 0, "lost": 0}

    def on_event(what: str, _job: Any) -> None:
        if what in counts:
            counts[what] += 1

    runner = Worker(yard, concurrency=concurrency, lease_s=lease_s, poll_s=poll_s,
                    schedules=not no_schedules, on_event=on_event,
                    offload=tasks.offload if tasks is not None else None)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def status() -> str:
        running = ", ".join(f"{j.id} ({shown(j.kind)})" for j in runner.running.values())
        done = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        return (f"worker [bold]{shown(runner.name)}[/bold] x{concurrency}: "
                f"{'running ' + running if running else 'idle'}"
                f"{' | ' + done if done else ''}")

    if tasks is not None:
        console.print(f"offloaded work runs as Ray tasks on {shown(ray_address)}",
                      highlight=False)
    console.print(f"worker {shown(runner.name)} on {shown(yard.settings.home)} (lease "
                  f"{runner.lease_s:g} s, kinds: {', '.join(sorted(runner.handlers.kinds()))})",
                  highlight=False)
    runner.start()
    try:
        if console.is_terminal:
            with Live(status(), console=console, refresh_per_second=2) as live:
                while not stop.wait(0.5):
                    live.update(status())
        else:
            stop.wait()
    finally:
        console.print("stopping: waiting for running jobs (up to 30 s)", highlight=False)
        clean = runner.stop(30.0)
        yard.close()
        if tasks is not None:
            tasks.close()
    console.print("worker stopped" if clean else "worker stopped; jobs still running will "
                  "be taken over when their leases expire", highlight=False)
