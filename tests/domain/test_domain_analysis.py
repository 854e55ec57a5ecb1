"""Rollout analysis: thresholds, verdicts, divergence, and A/B tests that survive peeking."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from modelyard.domain.analysis import (
    CONTROL_BETTER,
    NO_DIFFERENCE_YET,
    TREATMENT_BETTER,
    Sample,
    Thresholds,
    WindowStats,
    ab_test,
    analyze,
    histograms,
    jensen_shannon,
    psi,
    psi_meaning,
    quantile,
    sequential_p_values,
)
from modelyard.domain.errors import ValidationFailed

RNG = np.random.default_rng(20240611)


def window(version: str = "m:2", requests: int = 500, errors: int = 0,
           p99_ms: float = 20.0, predictions: Any = None, **extra: Any) -> WindowStats:
    """Stats whose latency sample has the given p99 (all values equal to it)."""
    latencies = np.full(min(requests, 300), p99_ms / 1000)
    return WindowStats(version, requests, errors, latencies_s=latencies,
                       predictions=np.zeros(0) if predictions is None else predictions,
                       **extra)


NORMAL = RNG.normal(0.5, 0.1, 1_000)


# Thresholds ----------------------------------------------------------------------------------

def test_thresholds_defaults_round_trip() -> None:
    t = Thresholds()
    assert (t.min_requests, t.max_error_rate, t.max_p99_ratio, t.p99_slack_ms,
            t.max_divergence, t.failures_to_rollback) == (50, 0.01, 1.5, 5.0, 0.2, 2)
    assert t.max_error_rate_increase is None and t.max_p99_ms is None
    assert t.min_agreement is None
    assert Thresholds.from_dict(t.to_dict()) == t
    assert Thresholds.from_dict(None) == t
    custom = Thresholds.from_dict({"min_requests": 200.0, "max_p99_ms": 250,
                                   "max_divergence": None})
    assert custom.min_requests == 200 and isinstance(custom.min_requests, int)
    assert custom.max_p99_ms == 250.0 and custom.max_divergence is None
    assert custom.merged({"min_agreement": 0.99}).min_agreement == 0.99


@pytest.mark.parametrize(("data", "field"), [
    ({"min_requests": 0}, "analysis.min_requests"),
    ({"min_requests": 10.5}, "analysis.min_requests"),
    ({"min_requests": True}, "analysis.min_requests"),
    ({"max_error_rate": 1.5}, "analysis.max_error_rate"),
    ({"max_error_rate": None}, "analysis.max_error_rate"),
    ({"max_error_rate": "1%"}, "analysis.max_error_rate"),
    ({"max_error_rate": float("nan")}, "analysis.max_error_rate"),
    ({"max_p99_ratio": 0.5}, "analysis.max_p99_ratio"),
    ({"p99_slack_ms": -1}, "analysis.p99_slack_ms"),
    ({"max_p99_ms": 0}, "analysis.max_p99_ms"),
    ({"min_agreement": 2}, "analysis.min_agreement"),
    ({"failures_to_rollback": 0}, "analysis.failures_to_rollback"),
    ({"max_eror_rate": 0.1}, "analysis.max_eror_rate"),
])
def test_thresholds_reject_bad_values(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Thresholds.from_dict(data)
    assert caught.value.field == field


# Window stats --------------------------------------------------------------------------------

def test_window_stats_validate_and_summarize() -> None:
    with pytest.raises(ValidationFailed):
        WindowStats("v", requests=1, errors=2)
    with pytest.raises(ValidationFailed):
        WindowStats("v", agreed=3, compared=2)
    with pytest.raises(ValidationFailed):
        WindowStats("v", latencies_s=np.array([0.1, 0.2]), latency_weights=np.array([1.0]))
    with pytest.raises(ValidationFailed):
        WindowStats("v", predictions=np.array([np.nan]))
    stats = WindowStats("v", 4, 1, latencies_s=np.array([0.1, 0.2, 0.3, 0.4]))
    assert stats.error_rate == 0.25
    assert stats.p50_s == pytest.approx(0.25)
    assert json.loads(json.dumps(stats.to_dict()))["latency_samples"] == 4


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1e3), min_size=1, max_size=50), st.floats(0, 1))
def test_quantile_matches_numpy_without_weights(values: list[float], q: float) -> None:
    x = np.array(values)
    assert quantile(x, q) == pytest.approx(np.quantile(x, q))
    assert quantile(x, q, np.full(x.size, 3.0)) == pytest.approx(np.quantile(x, q))


# Verdicts ------------------------------------------------------------------------------------

def test_healthy_canary_passes() -> None:
    verdict = analyze(window(predictions=NORMAL), window("m:1", 5_000, 10, predictions=NORMAL),
                      Thresholds(max_error_rate_increase=0.005, max_p99_ms=100))
    assert verdict.status == "pass", verdict.reason
    assert [c.name for c in verdict.checks] == ["traffic", "error_rate", "error_rate_increase",
                                                "p99_ratio", "p99", "divergence"]
    json.dumps(verdict.to_dict())


def test_too_little_traffic_waits_and_never_passes() -> None:
    canary = window(requests=30, predictions=NORMAL[:30])
    verdict = analyze(canary, window("m:1", 5_000, predictions=NORMAL), Thresholds())
    assert verdict.status == "wait"
    assert verdict.check("traffic").status == "wait"  # type: ignore[union-attr]
    assert "30 of 50 requests needed" in verdict.reason
    assert analyze(window(requests=0), None, Thresholds()).status == "wait"


def test_clear_failures_do_not_wait_for_the_minimum() -> None:
    verdict = analyze(window(requests=10, errors=10), None, Thresholds())
    assert verdict.status == "fail"
    assert verdict.check("error_rate").status == "fail"  # type: ignore[union-attr]
    # The rule: errors already above max_error_rate x min_requests. At 1% of 50 that is a
    # single error (50 requests cannot show a rate below 2% with one); at 5%, three errors.
    assert analyze(window(requests=10, errors=1), None, Thresholds()).status == "fail"
    assert analyze(window(requests=10, errors=3), None,
                   Thresholds(max_error_rate=0.05)).status == "fail"
    assert analyze(window(requests=10, errors=2), None,
                   Thresholds(max_error_rate=0.05)).status == "wait"


def test_error_rate_limit() -> None:
    verdict = analyze(window(requests=1_000, errors=42), None, Thresholds())
    check = verdict.check("error_rate")
    assert verdict.status == "fail" and check is not None
    assert check.detail == "error rate 4.2% > 1.0% over 1000 requests"
    assert (check.value, check.limit) == (0.042, 0.01)
    assert analyze(window(requests=1_000, errors=10), None, Thresholds()).status == "pass"


def test_error_rate_increase_over_baseline() -> None:
    t = Thresholds(max_error_rate=0.05, max_error_rate_increase=0.005)
    base = window("m:1", 10_000, 100)  # 1%
    assert analyze(window(requests=1_000, errors=14), base, t).status == "pass"  # +0.4
    failed = analyze(window(requests=1_000, errors=20), base, t)  # +1.0 point
    assert failed.status == "fail"
    assert "+1.00 points > +0.50" in failed.check("error_rate_increase").detail  # type: ignore
    thin = analyze(window(requests=1_000, errors=14), window("m:1", 20), t)
    assert thin.check("error_rate_increase").status == "wait"  # type: ignore[union-attr]


def test_p99_relative_to_baseline_with_slack() -> None:
    t = Thresholds(max_divergence=None)
    base = window("m:1", 5_000, p99_ms=100)
    assert analyze(window(p99_ms=150), base, t).status == "pass"
    slow = analyze(window(p99_ms=160), base, t)
    assert slow.status == "fail"
    assert slow.check("p99_ratio").detail == (  # type: ignore[union-attr]
        "p99 160.0 ms > 1.5 x baseline 100.0 ms + 5 ms = 155.0 ms")
    # fast baselines: the slack keeps 2 ms -> 7 ms from being a failure
    assert analyze(window(p99_ms=7), window("m:1", 5_000, p99_ms=2), t).status == "pass"
    assert analyze(window(p99_ms=9), window("m:1", 5_000, p99_ms=2), t).status == "fail"
    thin = analyze(window(p99_ms=10), window("m:1", 10, p99_ms=10), t)
    assert thin.status == "wait"


def test_absolute_p99() -> None:
    t = Thresholds(max_p99_ms=200)
    assert analyze(window(p99_ms=150), None, t).status == "pass"
    assert analyze(window(p99_ms=250), None, t).status == "fail"
    assert analyze(window(requests=20, p99_ms=150), None, t).check(  # type: ignore[union-attr]
        "p99").status == "wait"


def test_no_baseline_leaves_relative_checks_out() -> None:
    verdict = analyze(window(predictions=NORMAL), None,
                      Thresholds(max_error_rate_increase=0.01))
    assert verdict.status == "pass"
    assert [c.name for c in verdict.checks] == ["traffic", "error_rate"]


def test_prediction_divergence() -> None:
    base = window("m:1", 5_000, predictions=NORMAL)
    same = analyze(window(predictions=RNG.normal(0.5, 0.1, 500)), base, Thresholds())
    assert same.status == "pass"
    shifted = analyze(window(predictions=RNG.normal(0.6, 0.1, 500)), base, Thresholds())
    check = shifted.check("divergence")
    assert shifted.status == "fail" and check is not None
    assert "(shifted)" in check.detail and check.value is not None and check.value > 0.2
    few = analyze(window(predictions=NORMAL[:50]), base, Thresholds())
    assert few.check("divergence").status == "wait"  # type: ignore[union-attr]
    assert few.status == "wait"  # 50 requests pass the traffic check, yet no pass
    none = analyze(window(), window("m:1", 5_000), Thresholds())  # no numeric answers at all
    assert none.status == "pass" and none.check("divergence") is None
    missing = analyze(window(predictions=NORMAL), window("m:1", 5_000), Thresholds())
    assert missing.check("divergence").status == "wait"  # type: ignore[union-attr]


def test_shadow_divergence_uses_the_paired_answers() -> None:
    shadow = window(predictions=NORMAL + 0.1, paired_predictions=NORMAL + 0.1,
                    agreed=480, compared=500)
    # The baseline's own window looks different, but on the same requests they agree.
    verdict = analyze(shadow, window("m:1", 5_000, predictions=NORMAL), Thresholds())
    assert verdict.status == "pass"
    assert "same requests" in verdict.check("divergence").detail  # type: ignore[union-attr]


def test_agreement() -> None:
    t = Thresholds(min_agreement=0.95)
    assert analyze(window(agreed=490, compared=500), None, t).status == "pass"
    low = analyze(window(agreed=400, compared=500), None, t)
    assert low.status == "fail"
    assert low.check("agreement").detail == (  # type: ignore[union-attr]
        "agreement 80.0% < 95.0% over 500 compared")
    assert analyze(window(agreed=10, compared=10), None, t).status == "wait"


def test_any_failure_beats_waiting() -> None:
    verdict = analyze(window(errors=100, predictions=NORMAL[:20]),
                      window("m:1", 5_000, predictions=NORMAL), Thresholds())
    assert verdict.status == "fail"
    assert verdict.reason.startswith("error rate 20.0% > 1.0%")


# Divergence ----------------------------------------------------------------------------------

def test_psi_reads_stable_for_the_same_distribution_and_shifted_for_another() -> None:
    baseline = RNG.normal(0, 1, 5_000)
    assert psi(baseline, RNG.normal(0, 1, 5_000)) == pytest.approx(0, abs=0.02)
    assert psi(baseline, baseline) == pytest.approx(0, abs=1e-12)
    moved = psi(baseline, RNG.normal(0.8, 1, 5_000))
    assert moved is not None and moved > 0.2 and psi_meaning(moved) == "shifted"
    wider = psi(baseline, RNG.normal(0, 2, 5_000))
    assert wider is not None and wider > 0.2
    assert psi_meaning(0.05) == "stable" and psi_meaning(0.15) == "drifting"


def test_psi_needs_enough_samples() -> None:
    assert psi(NORMAL, NORMAL[:199]) is None  # 20 per bin, 10 bins
    assert psi(NORMAL[:199], NORMAL) is None
    assert psi(NORMAL, NORMAL[:200]) is not None
    assert psi(NORMAL, NORMAL[:40], bins=2) is not None


def test_psi_on_discrete_answers_uses_each_value_as_a_bin() -> None:
    constant = np.full(1_000, 0.5)
    assert psi(constant, np.full(500, 0.5)) == 0
    other = psi(constant, np.full(500, 0.7))  # quantile bins would all collapse into one
    assert other is not None and other > 1
    labels = (RNG.random(2_000) < 0.3).astype(float)
    assert psi(labels, (RNG.random(2_000) < 0.3).astype(float)) == pytest.approx(0, abs=0.02)
    flipped = psi(labels, (RNG.random(2_000) < 0.6).astype(float))
    assert flipped is not None and flipped > 0.2


def test_psi_weights_and_bad_input() -> None:
    assert psi(NORMAL, NORMAL[:500], expected_weights=np.full(1_000, 2.5)) == pytest.approx(
        psi(NORMAL, NORMAL[:500]))
    with pytest.raises(ValidationFailed):
        psi(NORMAL, np.append(NORMAL, np.nan))
    with pytest.raises(ValidationFailed):
        psi(NORMAL, NORMAL, bins=1)
    with pytest.raises(ValidationFailed):
        psi(NORMAL, NORMAL, actual_weights=np.ones(3))


def test_jensen_shannon_bounds() -> None:
    assert jensen_shannon([1, 2, 3], [2, 4, 6]) == pytest.approx(0)
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1)
    assert jensen_shannon([0, 0], [1, 1]) is None
    with pytest.raises(ValidationFailed):
        jensen_shannon([1, -1], [1, 1])
    with pytest.raises(ValidationFailed):
        jensen_shannon([1, 1], [1, 1, 1])
    shares = histograms(NORMAL, RNG.normal(0.8, 0.1, 1_000))
    assert shares is not None
    far = jensen_shannon(*shares)
    assert far is not None and 0.5 < far <= 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=4, max_size=4),
       st.lists(st.floats(0, 100), min_size=4, max_size=4))
def test_jensen_shannon_is_symmetric_and_within_0_and_1(p: list[float], q: list[float]) -> None:
    value = jensen_shannon(p, q)
    if sum(p) == 0 or sum(q) == 0:
        assert value is None
        return
    assert value is not None and 0 <= value <= 1
    assert value == pytest.approx(jensen_shannon(q, p), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.floats(-3, 3), st.floats(0.2, 3), st.integers(0, 2**32 - 1))
def test_psi_is_never_negative(shift: float, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    value = psi(rng.normal(0, 1, 300), rng.normal(shift, scale, 300))
    assert value is not None and value >= 0


# Samples -------------------------------------------------------------------------------------

def test_samples() -> None:
    s = Sample.of([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean, s.variance, s.binary) == (4, 2.5, pytest.approx(5 / 3), False)
    b = Sample.of([0, 1, 1, 1])
    assert b.binary and b.variance == pytest.approx(0.1875)
    assert Sample.proportion(3, 4) == b
    assert Sample.of([]).n == 0
    with pytest.raises(ValidationFailed):
        Sample.proportion(5, 4)
    with pytest.raises(ValidationFailed):
        Sample(3, 0.5, -1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-100, 100), max_size=20), st.lists(st.floats(-100, 100), max_size=20))
def test_merged_samples_equal_the_concatenation(a: list[float], b: list[float]) -> None:
    merged = Sample.of(a, binary=False).merged(Sample.of(b, binary=False))
    whole = Sample.of(a + b, binary=False)
    assert merged.n == whole.n
    assert merged.mean == pytest.approx(whole.mean, abs=1e-9)
    assert merged.variance == pytest.approx(whole.variance, rel=1e-6, abs=1e-6)


# A/B tests -----------------------------------------------------------------------------------

def test_always_valid_p_value_survives_peeking_under_the_null() -> None:
    """200 A/A experiments, each checked after every one of 2,000 observations per arm."""
    rng = np.random.default_rng(7)
    alpha, false_alarms, naive_alarms = 0.05, 0, 0
    for i in range(200):
        if i % 2:
            control, treatment = rng.normal(3, 2, (2, 2_000))
        else:
            control, treatment = (rng.random((2, 2_000)) < 0.1).astype(float)
        false_alarms += sequential_p_values(control, treatment)[-1] <= alpha
        # The classical test, peeked at every 50 observations, would cry wolf far more often.
        naive_alarms += any(scipy_stats.ttest_ind(control[:n], treatment[:n]).pvalue <= alpha
                            for n in range(50, 2_001, 50))
    assert false_alarms <= 0.05 * 200  # at least 95% never crossed alpha
    assert naive_alarms > false_alarms


def test_a_real_effect_is_detected_and_covered() -> None:
    rng = np.random.default_rng(8)
    effect, detected, covered = 0.25, 0, 0
    for _ in range(100):
        control, treatment = rng.normal(1, 1, 2_000), rng.normal(1 + effect, 1, 2_000)
        detected += sequential_p_values(control, treatment)[-1] <= 0.05
        result = ab_test(control, treatment)
        covered += result.interval[0] <= effect <= result.interval[1]
    assert detected >= 95
    assert covered >= 95


def test_the_confidence_sequence_covers_at_every_step() -> None:
    rng = np.random.default_rng(9)
    effect, covered = 0.3, 0
    for _ in range(20):
        control, treatment = rng.normal(0, 1, 300), rng.normal(effect, 1, 300)
        result, ok = None, True
        for n in range(1, 301):
            result = ab_test(control[:n], treatment[:n], previous=result)
            ok &= result.interval[0] <= effect <= result.interval[1]
        covered += ok
    assert covered >= 18


def test_chained_ab_tests_equal_the_vectorized_replay() -> None:
    rng = np.random.default_rng(10)
    control, treatment = rng.normal(0, 1, 250), rng.normal(0.4, 1, 250)
    replay = sequential_p_values(control, treatment)
    result = None
    for n in range(1, 251):
        result = ab_test(Sample.of(control[:n]), Sample.of(treatment[:n]), previous=result)
        assert result.p_value == pytest.approx(replay[n - 1], rel=1e-9, abs=1e-12)
    assert result is not None and result.decision == TREATMENT_BETTER
    assert result.p_value <= 0.05 and result.interval[0] > 0


def test_binary_arms_and_lower_is_better() -> None:
    control, treatment = Sample.proportion(300, 10_000), Sample.proportion(150, 10_000)
    result = ab_test(control, treatment, higher_is_better=False)
    assert result.fixed_test == "two_proportion_z"
    assert result.decision == TREATMENT_BETTER  # half the error rate
    assert result.difference == pytest.approx(-0.015)
    assert result.relative == pytest.approx(-0.5)
    assert result.interval[1] < 0
    table = [[300, 9_700], [150, 9_850]]
    chi2 = scipy_stats.chi2_contingency(table, correction=False)
    assert result.fixed_p_value == pytest.approx(chi2.pvalue, rel=1e-6)
    worse = ab_test(treatment, control, higher_is_better=False)
    assert worse.decision == CONTROL_BETTER


def test_fixed_horizon_welch_matches_scipy() -> None:
    rng = np.random.default_rng(11)
    control, treatment = rng.normal(0, 1, 80), rng.normal(0.3, 2, 120)
    result = ab_test(control, treatment)
    expected = scipy_stats.ttest_ind(treatment, control, equal_var=False)
    assert result.fixed_test == "welch_t"
    assert result.fixed_p_value == pytest.approx(expected.pvalue, rel=1e-9)
    ci = expected.confidence_interval(0.95)
    assert result.fixed_interval == pytest.approx((ci.low, ci.high), rel=1e-9)
    # the always-valid interval is the price of peeking: wider than the fixed one
    assert result.interval[1] - result.interval[0] > ci.high - ci.low


def test_too_few_observations_decide_nothing() -> None:
    result = ab_test([1.0, 2.0, 3.0], [10.0, 11.0, 12.0])
    assert (result.p_value, result.decision) == (1.0, NO_DIFFERENCE_YET)
    assert result.interval == (-math.inf, math.inf)
    assert result.mixing_sd is None
    assert json.loads(json.dumps(result.to_dict()))["interval"] == [None, None]
    assert ab_test(Sample.of([0.0] * 40), Sample.of([0.0] * 40)).p_value == 1.0


def test_ab_test_rejects_bad_arguments() -> None:
    first = ab_test(NORMAL[:100], NORMAL[100:200])
    with pytest.raises(ValidationFailed):
        ab_test(NORMAL[:100], NORMAL[100:200], alpha=0)
    with pytest.raises(ValidationFailed):
        ab_test(NORMAL[:100], NORMAL[100:200], alpha=0.1, previous=first)
    with pytest.raises(ValidationFailed):
        ab_test(NORMAL[:50], NORMAL[100:150], previous=first)
    with pytest.raises(ValidationFailed):
        ab_test(NORMAL[:100], NORMAL[100:200], mixing_sd=0)
    with pytest.raises(ValidationFailed):
        ab_test(["a"], [1.0])  # type: ignore[list-item]


def test_stated_mixing_sd_is_kept() -> None:
    result = ab_test(NORMAL[:100], NORMAL[100:200], mixing_sd=0.05)
    assert result.mixing_sd == 0.05
    assert ab_test(NORMAL[:150], NORMAL[100:250], previous=result).mixing_sd == 0.05
