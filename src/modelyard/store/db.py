"""Engines, sessions and migrations for the metadata store.

SQLite runs in WAL mode with ``synchronous=FULL``: an acknowledged write survives the process
being killed (and the machine losing power). PostgreSQL is used as it comes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.domain.errors import ModelyardError


class StoreUnavailable(ModelyardError):
    code, status, title = "store_unavailable", 503, "Metadata store unavailable"


MIGRATIONS = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    """Use psycopg 3 for bare ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class EncodedJSON(str):
    """JSON text encoded already (the inference log writer encodes payloads once, in C):
    stored as is instead of being encoded again."""


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dump_json(value: Any) -> str:
    """Every JSON column's encoder: orjson (a C encoder; the inference log writes thousands
    of payloads a second), passing pre-encoded text through."""
    if isinstance(value, EncodedJSON):
        return value
    return orjson.dumps(value, option=_JSON_OPTIONS).decode()


def load_json(value: Any) -> Any:
    """Every JSON column's decoder. SQLite gives a JSON column numeric affinity, so a bare
    number stored there comes back as a number, not as text."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return orjson.loads(value)
    return value


def make_engine(url: str, *, sqlite_begin: str = "BEGIN IMMEDIATE") -> Engine:
    """``sqlite_begin``: how SQLite transactions start; a reader that must not hold the write
    lock (a backup's snapshot) passes ``"BEGIN DEFERRED"``."""
    url = normalize_url(url)
    codecs: dict[str, Any] = {"json_serializer": dump_json, "json_deserializer": load_json}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               **codecs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling is disabled so that BEGIN IMMEDIATE below
            # takes the write lock up front (no lock upgrade deadlocks between processes).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql(sqlite_begin)

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, **codecs)


class Database:
    """One engine and its session factory; ``transaction()`` is the unit of work."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def upgrade(self, revision: str = "head", connection: Connection | None = None) -> None:
        """Migrate in a transaction of its own, or inside the caller's ``connection`` (a
        restore creates the schema and loads the rows in one transaction)."""
        if connection is None:
            with self.engine.begin() as own:
                self.upgrade(revision, own)
            return
        if revision == "head" and \
                MigrationContext.configure(connection).get_current_revision() == _head():
            return  # at head already: Alembic would load every revision to do nothing
        config = _alembic_config(self.url)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    def sqlite_path(self) -> Path | None:
        """The database file, for a file-backed SQLite URL."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database)

    def current_revision(self) -> str | None:
        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except OperationalError as exc:
            raise StoreUnavailable(
                f"cannot reach the metadata store {self!r}: {exc.orig}"
            ) from exc

    def head_revision(self) -> str | None:
        return _head()

    def dispose(self) -> None:
        self.engine.dispose()


@functools.cache
def _head() -> str | None:
    """The newest revision among the migrations shipped with this code: read once per process
    (every Yard checks it on opening; Alembic loads each revision file to answer)."""
    return ScriptDirectory.from_config(_alembic_config("")).get_current_head()


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config
