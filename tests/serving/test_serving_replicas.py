"""Replica health (outlier ejection) and retries of failed batches on another replica."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ModelFailed
from modelyard.serving.batcher import Batcher, BatchObserver
from modelyard.serving.replicas import ReplicaHealth
from modelyard.serving.resilience import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.retries = 0
        self.refused = 0
        self.ejections = 0

    def retried(self, count: int) -> None:
        self.retries += count

    def retry_refused(self, count: int) -> None:
        self.refused += count

    def ejected(self) -> None:
        self.ejections += 1


def row(i: int) -> dict[str, np.ndarray]:
    return {"x": np.array([[float(i)]])}


def test_five_failures_in_a_row_eject_for_exponentially_longer() -> None:
    clock = Clock()
    health = ReplicaHealth(10, clock=clock)
    assert [health.failure(0) for _ in range(4)] == ["ok"] * 4
    health.success(0)  # a success resets the run
    assert [health.failure(0) for _ in range(4)] == ["ok"] * 4
    assert health.failure(0) == "ejected"
    assert not health.available(0) and health.available(1)
    assert health.ejected_until(0) == 130.0  # 30 s, Envoy's base ejection time
    clock.now = 130.0
    assert health.available(0)
    assert [health.failure(0) for _ in range(5)][-1] == "ejected"
    assert health.ejected_until(0) == 190.0  # twice as long the second time
    for _ in range(6):  # capped at 300 s
        clock.now = health.ejected_until(0)
        for _ in range(5):
            health.failure(0)
    assert health.ejected_until(0) - clock.now == 300.0


def test_ejection_is_capped_at_ten_percent_but_at_least_one_and_never_the_last() -> None:
    health = ReplicaHealth(3, clock=Clock())
    assert [health.failure(0) for _ in range(5)][-1] == "ejected"
    # 10% of 3 is 0, but one may always be ejected; a second may not.
    assert [health.failure(1) for _ in range(5)][-1] == "unhealthy"
    assert health.available(1) and health.ejected() == 1
    health.restore(0)  # a replacement took slot 0
    assert health.available(0) and health.ejected() == 0
    single = ReplicaHealth(1, clock=Clock())
    assert [single.failure(0) for _ in range(5)][-1] == "unhealthy"  # the last one serves
    assert single.available(0)
    twenty = ReplicaHealth(20, clock=Clock())
    verdicts = [[twenty.failure(s) for _ in range(5)][-1] for s in range(4)]
    assert verdicts == ["ejected", "ejected", "unhealthy", "unhealthy"]  # 10% of 20


def test_a_failed_batch_is_retried_on_another_replica() -> None:
    gate = threading.Event()
    failures: list[int] = []

    def healthy(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(5)  # until the broken one has failed: it must get requests too
        return {"y": inputs["x"] * 2}

    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        failures.append(len(inputs["x"]))
        gate.set()
        raise RuntimeError("dead replica")

    recorder = Recorder()
    unhealthy: list[int] = []
    batcher = Batcher([broken, healthy], DeploymentSpec(max_batch_size=1), recorder, "t",
                      budget=RetryBudget(), on_unhealthy=unhealthy.append)

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*[batcher.submit(row(i), 1, 10.0) for i in range(30)])

    results = asyncio.run(main())
    batcher.close()
    batcher.join()
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(30)]
    assert failures and recorder.retries == len(failures)  # every failed request, once
    assert len(failures) <= 5  # ejected after five in a row: no more batches for it
    assert recorder.ejections == (1 if len(failures) == 5 else 0)
    assert unhealthy == ([0] if len(failures) == 5 else [])


def test_no_retry_without_another_replica_or_budget_or_idempotence() -> None:
    gate = threading.Event()

    def healthy(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(5)
        return {"y": inputs["x"] * 2}

    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.set()
        raise RuntimeError("dead replica")

    async def run(batcher: Batcher) -> list[object]:
        try:
            return await asyncio.gather(*[batcher.submit(row(i), 1, 10.0) for i in range(6)],
                                        return_exceptions=True)
        finally:
            batcher.close()

    # The budget is spent (no floor, no share): errors, counted as refused retries.
    spent = Recorder()
    results = asyncio.run(run(Batcher([broken, healthy], DeploymentSpec(max_batch_size=1),
                                      spent, "t", budget=RetryBudget(ratio=0, min_per_s=0))))
    errors = [r for r in results if isinstance(r, ModelFailed)]
    assert errors and spent.refused == len(errors) and spent.retries == 0
    # One replica: nowhere else to go.
    alone = Recorder()
    gate.set()
    results = asyncio.run(run(Batcher([broken], DeploymentSpec(), alone, "t",
                                      budget=RetryBudget())))
    assert all(isinstance(r, ModelFailed) for r in results)
    assert alone.retries == 0 and alone.refused == 0
    # Not idempotent (no budget): never retried.
    gate.clear()
    once = Recorder()
    results = asyncio.run(run(Batcher([broken, healthy], DeploymentSpec(max_batch_size=1),
                                      once, "t", budget=None)))
    assert any(isinstance(r, ModelFailed) for r in results) and once.retries == 0


def test_a_replaced_replica_serves_again() -> None:
    calls: list[str] = []

    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append("broken")
        raise RuntimeError("dead replica")

    def fresh(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append("fresh")
        return {"y": inputs["x"] * 2}

    batcher = Batcher([broken], DeploymentSpec(), BatchObserver(), "t", budget=RetryBudget(),
                      on_unhealthy=lambda slot: batcher.replace(slot, fresh))

    async def main() -> list[object]:
        out: list[object] = []
        for i in range(7):  # one at a time: five failures, then the replacement answers
            try:
                out.append(await batcher.submit(row(i), 1, 10.0))
            except ModelFailed as exc:
                out.append(exc)
        return out

    results = asyncio.run(main())
    batcher.close()
    assert [isinstance(r, ModelFailed) for r in results] == [True] * 5 + [False] * 2
    assert calls == ["broken"] * 5 + ["fresh"] * 2
