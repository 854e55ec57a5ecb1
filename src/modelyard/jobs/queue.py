"""The job queue, kept in the metadata store.

A worker *claims* a job with a lease: on PostgreSQL the candidate row is locked with
``SELECT ... FOR UPDATE SKIP LOCKED`` (concurrent claimers pass over it instead of waiting);
on SQLite every write transaction holds the database lock (``BEGIN IMMEDIATE``). On both, the
claim itself is an ``UPDATE`` conditioned on the state and attempt that were read, and counts
only if it changed exactly one row.

The attempt number is the lease's fencing token: heartbeats, step memos and the final outcome
are written only while ``lease_owner`` and ``attempt`` still match, so a worker whose lease ran
out (and whose job another worker took over, as attempt + 1) can no longer record anything.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from modelyard.domain.errors import ValidationFailed
from modelyard.domain.jobs import (
    LOG_LEVELS,
    Job,
    JobFinished,
    JobNotFound,
    LeaseLost,
    LogLine,
    backoff_delay,
)
from modelyard.store.db import Database
from modelyard.store.tables import DEFAULT_PROJECT, JobLogRow, JobRow, JobStepRow, utcnow

MAX_LINE = 10_000  # characters kept of one log line
Clock = Callable[[], datetime]


def to_job(row: JobRow, steps: Collection[str] = ()) -> Job:
    return Job(id=row.id, kind=row.kind, project=row.project, state=row.state,
               payload=dict(row.payload or {}), attempt=row.attempt,
               max_attempts=row.max_attempts, run_after=row.run_after,
               created_by=row.created_by, created_at=row.created_at,
               cancel_requested=bool(row.cancel_requested), lease_owner=row.lease_owner,
               lease_expires_at=row.lease_expires_at, heartbeat_at=row.heartbeat_at,
               started_at=row.started_at, finished_at=row.finished_at, result=row.result,
               error=row.error, dedupe_key=row.dedupe_key, steps=tuple(steps))


class JobQueue:
    """Enqueue, claim, heartbeat, finish; ``clock`` and ``draw`` (jitter in [0, 1)) are
    injected so tests can drive time and chance."""

    def __init__(self, db: Database, *, clock: Clock = utcnow,
                 draw: Callable[[], float] = random.random, backoff_cap_s: float = 3600.0
                 ) -> None:
        self.db = db
        self.clock = clock
        self.draw = draw
        self.backoff_cap_s = backoff_cap_s
        self.skip_locked = db.engine.dialect.name == "postgresql"

    def __repr__(self) -> str:
        return f"JobQueue({self.db!r})"

    # -- enqueue -------------------------------------------------------------------------
    def enqueue(self, session: Session, kind: str, payload: dict[str, Any], *,
                principal: dict[str, Any], created_by: str,
                project: str = DEFAULT_PROJECT, max_attempts: int = 3,
                backoff_s: float = 10.0, delay_s: float = 0.0,
                dedupe_key: str | None = None) -> Job:
        """Add a job in the caller's transaction (so an audit record commits with it)."""
        if not 1 <= max_attempts <= 100:
            raise ValidationFailed("max_attempts must be 1-100", field="max_attempts")
        if not 0 <= backoff_s <= 86_400 or not 0 <= delay_s <= 366 * 86_400:
            raise ValidationFailed("backoff_s must be 0-86400 and delay_s 0-31622400",
                                   field="delay_s")
        now = self.clock()
        row = JobRow(kind=kind, project=project, payload=payload, state="queued", attempt=0,
                     max_attempts=max_attempts, backoff_s=backoff_s,
                     run_after=now + timedelta(seconds=delay_s), cancel_requested=False,
                     dedupe_key=dedupe_key, principal=principal, created_by=created_by,
                     created_at=now)
        session.add(row)
        session.flush()
        return to_job(row)

    def by_dedupe_key(self, session: Session, key: str) -> Job | None:
        row = session.scalars(select(JobRow).where(JobRow.dedupe_key == key)).one_or_none()
        return to_job(row) if row is not None else None

    # -- claim ---------------------------------------------------------------------------
    def claim(self, owner: str, lease_s: float, kinds: Collection[str] | None = None,
              *, scan: int = 8) -> tuple[Job, dict[str, Any]] | None:
        """Lease the next due job (queued and due, or running with an expired lease) to
        ``owner`` for ``lease_s`` seconds; with it, the principal it acts as. ``None`` when
        nothing is due."""
        if kinds is not None and not kinds:
            return None
        with self.db.transaction() as session:
            now = self.clock()
            due = or_(and_(JobRow.state == "queued", JobRow.run_after <= now),
                      and_(JobRow.state == "running", JobRow.lease_expires_at < now))
            query = select(JobRow.id, JobRow.state, JobRow.attempt, JobRow.max_attempts,
                           JobRow.cancel_requested, JobRow.lease_owner).where(due)
            if kinds is not None:
                query = query.where(JobRow.kind.in_(sorted(kinds)))
            query = query.order_by(JobRow.run_after, JobRow.id).limit(scan)
            if self.skip_locked:
                query = query.with_for_update(skip_locked=True)
            for job_id, state, attempt, max_attempts, cancel, previous in \
                    session.execute(query).all():
                seen = (JobRow.id == job_id, JobRow.state == state, JobRow.attempt == attempt)
                if state == "running" and (cancel or attempt >= max_attempts):
                    # The worker died: a cancelled job stays cancelled, an exhausted one fails.
                    outcome = "cancelled" if cancel else "failed"
                    error = None if cancel else (
                        f"the worker ({previous}) stopped heartbeating on attempt {attempt} "
                        f"of {max_attempts}")
                    if self._changed(session, seen, state=outcome, error=error,
                                     finished_at=now, lease_owner=None,
                                     lease_expires_at=None):
                        self._log(session, job_id, attempt, "error" if error else "info",
                                  error or "cancelled (its worker had stopped)", now)
                    continue
                if not self._changed(session, seen, state="running", attempt=attempt + 1,
                                     lease_owner=owner, heartbeat_at=now,
                                     lease_expires_at=now + timedelta(seconds=lease_s),
                                     started_at=func.coalesce(JobRow.started_at, now)):
                    continue
                if state == "running":
                    self._log(session, job_id, attempt + 1, "warning",
                              f"the lease of {previous} expired on attempt {attempt}; "
                              f"taken over by {owner}", now)
                row = self.row(session, job_id)
                session.refresh(row)
                return to_job(row, self._step_keys(session, job_id)), dict(row.principal)
        return None

    @staticmethod
    def _changed(session: Session, where: tuple[Any, ...], **values: Any) -> bool:
        result = session.execute(update(JobRow).where(*where).values(**values)
                                 .execution_options(synchronize_session=False))
        return getattr(result, "rowcount", 0) == 1

    # -- while running ---------------------------------------------------------------------
    def _fence(self, job_id: int, owner: str, attempt: int) -> tuple[Any, ...]:
        return (JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.attempt == attempt,
                JobRow.state == "running")

    def heartbeat(self, job_id: int, owner: str, attempt: int, lease_s: float) -> bool:
        """Extend the lease; whether cancellation was asked. Raises ``LeaseLost``."""
        with self.db.transaction() as session:
            now = self.clock()
            if not self._changed(session, self._fence(job_id, owner, attempt), heartbeat_at=now,
                                 lease_expires_at=now + timedelta(seconds=lease_s)):
                raise LeaseLost(f"job {job_id} attempt {attempt} is no longer leased to "
                                f"{owner}", field="job_id")
            return bool(session.scalar(select(JobRow.cancel_requested)
                                       .where(JobRow.id == job_id)))

    def hold(self, session: Session, job_id: int, owner: str, attempt: int) -> None:
        """Check, inside the caller's transaction, that the lease is still held (and lock the
        job's row until that transaction ends): what the transaction writes then counts."""
        now = self.clock()
        if not self._changed(session, self._fence(job_id, owner, attempt), heartbeat_at=now):
            raise LeaseLost(f"job {job_id} attempt {attempt} is no longer leased to {owner}",
                            field="job_id")

    def complete(self, job_id: int, owner: str, attempt: int, result: Any) -> None:
        with self.db.transaction() as session:
            if not self._changed(session, self._fence(job_id, owner, attempt),
                                 state="succeeded", result=result, error=None,
                                 finished_at=self.clock(), lease_owner=None,
                                 lease_expires_at=None):
                raise LeaseLost(f"job {job_id} attempt {attempt} lost its lease before it "
                                "could be recorded as succeeded", field="job_id")

    def fail(self, job_id: int, owner: str, attempt: int, error: str, *,
             retry: bool = True) -> Job:
        """Record a failed attempt: queued again after the backoff while attempts are left
        (and ``retry``), else failed."""
        with self.db.transaction() as session:
            row = self._held_row(session, job_id, owner, attempt)
            now = self.clock()
            if retry and row.attempt < row.max_attempts and not row.cancel_requested:
                delay = backoff_delay(row.attempt, row.backoff_s, self.backoff_cap_s,
                                      self.draw())
                values: dict[str, Any] = {"state": "queued",
                                          "run_after": now + timedelta(seconds=delay)}
                note = f"attempt {attempt} of {row.max_attempts} failed; retrying in " \
                       f"{delay:.1f} s"
            else:
                values = {"state": "cancelled" if row.cancel_requested else "failed",
                          "finished_at": now}
                note = f"attempt {attempt} of {row.max_attempts} failed; giving up"
            self._changed(session, self._fence(job_id, owner, attempt), error=error[:MAX_LINE],
                          lease_owner=None, lease_expires_at=None, **values)
            self._log(session, job_id, attempt, "error", note, now)
            session.flush()
            session.refresh(row)
            return to_job(row)

    def finish_cancelled(self, job_id: int, owner: str, attempt: int) -> None:
        """The handler stopped because cancellation was asked."""
        with self.db.transaction() as session:
            self._changed(session, self._fence(job_id, owner, attempt), state="cancelled",
                          finished_at=self.clock(), lease_owner=None, lease_expires_at=None)

    def _held_row(self, session: Session, job_id: int, owner: str, attempt: int) -> JobRow:
        query = select(JobRow).where(*self._fence(job_id, owner, attempt))
        if self.skip_locked:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            raise LeaseLost(f"job {job_id} attempt {attempt} is no longer leased to {owner}",
                            field="job_id")
        return row

    # -- cancel ----------------------------------------------------------------------------
    def cancel(self, session: Session, job_id: int) -> tuple[Job, Job]:
        """Cancel at once when queued; when running, ask (the handler sees it at its next
        heartbeat). Returns the job before and after."""
        row = self.row(session, job_id, lock=True)
        before = to_job(row)
        if row.state in ("succeeded", "failed", "cancelled"):
            raise JobFinished(f"job {job_id} already {row.state}", field="job_id")
        if row.state == "queued":
            row.state, row.finished_at = "cancelled", self.clock()
        row.cancel_requested = True
        session.flush()
        return before, to_job(row)

    # -- steps -----------------------------------------------------------------------------
    def step(self, job_id: int, key: str) -> tuple[bool, Any]:
        """Whether the step was done (by any attempt), and its result."""
        with self.db.transaction() as session:
            row = session.scalars(select(JobStepRow).where(JobStepRow.job_id == job_id,
                                                           JobStepRow.key == key)
                                  ).one_or_none()
            return (True, row.result) if row is not None else (False, None)

    def save_step(self, session: Session, job_id: int, owner: str, attempt: int, key: str,
                  result: Any) -> None:
        """Record a step's result in the caller's transaction, only while the lease holds."""
        self.hold(session, job_id, owner, attempt)
        session.add(JobStepRow(job_id=job_id, key=key, result=result, attempt=attempt,
                               at=self.clock()))
        session.flush()

    def _step_keys(self, session: Session, job_id: int) -> list[str]:
        return list(session.scalars(select(JobStepRow.key).where(JobStepRow.job_id == job_id)
                                    .order_by(JobStepRow.id)))

    # -- logs ------------------------------------------------------------------------------
    def log(self, job_id: int, attempt: int, level: str, line: str) -> None:
        with self.db.transaction() as session:
            self._log(session, job_id, attempt, level, line, self.clock())

    @staticmethod
    def _log(session: Session, job_id: int, attempt: int, level: str, line: str,
             at: datetime) -> None:
        session.add(JobLogRow(job_id=job_id, attempt=attempt, at=at,
                              level=level if level in LOG_LEVELS else "info",
                              line=line[:MAX_LINE]))

    def logs(self, session: Session, job_id: int, after: int = 0, limit: int = 1000
             ) -> list[LogLine]:
        rows = session.scalars(select(JobLogRow).where(JobLogRow.job_id == job_id,
                                                       JobLogRow.id > after)
                               .order_by(JobLogRow.id).limit(limit))
        return [LogLine(r.id, r.attempt, r.at, r.level, r.line) for r in rows]

    # -- reading ---------------------------------------------------------------------------
    def row(self, session: Session, job_id: int, *, lock: bool = False) -> JobRow:
        query = select(JobRow).where(JobRow.id == job_id)
        if lock and self.skip_locked:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            raise JobNotFound(f"no job {job_id}", field="job_id")
        return row

    def get(self, session: Session, job_id: int) -> Job:
        return to_job(self.row(session, job_id), self._step_keys(session, job_id))

    def list(self, session: Session, *, state: str | None = None, kind: str | None = None,
             projects: Collection[str] | None = None, before: int | None = None,
             limit: int = 100) -> list[Job]:
        """Newest first; ``projects`` limits to those (``None``: every project); ``before``:
        only jobs with a smaller id (the next page)."""
        query = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
        if state is not None:
            query = query.where(JobRow.state == state)
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        if projects is not None:
            query = query.where(JobRow.project.in_(sorted(projects)))
        if before is not None:
            query = query.where(JobRow.id < before)
        return [to_job(row) for row in session.scalars(query)]
