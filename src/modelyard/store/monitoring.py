"""Monitoring persistence: reference profiles of versions, monitors of endpoints, their
results (drift and quality time series), alerts and alert events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from modelyard.domain.errors import MonitorNotFound
from modelyard.store.tables import (
    AlertEventRow,
    AlertRow,
    ModelRow,
    MonitorResultRow,
    MonitorRow,
    ReferenceProfileRow,
    VersionRow,
    utcnow,
)


# -- profiles ----------------------------------------------------------------------------
def _version_id(session: Session, ref: str) -> int | None:
    model, _, number = ref.rpartition(":")
    if not model or not number.isdigit():
        return None
    return session.scalars(
        select(VersionRow.id).join(ModelRow, ModelRow.id == VersionRow.model_id)
        .where(ModelRow.name == model, VersionRow.version == int(number))).first()


def profile_of(session: Session, ref: str) -> dict[str, Any] | None:
    """The reference profile of ``model:version``, or None."""
    version_id = _version_id(session, ref)
    if version_id is None:
        return None
    return session.scalars(select(ReferenceProfileRow.profile)
                           .where(ReferenceProfileRow.version_id == version_id)).first()


def put_profile(session: Session, version_id: int, profile: dict[str, Any], actor: str) -> None:
    row = session.scalars(select(ReferenceProfileRow)
                          .where(ReferenceProfileRow.version_id == version_id)).one_or_none()
    if row is None:
        session.add(ReferenceProfileRow(version_id=version_id, profile=profile,
                                        created_at=utcnow(), created_by=actor))
    else:
        row.profile, row.created_at, row.created_by = profile, utcnow(), actor


# -- monitors ----------------------------------------------------------------------------
def monitor_row(session: Session, endpoint: str, *, lock: bool = False) -> MonitorRow:
    query = select(MonitorRow).where(MonitorRow.endpoint == endpoint)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise MonitorNotFound(f"endpoint {endpoint!r} has no monitor; set one with "
                              f"'modelyard monitor set {endpoint}'", field="endpoint")
    return row


def describe(row: MonitorRow) -> dict[str, Any]:
    return {"endpoint": row.endpoint, "spec": row.spec, "enabled": row.enabled,
            "last_window_end": row.last_window_end.isoformat() if row.last_window_end
            else None,
            "last_evaluated_at": row.last_evaluated_at.isoformat() if row.last_evaluated_at
            else None,
            "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat()}


def put_monitor(session: Session, endpoint: str, spec: dict[str, Any], enabled: bool
                ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(before, after) of the monitor of ``endpoint``."""
    row = session.scalars(select(MonitorRow).where(MonitorRow.endpoint == endpoint)
                          ).one_or_none()
    before = describe(row) if row is not None else None
    now = utcnow()
    if row is None:
        row = MonitorRow(endpoint=endpoint, spec=spec, enabled=enabled, created_at=now,
                         updated_at=now)
        session.add(row)
    else:
        row.spec, row.enabled, row.updated_at = spec, enabled, now
    session.flush()
    return before, describe(row)


def delete_monitor(session: Session, endpoint: str) -> dict[str, Any]:
    row = monitor_row(session, endpoint)
    before = describe(row)
    session.delete(row)
    return before


def enabled_monitors(session: Session) -> list[MonitorRow]:
    return list(session.scalars(select(MonitorRow).where(MonitorRow.enabled.is_(True))
                                .order_by(MonitorRow.endpoint)))


# -- results -----------------------------------------------------------------------------
def put_result(session: Session, endpoint: str, version: str, kind: str, start: datetime,
               end: datetime, status: str, score: float | None, n: int,
               report: dict[str, Any]) -> None:
    """One window's result; computing a window again (labels arrived) replaces it."""
    row = session.scalars(select(MonitorResultRow).where(
        MonitorResultRow.endpoint == endpoint, MonitorResultRow.version == version,
        MonitorResultRow.kind == kind, MonitorResultRow.window_end == end)).one_or_none()
    if row is None:
        session.add(MonitorResultRow(endpoint=endpoint, version=version, kind=kind,
                                     window_start=start, window_end=end, status=status,
                                     score=score, n=n, report=report, computed_at=utcnow()))
    else:
        row.status, row.score, row.n, row.report = status, score, n, report
        row.computed_at = utcnow()


def results(session: Session, endpoint: str, kind: str, *, since: datetime | None = None,
            until: datetime | None = None, version: str | None = None,
            limit: int = 500, reports: bool = True) -> list[dict[str, Any]]:
    """A time series, oldest first (the newest ``limit`` windows)."""
    clauses = [MonitorResultRow.endpoint == endpoint, MonitorResultRow.kind == kind]
    if since is not None:
        clauses.append(MonitorResultRow.window_end > since)
    if until is not None:
        clauses.append(MonitorResultRow.window_end <= until)
    if version is not None:
        clauses.append(MonitorResultRow.version == version)
    rows = list(session.scalars(select(MonitorResultRow).where(and_(*clauses))
                                .order_by(MonitorResultRow.window_end.desc(),
                                          MonitorResultRow.version).limit(limit)))
    rows.reverse()
    return [{"version": r.version, "window_start": r.window_start.isoformat(),
             "window_end": r.window_end.isoformat(), "status": r.status, "score": r.score,
             "n": r.n, "computed_at": r.computed_at.isoformat(),
             **({"report": r.report} if reports else {})} for r in rows]


def latest_result(session: Session, endpoint: str, version: str, kind: str,
                  since: datetime) -> dict[str, Any] | None:
    row = session.scalars(select(MonitorResultRow).where(
        MonitorResultRow.endpoint == endpoint, MonitorResultRow.version == version,
        MonitorResultRow.kind == kind, MonitorResultRow.window_end > since)
        .order_by(MonitorResultRow.window_end.desc()).limit(1)).first()
    return row.report if row is not None else None


# -- alerts ------------------------------------------------------------------------------
def alert_state(session: Session, fingerprint: str) -> dict[str, Any] | None:
    return session.scalars(select(AlertRow.state)
                           .where(AlertRow.fingerprint == fingerprint)).first()


def put_alert(session: Session, fingerprint: str, endpoint: str, rule: str, severity: str,
              state: dict[str, Any], status: str, summary: str, value: float | None,
              since: datetime | None) -> AlertRow:
    row = session.scalars(select(AlertRow).where(AlertRow.fingerprint == fingerprint)
                          ).one_or_none()
    if row is None:
        row = AlertRow(fingerprint=fingerprint, endpoint=endpoint, rule=rule)
        session.add(row)
    row.severity, row.state, row.status, row.summary = severity, state, status, summary
    row.value, row.since, row.updated_at = value, since, utcnow()
    session.flush()
    return row


def alerts(session: Session, *, endpoint: str | None = None, status: str | None = None
           ) -> list[dict[str, Any]]:
    query = select(AlertRow).order_by(AlertRow.endpoint, AlertRow.rule)
    if endpoint is not None:
        query = query.where(AlertRow.endpoint == endpoint)
    if status is not None:
        query = query.where(AlertRow.status == status)
    return [{"id": r.id, "fingerprint": r.fingerprint, "endpoint": r.endpoint,
             "rule": r.rule, "severity": r.severity, "status": r.status,
             "value": r.value, "summary": r.summary,
             "labels": (r.state or {}).get("labels", {}),
             "since": r.since.isoformat() if r.since else None,
             "updated_at": r.updated_at.isoformat()} for r in session.scalars(query)]


def add_event(session: Session, alert_id: int, kind: str, payload: dict[str, Any]) -> int:
    row = AlertEventRow(alert_id=alert_id, at=utcnow(), kind=kind, payload=payload,
                        delivered={})
    session.add(row)
    session.flush()
    return row.id


def mark_delivered(session: Session, event_id: int, sink: str, outcome: str) -> None:
    row = session.get(AlertEventRow, event_id)
    if row is not None:
        row.delivered = {**(row.delivered or {}), sink: outcome}


def events(session: Session, *, after_id: int = 0, endpoint: str | None = None,
           limit: int = 100) -> list[dict[str, Any]]:
    """Alert events oldest first from ``after_id``: a stream to poll."""
    query = (select(AlertEventRow, AlertRow.endpoint, AlertRow.rule)
             .join(AlertRow, AlertRow.id == AlertEventRow.alert_id)
             .where(AlertEventRow.id > after_id).order_by(AlertEventRow.id).limit(limit))
    if endpoint is not None:
        query = query.where(AlertRow.endpoint == endpoint)
    return [{"id": e.id, "at": e.at.isoformat(), "kind": e.kind, "endpoint": ep,
             "rule": rule, "payload": e.payload, "delivered": e.delivered}
            for e, ep, rule in session.execute(query)]
