"""Dynamic batching with admission control, deadlines and priorities, for one deployment.

Requests wait in a bounded queue per priority. One thread per replica takes the highest
priority first, stacks the inputs of several requests into one array per input, runs the
predictor once and splits the outputs back by rows; the answers go back to the event loop in
one hop per batch. The model threads never wait for the event loop, so a loop busy with
refusals under overload does not slow the batches down.

When to run a batch (the adaptive rule): at once when requests are not arriving concurrently
(no other batch running and the last batch held a single request), so an idle server adds no
delay; otherwise as soon as ``max_batch_size`` rows are queued, or ``max_queue_delay_ms`` has
passed since the oldest request arrived or a worker came free, or arrivals pause for a quarter
of that delay, whichever comes first. With
``preferred_batch_sizes`` a batch that is not yet a preferred size waits to grow into one.

Admission: a new request is refused at once (503, ``Retry-After``) when the queue is full or
when the queue ahead of it could not be served within its deadline at the measured rate
(admitting it would only waste work on an answer nobody waits for), unless it outranks a
queued request, which is then shed in its place. A request whose deadline passes while it
waits is answered 504 and never computed.

Replicas (``serving.replicas``): when a batch fails because the model raised, each of its
requests is queued again for another replica, if the deployment is idempotent, another
replica is in service and the retry budget allows it (retries add at most 20% to the recent
first attempts, plus a floor); otherwise it gets the error. A replica failing
``consecutive`` batches in a row is ejected (takes no batches for a while) and
``on_unhealthy`` is told, so the deployment can load a replacement.

Tracing (when the observer carries a tracer): each executed batch is one span, linked to the
spans of the requests it served (one batch answers many requests, each in its own trace) and
parented by the first of them, so it shows in that request's trace too. A batch none of whose
requests is sampled makes no span.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import DeadlineExceeded, ModelFailed, ModelyardError, Overloaded
from modelyard.serving.replicas import ReplicaHealth
from modelyard.serving.resilience import RetryBudget

Arrays = Mapping[str, np.ndarray]
Runner = Callable[[Arrays], dict[str, np.ndarray]]
PRIORITIES = {"low": 0, "normal": 1, "high": 2}


class Replaced(Overloaded):
    """The deployment was swapped for a newer one while the request was on its way."""


class BatchObserver:
    """Where the batcher reports what happened (Prometheus in the server; no-op here).
    Called from model threads as well as from the event loop. ``tracer``: spans per batch
    (and per graph node, for a graph's observer); None when tracing is off."""

    tracer: Tracer | None = None

    def queued(self, depth: int) -> None: ...

    def in_flight(self, delta: int) -> None:
        """A request was admitted (+1) or answered (-1)."""

    def node(self, name: str, code: str, seconds: float) -> None:
        """A graph node answered (``code``: ``ok`` or the error's code)."""

    def batch(self, size: int, waits_s: list[float], run_s: float) -> None: ...

    def shed(self, priority: int) -> None: ...

    def expired(self) -> None: ...

    def cache(self, hit: bool) -> None: ...

    def retried(self, count: int) -> None:
        """``count`` requests of a failed batch were queued again for another replica."""

    def retry_refused(self, count: int) -> None:
        """``count`` requests of a failed batch got the error: the retry budget was spent."""

    def ejected(self) -> None:
        """A replica failed too often in a row and was taken out of service."""

    def replaced(self, ok: bool) -> None:
        """A replacement predictor was loaded into an unhealthy replica's slot (or failed)."""


@dataclass(eq=False)
class _Pending:
    inputs: Arrays
    rows: int
    deadline: float  # time.monotonic()
    priority: int
    future: asyncio.Future[dict[str, np.ndarray]]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    shape_key: tuple[Any, ...]  # requests batch together only when these agree
    span: SpanContext | None = None  # the request's span, when sampled
    tried: tuple[int, ...] = ()  # replicas whose batch with this request failed


class Batcher:
    def __init__(self, runners: Sequence[Runner], config: DeploymentSpec,
                 observer: BatchObserver | None = None, name: str = "",
                 budget: RetryBudget | None = None, health: ReplicaHealth | None = None,
                 on_unhealthy: Callable[[int], None] | None = None) -> None:
        """``runners``: one predict function per replica (each thread uses its own).
        ``budget``: retry a failed batch's requests on another replica within it (None: the
        model is not idempotent, never retry). ``on_unhealthy(slot)``: a replica reached the
        failure threshold (ejected, or kept by the ejection cap); replace it."""
        self.runners = list(runners)
        self.budget = budget
        self.health = health or ReplicaHealth(len(self.runners))
        self.on_unhealthy = on_unhealthy
        self._retries: deque[_Pending] = deque()  # failed once; for another replica
        self.config = config
        self.observer = observer or BatchObserver()
        self.name = name
        self._tracer = self.observer.tracer
        self._queues: list[deque[_Pending]] = [deque() for _ in PRIORITIES]
        self._lock = threading.Condition()
        self._size = 0
        self._rows = 0  # rows waiting, all priorities
        self._running = 0
        self._last_batch = 0  # requests in the last batch run
        self._free_since = 0.0  # when a worker last finished a batch
        self._last_arrival = 0.0
        # Measured service: seconds per batch and rows per second per replica (EWMA).
        self._batch_s = 0.0
        self._rate = 0.0
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._preferred = sorted(set(config.preferred_batch_sizes))

    @property
    def depth(self) -> int:
        return self._size

    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._threads = [
                threading.Thread(target=self._work, args=(slot,), daemon=True,
                                 name=f"batcher-{self.name}-{slot}")
                for slot in range(len(self.runners))]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop taking requests; the threads finish what is queued, then exit."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def join(self, timeout_s: float = 10.0) -> None:
        for thread in self._threads:
            thread.join(timeout_s)

    def replace(self, slot: int, runner: Runner) -> None:
        """A fresh replica takes ``slot``: its thread runs ``runner`` from the next batch."""
        with self._lock:
            self.runners[slot] = runner
            self.health.restore(slot)
            self._lock.notify_all()

    # -- admission (event loop) ----------------------------------------------------------
    async def submit(self, inputs: Arrays, rows: int, timeout_s: float,
                     priority: int = 1) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        if not self._threads:
            self.start()
        now = time.monotonic()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        pending = _Pending(inputs, rows, now + timeout_s, priority, future, loop, now,
                           self._shape_key(inputs))
        if self._tracer is not None:
            context = get_current_span().get_span_context()
            if context.trace_flags.sampled:
                pending.span = context
        with self._lock:
            if self._closed:
                raise Replaced(f"{self.name} is being replaced; retry")
            refusal = self.refusal(rows, timeout_s)
            victim = self._evict_below(priority) if refusal is not None else None
            if refusal is not None and victim is None:
                self.observer.shed(priority)
                raise Overloaded(f"{self.name}: {refusal}")
            self._queues[priority].append(pending)
            self._size += 1
            self._rows += rows
            self._last_arrival = now
            self._lock.notify()
        if victim is not None:
            self.observer.shed(victim.priority)
            _settle(victim, Overloaded(f"{self.name}: shed for a higher-priority request"))
        self.observer.queued(self._size)
        self.observer.in_flight(1)
        timer = loop.call_later(timeout_s, self._expire, pending)
        try:
            return await future
        finally:
            timer.cancel()
            self.observer.in_flight(-1)

    def refusal(self, rows: int, timeout_s: float) -> str | None:
        """Why a request of ``rows`` would be refused now (before evictions), or None."""
        if self._size >= self.config.max_queue_size:
            return f"queue full ({self.config.max_queue_size} waiting)"
        if self._rate > 0 and self._rows:  # (an idle model gets its chance: 504 if too slow)
            replicas = max(1, len(self.runners))
            expected = (self._rows + rows) / (self._rate * replicas) + self._batch_s
            if expected > timeout_s:
                return (f"the queue ahead needs about {expected * 1000:.0f} ms, past the "
                        f"{timeout_s * 1000:.0f} ms deadline")
        return None

    def would_refuse(self, priority: int, timeout_s: float) -> bool:
        """A cheap check before decoding a request: refused even if it has one row?"""
        return self.refusal(1, timeout_s) is not None and not any(
            self._queues[level] for level in range(priority))

    def _shape_key(self, inputs: Arrays) -> tuple[Any, ...]:
        pad = self.config.pad
        return tuple((name, value.shape[2:] if name in pad else value.shape[1:])
                     for name, value in inputs.items())

    def _evict_below(self, priority: int) -> _Pending | None:
        """Under the lock: take the newest request of the lowest priority below ours."""
        for level in range(priority):
            queue = self._queues[level]
            if queue:
                victim = queue.pop()
                self._size -= 1
                self._rows -= victim.rows
                return victim
        return None

    def _expire(self, pending: _Pending) -> None:
        if not pending.future.done():
            self.observer.expired()
            pending.future.set_exception(DeadlineExceeded(
                f"{self.name}: no answer within the deadline"))

    # -- batching (model threads) --------------------------------------------------------
    def _queued_rows(self, limit: int) -> int:
        rows = 0
        for queue in self._queues:
            for pending in queue:
                rows += pending.rows
                if rows >= limit:
                    return rows
        return rows

    def _wait_s(self, now: float) -> float | None:
        """Under the lock: None to run now, else how long to wait for more requests."""
        if self._retries:  # they waited once already
            return None
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
        delay = self.config.max_queue_delay_ms / 1000
        oldest = min((q[0].enqueued for q in self._queues if q), default=now)
        # Stop waiting at the delay, or earlier once arrivals pause (a quarter of the delay
        # without a new request since the worker came free): no more are coming soon, and
        # waiting longer would only add latency.
        start = max(oldest, self._free_since)
        until = min(start + delay, max(self._last_arrival, self._free_since) + delay / 4)
        left = until - now
        return None if left <= 0 else left

    def _take(self, now: float, slot: int) -> tuple[list[_Pending], list[_Pending]]:
        """Under the lock: (batch, expired) for replica ``slot``: retries it has not failed
        first, then the highest priority, up to the limit."""
        batch: list[_Pending] = []
        expired: list[_Pending] = []
        rows = 0
        limit = self.config.max_batch_size
        for pending in list(self._retries) if self._retries else ():
            if slot in pending.tried:
                continue
            if batch and (rows + pending.rows > limit or pending.shape_key != batch[0].shape_key):
                break
            self._retries.remove(pending)
            self._size -= 1
            self._rows -= pending.rows
            if pending.future.done():
                continue
            if pending.deadline <= now:
                expired.append(pending)
                continue
            batch.append(pending)
            rows += pending.rows
            if rows >= limit:
                return batch, expired
        for queue in reversed(self._queues):
            while queue:
                pending = queue[0]
                if batch and (rows + pending.rows > limit
                              or pending.shape_key != batch[0].shape_key):
                    return batch, expired
                queue.popleft()
                self._size -= 1
                self._rows -= pending.rows
                if pending.future.done():  # answered already (deadline passed)
                    continue
                if pending.deadline <= now:
                    expired.append(pending)
                    continue
                batch.append(pending)
                rows += pending.rows
                if rows >= limit:
                    return batch, expired
        return batch, expired

    def _next_batch(self, slot: int) -> list[_Pending] | None:
        """Block until a batch is due for replica ``slot``; None once closed and drained."""
        with self._lock:
            while True:
                while self._size == 0:
                    if self._closed:
                        return None
                    self._lock.wait()
                now = time.monotonic()
                if not self.health.available(slot, now):  # ejected: back when it ends
                    if self._closed:  # the others drain the queue (one is never ejected)
                        return None
                    self._lock.wait(max(0.001, self.health.ejected_until(slot) - now))
                    continue
                wait = self._wait_s(now)
                if wait is not None and not self._closed:
                    self._lock.wait(wait)
                    continue
                batch, expired = self._take(now, slot)
                for pending in expired:
                    with contextlib.suppress(RuntimeError):  # loop closed: nobody waits
                        pending.loop.call_soon_threadsafe(self._expire, pending)
                if batch:
                    self._running += 1
                    self._last_batch = len(batch)
                    return batch
                if not expired:  # only retries this replica already failed: another's
                    self._lock.wait(0.05)

    def _work(self, slot: int) -> None:
        while (batch := self._next_batch(slot)) is not None:
            run = self.runners[slot]  # read per batch: a replacement may have taken the slot
            if self.budget is not None:
                first = sum(1 for p in batch if not p.tried)
                if first:
                    self.budget.record_attempt(first)
            try:
                if self._tracer is None:
                    self._execute(run, batch, slot)
                else:
                    self._execute_traced(self._tracer, run, batch, slot)
            finally:
                with self._lock:
                    self._running -= 1
                    self._free_since = time.monotonic()
                    if self._size:
                        self._lock.notify()
            self.observer.queued(self._size)

    def _execute_traced(self, tracer: Tracer, run: Runner, batch: list[_Pending],
                        slot: int) -> None:
        sampled = [p.span for p in batch if p.span is not None]
        if not sampled:
            self._execute(run, batch, slot)
            return
        oldest = min(p.enqueued for p in batch)
        attributes: dict[str, str | int | float] = {
            "modelyard.model.version": self.name, "modelyard.batch.requests": len(batch),
            "modelyard.batch.rows": sum(p.rows for p in batch),
            "modelyard.batch.queue_wait_ms": round((time.monotonic() - oldest) * 1000, 3)}
        span = tracer.start_span(
            f"batch {self.name}", context=set_span_in_context(NonRecordingSpan(sampled[0])),
            links=[Link(c) for c in sampled], attributes=attributes)
        try:
            error = self._execute(run, batch, slot)
            if error is not None:  # the code only: a model's message may quote the payload
                code = getattr(error, "code", type(error).__name__)
                span.set_attribute("error.type", code)
                span.set_status(Status(StatusCode.ERROR, code))
        finally:
            span.end()

    def _execute(self, run: Runner, batch: list[_Pending], slot: int) -> Exception | None:
        """Run one batch and hand out the answers; the model's failure, if it failed."""
        start = time.monotonic()
        waits = [start - p.enqueued for p in batch]
        try:
            inputs = batch[0].inputs if len(batch) == 1 else stack(
                [p.inputs for p in batch], self.config.pad)
            outputs = run(inputs)
        except Exception as exc:  # the model failed: retried elsewhere or told why
            error = exc if isinstance(exc, ModelyardError) else ModelFailed(
                f"{self.name} failed: {type(exc).__name__}: {exc}")
            failed = self._failed(slot, batch, error) if isinstance(error, ModelFailed) \
                else batch
            if failed:
                _deliver(failed, [error] * len(failed))
            return error
        took = time.monotonic() - start
        total = sum(p.rows for p in batch)
        with self._lock:
            self._learn(total, took)
            self.health.success(slot)
        self.observer.batch(total, waits, took)
        if len(batch) == 1:
            _deliver(batch, [outputs])
            return None
        results: list[dict[str, np.ndarray] | Exception] = []
        offset = 0
        for pending in batch:
            end = offset + pending.rows
            results.append({
                name: value[offset:end] if value.ndim and value.shape[0] == total else value
                for name, value in outputs.items()
            })
            offset = end
        _deliver(batch, results)
        return None

    def _failed(self, slot: int, batch: list[_Pending], error: Exception) -> list[_Pending]:
        """The model raised on replica ``slot``: count it against the replica, queue what may
        be retried on another replica, and return the requests that get the error."""
        retry: list[_Pending] = []
        failed: list[_Pending] = []
        refused = 0
        with self._lock:
            verdict = self.health.failure(slot)
            now = time.monotonic()
            for pending in batch:
                if self.budget is None or pending.future.done() or pending.deadline <= now \
                        or not self._another(slot, pending.tried, now):
                    failed.append(pending)
                elif self.budget.try_retry():
                    retry.append(pending)
                else:
                    refused += 1
                    failed.append(pending)
            for pending in retry:
                pending.tried = (*pending.tried, slot)
                self._retries.append(pending)
                self._size += 1
                self._rows += pending.rows
            if retry:
                self._lock.notify_all()
        if retry:
            self.observer.retried(len(retry))
        if refused:
            self.observer.retry_refused(refused)
        if verdict == "ejected":
            self.observer.ejected()
        if verdict != "ok" and self.on_unhealthy is not None:
            self.on_unhealthy(slot)
        return failed

    def _another(self, slot: int, tried: tuple[int, ...], now: float) -> bool:
        """Under the lock: is a replica other than ``slot`` (and those tried) in service?"""
        return any(other != slot and other not in tried and self.health.available(other, now)
                   for other in range(len(self.runners)))

    def _learn(self, rows: int, seconds: float) -> None:
        seconds = max(seconds, 1e-6)
        if self._rate == 0:
            self._batch_s, self._rate = seconds, rows / seconds
            return
        self._batch_s += 0.2 * (seconds - self._batch_s)
        self._rate += 0.2 * (rows / seconds - self._rate)


def _settle(pending: _Pending, result: dict[str, np.ndarray] | Exception) -> None:
    """On the event loop: answer a request unless it was answered (expired) already."""
    if pending.future.done():
        return
    if isinstance(result, Exception):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)


def _deliver(batch: list[_Pending], results: Sequence[dict[str, np.ndarray] | Exception]
             ) -> None:
    """From a model thread: hand a batch's answers to their event loop in one hop."""
    loop = batch[0].loop

    def settle_all() -> None:
        for pending, result in zip(batch, results, strict=True):
            _settle(pending, result)

    try:
        if all(p.loop is loop for p in batch):
            loop.call_soon_threadsafe(settle_all)
        else:  # requests from several loops (several servers in one process)
            for pending, result in zip(batch, results, strict=True):
                pending.loop.call_soon_threadsafe(_settle, pending, result)
    except RuntimeError:  # the loop closed (server stopped): nobody waits for the answer
        pass


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
