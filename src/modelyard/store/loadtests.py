"""Load test results: one row per run of ``modelyard loadtest`` against an endpoint."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.store.tables import LoadTestRow

FIELDS = ("duration_s", "concurrency", "requests", "errors", "p50_ms", "p99_ms", "throughput",
          "target", "details")


def add(session: Session, endpoint: str, generation: int, result: dict[str, Any],
        actor: str) -> LoadTestRow:
    row = LoadTestRow(endpoint=endpoint, generation=generation, created_by=actor,
                      **{k: result[k] for k in FIELDS})
    session.add(row)
    session.flush()
    return row


def recent(session: Session, endpoint: str, limit: int = 20) -> list[LoadTestRow]:
    """Newest first."""
    return list(session.scalars(select(LoadTestRow).where(LoadTestRow.endpoint == endpoint)
                                .order_by(LoadTestRow.at.desc(), LoadTestRow.id.desc())
                                .limit(limit)))


def to_dict(row: LoadTestRow) -> dict[str, Any]:
    return {"id": row.id, "endpoint": row.endpoint, "generation": row.generation,
            "at": row.at.isoformat(), **{k: getattr(row, k) for k in FIELDS},
            "error_rate": row.errors / row.requests if row.requests else None,
            "created_by": row.created_by}
