"""One consistent read of a whole metadata store, taken while it keeps serving.

SQLite: one deferred read transaction on a connection of its own; in WAL mode every read in it
sees the database as of its first read, and writers go on (the snapshot holds no write lock).
PostgreSQL: one ``REPEATABLE READ READ ONLY`` transaction (what ``pg_dump`` does, short of
``SERIALIZABLE DEFERRABLE``, which could wait for a quiet moment that never comes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from modelyard.store.backup.errors import BackupFailed
from modelyard.store.backup.rows import RowCodec, UnsupportedColumn, column_kind
from modelyard.store.db import MIGRATIONS, make_engine, normalize_url
from modelyard.store.tables import Base

# The audit chain's verdict over a session (governance.audit.verify, as a dict): passed in,
# since the store does not import the governance layer above it.
AuditCheck = Callable[[Session], dict[str, Any]]
_BATCH = 2_000


def migrations() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def known_revision(revision: str) -> bool:
    try:
        return migrations().get_revision(revision) is not None
    except CommandError:  # alembic's ResolutionError is one
        return False


def check_audit(connection: Connection, check: AuditCheck) -> dict[str, Any]:
    """Run ``check`` on the connection's transaction, in a savepoint it cannot end."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        return check(session)


@dataclass(frozen=True)
class SourceTable:
    table: sa.Table
    kinds: tuple[str, ...]
    rows: int


class Snapshot:
    """The tables of this Modelyard's schema, in foreign-key order, as of one moment."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        revision = MigrationContext.configure(connection).get_current_revision()
        if revision is None:
            raise BackupFailed("the database holds no Modelyard schema (no Alembic "
                               "revision); is this a yard?")
        if not known_revision(revision):
            raise BackupFailed(f"the store's schema is at revision {revision}, which this "
                               "Modelyard does not know: back it up with the Modelyard "
                               "version that serves it")
        self.revision = revision
        reflected = sa.MetaData()
        reflected.reflect(connection)
        ours = set(Base.metadata.tables)  # other tables that share the schema are not ours
        self.tables: list[SourceTable] = []
        for table in reflected.sorted_tables:
            if table.name not in ours:
                continue
            try:
                kinds = tuple(column_kind(c.type) for c in table.columns)
            except UnsupportedColumn as exc:
                raise BackupFailed(f"table {table.name}: {exc}") from None
            count = connection.scalar(sa.select(sa.func.count()).select_from(table))
            self.tables.append(SourceTable(table, kinds, int(count or 0)))

    def rows(self, source: SourceTable) -> Iterator[list[Any]]:
        """The table's rows, encoded, in primary-key order (the same snapshot, the same
        bytes). JSON columns are read as their text."""
        table = source.table
        columns = [sa.cast(c, sa.Text).label(c.name) if kind == "json" else c
                   for c, kind in zip(table.columns, source.kinds, strict=True)]
        query = sa.select(*columns).order_by(*(table.primary_key.columns or table.columns))
        # yield_per on this statement only (a server-side cursor on PostgreSQL).
        codec = RowCodec(source.kinds)
        for row in self.connection.execute(query, execution_options={"yield_per": _BATCH}):
            yield codec.encode(row)

    def artifact_digests(self) -> list[str]:
        """Every artifact a version in the snapshot points at."""
        versions = next((s.table for s in self.tables if s.table.name == "model_versions"),
                        None)
        if versions is None:
            return []
        digest = versions.c.artifact_digest
        return list(self.connection.scalars(sa.select(digest).distinct().order_by(digest)))


@contextmanager
def open_snapshot(database_url: str) -> Iterator[Snapshot]:
    url = sa.make_url(normalize_url(database_url))
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise BackupFailed(f"no database at {url.database}: is this a yard? (a backup "
                           "never creates one)", field="db")
    engine = make_engine(database_url, sqlite_begin="BEGIN DEFERRED")
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ",
                                                          postgresql_readonly=True)
            with connection.begin():
                yield Snapshot(connection)
    except sa.exc.OperationalError as exc:
        raise BackupFailed(f"cannot read the metadata store "
                           f"{safe_url(database_url)}: {exc.orig}") from None
    finally:
        engine.dispose()


def safe_url(url: str) -> str:
    """A database URL fit to print or store: its password hidden."""
    return sa.make_url(normalize_url(url)).render_as_string(hide_password=True)
