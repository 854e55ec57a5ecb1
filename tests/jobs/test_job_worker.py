"""Workers in-process, on SQLite and PostgreSQL: outcomes, retries, cancellation of a running
job through heartbeats, captured and redacted logs, step memos, a revoked key, and several
worker threads that run every job exactly once."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from modelyard import Yard
from modelyard.domain.errors import ValidationFailed
from modelyard.domain.jobs import LeaseLost
from modelyard.governance.policy import Principal
from modelyard.jobs.handlers import Handlers
from modelyard.jobs.queue import JobQueue
from modelyard.jobs.worker import JobContext, Worker, clean_line
from modelyard.store.tables import ProjectRow


@pytest.fixture
def handlers(yard: Yard) -> Handlers:
    return yard.jobs.handlers  # the yard's table: enqueue checks kinds against it


def worker(yard: Yard, **options: Any) -> Worker:
    return Worker(yard, lease_s=options.pop("lease_s", 30), poll_s=0.05, schedules=False,
                  **options)


def test_success_result_and_redacted_logs(yard: Yard, handlers: Handlers,
                                          admin_key: str) -> None:
    def handler(ctx: JobContext, payload: dict[str, Any]) -> Any:
        ctx.log(f"training with key {admin_key} for jane.doe@example.com password=hunter2")
        logging.getLogger("user.training").warning("loss went up")
        return {"accuracy": 0.9, "rows": payload["rows"]}

    handlers.register("train", handler)
    job = yard.enqueue_job("train", {"rows": 10})
    assert worker(yard).run_once() is True
    done = yard.job(job.id)
    assert (done.state, done.attempt, done.result) == ("succeeded", 1,
                                                       {"accuracy": 0.9, "rows": 10})
    text = "\n".join(line.line for line in yard.job_logs(job.id))
    assert admin_key not in text and "hunter2" not in text and "jane.doe" not in text
    assert "[KEY]" in text and "[EMAIL]" in text
    assert "user.training: loss went up" in text  # captured from Python logging
    assert worker(yard).run_once() is False  # nothing left


def test_clean_line_removes_secrets() -> None:
    line = clean_line("Authorization: Bearer abc.def token=xyz my_0123456789ab.secretpart")
    assert "abc.def" not in line and "xyz" not in line and "secretpart" not in line


def test_failure_is_retried_then_succeeds(yard: Yard, handlers: Handlers) -> None:
    calls = Counter[int]()

    def flaky(ctx: JobContext, payload: dict[str, Any]) -> Any:
        calls[ctx.attempt] += 1
        if ctx.attempt == 1:
            raise RuntimeError("transient: the database blinked")
        return "ok"

    handlers.register("flaky", flaky)
    job = yard.enqueue_job("flaky", backoff_s=0)
    runner = worker(yard)
    assert runner.run_once() and runner.run_once()
    done = yard.job(job.id)
    assert (done.state, done.attempt, done.result) == ("succeeded", 2, "ok")
    assert calls == {1: 1, 2: 1}
    lines = [line.line for line in yard.job_logs(job.id)]
    assert any("RuntimeError: transient" in line for line in lines)
    assert any("retrying in" in line for line in lines)


def test_a_callers_error_is_not_retried(yard: Yard, handlers: Handlers) -> None:
    def refuse(ctx: JobContext, payload: dict[str, Any]) -> Any:
        raise ValidationFailed("no such column", field="payload.column")

    handlers.register("refuse", refuse)
    job = yard.enqueue_job("refuse", max_attempts=5, backoff_s=0)
    worker(yard).run_once()
    done = yard.job(job.id)
    assert (done.state, done.attempt) == ("failed", 1)
    assert "no such column" in (done.error or "")


def test_running_job_is_cancelled_at_its_next_heartbeat(yard: Yard,
                                                        handlers: Handlers) -> None:
    started = threading.Event()

    def long(ctx: JobContext, payload: dict[str, Any]) -> Any:
        started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            time.sleep(0.02)
        return "never cancelled"

    handlers.register("long", long)
    job = yard.enqueue_job("long")
    runner = worker(yard, lease_s=0.6).start()  # heartbeats every 0.2 s
    try:
        assert started.wait(30)
        assert yard.cancel_job(job.id).cancel_requested
        done = yard.wait_job(job.id, timeout_s=10)
    finally:
        assert runner.stop(10)
    assert done.state == "cancelled"
    assert any(r["action"] == "job.cancel" for r in yard.audit_records())


def test_step_runs_once_across_attempts(yard: Yard, handlers: Handlers) -> None:
    effects: list[int] = []

    def twice(ctx: JobContext, payload: dict[str, Any]) -> Any:
        version = ctx.step("register", lambda: effects.append(ctx.attempt) or len(effects))
        if ctx.attempt == 1:
            raise RuntimeError("crash after the step")
        return version

    handlers.register("twice", twice)
    job = yard.enqueue_job("twice", backoff_s=0)
    runner = worker(yard)
    runner.run_once()
    runner.run_once()
    assert effects == [1]
    assert yard.job(job.id).result == 1
    assert yard.job(job.id).steps == ("register",)


def test_transaction_step_writes_nothing_without_the_lease(yard: Yard) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    queue = JobQueue(yard.db, clock=lambda: now[0])
    with yard.db.transaction() as session:
        job = queue.enqueue(session, "train", {}, principal={"name": "t", "roles": ["admin"]},
                            created_by="t")
    claimed = queue.claim("w1", 10)
    assert claimed is not None
    now[0] += timedelta(seconds=11)
    assert queue.claim("w2", 10) is not None  # w1's lease ran out: w2 took the job over
    late = JobContext(claimed[0], queue, "w1", None)

    def create_project(session: Any) -> str:
        session.add(ProjectRow(name="from-a-stale-worker", description="", policy={},
                               created_by="t"))
        session.flush()
        return "created"

    with pytest.raises(LeaseLost):
        late.transaction_step("create", create_project)
    with yard.db.transaction() as session:
        assert session.scalars(select(ProjectRow).where(
            ProjectRow.name == "from-a-stale-worker")).first() is None
    assert queue.step(job.id, "create") == (False, None)


def test_several_threads_run_every_job_exactly_once(yard: Yard, handlers: Handlers) -> None:
    runs = Counter[int]()
    lock = threading.Lock()

    def count(ctx: JobContext, payload: dict[str, Any]) -> Any:
        with lock:
            runs[ctx.id] += 1
        time.sleep(0.01)
        return None

    handlers.register("count", count)
    ids = [yard.enqueue_job("count").id for _ in range(24)]
    runners = [worker(yard, concurrency=3, name=f"w{i}").start() for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        while len(yard.list_jobs(state="succeeded", limit=100)) < len(ids):
            assert time.monotonic() < deadline, "jobs did not finish"
            time.sleep(0.05)
    finally:
        for runner in runners:
            assert runner.stop(10)
    assert runs == dict.fromkeys(ids, 1)


def test_a_revoked_keys_jobs_do_not_run(yard: Yard, handlers: Handlers) -> None:
    handlers.register("noop", lambda ctx, payload: "ran")
    created = yard.create_key("bob", ["developer"])
    bob = Principal(f"key:bob:{created['prefix']}", frozenset({"developer"}))
    job = yard.jobs.enqueue(bob, "noop")
    yard.revoke_key(created["prefix"])
    worker(yard).run_once()
    done = yard.job(job.id)
    assert done.state == "failed" and "revoked" in (done.error or "")
