"""Progressive rollouts: what a rollout is, and the decision each analysis leads to.

Strategies, each a list of steps (weight of the new version, how long it must hold):

- ``canary``: e.g. 5% for 2 min, 25% 5 min, 50% 5 min, then 100% (promotion).
- ``blue_green``: the new version is loaded and warmed with no traffic, then takes 100% at once
  and must hold for a bake time before it is promoted.
- ``shadow``: the new version gets a copy of the traffic only; after the duration the rollout
  completes with its report (agreement, divergence, latency), and nothing is promoted.
- ``ab_test``: a fixed split until the outcome clients report (``/endpoints/NAME/feedback``)
  differs significantly between the versions, by an always-valid sequential test (checking
  every interval adds no false positives), or until ``max_duration_s``; the report gives the
  effect, its confidence interval and the p-value; ``promote_winner`` promotes a better new
  version. The safety checks run meanwhile, and roll back as in a canary.

After every analysis interval: a failed verdict counts towards ``failures_to_rollback``
consecutive failures (then the rollout rolls back at once); a step advances only when its
time is up and the latest verdict passes (too little traffic means wait, never pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelyard.domain.analysis import Thresholds, Verdict
from modelyard.domain.errors import ValidationFailed, reject_unknown
from modelyard.domain.names import ModelRef

STRATEGIES = ("canary", "blue_green", "shadow", "ab_test")
ACTIVE = ("running", "paused", "awaiting_approval")
FINAL = ("promoted", "rolled_back", "aborted", "completed")
DEFAULT_CANARY = ((5.0, 120.0), (25.0, 300.0), (50.0, 300.0))
DEFAULT_INTERVAL_S = 10.0


@dataclass(frozen=True)
class Step:
    weight: float  # percent of traffic on the new version
    duration_s: float  # how long it must hold, passing, before the next step

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "duration_s": self.duration_s}


@dataclass(frozen=True)
class RolloutSpec:
    strategy: str
    target: str  # the new version (a model reference, pinned when the rollout starts)
    steps: tuple[Step, ...]
    interval_s: float = DEFAULT_INTERVAL_S
    analysis: Thresholds = field(default_factory=Thresholds)
    sticky_header: str | None = None
    shadow_sample: float = 1.0
    # ab_test: the outcome test
    alpha: float = 0.05
    higher_is_better: bool = True
    min_n: int = 100  # outcomes per version before the test can decide
    promote_winner: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "target": self.target,
                "steps": [s.to_dict() for s in self.steps], "interval_s": self.interval_s,
                "analysis": self.analysis.to_dict(), "sticky_header": self.sticky_header,
                "shadow_sample": self.shadow_sample, "alpha": self.alpha,
                "higher_is_better": self.higher_is_better, "min_n": self.min_n,
                "promote_winner": self.promote_winner}

    @classmethod
    def from_dict(cls, data: Any) -> RolloutSpec:
        data = reject_unknown(data, {"strategy", "target", "steps", "interval_s", "analysis",
                                     "sticky_header", "shadow_sample", "bake_s",
                                     "duration_s", "weight", "max_duration_s", "alpha",
                                     "higher_is_better", "min_n", "promote_winner"},
                              "rollout field", "rollout")
        strategy = data.get("strategy", "canary")
        if strategy not in STRATEGIES:
            raise ValidationFailed(f"strategy must be one of {', '.join(STRATEGIES)}",
                                   field="rollout.strategy")
        target = data.get("target")
        if not isinstance(target, str):
            raise ValidationFailed("name the new version: target: name:VERSION or name@alias",
                                   field="rollout.target")
        target = str(ModelRef.parse(target, "rollout.target"))
        interval = _number(data.get("interval_s", DEFAULT_INTERVAL_S), 0.05, 3600,
                           "rollout.interval_s")
        if strategy == "canary":
            raw = data.get("steps")
            pairs = DEFAULT_CANARY if raw is None else _steps(raw)
            steps = [Step(w, d) for w, d in pairs]
            if steps[-1].weight != 100:
                steps.append(Step(100.0, 0.0))
        elif strategy == "ab_test" and "steps" not in data:
            steps = [Step(_number(data.get("weight", 50), 1, 99, "rollout.weight"),
                          _number(data.get("max_duration_s", 7 * 86_400), 1, 90 * 86_400,
                                  "rollout.max_duration_s"))]
        elif "steps" in data and "bake_s" not in data and "duration_s" not in data:
            steps = [Step(w, d) for w, d in _steps(data["steps"])]  # a stored spec
        elif strategy == "blue_green":
            bake = _number(data.get("bake_s", 60), 0, 86_400, "rollout.bake_s")
            steps = [Step(0.0, 0.0), Step(100.0, bake)]
        else:
            duration = _number(data.get("duration_s", 300), 0, 7 * 86_400,
                               "rollout.duration_s")
            steps = [Step(0.0, duration)]
        header = data.get("sticky_header")
        if header is not None and not isinstance(header, str):
            raise ValidationFailed("sticky_header is a header name",
                                   field="rollout.sticky_header")
        sample = _number(data.get("shadow_sample", 1.0), 1e-6, 1, "rollout.shadow_sample")
        alpha = _number(data.get("alpha", 0.05), 1e-6, 0.5, "rollout.alpha")
        min_n = int(_number(data.get("min_n", 100), 2, 10_000_000, "rollout.min_n"))
        flags = {}
        for name, default in (("higher_is_better", True), ("promote_winner", False)):
            value = data.get(name, default)
            if not isinstance(value, bool):
                raise ValidationFailed(f"{name} must be true or false", field=f"rollout.{name}")
            flags[name] = value
        return cls(strategy, target, tuple(steps), interval,
                   Thresholds.from_dict(data.get("analysis")), header, sample, alpha,
                   flags["higher_is_better"], min_n, flags["promote_winner"])


def _number(value: Any, low: float, high: float, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or \
            not low <= value <= high:
        raise ValidationFailed(f"must be a number from {low:g} to {high:g}", field=where)
    return float(value)


def _steps(raw: Any) -> list[tuple[float, float]]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= 20:
        raise ValidationFailed("steps lists 1-20 {weight, duration_s}", field="rollout.steps")
    out, last = [], 0.0
    for i, item in enumerate(raw):
        where = f"rollout.steps[{i}]"
        item = reject_unknown(item, {"weight", "duration_s"}, "step field", where)
        weight = _number(item.get("weight"), 0, 100, f"{where}.weight")
        duration = _number(item.get("duration_s", 60), 0, 90 * 86_400, f"{where}.duration_s")
        if weight < last:
            raise ValidationFailed("step weights never go down", field=f"{where}.weight")
        last = weight
        out.append((weight, duration))
    return out


@dataclass(frozen=True)
class Decision:
    action: str  # wait, advance, rollback, promote, complete
    reason: str
    failures: int  # consecutive failed verdicts after this one


def decide(spec: RolloutSpec, step: int, elapsed_s: float, failures: int,
           verdict: Verdict) -> Decision:
    """What to do after one analysis: pure, so every path is easy to test."""
    if verdict.status == "fail":
        failures += 1
        if failures >= spec.analysis.failures_to_rollback:
            return Decision("rollback", verdict.reason, failures)
        return Decision("wait", f"failed check {failures} of "
                                f"{spec.analysis.failures_to_rollback}: {verdict.reason}",
                        failures)
    failures = 0
    current = spec.steps[step]
    if verdict.status != "pass":
        return Decision("wait", verdict.reason or "waiting for traffic", failures)
    if elapsed_s < current.duration_s:
        return Decision("wait", f"step {step + 1} holds for {current.duration_s:g} s "
                                f"({elapsed_s:.0f} s so far)", failures)
    if spec.strategy == "shadow":
        return Decision("complete", verdict.reason, failures)
    if step + 1 >= len(spec.steps):
        return Decision("promote", verdict.reason, failures)
    if spec.steps[step + 1].weight >= 100 and step + 2 >= len(spec.steps) and \
            spec.steps[step + 1].duration_s == 0:
        return Decision("promote", verdict.reason, failures)
    return Decision("advance", verdict.reason, failures)
