"""Inference log and label persistence: bulk inserts from the writer, windows for monitors,
pages for people, labels joined by request id, and retention."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, select, update
from sqlalchemy.orm import Session

from modelyard.store.db import dump_json
from modelyard.store.tables import InferenceRecordRow, LabelRow, utcnow

RECORD_FIELDS = ("at", "endpoint", "version", "request_id", "status", "latency_ms", "rows",
                 "inputs", "outputs", "prediction")


def insert_many(session: Session, records: Sequence[Mapping[str, Any]]) -> int:
    """One executemany for the whole batch, straight to the driver: the writer calls this
    every flush, and SQLAlchemy's per-row parameter processing cost more than the database
    (measured: 52 us a row through the ORM, 26 through Core, about 8 this way). The types
    stay SQLAlchemy's: the timestamp goes through the column type's own bind processor."""
    if not records:
        return 0
    connection = session.connection()
    dialect = connection.dialect
    table = InferenceRecordRow.__table__
    name = InferenceRecordRow.__tablename__
    at_type = table.c.at.type
    convert_at = at_type.dialect_impl(dialect).bind_processor(dialect)
    bind_at = at_type.process_bind_param  # type: ignore[attr-defined]
    json_columns = {"inputs", "outputs"}
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    values = ", ".join(f"CAST({marker} AS JSON)" if c in json_columns and
                       dialect.name == "postgresql" else marker for c in RECORD_FIELDS)
    sql = f"INSERT INTO {name} ({', '.join(RECORD_FIELDS)}) VALUES ({values})"
    rows = []
    for r in records:
        at = bind_at(r["at"], dialect)
        rows.append((convert_at(at) if convert_at else at, r["endpoint"], r["version"],
                     r["request_id"], r["status"], r["latency_ms"], r["rows"],
                     _json(r["inputs"]), _json(r["outputs"]), r["prediction"]))
    connection.exec_driver_sql(sql, rows)
    return len(records)


def _json(value: Any) -> str | None:
    return None if value is None else dump_json(value)


def _record(row: InferenceRecordRow, payloads: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id, "at": row.at.isoformat(), "endpoint": row.endpoint,
        "version": row.version, "request_id": row.request_id, "status": row.status,
        "latency_ms": row.latency_ms, "rows": row.rows, "prediction": row.prediction,
    }
    if payloads:
        out["inputs"], out["outputs"] = row.inputs, row.outputs
    return out


def _where(endpoint: str, since: datetime | None, until: datetime | None,
           version: str | None) -> list[Any]:
    clauses: list[Any] = [InferenceRecordRow.endpoint == endpoint]
    if since is not None:
        clauses.append(InferenceRecordRow.at >= since)
    if until is not None:
        clauses.append(InferenceRecordRow.at < until)
    if version is not None:
        clauses.append(InferenceRecordRow.version == version)
    return clauses


def page(session: Session, endpoint: str, *, since: datetime | None = None,
         until: datetime | None = None, version: str | None = None,
         status: str | None = None, before_id: int | None = None, limit: int = 100,
         payloads: bool = True) -> list[dict[str, Any]]:
    """Newest first; ``before_id`` continues a listing (keyset pagination: stable under
    inserts, cheap at any depth). ``status``: "ok" (below 500) or "error"."""
    clauses = _where(endpoint, since, until, version)
    if before_id is not None:
        clauses.append(InferenceRecordRow.id < before_id)
    if status == "ok":
        clauses.append(InferenceRecordRow.status < 500)
    elif status == "error":
        clauses.append(InferenceRecordRow.status >= 500)
    rows = session.scalars(select(InferenceRecordRow).where(and_(*clauses))
                           .order_by(InferenceRecordRow.id.desc()).limit(limit))
    return [_record(r, payloads) for r in rows]


def window(session: Session, endpoint: str, since: datetime, until: datetime, *,
           version: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
    """The answered (non-5xx) records of a time window, oldest first: what monitors read."""
    clauses = [*_where(endpoint, since, until, version), InferenceRecordRow.status < 500]
    rows = session.scalars(select(InferenceRecordRow).where(and_(*clauses))
                           .order_by(InferenceRecordRow.id).limit(limit))
    return [_record(r) for r in rows]


def summary(session: Session, endpoint: str, since: datetime | None = None,
            until: datetime | None = None) -> list[dict[str, Any]]:
    """Per version: records, errors, mean latency, first and last time (aggregated in the
    database, so a million records cost one scan of the index range)."""
    errors = func.sum(case((InferenceRecordRow.status >= 500, 1), else_=0))
    query = (select(InferenceRecordRow.version, func.count(), errors,
                    func.avg(InferenceRecordRow.latency_ms), func.min(InferenceRecordRow.at),
                    func.max(InferenceRecordRow.at))
             .where(and_(*_where(endpoint, since, until, None)))
             .group_by(InferenceRecordRow.version).order_by(InferenceRecordRow.version))
    return [{"version": version, "records": count, "errors": int(errs or 0),
             "mean_latency_ms": round(float(mean), 3) if mean is not None else None,
             "first": first.isoformat() if first else None,
             "last": last.isoformat() if last else None}
            for version, count, errs, mean, first, last in session.execute(query)]


def delete_before(session: Session, cutoff: datetime, limit: int = 10_000) -> int:
    """Delete up to ``limit`` records and labels older than ``cutoff``; the number deleted.
    The caller repeats until nothing is left, so no transaction holds the lock for long."""
    ids = select(InferenceRecordRow.id).where(InferenceRecordRow.at < cutoff) \
        .order_by(InferenceRecordRow.id).limit(limit)
    gone = session.execute(delete(InferenceRecordRow).where(InferenceRecordRow.id.in_(ids)))
    label_ids = select(LabelRow.id).where(LabelRow.at < cutoff).limit(limit)
    labels = session.execute(delete(LabelRow).where(LabelRow.id.in_(label_ids)))
    return sum(int(getattr(r, "rowcount", 0) or 0) for r in (gone, labels))


def version_of(session: Session, endpoint: str, request_id: str) -> str | None:
    """The version that answered a logged request (the newest, if an id was reused)."""
    return session.scalars(
        select(InferenceRecordRow.version)
        .where(InferenceRecordRow.endpoint == endpoint,
               InferenceRecordRow.request_id == request_id)
        .order_by(InferenceRecordRow.id.desc()).limit(1)).first()


def put_labels(session: Session, endpoint: str, items: Iterable[tuple[str, Any]]) -> int:
    """Store ground truth by request id; a label sent again for the same request replaces
    the earlier one (a corrected label is the common case, not a conflict)."""
    now, count = utcnow(), 0
    latest = dict(items)  # the last label for a request id in one batch wins too
    if not latest:
        return 0
    ids = list(latest)
    known: set[str] = set()
    for start in range(0, len(ids), 500):  # bounded IN lists (SQLite caps parameters)
        known.update(session.scalars(select(LabelRow.request_id).where(
            LabelRow.endpoint == endpoint, LabelRow.request_id.in_(ids[start:start + 500]))))
    for request_id, label in latest.items():
        if request_id in known:
            session.execute(update(LabelRow).where(
                LabelRow.endpoint == endpoint, LabelRow.request_id == request_id)
                .values(label=label, at=now))
        else:
            session.add(LabelRow(endpoint=endpoint, request_id=request_id, label=label, at=now))
        count += 1
    return count


def labelled(session: Session, endpoint: str, since: datetime, until: datetime, *,
             version: str | None = None, limit: int = 100_000) -> list[dict[str, Any]]:
    """Logged answers of a window that have a label: version, prediction, outputs, inputs
    and label, oldest first. Windows are by the time of the answer, not of the label."""
    clauses = [*_where(endpoint, since, until, version), InferenceRecordRow.status < 500]
    query = (select(InferenceRecordRow, LabelRow.label)
             .join(LabelRow, and_(LabelRow.endpoint == InferenceRecordRow.endpoint,
                                  LabelRow.request_id == InferenceRecordRow.request_id))
             .where(and_(*clauses)).order_by(InferenceRecordRow.id).limit(limit))
    return [{**_record(row), "label": label} for row, label in session.execute(query)]
