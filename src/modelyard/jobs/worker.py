"""Workers: threads that claim jobs, run their handlers and record the outcome.

While a handler runs, a heartbeat thread extends the job's lease (every third of it) and
notices cancellation. A worker that dies stops heartbeating; once its lease runs out the next
worker takes the job over as a new attempt. Handlers make that safe with ``ctx.step``: a step's
result is stored under its key, and a later attempt gets the stored result instead of running
the step again, so a training job that registered its version in a step registers it once.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.orm import Session

from modelyard.domain.errors import ModelyardError, ValidationFailed
from modelyard.domain.jobs import Job, JobCancelled, LeaseLost, check_resources
from modelyard.governance.policy import Principal
from modelyard.governance.redaction import redact_text
from modelyard.jobs.handlers import Handlers
from modelyard.jobs.queue import JobQueue
from modelyard.jobs.schedules import Scheduler

if TYPE_CHECKING:
    from modelyard.yard import Yard

log = logging.getLogger("modelyard.jobs")

_SECRETS = (
    (re.compile(r"\bmy_[0-9a-f]{12}\.[\w-]+"), "[KEY]"),  # Modelyard API keys
    (re.compile(r"(?i)\b(bearer)\s+[\w.~+/=-]+"), r"\1 [removed]"),
    (re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)\S+"),
     r"\1\2[removed]"),
)


def clean_line(text: str) -> str:
    """A log line as stored: API keys, bearer tokens and ``password=...`` pairs removed, PII
    redacted (governance/redaction.py)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return redact_text(text)


def jsonable(value: Any, what: str = "result") -> Any:
    """``value`` as JSON stores it (numpy scalars and arrays become numbers and lists)."""
    try:
        return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY
                                         | orjson.OPT_NON_STR_KEYS))
    except TypeError as exc:
        raise ValidationFailed(f"a job's {what} must be JSON: {exc}", field=what) from exc


# Runs ``fn(*args)`` elsewhere with these resources ({num_cpus, num_gpus, memory}) and
# returns its result: a Ray task when the server runs the ray backend (backends/ray.py). While
# it waits it calls the last argument now and then, which raises once the job was cancelled
# or its lease lost; the offloader then cancels the work and lets the error through.
Offload = Callable[[Callable[..., Any], tuple[Any, ...], Mapping[str, float],
                    Callable[[], None]], Any]


class JobContext:
    """What a handler gets besides its payload."""

    def __init__(self, job: Job, queue: JobQueue, owner: str, yard: Yard | None,
                 lease_s: float = 30.0, offload: Offload | None = None) -> None:
        self.job = job
        self.offloader = offload
        self.queue = queue
        self.owner = owner
        self.lease_s = lease_s
        # The yard acting as the principal that enqueued the job (its grants at the time).
        self.yard = yard
        self._cancel = threading.Event()
        self._lost = threading.Event()

    def __repr__(self) -> str:
        return f"JobContext(job={self.job.id}, kind={self.job.kind!r}, " \
               f"attempt={self.job.attempt})"

    @property
    def id(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    def log(self, message: str, *, level: str = "info") -> None:
        """Add a line to the job's logs (redacted before it is stored)."""
        try:
            self.queue.log(self.job.id, self.job.attempt, level, clean_line(str(message)))
        except Exception:  # a log line must never fail the job
            log.warning("job %s: could not store a log line", self.job.id, exc_info=True)

    def heartbeat(self) -> bool:
        """Extend the lease now (a background thread also does); whether cancellation was
        asked. Raises ``LeaseLost`` when another worker took the job over."""
        try:
            cancel = self.queue.heartbeat(self.job.id, self.owner, self.job.attempt,
                                          self.lease_s)
        except LeaseLost:
            self._lost.set()
            raise
        if cancel:
            self._cancel.set()
        return cancel

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was asked (seen at the last heartbeat)."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise ``JobCancelled`` once cancellation was asked (and ``LeaseLost`` once the job
        is no longer this worker's): call it between units of work."""
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job.id} was taken over by another worker")
        if self._cancel.is_set():
            raise JobCancelled(f"job {self.job.id} was cancelled")

    def step(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once for this job: if an attempt already finished step ``key``, return
        its stored result without running ``fn``; otherwise run it and store the result
        (while this worker still holds the lease). The result must be JSON."""
        self.check_cancelled()
        done, value = self.queue.step(self.job.id, key)
        if done:
            self.log(f"step {key}: done by an earlier attempt")
            return value
        value = jsonable(fn())
        with self.queue.db.transaction() as session:
            self.queue.save_step(session, self.job.id, self.owner, self.job.attempt, key,
                                 value)
        self.log(f"step {key}: done")
        return value

    def offload(self, key: str, fn: Callable[..., Any], *args: Any,
                resources: Mapping[str, float] | None = None) -> Any:
        """A ``step`` whose work runs where the worker offloads heavy work: as a Ray task
        with ``resources`` (default: the payload's ``resources``) when the server runs the
        ray backend, else here. ``fn`` and ``args`` must pickle; the result must be JSON.
        Memoized like any step: a later attempt gets the stored result, no second task."""
        if self.offloader is not None:
            self.log(f"step {key}: offloaded")
        return self.step(key, lambda: self.elsewhere(fn, *args, resources=resources))

    def elsewhere(self, fn: Callable[..., Any], *args: Any,
                  resources: Mapping[str, float] | None = None) -> Any:
        """Run ``fn(*args)`` where the worker offloads heavy work (a Ray task with
        ``resources`` on the ray backend, else here) and return its result, which need not be
        JSON (a trained model): no memo, so a retry runs it again; for work whose caller is
        idempotent. Cancelling the job (or losing its lease) cancels the Ray task."""
        wanted = check_resources(self.job.payload.get("resources") if resources is None
                                 else resources)
        if self.offloader is None:
            return fn(*args)
        self.log(f"running {getattr(fn, '__name__', fn)} as a Ray task with "
                 f"{wanted or 'default resources'}")
        return self.offloader(fn, args, wanted, self.check_cancelled)

    def transaction_step(self, key: str, fn: Callable[[Session], Any]) -> Any:
        """Like ``step``, for effects in the metadata store: ``fn(session)`` runs in the same
        transaction that records the step (and checks the lease first), so its writes and
        the memo commit together or not at all: exactly once, not just in effect."""
        self.check_cancelled()
        done, value = self.queue.step(self.job.id, key)
        if done:
            self.log(f"step {key}: done by an earlier attempt")
            return value
        with self.queue.db.transaction() as session:
            self.queue.hold(session, self.job.id, self.owner, self.job.attempt)
            value = jsonable(fn(session))
            self.queue.save_step(session, self.job.id, self.owner, self.job.attempt, key,
                                 value)
        self.log(f"step {key}: done")
        return value


def principal_of(job: Job, stored: dict[str, Any]) -> Principal:
    """Who the job acts as: the name, grants (at enqueue time) and subject that enqueued it
    (the name unchanged, so key checks and four-eyes comparisons see the same caller)."""
    return Principal(str(stored.get("name") or job.created_by),
                     frozenset(stored.get("roles") or ()), str(stored.get("subject") or ""))


class _LogCapture(logging.Handler):
    """Warnings and errors that Python logging sees from a handler's thread go to its job."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.contexts: dict[int, JobContext] = {}
        self._inside = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        ctx = self.contexts.get(record.thread or 0)
        if ctx is None or record.name.startswith(("sqlalchemy", "modelyard.jobs")) or \
                getattr(self._inside, "busy", False):
            return
        self._inside.busy = True
        try:
            ctx.log(f"{record.name}: {record.getMessage()}", level=record.levelname.lower())
        finally:
            self._inside.busy = False


_CAPTURE: list[_LogCapture] = []
_CAPTURE_LOCK = threading.Lock()


def _capture() -> _LogCapture:
    """The one capturing handler on the root logger, shared by every worker in the process
    (it routes each record by the thread that logged it)."""
    with _CAPTURE_LOCK:
        if not _CAPTURE:
            _CAPTURE.append(_LogCapture())
            logging.getLogger().addHandler(_CAPTURE[0])
        return _CAPTURE[0]


class Worker:
    """``concurrency`` threads claiming jobs of the kinds ``handlers`` knows, and (with
    ``schedules``) enqueueing due cron slots. ``start`` / ``stop``, or ``run_once`` to run
    one job on the calling thread."""

    def __init__(self, yard: Yard, handlers: Handlers | None = None, *,
                 queue: JobQueue | None = None, name: str | None = None,
                 concurrency: int = 1, lease_s: float | None = None,
                 poll_s: float | None = None, schedules: bool = True,
                 on_event: Callable[[str, Job], None] | None = None,
                 offload: Offload | None = None) -> None:
        if concurrency < 1:
            raise ValidationFailed("concurrency must be at least 1", field="concurrency")
        self.yard = yard
        self.handlers = handlers if handlers is not None else yard.jobs.handlers
        self.queue = queue if queue is not None else yard.jobs.queue
        self.name = (name or f"{socket.gethostname()}:{os.getpid()}")[:100]
        self.concurrency = concurrency
        self.lease_s = float(lease_s if lease_s is not None else yard.settings.job_lease_s)
        self.poll_s = float(poll_s if poll_s is not None else yard.settings.job_poll_s)
        self.scheduler = Scheduler(self.queue) if schedules else None
        self.on_event = on_event
        self.offload = offload  # where ctx.offload runs work (None: on the worker thread)
        self.running: dict[int, Job] = {}  # job id -> job, while its handler runs
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tick_lock = threading.Lock()
        self._last_tick = 0.0
        self._capture = _capture()

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, concurrency={self.concurrency})"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Worker:
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._loop, args=(f"{self.name}:{i}",),
                                      name=f"modelyard-job-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def wake(self) -> None:
        """Look for work now (a job was just enqueued in this process)."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop claiming; wait up to ``timeout_s`` for running handlers. Whether every thread
        ended (a job still running is taken over by another worker once its lease expires)."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self, owner: str) -> None:
        while not self._stop.is_set():
            ran = False
            try:
                self.tick_schedules()
                ran = self.run_once(owner)
            except Exception:  # keep working: a database blip must not end the worker
                log.exception("job worker %s: claiming failed", owner)
            if not ran:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def tick_schedules(self) -> list[Job]:
        """Enqueue due cron slots, at most once per poll interval in this process."""
        if self.scheduler is None:
            return []
        with self._tick_lock:
            if time.monotonic() - self._last_tick < self.poll_s:
                return []
            self._last_tick = time.monotonic()
        enqueued = self.scheduler.tick()
        for job in enqueued:
            self._event("scheduled", job)
        return enqueued

    # -- running one job -----------------------------------------------------------------------
    def run_once(self, owner: str | None = None) -> bool:
        """Claim one due job and run it to its outcome here; whether there was one."""
        owner = owner or f"{self.name}:main"
        claimed = self.queue.claim(owner, self.lease_s, self.handlers.kinds())
        if claimed is None:
            return False
        job, stored = claimed
        self._run(job, stored, owner)
        return True

    def _run(self, job: Job, stored: dict[str, Any], owner: str) -> None:
        acting = copy.copy(self.yard)
        acting.principal = principal_of(job, stored)
        ctx = JobContext(job, self.queue, owner, acting, self.lease_s, self.offload)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeats, args=(ctx, done), daemon=True,
                                name=f"modelyard-job-{job.id}-heartbeat")
        self.running[job.id] = job
        self._capture.contexts[threading.get_ident()] = ctx
        self._event("started", job)
        beat.start()
        try:
            ctx.log(f"attempt {job.attempt} of {job.max_attempts} started by {owner}")
            self.yard.jobs.check_principal(stored)
            result = jsonable(self.handlers.get(job.kind).handler(ctx, dict(job.payload)))
            ctx.log("succeeded")
            self.queue.complete(job.id, owner, job.attempt, result)
            self._event("succeeded", job)
        except JobCancelled:
            ctx.log("cancelled", level="warning")
            self._record(lambda: self.queue.finish_cancelled(job.id, owner, job.attempt))
            self._event("cancelled", job)
        except LeaseLost as exc:
            log.warning("job %s attempt %s: %s", job.id, job.attempt, exc.detail)
            self._event("lost", job)
        except Exception as exc:
            ctx.log(clean_line("".join(traceback.format_exception(exc)).rstrip()),
                    level="error")
            if ctx.cancelled:
                self._record(lambda: self.queue.finish_cancelled(job.id, owner, job.attempt))
                self._event("cancelled", job)
            else:
                # Errors of the caller's making (a 4xx) would fail the same way again.
                retry = not (isinstance(exc, ModelyardError) and exc.status < 500)
                message = f"{type(exc).__name__}: {exc}"
                self._record(lambda: self.queue.fail(job.id, owner, job.attempt,
                                                     clean_line(message), retry=retry))
                self._event("failed", job)
        finally:
            done.set()
            beat.join()
            self._capture.contexts.pop(threading.get_ident(), None)
            self.running.pop(job.id, None)

    @staticmethod
    def _record(write: Callable[[], Any]) -> None:
        try:
            write()
        except LeaseLost as exc:
            log.warning("%s", exc.detail)

    def _heartbeats(self, ctx: JobContext, done: threading.Event) -> None:
        while not done.wait(self.lease_s / 3):
            try:
                ctx.heartbeat()
            except LeaseLost:
                log.warning("job %s attempt %s: lease lost", ctx.id, ctx.attempt)
                return
            except Exception:  # the next beat may get through; the lease has slack
                log.warning("job %s: heartbeat failed", ctx.id, exc_info=True)

    def _event(self, what: str, job: Job) -> None:
        if self.on_event is not None:
            try:
                self.on_event(what, job)
            except Exception:
                log.exception("job event callback failed")
