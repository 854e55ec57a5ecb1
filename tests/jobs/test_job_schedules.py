"""Cron schedules on SQLite and PostgreSQL: several schedulers ticking at once enqueue one
job per slot; missed slots run once, not once each; disabled schedules enqueue nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from modelyard import Yard
from modelyard.control.jobs import JobService
from modelyard.domain.errors import ValidationFailed
from modelyard.domain.jobs import Job
from modelyard.governance.policy import Principal
from modelyard.jobs.queue import JobQueue
from modelyard.jobs.schedules import Scheduler, next_slot

T0 = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
CALL = {"function": "pkg.reports:nightly", "trusted": True}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(yard: Yard, clock: Clock) -> JobService:
    return JobService(yard.db, queue=JobQueue(yard.db, clock=clock))


def tick_together(schedulers: list[Scheduler]) -> list[Job]:
    barrier = threading.Barrier(len(schedulers))
    found: list[Job] = []
    lock = threading.Lock()

    def run(scheduler: Scheduler) -> None:
        barrier.wait()
        jobs = scheduler.tick()
        with lock:
            found.extend(jobs)

    threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return found


def test_next_slot_is_utc_and_strictly_after() -> None:
    assert next_slot("*/5 * * * *", T0) == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    assert next_slot("*/5 * * * *", datetime(2026, 1, 1, 0, 5, tzinfo=UTC)) == \
        datetime(2026, 1, 1, 0, 10, tzinfo=UTC)


def test_each_slot_is_enqueued_once_by_several_schedulers(
        yard: Yard, service: JobService, clock: Clock) -> None:
    admin = Principal.local_admin()
    schedule = service.set_schedule(admin, "reports", cron="*/5 * * * *", kind="call",
                                    payload=CALL)
    assert schedule.next_run_at == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    schedulers = [Scheduler(JobQueue(yard.db, clock=clock)) for _ in range(4)]
    assert tick_together(schedulers) == []  # not due yet

    clock.now = datetime(2026, 1, 1, 0, 5, 1, tzinfo=UTC)
    first = tick_together(schedulers)
    assert [j.dedupe_key for j in first] == ["schedule:reports:2026-01-01T00:05:00+00:00"]
    assert tick_together(schedulers) == []  # the same slot, again: nothing

    clock.now = datetime(2026, 1, 1, 0, 10, 0, tzinfo=UTC)
    assert len(tick_together(schedulers)) == 1

    clock.now = datetime(2026, 1, 1, 1, 2, 0, tzinfo=UTC)  # eleven slots missed
    missed = tick_together(schedulers)
    assert [j.dedupe_key for j in missed] == ["schedule:reports:2026-01-01T00:15:00+00:00"]
    (after,) = service.list_schedules(admin)
    assert after.next_run_at == datetime(2026, 1, 1, 1, 5, tzinfo=UTC)
    assert after.last_job_id == missed[0].id

    jobs = service.list(admin, kind="call")
    assert len(jobs) == 3
    assert {j.created_by for j in jobs} == {"schedule:reports"}
    assert all(j.payload == {**CALL, "args": {}} for j in jobs)
    enqueues = [r for r in yard.audit_records() if r["action"] == "job.enqueue"]
    assert len(enqueues) == 3 and enqueues[0]["actor"] == "schedule:reports"


def test_disabled_and_deleted_schedules_enqueue_nothing(yard: Yard, service: JobService,
                                                        clock: Clock) -> None:
    admin = Principal.local_admin()
    service.set_schedule(admin, "off", cron="* * * * *", kind="call", payload=CALL,
                         enabled=False)
    service.set_schedule(admin, "gone", cron="* * * * *", kind="call", payload=CALL)
    service.delete_schedule(admin, "gone")
    clock.now += timedelta(hours=1)
    assert Scheduler(service.queue).tick() == []
    assert [s.name for s in service.list_schedules(admin)] == ["off"]


def test_schedules_are_checked_before_they_are_kept(service: JobService) -> None:
    admin = Principal.local_admin()
    with pytest.raises(ValidationFailed) as bad:
        service.set_schedule(admin, "x", cron="every day", kind="call", payload=CALL)
    assert bad.value.field == "cron"
    with pytest.raises(ValidationFailed) as bad:
        service.set_schedule(admin, "x", cron="0 3 * * *", kind="call",
                             payload={"function": "a:b"})
    assert bad.value.field == "payload.trusted"
    viewer = Principal("viewer", frozenset({"viewer"}))
    with pytest.raises(Exception, match="may not jobs:write"):
        service.set_schedule(viewer, "x", cron="0 3 * * *", kind="call", payload=CALL)
