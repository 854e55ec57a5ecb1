"""The backup's manifest: what the archive holds and the sha256 of every member.

An archive is one tar (docs/decisions/0022-backup-format.md): ``tables/NAME.jsonl.gz`` per
table, ``artifacts/SHA256.tar`` per artifact and ``manifest.json``, written last, so an
archive cut short has no manifest and is refused as incomplete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelyard.store.backup.errors import BackupInvalid
from modelyard.store.backup.rows import KINDS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_SHA256 = r"^[0-9a-f]{64}$"
_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


def table_member(name: str) -> str:
    return f"tables/{name}.jsonl.gz"


def artifact_member(digest: str) -> str:
    return f"artifacts/{digest}.tar"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Column(_Strict):
    name: str = Field(pattern=_NAME)
    kind: str

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown column kind {kind!r}")
        return kind


class Table(_Strict):
    name: str = Field(pattern=_NAME)
    rows: int = Field(ge=0)
    columns: tuple[Column, ...]

    @property
    def member(self) -> str:
        return table_member(self.name)


class Artifact(_Strict):
    sha256: str = Field(pattern=_SHA256)
    size: int = Field(ge=0)

    @property
    def member(self) -> str:
        return artifact_member(self.sha256)


class Member(_Strict):
    sha256: str = Field(pattern=_SHA256)
    size: int = Field(ge=0)


class AuditState(_Strict):
    """The source's audit chain as the snapshot saw it (``governance.audit.verify``)."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None


class Manifest(_Strict):
    format: Literal["modelyard-backup"] = "modelyard-backup"
    format_version: int = FORMAT_VERSION
    created_at: datetime
    modelyard_version: str
    revision: str  # the source's Alembic revision
    dialect: str  # the source's: sqlite or postgresql
    source_database: str  # its URL, password hidden
    source_artifacts: str
    audit: AuditState | None  # None: not checked (no checker given)
    tables: tuple[Table, ...]  # in foreign-key order: load in this order
    artifacts: tuple[Artifact, ...]
    members: dict[str, Member]  # every member but the manifest

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """The manifest of an archive, checked field by field (the offending field named)."""
        try:
            manifest = cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BackupInvalid(f"{MANIFEST} is not a Modelyard backup manifest: {where}: "
                                f"{first['msg']}", field=where or None) from None
        if manifest.format_version != FORMAT_VERSION:
            raise BackupInvalid(f"backup format {manifest.format_version} is not supported "
                                f"(this Modelyard reads format {FORMAT_VERSION})",
                                field="format_version")
        manifest.check_members()
        return manifest

    def check_members(self) -> None:
        """Every table and artifact has its member, and no member is unaccounted for."""
        expected = {t.member for t in self.tables} | {a.member for a in self.artifacts}
        if len({t.name for t in self.tables}) != len(self.tables):
            raise BackupInvalid("the manifest lists a table twice", field="tables")
        if expected != set(self.members):
            odd = sorted(expected.symmetric_difference(self.members))
            raise BackupInvalid(f"the manifest's members do not match its tables and "
                                f"artifacts: {odd[:5]}", field="members")
        for artifact in self.artifacts:
            if self.members[artifact.member].sha256 != artifact.sha256:
                raise BackupInvalid(f"member {artifact.member} is not filed under its own "
                                    "digest", field=f"members.{artifact.member}")

    def summary(self) -> dict[str, Any]:
        return {"created_at": self.created_at.isoformat(), "revision": self.revision,
                "dialect": self.dialect, "rows": {t.name: t.rows for t in self.tables},
                "artifacts": len(self.artifacts),
                "artifact_bytes": sum(a.size for a in self.artifacts),
                "audit": self.audit.model_dump() if self.audit else None}
