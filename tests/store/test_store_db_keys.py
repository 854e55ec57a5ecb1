"""The metadata database: SQLite durability settings, migrations matching the tables, and
API keys stored only as hashes."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from modelyard import Yard
from modelyard.settings import Settings
from modelyard.store import keys
from modelyard.store.db import Database, _alembic_config, normalize_url
from modelyard.store.tables import ApiKeyRow, Base
from modelyard.yard import SchemaOutdated, YardNotInitialised

# -- SQLite settings ----------------------------------------------------------------------


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'yard.db'}"
    Database(url).upgrade()
    fresh = Database(url)  # a new engine: the pragmas come from its connect hook
    try:
        with fresh.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        fresh.dispose()
    # WAL is a property of the database file: a plain connection sees it too.
    plain = sqlite3.connect(tmp_path / "yard.db")
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


def test_sqlite_settings_hold_on_every_pooled_connection(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'yard.db'}")
    try:
        # Raw DBAPI connections: every SQLAlchemy transaction here is BEGIN IMMEDIATE, so three
        # open transactions at once would wait on each other for the write lock.
        conns = [database.engine.raw_connection() for _ in range(3)]
        try:
            for conn in conns:
                cursor = conn.cursor()
                assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 2
                assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                cursor.close()
        finally:
            for conn in conns:
                conn.close()
    finally:
        database.dispose()


def test_normalize_url() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_transaction_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        keys.create(session, "alice", ["viewer"])
        session.flush()
        raise RuntimeError("abort")
    with db.transaction() as session:
        assert session.scalars(select(ApiKeyRow)).all() == []


# -- migrations ---------------------------------------------------------------------------


def _normalized_default(text_: str | None) -> str | None:
    """``'{}'::json`` (PostgreSQL) and ``'{}'`` (SQLite, the metadata) are the same default."""
    if text_ is None:
        return None
    value = text_.strip()
    while value.startswith("(") and value.endswith(")"):
        value = value[1:-1].strip()
    return re.sub(r"::[a-z ]+(\[\])?$", "", value)


def _compare_server_default(_context: object, _inspected_column: object,
                            _metadata_column: object, inspected_default: str | None,
                            _metadata_default: object,
                            rendered_metadata_default: str | None) -> bool:
    # Alembic's own comparison runs "SELECT '{}'::json = '{}'" on PostgreSQL, which fails:
    # json has no equality operator. Compare the rendered text instead.
    return _normalized_default(inspected_default) != _normalized_default(
        rendered_metadata_default
    )


def test_migrations_match_the_tables(db: Database) -> None:
    assert db.current_revision() == db.head_revision()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True,
                        "compare_server_default": _compare_server_default}
        )
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []


def test_migration_creates_every_table(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_upgrade_is_idempotent_and_downgrade_drops_everything(db: Database) -> None:
    db.upgrade()  # already at head: nothing happens
    assert db.current_revision() == db.head_revision()
    with db.engine.begin() as conn:
        config = _alembic_config(db.url)
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert db.current_revision() is None
    assert not set(Base.metadata.tables) & set(inspect(db.engine).get_table_names())
    db.upgrade()
    assert db.current_revision() == db.head_revision()


def test_yard_refuses_a_database_without_schema(settings: Settings) -> None:
    with pytest.raises(YardNotInitialised):
        Yard(settings=settings)


def test_yard_refuses_an_outdated_schema(yard: Yard) -> None:
    with yard.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaOutdated):
        Yard(settings=yard.settings)


# -- API keys -----------------------------------------------------------------------------


def test_created_key_verifies(db: Database) -> None:
    with db.transaction() as session:
        secret = keys.create(session, "alice", ["developer", "viewer"])
    assert secret.startswith(keys.KEY_PREFIX) and "." in secret
    with db.transaction() as session:
        record = keys.verify(session, secret)
    assert record is not None
    assert record.owner == "alice"
    assert record.roles == ("developer", "viewer")
    assert record.prefix == secret.split(".")[0]
    assert record.created_at.tzinfo is not None
    assert record.last_used_at is None


def test_only_the_hash_is_stored(db: Database) -> None:
    with db.transaction() as session:
        secret = keys.create(session, "alice", ["viewer"])
    with db.transaction() as session:
        (row,) = session.scalars(select(ApiKeyRow)).all()
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert row.prefix == secret.split(".")[0]
        stored = [str(getattr(row, c.key)) for c in ApiKeyRow.__table__.columns]
    assert not [v for v in stored if secret in v or secret.split(".", 1)[1] in v]
    with db.engine.connect() as conn:
        dump = repr(conn.execute(text("SELECT * FROM api_keys")).all())
    assert secret.split(".", 1)[1] not in dump


def test_wrong_revoked_and_garbage_keys_do_not_verify(db: Database) -> None:
    with db.transaction() as session:
        secret = keys.create(session, "alice", ["admin"])
        other = keys.create(session, "bob", ["viewer"])
    prefix, rest = secret.split(".", 1)
    candidates = [
        f"{prefix}.{rest[:-1]}{'A' if rest[-1] != 'A' else 'B'}",  # one character off
        f"{prefix}.",
        f"{prefix}.{other.split('.', 1)[1]}",  # bob's secret with alice's prefix
        f"{other.split('.', 1)[0]}.{rest}",  # alice's secret with bob's prefix
        prefix,
        rest,
        "",
        ".",
        "my_.x",
        "Bearer " + secret,
        secret + "x",
        secret.upper(),
        "xx_" + secret[3:],
        secret + "." + "a" * 300,
        "my_" + "0" * 12 + "." + rest,
    ]
    with db.transaction() as session:
        for candidate in candidates:
            assert keys.verify(session, candidate) is None, candidate
        assert keys.verify(session, secret) is not None
        assert keys.verify(session, other) is not None

    with db.transaction() as session:
        row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.owner == "alice")).one()
        row.revoked_at = datetime.now(UTC)
    with db.transaction() as session:
        assert keys.verify(session, secret) is None
        assert keys.verify(session, other) is not None


def test_touch_records_last_use(db: Database) -> None:
    with db.transaction() as session:
        secret = keys.create(session, "alice", ["viewer"])
    prefix = secret.split(".")[0]
    with db.transaction() as session:
        keys.touch(session, prefix)
        keys.touch(session, "my_unknown")  # no row: nothing happens
    with db.transaction() as session:
        record = keys.verify(session, secret)
    assert record is not None and record.last_used_at is not None
    assert record.last_used_at.tzinfo is not None


def test_keys_are_unique(db: Database) -> None:
    with db.transaction() as session:
        secrets_ = {keys.create(session, "alice", ["viewer"]) for _ in range(20)}
    assert len(secrets_) == 20
    assert len({s.split(".")[0] for s in secrets_}) == 20


def test_yard_init_creates_one_admin_key(yard: Yard, admin_key: str) -> None:
    assert yard.settings.admin_key_file.read_text().strip() == admin_key
    assert yard.settings.admin_key_file.stat().st_mode & 0o077 == 0
    with yard.db.transaction() as session:
        record = keys.verify(session, admin_key)
    assert record is not None and record.roles == ("admin",)
    again, key = Yard.init(settings=yard.settings)
    try:
        assert key is None  # keys exist: no new admin key
    finally:
        again.close()
