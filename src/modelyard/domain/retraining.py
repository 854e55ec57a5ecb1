"""Retraining: the policy of one model's closed loop, and the gate a challenger must pass.

A ``RetrainPolicy`` says what starts a cycle (a cron schedule, a drift alert, a quality drop,
or a person), which project function trains (``module:function``, trusted code), on what data
(labelled answers from the inference log, a dataset URL, or both), what is held out, how the
challenger is judged against the champion (``Gate``), and how a passing one is rolled out.

``evaluate_gate`` is the judgement, pure: the champion's and the challenger's ``Scores`` on the
same holdout (overall and per slice) in, a ``GateResult`` with every number and the reason out.
``score`` computes ``Scores`` from labels and predictions with ``domain/quality``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.domain import jsonfields as jf
from modelyard.domain.errors import ValidationFailed
from modelyard.domain.jobs import check_resources
from modelyard.domain.names import check_name
from modelyard.domain.quality import (
    CLASSIFICATION_METRICS,
    LOWER_IS_BETTER,
    REGRESSION_METRICS,
    QualityReport,
    classification_quality,
    regression_quality,
)
from modelyard.domain.rollouts import RolloutSpec

TRIGGERS = ("schedule", "drift", "quality_drop", "manual")
TRIGGER_ALIASES = {"quality": "quality_drop"}
STATES = ("queued", "training", "evaluating", "rejected", "awaiting_approval", "approved",
          "rolling_out", "promoted", "rolled_back", "failed")
# A model has at most one cycle in these states: the next trigger waits for it to end.
ACTIVE_STATES = ("queued", "training", "evaluating", "awaiting_approval", "approved",
                 "rolling_out")
ROLLOUT_STRATEGIES = ("canary", "blue_green")
MAX_SLICE_GROUPS = 10  # a feature with more distinct values is cut into quantile bins
SLICE_BINS = 4

_ENTRYPOINT = re.compile(r"[A-Za-z][\w]*(?:\.[A-Za-z][\w]*)*:[A-Za-z][\w]*")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)\s*%")


def _duration_s(value: Any, where: str) -> float:
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValidationFailed(f"{where} must be a time ago such as 30m, 12h, 7d or 2w",
                               field=where)
    seconds = float(match[1]) * _UNITS[match[2]]
    if not 60 <= seconds <= 366 * 86400:
        raise ValidationFailed(f"{where} must be from 1m to 366d", field=where)
    return seconds


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 2000 or \
            ("://" not in value and not value.startswith("/")):
        raise ValidationFailed(f"{where} must be a URL (file:///..., s3://..., https://...) or "
                               "an absolute path", field=where)
    return value


# -- the policy ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferenceLogWindow:
    """Labelled answers of the policy's endpoint logged in the last ``since``."""

    since: str = "7d"
    min_labels: int = 100  # fewer labelled rows: the cycle fails instead of training on noise

    @property
    def since_s(self) -> float:
        return _duration_s(self.since, "data.inference_log.since")

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "min_labels": self.min_labels}


@dataclass(frozen=True)
class DataWindow:
    inference_log: InferenceLogWindow | None = None
    dataset_url: str | None = None  # CSV (header row) or JSON lines
    label: str = "label"  # the dataset's label column
    features: tuple[str, ...] = ()  # the dataset's feature columns (default: all but label)

    def to_dict(self) -> dict[str, Any]:
        return {"inference_log": self.inference_log.to_dict() if self.inference_log else None,
                "dataset_url": self.dataset_url, "label": self.label,
                "features": list(self.features)}


@dataclass(frozen=True)
class Holdout:
    """Rows the challenger never trains on: a share of the data (split by a fixed seed, so
    every attempt of a cycle holds out the same rows), or a separate dataset."""

    share: float = 0.2
    url: str | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"share": self.share, "url": self.url, "seed": self.seed}


@dataclass(frozen=True)
class SliceRule:
    """No-worse constraint: on every group of ``feature`` (each value, or a quantile bin of a
    numeric feature with many values) the challenger may trail the champion by at most
    ``max_drop`` (in the metric's units); groups under ``min_rows`` are reported, not judged."""

    feature: str
    max_drop: float = 0.0
    min_rows: int = 20

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "max_drop": self.max_drop, "min_rows": self.min_rows}


@dataclass(frozen=True)
class Gate:
    metric: str = "accuracy"
    min_gain: float = 0.0  # how much better the challenger must be
    relative: bool = False  # min_gain as a share of the champion's value ("2%")
    slices: tuple[SliceRule, ...] = ()

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @property
    def task(self) -> str:
        return "regression" if self.metric in REGRESSION_METRICS else "classification"

    def to_dict(self) -> dict[str, Any]:
        gain: float | str = f"{self.min_gain * 100:g}%" if self.relative else self.min_gain
        return {"metric": self.metric, "min_gain": gain,
                "higher_is_better": self.higher_is_better,
                "slices": [s.to_dict() for s in self.slices]}


@dataclass(frozen=True)
class Triggers:
    schedule: str | None = None  # cron, five fields, UTC
    on_drift: bool = False
    on_quality_drop: bool = False

    def allows(self, trigger: str) -> bool:
        return {"manual": True, "schedule": self.schedule is not None,
                "drift": self.on_drift, "quality_drop": self.on_quality_drop}.get(
                    TRIGGER_ALIASES.get(trigger, trigger), False)

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "on_drift": self.on_drift,
                "on_quality_drop": self.on_quality_drop}


POLICY_FIELDS = {"model", "endpoint", "entrypoint", "trusted", "params", "data", "holdout",
                 "gate", "triggers", "rollout", "require_approval", "max_attempts",
                 "resources"}


@dataclass(frozen=True)
class RetrainPolicy:
    model: str
    endpoint: str  # where the challenger's canary runs
    entrypoint: str  # module:function, project code (docs/decisions/0002)
    data: DataWindow
    holdout: Holdout = field(default_factory=Holdout)
    gate: Gate = field(default_factory=Gate)
    triggers: Triggers = field(default_factory=Triggers)
    rollout: Mapping[str, Any] = field(default_factory=lambda: {"strategy": "canary"})
    require_approval: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)  # passed to the entrypoint
    max_attempts: int = 3
    # What training needs where it runs as a Ray task (the ray backend): num_cpus, num_gpus,
    # memory (bytes). Empty: one CPU.
    resources: Mapping[str, float] = field(default_factory=dict)
    trusted: bool = True  # always: a policy without it is refused

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "endpoint": self.endpoint, "entrypoint": self.entrypoint,
                "trusted": self.trusted, "params": dict(self.params),
                "data": self.data.to_dict(), "holdout": self.holdout.to_dict(),
                "gate": self.gate.to_dict(), "triggers": self.triggers.to_dict(),
                "rollout": dict(self.rollout), "require_approval": self.require_approval,
                "max_attempts": self.max_attempts, "resources": dict(self.resources)}

    def rollout_spec(self, target: str) -> dict[str, Any]:
        """The rollout to start for a passing challenger ``target`` (``model:version``).

        Unless the policy says otherwise, the canary does not fail on its predictions
        diverging from the champion's: a challenger retrained after drift is meant to answer
        differently, and the gate already judged its answers against labels. The canary
        checks what the holdout cannot: errors and latency under live traffic."""
        spec = {**dict(self.rollout), "target": target}
        analysis = dict(spec.get("analysis") or {})
        analysis.setdefault("max_divergence", None)
        return {**spec, "analysis": analysis}

    @classmethod
    def from_dict(cls, data: Any, model: str | None = None) -> RetrainPolicy:
        """Checked field by field; errors name the field (``gate.slices[0].max_drop``).
        ``model``: the model the policy is for (a URL path names it), filled in or checked."""
        d = jf.obj(data, POLICY_FIELDS, "policy", "policy")
        name = d.get("model", model)
        if model is not None and name != model:
            raise ValidationFailed(f"this policy is for model {model!r}, not {name!r}",
                                   field="model")
        name = check_name(jf.string(name, "model"), "model name", "model")
        endpoint = check_name(jf.string(jf.required(d, "endpoint", "policy"), "endpoint"),
                              "endpoint name", "endpoint")
        entrypoint = jf.string(jf.required(d, "entrypoint", "policy"), "entrypoint")
        if not _ENTRYPOINT.fullmatch(entrypoint):
            raise ValidationFailed("entrypoint must be a project function "
                                   "'package.module:function' (no private names)",
                                   field="entrypoint")
        if d.get("trusted") is not True:
            raise ValidationFailed(f"a retraining policy runs project code ({entrypoint}): "
                                   "mark it trusted: true once reviewed", field="trusted")
        params = d.get("params", {})
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise ValidationFailed("params must be an object", field="params")
        approval = jf.boolean(d.get("require_approval", False), "require_approval")
        attempts = jf.integer(d.get("max_attempts", 3), "max_attempts", 1)
        if attempts > 20:
            raise ValidationFailed("max_attempts must be 1-20", field="max_attempts")
        return cls(model=name, endpoint=endpoint, entrypoint=entrypoint,
                   data=_data(jf.required(d, "data", "policy")),
                   holdout=_holdout(d.get("holdout")), gate=_gate(d.get("gate")),
                   triggers=_triggers(d.get("triggers")), rollout=_rollout(d.get("rollout"),
                                                                           name),
                   require_approval=approval, params=dict(params), max_attempts=attempts,
                   resources=check_resources(d.get("resources"), "resources"))


def _data(value: Any) -> DataWindow:
    d = jf.obj(value, {"inference_log", "dataset_url", "label", "features"}, "data", "data")
    window = None
    if d.get("inference_log") is not None:
        w = jf.obj(d["inference_log"], {"since", "min_labels"}, "inference_log",
                   "data.inference_log")
        window = InferenceLogWindow(
            since=jf.string(w.get("since", "7d"), "data.inference_log.since"),
            min_labels=jf.integer(w.get("min_labels", 100), "data.inference_log.min_labels",
                                  1))
        _duration_s(window.since, "data.inference_log.since")
    url = d.get("dataset_url")
    if url is not None:
        url = _url(url, "data.dataset_url")
    if window is None and url is None:
        raise ValidationFailed("data needs inference_log, dataset_url or both",
                               field="data")
    label = jf.string(d.get("label", "label"), "data.label")
    features = d.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise ValidationFailed("data.features must be a list of column names",
                               field="data.features")
    return DataWindow(window, url, label, tuple(features))


def _holdout(value: Any) -> Holdout:
    d = jf.obj(value or {}, {"share", "url", "seed"}, "holdout", "holdout")
    share = jf.number(d.get("share", 0.2), "holdout.share")
    if not 0.05 <= share <= 0.5:
        raise ValidationFailed("holdout.share must be from 0.05 to 0.5", field="holdout.share")
    url = d.get("url")
    return Holdout(share, None if url is None else _url(url, "holdout.url"),
                   jf.integer(d.get("seed", 0), "holdout.seed"))


def _gate(value: Any) -> Gate:
    d = jf.obj(value or {}, {"metric", "min_gain", "slices", "higher_is_better"}, "gate",
               "gate")
    metric = jf.string(d.get("metric", "accuracy"), "gate.metric",
                       choices=(*CLASSIFICATION_METRICS, *REGRESSION_METRICS))
    if "higher_is_better" in d and d["higher_is_better"] != (metric not in LOWER_IS_BETTER):
        raise ValidationFailed(f"{metric} is {'lower' if metric in LOWER_IS_BETTER else 'higher'}"
                               " is better; leave higher_is_better out (it follows the metric)",
                               field="gate.higher_is_better")
    raw, relative = d.get("min_gain", 0.0), False
    if isinstance(raw, str):
        match = _PERCENT.fullmatch(raw.strip())
        if match is None:
            raise ValidationFailed("gate.min_gain is a number (absolute) or a percentage "
                                   "such as '2%' (relative to the champion)",
                                   field="gate.min_gain")
        gain, relative = float(match[1]) / 100, True
    else:
        gain = jf.number(raw, "gate.min_gain")
    if not -1 <= gain <= (10 if relative else 1e9):
        raise ValidationFailed("gate.min_gain is out of range", field="gate.min_gain")
    slices = d.get("slices", [])
    if not isinstance(slices, list) or len(slices) > 20:
        raise ValidationFailed("gate.slices lists at most 20 {feature, max_drop}",
                               field="gate.slices")
    rules = []
    for i, item in enumerate(slices):
        where = f"gate.slices[{i}]"
        s = jf.obj(item, {"feature", "max_drop", "min_rows"}, "slice", where)
        drop = jf.number(s.get("max_drop", 0.0), f"{where}.max_drop")
        if drop < 0:
            raise ValidationFailed(f"{where}.max_drop must be 0 or more", field=f"{where}.max_drop")
        feature = jf.string(jf.required(s, "feature", where), f"{where}.feature")
        if not feature:
            raise ValidationFailed(f"{where}.feature names a feature", field=f"{where}.feature")
        rules.append(SliceRule(feature, drop,
                               jf.integer(s.get("min_rows", 20), f"{where}.min_rows", 1)))
    return Gate(metric, gain, relative, tuple(rules))


def _triggers(value: Any) -> Triggers:
    d = jf.obj(value or {}, {"schedule", "on_drift", "on_quality_drop"}, "triggers",
               "triggers")
    cron = d.get("schedule")
    if cron is not None:
        from croniter import croniter  # a pure parser

        if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ValidationFailed(f"{cron!r} is not a cron expression: five fields, minute "
                                   "hour day-of-month month day-of-week (UTC), e.g. '0 3 * * *'",
                                   field="triggers.schedule")
    return Triggers(cron, jf.boolean(d.get("on_drift", False), "triggers.on_drift"),
                    jf.boolean(d.get("on_quality_drop", False), "triggers.on_quality_drop"))


def _rollout(value: Any, model: str) -> dict[str, Any]:
    d = dict(jf.obj(value or {"strategy": "canary"}, set(RolloutSpec.__dataclass_fields__) |
                    {"bake_s", "duration_s", "weight", "max_duration_s"}, "rollout field",
                    "rollout"))
    if "target" in d:
        raise ValidationFailed("the rollout's target is the challenger: leave it out",
                               field="rollout.target")
    d.setdefault("strategy", "canary")
    if d["strategy"] not in ROLLOUT_STRATEGIES:
        raise ValidationFailed(f"rollout.strategy must be one of {', '.join(ROLLOUT_STRATEGIES)}"
                               " (a challenger that passed the gate goes to production)",
                               field="rollout.strategy")
    RolloutSpec.from_dict({**d, "target": f"{model}:1"})  # every field checked, with its path
    return d


# -- scores and the gate -------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceScore:
    feature: str
    group: str  # the value, or a bin such as "[0.5, 1.2)"
    n: int
    value: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "group": self.group, "n": self.n,
                "value": jf.finite_or_none(self.value)}


@dataclass(frozen=True)
class Scores:
    """A model's quality on the holdout: the gate's metric overall and on each slice."""

    metric: str
    value: float | None
    n: int
    report: Mapping[str, Any] = field(default_factory=dict)  # the QualityReport, as a dict
    slices: tuple[SliceScore, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": jf.finite_or_none(self.value), "n": self.n,
                "report": dict(self.report), "slices": [s.to_dict() for s in self.slices]}

    @classmethod
    def from_dict(cls, data: Any) -> Scores:
        d = jf.obj(data, {"metric", "value", "n", "report", "slices"}, "scores", "scores")
        slices = []
        for i, s in enumerate(d.get("slices") or []):
            where = f"scores.slices[{i}]"
            item = jf.obj(s, {"feature", "group", "n", "value"}, "slice score", where)
            slices.append(SliceScore(jf.string(item["feature"], f"{where}.feature"),
                                     jf.string(item["group"], f"{where}.group"),
                                     jf.integer(item["n"], f"{where}.n"),
                                     jf.number(item.get("value"), f"{where}.value",
                                               optional=True)))
        return cls(jf.string(jf.required(d, "metric", "scores"), "scores.metric"),
                   jf.number(d.get("value"), "scores.value", optional=True),
                   jf.integer(jf.required(d, "n", "scores"), "scores.n"),
                   dict(d.get("report") or {}), tuple(slices))


def _quality(gate: Gate, y_true: np.ndarray, y_pred: np.ndarray,
             proba: np.ndarray | None) -> QualityReport:
    if gate.task == "regression":
        return regression_quality(y_true, y_pred, main_metric=gate.metric, min_samples=1,
                                  n_bootstrap=200)
    if gate.metric != "roc_auc":
        proba = None  # only AUC reads scores; the others judge the predicted classes
    return classification_quality(y_true, y_pred, proba, main_metric=gate.metric,
                                  min_samples=1, n_bootstrap=200)


def slice_groups(values: Sequence[Any] | np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The groups a slice rule judges: each distinct value, or for a numeric feature with
    more than ``MAX_SLICE_GROUPS`` values, ``SLICE_BINS`` quantile bins. Deterministic: the
    same holdout gives the same groups for the champion and the challenger."""
    column = np.asarray(values)
    distinct = np.unique(column.astype(str) if column.dtype.kind == "O" else column)
    if distinct.size <= MAX_SLICE_GROUPS or column.dtype.kind not in "biuf":
        return [(str(v), (column.astype(str) if column.dtype.kind == "O" else column) == v)
                for v in distinct.tolist()]
    numbers = column.astype(np.float64)
    edges = np.unique(np.quantile(numbers, np.linspace(0, 1, SLICE_BINS + 1)))
    groups = []
    for i, (low, high) in enumerate(itertools.pairwise(edges)):
        last = i == len(edges) - 2
        mask = (numbers >= low) & ((numbers <= high) if last else (numbers < high))
        groups.append((f"[{low:.4g}, {high:.4g}{']' if last else ')'}", mask))
    return groups


def score(gate: Gate, y_true: Any, y_pred: Any, proba: Any = None,
          columns: Mapping[str, Any] | None = None) -> Scores:
    """The gate's metric of predictions ``y_pred`` (and class scores ``proba``) against
    ``y_true``, overall and on every group of each slice rule's feature (``columns`` holds
    the holdout's feature values by name)."""
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    s = None if proba is None else np.asarray(proba)
    report = _quality(gate, t, p, s)
    slices = []
    for rule in gate.slices:
        if columns is None or rule.feature not in columns:
            raise ValidationFailed(f"slice feature {rule.feature!r} is not a feature of the "
                                   f"holdout ({', '.join(sorted(columns or {})) or 'none'})",
                                   field="gate.slices")
        for group, mask in slice_groups(columns[rule.feature]):
            n = int(mask.sum())
            value = None
            if n:
                part = _quality(gate, t[mask], p[mask], None if s is None else s[mask])
                value = part.value
            slices.append(SliceScore(rule.feature, group, n, value))
    return Scores(gate.metric, report.value, int(t.size), report.to_dict(), tuple(slices))


@dataclass(frozen=True)
class SliceVerdict:
    feature: str
    group: str
    n: int
    champion: float | None
    challenger: float | None
    drop: float | None  # how much worse the challenger is (positive: worse)
    max_drop: float
    status: str  # pass, fail, too_small

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "group": self.group, "n": self.n,
                "champion": jf.finite_or_none(self.champion),
                "challenger": jf.finite_or_none(self.challenger),
                "drop": None if self.drop is None else jf.finite_or_none(self.drop),
                "max_drop": self.max_drop, "status": self.status}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    metric: str
    higher_is_better: bool
    champion: float | None  # None: no champion to beat
    challenger: float | None
    gain: float | None  # in the better direction (relative when the gate is)
    min_gain: float
    relative: bool
    n: int
    slices: tuple[SliceVerdict, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "metric": self.metric,
                "higher_is_better": self.higher_is_better,
                "champion": jf.finite_or_none(self.champion),
                "challenger": jf.finite_or_none(self.challenger),
                "gain": None if self.gain is None else jf.finite_or_none(self.gain),
                "min_gain": self.min_gain, "relative": self.relative, "n": self.n,
                "slices": [s.to_dict() for s in self.slices]}


def _better_by(champion: float, challenger: float, higher_is_better: bool) -> float:
    return challenger - champion if higher_is_better else champion - challenger


def evaluate_gate(champion: Scores | None, challenger: Scores,
                  policy: RetrainPolicy | Gate) -> GateResult:
    """Pass when the challenger beats the champion on the gate's metric by at least
    ``min_gain`` (absolute, or relative to the champion's value) and trails it on no slice
    group by more than that rule's ``max_drop``. Without a champion, the challenger passes
    on its own (there is nothing to be worse than). Pure."""
    gate = policy.gate if isinstance(policy, RetrainPolicy) else policy
    up, metric = gate.higher_is_better, gate.metric
    if challenger.metric != metric or (champion is not None and champion.metric != metric):
        raise ValidationFailed(f"scores are not of the gate's metric {metric}", field="scores")

    def result(passed: bool, reason: str, gain: float | None = None,
               slices: tuple[SliceVerdict, ...] = ()) -> GateResult:
        return GateResult(passed, reason, metric, up,
                          None if champion is None else champion.value, challenger.value,
                          gain, gate.min_gain, gate.relative, challenger.n, slices)

    if challenger.value is None or not math.isfinite(challenger.value):
        return result(False, f"the challenger's {metric} is undefined on the holdout "
                             f"({challenger.n} rows)")
    if champion is None:
        return result(True, f"no champion to compare with: the challenger's {metric} is "
                            f"{challenger.value:.4g} on {challenger.n} holdout rows")
    if champion.value is None or not math.isfinite(champion.value):
        return result(False, f"the champion's {metric} is undefined on the holdout")
    gain = _better_by(champion.value, challenger.value, up)
    if gate.relative:
        gain = gain / abs(champion.value) if champion.value else (math.inf if gain > 0 else
                                                                   0.0 if gain == 0 else
                                                                   -math.inf)
    verdicts = _slice_verdicts(champion, challenger, gate)
    shown = f"{gain:+.2%}" if gate.relative else f"{gain:+.4g}"
    wanted = f"{gate.min_gain:.2%}" if gate.relative else f"{gate.min_gain:.4g}"
    compared = (f"{metric} {challenger.value:.4g} vs champion {champion.value:.4g} "
                f"({'higher' if up else 'lower'} is better; gain {shown}, at least {wanted} "
                f"needed; {challenger.n} holdout rows)")
    if gain < gate.min_gain:
        return result(False, f"not better enough: {compared}", gain, verdicts)
    failed = [v for v in verdicts if v.status == "fail"]
    if failed:
        worst = max(failed, key=lambda v: v.drop or 0.0)
        return result(False, f"worse on {len(failed)} slice group(s), e.g. "
                             f"{worst.feature}={worst.group}: {metric} {worst.challenger:.4g} "
                             f"vs champion {worst.champion:.4g} (drop {worst.drop:.4g} > "
                             f"{worst.max_drop:.4g}, n={worst.n}); overall {compared}",
                      gain, verdicts)
    return result(True, f"better: {compared}" + (f"; no slice group worse than allowed "
                                                 f"({len(verdicts)} checked)" if verdicts
                                                 else ""), gain, verdicts)


def _slice_verdicts(champion: Scores, challenger: Scores, gate: Gate
                    ) -> tuple[SliceVerdict, ...]:
    theirs = {(s.feature, s.group): s for s in champion.slices}
    out = []
    for rule in gate.slices:
        for mine in (s for s in challenger.slices if s.feature == rule.feature):
            other = theirs.get((mine.feature, mine.group))
            base = None if other is None else other.value
            if mine.n < rule.min_rows or base is None or mine.value is None:
                out.append(SliceVerdict(mine.feature, mine.group, mine.n, base, mine.value,
                                        None, rule.max_drop, "too_small"))
                continue
            drop = -_better_by(base, mine.value, gate.higher_is_better)
            out.append(SliceVerdict(mine.feature, mine.group, mine.n, base, mine.value, drop,
                                    rule.max_drop,
                                    "fail" if drop > rule.max_drop + 1e-12 else "pass"))
    return tuple(out)
