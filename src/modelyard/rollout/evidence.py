"""Rollout evidence shared through the store, so several server processes count as one.

With ``--workers N`` or several servers on one store, each process answers its share of the
traffic, and only the leader analyses rollouts. Every process publishes, once a second, the
whole seconds it observed of the endpoints that have a rollout in progress (counts and the
bounded reservoir samples ``Observations`` keeps; about 2-6 KB a version a second); the
leader's ``Observations.stats`` reads the other processes' seconds back (``peers``). Rows
older than the observations' horizon are deleted by the leader.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, insert, select

from modelyard.domain.rollouts import ACTIVE
from modelyard.rollout.observations import Observations
from modelyard.store.db import Database, make_engine
from modelyard.store.tables import RolloutEvidenceRow, RolloutRow


class SharedEvidence:
    def __init__(self, db: Database, process: str, observations: Observations) -> None:
        self.db = db
        self.process = process
        self.observations = observations
        observations.peers = self.peers
        # The leader reads peers' seconds while its analysis holds the rollout's row: on
        # SQLite that transaction holds the write lock, so the reads go through connections
        # that begin deferred (WAL lets them read beside a writer).
        self._reader = make_engine(db.url, sqlite_begin="BEGIN DEFERRED") \
            if db.engine.dialect.name == "sqlite" else db.engine

    def publish(self, active: set[str] | None = None) -> int:
        """Write this process's new whole seconds of the endpoints under rollout (``active``:
        those endpoints, default: read from the store); how many seconds were written."""
        if active is None:
            with self.db.transaction() as session:
                active = set(session.scalars(select(RolloutRow.endpoint)
                                             .where(RolloutRow.status.in_(ACTIVE))))
        if not active:
            return 0
        rows = self.observations.export(lambda series: series.split("/", 1)[0] in active)
        if rows:
            with self.db.transaction() as session:
                session.execute(insert(RolloutEvidenceRow), [
                    {"process": self.process, "series": series, "shadow": shadow,
                     "second": second, "bucket": bucket}
                    for series, shadow, second, bucket in rows])
        return len(rows)

    def peers(self, series: str, shadow: bool, first: int, last: int) -> list[dict[str, Any]]:
        """The other processes' seconds of ``series`` from ``first`` to ``last`` (Unix)."""
        with self._reader.connect() as connection:
            return list(connection.execute(
                select(RolloutEvidenceRow.bucket).where(
                    RolloutEvidenceRow.series == series, RolloutEvidenceRow.shadow == shadow,
                    RolloutEvidenceRow.second.between(first, last),
                    RolloutEvidenceRow.process != self.process)).scalars())

    def close(self) -> None:
        if self._reader is not self.db.engine:
            self._reader.dispose()

    def expire(self, now: float | None = None) -> int:
        """Delete what is older than the observations' horizon; how many rows."""
        oldest = int((time.time() if now is None else now) - self.observations.horizon_s)
        with self.db.transaction() as session:
            result = session.execute(delete(RolloutEvidenceRow)
                                     .where(RolloutEvidenceRow.second < oldest))
            return int(getattr(result, "rowcount", 0) or 0)
