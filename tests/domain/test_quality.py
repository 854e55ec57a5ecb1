"""Live quality from delayed labels: the metrics, and intervals that cover."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn import metrics as skm

from modelyard.domain.errors import ValidationFailed
from modelyard.domain.quality import (
    QualityReport,
    _macro_prf,
    bootstrap_interval,
    classification_quality,
    regression_quality,
    wilson_interval,
)

RNG = np.random.default_rng(20240611)


def noisy_labels(rng: np.random.Generator, n: int, classes: int = 3,
                 accuracy: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = rng.integers(0, classes, n)
    pred = np.where(rng.random(n) < accuracy, y, rng.integers(0, classes, n))
    scores = rng.dirichlet(np.ones(classes), n)
    scores[np.arange(n), y] += 0.6
    return y, pred, scores / scores.sum(axis=1, keepdims=True)


def test_classification_metrics_match_sklearn() -> None:
    y, pred, scores = noisy_labels(RNG, 2_000)
    report = classification_quality(y, pred, scores)
    m = report.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores, multi_class="ovr"))
    assert report.main_metric == "accuracy" and report.value == m["accuracy"]
    assert report.interval_method == "wilson" and report.status == "ok"
    assert report.labels == ("0", "1", "2") and report.n == 2_000


def test_binary_auc_uses_the_second_labels_score() -> None:
    y = RNG.integers(0, 2, 1_000)
    score = np.clip(y * 0.3 + RNG.random(1_000) * 0.7, 0, 1)
    words = np.where(y == 1, "spam", "ham")
    report = classification_quality(words, np.where(score > 0.5, "spam", "ham"), score)
    assert report.labels == ("ham", "spam")
    assert report.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    two_columns = np.column_stack([1 - score, score])
    again = classification_quality(words, words, two_columns, main_metric="roc_auc",
                                   n_bootstrap=200)
    assert again.value == pytest.approx(report.metrics["roc_auc"])
    assert again.interval is not None and again.interval[0] < again.value < again.interval[1]


def test_auc_is_none_without_scores_or_with_one_class() -> None:
    assert classification_quality([1, 0, 1], [1, 1, 1]).metrics["roc_auc"] is None
    one_class = classification_quality([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.7],
                                       labels=[0, 1])
    assert one_class.metrics["roc_auc"] is None


def test_vectorised_bootstrap_metrics_equal_sklearn() -> None:
    y, pred, _ = noisy_labels(RNG, 300, classes=4)
    index = RNG.integers(0, 300, (5, 300))
    precision, recall, f1 = _macro_prf(y[index], pred[index], 4)
    for row, i in enumerate(index):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y[i], pred[i], labels=[0, 1, 2, 3], average="macro", zero_division=0)
        assert (precision[row], recall[row], f1[row]) == pytest.approx((p, r, f))


def test_wilson_interval_matches_scipy() -> None:
    for k, n in ((81, 100), (0, 20), (20, 20), (3, 1_000)):
        expected = scipy_stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high))


def test_wilson_interval_covers_the_true_accuracy() -> None:
    # 2,000 windows of 200 predictions at a true accuracy of 0.92: ~95% must cover it.
    rng = np.random.default_rng(1)
    hits = rng.binomial(200, 0.92, 2_000)
    covered = np.mean([lo <= 0.92 <= hi for lo, hi in (wilson_interval(int(k), 200)
                                                       for k in hits)])
    assert 0.93 <= covered <= 0.97


def test_bootstrap_interval_covers_the_true_mae() -> None:
    # |N(0, 1)| has mean sqrt(2/pi): 150 windows of 300 errors, ~95% should cover it.
    rng = np.random.default_rng(2)
    truth, covered = np.sqrt(2 / np.pi), 0
    for seed in range(150):
        errors = rng.normal(size=300)
        report = regression_quality(np.zeros(300), errors, n_bootstrap=400, seed=seed)
        assert report.interval is not None
        covered += report.interval[0] <= truth <= report.interval[1]
    assert 0.88 <= covered / 150 <= 0.99


def test_f1_bootstrap_interval_brackets_the_estimate() -> None:
    y, pred, _ = noisy_labels(RNG, 1_000)
    report = classification_quality(y, pred, main_metric="f1_macro", n_bootstrap=500)
    assert report.interval_method == "bootstrap" and report.interval is not None
    low, high = report.interval
    assert report.value is not None and low < report.value < high and high - low < 0.1
    again = classification_quality(y, pred, main_metric="f1_macro", n_bootstrap=500)
    assert again.interval == report.interval  # fixed seed: reproducible


def test_regression_metrics_match_sklearn() -> None:
    y = RNG.normal(size=1_000)
    pred = y + RNG.normal(0, 0.5, 1_000)
    report = regression_quality(y, pred, main_metric="r2", n_bootstrap=300)
    m = report.metrics
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert report.interval is not None and report.interval[0] < m["r2"] < report.interval[1]
    assert report.higher_is_better  # r2
    assert regression_quality(y, pred).higher_is_better is False  # mae


def test_r2_is_none_for_a_constant_truth() -> None:
    report = regression_quality([1.0] * 50, RNG.normal(size=50), main_metric="r2")
    assert report.metrics["r2"] is None and report.value is None and report.interval is None


def test_few_labels_are_insufficient_data() -> None:
    report = classification_quality([1, 0, 1], [1, 1, 1])
    assert report.status == "insufficient_data" and report.n == 3
    assert report.value == pytest.approx(2 / 3)  # still reported, for humans


def test_invalid_inputs_are_refused() -> None:
    cases = [
        (lambda: classification_quality([1, 2], [1]), "y_pred"),
        (lambda: classification_quality([], []), "y_true"),
        (lambda: classification_quality([1, 2], [1, 3], labels=[1, 2]), "labels"),
        (lambda: classification_quality([0, 1, 2], [0, 1, 2], np.zeros((3, 2))), "scores"),
        (lambda: classification_quality([0, 1, 2], [0, 1, 2], np.zeros(3)), "scores"),
        (lambda: classification_quality([0, 1], [0, 1], main_metric="auc"), "main_metric"),
        (lambda: regression_quality([1.0, np.nan], [1.0, 2.0]), "y_true"),
        (lambda: regression_quality(["a"], [1.0]), "y_true"),
        (lambda: regression_quality([1.0], [1.0], confidence=1.5), "confidence"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationFailed) as info:
            call()
        assert info.value.field == field


def test_report_round_trips_through_json() -> None:
    y, pred, scores = noisy_labels(RNG, 500)
    for report in (classification_quality(y, pred, scores),
                   regression_quality(y.astype(float), pred.astype(float), n_bootstrap=200)):
        data = json.loads(json.dumps(report.to_dict()))
        assert QualityReport.from_dict(data).to_dict() == report.to_dict()
    data = classification_quality(y, pred).to_dict()
    data["metrics"]["mae"] = 1.0
    with pytest.raises(ValidationFailed) as info:
        QualityReport.from_dict(data)
    assert info.value.field == "quality_report.metrics"


def test_bootstrap_drops_undefined_replicates() -> None:
    assert bootstrap_interval(lambda index: np.full(index.shape[0], np.nan), 10,
                              replicates=100) is None
