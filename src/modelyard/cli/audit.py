"""``modelyard audit``: verify and export the hash-chained audit log."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import typer

from modelyard.cli.common import (
    console,
    emit,
    err_console,
    handle_errors,
    operations,
    shown,
)

app = typer.Typer(help="The audit chain: every change, refusal and decision.",
                  no_args_is_help=True)


@app.command()
@handle_errors
def verify() -> None:
    """Walk the chain; exit 1 and name the first broken or missing record if any.

    Example: modelyard audit verify
    """
    verdict = operations().audit_verify()

    def render(v: dict[str, object]) -> None:
        if v["ok"]:
            console.print(f"audit chain intact: {v['records']} records")
        else:
            err_console.print(f"[red]audit chain broken[/red] at record {v['first_bad_seq']}: "
                              f"{v['problem']}", highlight=False)

    emit(verdict, render)
    if not verdict["ok"]:
        raise typer.Exit(1)


@app.command()
@handle_errors
def export(
    since: datetime | None = typer.Option(None, help="Only records at or after this time "
                                          "(ISO 8601, UTC)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default stdout)."),
) -> None:
    """Write the records as JSON lines (hashes included, so the export can be re-verified).

    Example: modelyard audit export --since 2026-11-01 -o audit.jsonl
    """
    rows = operations().audit_records(since=since, limit=None)
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    if output is None:
        sys.stdout.write(lines)
    else:
        tmp = output.with_suffix(output.suffix + ".part")
        tmp.write_text(lines)
        tmp.replace(output)
        console.print(f"wrote {len(rows)} records to {shown(output)}")
