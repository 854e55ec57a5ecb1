"""Reference profiles: what they keep, how small they stay, and that they survive JSON."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from modelyard.domain.errors import ValidationFailed
from modelyard.domain.profiles import (
    EMBEDDING_SAMPLE,
    PROFILE_SCHEMA_VERSION,
    PROJECTION_DIMS,
    QUANTILE_PROBS,
    CategoricalProfile,
    EmbeddingProfile,
    NumericProfile,
    Profile,
    build_profile,
    category_key,
    feature_columns,
    prediction_column,
    projection,
    sample_and_project,
)

RNG = np.random.default_rng(20240611)


def round_trip(profile: Profile) -> Profile:
    return Profile.from_dict(json.loads(json.dumps(profile.to_dict())))


# Numeric ---------------------------------------------------------------------------------------

def test_numeric_profile_summarises_the_column() -> None:
    x = RNG.normal(3.0, 2.0, 20_000)
    x[:500] = np.nan
    p = build_profile({"x": x}).features["x"]
    assert isinstance(p, NumericProfile)
    present = x[~np.isnan(x)]
    assert (p.count, p.missing, p.rows) == (19_500, 500, 20_000)
    assert p.missing_rate == pytest.approx(0.025)
    assert p.min == present.min() and p.max == present.max()
    assert p.mean == pytest.approx(present.mean()) and p.std == pytest.approx(present.std(ddof=1))
    assert len(p.quantiles) == QUANTILE_PROBS.size
    assert p.quantiles[0] == p.min and p.quantiles[-1] == p.max
    assert p.quantiles[QUANTILE_PROBS.tolist().index(0.5)] == pytest.approx(np.median(present))
    # Deciles: ten bins of a tenth each.
    assert len(p.bin_edges) == 9 and not p.discrete
    np.testing.assert_allclose(p.bin_shares, 0.1, atol=1e-3)
    # A smooth distribution's CDF is within a fraction of a percentile of the summary's.
    assert 0 < p.cdf_error < 0.003


def test_infinities_and_nulls_count_as_missing() -> None:
    values = np.array([1.0, np.inf, -np.inf, np.nan, 2.0, 3.0])
    p = build_profile({"x": values}).features["x"]
    assert (p.count, p.missing) == (3, 3)
    decoded_json = np.array([1, None, 2.5, None], dtype=object)
    q = build_profile({"x": decoded_json}).features["x"]
    assert isinstance(q, NumericProfile) and (q.count, q.missing) == (2, 2)


def test_reference_cdf_is_piecewise_linear_through_the_quantiles() -> None:
    p = build_profile({"x": RNG.uniform(0, 10, 50_000)}).features["x"]
    assert isinstance(p, NumericProfile)
    knots = np.asarray(p.quantiles)
    np.testing.assert_allclose(p.cdf(knots), QUANTILE_PROBS, atol=1e-12)
    assert p.cdf(np.array([p.min - 1]))[0] == 0 and p.cdf(np.array([p.max + 1]))[0] == 1
    grid = np.linspace(-1, 11, 1_001)
    assert np.all(np.diff(p.cdf(grid)) >= 0)
    np.testing.assert_allclose(p.cdf(grid[(grid > 0.2) & (grid < 9.8)]),
                               grid[(grid > 0.2) & (grid < 9.8)] / 10, atol=0.01)


def test_ks_distance_matches_scipy_against_the_reference_cdf() -> None:
    p = build_profile({"x": RNG.normal(size=10_000)}).features["x"]
    assert isinstance(p, NumericProfile)
    window = RNG.normal(0.1, 1.0, 700)
    expected = scipy_stats.kstest(window, lambda v: p.cdf(np.asarray(v))).statistic
    assert p.ks_distance(window) == pytest.approx(expected, abs=1e-12)


def test_a_point_mass_is_a_jump_of_the_reference_cdf() -> None:
    # Zero-inflated: 40% exact zeros, then a continuous tail.
    x = np.where(RNG.random(20_000) < 0.4, 0.0, RNG.exponential(size=20_000))
    p = build_profile({"x": x}).features["x"]
    assert isinstance(p, NumericProfile)
    at_zero, before_zero = p.cdf(np.array([0.0]))[0], p.cdf(np.array([0.0]), left=True)[0]
    assert before_zero == 0.0 and at_zero == pytest.approx(0.4, abs=0.015)
    # The same distribution is close; an exact copy of the data is within cdf_error.
    assert p.ks_distance(x) <= p.cdf_error + 1e-12
    assert p.cdf_error < 0.015


def test_few_distinct_values_get_a_bin_each() -> None:
    x = RNG.choice([0.5, 1.5, 2.5], 3_000, p=[0.2, 0.5, 0.3])
    p = build_profile({"x": x}).features["x"]
    assert isinstance(p, NumericProfile) and p.discrete
    assert p.bin_edges == (0.5, 1.5, 2.5)
    np.testing.assert_allclose(p.bin_shares, [0.2, 0.5, 0.3, 0.0], atol=0.03)
    np.testing.assert_allclose(p.shares(np.array([0.5, 9.0])), [0.5, 0, 0, 0.5])


def test_an_all_missing_column_has_no_statistics() -> None:
    p = build_profile({"x": np.full(10, np.nan)}).features["x"]
    assert isinstance(p, NumericProfile)
    assert (p.count, p.missing, p.min, p.quantiles) == (0, 10, None, ())
    assert round_trip(Profile(10, {"x": p})).features["x"].to_dict() == p.to_dict()


# Categorical -----------------------------------------------------------------------------------

def test_categories_keep_the_top_k_and_an_other_bucket() -> None:
    values = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5 + [None] * 10,
                      dtype=object)
    p = build_profile({"city": values}, top_k=2).features["city"]
    assert isinstance(p, CategoricalProfile)
    assert p.categories == (("a", 50), ("b", 30))
    assert (p.other, p.count, p.missing, p.distinct) == (20, 100, 10, 4)
    assert p.other_share == pytest.approx(0.2)
    counts, missing = p.counts_of(np.array(["a", "z", "b", None], dtype=object))
    assert counts.tolist() == [1, 1, 1] and missing == 1


def test_kinds_are_inferred_from_dtype_and_cardinality() -> None:
    n = 1_000
    profile = build_profile({
        "flag": RNG.random(n) < 0.3,
        "plan": RNG.choice(np.array(["free", "pro"]), n),
        "rooms": RNG.integers(1, 6, n),  # few distinct integers: categories
        "income": RNG.integers(0, 1_000_000, n),  # many: numeric
        "score": RNG.random(n),
        "emb": RNG.normal(size=(n, 64)),
        "xy": RNG.normal(size=(n, 2)),  # narrow 2-D: one feature per column
    })
    kinds = {name: type(p).kind for name, p in profile.features.items()}
    assert kinds == {"flag": "categorical", "plan": "categorical", "rooms": "categorical",
                     "income": "numeric", "score": "numeric", "emb": "embedding",
                     "xy[0]": "numeric", "xy[1]": "numeric"}
    flag = profile.features["flag"]
    assert isinstance(flag, CategoricalProfile)
    assert {k for k, _ in flag.categories} == {"true", "false"}


def test_category_keys_are_json_strings() -> None:
    assert [category_key(v) for v in (True, np.bool_(False), 3, np.int64(3), 3.0, 2.5, "x",
                                      b"y", None, float("nan"))] == \
        ["true", "false", "3", "3", "3", "2.5", "x", "y", None, None]


def test_kinds_can_be_overridden() -> None:
    n = 500
    profile = build_profile({"zip": RNG.integers(10_000, 99_999, n)},
                            kinds={"zip": "categorical"})
    assert isinstance(profile.features["zip"], CategoricalProfile)
    with pytest.raises(ValidationFailed) as info:
        build_profile({"zip": RNG.integers(0, 5, n)}, kinds={"zap": "numeric"})
    assert info.value.field == "kinds.zap"
    with pytest.raises(ValidationFailed) as info:
        build_profile({"name": np.array(["a", "b"])}, kinds={"name": "numeric"})
    assert info.value.field == "columns.name"


# Embeddings ------------------------------------------------------------------------------------

def test_embedding_profile_is_a_projected_seeded_sample() -> None:
    x = RNG.normal(size=(5_000, 384)).astype(np.float32)
    x[7, 3] = np.nan
    p = build_profile({"emb": x}, seed=11).features["emb"]
    assert isinstance(p, EmbeddingProfile)
    assert (p.count, p.missing, p.width, p.dims, p.seed) == (4_999, 1, 384, PROJECTION_DIMS, 11)
    assert p.sample.shape == (EMBEDDING_SAMPLE, PROJECTION_DIMS) and p.sample.dtype == np.float32
    finite = x[np.all(np.isfinite(x), axis=1)].astype(np.float64)
    np.testing.assert_allclose(p.mean, finite.mean(axis=0), atol=1e-9)
    norms = np.linalg.norm(finite, axis=1)
    assert p.norm_quantiles[0] == pytest.approx(norms.min(), rel=1e-6)
    assert p.norm_quantiles[-1] == pytest.approx(norms.max(), rel=1e-6)
    # Only the seed is stored: the projection is regenerated identically, and the sample
    # is what projecting the chosen rows with it gives.
    matrix = projection(384, PROJECTION_DIMS, 11)
    assert matrix is not None and np.array_equal(matrix, projection(384, PROJECTION_DIMS, 11))
    assert not np.array_equal(matrix, projection(384, PROJECTION_DIMS, 12))
    again = build_profile({"emb": x}, seed=11).features["emb"]
    assert isinstance(again, EmbeddingProfile) and np.array_equal(again.sample, p.sample)


def test_projection_keeps_distances_roughly() -> None:
    x = RNG.normal(size=(200, 512))
    projected = sample_and_project(x, 512, PROJECTION_DIMS, 3, size=200)
    i, j = np.triu_indices(200, k=1)
    ratio = (np.linalg.norm(projected[i] - projected[j], axis=1)
             / np.linalg.norm(x[i] - x[j], axis=1))
    assert 0.9 < np.median(ratio) < 1.1 and np.quantile(ratio, 0.99) < 1.5


def test_narrow_embeddings_are_not_projected() -> None:
    p = build_profile({"emb": RNG.normal(size=(300, 24))}).features["emb"]
    assert isinstance(p, EmbeddingProfile) and p.dims == 24
    assert projection(24, 24, 0) is None


def test_predictions_profile_scores_as_classes() -> None:
    scores = RNG.dirichlet([1, 1, 1], 1_000)
    assert np.array_equal(prediction_column(scores), np.argmax(scores, axis=1))
    profile = build_profile({"x": RNG.normal(size=1_000)}, predictions=scores)
    assert isinstance(profile.predictions, CategoricalProfile)
    regression = build_profile({"x": RNG.normal(size=1_000)},
                               predictions=RNG.normal(size=(1_000, 1)))
    assert isinstance(regression.predictions, NumericProfile)


# Sizes and JSON --------------------------------------------------------------------------------

def test_profile_size_is_bounded_whatever_the_rows() -> None:
    n = 200_000
    columns: dict[str, Any] = {f"n{i}": RNG.lognormal(size=n) for i in range(3)}
    columns["cat"] = RNG.integers(0, 10_000, n).astype(str)  # high cardinality
    profile = build_profile(columns, predictions=RNG.random(n))
    # The embedding sample is capped at 256 vectors: more rows would not change its size.
    emb = build_profile({"emb": RNG.normal(size=(2_000, 1_024)).astype(np.float32)})
    sizes = {name: len(json.dumps(p.to_dict()))
             for name, p in (*profile.features.items(), *emb.features.items())}
    assert max(sizes[f"n{i}"] for i in range(3)) < 4_000
    assert sizes["cat"] < 4_000
    assert sizes["emb"] < 70_000  # 32 KB of float32 sample in base64, plus the mean
    assert profile.rows == n


def test_round_trip_keeps_every_number() -> None:
    n = 2_000
    profile = build_profile({"a": RNG.normal(size=n), "b": RNG.choice(["x", "y"], n),
                             "e": RNG.normal(size=(n, 40))}, predictions=RNG.integers(0, 2, n))
    again = round_trip(profile)
    assert again.to_dict() == profile.to_dict()
    assert again.schema_version == PROFILE_SCHEMA_VERSION
    emb = again.features["e"]
    assert isinstance(emb, EmbeddingProfile)
    original = profile.features["e"]
    assert isinstance(original, EmbeddingProfile)
    assert np.array_equal(emb.sample, original.sample)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=1,
                max_size=300),
       st.lists(st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.none()), min_size=1,
                max_size=300),
       st.integers(1, 5))
def test_profiles_round_trip_through_json(numbers: list[float], labels: list[str | None],
                                          top_k: int) -> None:
    n = min(len(numbers), len(labels))
    profile = build_profile({"x": np.array(numbers[:n]),
                             "c": np.array(labels[:n], dtype=object)}, top_k=top_k,
                            kinds={"c": "categorical"})
    assert round_trip(profile).to_dict() == profile.to_dict()
    c = profile.features["c"]
    assert isinstance(c, CategoricalProfile) and len(c.categories) <= top_k
    x = profile.features["x"]
    assert isinstance(x, NumericProfile)
    if x.count:
        assert abs(sum(x.bin_shares) - 1) < 1e-9 and 0 <= x.cdf_error <= 1


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d.update(schema_version=2), "profile.schema_version"),
    (lambda d: d.update(extra=1), "profile.extra"),
    (lambda d: d["features"]["a"].update(quantiles=[1.0, 0.0]), "profile.features.a.quantiles"),
    (lambda d: d["features"]["a"]["quantiles"].reverse(), "profile.features.a.quantiles"),
    (lambda d: d["features"]["a"].update(kind="weird"), "profile.features.a.kind"),
    (lambda d: d["features"]["b"].update(other=-1), "profile.features.b.other"),
    (lambda d: d["features"]["b"].update(other=5), "profile.features.b.categories"),
    (lambda d: d["features"]["e"]["sample"].update(data="!!"), "profile.features.e.sample.data"),
    (lambda d: d["features"]["e"]["sample"].update(shape=[3, 32]),
     "profile.features.e.sample.data"),
    (lambda d: d["features"]["e"].update(dims=64), "profile.features.e.dims"),
    (lambda d: d["features"]["a"].update(mean="high"), "profile.features.a.mean"),
])
def test_from_dict_refuses_malformed_profiles(change: Any, field: str) -> None:
    n = 500
    data = build_profile({"a": RNG.normal(size=n), "b": RNG.choice(["x", "y"], n),
                          "e": RNG.normal(size=(n, 40))}).to_dict()
    change(data)
    with pytest.raises(ValidationFailed) as info:
        Profile.from_dict(data)
    assert info.value.field == field


def test_columns_must_have_the_same_rows() -> None:
    with pytest.raises(ValidationFailed) as info:
        feature_columns({"a": np.zeros(3), "b": np.zeros(4)})
    assert info.value.field == "columns.b"
    with pytest.raises(ValidationFailed):
        build_profile({"a": np.zeros(3)}, predictions=np.zeros(4))
    with pytest.raises(ValidationFailed):
        feature_columns({"a": 1.0})
