"""Dynamic batching with admission control, deadlines and priorities, for one deployment.

Requests wait in a bounded queue per priority. A worker per replica takes the highest
priority first, stacks the inputs of several requests into one array per input, runs the
predictor once in the thread pool and splits the outputs back by rows.

When to run a batch (the adaptive rule): at once when requests are not arriving concurrently
(no other batch running and the last batch held a single request), so an idle server adds no
delay; otherwise as soon as ``max_batch_size`` rows are queued or ``max_queue_delay_ms`` has
passed since the oldest request arrived or a worker came free, whichever comes first. With
``preferred_batch_sizes`` a batch that is not yet a preferred size waits to grow into one.

Admission: when the queue is full a new request is refused at once (503, ``Retry-After``),
unless it outranks a queued request, which is then shed in its place. A request whose
deadline passes while it waits is answered 504 and never computed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import DeadlineExceeded, ModelFailed, ModelyardError, Overloaded

Arrays = Mapping[str, np.ndarray]
PRIORITIES = {"low": 0, "normal": 1, "high": 2}


class BatchObserver:
    """Where the batcher reports what happened (Prometheus in the server; no-op here)."""

    def queued(self, depth: int) -> None: ...

    def batch(self, size: int, waits_s: list[float], run_s: float) -> None: ...

    def shed(self, priority: int) -> None: ...

    def expired(self) -> None: ...

    def cache(self, hit: bool) -> None: ...


@dataclass(eq=False)
class _Pending:
    inputs: Arrays
    rows: int
    deadline: float  # loop.time()
    priority: int
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float
    shape_key: tuple[Any, ...]  # requests batch together only when these agree
    timer: asyncio.TimerHandle | None = None


class Batcher:
    def __init__(self, runners: Sequence[Callable[[Arrays], dict[str, np.ndarray]]],
                 config: DeploymentSpec, pool: Executor, observer: BatchObserver | None = None,
                 name: str = "") -> None:
        """``runners``: one predict function per replica (each worker uses its own)."""
        self.runners = list(runners)
        self.config = config
        self.pool = pool
        self.observer = observer or BatchObserver()
        self.name = name
        self._queues: list[deque[_Pending]] = [deque() for _ in PRIORITIES]
        self._size = 0
        self._running = 0
        self._wake: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._last_batch = 0  # requests in the last batch run
        self._free_since = 0.0  # when a worker last finished a batch
        self._preferred = sorted(set(config.preferred_batch_sizes))

    @property
    def depth(self) -> int:
        return self._size

    def start(self) -> None:
        if self._workers:
            return
        self._wake = asyncio.Event()
        self._workers = [asyncio.create_task(self._work(run), name=f"batcher-{self.name}-{i}")
                         for i, run in enumerate(self.runners)]

    def close(self) -> None:
        """Stop taking requests; workers finish what is queued, then exit."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        for queue in self._queues:
            while queue:
                self._fail(queue.popleft(), Overloaded("the deployment is shutting down"))

    # -- admission -----------------------------------------------------------------------
    async def submit(self, inputs: Arrays, rows: int, timeout_s: float,
                     priority: int = 1) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise Overloaded(f"{self.name} is being replaced; retry")
        if not self._workers:
            self.start()
        now = loop.time()
        if self._size >= self.config.max_queue_size and not self._evict_below(priority):
            self.observer.shed(priority)
            raise Overloaded(f"{self.name}: queue full ({self.config.max_queue_size} waiting)")
        pending = _Pending(inputs, rows, now + timeout_s, priority, loop.create_future(), now,
                           self._shape_key(inputs))
        pending.timer = loop.call_at(pending.deadline, self._expire, pending)
        self._queues[priority].append(pending)
        self._size += 1
        self.observer.queued(self._size)
        assert self._wake is not None
        self._wake.set()
        return await pending.future

    def _shape_key(self, inputs: Arrays) -> tuple[Any, ...]:
        pad = self.config.pad
        return tuple((name, value.shape[2:] if name in pad else value.shape[1:])
                     for name, value in inputs.items())

    def _evict_below(self, priority: int) -> bool:
        for level in range(priority):
            queue = self._queues[level]
            if queue:
                victim = queue.pop()  # the newest of the lowest priority goes first
                self._size -= 1
                self.observer.shed(level)
                self._fail(victim, Overloaded(f"{self.name}: shed for a higher-priority request"))
                return True
        return False

    def _expire(self, pending: _Pending) -> None:
        if not pending.future.done():
            self.observer.expired()
            pending.future.set_exception(DeadlineExceeded(
                f"{self.name}: no answer within the deadline"))

    @staticmethod
    def _fail(pending: _Pending, error: Exception) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        if not pending.future.done():
            pending.future.set_exception(error)

    # -- batching ------------------------------------------------------------------------
    def _queued_rows(self, limit: int) -> int:
        rows = 0
        for queue in self._queues:
            for pending in queue:
                rows += pending.rows
                if rows >= limit:
                    return rows
        return rows

    def _oldest(self) -> float:
        return min(q[0].enqueued for q in self._queues if q)

    def _ready_to_run(self, now: float) -> float | None:
        """None to run now, else how long to wait for more requests."""
        rows = self._queued_rows(self.config.max_batch_size)
        if rows >= self.config.max_batch_size:
            return None
        # Requests are arriving concurrently when another batch is running or the last one
        # held several requests; then a short wait fills the batch. Otherwise run at once.
        streaming = self._running > 0 or self._last_batch > 1
        if self._preferred:
            if rows in self._preferred and (not streaming or rows == self._preferred[-1]):
                return None
        elif not streaming:
            return None
        start = max(self._oldest(), self._free_since)
        left = start + self.config.max_queue_delay_ms / 1000 - now
        return None if left <= 0 else left

    def _take(self, now: float) -> list[_Pending]:
        """Highest priority first, skipping what expired or was answered, up to the limit."""
        batch: list[_Pending] = []
        rows = 0
        limit = self.config.max_batch_size
        for queue in reversed(self._queues):
            while queue:
                pending = queue[0]
                if pending.future.done():  # expired or cancelled while queued
                    queue.popleft()
                    self._size -= 1
                    continue
                if batch and (rows + pending.rows > limit
                              or pending.shape_key != batch[0].shape_key):
                    return batch
                queue.popleft()
                self._size -= 1
                if pending.deadline <= now:
                    self._expire(pending)
                    continue
                batch.append(pending)
                rows += pending.rows
                if rows >= limit:
                    return batch
        return batch

    async def _work(self, run: Callable[[Arrays], dict[str, np.ndarray]]) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        wake = self._wake
        while True:
            while self._size == 0:
                if self._closed:
                    return
                wake.clear()
                await wake.wait()
            wait = self._ready_to_run(loop.time())
            if wait is not None:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
                if self._ready_to_run(loop.time()) is not None:
                    continue
            batch = self._take(loop.time())
            self.observer.queued(self._size)
            if not batch:
                continue
            self._running += 1
            self._last_batch = len(batch)
            try:
                await self._execute(loop, run, batch)
            finally:
                self._running -= 1
                self._free_since = loop.time()
                if self._size:
                    wake.set()

    async def _execute(self, loop: asyncio.AbstractEventLoop,
                       run: Callable[[Arrays], dict[str, np.ndarray]],
                       batch: list[_Pending]) -> None:
        start = loop.time()
        waits = [start - p.enqueued for p in batch]
        try:
            inputs = batch[0].inputs if len(batch) == 1 else stack(
                [p.inputs for p in batch], self.config.pad)
            outputs = await loop.run_in_executor(self.pool, run, inputs)
        except Exception as exc:  # the model failed: every request in the batch learns why
            error = exc if isinstance(exc, ModelyardError) else ModelFailed(
                f"{self.name} failed: {type(exc).__name__}: {exc}")
            for pending in batch:
                self._fail(pending, error)
            return
        total = sum(p.rows for p in batch)
        self.observer.batch(total, waits, loop.time() - start)
        if len(batch) == 1:
            self._resolve(batch[0], outputs)
            return
        offset = 0
        for pending in batch:
            end = offset + pending.rows
            self._resolve(pending, {
                name: value[offset:end] if value.ndim and value.shape[0] == total else value
                for name, value in outputs.items()
            })
            offset = end

    @staticmethod
    def _resolve(pending: _Pending, outputs: dict[str, np.ndarray]) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        if not pending.future.done():
            pending.future.set_result(outputs)


def stack(requests: list[Arrays], pad: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Concatenate each input along the batch axis; inputs named in ``pad`` are padded on
    axis 1 to the longest request first (variable-length token sequences)."""
    out: dict[str, np.ndarray] = {}
    for name in requests[0]:
        parts = [r[name] for r in requests]
        if name in pad and parts[0].ndim >= 2:
            width = max(p.shape[1] for p in parts)
            parts = [p if p.shape[1] == width else np.pad(
                p, [(0, 0), (0, width - p.shape[1])] + [(0, 0)] * (p.ndim - 2),
                constant_values=pad[name]) for p in parts]
        out[name] = np.concatenate(parts, axis=0)
    return out


def rows_of(inputs: Arrays) -> int:
    """Rows in a request: the first dimension of its inputs (1 for scalars)."""
    for value in inputs.values():
        return int(value.shape[0]) if value.ndim else 1
    return 1
