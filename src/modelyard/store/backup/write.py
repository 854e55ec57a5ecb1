"""``create_backup``: a whole yard (metadata and artifacts) into one tar archive.

The tables are read in one snapshot (``snapshot.py``); the artifacts they point at are copied
after it closes: artifacts are content-addressed and never change, so a later copy is the same
bytes. The archive is written to a temporary file (mode 0600: it holds API key hashes) beside
the target and renamed into place once complete, so a failed backup leaves nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from modelyard import __version__
from modelyard.domain.errors import ArtifactNotFound
from modelyard.store.archive import sha256_file
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.backup.errors import BackupFailed
from modelyard.store.backup.manifest import (
    MANIFEST,
    Artifact,
    AuditState,
    Column,
    Manifest,
    Member,
    Table,
    artifact_member,
)
from modelyard.store.backup.progress import Advance, Progress, Silent
from modelyard.store.backup.snapshot import (
    AuditCheck,
    Snapshot,
    SourceTable,
    check_audit,
    open_snapshot,
    safe_url,
)


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    manifest: Manifest

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, **self.manifest.summary()}


def archive_path(out: Path, now: datetime) -> Path:
    """``out`` itself, or a timestamped file in it when it is a folder (for schedules)."""
    if out.is_dir():
        out = out / f"modelyard-backup-{now:%Y%m%dT%H%M%SZ}.tar"
    if out.exists():
        raise BackupFailed(f"{out} exists; give a new file name or a folder",
                           field="out")
    if not out.parent.is_dir():
        raise BackupFailed(f"folder {out.parent} does not exist", field="out")
    return out


def create_backup(database_url: str, artifacts: ArtifactStore, out: Path, *,
                  audit_check: AuditCheck | None = None,
                  progress: Progress | None = None) -> BackupResult:
    progress = progress or Silent()
    created_at = datetime.now(UTC)
    target = archive_path(out, created_at)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".part")  # mode 0600
    spool = Path(tempfile.mkdtemp(dir=target.parent, prefix=".modelyard-backup-"))
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                writer = _ArchiveWriter(tar, created_at)
                with open_snapshot(database_url) as snapshot:
                    tables = _write_tables(snapshot, writer, spool, progress)
                    digests = snapshot.artifact_digests()
                    audit = (AuditState(**check_audit(snapshot.connection, audit_check))
                             if audit_check is not None else None)
                    revision, dialect = snapshot.revision, snapshot.dialect
                entries = _write_artifacts(artifacts, digests, writer, progress)
                manifest = Manifest(
                    created_at=created_at, modelyard_version=__version__, revision=revision,
                    dialect=dialect, source_database=safe_url(database_url),
                    source_artifacts=artifacts.url, audit=audit, tables=tuple(tables),
                    artifacts=tuple(entries), members=writer.members)
                writer.add_bytes(MANIFEST, manifest.to_json())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, target)
        _fsync_dir(target.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    return BackupResult(target, target.stat().st_size, manifest)


class _ArchiveWriter:
    """Adds members to the tar and keeps the size and sha256 of each for the manifest."""

    def __init__(self, tar: tarfile.TarFile, created_at: datetime) -> None:
        self.tar = tar
        self.mtime = int(created_at.timestamp())
        self.members: dict[str, Member] = {}

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o600, self.mtime
        return info

    def add_file(self, name: str, path: Path) -> None:
        size = path.stat().st_size
        digest = sha256_file(path)
        with open(path, "rb") as fh:
            self.tar.addfile(self._info(name, size), fh)
        self.members[name] = Member(sha256=digest, size=size)

    def add_stream(self, name: str, source: IO[bytes], size: int, advance: Advance) -> str:
        """Copy ``size`` bytes from ``source``; returns their sha256."""
        reader = _HashingReader(source, advance)
        try:
            self.tar.addfile(self._info(name, size), reader)
        except (OSError, tarfile.TarError) as exc:  # the source ended early
            raise BackupFailed(f"copying {name} failed: {exc}") from None
        digest = reader.hasher.hexdigest()
        self.members[name] = Member(sha256=digest, size=size)
        return digest

    def add_bytes(self, name: str, data: bytes) -> None:
        self.tar.addfile(self._info(name, len(data)), io.BytesIO(data))


class _HashingReader:
    def __init__(self, source: IO[bytes], advance: Advance) -> None:
        self.source, self.advance = source, advance
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.hasher.update(chunk)
        self.advance(len(chunk))
        return chunk


def _write_tables(snapshot: Snapshot, writer: _ArchiveWriter, spool: Path,
                  progress: Progress) -> list[Table]:
    advance = progress.task("tables (rows)", sum(s.rows for s in snapshot.tables))
    tables = []
    for source in snapshot.tables:
        entry = Table(name=source.table.name, rows=source.rows,
                      columns=tuple(Column(name=c.name, kind=k) for c, k
                                    in zip(source.table.columns, source.kinds, strict=True)))
        path = spool / f"{entry.name}.jsonl.gz"
        written = _dump_table(snapshot, source, path, advance)
        if written != source.rows:  # cannot happen in one snapshot; refuse rather than guess
            raise BackupFailed(f"table {entry.name} gave {written} rows, counted "
                               f"{source.rows}: the read was not consistent")
        writer.add_file(entry.member, path)
        path.unlink()
        tables.append(entry)
    return tables


def _dump_table(snapshot: Snapshot, source: SourceTable, path: Path, advance: Advance) -> int:
    written = 0
    # mtime=0: the same rows give the same bytes (and the same sha256).
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6,
                                                mtime=0) as out:
        for row in snapshot.rows(source):
            out.write(orjson.dumps(row) + b"\n")
            written += 1
            if written % 1000 == 0:
                advance(1000)
    advance(written % 1000)
    return written


def _write_artifacts(artifacts: ArtifactStore, digests: list[str], writer: _ArchiveWriter,
                     progress: Progress) -> list[Artifact]:
    digest = ""
    try:
        sizes = {}
        for digest in digests:
            sizes[digest] = artifacts.size(digest)
        advance = progress.task("artifacts (bytes)", sum(sizes.values()))
        entries = []
        for digest in digests:
            with artifacts.open(digest) as source:
                got = writer.add_stream(artifact_member(digest), source, sizes[digest],
                                        advance)
            if got != digest:
                raise BackupFailed(f"the artifact store's copy of {digest} fails its sha256 "
                                   f"check (it hashes to {got}): the store copy is damaged")
            entries.append(Artifact(sha256=digest, size=sizes[digest]))
    except ArtifactNotFound as exc:
        raise BackupFailed(f"{exc.detail}, but a version in the snapshot uses it (was "
                           "'modelyard gc' run with versions being deleted?); run the "
                           "backup again") from None
    except OSError as exc:  # the store unreachable
        raise BackupFailed(f"reading artifact {digest} from {artifacts!r} failed: "
                           f"{exc}") from None
    return entries


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
