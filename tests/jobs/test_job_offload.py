"""``ctx.offload`` without the ray backend: the work runs on the worker thread, memoized as a
step; the ``resources`` a payload may carry are checked with field paths."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from modelyard import Yard
from modelyard.domain.errors import ValidationFailed
from modelyard.domain.jobs import check_resources
from modelyard.jobs.handlers import check_call
from modelyard.jobs.worker import JobContext, Worker


def test_offload_runs_here_once_without_an_offloader(yard: Yard) -> None:
    threads: list[str] = []

    def work(n: int) -> int:
        threads.append(threading.current_thread().name)
        return n + 1

    def handler(ctx: JobContext, payload: dict[str, Any]) -> Any:
        value = ctx.offload("add", work, payload["n"])
        if ctx.attempt == 1:
            raise RuntimeError("crash after the step")
        return value

    yard.jobs.handlers.register("add", handler)
    job = yard.enqueue_job("add", {"n": 1, "resources": {"num_cpus": 2}}, backoff_s=0)
    worker = Worker(yard, poll_s=0.05, schedules=False)
    assert worker.run_once() and worker.run_once()
    assert yard.job(job.id).result == 2
    assert len(threads) == 1 and threads[0] == threading.current_thread().name


def test_offloader_gets_the_payload_resources(yard: Yard) -> None:
    seen: list[Any] = []

    def offload(fn: Any, args: tuple[Any, ...], resources: Any, check: Any) -> Any:
        seen.append(dict(resources))
        return fn(*args)

    def handler(ctx: JobContext, payload: dict[str, Any]) -> Any:
        return [ctx.offload("a", int, "3"),
                ctx.offload("b", int, "4", resources={"num_gpus": 1})]

    yard.jobs.handlers.register("two", handler)
    job = yard.enqueue_job("two", {"resources": {"num_cpus": 0.5, "memory": 1e9}})
    assert Worker(yard, poll_s=0.05, schedules=False, offload=offload).run_once()
    assert yard.job(job.id).result == [3, 4]
    assert seen == [{"num_cpus": 0.5, "memory": 1e9}, {"num_gpus": 1.0}]


@pytest.mark.parametrize(("resources", "field"), [
    ({"cpus": 1}, "payload.resources.cpus"),
    ({"num_cpus": -1}, "payload.resources.num_cpus"),
    ({"num_gpus": True}, "payload.resources.num_gpus"),
    ([1], "payload.resources"),
])
def test_wrong_resources_are_refused_with_their_path(resources: Any, field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        check_resources(resources)
    assert info.value.field == field
    with pytest.raises(ValidationFailed):
        check_call({"function": "m.n:f", "trusted": True, "resources": resources})


def test_call_keeps_checked_resources() -> None:
    assert check_call({"function": "m.n:f", "trusted": True,
                       "resources": {"num_cpus": 1}})["resources"] == {"num_cpus": 1.0}
    assert "resources" not in check_call({"function": "m.n:f", "trusted": True})
