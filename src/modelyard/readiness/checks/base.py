"""What a check is and what it finds.

A check grades one thing (the yard, or one endpoint) and returns a ``Finding``: a status,
the evidence it saw, and the fix when it is not a pass. Points are fixed by the status, so a
score can always be explained: pass earns all of a check's points, warn half, fail none, and
n/a (nothing to grade, e.g. no traffic yet) is left out of the denominator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from modelyard.readiness.evidence import EndpointFacts, Evidence

Status = Literal["pass", "warn", "fail", "na"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "na")
Area = Literal["architecture", "deployment", "performance", "governance", "interoperability",
               "lifecycle"]
AREAS: tuple[Area, ...] = ("architecture", "deployment", "performance", "governance",
                           "interoperability", "lifecycle")
AREA_TITLES: dict[str, str] = {
    "architecture": "Architecture",
    "deployment": "Deployment & scale",
    "performance": "Performance & reliability",
    "governance": "Governance & security",
    "interoperability": "Interoperability",
    "lifecycle": "Lifecycle",
}
SHARE: dict[str, float] = {"pass": 1.0, "warn": 0.5, "fail": 0.0, "na": 0.0}


@dataclass(frozen=True)
class Finding:
    status: Status
    evidence: str
    fix: str | None = None  # None: the check's own fix (ignored on a pass)


def passed(evidence: str) -> Finding:
    return Finding("pass", evidence)


def warned(evidence: str, fix: str | None = None) -> Finding:
    return Finding("warn", evidence, fix)


def failed(evidence: str, fix: str | None = None) -> Finding:
    return Finding("fail", evidence, fix)


def not_applicable(evidence: str, fix: str | None = None) -> Finding:
    return Finding("na", evidence, fix)


YardRun = Callable[[Evidence], Finding]
EndpointRun = Callable[[Evidence, EndpointFacts], Finding]


@dataclass(frozen=True)
class Check:
    id: str
    area: Area
    title: str
    max_points: int
    reference: str  # the published rubric item it stands for
    fix: str  # what to do when it does not pass (a finding may say more precisely)
    evidence: str  # what it looks at (for docs/readiness.md)
    yard: YardRun | None = None  # graded once for the yard
    endpoint: EndpointRun | None = None  # graded per endpoint

    def __post_init__(self) -> None:
        if (self.yard is None) == (self.endpoint is None):
            raise ValueError(f"check {self.id} grades either the yard or an endpoint")
        if self.area not in AREAS or not 1 <= self.max_points <= 5:
            raise ValueError(f"check {self.id}: bad area or points")

    @property
    def scope(self) -> str:
        return "yard" if self.yard is not None else "endpoint"


@dataclass(frozen=True)
class CheckResult:
    id: str
    area: str
    title: str
    subject: str  # "yard" or "endpoint:NAME"
    status: Status
    points: float
    max_points: int
    evidence: str
    fix: str
    reference: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "area": self.area, "title": self.title,
                "subject": self.subject, "status": self.status, "points": self.points,
                "max_points": self.max_points, "evidence": self.evidence, "fix": self.fix,
                "reference": self.reference}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(id=str(data["id"]), area=str(data["area"]), title=str(data["title"]),
                   subject=str(data["subject"]), status=data["status"],
                   points=float(data["points"]), max_points=int(data["max_points"]),
                   evidence=str(data["evidence"]), fix=str(data["fix"]),
                   reference=str(data["reference"]))


def grade(check: Check, finding: Finding, subject: str) -> CheckResult:
    if finding.status not in STATUSES:
        raise ValueError(f"check {check.id} answered {finding.status!r}")
    # n/a shows a fix only when the finding names one (how to get the data it lacks).
    fix = {"pass": "", "na": finding.fix or ""}.get(finding.status, finding.fix or check.fix)
    return CheckResult(check.id, check.area, check.title, subject, finding.status,
                       check.max_points * SHARE[finding.status], check.max_points,
                       finding.evidence, fix, check.reference)


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"
