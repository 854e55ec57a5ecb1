"""Monitoring as the control plane offers it: the inference log (records and per-version
summaries) and ground-truth labels, decided by the endpoint's project like everything else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from modelyard.domain.errors import EndpointNotFound, ValidationFailed
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.store import inference_log as repo
from modelyard.store.db import Database
from modelyard.store.tables import EndpointRow

MAX_PAGE = 1000
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | None, field: str, now: datetime | None = None
               ) -> datetime | None:
    """ISO 8601 (``2026-11-24T10:00:00Z``; UTC when no zone is given) or a time ago
    (``15m``, ``2h``, ``7d``)."""
    if text is None or text == "":
        return None
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        seconds = float(relative[1]) * _UNITS[relative[2]]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{field} must be an ISO 8601 time (2026-11-24T10:00:00Z) or "
                               "a time ago such as 15m, 2h or 7d", field=field) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class MonitoringService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _guard(self, principal: Principal | None, action: str, endpoint: str) -> Principal:
        """Decided in the endpoint's project; for an endpoint that does not exist, the
        caller must hold the right somewhere before learning that (no probing of names)."""
        with self.db.transaction() as session:
            project = session.scalars(select(EndpointRow.project)
                                      .where(EndpointRow.name == endpoint)).first()
        who = guard(self.db, principal, action, f"endpoint:{endpoint}", project,
                    anywhere=project is None)
        if project is None:
            raise EndpointNotFound(f"endpoint {endpoint!r} does not exist", field="endpoint")
        return who

    def records(self, principal: Principal | None, endpoint: str, *,
                since: str | None = None, until: str | None = None,
                version: str | None = None, status: str | None = None,
                before_id: int | None = None, limit: int = 100,
                payloads: bool = True) -> dict[str, Any]:
        """A page of logged requests, newest first; ``next`` continues it."""
        self._guard(principal, "inference:read", endpoint)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed(f"limit must be from 1 to {MAX_PAGE}", field="limit")
        if status not in (None, "ok", "error"):
            raise ValidationFailed("status must be ok or error", field="status")
        start, end = parse_time(since, "since"), parse_time(until, "until")
        with self.db.transaction() as session:
            items = repo.page(session, endpoint, since=start, until=end, version=version,
                              status=status, before_id=before_id, limit=limit,
                              payloads=payloads)
        following = items[-1]["id"] if len(items) == limit else None
        return {"endpoint": endpoint, "records": items, "next": following}

    def summary(self, principal: Principal | None, endpoint: str, *,
                since: str | None = None, until: str | None = None) -> dict[str, Any]:
        """Per version: how many records, errors, mean latency, first and last."""
        self._guard(principal, "inference:read", endpoint)
        start, end = parse_time(since, "since"), parse_time(until, "until")
        with self.db.transaction() as session:
            versions = repo.summary(session, endpoint, start, end)
        return {"endpoint": endpoint, "versions": versions}

