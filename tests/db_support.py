"""Fresh databases for tests: a SQLite file, or a schema of its own on the PostgreSQL server
at 127.0.0.1:5432 (imported as a plain module: tests/ is on sys.path; test modules import it
rather than ``conftest``, whose name several folders share)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_URL = os.environ.get("MODELYARD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except Exception as exc:  # any failure to connect means: no server here
        return str(exc)


_PG_PROBLEM = _pg_available()


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL schema (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'yard.db'}"
        return
    if _PG_PROBLEM is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {_PG_PROBLEM}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable: {_PG_PROBLEM}")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = PG_URL.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- a store at head, without running the migrations for every test -----------------------
# Migrating an empty store takes 0.2-0.3 s (Alembic loads and runs every revision); about a
# thousand tests start from one. The migrations run once per session and per backend, and
# each test gets a copy of their result: the SQLite file itself, or, on PostgreSQL, the very
# statements (with their parameters) that the migration ran, replayed in the test's schema.
# Alembic then finds the copy at head, as it finds a store it migrated itself.

_SQLITE_TEMPLATE: bytes | None = None
_PG_SCRIPT: list[tuple[str, Any, bool]] | None = None
_PG_SQL: bytes | None = None


def _sqlite_template() -> bytes:
    global _SQLITE_TEMPLATE
    if _SQLITE_TEMPLATE is None:
        import sqlite3

        from modelyard.store.db import Database

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "yard.db"
            db = Database(f"sqlite:///{path}")
            try:
                db.upgrade()
            finally:
                db.dispose()
            with contextlib.closing(sqlite3.connect(path)) as conn:  # the WAL into the file
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _SQLITE_TEMPLATE = path.read_bytes()
    return _SQLITE_TEMPLATE


def _pg_script() -> list[tuple[str, Any, bool]]:
    global _PG_SCRIPT
    if _PG_SCRIPT is None:
        from sqlalchemy import event

        from modelyard.store.db import Database

        script: list[tuple[str, Any, bool]] = []
        with database("postgresql", Path(tempfile.gettempdir())) as url:
            db = Database(url)

            def record(_conn: Any, _cursor: Any, statement: str, parameters: Any,
                       _context: Any, executemany: bool) -> None:
                script.append((statement, parameters, executemany))

            event.listen(db.engine, "before_cursor_execute", record)
            try:
                db.upgrade()
            finally:
                db.dispose()
            schema = url.rsplit("%3D", 1)[1]
            named = [s for s, p, _ in script if schema in s or schema in repr(p)]
            assert not named, f"the migration named its schema; cannot replay it: {named}"
        _PG_SCRIPT = script
    return _PG_SCRIPT


def _pg_sql() -> bytes:
    """The recorded migration as one script, its parameters bound in (as psycopg quotes them)."""
    global _PG_SQL
    if _PG_SQL is None:
        import psycopg

        script = _pg_script()
        with psycopg.connect(PG_URL.replace("+psycopg", "")) as conn:
            cursor = psycopg.ClientCursor(conn)
            parts = []
            for statement, parameters, many in script:
                for params in (parameters if many else [parameters]):
                    parts.append(cursor.mogrify(statement, params).strip().rstrip(";"))
        _PG_SQL = ("BEGIN;\n" + ";\n".join(parts) + ";\nCOMMIT;").encode()
    return _PG_SQL


def migrate(url: str) -> None:
    """Bring the empty store at ``url`` (from ``database``, or a new SQLite file) to head, as
    ``Database.upgrade`` would, from the session's one real migration of that backend. Any
    other URL, or a store that is not new, is left to Alembic."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as Yard.init's
        with os.fdopen(fd, "wb") as out:
            out.write(_sqlite_template())
        return
    prefix = f"{PG_URL}?options=-csearch_path%3D"
    if not url.startswith(prefix):
        return
    import psycopg

    schema = url[len(prefix):]
    with psycopg.connect(PG_URL.replace("+psycopg", ""), options=f"-csearch_path={schema}",
                         autocommit=True) as conn:  # one round trip, one transaction
        conn.execute(_pg_sql())
