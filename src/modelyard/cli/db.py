"""``modelyard db``: schema migrations."""

from __future__ import annotations

import typer

from modelyard.cli.common import STATE, console, handle_errors

app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


@app.command()
@handle_errors
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations to the yard's database.

    Example: modelyard db upgrade
    """
    from modelyard.settings import Settings
    from modelyard.store.db import Database

    settings = Settings.load(STATE.yard_path)
    db = Database(settings.database_url)
    try:
        before = db.current_revision()
        db.upgrade(revision)
        console.print(f"database {db!r}: {before or 'empty'} -> {db.current_revision()}")
    finally:
        db.dispose()


@app.command()
@handle_errors
def current() -> None:
    """Show the applied and the latest schema revision.

    Example: modelyard db current
    """
    from modelyard.settings import Settings
    from modelyard.store.db import Database

    db = Database(Settings.load(STATE.yard_path).database_url)
    try:
        console.print(f"current: {db.current_revision() or 'none'}  head: {db.head_revision()}")
    finally:
        db.dispose()
