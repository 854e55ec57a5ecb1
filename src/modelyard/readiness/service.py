"""The scorecard and load-test results as the control plane offers them: every call is
decided by the policy function in the endpoint's project, and recorded load tests are
written to the audit chain with the change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from modelyard.domain.errors import EndpointNotFound, ValidationFailed
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.readiness.gather import Gatherer
from modelyard.readiness.loadtest import LoadTestResult
from modelyard.readiness.scorecard import Scorecard, build
from modelyard.settings import Settings
from modelyard.store import endpoints as endpoints_repo
from modelyard.store import loadtests
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.db import Database
from modelyard.store.tables import EndpointRow

MAX_LIST = 100


class ReadinessService:
    def __init__(self, db: Database, artifacts: ArtifactStore, settings: Settings) -> None:
        self.db = db
        self.artifacts = artifacts
        self.settings = settings

    def endpoint_guard(self, principal: Principal | None, action: str, name: str
                        ) -> Principal:
        """Decided in the endpoint's project; an unknown name is told only to someone who
        holds the right somewhere (no probing of names)."""
        with self.db.transaction() as session:
            project = session.scalars(select(EndpointRow.project)
                                      .where(EndpointRow.name == name)).first()
        who = guard(self.db, principal, action, f"endpoint:{name}", project,
                    anywhere=project is None)
        if project is None:
            raise EndpointNotFound(f"endpoint {name!r} does not exist", field="endpoint")
        return who

    def scorecard(self, principal: Principal | None, endpoint: str | None = None, *,
                  now: datetime | None = None) -> Scorecard:
        """Grade one endpoint (and the yard around it), or every endpoint the caller may
        read."""
        if endpoint is not None:
            who = self.endpoint_guard(principal, "readiness:read", endpoint)
            with self.db.transaction() as session:
                chosen = [endpoints_repo.to_endpoint(endpoints_repo.row(session, endpoint))]
        else:
            who = guard(self.db, principal, "readiness:read", "readiness", anywhere=True)
            with self.db.transaction() as session:
                chosen = [e for e in endpoints_repo.all_endpoints(session)
                          if who.may("readiness:read", e.project)]
        # Key prefixes are for those who may list keys; others see the findings by number.
        evidence = Gatherer(self.db, self.artifacts, self.settings).evidence(
            chosen, endpoint, now or datetime.now(UTC), reveal_keys=who.may("keys:read"))
        return build(evidence)

    def record_loadtest(self, principal: Principal | None, endpoint: str,
                        result: LoadTestResult | dict[str, Any]) -> dict[str, Any]:
        """Store a load test's result against the endpoint's current generation."""
        who = self.endpoint_guard(principal, "endpoints:write", endpoint)
        if not isinstance(result, LoadTestResult):
            result = LoadTestResult.from_dict(result)
        with self.db.transaction() as session:
            row = endpoints_repo.row(session, endpoint)
            stored = loadtests.add(session, endpoint, row.generation, result.to_dict(),
                                   who.name)
            summary = loadtests.to_dict(stored)
            audit.append(session, who.name, "loadtest.record", f"endpoint:{endpoint}",
                         after={k: summary[k] for k in ("id", "generation", "requests",
                                                        "errors", "p99_ms", "throughput")})
        return summary

    def loadtests(self, principal: Principal | None, endpoint: str, limit: int = 20
                  ) -> list[dict[str, Any]]:
        """Newest first."""
        if not 1 <= limit <= MAX_LIST:
            raise ValidationFailed(f"limit must be from 1 to {MAX_LIST}", field="limit")
        self.endpoint_guard(principal, "endpoints:read", endpoint)
        with self.db.transaction() as session:
            return [loadtests.to_dict(r) for r in loadtests.recent(session, endpoint, limit)]
