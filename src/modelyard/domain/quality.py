"""Live quality: how good the model's answers were, once the true labels came in.

Labels arrive late (a fraud case is confirmed days after the prediction), so these are
pure functions of the joined pairs a job collects for a window: classification (accuracy,
macro precision/recall/F1, ROC AUC from scores) and regression (MAE, RMSE, R²), computed
with ``sklearn.metrics``, plus a confidence interval for the main metric: Wilson's for
accuracy (a proportion), a percentile bootstrap with a fixed seed for the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from modelyard.domain import jsonfields as jf
from modelyard.domain.errors import ValidationFailed

QUALITY_SCHEMA_VERSION = 1

Task = Literal["classification", "regression"]
CLASSIFICATION_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
DEFAULT_MIN_SAMPLES = 30  # below it an interval says little and alerts must not act on it
DEFAULT_BOOTSTRAP = 1000
_BOOTSTRAP_CELLS = 1 << 22  # resampled values held at once (bounded memory)


@dataclass(frozen=True)
class QualityReport:
    """Quality over one window of labelled predictions.

    ``metrics``: every metric of the task (None where undefined, e.g. ROC AUC without
    scores or with one class only). ``value``/``interval``: the main metric and its
    ``confidence`` interval. ``status`` is "insufficient_data" below ``min_samples`` pairs:
    the numbers are still there, but alerts must not act on them.
    """

    task: Task
    n: int
    metrics: Mapping[str, float | None]
    main_metric: str
    value: float | None
    interval: tuple[float, float] | None
    interval_method: Literal["wilson", "bootstrap"] | None
    confidence: float
    status: Literal["ok", "insufficient_data"]
    labels: tuple[str, ...] = ()  # classification: the classes, in score-column order
    schema_version: int = field(default=QUALITY_SCHEMA_VERSION)

    @property
    def higher_is_better(self) -> bool:
        return self.main_metric not in LOWER_IS_BETTER

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "task": self.task, "n": self.n,
                "metrics": {k: jf.finite_or_none(v) for k, v in self.metrics.items()},
                "main_metric": self.main_metric, "value": jf.finite_or_none(self.value),
                "interval": None if self.interval is None else list(self.interval),
                "interval_method": self.interval_method, "confidence": self.confidence,
                "higher_is_better": self.higher_is_better, "status": self.status,
                "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, data: Any) -> QualityReport:
        where = "quality_report"
        d = jf.obj(data, {"schema_version", "task", "n", "metrics", "main_metric", "value",
                          "interval", "interval_method", "confidence", "higher_is_better",
                          "status", "labels"}, "quality report", where)
        jf.schema(d, QUALITY_SCHEMA_VERSION, where)
        task = jf.string(jf.required(d, "task", where), f"{where}.task",
                         choices=("classification", "regression"))
        names = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
        raw = jf.required(d, "metrics", where)
        if not isinstance(raw, Mapping):
            raise ValidationFailed(f"{where}.metrics must be an object",
                                   field=f"{where}.metrics")
        metrics = {jf.string(k, f"{where}.metrics", choices=names):
                   jf.number(v, f"{where}.metrics.{k}", optional=True) for k, v in raw.items()}
        interval = d.get("interval")
        if interval is not None:
            pair = jf.numbers(interval, f"{where}.interval")
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ValidationFailed(f"{where}.interval must be [low, high]",
                                       field=f"{where}.interval")
            interval = (pair[0], pair[1])
        labels = d.get("labels", [])
        if not isinstance(labels, list):
            raise ValidationFailed(f"{where}.labels must be a list", field=f"{where}.labels")
        confidence = jf.number(jf.required(d, "confidence", where), f"{where}.confidence")
        if not 0 < confidence < 1:
            raise ValidationFailed(f"{where}.confidence must be between 0 and 1",
                                   field=f"{where}.confidence")
        return cls(task=task, n=jf.integer(jf.required(d, "n", where), f"{where}.n"),
                   metrics=metrics,
                   main_metric=jf.string(jf.required(d, "main_metric", where),
                                         f"{where}.main_metric", choices=names),
                   value=jf.number(d.get("value"), f"{where}.value", optional=True),
                   interval=interval,
                   interval_method=jf.string(d.get("interval_method"),
                                             f"{where}.interval_method", optional=True,
                                             choices=("wilson", "bootstrap")),
                   confidence=confidence,
                   status=jf.string(jf.required(d, "status", where), f"{where}.status",
                                    choices=("ok", "insufficient_data")),
                   labels=tuple(jf.string(v, f"{where}.labels") for v in labels))


# ---------------------------------------------------------------------------------------------
# Intervals


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion: unlike p ± z·se it stays inside [0, 1] and
    keeps its coverage near 0 and 1 (accuracy is often there)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValidationFailed("successes must be from 0 to n, n positive", field="n")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], n: int, *,
                       confidence: float = 0.95, replicates: int = DEFAULT_BOOTSTRAP,
                       seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap: ``statistic`` maps a (block, n) array of resampled row indices
    to one value per row (NaN where undefined, dropped). None when no replicate is
    defined."""
    rng = np.random.default_rng(seed)
    block = max(1, min(replicates, _BOOTSTRAP_CELLS // max(n, 1)))
    values = []
    for start in range(0, replicates, block):
        index = rng.integers(0, n, size=(min(block, replicates - start), n))
        values.append(np.asarray(statistic(index), dtype=np.float64))
    stats = np.concatenate(values)
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return None
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


def _check_common(confidence: float, replicates: int, min_samples: int) -> None:
    if not 0 < confidence < 1:
        raise ValidationFailed("confidence must be between 0 and 1", field="confidence")
    if not 100 <= replicates <= 100_000:
        raise ValidationFailed("n_bootstrap must be from 100 to 100000", field="n_bootstrap")
    if min_samples < 1:
        raise ValidationFailed("min_samples must be at least 1", field="min_samples")


# ---------------------------------------------------------------------------------------------
# Classification


def _encode(y_true: Any, y_pred: Any, labels: Any) -> tuple[np.ndarray, np.ndarray,
                                                            np.ndarray]:
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.size != p.size:
        raise ValidationFailed(f"y_true has {t.size} labels, y_pred {p.size}", field="y_pred")
    if not t.size:
        raise ValidationFailed("no labelled predictions", field="y_true")
    try:
        classes = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(labels)
    except TypeError as exc:  # mixed types cannot be sorted
        raise ValidationFailed("labels must all be of one type", field="y_true") from exc
    if classes.ndim != 1 or np.unique(classes).size != classes.size:
        raise ValidationFailed("labels must be distinct", field="labels")
    index = {v: i for i, v in enumerate(classes.tolist())}
    try:
        codes_t = np.array([index[v] for v in t.tolist()], dtype=np.int64)
        codes_p = np.array([index[v] for v in p.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValidationFailed(f"label {exc.args[0]!r} is not in labels", field="labels") from exc
    return codes_t, codes_p, classes


def _macro_prf(t: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """Macro precision, recall and F1 per row of code arrays (B, n), zero where undefined,
    as sklearn's ``zero_division=0`` with every label counted."""
    rows = t.shape[0]
    offset = (np.arange(rows) * k)[:, None]
    tp = np.bincount((offset + t)[t == p], minlength=rows * k).reshape(rows, k)
    true = np.bincount((offset + t).ravel(), minlength=rows * k).reshape(rows, k)
    predicted = np.bincount((offset + p).ravel(), minlength=rows * k).reshape(rows, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(true + predicted > 0, 2 * tp / (true + predicted), 0.0)
    return precision.mean(axis=1), recall.mean(axis=1), f1.mean(axis=1)


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if positive.all() or not positive.any():
        return math.nan  # one class only: undefined
    return float(roc_auc_score(positive, score))


def _roc_auc(t: np.ndarray, scores: np.ndarray | None, k: int) -> float:
    """Binary: AUC of the second label's score. Multiclass: one-vs-rest, the macro mean
    over the classes present in the window with both positives and negatives."""
    if scores is None:
        return math.nan
    if k == 2:
        column = scores if scores.ndim == 1 else scores[:, 1]
        return _auc(t == 1, column)
    per_class = [_auc(t == c, scores[:, c]) for c in range(k)]
    defined = [a for a in per_class if not math.isnan(a)]
    return float(np.mean(defined)) if defined else math.nan


def _scores(scores: Any, n: int, k: int) -> np.ndarray | None:
    if scores is None:
        return None
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.shape[0] != n or not np.all(np.isfinite(s)):
        raise ValidationFailed("scores must be finite, one row per label", field="scores")
    if s.ndim == 1 and k != 2:
        raise ValidationFailed("1-D scores are for binary tasks (the second label's score); "
                               "pass one column per label", field="scores")
    if s.ndim == 2 and s.shape[1] != k:
        raise ValidationFailed(f"scores have {s.shape[1]} columns for {k} labels; pass "
                               "labels in the order of the score columns", field="scores")
    if s.ndim > 2:
        raise ValidationFailed("scores must be 1-D or 2-D", field="scores")
    return s


def classification_quality(y_true: Any, y_pred: Any, scores: Any = None, *,
                           labels: Any = None, main_metric: str = "accuracy",
                           confidence: float = 0.95, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                           seed: int = 0, min_samples: int = DEFAULT_MIN_SAMPLES,
                           ) -> QualityReport:
    """Quality of class predictions ``y_pred`` against the true ``y_true``.

    ``labels``: every class in the order of the ``scores`` columns (default: the sorted
    classes seen); ``scores``: (n, classes) probabilities or scores, or for two classes the
    second label's score (1-D). Precision, recall and F1 are macro averages over
    ``labels`` (a class never predicted counts 0, as sklearn's ``zero_division=0``).
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    _check_common(confidence, n_bootstrap, min_samples)
    if main_metric not in CLASSIFICATION_METRICS:
        raise ValidationFailed(f"main_metric must be one of {', '.join(CLASSIFICATION_METRICS)}",
                               field="main_metric")
    t, p, classes = _encode(y_true, y_pred, labels)
    k, n = classes.size, t.size
    s = _scores(scores, n, k)
    precision, recall, f1, _ = precision_recall_fscore_support(
        t, p, labels=np.arange(k), average="macro", zero_division=0)
    auc = _roc_auc(t, s, k)
    metrics: dict[str, float | None] = {
        "accuracy": float(accuracy_score(t, p)), "precision_macro": float(precision),
        "recall_macro": float(recall), "f1_macro": float(f1),
        "roc_auc": None if math.isnan(auc) else auc}
    value = metrics[main_metric]
    interval: tuple[float, float] | None = None
    method: Literal["wilson", "bootstrap"] | None = None
    if main_metric == "accuracy":
        interval, method = wilson_interval(int(np.sum(t == p)), n, confidence), "wilson"
    elif value is not None:
        def statistic(index: np.ndarray) -> np.ndarray:
            if main_metric == "roc_auc":
                return np.array([_roc_auc(t[row], None if s is None else s[row], k)
                                 for row in index])
            prf = _macro_prf(t[index], p[index], k)
            return prf[("precision_macro", "recall_macro", "f1_macro").index(main_metric)]

        # AUC replicates call sklearn one by one: a tenth as many keep the cost bounded.
        replicates = max(100, n_bootstrap // 10) if main_metric == "roc_auc" else n_bootstrap
        interval = bootstrap_interval(statistic, n, confidence=confidence,
                                      replicates=replicates, seed=seed)
        method = "bootstrap" if interval is not None else None
    return QualityReport(task="classification", n=n, metrics=metrics, main_metric=main_metric,
                         value=value, interval=interval, interval_method=method,
                         confidence=confidence,
                         status="ok" if n >= min_samples else "insufficient_data",
                         labels=tuple(str(c) for c in classes.tolist()))


# ---------------------------------------------------------------------------------------------
# Regression


def regression_quality(y_true: Any, y_pred: Any, *, main_metric: str = "mae",
                       confidence: float = 0.95, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                       seed: int = 0, min_samples: int = DEFAULT_MIN_SAMPLES) -> QualityReport:
    """Quality of numeric predictions: MAE, RMSE and R² (None for a constant ``y_true``),
    with a bootstrap interval for ``main_metric``."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    _check_common(confidence, n_bootstrap, min_samples)
    if main_metric not in REGRESSION_METRICS:
        raise ValidationFailed(f"main_metric must be one of {', '.join(REGRESSION_METRICS)}",
                               field="main_metric")
    try:
        t = np.asarray(y_true, dtype=np.float64).ravel()
        p = np.asarray(y_pred, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ValidationFailed("y_true and y_pred must be numbers", field="y_true") from exc
    if t.size != p.size or not t.size:
        raise ValidationFailed("y_true and y_pred must be of the same non-zero length",
                               field="y_pred")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValidationFailed("y_true and y_pred must be finite", field="y_true")
    n = t.size
    constant = bool(np.all(t == t[0]))
    metrics: dict[str, float | None] = {
        "mae": float(mean_absolute_error(t, p)),
        "rmse": math.sqrt(float(mean_squared_error(t, p))),
        "r2": None if constant or n < 2 else float(r2_score(t, p))}
    value = metrics[main_metric]
    error = p - t

    def statistic(index: np.ndarray) -> np.ndarray:
        e = error[index]
        if main_metric == "mae":
            return np.mean(np.abs(e), axis=1)
        if main_metric == "rmse":
            return np.sqrt(np.mean(e * e, axis=1))
        truth = t[index]
        total = np.sum((truth - truth.mean(axis=1, keepdims=True)) ** 2, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, 1 - np.sum(e * e, axis=1) / total, np.nan)

    interval = None if value is None else bootstrap_interval(
        statistic, n, confidence=confidence, replicates=n_bootstrap, seed=seed)
    return QualityReport(task="regression", n=n, metrics=metrics, main_metric=main_metric,
                         value=value, interval=interval,
                         interval_method="bootstrap" if interval is not None else None,
                         confidence=confidence,
                         status="ok" if n >= min_samples else "insufficient_data")
