"""``modelyard approvals``: four-eyes requests a project's policy held back.

A change the policy guards (moving or removing ``production``, changing an endpoint's
``auth``) answers with a pending request instead of happening; other people (approvers, not
the requester) approve it here, and the approval that reaches the required number executes
the change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.panel import Panel
from rich.table import Table

from modelyard.cli.common import (
    console,
    emit,
    err_console,
    handle_errors,
    operations,
    shown,
)
from modelyard.domain.approvals import STATUSES

app = typer.Typer(help="Review, approve and reject changes held back for four-eyes "
                  "approval.", no_args_is_help=True)


# -- shared with the commands whose answer may be a pending request ------------------------
def is_pending(result: Any) -> bool:
    """Whether a command's answer is a pending approval request rather than the change."""
    return (isinstance(result, dict) and result.get("status") == "pending"
            and "id" in result and "required" in result and "action" in result)


def _remaining(a: dict[str, Any]) -> int:
    return max(int(a.get("required") or 0) - int(a.get("approvals") or 0), 0)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def pending_line(a: dict[str, Any]) -> str:
    """``waiting for N approvals: modelyard approvals approve ID`` (plain text)."""
    return (f"waiting for {_plural(_remaining(a), 'approval')}: "
            f"modelyard approvals approve {a['id']}")


def print_pending(what: str, a: dict[str, Any]) -> None:
    """Say that ``what`` did not happen yet, and what unblocks it (one line per fact, so
    the command can be copied)."""
    console.print(f"[yellow]pending[/yellow]: {shown(what)} is held back by project "
                  f"{shown(str(a['project']))}'s policy (request {a['id']}, expires "
                  f"{_when(a.get('expires_at'))})", highlight=False, soft_wrap=True)
    console.print(shown(pending_line(a)), highlight=False, soft_wrap=True)


# -- rendering -------------------------------------------------------------------------
def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _when(text: Any) -> str:
    """``2026-11-27 10:56 UTC``, or ``-``."""
    at = _parse(text)
    if at is None:
        return "-"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _expires(a: dict[str, Any]) -> str:
    at = _parse(a.get("expires_at"))
    if at is None:
        return "-"
    if a.get("status") != "pending":
        return "-"
    left = (at - datetime.now(UTC)).total_seconds()
    if left <= 0:
        return "overdue"
    hours = left / 3600
    return f"in {hours:.0f}h" if hours >= 1 else f"in {max(left / 60, 1):.0f}m"


def _status(a: dict[str, Any]) -> str:
    status = str(a.get("status"))
    colour = {"pending": "yellow", "executed": "green", "rejected": "red",
              "failed": "red"}.get(status)
    return f"[{colour}]{status}[/{colour}]" if colour else status


def _change(a: dict[str, Any]) -> str:
    """What the request would do, in words."""
    payload = a.get("payload") or {}
    if a.get("action") == "alias:production":
        if payload.get("version") is None:
            return f"remove {payload.get('model')}@{payload.get('alias')}"
        return f"point {payload.get('model')}@{payload.get('alias')} at version " \
               f"{payload.get('version')}"
    if a.get("action") == "endpoint:auth":
        return f"set endpoint {payload.get('endpoint')} auth={payload.get('auth')}"
    return ", ".join(f"{k}={v}" for k, v in sorted(payload.items())) or "-"


def _approvals_table(approvals: list[dict[str, Any]], empty: str) -> Table | str:
    if not approvals:
        return empty
    out = Table(title="Approval requests", title_justify="left", header_style="bold")
    for column in ("id", "project", "action", "target", "requested by", "approvals",
                   "status", "expires"):
        out.add_column(column, overflow="fold")  # names are never cut short
    for a in approvals:
        out.add_row(str(a["id"]), shown(str(a["project"])), shown(str(a["action"])),
                    shown(str(a["target"])), shown(str(a["requested_by"])),
                    f"{a['approvals']}/{a['required']}", _status(a), _expires(a))
    return out


def _show(a: dict[str, Any]) -> None:
    lines = [
        f"project: {shown(str(a['project']))}   action: {a['action']}   "
        f"status: {_status(a)}",
        f"change: {shown(_change(a))}",
        f"target: {shown(str(a['target']))}",
        f"requested by: {shown(str(a['requested_by']))} at {_when(a.get('created_at'))}",
        f"approvals: {a['approvals']}/{a['required']}   expires: "
        f"{_when(a.get('expires_at'))}"
        + (f" ({_expires(a)})" if a.get("status") == "pending" else ""),
    ]
    if a.get("decided_at"):
        lines.append(f"decided: {_when(a['decided_at'])}")
    if a.get("reason"):
        lines.append(f"reason: {shown(str(a['reason']))}")
    for vote in a.get("votes") or []:
        comment = f": {shown(str(vote['comment']))}" if vote.get("comment") else ""
        lines.append(f"  {vote['decision']} by {shown(str(vote['subject']))} "
                     f"({shown(str(vote['actor']))}) at {_when(vote.get('at'))}{comment}")
    if a.get("status") == "pending":
        lines.append(shown(pending_line(a)))
    console.print(Panel("\n".join(lines), title=f"approval request {a['id']}", expand=False),
                  highlight=False)


def _decided(verb: str) -> Any:
    def render(a: dict[str, Any]) -> None:
        head = f"{verb} request {a['id']} ({shown(_change(a))})"
        status = a.get("status")
        if status == "executed":
            console.print(f"{head}: [green]executed[/green] "
                          f"({a['approvals']}/{a['required']} approvals)", highlight=False,
                          soft_wrap=True)
        elif status == "pending":
            console.print(f"{head}: {a['approvals']}/{a['required']} approvals so far",
                          highlight=False, soft_wrap=True)
            console.print(shown(pending_line(a)), highlight=False, soft_wrap=True)
        elif status == "failed":
            err_console.print(f"{head}: [red]the approved change failed[/red]: "
                              f"{shown(str(a.get('reason') or '-'))}", highlight=False,
                              soft_wrap=True)
        elif status == verb:
            console.print(head, highlight=False, soft_wrap=True)
        else:
            console.print(f"{head}: {_status(a)}", highlight=False, soft_wrap=True)

    return render


# -- commands --------------------------------------------------------------------------
@app.command("list")
@handle_errors
def list_approvals(
    status: str | None = typer.Option(None, help=f"Only these: {', '.join(STATUSES)}."),
    project: str | None = typer.Option(None, help="Only this project's requests."),
) -> None:
    """List approval requests, newest first (those you may read).

    Example: modelyard approvals list --status pending --project fraud
    """
    approvals = operations().list_approvals(status=status, project=project)
    emit(approvals, lambda rows: console.print(_approvals_table(
        rows, "no approval requests" + (f" with status {status}" if status else ""))))


@app.command()
@handle_errors
def show(approval_id: int = typer.Argument(..., metavar="ID", help="The request's id.")
         ) -> None:
    """Show one request: the change, who asked, who decided, when it expires.

    Example: modelyard approvals show 3
    """
    emit(operations().approval(approval_id), _show)


COMMENT = typer.Option("", "--comment", "-c", help="Why (kept in the audit log).")


def _finish(result: dict[str, Any], verb: str) -> None:
    emit(result, _decided(verb))
    if result.get("status") == "failed":
        raise typer.Exit(1)


@app.command()
@handle_errors
def approve(approval_id: int = typer.Argument(..., metavar="ID"),
            comment: str = COMMENT) -> None:
    """Approve a request (never your own); the last approval needed executes the change.

    Exits 1 when the approved change itself fails (the reason is recorded on the request).

    Example: modelyard approvals approve 3 --comment "reviewed the eval report"
    """
    _finish(operations().approve(approval_id, comment), "approved")


@app.command()
@handle_errors
def reject(approval_id: int = typer.Argument(..., metavar="ID"),
           comment: str = COMMENT) -> None:
    """Reject a request: it closes at once and the change never happens.

    Example: modelyard approvals reject 3 --comment "AUC dropped on the holdout"
    """
    _finish(operations().reject(approval_id, comment), "rejected")


@app.command()
@handle_errors
def cancel(approval_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Withdraw a pending request (its requester, or an admin).

    Example: modelyard approvals cancel 3
    """
    _finish(operations().cancel_approval(approval_id), "cancelled")
