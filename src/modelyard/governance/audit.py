"""The audit chain: an append-only log where each record carries the SHA-256 of the previous
one over a canonical encoding, written in the same transaction as the change it records.

Tampering shows on ``verify``: an edited record no longer matches its hash, a deleted or
reordered record breaks the sequence or the links, and a truncated tail no longer matches
the chain head (a one-row table updated with every append). Appends are serialised by locking
that head row (SQLite serialises every write anyway).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.governance.redaction import redact
from modelyard.store.db import dump_json, load_json
from modelyard.store.tables import AuditHeadRow, AuditRow, utcnow

GENESIS = "0" * 64
SECRET_FIELDS = ("key", "secret", "password", "token", "key_hash")

# The request being served, for the records it causes (set by the HTTP layer).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                        default=None)


def scrub(value: Any) -> Any:
    """Drop secrets and redact PII from a before/after document."""
    if isinstance(value, dict):
        return {k: ("[removed]" if k in SECRET_FIELDS else scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, datetime):  # the record is stored as JSON
        return value.isoformat()
    return redact(value)


def as_stored(value: Any) -> Any:
    """``value`` as the JSON column gives it back (NaN becomes null, numpy arrays lists...):
    the hash must be over what ``verify`` will read, or a valid record looks altered."""
    return None if value is None else load_json(dump_json(value))


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def digest(seq: int, at: datetime, actor: str, action: str, target: str, outcome: str,
           before: Any, after: Any, request: str | None, prev_hash: str) -> str:
    return hashlib.sha256(canonical({
        "seq": seq, "at": at.isoformat(), "actor": actor, "action": action, "target": target,
        "outcome": outcome, "before": before, "after": after, "request_id": request,
        "prev_hash": prev_hash,
    })).hexdigest()


def append(session: Session, actor: str, action: str, target: str, *, before: Any = None,
           after: Any = None, outcome: str = "ok") -> AuditRow:
    """Add a record inside the caller's transaction (it commits or rolls back with it)."""
    head = session.scalars(select(AuditHeadRow).where(AuditHeadRow.id == 1)
                           .with_for_update()).one_or_none()
    if head is None:
        head = AuditHeadRow(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    at = utcnow()
    seq = head.seq + 1
    before, after = as_stored(scrub(before)), as_stored(scrub(after))
    request = request_id.get()
    record = AuditRow(seq=seq, at=at, actor=actor, action=action, target=target,
                      outcome=outcome, before=before, after=after, request_id=request,
                      prev_hash=head.hash,
                      hash=digest(seq, at, actor, action, target, outcome, before, after,
                                  request, head.hash))
    session.add(record)
    head.seq, head.hash = seq, record.hash
    return record


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    first_bad: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "first_bad_seq": self.first_bad,
                "problem": self.problem}


def verify(session: Session) -> Verdict:
    """Walk the chain from the start; name the first broken or missing record."""
    expected_prev, count, last_seq = GENESIS, 0, 0
    for row in session.scalars(select(AuditRow).order_by(AuditRow.seq, AuditRow.id)):
        count += 1
        if row.seq != last_seq + 1:
            return Verdict(False, count, last_seq + 1,
                           f"record {last_seq + 1} is missing (next is {row.seq})")
        if row.prev_hash != expected_prev:
            return Verdict(False, count, row.seq,
                           f"record {row.seq} does not follow record {row.seq - 1}")
        recomputed = digest(row.seq, row.at, row.actor, row.action, row.target, row.outcome,
                            row.before, row.after, row.request_id, row.prev_hash)
        if recomputed != row.hash:
            return Verdict(False, count, row.seq, f"record {row.seq} was altered")
        expected_prev, last_seq = row.hash, row.seq
    head = session.get(AuditHeadRow, 1)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
    if (head_seq, head_hash) != (last_seq, expected_prev):
        return Verdict(False, count, last_seq + 1,
                       f"the chain ends at record {last_seq} but its head says {head_seq}: "
                       "records were removed from the end")
    return Verdict(True, count)


def records(session: Session, since: datetime | None = None, limit: int | None = None
            ) -> Iterator[dict[str, Any]]:
    query = select(AuditRow).order_by(AuditRow.seq)
    if since is not None:
        query = query.where(AuditRow.at >= since)
    if limit is not None:
        query = query.limit(limit)
    for row in session.scalars(query):
        yield {"seq": row.seq, "at": row.at.isoformat(), "actor": row.actor,
               "action": row.action, "target": row.target, "outcome": row.outcome,
               "before": row.before, "after": row.after, "request_id": row.request_id,
               "prev_hash": row.prev_hash, "hash": row.hash}


def guard(db: Any, principal: Any, action: str, target: str, project: str | None = None,
          *, anywhere: bool = False) -> Any:
    """``authorize``, with every refusal written to the chain (in its own transaction, since
    the refused change never gets one)."""
    from modelyard.domain.errors import ModelyardError
    from modelyard.governance.policy import authorize

    try:
        return authorize(principal, action, project, anywhere=anywhere)
    except ModelyardError as exc:
        actor = principal.name if principal is not None else "anonymous"
        with db.transaction() as session:
            append(session, actor, action, target, outcome="denied",
                   after={"reason": exc.detail, "project": project})
        raise
