"""Fresh databases for tests: a SQLite file, or a schema of its own on the PostgreSQL server
at 127.0.0.1:5432 (imported as a plain module: tests/ is on sys.path; test modules import it
rather than ``conftest``, whose name several folders share)."""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
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


def _pg_prepared() -> str:
    """A new schema holding the replayed migration (made on the pool's thread)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    script = _pg_sql().replace(b"BEGIN;\n", f'BEGIN;\nCREATE SCHEMA "{schema}";\n'
                               f'SET LOCAL search_path TO "{schema}";\n'.encode(), 1)
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(script)  # one round trip, one transaction
    return schema


_PG_POOL: Any = None  # a thread that keeps the next migrated schemas ready
_PG_NEXT: collections.deque[concurrent.futures.Future[str]] = collections.deque()


def _pg_take() -> str:
    """A migrated schema: made while the previous tests ran (PostgreSQL's DDL takes 0.1-0.2 s
    of its own time; the pool overlaps it with the tests), or now if none is ready."""
    global _PG_POOL
    if _PG_POOL is None:
        _pg_sql()  # recorded here, on the calling thread, before the pool replays it
        _PG_POOL = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pg-template")
        atexit.register(_pg_drop_unused)
    while len(_PG_NEXT) < 2:
        _PG_NEXT.append(_PG_POOL.submit(_pg_prepared))
    schema = _PG_NEXT.popleft().result(timeout=120)
    _PG_NEXT.append(_PG_POOL.submit(_pg_prepared))
    return schema


def _pg_drop_unused() -> None:
    import psycopg

    _PG_POOL.shutdown(wait=True)
    with contextlib.suppress(Exception), psycopg.connect(
            PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
        for future in _PG_NEXT:
            if future.exception() is None:
                conn.execute(f'DROP SCHEMA IF EXISTS "{future.result()}" CASCADE')


def migrate(url: str) -> None:
    """Bring the empty store at ``url`` (from ``database``, or a new SQLite file) to head, as
    ``Database.upgrade`` would, from the session's one real migration of that backend. Any
    other URL, or a store that is not new, is left to Alembic. On PostgreSQL, the test's
    empty schema is replaced by one that holds the replayed migration, under its name."""
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

    schema, ready = url[len(prefix):], _pg_take()
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
        # DROP without CASCADE: refused if the test's schema is not empty after all
        conn.execute(f'BEGIN; DROP SCHEMA "{schema}"; '
                     f'ALTER SCHEMA "{ready}" RENAME TO "{schema}"; COMMIT;')
