"""Feedback persistence: outcomes clients report per answering version."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.store.tables import FeedbackRow, utcnow


def add(session: Session, endpoint: str, items: Sequence[tuple[str, float, str | None]]
        ) -> int:
    """Store (version, value, request id) outcomes; the count stored."""
    now = utcnow()
    session.add_all([FeedbackRow(endpoint=endpoint, version=version, value=value,
                                 request_id=request_id, at=now)
                     for version, value, request_id in items])
    return len(items)


def values(session: Session, endpoint: str, version: str, since: datetime) -> list[float]:
    return list(session.scalars(
        select(FeedbackRow.value).where(FeedbackRow.endpoint == endpoint,
                                        FeedbackRow.version == version,
                                        FeedbackRow.at >= since)
        .order_by(FeedbackRow.id)))
