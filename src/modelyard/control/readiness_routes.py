"""Control-plane routes of the readiness scorecard (``/api/v1/readiness``) and of load-test
results (``/api/v1/endpoints/{name}/loadtests``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from modelyard.control.api import current_principal
from modelyard.governance.policy import Principal
from modelyard.serving.codecs import require_json
from modelyard.yard import Yard

Who = Annotated[Principal, Depends(current_principal)]


def add_readiness_routes(router: APIRouter, yard: Yard) -> None:
    readiness = yard.readiness_service

    def may_record(name: str, who: Who) -> Principal:
        return readiness.endpoint_guard(who, "endpoints:write", name)

    # Who may record is decided before the body is looked at: a refused caller learns nothing
    # about what the body should be.
    json_body = [Depends(may_record), Depends(require_json)]

    @router.get("/readiness", tags=["readiness"])
    def yard_readiness(who: Who) -> dict[str, Any]:
        """The scorecard of every endpoint the caller may read, and of the yard: per area
        (architecture, deployment, performance, governance, interoperability, lifecycle) a
        0-100 score, and every check with its status, points, evidence, fix and reference."""
        return readiness.scorecard(who).to_dict()

    @router.get("/readiness/{endpoint}", tags=["readiness"])
    def endpoint_readiness(endpoint: str, who: Who) -> dict[str, Any]:
        """The scorecard of one endpoint (and the yard-wide checks)."""
        return readiness.scorecard(who, endpoint).to_dict()

    @router.post("/endpoints/{name}/loadtests", status_code=201, tags=["readiness"],
                 dependencies=json_body)
    def record_loadtest(name: str, body: dict[str, Any], who: Who) -> dict[str, Any]:
        """Record a load test's result (``modelyard loadtest`` sends it): duration_s,
        concurrency, requests, errors, p50_ms, p99_ms, throughput (answered requests per
        second), target (the URL loaded), details. It counts for the endpoint's current
        generation."""
        return readiness.record_loadtest(who, name, body)

    @router.get("/endpoints/{name}/loadtests", tags=["readiness"])
    def list_loadtests(name: str, who: Who,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20
                       ) -> list[dict[str, Any]]:
        """Recorded load tests, newest first."""
        return readiness.loadtests(who, name, limit)
