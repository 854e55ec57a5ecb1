"""API keys, stored only as a SHA-256 hash (keys are 256-bit random, so a fast hash suffices:
there is nothing to brute-force). The prefix is kept in clear to find the row and to show."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.domain.errors import NotFound
from modelyard.store.tables import ApiKeyRow, KeyUsageRow, utcnow


class KeyNotFound(NotFound):
    code = "key_not_found"

KEY_PREFIX = "my_"


@dataclass(frozen=True)
class KeyRecord:
    prefix: str
    owner: str
    roles: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None = None
    rate_per_s: float | None = None
    daily_quota: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.rate_per_s,
            "daily_quota": self.daily_quota,
            "prefix": self.prefix,
            "owner": self.owner,
            "roles": list(self.roles),
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def to_record(row: ApiKeyRow) -> KeyRecord:
    return KeyRecord(row.prefix, row.owner, tuple(row.roles), row.created_at, row.last_used_at,
                     row.revoked_at, row.rate_per_s, row.daily_quota)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(session: Session, owner: str, roles: list[str], *,
           rate_per_s: float | None = None, daily_quota: int | None = None) -> str:
    """Create a key; the full secret is returned once and never stored."""
    prefix = KEY_PREFIX + secrets.token_hex(6)
    secret = f"{prefix}.{secrets.token_urlsafe(32)}"
    session.add(ApiKeyRow(prefix=prefix, key_hash=_hash(secret), owner=owner, roles=roles,
                          created_at=utcnow(), rate_per_s=rate_per_s, daily_quota=daily_quota))
    session.flush()
    return secret


def key_row(session: Session, prefix: str, *, lock: bool = False) -> ApiKeyRow:
    """The key's row; ``lock`` it (and read it again) before a change that depends on it."""
    query = select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    found = session.scalars(query).one_or_none()
    if found is None:
        raise KeyNotFound(f"no API key with prefix {prefix!r}", field="prefix")
    return found


def lock_active(session: Session) -> list[ApiKeyRow]:
    """Every active key, locked in id order (one order for everyone: no deadlock), as
    committed now: what a check across keys ("the last admin key") must count."""
    return list(session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))
                                .order_by(ApiKeyRow.id).with_for_update()
                                .execution_options(populate_existing=True)))


def all_keys(session: Session) -> list[KeyRecord]:
    return [to_record(r) for r in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))]


def revoke(session: Session, prefix: str) -> KeyRecord:
    found = key_row(session, prefix)
    if found.revoked_at is None:
        found.revoked_at = utcnow()
    return to_record(found)


def verify(session: Session, secret: str) -> KeyRecord | None:
    prefix, dot, _ = secret.partition(".")
    if not dot or not prefix.startswith(KEY_PREFIX) or len(secret) > 256:
        return None
    row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash(secret)):
        return None
    return to_record(row)


def touch(session: Session, prefix: str) -> None:
    row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).one_or_none()
    if row is not None:
        row.last_used_at = utcnow()


def add_usage(session: Session, counts: dict[tuple[str, str], int]) -> None:
    """Add data-plane calls per (prefix, day) in one statement per row (upsert)."""
    dialect = session.get_bind().dialect.name
    for (prefix, day), calls in counts.items():
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(KeyUsageRow).values(prefix=prefix, day=day, calls=calls)
            session.execute(stmt.on_conflict_do_update(
                index_elements=["prefix", "day"],
                set_={"calls": KeyUsageRow.calls + stmt.excluded.calls}))
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            lite = sqlite_insert(KeyUsageRow).values(prefix=prefix, day=day, calls=calls)
            session.execute(lite.on_conflict_do_update(
                index_elements=["prefix", "day"],
                set_={"calls": KeyUsageRow.calls + lite.excluded.calls}))


def usage_on(session: Session, day: str) -> dict[str, int]:
    rows = session.execute(select(KeyUsageRow.prefix, KeyUsageRow.calls)
                           .where(KeyUsageRow.day == day))
    return {prefix: int(calls) for prefix, calls in rows}
