"""How an endpoint is watched: the monitor spec, and the pure pieces of a monitor run
(aligned windows, turning logged records into the columns drift tests read).

A monitor computes, for every closed window (aligned to multiples of ``window_s`` since the
epoch, so every process and every rerun agrees on the windows) and every version that
answered in it, a drift report against that version's reference profile and, once labels
have arrived, a quality report. Alert rules are evaluated every ``evaluate_every_s``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from modelyard.domain import jsonfields as jf
from modelyard.domain.alerts import AlertRule, burn_rate_rules
from modelyard.domain.drift import DriftThresholds
from modelyard.domain.errors import ModelyardError, ValidationFailed, reject_unknown
from modelyard.domain.quality import CLASSIFICATION_METRICS, REGRESSION_METRICS
from modelyard.domain.signature import as_input_dict

Task = Literal["classification", "regression"]
MAX_CATCH_UP = 48  # windows computed per run at most: a long outage does not stall a worker
DEFAULT_RULES = ({"name": "feature-drift", "kind": "feature_drift", "severity": "ticket"},)


@dataclass(frozen=True)
class QualitySpec:
    """Live quality from delayed labels: which output is the prediction (default: the
    first), which holds class scores (for ROC AUC), and the main metric."""

    task: Task
    output: str | None = None
    scores_output: str | None = None
    metric: str | None = None
    min_samples: int = 30
    lookback_s: float = 7 * 86400.0  # windows this recent are recomputed as labels arrive

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ValidationFailed("quality.task must be classification or regression",
                                   field="quality.task")
        metrics = CLASSIFICATION_METRICS if self.task == "classification" \
            else REGRESSION_METRICS
        if self.metric is not None and self.metric not in metrics:
            raise ValidationFailed(f"quality.metric for {self.task} must be one of "
                                   f"{', '.join(metrics)}", field="quality.metric")
        if not 5 <= self.min_samples <= 1_000_000:
            raise ValidationFailed("quality.min_samples must be from 5 to 1000000",
                                   field="quality.min_samples")
        if not 0 <= self.lookback_s <= 90 * 86400:
            raise ValidationFailed("quality.lookback_s must be from 0 to 90 days",
                                   field="quality.lookback_s")

    @property
    def main_metric(self) -> str:
        return self.metric or ("accuracy" if self.task == "classification" else "mae")

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "output": self.output, "scores_output": self.scores_output,
                "metric": self.main_metric, "min_samples": self.min_samples,
                "lookback_s": self.lookback_s}

    @classmethod
    def from_dict(cls, data: Any) -> QualitySpec:
        d = jf.obj(data, {"task", "output", "scores_output", "metric", "min_samples",
                          "lookback_s"}, "quality setting", "quality")
        return cls(task=jf.string(jf.required(d, "task", "quality"), "quality.task",
                                  choices=("classification", "regression")),
                   output=jf.string(d.get("output"), "quality.output", optional=True),
                   scores_output=jf.string(d.get("scores_output"), "quality.scores_output",
                                           optional=True),
                   metric=jf.string(d.get("metric"), "quality.metric", optional=True),
                   min_samples=jf.integer(d.get("min_samples", 30), "quality.min_samples"),
                   lookback_s=jf.number(d.get("lookback_s", 7 * 86400.0),
                                        "quality.lookback_s"))


@dataclass(frozen=True)
class MonitorSpec:
    window_s: float = 3600.0
    evaluate_every_s: float = 60.0
    max_records: int = 10_000  # per window and version: a sample is enough for the tests
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    quality: QualitySpec | None = None
    slo: float | None = None  # availability target: adds the burn-rate alerts
    latency_window_s: float = 300.0  # p99 latency over this long, for latency rules
    alerts: tuple[AlertRule, ...] = ()
    webhook: str | None = None  # alert events are POSTed here (guarded outbound URL)

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValidationFailed(f"{name} must be {rule}", field=name)
        check(10 <= self.window_s <= 7 * 86400, "window_s", "from 10 s to 7 days")
        check(1 <= self.evaluate_every_s <= self.window_s, "evaluate_every_s",
              "from 1 s to window_s")
        check(100 <= self.max_records <= 1_000_000, "max_records", "from 100 to 1000000")
        check(self.slo is None or 0 < self.slo < 1, "slo", "between 0 and 1, e.g. 0.999")
        check(10 <= self.latency_window_s <= 86400, "latency_window_s", "from 10 s to 1 day")
        names = [r.name for r in self.rules]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        check(duplicate is None, "alerts", f"named uniquely ({duplicate!r} twice)")
        check(self.webhook is None or self.webhook.startswith(("http://", "https://")),
              "webhook", "an http(s) URL")

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The spec's rules (the default drift rule when none are given), plus the SRE
        workbook's burn-rate pair when an SLO is set."""
        rules = self.alerts or tuple(AlertRule.from_dict(r) for r in DEFAULT_RULES)
        if self.slo is not None:
            rules = (*rules, *burn_rate_rules(self.slo))
        return rules

    def to_dict(self) -> dict[str, Any]:
        return {"window_s": self.window_s, "evaluate_every_s": self.evaluate_every_s,
                "max_records": self.max_records, "drift": self.drift.to_dict(),
                "quality": self.quality.to_dict() if self.quality else None,
                "slo": self.slo, "latency_window_s": self.latency_window_s,
                "alerts": [r.to_dict() for r in self.alerts], "webhook": self.webhook}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MonitorSpec:
        d = reject_unknown(data, {"window_s", "evaluate_every_s", "max_records", "drift",
                                  "quality", "slo", "latency_window_s", "alerts", "webhook"},
                           "monitor setting", "monitor")
        window = jf.number(d.get("window_s", 3600.0), "window_s")
        alerts = d.get("alerts") or []
        if not isinstance(alerts, list):
            raise ValidationFailed("alerts must be a list of rules", field="alerts")
        rules = []
        for i, rule in enumerate(alerts):
            try:
                rules.append(AlertRule.from_dict(rule))
            except ValidationFailed as exc:  # name the rule's place in the list
                where = f"alerts[{i}]" + (exc.field[4:] if exc.field and
                                          exc.field.startswith("rule") else "")
                raise ValidationFailed(exc.detail, field=where) from None
        quality = d.get("quality")
        return cls(
            window_s=window,
            evaluate_every_s=jf.number(d.get("evaluate_every_s", min(60.0, window)),
                                       "evaluate_every_s"),
            max_records=jf.integer(d.get("max_records", 10_000), "max_records"),
            drift=DriftThresholds.from_dict(d.get("drift")),
            quality=QualitySpec.from_dict(quality) if quality is not None else None,
            slo=jf.number(d.get("slo"), "slo", optional=True),
            latency_window_s=jf.number(d.get("latency_window_s", 300.0), "latency_window_s"),
            alerts=tuple(rules),
            webhook=jf.string(d.get("webhook"), "webhook", optional=True))


def closed_windows(window_s: float, last_end: datetime | None, now: datetime,
                   limit: int = MAX_CATCH_UP) -> list[tuple[datetime, datetime]]:
    """Windows ``[start, end)`` that ended by ``now`` and after ``last_end`` (or only the
    latest one, for a new monitor), aligned to multiples of ``window_s`` since the epoch;
    at most ``limit`` of them, oldest first (the next run catches up the rest)."""
    step = timedelta(seconds=window_s)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    latest_end = epoch + step * math.floor((now - epoch) / step)
    first_end = latest_end if last_end is None else last_end + step
    out: list[tuple[datetime, datetime]] = []
    end = first_end
    while end <= latest_end and len(out) < limit:
        out.append((end - step, end))
        end += step
    return out


def _rows_of(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def window_columns(records: Iterable[Mapping[str, Any]], output: str | None = None
                   ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Logged records -> (input columns, predictions): each record's rows appended, inputs by
    name; predictions from ``output`` (default: the first output). Records whose payloads
    were truncated or dropped by redaction are skipped for the columns they lack."""
    inputs: dict[str, list[Any]] = {}
    predictions: list[Any] = []
    for record in records:
        ins, outs = record.get("inputs"), record.get("outputs")
        if not isinstance(ins, Mapping) or ins.get("_truncated"):
            continue
        rows = None
        for name, value in ins.items():
            column = _rows_of(value)
            if column is None:
                continue
            inputs.setdefault(name, []).extend(column)
            rows = len(column)
        if isinstance(outs, Mapping) and not outs.get("_truncated") and outs:
            chosen = output if output is not None else next(iter(outs))
            column = _rows_of(outs.get(chosen))
            if column is not None and (rows is None or len(column) == rows):
                predictions.extend(column)
    lengths = {len(v) for v in inputs.values()}
    if len(lengths) > 1:  # a column missing from some records: keep the common rows only
        shortest = min(lengths)
        inputs = {k: v[:shortest] for k, v in inputs.items()}
    columns = {k: _array(v) for k, v in inputs.items()}
    return columns, (_array(predictions) if predictions else None)


def _array(values: Sequence[Any]) -> np.ndarray:
    try:
        array = np.asarray(values)
    except ValueError:  # ragged rows
        array = np.asarray(values, dtype=object)
    if array.dtype == object:
        with contextlib.suppress(TypeError, ValueError):  # numbers with nulls: NaN
            array = np.asarray(values, dtype=np.float64)
    return array


def labelled_pairs(records: Iterable[Mapping[str, Any]], output: str | None = None,
                   scores_output: str | None = None
                   ) -> tuple[list[Any], list[Any], list[Any] | None]:
    """(y_true, y_pred, scores) from labelled records: a request of n rows needs a list of
    n labels (a single label for a single row is accepted too)."""
    truth: list[Any] = []
    predicted: list[Any] = []
    scores: list[Any] = []
    for record in records:
        outs = record.get("outputs")
        if not isinstance(outs, Mapping) or not outs or outs.get("_truncated"):
            continue
        chosen = output if output is not None else next(iter(outs))
        column = _rows_of(outs.get(chosen))
        if column is None:
            continue
        label = record.get("label")
        labels = label if isinstance(label, list) else [label]
        if len(labels) != len(column):
            continue  # a label per row, or it cannot be matched
        flat = [p[0] if isinstance(p, list) and len(p) == 1 else p for p in column]
        truth.extend(labels)
        predicted.extend(flat)
        if scores_output is not None:
            scored = _rows_of(outs.get(scores_output))
            if scored is not None and len(scored) == len(column):
                scores.extend(scored)
    usable_scores = scores if scores_output is not None and len(scores) == len(truth) \
        else None
    return truth, predicted, usable_scores


def training_columns(data: Any, names: list[str]) -> dict[str, Any]:
    """Training data as the model's inputs (an array for a single-input model, else a
    mapping of input name to rows): what its reference profile is computed from."""
    try:
        return as_input_dict(data, names)
    except ModelyardError as exc:
        raise ValidationFailed(f"data must be the training inputs, as the model takes them, "
                               f"to profile them: {exc.detail} (or pass profile=False)",
                               field="data") from None


def sample_rows(columns: Mapping[str, Any], limit: int, seed: int = 0
                ) -> dict[str, np.ndarray]:
    """At most ``limit`` rows of every column, the same seeded choice for each."""
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    count = min((a.shape[0] for a in arrays.values() if a.ndim), default=0)
    if count <= limit:
        return arrays
    chosen = np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))
    return {k: v[chosen] for k, v in arrays.items()}

