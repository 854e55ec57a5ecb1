"""Alert rules over monitoring numbers, and the state machine that decides when to notify.

Pure: the caller passes the numbers (``AlertInputs``: a drift report's score and drifted
features, quality metrics, the latency p99, error ratios over windows) and the rule's
previous state; ``evaluate`` returns the next state and whether to notify. Storing states
and sending notifications happen at the edges (see docs/decisions/0015).

Rule kinds:

* ``drift_score``: the drift report's score (share of features drifted) above a limit;
* ``feature_drift``: at least ``threshold`` features drifted (all, or those in ``features``);
* ``quality``: a quality metric below (``op="<"``) or above (``op=">"``) a bound;
* ``quality_drop``: a metric worse than ``reference`` by more than a relative share;
* ``latency_p99``: the p99 latency above a bound in milliseconds;
* ``burn_rate``: the error budget of an SLO burning too fast, multi-window and multi-burn-rate
  as in the Google SRE workbook, chapter 5 "Alerting on SLOs" (``burn_rate_rules``).

States go inactive -> pending (condition true, waiting ``for_s``, as Prometheus' ``for:``)
-> firing (notify once) -> inactive (resolved, notify once) after the value has been back on
the good side of ``resolve_threshold`` (hysteresis) for ``resolve_for_s``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from modelyard.domain import jsonfields as jf
from modelyard.domain.drift import DriftReport
from modelyard.domain.errors import ValidationFailed
from modelyard.domain.names import check_name
from modelyard.domain.quality import LOWER_IS_BETTER, QualityReport

ALERTS_SCHEMA_VERSION = 1

RuleKind = Literal["drift_score", "feature_drift", "quality", "quality_drop", "latency_p99",
                   "burn_rate"]
RULE_KINDS: tuple[RuleKind, ...] = ("drift_score", "feature_drift", "quality", "quality_drop",
                                    "latency_p99", "burn_rate")
Severity = Literal["page", "ticket", "info"]
SEVERITIES: tuple[Severity, ...] = ("page", "ticket", "info")
Op = Literal[">", ">=", "<", "<="]
OPS: tuple[Op, ...] = (">", ">=", "<", "<=")
Status = Literal["inactive", "pending", "firing"]
Event = Literal["ok", "pending", "fired", "still_firing", "resolved", "cleared"]

HOUR = 3600.0
SLO_PERIOD_S = 30 * 24 * HOUR  # the workbook's factors assume a 30-day SLO period
# The op each kind compares with when the rule does not say (quality rules must say).
_DEFAULT_OPS: dict[str, Op] = {"drift_score": ">", "feature_drift": ">=", "quality_drop": ">",
                               "latency_p99": ">", "burn_rate": ">"}
_DEFAULT_THRESHOLDS: dict[str, float] = {"drift_score": 0.5, "feature_drift": 1.0,
                                         "burn_rate": 1.0}


@dataclass(frozen=True)
class BurnWindow:
    """Alert when the error budget burns faster than ``factor`` over both windows: the long
    one shows it matters, the short one that it is still happening (so the alert resets
    soon after the problem stops)."""

    long_s: float
    short_s: float
    factor: float

    def __post_init__(self) -> None:
        if not (0 < self.short_s < self.long_s <= 90 * 24 * HOUR):
            raise ValidationFailed("burn windows need 0 < short_s < long_s <= 90 days",
                                   field="windows")
        if not 0 < self.factor <= 10_000:
            raise ValidationFailed("a burn factor must be above 0", field="windows")

    def budget_share(self, period_s: float = SLO_PERIOD_S) -> float:
        """The share of the period's error budget spent by the time the alert fires."""
        return self.factor * self.long_s / period_s

    def to_dict(self) -> dict[str, float]:
        return {"long_s": self.long_s, "short_s": self.short_s, "factor": self.factor}


def burn_factor(budget_share: float, long_s: float, period_s: float = SLO_PERIOD_S) -> float:
    """The burn rate that spends ``budget_share`` of the budget in ``long_s``: 2% in an hour
    of a 30-day period is 14.4."""
    return budget_share * period_s / long_s


# The SRE workbook's recommended starting point (table 5-8, 30-day period): page on 2% of
# the budget spent in 1 h or 5% in 6 h, ticket on 10% in 3 days; short windows 1/12 of long.
PAGE_WINDOWS = (BurnWindow(HOUR, 5 * 60, 14.4), BurnWindow(6 * HOUR, 30 * 60, 6.0))
TICKET_WINDOWS = (BurnWindow(72 * HOUR, 6 * HOUR, 1.0),)


@dataclass(frozen=True)
class AlertRule:
    """What to watch, when to fire and when to resolve. ``labels`` (endpoint, model,
    version...) identify the alert together with ``name`` and ``kind``: see
    ``fingerprint``. Unset ``threshold``/``op`` take the kind's default."""

    name: str
    kind: RuleKind
    severity: Severity = "ticket"
    threshold: float | None = None
    op: Op | None = None
    metric: str | None = None  # quality, quality_drop
    reference: float | None = None  # quality_drop: the value the metric is compared to
    features: tuple[str, ...] = ()  # feature_drift: only these (empty: any)
    slo: float | None = None  # burn_rate: the target, e.g. 0.999
    windows: tuple[BurnWindow, ...] = ()  # burn_rate
    for_s: float = 0.0  # condition true this long before firing (pending meanwhile)
    resolve_threshold: float | None = None  # back past this to resolve (default: threshold)
    resolve_for_s: float = 0.0  # ... for this long
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValidationFailed:
            return ValidationFailed(f"alert rule {self.name!r}: {name} {rule}",
                                    field=f"rule.{name}")

        check_name(self.name, "alert rule name", "rule.name")
        if self.kind not in RULE_KINDS:
            raise bad("kind", f"must be one of {', '.join(RULE_KINDS)}")
        if self.severity not in SEVERITIES:
            raise bad("severity", f"must be one of {', '.join(SEVERITIES)}")
        op = self.op or _DEFAULT_OPS.get(self.kind)
        if op is None:
            raise bad("op", "is required: '<' (alert when below) or '>' (when above)")
        if op not in OPS:
            raise bad("op", f"must be one of {', '.join(OPS)}")
        object.__setattr__(self, "op", op)
        threshold = self.threshold if self.threshold is not None else \
            _DEFAULT_THRESHOLDS.get(self.kind)
        if threshold is None or not math.isfinite(threshold):
            raise bad("threshold", "is required (a finite number)")
        object.__setattr__(self, "threshold", float(threshold))
        if self.kind in ("quality", "quality_drop") and not self.metric:
            raise bad("metric", "is required")
        if self.kind == "quality_drop" and (self.reference is None or self.reference == 0
                                            or not math.isfinite(self.reference)):
            raise bad("reference", "is required (a non-zero number)")
        if self.kind == "feature_drift" and threshold < 1:
            raise bad("threshold", "(features drifted) must be at least 1")
        if self.kind == "burn_rate":
            if self.slo is None or not 0 < self.slo < 1:
                raise bad("slo", "must be between 0 and 1, e.g. 0.999")
            if not self.windows:
                raise bad("windows", "are required")
            if self.resolve_threshold is not None or threshold != 1.0 or op != ">":
                raise bad("threshold", "is the windows' factors: leave threshold, op and "
                          "resolve_threshold unset")
        if self.resolve_threshold is not None:
            r = self.resolve_threshold
            if not math.isfinite(r) or (r > threshold if op in (">", ">=") else r < threshold):
                raise bad("resolve_threshold", "must be on the good side of threshold")
        if not (0 <= self.for_s <= 7 * 24 * HOUR and 0 <= self.resolve_for_s <= 7 * 24 * HOUR):
            raise bad("for_s", "and resolve_for_s must be from 0 to 7 days")
        for key, value in self.labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise bad("labels", "must map strings to strings")

    @property
    def fingerprint(self) -> str:
        """Identity for de-duplication: name, kind and labels, not the thresholds, so that
        tuning a rule keeps its open alert (as Alertmanager fingerprints labels)."""
        key = json.dumps({"name": self.name, "kind": self.kind,
                          "labels": dict(sorted(self.labels.items()))}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": ALERTS_SCHEMA_VERSION, "name": self.name, "kind": self.kind,
                "severity": self.severity, "threshold": self.threshold, "op": self.op,
                "metric": self.metric, "reference": self.reference,
                "features": list(self.features), "slo": self.slo,
                "windows": [w.to_dict() for w in self.windows], "for_s": self.for_s,
                "resolve_threshold": self.resolve_threshold,
                "resolve_for_s": self.resolve_for_s, "labels": dict(self.labels),
                "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: Any) -> AlertRule:
        where = "rule"
        known = {f.name for f in fields(cls)} | {"schema_version", "fingerprint"}
        d = jf.obj(data, known, "alert rule", where)
        if "schema_version" in d:
            jf.schema(d, ALERTS_SCHEMA_VERSION, where)
        windows = d.get("windows") or []
        if not isinstance(windows, list):
            raise ValidationFailed("rule.windows must be a list", field="rule.windows")
        parsed = []
        for i, w in enumerate(windows):
            at = f"rule.windows[{i}]"
            wd = jf.obj(w, {"long_s", "short_s", "factor"}, "burn window", at)
            parsed.append(BurnWindow(*(jf.number(jf.required(wd, k, at), f"{at}.{k}")
                                       for k in ("long_s", "short_s", "factor"))))
        features = d.get("features") or []
        labels = d.get("labels") or {}
        if not isinstance(features, list) or not isinstance(labels, Mapping):
            raise ValidationFailed("rule.features must be a list and rule.labels an object",
                                   field="rule.features")
        return cls(
            name=jf.string(jf.required(d, "name", where), "rule.name"),
            kind=jf.string(jf.required(d, "kind", where), "rule.kind", choices=RULE_KINDS),
            severity=jf.string(d.get("severity", "ticket"), "rule.severity",
                               choices=SEVERITIES),
            threshold=jf.number(d.get("threshold"), "rule.threshold", optional=True),
            op=jf.string(d.get("op"), "rule.op", optional=True, choices=OPS),
            metric=jf.string(d.get("metric"), "rule.metric", optional=True),
            reference=jf.number(d.get("reference"), "rule.reference", optional=True),
            features=tuple(jf.string(f, "rule.features") for f in features),
            slo=jf.number(d.get("slo"), "rule.slo", optional=True), windows=tuple(parsed),
            for_s=jf.number(d.get("for_s", 0.0), "rule.for_s"),
            resolve_threshold=jf.number(d.get("resolve_threshold"), "rule.resolve_threshold",
                                        optional=True),
            resolve_for_s=jf.number(d.get("resolve_for_s", 0.0), "rule.resolve_for_s"),
            labels={jf.string(k, "rule.labels"): jf.string(v, f"rule.labels.{k}")
                    for k, v in labels.items()})


def burn_rate_rules(slo: float, *, name: str = "error-budget",
                    labels: Mapping[str, str] | None = None) -> tuple[AlertRule, AlertRule]:
    """The workbook's two alerts for an availability or latency SLO: a page (14.4x over
    1 h and 5 min, or 6x over 6 h and 30 min) and a ticket (1x over 3 days and 6 h)."""
    return (AlertRule(f"{name}-page", "burn_rate", "page", slo=slo, windows=PAGE_WINDOWS,
                      labels=dict(labels or {})),
            AlertRule(f"{name}-ticket", "burn_rate", "ticket", slo=slo,
                      windows=TICKET_WINDOWS, labels=dict(labels or {})))


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class AlertInputs:
    """The numbers rules read; None (or absent) means no data, which never fires nor
    resolves an alert. ``error_ratios``: window length in seconds -> share of bad events
    over the window ending now (see ``error_ratios``)."""

    drift_score: float | None = None
    drifted_features: tuple[str, ...] | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    latency_p99_s: float | None = None
    error_ratios: Mapping[float, float] = field(default_factory=dict)

    @classmethod
    def of(cls, *, drift: DriftReport | None = None, quality: QualityReport | None = None,
           latency_p99_s: float | None = None,
           error_ratios: Mapping[float, float] | None = None) -> AlertInputs:
        """From reports: a drift report that tested nothing and a quality report with
        insufficient data contribute nothing."""
        tested = drift is not None and drift.drifted is not None
        metrics = {} if quality is None or quality.status != "ok" else {
            k: v for k, v in quality.metrics.items() if v is not None}
        return cls(drift_score=drift.score if tested and drift is not None else None,
                   drifted_features=drift.drifted_features if tested and drift is not None
                   else None,
                   metrics=metrics, latency_p99_s=latency_p99_s,
                   error_ratios=dict(error_ratios or {}))


def error_ratios(buckets: Sequence[tuple[float, int, int]], windows: Iterable[float],
                 now: float) -> dict[float, float]:
    """Bad/total over each window ``[now - w, now)`` from ``(start_time, total, bad)``
    buckets (e.g. per-minute counts). A window without events is left out: no data."""
    out: dict[float, float] = {}
    for w in windows:
        total = bad = 0
        for start, n, errors in buckets:
            if now - w <= start < now:
                total += n
                bad += errors
        if total:
            out[float(w)] = bad / total
    return out


@dataclass(frozen=True)
class Reading:
    """A rule's value now: ``firing`` is the condition, ``clear`` its hysteresis-side
    negation (both None: no data)."""

    value: float | None
    firing: bool | None
    clear: bool | None
    detail: str


def _compare(value: float, op: Op, limit: float) -> bool:
    return {">": value > limit, ">=": value >= limit, "<": value < limit,
            "<=": value <= limit}[op]


def burn_rates(rule: AlertRule, inputs: AlertInputs) -> dict[float, float]:
    """Burn rate (error ratio / error budget) for every window of ``rule`` with data."""
    if rule.slo is None:
        return {}
    budget = 1.0 - rule.slo
    ratios = {float(k): v for k, v in inputs.error_ratios.items()}
    seconds = {s for w in rule.windows for s in (w.long_s, w.short_s)}
    return {s: ratios[s] / budget for s in sorted(seconds) if s in ratios}


def read(rule: AlertRule, inputs: AlertInputs) -> Reading:
    """The rule's value and condition for ``inputs``."""
    op: Op = rule.op or ">"  # both always set by __post_init__; the fallbacks are for mypy
    threshold = rule.threshold if rule.threshold is not None else 0.0
    if rule.kind == "burn_rate":
        rates = burn_rates(rule, inputs)
        # Per pair: how far both windows are over the factor (the smaller of the two);
        # the alert's value is the worst pair's, 1.0 being the line.
        pairs = [min(rates[w.long_s], rates[w.short_s]) / w.factor for w in rule.windows
                 if w.long_s in rates and w.short_s in rates]
        if not pairs:
            return Reading(None, None, None, "no error ratios for the rule's windows")
        worst = max(pairs)
        shown = ", ".join(f"{s / 60:g}m: {r:.2f}x" for s, r in rates.items())
        return Reading(worst, worst > 1.0, worst <= 1.0, f"burn rates {shown}")
    value: float | None
    if rule.kind == "drift_score":
        value, what = inputs.drift_score, "drift score"
    elif rule.kind == "feature_drift":
        drifted = inputs.drifted_features
        if drifted is not None and rule.features:
            drifted = tuple(f for f in drifted if f in rule.features)
        value = None if drifted is None else float(len(drifted))
        what = f"features drifted ({', '.join(drifted) or 'none'})" if drifted is not None \
            else "features drifted"
    elif rule.kind == "quality":
        value, what = inputs.metrics.get(rule.metric or ""), str(rule.metric)
    elif rule.kind == "quality_drop":
        current = inputs.metrics.get(rule.metric or "")
        reference = rule.reference or 1.0
        if current is None:
            value = None
        elif rule.metric in LOWER_IS_BETTER:
            value = (current - reference) / abs(reference)
        else:
            value = (reference - current) / abs(reference)
        what = f"{rule.metric} drop relative to {reference:g}"
    else:  # latency_p99
        value = None if inputs.latency_p99_s is None else inputs.latency_p99_s * 1000.0
        what = "p99 latency (ms)"
    if value is None or not math.isfinite(value):
        return Reading(None, None, None, f"no data for {what}")
    resolve = rule.resolve_threshold if rule.resolve_threshold is not None else threshold
    return Reading(value, _compare(value, op, threshold), not _compare(value, op, resolve),
                   f"{what} {value:.4g} (fires {op} {threshold:g})")


# ---------------------------------------------------------------------------------------------
# The state machine


@dataclass(frozen=True)
class AlertState:
    """What the store keeps per rule between evaluations."""

    fingerprint: str
    status: Status = "inactive"
    since: float | None = None  # pending/firing: when the condition became true
    fired_at: float | None = None
    clear_since: float | None = None  # firing: when the value first read clear
    value: float | None = None  # at the last evaluation with data
    evaluated_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": ALERTS_SCHEMA_VERSION, "fingerprint": self.fingerprint,
                "status": self.status, "since": self.since, "fired_at": self.fired_at,
                "clear_since": self.clear_since, "value": jf.finite_or_none(self.value),
                "evaluated_at": self.evaluated_at}

    @classmethod
    def from_dict(cls, data: Any) -> AlertState:
        where = "alert_state"
        d = jf.obj(data, {f.name for f in fields(cls)} | {"schema_version"}, "alert state",
                   where)
        jf.schema(d, ALERTS_SCHEMA_VERSION, where)
        status = jf.string(d.get("status", "inactive"), f"{where}.status",
                           choices=("inactive", "pending", "firing"))
        times = {k: jf.number(d.get(k), f"{where}.{k}", optional=True)
                 for k in ("since", "fired_at", "clear_since", "value", "evaluated_at")}
        if status != "inactive" and times["since"] is None:
            raise ValidationFailed(f"a {status} alert state needs since",
                                   field=f"{where}.since")
        if status == "firing" and times["fired_at"] is None:
            raise ValidationFailed("a firing alert state needs fired_at",
                                   field=f"{where}.fired_at")
        return cls(fingerprint=jf.string(jf.required(d, "fingerprint", where),
                                         f"{where}.fingerprint"), status=status, **times)


@dataclass(frozen=True)
class AlertTransition:
    """The outcome of one evaluation: the next state, what happened, whether to notify
    (only on "fired" and "resolved": a firing alert notifies once)."""

    rule: str
    fingerprint: str
    severity: Severity
    event: Event
    notify: bool
    state: AlertState
    value: float | None
    threshold: float | None
    no_data: bool
    detail: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": ALERTS_SCHEMA_VERSION, "rule": self.rule,
                "fingerprint": self.fingerprint, "severity": self.severity,
                "event": self.event, "notify": self.notify, "state": self.state.to_dict(),
                "value": jf.finite_or_none(self.value), "threshold": self.threshold,
                "no_data": self.no_data, "detail": self.detail, "labels": dict(self.labels)}


def evaluate(rule: AlertRule, inputs: AlertInputs, previous: AlertState | None,
             now: float) -> AlertTransition:
    """One evaluation of ``rule`` at time ``now`` (seconds, the caller's clock) given the
    state the previous evaluation returned (None: never evaluated).

    No data holds the state as it was: it neither advances a pending alert nor resolves a
    firing one (a silent exporter is not a recovery).
    """
    fp = rule.fingerprint
    if previous is not None and previous.fingerprint != fp:
        raise ValidationFailed(f"the state belongs to alert {previous.fingerprint}, not to "
                               f"rule {rule.name!r} ({fp})", field="previous")
    if not math.isfinite(now):
        raise ValidationFailed("now must be a finite time", field="now")
    state = previous or AlertState(fp)
    reading = read(rule, inputs)

    def done(event: Event, next_state: AlertState, detail: str = "") -> AlertTransition:
        return AlertTransition(rule.name, fp, rule.severity, event,
                               event in ("fired", "resolved"), next_state, reading.value,
                               rule.threshold, reading.value is None,
                               f"{reading.detail}{detail}", dict(rule.labels))

    if reading.firing is None:
        held = AlertState(fp, state.status, state.since, state.fired_at, state.clear_since,
                          state.value, now)
        event: Event = ("still_firing" if state.status == "firing"
                        else "pending" if state.status == "pending" else "ok")
        return done(event, held, "; state held")
    value = reading.value
    if state.status == "firing":
        if not reading.clear:
            return done("still_firing", AlertState(fp, "firing", state.since, state.fired_at,
                                                   None, value, now))
        clear_since = state.clear_since if state.clear_since is not None else now
        if now - clear_since >= rule.resolve_for_s:
            return done("resolved", AlertState(fp, "inactive", None, None, None, value, now),
                        f"; had fired at {state.fired_at}")
        return done("still_firing", AlertState(fp, "firing", state.since, state.fired_at,
                                               clear_since, value, now),
                    f"; clear since {clear_since:g}, resolves after {rule.resolve_for_s:g}s")
    if not reading.firing:
        event = "cleared" if state.status == "pending" else "ok"
        return done(event, AlertState(fp, "inactive", None, None, None, value, now))
    since = state.since if state.status == "pending" and state.since is not None else now
    if now - since >= rule.for_s:
        return done("fired", AlertState(fp, "firing", since, now, None, value, now))
    return done("pending", AlertState(fp, "pending", since, None, None, value, now),
                f"; pending since {since:g}, fires after {rule.for_s:g}s")
