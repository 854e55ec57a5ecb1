"""Drift tests against a profile: quiet on unchanged data, loud on real changes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from modelyard.domain.analysis import psi
from modelyard.domain.drift import (
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    detect_drift,
    ks_p_value,
    mmd_permutation_test,
    psi_of_shares,
)
from modelyard.domain.errors import ValidationFailed
from modelyard.domain.profiles import Profile, build_profile

CITIES = np.array(["paris", "lyon", "nice", "lille", "nantes"], dtype=object)
CITY_SHARES = [0.4, 0.25, 0.15, 0.12, 0.08]


def tabular(rng: np.random.Generator, n: int, *, shift: float = 0.0, scale: float = 1.0,
            cities: Any = CITIES, shares: Any = CITY_SHARES) -> dict[str, Any]:
    return {"age": rng.normal(40 + shift * 12, 12 * scale, n),
            "income": rng.lognormal(10, 0.5, n),
            "city": rng.choice(cities, n, p=shares),
            "rooms": rng.integers(1, 6, n)}


@pytest.fixture(scope="module")
def reference() -> Profile:
    rng = np.random.default_rng(1)
    data = tabular(rng, 20_000)
    return build_profile(data, predictions=rng.random(20_000))


def result(report: DriftReport, feature: str, test: str) -> FeatureDrift:
    found = [r for r in report.results_for(feature) if r.test == test]
    assert len(found) == 1, (feature, test, report.results_for(feature))
    return found[0]


# No drift --------------------------------------------------------------------------------------

def test_same_distribution_is_not_flagged(reference: Profile) -> None:
    rng = np.random.default_rng(2)
    report = detect_drift(reference, tabular(rng, 2_000), predictions=rng.random(2_000))
    assert report.drifted is False and report.score == 0.0
    assert report.tested == 5 and report.corrected_alpha == pytest.approx(0.01 / 5)
    assert report.drifted_features == () and report.quality_issues == ()
    assert {r.test for r in report.features} == {"ks", "psi", "chi2", "missing_rate",
                                                 "out_of_range", "new_categories"}
    assert all(r.status in ("ok", "warn") for r in (*report.features, *report.predictions))
    assert result(report, "age", "psi").statistic < 0.1


def test_false_positive_rate_stays_under_alpha(reference: Profile) -> None:
    # 200 unchanged windows of 500 rows: the family-wise level is 1%, so about 2 flagged;
    # more than 8 would happen with probability < 0.1% if the level held.
    flagged, ks_p = 0, []
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        report = detect_drift(reference, tabular(rng, 500), predictions=rng.random(500))
        flagged += bool(report.drifted)
        ks_p.append(result(report, "age", "ks").p_value)
    assert flagged <= 8
    # Calibrated, slightly conservative (the summary's CDF error is given to the null):
    # p-values spread over [0, 1] rather than piling up near 0 or 1.
    p = np.array(ks_p)
    assert 0.4 < p.mean() < 0.7 and 0.01 <= np.mean(p < 0.1) <= 0.15


# Drift -----------------------------------------------------------------------------------------

def test_a_shifted_mean_is_flagged(reference: Profile) -> None:
    report = detect_drift(reference, tabular(np.random.default_rng(3), 2_000, shift=0.25))
    ks = result(report, "age", "ks")
    assert ks.drifted and ks.status == "drift" and ks.p_value is not None
    assert ks.p_value < report.corrected_alpha
    assert report.drifted and report.drifted_features == ("age",)
    assert report.score == pytest.approx(1 / 4)


def test_a_change_of_spread_is_flagged(reference: Profile) -> None:
    report = detect_drift(reference, tabular(np.random.default_rng(4), 2_000, scale=1.5))
    assert result(report, "age", "ks").drifted
    assert result(report, "age", "psi").status in ("warn", "drift")


def test_a_large_shift_reads_as_psi_drift(reference: Profile) -> None:
    report = detect_drift(reference, tabular(np.random.default_rng(5), 2_000, shift=1.0))
    value = result(report, "age", "psi")
    assert value.status == "drift" and value.statistic is not None and value.statistic > 0.2
    assert value.drifted and value.p_value is None and value.threshold == 0.2


def test_a_new_category_is_flagged(reference: Profile) -> None:
    cities = np.array([*CITIES, "brest"], dtype=object)
    shares = [0.36, 0.22, 0.14, 0.11, 0.07, 0.10]
    report = detect_drift(reference, tabular(np.random.default_rng(6), 2_000, cities=cities,
                                             shares=shares))
    assert result(report, "city", "chi2").drifted
    new = result(report, "city", "new_categories")
    assert new.drifted and new.statistic == pytest.approx(0.10, abs=0.02)
    assert report.drifted_features == ("city",)
    assert [f"{r.feature}:{r.test}" for r in report.quality_issues] == ["city:new_categories"]


def test_changed_category_shares_are_flagged(reference: Profile) -> None:
    shares = [0.3, 0.25, 0.15, 0.12, 0.18]
    report = detect_drift(reference, tabular(np.random.default_rng(7), 2_000, shares=shares))
    assert result(report, "city", "chi2").drifted
    assert not result(report, "city", "new_categories").drifted


def test_prediction_drift_is_flagged(reference: Profile) -> None:
    rng = np.random.default_rng(8)
    report = detect_drift(reference, tabular(rng, 2_000), predictions=rng.beta(2, 1, 2_000))
    assert report.drifted_features == ("prediction",)
    assert result(report, "prediction", "ks").drifted
    assert report.predictions and not any(r.drifted for r in report.features)


def test_data_quality_checks(reference: Profile) -> None:
    rng = np.random.default_rng(9)
    window = tabular(rng, 2_000)
    window["age"][:200] = np.nan  # 10% missing, the reference had none
    window["income"][:100] = 1e9  # 5% far above anything seen in training
    report = detect_drift(reference, window)
    missing = result(report, "age", "missing_rate")
    assert missing.drifted and missing.statistic == pytest.approx(0.1)
    outside = result(report, "income", "out_of_range")
    assert outside.drifted and outside.statistic == pytest.approx(0.05)
    # Quality issues are reported apart: they do not by themselves make drift.
    assert not result(report, "age", "ks").drifted
    assert {(r.feature, r.test) for r in report.quality_issues} == {
        ("age", "missing_rate"), ("income", "out_of_range")}


# Too little data -------------------------------------------------------------------------------

def test_a_small_window_is_insufficient_data_never_no_drift(reference: Profile) -> None:
    rng = np.random.default_rng(10)
    report = detect_drift(reference, tabular(rng, 50, shift=3.0), predictions=rng.random(50))
    assert report.drifted is None and report.score is None and report.tested == 0
    for r in (*report.features, *report.predictions):
        assert r.status == "insufficient_data" and r.drifted is None
        assert r.statistic is None and "needed" in r.detail


def test_missing_columns_and_unprofiled_ones(reference: Profile) -> None:
    window = tabular(np.random.default_rng(11), 1_000)
    del window["income"]
    window["extra"] = np.zeros(1_000)
    report = detect_drift(reference, window)
    assert result(report, "income", "missing_rate").status == "insufficient_data"
    assert report.unprofiled == ("extra",) and report.tested == 3
    assert report.predictions[0].detail == "not in the window"  # predictions not given


def test_bonferroni_can_be_switched_off(reference: Profile) -> None:
    window = tabular(np.random.default_rng(12), 1_000)
    report = detect_drift(reference, window, thresholds=DriftThresholds(correction="none"))
    assert report.corrected_alpha == 0.01 == report.alpha


# Embeddings ------------------------------------------------------------------------------------

def clusters(rng: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    centers = np.random.default_rng(0).normal(0, 1, (3, 128))
    which = rng.choice(3, n, p=weights)
    return centers[which] + rng.normal(0, 1.0, (n, 128))


@pytest.fixture(scope="module")
def embedded() -> Profile:
    return build_profile({"emb": clusters(np.random.default_rng(20), 5_000, [0.5, 0.5, 0.0])})


def test_embeddings_from_the_same_clusters_are_not_flagged(embedded: Profile) -> None:
    report = detect_drift(embedded, {"emb": clusters(np.random.default_rng(21), 1_000,
                                                     [0.5, 0.5, 0.0])})
    mmd = result(report, "emb", "mmd")
    assert mmd.status == "ok" and mmd.p_value is not None and mmd.p_value > 0.01
    assert report.drifted is False


@pytest.mark.parametrize("weights", [[0.35, 0.35, 0.3], [0.8, 0.2, 0.0]],
                         ids=["new-cluster", "cluster-balance"])
def test_a_changed_embedding_cluster_is_flagged(embedded: Profile, weights: list[float],
                                                ) -> None:
    report = detect_drift(embedded, {"emb": clusters(np.random.default_rng(22), 1_000,
                                                     weights)})
    mmd = result(report, "emb", "mmd")
    assert mmd.drifted and mmd.p_value is not None and mmd.p_value < report.corrected_alpha
    assert report.drifted_features == ("emb",)


def test_mmd_permutation_test_is_calibrated() -> None:
    # Same distribution: p-values roughly uniform; at 5%, 30 seeds flag about 1.5.
    p_values = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        _, p, _ = mmd_permutation_test(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)),
                                       permutations=200, seed=seed)
        p_values.append(p)
    assert sum(p < 0.05 for p in p_values) <= 5 and 0.3 < np.mean(p_values) < 0.7
    rng = np.random.default_rng(99)
    stat, p, bandwidth = mmd_permutation_test(rng.normal(size=(60, 8)),
                                              rng.normal(0.6, 1, size=(60, 8)),
                                              permutations=500, seed=0)
    assert stat > 0 and p < 0.01 and bandwidth > 0


def test_embedding_width_must_match(embedded: Profile) -> None:
    with pytest.raises(ValidationFailed):
        detect_drift(embedded, {"emb": np.zeros((500, 64))})


# Statistics ------------------------------------------------------------------------------------

def test_ks_p_value_matches_the_two_sample_test() -> None:
    rng = np.random.default_rng(30)
    a, b = rng.normal(size=3_000), rng.normal(0.08, 1, 1_000)
    exact = scipy_stats.ks_2samp(a, b)
    ours = ks_p_value(float(exact.statistic), 1_000, 3_000)
    assert ours == pytest.approx(exact.pvalue, rel=0.25)
    assert ks_p_value(0.0, 10, 10) == 1.0


def test_profile_ks_agrees_with_the_raw_two_sample_statistic() -> None:
    rng = np.random.default_rng(31)
    a, b = rng.normal(size=20_000), rng.normal(0.1, 1, 2_000)
    profile = build_profile({"x": a})
    report = detect_drift(profile, {"x": b})
    d = result(report, "x", "ks").statistic
    profiled = profile.features["x"]
    assert d is not None and hasattr(profiled, "cdf_error")
    assert abs(d - scipy_stats.ks_2samp(a, b).statistic) <= profiled.cdf_error + 1e-9


def test_psi_of_shares_agrees_with_analysis_psi() -> None:
    rng = np.random.default_rng(32)
    a, b = rng.normal(size=5_000), rng.normal(0.3, 1, 5_000)
    profile = build_profile({"x": a})
    report = detect_drift(profile, {"x": b})
    ours = result(report, "x", "psi").statistic
    assert ours == pytest.approx(psi(a, b), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=12), st.integers(0, 2**32 - 1))
def test_psi_is_non_negative_and_zero_only_for_equal_shares(weights: list[float],
                                                            seed: int) -> None:
    e = np.array(weights) + 1e-3
    e /= e.sum()
    a = np.random.default_rng(seed).dirichlet(np.ones(e.size))
    assert psi_of_shares(e, a) >= 0
    assert psi_of_shares(e, e) == pytest.approx(0, abs=1e-12)
    assert psi_of_shares(e, a) == pytest.approx(psi_of_shares(a, e))


# Settings and JSON -----------------------------------------------------------------------------

def test_report_round_trips_through_json(reference: Profile) -> None:
    rng = np.random.default_rng(40)
    report = detect_drift(reference, tabular(rng, 1_000, shift=0.5),
                          predictions=rng.random(1_000))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["drifted_features"] == ["age"] and data["schema_version"] == 1
    assert DriftReport.from_dict(data).to_dict() == report.to_dict()
    data["features"][0]["status"] = "fine"
    with pytest.raises(ValidationFailed) as info:
        DriftReport.from_dict(data)
    assert info.value.field == "drift_report.features[0].status"


def test_thresholds_defaults_and_validation() -> None:
    t = DriftThresholds()
    assert (t.alpha, t.psi_warn, t.psi_drift, t.min_samples) == (0.01, 0.1, 0.2, 200)
    assert DriftThresholds.from_dict(t.to_dict()) == t
    assert DriftThresholds.from_dict({"min_samples": 500.0}).min_samples == 500
    for bad, field in (({"alpha": 0}, "drift.alpha"), ({"psi_warn": 0.3}, "drift.psi_warn"),
                       ({"correction": "holm"}, "drift.correction"),
                       ({"min_samples": 5}, "drift.min_samples"),
                       ({"alfa": 0.1}, "drift.alfa")):
        with pytest.raises(ValidationFailed) as info:
            DriftThresholds.from_dict(bad)
        assert info.value.field == field
