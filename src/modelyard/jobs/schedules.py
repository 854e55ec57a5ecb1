"""Cron schedules: each due slot enqueues exactly one job, however many schedulers run.

A schedule keeps its next slot (``next_run_at``, cron evaluated in UTC). A scheduler moves it
to the next slot after now with an ``UPDATE ... WHERE next_run_at = <the slot it read>``: only
the scheduler whose update changed the row enqueues, in the same transaction, with the dedupe
key ``schedule:NAME:SLOT`` as a second guard. Slots missed while nothing ran are not replayed
one by one: the first missed slot runs once and the schedule continues from now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from croniter import CroniterError, croniter
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelyard.domain.errors import ValidationFailed
from modelyard.domain.jobs import Job, Schedule, ScheduleNotFound
from modelyard.governance import audit
from modelyard.jobs.queue import JobQueue
from modelyard.store.tables import JobScheduleRow


def check_cron(expression: Any) -> str:
    """A five-field cron expression (minute hour day month weekday), e.g. ``0 3 * * *``."""
    if not isinstance(expression, str) or len(expression) > 128 or \
            len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ValidationFailed(f"{expression!r} is not a cron expression: five fields, "
                               "minute hour day-of-month month day-of-week (UTC), e.g. "
                               "'0 3 * * *'", field="cron")
    try:  # valid syntax for a date that never comes (31 February) was a 500
        next_slot(expression, datetime.now(UTC))
    except CroniterError:
        raise ValidationFailed(f"{expression!r} never fires: no such date", field="cron") \
            from None
    return expression


def next_slot(cron: str, after: datetime) -> datetime:
    """The first slot of ``cron`` strictly after ``after`` (UTC)."""
    slot = croniter(cron, after.astimezone(UTC)).get_next(datetime)
    return slot if slot.tzinfo else slot.replace(tzinfo=UTC)


def to_schedule(row: JobScheduleRow) -> Schedule:
    return Schedule(name=row.name, cron=row.cron, kind=row.kind, project=row.project,
                    payload=dict(row.payload or {}), enabled=bool(row.enabled),
                    max_attempts=row.max_attempts, next_run_at=row.next_run_at,
                    created_by=row.created_by, last_enqueued_at=row.last_enqueued_at,
                    last_job_id=row.last_job_id)


def row(session: Session, name: str, *, lock: bool = False) -> JobScheduleRow:
    query = select(JobScheduleRow).where(JobScheduleRow.name == name)
    if lock:
        query = query.with_for_update()
    found = session.scalars(query).one_or_none()
    if found is None:
        raise ScheduleNotFound(f"no schedule {name!r}", field="name")
    return found


def put(session: Session, name: str, *, cron: str, kind: str, project: str,
        payload: dict[str, Any], enabled: bool, max_attempts: int,
        principal: dict[str, Any], created_by: str, now: datetime
        ) -> tuple[Schedule | None, Schedule]:
    """Create or replace a schedule; its next slot counts from now. Returns before, after."""
    found = session.scalars(select(JobScheduleRow).where(JobScheduleRow.name == name)
                            .with_for_update()).one_or_none()
    before = to_schedule(found) if found is not None else None
    if found is None:
        found = JobScheduleRow(name=name, created_at=now)
        session.add(found)
    found.cron, found.kind, found.project, found.payload = cron, kind, project, payload
    found.enabled, found.max_attempts = enabled, max_attempts
    found.principal, found.created_by = principal, created_by
    found.next_run_at = next_slot(cron, now)
    session.flush()
    return before, to_schedule(found)


def all_schedules(session: Session) -> list[Schedule]:
    return [to_schedule(r) for r in session.scalars(select(JobScheduleRow)
                                                    .order_by(JobScheduleRow.name))]


class Scheduler:
    """Enqueues the jobs of due schedules (``tick``); safe to run in every worker."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def __repr__(self) -> str:
        return f"Scheduler({self.queue.db!r})"

    def tick(self) -> list[Job]:
        now = self.queue.clock()
        with self.queue.db.transaction() as session:
            due = session.execute(select(JobScheduleRow.id, JobScheduleRow.next_run_at)
                                  .where(JobScheduleRow.enabled.is_(True),
                                         JobScheduleRow.next_run_at <= now)
                                  .order_by(JobScheduleRow.next_run_at)).all()
        enqueued = []
        for schedule_id, slot in due:
            job = self._enqueue_slot(schedule_id, slot, now)
            if job is not None:
                enqueued.append(job)
        return enqueued

    def _enqueue_slot(self, schedule_id: int, slot: datetime, now: datetime) -> Job | None:
        with self.queue.db.transaction() as session:
            found = session.get(JobScheduleRow, schedule_id)
            if found is None:
                return None
            following = next_slot(found.cron, max(now, slot))
            moved = session.execute(
                update(JobScheduleRow)
                .where(JobScheduleRow.id == schedule_id, JobScheduleRow.next_run_at == slot,
                       JobScheduleRow.enabled.is_(True))
                .values(next_run_at=following, last_enqueued_at=now)
                .execution_options(synchronize_session=False))
            if getattr(moved, "rowcount", 0) != 1:
                return None  # another scheduler took this slot
            session.refresh(found)
            key = f"schedule:{found.name}:{slot.astimezone(UTC).isoformat()}"
            if self.queue.by_dedupe_key(session, key) is not None:
                return None
            job = self.queue.enqueue(session, found.kind, dict(found.payload),
                                     principal=dict(found.principal),
                                     created_by=f"schedule:{found.name}",
                                     project=found.project, max_attempts=found.max_attempts,
                                     dedupe_key=key)
            found.last_job_id = job.id
            audit.append(session, f"schedule:{found.name}", "job.enqueue", f"job:{job.id}",
                         after={"kind": job.kind, "project": job.project,
                                "schedule": found.name, "slot": slot.isoformat()})
            return job
