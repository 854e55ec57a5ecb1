"""Control-plane routes for jobs and schedules (``/api/v1/jobs``, ``/api/v1/schedules``).

Bodies are taken as JSON objects and checked by the service after the policy has decided,
so a caller without the right learns nothing from validation messages.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam

from modelyard.control.api import API, current_principal
from modelyard.domain.errors import ValidationFailed, reject_unknown
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.serving.codecs import require_json
from modelyard.yard import Yard

Who = Annotated[Principal, Depends(current_principal)]
JobId = Annotated[int, PathParam(ge=1, le=2**62, description="the job's id")]

ENQUEUE_FIELDS = {"kind", "payload", "project", "max_attempts", "delay_s", "backoff_s",
                  "dedupe_key"}
SCHEDULE_FIELDS = {"cron", "kind", "payload", "project", "enabled", "max_attempts"}


def _number(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            (kind is int and not isinstance(value, int)):
        raise ValidationFailed(f"{name} must be a {'whole ' if kind is int else ''}number",
                               field=name)
    return value


def add_job_routes(router: APIRouter, yard: Yard) -> None:
    jobs = yard.jobs
    json_body = [Depends(require_json)]

    @router.get("/jobs", tags=["jobs"])
    def list_jobs(who: Who, state: str | None = None, kind: str | None = None,
                  project: str | None = None,
                  before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Newest first; the next page: ``before`` = the smallest id of this one."""
        return [j.to_dict() for j in jobs.list(who, state=state, kind=kind, project=project,
                                               before=before, limit=limit)]

    @router.post("/jobs", status_code=201, tags=["jobs"], dependencies=json_body)
    def enqueue_job(body: dict[str, Any], who: Who, response: Response) -> dict[str, Any]:
        """Queue a job: ``{"kind": "call", "payload": {"function": "pkg.mod:fn", "args":
        {...}, "trusted": true}, "project": "default", "max_attempts": 3, "delay_s": 0,
        "backoff_s": 10, "dedupe_key": null}``. Kinds are those the server knows."""
        guard(yard.db, who, "jobs:write", "jobs", anywhere=True)  # before any validation
        body = reject_unknown(body, ENQUEUE_FIELDS, "field", "body")
        kind = body.get("kind")
        if not isinstance(kind, str):
            raise ValidationFailed("kind is required (a job kind the server knows)",
                                   field="kind")
        project = body.get("project")
        if project is not None and not isinstance(project, str):
            raise ValidationFailed("project must be a name", field="project")
        dedupe_key = body.get("dedupe_key")
        job = jobs.enqueue(who, kind, body.get("payload"), project=project,
                           max_attempts=_number(body, "max_attempts", int),
                           delay_s=_number(body, "delay_s", float),
                           backoff_s=_number(body, "backoff_s", float),
                           dedupe_key=dedupe_key if dedupe_key is None else str(dedupe_key))
        response.headers["Location"] = f"{API}/jobs/{job.id}"
        return job.to_dict()

    @router.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: JobId, who: Who) -> dict[str, Any]:
        return jobs.get(who, job_id).to_dict()

    @router.get("/jobs/{job_id}/logs", tags=["jobs"])
    def job_logs(job_id: JobId, who: Who,
                 after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
                 ) -> list[dict[str, Any]]:
        """Log lines with an id over ``after`` (follow a running job by passing the last id
        seen), oldest first."""
        return [line.to_dict() for line in jobs.logs(who, job_id, after, limit)]

    @router.post("/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: JobId, who: Who) -> dict[str, Any]:
        """A queued job is cancelled at once; a running one is asked to stop
        (``cancel_requested``) and ends as cancelled when its handler next looks."""
        return jobs.cancel(who, job_id).to_dict()

    @router.get("/schedules", tags=["jobs"])
    def list_schedules(who: Who) -> list[dict[str, Any]]:
        return [s.to_dict() for s in jobs.list_schedules(who)]

    @router.put("/schedules/{name}", tags=["jobs"], dependencies=json_body)
    def set_schedule(name: str, body: dict[str, Any], who: Who) -> dict[str, Any]:
        """Create or replace a cron schedule: ``{"cron": "0 3 * * *", "kind": "call",
        "payload": {...}, "project": "default", "enabled": true, "max_attempts": 3}``
        (cron in UTC; each slot enqueues one job acting as the caller)."""
        guard(yard.db, who, "jobs:write", f"schedule:{name}", anywhere=True)
        body = reject_unknown(body, SCHEDULE_FIELDS, "field", "body")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValidationFailed("enabled must be true or false", field="enabled")
        max_attempts = _number(body, "max_attempts", int)
        return jobs.set_schedule(who, name, cron=body.get("cron"),  # type: ignore[arg-type]
                                 kind=str(body.get("kind") or ""),
                                 payload=body.get("payload"), project=body.get("project"),
                                 enabled=enabled,
                                 max_attempts=3 if max_attempts is None else max_attempts
                                 ).to_dict()

    @router.delete("/schedules/{name}", status_code=204, tags=["jobs"])
    def delete_schedule(name: str, who: Who) -> Response:
        jobs.delete_schedule(who, name)
        return Response(status_code=204)
