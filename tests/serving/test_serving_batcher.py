"""The batcher on its own: real threads and a real event loop, a model with a known cost.
No timing assertions: only what was computed, in which batches, and what was refused."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import DeadlineExceeded, ModelFailed, Overloaded
from modelyard.serving.batcher import Batcher, BatchObserver, stack


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.shed_levels: list[int] = []
        self.expired_count = 0

    def batch(self, size: int, waits_s: list[float], run_s: float) -> None:
        self.sizes.append(size)

    def shed(self, priority: int) -> None:
        self.shed_levels.append(priority)

    def expired(self) -> None:
        self.expired_count += 1


def doubling(seen: list[np.ndarray], seconds: float = 0.0,
             gate: threading.Event | None = None) -> Callable[..., dict[str, np.ndarray]]:
    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if gate is not None:
            gate.wait(5)
        if seconds:
            time.sleep(seconds)
        seen.append(inputs["x"].copy())
        return {"y": inputs["x"] * 2, "scalar": np.float32(7)}
    return run


def row(i: float, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((1, width), i, dtype=np.float32)}


def test_concurrent_requests_are_batched_and_answered_by_row() -> None:
    seen: list[np.ndarray] = []
    gate = threading.Event()
    observer = Recorder()
    batcher = Batcher([doubling(seen, gate=gate)], DeploymentSpec(max_batch_size=8),
                      observer, "t")

    async def main() -> list[dict[str, np.ndarray]]:
        first = asyncio.ensure_future(batcher.submit(row(-1), 1, 5.0))
        await asyncio.sleep(0.05)  # the first batch is running (held by the gate)
        rest = [asyncio.ensure_future(batcher.submit(row(i), 1, 5.0)) for i in range(20)]
        await asyncio.sleep(0.05)
        gate.set()
        await first
        return await asyncio.gather(*rest)

    results = asyncio.run(main())
    batcher.close()
    batcher.join()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 3), 2 * i))
        assert result["scalar"] == 7  # outputs without a batch axis are shared, not split
    assert observer.sizes[0] == 1
    assert max(observer.sizes) == 8 and sum(observer.sizes) == 21
    assert all(size <= 8 for size in observer.sizes)


def test_a_full_queue_refuses_at_once_and_high_priority_evicts_low() -> None:
    gate = threading.Event()
    observer = Recorder()
    batcher = Batcher([doubling([], gate=gate)],
                      DeploymentSpec(max_batch_size=1, max_queue_size=3), observer, "t")

    async def main() -> list[object]:
        running = asyncio.ensure_future(batcher.submit(row(0), 1, 5.0))
        await asyncio.sleep(0.05)
        low = [asyncio.ensure_future(batcher.submit(row(i), 1, 5.0, priority=0))
               for i in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await batcher.submit(row(9), 1, 5.0, priority=0)
        high = asyncio.ensure_future(batcher.submit(row(5), 1, 5.0, priority=2))
        await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(running, *low, high, return_exceptions=True)

    results = asyncio.run(main())
    batcher.close()
    batcher.join()
    kinds = [type(r).__name__ for r in results]
    assert kinds[0] == "dict" and kinds[-1] == "dict"  # the running one and the high one
    assert kinds[1:4].count("Overloaded") == 1  # the newest low one made room
    assert observer.shed_levels.count(0) == 2  # one refused, one evicted


def test_expired_requests_are_never_computed() -> None:
    seen: list[np.ndarray] = []
    gate = threading.Event()
    batcher = Batcher([doubling(seen, gate=gate)], DeploymentSpec(max_batch_size=1),
                      Recorder(), "t")

    async def main() -> list[object]:
        blocker = asyncio.ensure_future(batcher.submit(row(0), 1, 5.0))
        await asyncio.sleep(0.05)
        doomed = asyncio.ensure_future(batcher.submit(row(42), 1, 0.05))
        await asyncio.sleep(0.2)  # its deadline passes while it waits
        gate.set()
        return await asyncio.gather(blocker, doomed, return_exceptions=True)

    blocker, doomed = asyncio.run(main())
    batcher.close()
    batcher.join()
    assert isinstance(doomed, DeadlineExceeded)
    assert isinstance(blocker, dict)
    assert not any((x == 42).any() for x in seen)


def test_a_model_failure_reaches_every_request_in_the_batch() -> None:
    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ValueError("boom")

    batcher = Batcher([broken], DeploymentSpec(), Recorder(), "t")

    async def main() -> list[object]:
        return await asyncio.gather(*[batcher.submit(row(i), 1, 5.0) for i in range(3)],
                                    return_exceptions=True)

    results = asyncio.run(main())
    batcher.close()
    assert all(isinstance(r, ModelFailed) and "boom" in r.detail for r in results)


def test_requests_of_different_shapes_are_not_stacked_together() -> None:
    seen: list[np.ndarray] = []
    gate = threading.Event()
    batcher = Batcher([doubling(seen, gate=gate)], DeploymentSpec(max_batch_size=8),
                      Recorder(), "t")

    async def main() -> list[dict[str, np.ndarray]]:
        first = asyncio.ensure_future(batcher.submit(row(0), 1, 5.0))
        await asyncio.sleep(0.05)
        mixed = [asyncio.ensure_future(batcher.submit(row(i, width=3 + i % 2), 1, 5.0))
                 for i in range(4)]
        await asyncio.sleep(0.02)
        gate.set()
        await first
        return await asyncio.gather(*mixed)

    results = asyncio.run(main())
    batcher.close()
    for i, result in enumerate(results):
        assert result["y"].shape == (1, 3 + i % 2)
    assert all(len({x.shape[1]}) == 1 for x in seen)


def test_padding_lets_variable_length_sequences_share_a_batch() -> None:
    short = {"tokens": np.array([[1, 2]]), "mask": np.array([[1, 1]])}
    long = {"tokens": np.array([[3, 4, 5, 6]]), "mask": np.array([[1, 1, 1, 1]])}
    stacked = stack([short, long], {"tokens": 0, "mask": 0})
    np.testing.assert_array_equal(stacked["tokens"], [[1, 2, 0, 0], [3, 4, 5, 6]])
    np.testing.assert_array_equal(stacked["mask"], [[1, 1, 0, 0], [1, 1, 1, 1]])


def test_a_closed_batcher_finishes_its_queue_then_stops() -> None:
    seen: list[np.ndarray] = []
    batcher = Batcher([doubling(seen, seconds=0.01)], DeploymentSpec(max_batch_size=2),
                      Recorder(), "t")

    async def main() -> list[dict[str, np.ndarray]]:
        pending = [asyncio.ensure_future(batcher.submit(row(i), 1, 5.0)) for i in range(5)]
        await asyncio.sleep(0)
        batcher.close()
        with pytest.raises(Overloaded):
            await batcher.submit(row(99), 1, 5.0)
        return await asyncio.gather(*pending)

    results = asyncio.run(main())
    batcher.join()
    assert len(results) == 5
    assert not any(t.is_alive() for t in batcher._threads)


def test_admission_refuses_what_the_queue_could_not_serve_in_time() -> None:
    gate = threading.Event()
    batcher = Batcher([doubling([], seconds=0.05, gate=gate)],
                      DeploymentSpec(max_batch_size=1, max_queue_size=100), Recorder(), "t")

    async def main() -> list[object]:
        gate.set()
        await batcher.submit(row(0), 1, 5.0)  # teaches the batcher: ~50 ms per row
        gate.clear()
        held = asyncio.ensure_future(batcher.submit(row(1), 1, 5.0))
        await asyncio.sleep(0.02)
        queued = [asyncio.ensure_future(batcher.submit(row(i), 1, 5.0)) for i in range(4)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="deadline"):
            await batcher.submit(row(9), 1, 0.1)  # 4 queued x 50 ms > 100 ms
        gate.set()
        return await asyncio.gather(held, *queued)

    results = asyncio.run(main())
    batcher.close()
    assert len(results) == 5


def test_log_lines_cannot_be_forged() -> None:
    from modelyard.serving.problems import loggable

    assert loggable("/endpoints/x\nFAKE LOG LINE") == "/endpoints/x\\nFAKE LOG LINE"
    assert "\r" not in loggable("a\rb") and "\x1b" not in loggable("\x1b[31mred")
    assert loggable("plain /path") == "plain /path"
    assert len(loggable("x" * 10_000)) == 300
