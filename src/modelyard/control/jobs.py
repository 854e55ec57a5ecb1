"""The job service: enqueue, list, show, logs and cancel jobs, and keep cron schedules.

Every call is decided by the policy (``jobs:read``, ``jobs:write``, and the action a kind
names: ``jobs:run_code`` for ``call``) in the job's project; enqueues, cancellations and
schedule changes are written to the audit chain in the transaction that makes them.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from modelyard.domain.errors import Forbidden, ValidationFailed
from modelyard.domain.jobs import STATES, Job, LogLine, Schedule, check_kind, shown
from modelyard.domain.names import check_name
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.jobs import schedules
from modelyard.jobs.handlers import Handlers, builtin_handlers
from modelyard.jobs.queue import JobQueue
from modelyard.jobs.worker import jsonable
from modelyard.store import projects
from modelyard.store.db import Database
from modelyard.store.tables import DEFAULT_PROJECT, ApiKeyRow

MAX_PAYLOAD_BYTES = 256 * 1024


def principal_document(who: Principal) -> dict[str, Any]:
    return {"name": who.name, "roles": sorted(who.roles), "subject": who.subject}


def check_project(project: Any) -> str:
    if project is None:
        return DEFAULT_PROJECT
    if not isinstance(project, str) or not 0 < len(project) <= 128:
        raise ValidationFailed("project must be a project's name", field="project")
    return project


def readable_projects(who: Principal, action: str) -> set[str] | None:
    """Projects where ``who`` may ``action`` (``None``: all of them, a yard-wide grant)."""
    if who.may(action, None):
        return None
    return {scope for grant in who.roles if (scope := grant.partition("@")[2])
            and who.may(action, scope)}


class JobService:
    def __init__(self, db: Database, handlers: Handlers | None = None,
                 queue: JobQueue | None = None) -> None:
        self.db = db
        self.handlers = handlers if handlers is not None else builtin_handlers()
        self.queue = queue if queue is not None else JobQueue(db)
        # Called after an enqueue commits (the server's in-process worker looks at once).
        self.on_enqueue: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"JobService({self.db!r}, kinds={sorted(self.handlers.kinds())})"

    # -- jobs ------------------------------------------------------------------------------
    def enqueue(self, principal: Principal | None, kind: str,
                payload: dict[str, Any] | None = None, *, project: str | None = None,
                max_attempts: int | None = None, delay_s: float | None = None,
                backoff_s: float | None = None, dedupe_key: str | None = None) -> Job:
        """Queue a job of a kind this process knows. With ``dedupe_key``, enqueueing again
        returns the job already queued under that key."""
        project = check_project(project)
        who = guard(self.db, principal, "jobs:write", f"jobs:{kind}", project)
        spec = self.handlers.get(check_kind(kind))
        if spec.action != "jobs:write":
            guard(self.db, who, spec.action, f"jobs:{kind}", project)
        settled = self._payload(spec.check, payload)
        if dedupe_key is not None and (not isinstance(dedupe_key, str) or not
                                       0 < len(dedupe_key) <= 300
                                       or dedupe_key.startswith("schedule:")):
            raise ValidationFailed("dedupe_key must be 1-300 characters, not starting with "
                                   "'schedule:'", field="dedupe_key")
        try:
            with self.db.transaction() as session:
                projects.row(session, project)  # raises ProjectNotFound
                if dedupe_key is not None:
                    existing = self.queue.by_dedupe_key(session, dedupe_key)
                    if existing is not None:
                        return existing
                job = self.queue.enqueue(
                    session, kind, settled, principal=principal_document(who),
                    created_by=who.name, project=project,
                    max_attempts=3 if max_attempts is None else max_attempts,
                    backoff_s=10.0 if backoff_s is None else backoff_s,
                    delay_s=delay_s or 0.0, dedupe_key=dedupe_key)
                audit.append(session, who.name, "job.enqueue", f"job:{job.id}",
                             after={"kind": kind, "project": project,
                                    "payload": shown(settled),
                                    "max_attempts": job.max_attempts,
                                    "dedupe_key": dedupe_key})
        except IntegrityError:  # the same dedupe_key, enqueued concurrently
            with self.db.transaction() as session:
                found = self.queue.by_dedupe_key(session, dedupe_key or "")
            if found is None:
                raise
            return found
        if self.on_enqueue is not None:
            self.on_enqueue()
        return job

    @staticmethod
    def _payload(check: Callable[[dict[str, Any]], dict[str, Any]] | None,
                 payload: Any) -> dict[str, Any]:
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ValidationFailed("payload must be an object", field="payload")
        settled = jsonable(check(payload) if check is not None else payload, "payload")
        if len(str(settled)) > MAX_PAYLOAD_BYTES:
            raise ValidationFailed(f"payload is over {MAX_PAYLOAD_BYTES} bytes: store large "
                                   "inputs as artifacts and pass their digest",
                                   field="payload")
        return dict(settled)

    def list(self, principal: Principal | None, *, state: str | None = None,
             kind: str | None = None, project: str | None = None, before: int | None = None,
             limit: int = 100) -> list[Job]:
        """Newest first, ``limit`` at a time; ``before``: the smallest id of the last page."""
        who = guard(self.db, principal, "jobs:read", "jobs", project, anywhere=project is None)
        if state is not None and state not in STATES:
            raise ValidationFailed(f"state must be one of {', '.join(STATES)}", field="state")
        if not 1 <= limit <= 1000:
            raise ValidationFailed("limit must be 1-1000", field="limit")
        scope = {project} if project is not None else readable_projects(who, "jobs:read")
        with self.db.transaction() as session:
            return self.queue.list(session, state=state, kind=kind, projects=scope,
                                   before=before, limit=limit)

    def get(self, principal: Principal | None, job_id: int) -> Job:
        self._project_of(principal, job_id, "jobs:read")
        with self.db.transaction() as session:
            return self.queue.get(session, job_id)

    def logs(self, principal: Principal | None, job_id: int, after: int = 0,
             limit: int = 1000) -> builtins.list[LogLine]:
        """Log lines after id ``after`` (for following a running job), oldest first."""
        self._project_of(principal, job_id, "jobs:read")
        if not 1 <= limit <= 10_000:
            raise ValidationFailed("limit must be 1-10000", field="limit")
        with self.db.transaction() as session:
            return self.queue.logs(session, job_id, after, limit)

    def cancel(self, principal: Principal | None, job_id: int) -> Job:
        """A queued job is cancelled at once; a running one when its handler next looks
        (``ctx.check_cancelled``, within a third of the lease)."""
        who = self._project_of(principal, job_id, "jobs:write")
        with self.db.transaction() as session:
            before, after = self.queue.cancel(session, job_id)
            audit.append(session, who.name, "job.cancel", f"job:{job_id}",
                         before={"state": before.state}, after={"state": after.state,
                                                                "cancel_requested": True})
        return after

    def _project_of(self, principal: Principal | None, job_id: int, action: str
                    ) -> Principal:
        """Allowed somewhere first (so an unknown id answers 404 only to those who could act
        on one), then in the job's project."""
        guard(self.db, principal, action, f"job:{job_id}", anywhere=True)
        with self.db.transaction() as session:
            project = self.queue.row(session, job_id).project
        return guard(self.db, principal, action, f"job:{job_id}", project)

    def check_principal(self, stored: dict[str, Any]) -> None:
        """A job enqueued with an API key runs only while that key is valid: revoking a key
        also stops what it queued and scheduled."""
        kind, _, rest = str(stored.get("name", "")).partition(":")
        if kind != "key":
            return
        prefix = rest.rpartition(":")[2]
        with self.db.transaction() as session:
            key = session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)
                                  ).one_or_none()
        if key is None or key.revoked_at is not None:
            raise Forbidden(f"the key that enqueued this job ({prefix}) was revoked",
                            field="job")

    # -- schedules -----------------------------------------------------------------------
    def set_schedule(self, principal: Principal | None, name: str, *, cron: str, kind: str,
                     payload: dict[str, Any] | None = None, project: str | None = None,
                     enabled: bool = True, max_attempts: int = 3) -> Schedule:
        """Create or replace a cron schedule (UTC): each slot enqueues one ``kind`` job
        acting as the caller."""
        project = check_project(project)
        who = guard(self.db, principal, "jobs:write", f"schedule:{name}", project)
        check_name(name, "schedule name", "name")
        spec = self.handlers.get(check_kind(kind))
        if spec.action != "jobs:write":
            guard(self.db, who, spec.action, f"schedule:{name}", project)
        settled = self._payload(spec.check, payload)
        cron = schedules.check_cron(cron)
        if not 1 <= max_attempts <= 100:
            raise ValidationFailed("max_attempts must be 1-100", field="max_attempts")

        def put() -> Schedule:
            with self.db.transaction() as session:
                projects.row(session, project)  # raises ProjectNotFound
                existing = session.scalars(select(schedules.JobScheduleRow.project).where(
                    schedules.JobScheduleRow.name == name)).one_or_none()
                if existing is not None and existing != project:
                    guard(self.db, who, "jobs:write", f"schedule:{name}", existing)
                before, after = schedules.put(
                    session, name, cron=cron, kind=kind, project=project, payload=settled,
                    enabled=bool(enabled), max_attempts=max_attempts,
                    principal=principal_document(who), created_by=who.name,
                    now=self.queue.clock())
                audit.append(session, who.name, "schedule.put", f"schedule:{name}",
                             before=before.to_dict() if before else None,
                             after=after.to_dict())
            return after

        try:
            return put()
        except IntegrityError:
            # Created concurrently under the same name (a 500 on PostgreSQL): it exists now,
            # so "create or replace" replaces it, as it would have a moment later.
            return put()

    def list_schedules(self, principal: Principal | None) -> builtins.list[Schedule]:
        who = guard(self.db, principal, "jobs:read", "schedules", anywhere=True)
        with self.db.transaction() as session:
            return [s for s in schedules.all_schedules(session)
                    if who.may("jobs:read", s.project)]

    def delete_schedule(self, principal: Principal | None, name: str) -> None:
        guard(self.db, principal, "jobs:write", f"schedule:{name}", anywhere=True)
        with self.db.transaction() as session:
            project = schedules.row(session, name).project
        who = guard(self.db, principal, "jobs:write", f"schedule:{name}", project)
        with self.db.transaction() as session:
            found = schedules.row(session, name, lock=True)
            before = schedules.to_schedule(found)
            session.delete(found)
            audit.append(session, who.name, "schedule.delete", f"schedule:{name}",
                         before=before.to_dict())
