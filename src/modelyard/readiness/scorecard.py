"""A scorecard: check results added up per area and overall, so every number traces back
to the checks that made it.

- A check earns all its points on pass, half on warn, none on fail; n/a checks (nothing to
  grade yet) leave the denominator, so a yard is not punished or rewarded for what it lacks
  the data to show.
- An area's score is 100 x points / max points of its graded checks (None when all are n/a).
- The overall score is the weighted mean of the area scores (``AREA_WEIGHTS``: equal, since
  each area stands for a distinct way to fail in production); the weakest area is reported
  too, as the ML Test Score takes the minimum of its sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelyard.readiness.checks import AREA_TITLES, AREAS, CheckResult, run_checks
from modelyard.readiness.evidence import Evidence

AREA_WEIGHTS: dict[str, float] = {area: 1.0 for area in AREAS}


@dataclass(frozen=True)
class AreaScore:
    area: str
    title: str
    score: float | None
    points: float
    max_points: int
    counts: dict[str, int]  # pass, warn, fail, na

    def to_dict(self) -> dict[str, Any]:
        return {"area": self.area, "title": self.title, "score": self.score,
                "points": self.points, "max_points": self.max_points,
                "weight": AREA_WEIGHTS.get(self.area, 1.0), "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AreaScore:
        return cls(str(data["area"]), str(data["title"]),
                   None if data["score"] is None else float(data["score"]),
                   float(data["points"]), int(data["max_points"]),
                   {str(k): int(v) for k, v in data["counts"].items()})


@dataclass(frozen=True)
class Scorecard:
    scope: str | None  # the endpoint graded, or None for the whole yard
    generated_at: datetime
    score: float | None
    weakest: str | None  # the area with the lowest score
    areas: tuple[AreaScore, ...]
    results: tuple[CheckResult, ...]

    def area(self, name: str) -> AreaScore:
        return next(a for a in self.areas if a.area == name)

    def result(self, check_id: str, subject: str | None = None) -> CheckResult:
        """The result of ``check_id`` (for ``subject``, e.g. ``endpoint:churn``)."""
        for r in self.results:
            if r.id == check_id and (subject is None or r.subject == subject):
                return r
        raise KeyError(check_id)

    def failing(self) -> list[CheckResult]:
        return [r for r in self.results if r.status in ("fail", "warn")]

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "generated_at": self.generated_at.isoformat(),
                "score": self.score, "weakest": self.weakest,
                "scoring": "pass = all of a check's points, warn = half, fail = none, n/a = "
                           "left out; area = 100 x points / max points; overall = the "
                           "weighted mean of the areas",
                "areas": [a.to_dict() for a in self.areas],
                "checks": [r.to_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scorecard:
        return cls(scope=data.get("scope"),
                   generated_at=datetime.fromisoformat(str(data["generated_at"])),
                   score=None if data.get("score") is None else float(data["score"]),
                   weakest=data.get("weakest"),
                   areas=tuple(AreaScore.from_dict(a) for a in data["areas"]),
                   results=tuple(CheckResult.from_dict(r) for r in data["checks"]))


def score(results: list[CheckResult], scope: str | None, now: datetime) -> Scorecard:
    areas = []
    for area in AREAS:
        mine = [r for r in results if r.area == area]
        graded = [r for r in mine if r.status != "na"]
        points = sum(r.points for r in graded)
        most = sum(r.max_points for r in graded)
        counts = {s: sum(1 for r in mine if r.status == s) for s in ("pass", "warn", "fail",
                                                                       "na")}
        value = round(100.0 * points / most, 1) if most else None
        areas.append(AreaScore(area, AREA_TITLES[area], value, points, most, counts))
    scored = [a for a in areas if a.score is not None]
    weight = sum(AREA_WEIGHTS[a.area] for a in scored)
    overall = round(sum(AREA_WEIGHTS[a.area] * (a.score or 0.0) for a in scored) / weight, 1) \
        if weight else None
    weakest = min(scored, key=lambda a: a.score or 0.0).area if scored else None
    return Scorecard(scope, now, overall, weakest, tuple(areas), tuple(results))


def build(evidence: Evidence) -> Scorecard:
    """Run every check over the evidence and add the results up."""
    return score(run_checks(evidence), evidence.scope, evidence.now)
