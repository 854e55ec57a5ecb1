"""Queue semantics on SQLite and PostgreSQL: claims with leases, fencing by attempt, retries
with backoff, cancellation, expired leases taken over, and concurrent claimers that never run
one job twice."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelyard import Yard
from modelyard.domain.errors import ProjectNotFound, ValidationFailed
from modelyard.domain.jobs import Job, JobFinished, LeaseLost, UnknownJobKind, backoff_delay
from modelyard.jobs.queue import JobQueue

ADMIN = {"name": "tester", "roles": ["admin"], "subject": "tester"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(yard: Yard, clock: Clock) -> JobQueue:
    return JobQueue(yard.db, clock=clock, draw=lambda: 0.5)


def put(queue: JobQueue, kind: str = "train", **options: Any) -> int:
    with queue.db.transaction() as session:
        return queue.enqueue(session, kind, {"n": 1}, principal=ADMIN, created_by="tester",
                             **options).id


def take(queue: JobQueue, owner: str, lease_s: float = 30) -> Job:
    claimed = queue.claim(owner, lease_s)
    assert claimed is not None, "nothing to claim"
    return claimed[0]


def test_claim_leases_one_due_job_then_nothing(queue: JobQueue) -> None:
    job_id = put(queue)
    claimed = queue.claim("w1", lease_s=30)
    assert claimed is not None
    job, principal = claimed
    assert (job.id, job.state, job.attempt, job.lease_owner) == (job_id, "running", 1, "w1")
    assert principal == ADMIN
    assert queue.claim("w2", lease_s=30) is None  # leased, not expired


def test_kinds_filter_and_delay(queue: JobQueue, clock: Clock) -> None:
    put(queue, "evaluate")
    later = put(queue, "train", delay_s=60)
    assert queue.claim("w", 30, kinds={"train"}) is None  # not due yet
    clock.advance(61)
    claimed = queue.claim("w", 30, kinds={"train"})
    assert claimed is not None and claimed[0].id == later
    assert queue.claim("w", 30, kinds=set()) is None


def test_complete_is_fenced_by_owner_and_attempt(queue: JobQueue, clock: Clock) -> None:
    job_id = put(queue)
    take(queue, "w1", 10)
    clock.advance(11)  # w1 stopped heartbeating
    taken = take(queue, "w2", 10)
    assert (taken.id, taken.attempt, taken.lease_owner) == (job_id, 2, "w2")
    with pytest.raises(LeaseLost):
        queue.complete(job_id, "w1", 1, {"late": True})
    with pytest.raises(LeaseLost):
        queue.heartbeat(job_id, "w1", 1, 10)
    queue.complete(job_id, "w2", 2, {"ok": True})
    with queue.db.transaction() as session:
        done = queue.get(session, job_id)
        lines = [line.line for line in queue.logs(session, job_id)]
    assert (done.state, done.result, done.lease_owner) == ("succeeded", {"ok": True}, None)
    assert any("lease of w1 expired" in line for line in lines)


def test_heartbeat_keeps_the_lease(queue: JobQueue, clock: Clock) -> None:
    job_id = put(queue)
    queue.claim("w1", 10)
    for _ in range(5):
        clock.advance(6)
        assert queue.heartbeat(job_id, "w1", 1, 10) is False
        assert queue.claim("w2", 10) is None


def test_failures_retry_with_exponential_backoff_then_fail(queue: JobQueue,
                                                           clock: Clock) -> None:
    job_id = put(queue, max_attempts=3, backoff_s=4)
    delays = []
    for attempt in (1, 2):
        job = take(queue, "w", 30)
        assert job.attempt == attempt
        failed = queue.fail(job_id, "w", attempt, "boom")
        assert failed.state == "queued"
        delays.append((failed.run_after - clock()).total_seconds())
        assert queue.claim("w", 30) is None  # backing off
        clock.advance(delays[-1])
    # draw 0.5: three quarters of 4 s, then of 8 s
    assert delays == [pytest.approx(3.0), pytest.approx(6.0)]
    job = take(queue, "w", 30)
    final = queue.fail(job_id, "w", 3, "boom again")
    assert (final.state, final.error, final.attempt) == ("failed", "boom again", 3)
    assert queue.claim("w", 30) is None


def test_no_retry_when_told(queue: JobQueue) -> None:
    job_id = put(queue, max_attempts=5)
    queue.claim("w", 30)
    assert queue.fail(job_id, "w", 1, "bad payload", retry=False).state == "failed"


def test_backoff_is_capped_and_jittered() -> None:
    assert backoff_delay(1, 10, 3600, 0.0) == 5
    assert backoff_delay(1, 10, 3600, 0.999) == pytest.approx(10, abs=0.01)
    assert backoff_delay(3, 10, 3600, 0.0) == 20
    assert backoff_delay(30, 10, 60, 1.0) == 60


def test_cancel_queued_at_once_running_at_next_heartbeat(queue: JobQueue) -> None:
    queued, running = put(queue), put(queue)
    with queue.db.transaction() as session:
        queue.cancel(session, queued)
    job = take(queue, "w", 30)
    assert job.id == running  # the cancelled one is never claimed
    with queue.db.transaction() as session:
        _, after = queue.cancel(session, running)
    assert (after.state, after.cancel_requested) == ("running", True)
    assert queue.heartbeat(running, "w", 1, 30) is True
    queue.finish_cancelled(running, "w", 1)
    with queue.db.transaction() as session:
        assert queue.get(session, queued).state == "cancelled"
        assert queue.get(session, running).state == "cancelled"
        with pytest.raises(JobFinished):
            queue.cancel(session, running)


def test_expired_lease_of_a_cancelled_or_exhausted_job_ends_it(queue: JobQueue,
                                                              clock: Clock) -> None:
    cancelled, exhausted = put(queue), put(queue, max_attempts=1)
    queue.claim("w1", 10)
    queue.claim("w1", 10)
    with queue.db.transaction() as session:
        queue.cancel(session, cancelled)
    clock.advance(11)
    assert queue.claim("w2", 10) is None
    with queue.db.transaction() as session:
        assert queue.get(session, cancelled).state == "cancelled"
        gone = queue.get(session, exhausted)
    assert gone.state == "failed" and "stopped heartbeating" in (gone.error or "")


def test_steps_are_stored_once_and_only_under_the_lease(queue: JobQueue,
                                                        clock: Clock) -> None:
    job_id = put(queue)
    queue.claim("w1", 10)
    assert queue.step(job_id, "register") == (False, None)
    with queue.db.transaction() as session:
        queue.save_step(session, job_id, "w1", 1, "register", {"version": 1})
    assert queue.step(job_id, "register") == (True, {"version": 1})
    clock.advance(11)
    queue.claim("w2", 10)
    with pytest.raises(LeaseLost), queue.db.transaction() as session:
        queue.save_step(session, job_id, "w1", 1, "evaluate", 0.9)
    assert queue.step(job_id, "evaluate") == (False, None)
    with queue.db.transaction() as session:
        assert queue.get(session, job_id).steps == ("register",)


def test_concurrent_claimers_never_share_a_job(queue: JobQueue) -> None:
    ids = {put(queue) for _ in range(30)}
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def claimer(name: str) -> None:
        barrier.wait()
        while (got := queue.claim(name, 60)) is not None:
            with lock:
                claimed.append((name, got[0].id))
            time.sleep(0.01)  # "runs" it, leaving the others a turn

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(job_id for _, job_id in claimed) == sorted(ids)  # each exactly once
    assert len({name for name, _ in claimed}) > 1


def test_service_enqueue_checks_kind_project_payload_and_dedupes(yard: Yard) -> None:
    with pytest.raises(UnknownJobKind):
        yard.enqueue_job("nope")
    with pytest.raises(ValidationFailed) as refused:
        yard.enqueue_job("call", {"function": "json:dumps"})
    assert refused.value.field == "payload.trusted"
    with pytest.raises(ValidationFailed) as refused:
        yard.enqueue_job("call", {"function": "os.system", "trusted": True})
    assert refused.value.field == "payload.function"
    with pytest.raises(ProjectNotFound):
        yard.enqueue_job("call", {"function": "a.b:c", "trusted": True}, project="ghost")
    first = yard.enqueue_job("call", {"function": "a.b:c", "trusted": True,
                                      "args": {"token": "s3cret"}}, dedupe_key="nightly")
    again = yard.enqueue_job("call", {"function": "a.b:c", "trusted": True},
                             dedupe_key="nightly")
    assert again.id == first.id
    shown = yard.job(first.id).to_dict()
    assert shown["payload"]["args"]["token"] == "[removed]"
    assert [j.id for j in yard.list_jobs()] == [first.id]
    records = [r for r in yard.audit_records() if r["action"] == "job.enqueue"]
    assert len(records) == 1 and "s3cret" not in str(records)
