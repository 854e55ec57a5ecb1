"""``modelyard backup`` and ``modelyard restore``: a whole yard (metadata and artifacts) into
one archive and back. Operator tools that work on the stores directly, like ``pg_dump``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from modelyard.cli.common import STATE, console, emit, err_console, handle_errors, shown
from modelyard.store.backup.progress import Advance, Silent

DB_HELP = "Database URL (default: the yard's database_url setting)."
ARTIFACTS_HELP = ("Artifact store URL, a folder or s3://bucket/prefix (default: the yard's "
                  "artifacts_url; S3 options come from the artifacts_options setting).")


class _Bars:
    """Rich progress bars on stderr (stdout stays clean for --json)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def task(self, description: str, total: float) -> Advance:
        task_id = self.progress.add_task(description, total=total)
        return lambda amount: self.progress.advance(task_id, amount)


@contextmanager
def _bars() -> Iterator[_Bars | Silent]:
    if not err_console.is_terminal:  # logs and pipes get the summary only
        yield Silent()
        return
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:
        yield _Bars(progress)


def _audit_check(session: Any) -> dict[str, Any]:
    from modelyard.governance import audit

    return audit.verify(session).to_dict()


def _stores(db: str | None, artifacts: str | None) -> tuple[str, Any]:
    from modelyard.settings import Settings
    from modelyard.store.artifacts import ArtifactStore, storage_options

    settings = Settings.load(STATE.yard_path, database_url=db, artifacts_url=artifacts)
    store = ArtifactStore(settings.artifacts_url, settings.cache_dir,
                          **storage_options(settings.artifacts_options))
    return settings.database_url, store


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def _plain(value: Any) -> str:
    """A path, URL or message as text, never as Rich markup."""
    return shown(str(value))


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _audit_line(verdict: dict[str, Any] | None) -> str:
    if verdict is None:
        return "audit chain: not checked"
    if verdict["ok"]:
        return f"audit chain intact: {verdict['records']} records"
    return (f"[red]audit chain broken[/red] at record {verdict['first_bad_seq']}: "
            f"{_plain(verdict['problem'])}")


@handle_errors
def backup(
    out: Path = typer.Argument(..., help="Archive file to write (it must not exist), or a "
                               "folder: a timestamped modelyard-backup-*.tar is written in it."),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    artifacts: str | None = typer.Option(None, "--artifacts", help=ARTIFACTS_HELP),
) -> None:
    """Back up the whole yard, consistent while it serves: every table read in one snapshot,
    and the artifacts its versions use, in one tar (mode 0600).

    The archive holds API key hashes and the audit log: keep it as private as the database.

    Example: modelyard backup /backups/
    Example: modelyard backup yard.tar --db postgresql://modelyard@db/modelyard --artifacts s3://models/yard
    """
    from modelyard.store.backup import create_backup

    database_url, store = _stores(db, artifacts)
    with _bars() as bars:
        result = create_backup(database_url, store, out, audit_check=_audit_check,
                               progress=bars)

    def render(d: dict[str, Any]) -> None:
        _say(f"backup written: [bold]{_plain(d['path'])}[/bold] ({_mib(d['size'])}, mode 0600)")
        _say(f"  schema {d['revision']} ({d['dialect']}): {len(d['rows'])} tables, "
             f"{sum(d['rows'].values())} rows; {d['artifacts']} artifacts "
             f"({_mib(d['artifact_bytes'])})")
        _say(f"  {_audit_line(d['audit'])}")
        _say("  it holds API key hashes and the audit log: store it as privately "
             "as the database")

    emit(result.to_dict(), render)


@handle_errors
def restore(
    archive: Path = typer.Argument(..., help="A backup archive (modelyard backup)."),
    db: str | None = typer.Option(None, "--db", help=DB_HELP + " It must hold no Modelyard "
                                  "tables: restore never overwrites."),
    artifacts: str | None = typer.Option(None, "--artifacts", help=ARTIFACTS_HELP),
    check: bool = typer.Option(False, "--check", help="Only check the archive (its manifest "
                               "and every member's sha256); write nothing."),
) -> None:
    """Restore a backup into an empty database and an artifact store, then verify it.

    Checks the archive first; loads every table in one transaction (a failure leaves the
    database as it was); copies the artifacts, each verified by sha256; then checks the
    audit chain and re-hashes every artifact a version uses. API keys are the backup's:
    keep using the keys you had (admin.key files and settings are not in a backup).

    Example: modelyard --yard ./restored restore /backups/modelyard-backup-20261205T030000Z.tar
    Example: modelyard restore yard.tar --check
    """
    from modelyard.store.backup import read_manifest, restore_backup

    if check:
        with _bars() as bars:
            manifest = read_manifest(archive, progress=bars)
        summary = {"archive": str(archive), "ok": True, **manifest.summary()}

        def render_check(d: dict[str, Any]) -> None:
            _say(f"archive intact: {_plain(d['archive'])} (schema {d['revision']}, "
                 f"{d['dialect']}, taken {d['created_at']})")
            _say(f"  {len(d['rows'])} tables, {sum(d['rows'].values())} rows; "
                 f"{d['artifacts']} artifacts ({_mib(d['artifact_bytes'])}); "
                 f"source {_audit_line(d['audit'])}")

        emit(summary, render_check)
        return
    from modelyard.store.backup.snapshot import safe_url

    database_url, store = _stores(db, artifacts)
    with _bars() as bars:
        result = restore_backup(archive, database_url, store, audit_check=_audit_check,
                                progress=bars)
    data = {"archive": str(archive), "database": safe_url(database_url), "artifacts": store.url,
            **result.to_dict()}

    def render(d: dict[str, Any]) -> None:
        schema = d["revision"] + (f" -> {d['schema']}" if d["schema"] != d["revision"] else "")
        _say(f"restored {_plain(d['archive'])} into {_plain(d['database'])} and "
             f"{_plain(d['artifacts'])}")
        _say(f"  {len(d['rows'])} tables, {sum(d['rows'].values())} rows (counts "
             f"match the manifest); schema {schema}")
        _say(f"  artifacts: {d['artifacts_copied']} copied, {d['artifacts_present']} "
             f"already there; {d['artifacts_verified']} verified by sha256")
        _say(f"  {_audit_line(d['audit'])}")

    emit(data, render)
