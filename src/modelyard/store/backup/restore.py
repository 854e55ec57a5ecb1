"""``restore_backup``: an archive into an empty metadata store and an artifact store.

Order, so that a failure leaves the target as it was:
1. the manifest and the sha256 of every member are checked before anything is written;
2. the target database must hold none of Modelyard's tables (a new database or schema);
3. the artifacts are copied (each verified by ``ArtifactStore.put_file``; one already there
   is hashed). Copies left by a later failure are unreferenced, content-addressed blobs:
   harmless, and ``modelyard gc`` lists them;
4. in ONE transaction: Alembic to the backup's revision, the tables in foreign-key order,
   PostgreSQL sequences moved past the restored ids, row counts checked, Alembic to this
   Modelyard's head, the audit chain verified; any failure rolls it all back (a SQLite file
   the restore created is removed);
5. after the commit, a fresh read checks the audit chain again and re-hashes every artifact
   a version uses, from the target store.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from modelyard.store.archive import CHUNK
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.backup.errors import BackupInvalid, RestoreFailed, RestoreTargetNotEmpty
from modelyard.store.backup.manifest import Artifact, Manifest
from modelyard.store.backup.progress import Progress, Silent
from modelyard.store.backup.read import Archive, open_archive
from modelyard.store.backup.snapshot import AuditCheck, check_audit, known_revision
from modelyard.store.db import Database
from modelyard.store.tables import Base

_BATCH = 1_000


@dataclass
class RestoreResult:
    revision: str  # the backup's
    schema: str | None = None  # the target's after the restore (this Modelyard's head)
    rows: dict[str, int] = field(default_factory=dict)
    artifacts_copied: int = 0
    artifacts_present: int = 0
    artifacts_verified: int = 0
    audit: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "schema": self.schema, "rows": self.rows,
                "artifacts_copied": self.artifacts_copied,
                "artifacts_present": self.artifacts_present,
                "artifacts_verified": self.artifacts_verified, "audit": self.audit}


def read_manifest(archive: Path, *, verify: bool = True,
                  progress: Progress | None = None) -> Manifest:
    """An archive's manifest (with ``verify``: after checking every member against it)."""
    with open_archive(archive) as opened:
        if verify:
            opened.verify(progress or Silent())
        return opened.manifest


def restore_backup(archive: Path, database_url: str, artifacts: ArtifactStore, *,
                   audit_check: AuditCheck | None = None,
                   progress: Progress | None = None) -> RestoreResult:
    progress = progress or Silent()
    with open_archive(archive) as opened:
        opened.verify(progress)
        manifest = opened.manifest
        if not known_revision(manifest.revision):
            raise BackupInvalid(f"the backup's schema revision {manifest.revision} is unknown "
                                "to this Modelyard (a backup from a newer version?): restore "
                                "it with that version", field="revision")
        db = Database(database_url)
        sqlite_file = db.sqlite_path()
        fresh_file = sqlite_file is not None and not sqlite_file.exists()
        if sqlite_file is not None:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with _database_errors(db):
                with db.engine.connect() as connection:
                    _check_empty(connection, db)
                result = RestoreResult(manifest.revision)
                _copy_artifacts(opened, artifacts, result, progress)
                with db.engine.begin() as connection:
                    _check_empty(connection, db)  # again, now holding the transaction
                    _load(connection, db, opened, result, progress)
                    result.audit = _audit(connection, manifest, audit_check)
                    result.schema = MigrationContext.configure(connection).get_current_revision()
        except BaseException:
            db.dispose()
            if fresh_file and sqlite_file is not None:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
            raise
        try:
            _verify_restored(db, artifacts, manifest, audit_check, result, progress)
        finally:
            db.dispose()
    return result


@contextmanager
def _database_errors(db: Database) -> Iterator[None]:
    """The target's own failures (unreachable, no permission, a disk full) as one error; the
    driver's message only, never the statement's parameters (rows, key hashes)."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise RestoreFailed(f"the target database {db!r} failed: {exc.orig}; nothing was "
                            "committed", field="db") from None


def _check_empty(connection: Connection, db: Database) -> None:
    """The target holds none of Modelyard's tables (other tables sharing it are left be)."""
    ours = set(Base.metadata.tables) | {"alembic_version"}
    present = sorted(ours.intersection(sa.inspect(connection).get_table_names()))
    if present:
        raise RestoreTargetNotEmpty(
            f"the target database {db!r} already holds a Modelyard schema ({len(present)} "
            f"tables: {', '.join(present[:4])}...); restore only into an empty database: "
            "create a new one (or drop this one's tables) and run restore again; do not "
            "run 'modelyard init' on it first", field="db")


def _copy_artifacts(archive: Archive, store: ArtifactStore, result: RestoreResult,
                    progress: Progress) -> None:
    advance = progress.task("artifacts (bytes)", sum(a.size for a in archive.manifest.artifacts))
    scratch = Path(tempfile.mkdtemp(prefix="modelyard-restore-"))
    try:
        for artifact in archive.manifest.artifacts:
            try:
                copied = _copy_artifact(archive, store, artifact, scratch)
            except OSError as exc:  # the store unreachable, a disk full
                raise RestoreFailed(f"copying artifact {artifact.sha256} into {store!r} "
                                    f"failed: {exc}", field="artifacts") from None
            if copied:
                result.artifacts_copied += 1
            else:
                result.artifacts_present += 1
            advance(artifact.size)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _copy_artifact(archive: Archive, store: ArtifactStore, artifact: Artifact,
                   scratch: Path) -> bool:
    """Store one artifact (False: it was there already, and intact)."""
    if store.exists(artifact.sha256):
        if _store_digest(store, artifact.sha256) != artifact.sha256:
            raise RestoreFailed(f"the target artifact store holds a damaged copy of "
                                f"{artifact.sha256}; delete it and restore again",
                                field="artifacts")
        return False
    staged = scratch / f"{artifact.sha256}.tar"
    with archive.open(artifact.member) as src, open(staged, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    store.put_file(staged, artifact.sha256)  # re-hashes before it stores
    staged.unlink()
    return True


def _load(connection: Connection, db: Database, archive: Archive, result: RestoreResult,
          progress: Progress) -> None:
    manifest = archive.manifest
    db.upgrade(manifest.revision, connection)
    target = sa.MetaData()
    target.reflect(connection)
    for table in reversed(target.sorted_tables):  # rows the migrations seed are in the backup
        if table.name != "alembic_version":
            connection.execute(table.delete())
    advance = progress.task("tables (rows)", sum(t.rows for t in manifest.tables))
    for entry in manifest.tables:
        table = target.tables.get(entry.name)
        names = [c.name for c in entry.columns]
        if table is None or sorted(names) != sorted(table.columns.keys()):
            raise RestoreFailed(f"table {entry.name} in the backup does not match the schema "
                                f"at revision {manifest.revision}", field=entry.member)
        for column in table.columns:
            if isinstance(column.type, sa.JSON):  # None in a row means SQL NULL, not 'null'
                column.type = type(column.type)(none_as_null=True)
        insert, batch = table.insert(), []
        try:
            for row in archive.rows(entry):
                batch.append(row)
                if len(batch) == _BATCH:
                    connection.execute(insert, batch)
                    advance(len(batch))
                    batch = []
            if batch:
                connection.execute(insert, batch)
                advance(len(batch))
        except sa.exc.DBAPIError as exc:  # the driver's message, never the rows it held
            raise RestoreFailed(f"loading table {entry.name} failed: {exc.orig}",
                                field=entry.member) from None
        count = connection.scalar(sa.select(sa.func.count()).select_from(table))
        if count != entry.rows:
            raise RestoreFailed(f"table {entry.name} has {count} rows after loading, the "
                                f"manifest says {entry.rows}", field=entry.member)
        result.rows[entry.name] = entry.rows
    if connection.dialect.name == "postgresql":
        _advance_sequences(connection, [target.tables[t.name] for t in manifest.tables])
    db.upgrade("head", connection)  # a backup from an older revision comes up to date


def _advance_sequences(connection: Connection, tables: list[sa.Table]) -> None:
    """Rows came with their ids; each serial column's sequence must continue after them."""
    quote = connection.dialect.identifier_preparer.quote
    for table in tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, sa.Integer):
                continue
            sequence = connection.scalar(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                                         {"t": quote(table.name), "c": column.name})
            if sequence is None:
                continue
            connection.execute(sa.text(
                f"SELECT setval(CAST(:s AS regclass), COALESCE((SELECT MAX({quote(column.name)}) "
                f"FROM {quote(table.name)}), 0) + 1, false)"), {"s": sequence})


def _audit(connection: Connection, manifest: Manifest, check: AuditCheck | None
           ) -> dict[str, Any] | None:
    """The restored chain must verify as the source's did (the same break, if it had one)."""
    if check is None:
        return None
    verdict = check_audit(connection, check)
    expected = manifest.audit.model_dump() if manifest.audit else {"ok": True}
    if verdict["ok"] != expected["ok"] or (not verdict["ok"] and verdict != expected):
        raise RestoreFailed(f"the restored audit chain does not verify as the source's did: "
                            f"{verdict.get('problem') or 'intact here, broken there'}",
                            field="audit_log")
    return verdict


def _verify_restored(db: Database, store: ArtifactStore, manifest: Manifest,
                     check: AuditCheck | None, result: RestoreResult,
                     progress: Progress) -> None:
    """After the commit, from scratch: the chain, and every used artifact's sha256."""
    with db.engine.connect() as connection:
        if check is not None:
            result.audit = _audit(connection, manifest, check)
        versions = sa.table("model_versions", sa.column("artifact_digest"))
        digests = sorted(connection.scalars(
            sa.select(versions.c.artifact_digest).distinct()))
    sizes = {a.sha256: a.size for a in manifest.artifacts}
    advance = progress.task("verifying artifacts (bytes)", sum(sizes.get(d, 0) for d in digests))
    for digest in digests:
        got = _store_digest(store, digest, advance)
        if got != digest:
            raise RestoreFailed(f"restored, but artifact {digest} in the target store hashes "
                                f"to {got}", field="artifacts")
        result.artifacts_verified += 1


def _store_digest(store: ArtifactStore, digest: str, advance: Any = None) -> str:
    hasher = hashlib.sha256()
    for chunk in store.stream(digest):
        hasher.update(chunk)
        if advance is not None:
            advance(len(chunk))
    return hasher.hexdigest()
