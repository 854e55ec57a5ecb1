"""Every readiness check, in the order the scorecard shows them."""

from __future__ import annotations

from modelyard.readiness.checks import (
    architecture,
    deployment,
    governance,
    interop,
    lifecycle,
    performance,
)
from modelyard.readiness.checks.base import (
    AREA_TITLES,
    AREAS,
    Check,
    CheckResult,
    Finding,
    Status,
    grade,
)
from modelyard.readiness.evidence import Evidence

CHECKS: tuple[Check, ...] = (*architecture.CHECKS, *deployment.CHECKS, *performance.CHECKS,
                             *governance.CHECKS, *interop.CHECKS, *lifecycle.CHECKS)


def _unique(checks: tuple[Check, ...]) -> tuple[Check, ...]:
    ids = [c.id for c in checks]
    twice = {i for i in ids if ids.count(i) > 1}
    if twice:
        raise ValueError(f"check ids used twice: {sorted(twice)}")
    return checks


_unique(CHECKS)


def run_checks(evidence: Evidence) -> list[CheckResult]:
    """Every yard check once, then every endpoint check for each endpoint."""
    results = [grade(c, c.yard(evidence), "yard") for c in CHECKS if c.yard is not None]
    for endpoint in evidence.endpoints:
        for check in CHECKS:
            if check.endpoint is not None:
                results.append(grade(check, check.endpoint(evidence, endpoint),
                                     f"endpoint:{endpoint.name}"))
    return results


__all__ = ["AREAS", "AREA_TITLES", "CHECKS", "Check", "CheckResult", "Finding", "Status",
           "run_checks"]
