"""Jobs: background work (training, evaluation, drift computation, retraining) kept in the
store, leased by one worker at a time, retried with backoff and restart-safe.

The rules here are pure: the states a job moves through, the retry delay, what a job and a
schedule look like to callers, and the errors. The queue (``jobs/queue.py``) does the IO.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelyard.domain.errors import Conflict, ModelyardError, NotFound, ValidationFailed

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
LOG_LEVELS = ("debug", "info", "warning", "error")
# Payload fields never shown back (they stay in the store for the handler that needs them).
SECRET_FIELDS = frozenset({"key", "secret", "password", "token", "api_key"})

_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
# What work a job hands to the cluster may ask for (a Ray task's options on the ray backend).
RESOURCES = ("num_cpus", "num_gpus", "memory")


def check_resources(resources: Any, where: str = "payload.resources") -> dict[str, float]:
    """``num_cpus``, ``num_gpus``, ``memory`` (bytes), each a number from 0."""
    if resources is None:
        return {}
    if not isinstance(resources, Mapping):
        raise ValidationFailed("resources must map num_cpus, num_gpus or memory to numbers",
                               field=where)
    out = {}
    for key, value in resources.items():
        field_path = f"{where}.{key}"
        if key not in RESOURCES:
            raise ValidationFailed(f"unknown resource {key!r}; use {', '.join(RESOURCES)}",
                                   field=field_path)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or \
                value != value or value == float("inf"):
            raise ValidationFailed(f"{field_path} must be a number from 0", field=field_path)
        out[key] = float(value)
    return out


class JobNotFound(NotFound):
    code = "job_not_found"


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"


class JobFinished(Conflict):
    """The job already succeeded, failed or was cancelled: nothing left to cancel."""

    code = "job_finished"


class UnknownJobKind(ValidationFailed):
    code = "unknown_job_kind"


class LeaseLost(ModelyardError):
    """This worker no longer holds the job: its lease expired and another worker took it (or
    it was cancelled). Whatever the worker still does for it must not be recorded."""

    code, status, title = "lease_lost", 409, "Job lease lost"


class JobCancelled(ModelyardError):
    """Raised inside a handler (``JobContext.check_cancelled``) once cancellation is asked."""

    code, status, title = "job_cancelled", 409, "Job cancelled"


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValidationFailed("a job kind is 1-64 characters: lowercase letters, digits, "
                               "'_', '.', '-', starting with a letter", field="kind")
    return kind


def backoff_delay(attempt: int, base_s: float, cap_s: float, draw: float) -> float:
    """Seconds before retrying after failed attempt ``attempt`` (1-based): exponential
    (``base_s * 2**(attempt-1)``, at most ``cap_s``) with equal jitter (half of it fixed,
    half drawn from ``draw`` in [0, 1)), so jobs failing together do not retry together."""
    ceiling = min(cap_s, base_s * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + ceiling / 2 * min(max(draw, 0.0), 1.0)


def shown(payload: Any) -> Any:
    """A payload as callers see it: secret fields replaced."""
    if isinstance(payload, dict):
        return {k: "[removed]" if k in SECRET_FIELDS else shown(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [shown(v) for v in payload]
    return payload


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    project: str
    state: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    run_after: datetime
    created_by: str
    created_at: datetime
    cancel_requested: bool = False
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: str | None = None
    dedupe_key: str | None = None
    steps: tuple[str, ...] = field(default=())

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "project": self.project,
                "state": self.state, "payload": shown(self.payload),
                "attempt": self.attempt, "max_attempts": self.max_attempts,
                "run_after": _iso(self.run_after), "cancel_requested": self.cancel_requested,
                "lease_owner": self.lease_owner,
                "lease_expires_at": _iso(self.lease_expires_at),
                "heartbeat_at": _iso(self.heartbeat_at), "result": self.result,
                "error": self.error, "dedupe_key": self.dedupe_key,
                "created_by": self.created_by, "created_at": _iso(self.created_at),
                "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
                "steps": list(self.steps)}


@dataclass(frozen=True)
class LogLine:
    id: int
    attempt: int
    at: datetime
    level: str
    line: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "attempt": self.attempt, "at": self.at.isoformat(),
                "level": self.level, "line": self.line}


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    kind: str
    project: str
    payload: dict[str, Any]
    enabled: bool
    max_attempts: int
    next_run_at: datetime
    created_by: str
    last_enqueued_at: datetime | None = None
    last_job_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cron": self.cron, "kind": self.kind,
                "project": self.project, "payload": shown(self.payload),
                "enabled": self.enabled, "max_attempts": self.max_attempts,
                "next_run_at": _iso(self.next_run_at), "created_by": self.created_by,
                "last_enqueued_at": _iso(self.last_enqueued_at),
                "last_job_id": self.last_job_id}
