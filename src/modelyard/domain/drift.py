"""Drift: does a window of live traffic still look like the reference profile?

Pure functions of a ``profiles.Profile`` and the window's columns (see docs/decisions/0015):

* numeric feature: Kolmogorov-Smirnov against the reference CDF (the decision) and PSI on
  the reference's decile bins (the size of the change: 0.1 warn, 0.2 drift);
* categorical feature: chi-squared on the kept categories plus "other" (the decision) and
  PSI on the same buckets;
* embedding: maximum mean discrepancy with an RBF kernel on seeded random projections, its
  p-value from a seeded permutation test;
* the predictions, tested like a feature of their kind;
* data quality: missing rate rise, share outside the reference's min/max, share of
  categories the reference did not keep.

The decision tests share one significance level ``alpha``, Bonferroni-corrected over the
features tested, so the chance that any feature of an unchanged stream is flagged stays at
most ``alpha``. A feature with fewer than ``min_samples`` values is "insufficient_data"
(``drifted`` None), never "no drift".
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

from modelyard.domain import jsonfields as jf
from modelyard.domain.analysis import PSI_EPSILON, psi_meaning
from modelyard.domain.errors import ValidationFailed, reject_unknown
from modelyard.domain.profiles import (
    CategoricalProfile,
    EmbeddingProfile,
    FeatureProfile,
    NumericProfile,
    Profile,
    embedding_rows,
    feature_columns,
    numeric_values,
    prediction_column,
    sample_and_project,
)

DRIFT_SCHEMA_VERSION = 1

Status = Literal["ok", "warn", "drift", "insufficient_data"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "drift", "insufficient_data")
DECISION_TESTS = ("ks", "chi2", "mmd")  # one per feature; their p-values are corrected
DRIFT_TESTS = (*DECISION_TESTS, "psi")
QUALITY_CHECKS = ("missing_rate", "out_of_range", "new_categories")
TESTS = (*DRIFT_TESTS, *QUALITY_CHECKS)
CHI2_MIN_EXPECTED = 5.0  # Cochran's rule: rarer buckets are pooled before the test


@dataclass(frozen=True)
class DriftThresholds:
    """Settings of the drift tests; the defaults and their reasons are in ADR 0015."""

    alpha: float = 0.01  # family-wise: chance that an unchanged window flags any feature
    correction: Literal["bonferroni", "none"] = "bonferroni"
    psi_warn: float = 0.1
    psi_drift: float = 0.2
    min_samples: int = 200  # values per feature: 20 per PSI bin, as analysis.psi needs
    min_embedding_samples: int = 100  # vectors per side for the MMD test
    max_permutations: int = 10_000  # MMD permutation test: bounded cost (~0.3 s at 10,000)
    max_missing_increase: float = 0.05  # missing rate over the reference's, in points
    max_out_of_range: float = 0.01  # share of values outside the reference's [min, max]
    max_new_categories: float = 0.05  # share outside the reference's kept categories, over its
    seed: int = 0  # permutations and the window's embedding sample

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValidationFailed(f"drift.{name} must be {rule}", field=f"drift.{name}")

        check(0 < self.alpha < 1, "alpha", "between 0 and 1")
        check(self.correction in ("bonferroni", "none"), "correction", "bonferroni or none")
        check(0 < self.psi_warn <= self.psi_drift <= 10, "psi_warn",
              "above 0 and at most psi_drift (at most 10)")
        check(20 <= self.min_samples <= 10_000_000, "min_samples", "from 20 to 10000000")
        check(10 <= self.min_embedding_samples <= 100_000, "min_embedding_samples",
              "from 10 to 100000")
        check(100 <= self.max_permutations <= 100_000, "max_permutations",
              "from 100 to 100000")
        for name in ("max_missing_increase", "max_out_of_range", "max_new_categories"):
            check(0 <= getattr(self, name) <= 1, name, "from 0 to 1")
        check(0 <= self.seed < 2**32, "seed", "from 0 to 2**32 - 1")

    def corrected_alpha(self, tested: int) -> float:
        if self.correction == "none" or tested <= 1:
            return self.alpha
        return self.alpha / tested

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DriftThresholds:
        known = {f.name for f in fields(cls)}
        data = reject_unknown(data, known, "drift setting", "drift")
        for name, value in data.items():
            where = f"drift.{name}"
            if name == "correction":
                jf.string(value, where, choices=("bonferroni", "none"))
            elif name in ("min_samples", "min_embedding_samples", "max_permutations", "seed"):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                data[name] = jf.integer(value, where)
            else:
                data[name] = jf.number(value, where)
        return cls(**data)


@dataclass(frozen=True)
class FeatureDrift:
    """One test of one feature (or of the predictions) over the window.

    ``threshold`` is the corrected significance level for p-value tests (ks, chi2, mmd) and
    the limit on ``statistic`` for the others. ``drifted`` is None when there was too little
    data to tell; for quality checks it means "flagged". ``n``: values tested in the window.
    """

    feature: str
    test: str
    statistic: float | None
    p_value: float | None
    threshold: float | None
    drifted: bool | None
    n: int
    status: Status
    detail: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["statistic"] = jf.finite_or_none(self.statistic)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> FeatureDrift:
        d = jf.obj(data, {f.name for f in fields(cls)}, "feature drift", where)
        return cls(feature=jf.string(jf.required(d, "feature", where), f"{where}.feature"),
                   test=jf.string(jf.required(d, "test", where), f"{where}.test",
                                  choices=TESTS),
                   statistic=jf.number(d.get("statistic"), f"{where}.statistic",
                                       optional=True),
                   p_value=jf.share(d.get("p_value"), f"{where}.p_value", optional=True),
                   threshold=jf.number(d.get("threshold"), f"{where}.threshold",
                                       optional=True),
                   drifted=jf.boolean(d.get("drifted"), f"{where}.drifted", optional=True),
                   n=jf.integer(jf.required(d, "n", where), f"{where}.n"),
                   status=jf.string(jf.required(d, "status", where), f"{where}.status",
                                    choices=STATUSES),
                   detail=jf.string(d.get("detail", ""), f"{where}.detail"))


@dataclass(frozen=True)
class DriftReport:
    """The drift tests of one window against a profile.

    ``drifted``: any feature (or the predictions) drifted; None when nothing could be
    tested. ``score``: the share of tested features that drifted (0 to 1; None when none
    was tested). ``tested``: features with enough data for their decision test, the number
    the significance level was divided by. ``unprofiled``: window columns the profile does
    not know (ignored).
    """

    rows: int
    drifted: bool | None
    score: float | None
    tested: int
    alpha: float
    corrected_alpha: float
    features: tuple[FeatureDrift, ...]
    predictions: tuple[FeatureDrift, ...] = ()
    unprofiled: tuple[str, ...] = ()
    schema_version: int = DRIFT_SCHEMA_VERSION

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Features (in profile order) with a drifted test; "prediction" when predictions."""
        names = {r.feature for r in self._all() if r.test in DRIFT_TESTS and r.drifted}
        ordered = [r.feature for r in self._all() if r.feature in names]
        return tuple(dict.fromkeys(ordered))

    @property
    def quality_issues(self) -> tuple[FeatureDrift, ...]:
        return tuple(r for r in self._all() if r.test in QUALITY_CHECKS and r.drifted)

    def results_for(self, feature: str) -> tuple[FeatureDrift, ...]:
        return tuple(r for r in self._all() if r.feature == feature)

    def _all(self) -> Iterator[FeatureDrift]:
        yield from self.features
        yield from self.predictions

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "rows": self.rows,
                "drifted": self.drifted, "score": self.score, "tested": self.tested,
                "alpha": self.alpha, "corrected_alpha": self.corrected_alpha,
                "drifted_features": list(self.drifted_features),
                "quality_issues": [f"{r.feature}:{r.test}" for r in self.quality_issues],
                "features": [r.to_dict() for r in self.features],
                "predictions": [r.to_dict() for r in self.predictions],
                "unprofiled": list(self.unprofiled)}

    @classmethod
    def from_dict(cls, data: Any) -> DriftReport:
        where = "drift_report"
        d = jf.obj(data, {"schema_version", "rows", "drifted", "score", "tested", "alpha",
                          "corrected_alpha", "drifted_features", "quality_issues", "features",
                          "predictions", "unprofiled"}, "drift report", where)
        jf.schema(d, DRIFT_SCHEMA_VERSION, where)

        def results(key: str) -> tuple[FeatureDrift, ...]:
            raw = d.get(key, [])
            if not isinstance(raw, list):
                raise ValidationFailed(f"{where}.{key} must be a list", field=f"{where}.{key}")
            return tuple(FeatureDrift.from_dict(r, f"{where}.{key}[{i}]")
                         for i, r in enumerate(raw))

        unprofiled = d.get("unprofiled", [])
        if not isinstance(unprofiled, list):
            raise ValidationFailed(f"{where}.unprofiled must be a list",
                                   field=f"{where}.unprofiled")
        return cls(rows=jf.integer(jf.required(d, "rows", where), f"{where}.rows"),
                   drifted=jf.boolean(d.get("drifted"), f"{where}.drifted", optional=True),
                   score=jf.share(d.get("score"), f"{where}.score", optional=True),
                   tested=jf.integer(jf.required(d, "tested", where), f"{where}.tested"),
                   alpha=jf.share(jf.required(d, "alpha", where), f"{where}.alpha"),
                   corrected_alpha=jf.share(jf.required(d, "corrected_alpha", where),
                                            f"{where}.corrected_alpha"),
                   features=results("features"), predictions=results("predictions"),
                   unprofiled=tuple(jf.string(u, f"{where}.unprofiled")
                                    for u in unprofiled))


# ---------------------------------------------------------------------------------------------
# Statistics (also usable on their own)


def psi_of_shares(expected: Any, actual: Any) -> float:
    """PSI of two share vectors over the same bins, with ``analysis.psi``'s floor for empty
    bins (the profile keeps shares, not the raw sample ``analysis.psi`` takes)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_EPSILON)
    if e.shape != a.shape:
        raise ValidationFailed("expected and actual must have the same bins", field="actual")
    return float(np.sum((a - e) * np.log(a / e)))


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """P(D >= statistic) for the two-sample KS statistic of samples of sizes n and m, by the
    one-sample distribution at the effective size n*m/(n+m) (scipy's ``kstwo``)."""
    from scipy.stats import kstwo  # imported here: scipy is slow to import

    if statistic <= 0:
        return 1.0
    effective = max(1, round(n * m / (n + m)))
    return float(min(1.0, max(0.0, kstwo.sf(min(statistic, 1.0), effective))))


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, *, permutations: int,
                         seed: int) -> tuple[float, float, float]:
    """Squared maximum mean discrepancy of samples ``x`` and ``y`` (rows are vectors) with
    a Gaussian RBF kernel, its bandwidth the median pairwise distance of the pooled sample
    (Gretton et al. 2012, the biased estimate), and the permutation p-value
    (1 + #{permuted >= observed}) / (1 + permutations). Returns (mmd2, p_value, bandwidth).
    """
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    off = d2[np.triu_indices_from(d2, k=1)]
    median = float(np.median(off))
    if median <= 0:  # more than half the pairs identical: fall back to the mean distance
        median = float(off.mean())
    if median <= 0:
        return 0.0, 1.0, 0.0
    kernel = np.exp(-d2 / (2.0 * median))
    n, size = x.shape[0], z.shape[0]
    w = np.concatenate([np.full(n, 1.0 / n), np.full(size - n, -1.0 / (size - n))])
    observed = float(w @ kernel @ w)
    rng = np.random.default_rng(seed)
    exceed, done = 0, 0
    while done < permutations:  # in blocks: bounded memory, one matrix product each
        block = min(1000, permutations - done)
        shuffled = w[rng.permuted(np.tile(np.arange(size), (block, 1)), axis=1)]
        stats = np.einsum("bi,bi->b", shuffled @ kernel, shuffled)
        exceed += int(np.sum(stats >= observed - 1e-12))
        done += block
    return max(observed, 0.0), (1 + exceed) / (1 + permutations), math.sqrt(median)


def _binomial_rise(k: int, n: int, p0: float) -> float:
    """One-sided p-value of k or more events in n at rate p0."""
    from scipy.stats import binomtest

    return float(binomtest(k, n, min(max(p0, 0.0), 1.0), alternative="greater").pvalue)


# ---------------------------------------------------------------------------------------------
# Testing a window


@dataclass
class _Pending:
    """A decision test whose verdict waits for the corrected alpha."""

    feature: str
    test: str
    statistic: float
    p_value: float
    n: int
    detail: str


def _insufficient(feature: str, test: str, n: int, needed: int, what: str) -> FeatureDrift:
    return FeatureDrift(feature, test, None, None, None, None, n, "insufficient_data",
                        f"{n} {what} in the window, {needed} needed")


def _quality(feature: str, test: str, k: int, n: int, p0: float, limit: float,
             t: DriftThresholds, what: str) -> FeatureDrift:
    # Flagged only when the rise is both larger than the limit and significant: a share of
    # 6% in 200 values could be the reference's 2% by chance.
    rate = k / n
    p = _binomial_rise(k, n, p0)
    flagged = rate > limit and p < t.alpha
    return FeatureDrift(feature, test, rate, p, limit, flagged, n,
                        "drift" if flagged else "ok",
                        f"{what} {rate:.2%} (reference {p0:.2%}, limit {limit:.2%}, "
                        f"p={p:.2g})")


def _psi_result(feature: str, expected: np.ndarray, actual: np.ndarray, n: int,
                t: DriftThresholds) -> FeatureDrift:
    value = psi_of_shares(expected, actual)
    status: Status = ("drift" if value > t.psi_drift else "warn" if value > t.psi_warn
                      else "ok")
    return FeatureDrift(feature, "psi", value, None, t.psi_drift, value > t.psi_drift, n,
                        status, f"PSI {value:.3f} ({psi_meaning(value)}) over {n} values")


def _test_numeric(name: str, ref: NumericProfile, values: np.ndarray, t: DriftThresholds,
                  ) -> tuple[list[FeatureDrift], list[_Pending]]:
    x = numeric_values(values, f"columns.{name}")
    present = x[~np.isnan(x)]
    rows, n = x.size, present.size
    out: list[FeatureDrift] = []
    if rows >= t.min_samples:
        out.append(_quality(name, "missing_rate", rows - n, rows, ref.missing_rate,
                            ref.missing_rate + t.max_missing_increase, t, "missing"))
    else:
        out.append(_insufficient(name, "missing_rate", rows, t.min_samples, "rows"))
    if n < t.min_samples or not ref.count or ref.count < t.min_samples:
        needed = t.min_samples
        what = "values" if ref.count >= needed else "values (reference too small)"
        return out + [_insufficient(name, test, n, needed, what)
                      for test in ("ks", "psi", "out_of_range")], []
    low = ref.min if ref.min is not None else -math.inf
    high = ref.max if ref.max is not None else math.inf
    outside = int(np.sum((present < low) | (present > high)))
    # Under no change, a new value falls outside the extremes of m reference values with
    # probability 2 / (m + 1).
    out.append(_quality(name, "out_of_range", outside, n, 2.0 / (ref.count + 1),
                        t.max_out_of_range, t,
                        f"outside [{low:g}, {high:g}]:"))
    out.append(_psi_result(name, np.asarray(ref.bin_shares), ref.shares(present), n, t))
    d = ref.ks_distance(present)
    # The summary's CDF is within cdf_error of the reference data's: only the excess is
    # evidence (the triangle inequality), so coarse quantiles never read as drift.
    p = ks_p_value(max(0.0, d - ref.cdf_error), n, ref.count)
    return out, [_Pending(name, "ks", d, p, n,
                          f"KS D={d:.4f} (reference CDF within {ref.cdf_error:.4f}) over {n} "
                          f"values vs {ref.count}")]


def _test_categorical(name: str, ref: CategoricalProfile, values: np.ndarray,
                      t: DriftThresholds) -> tuple[list[FeatureDrift], list[_Pending]]:
    from scipy.stats import chi2_contingency

    if values.ndim != 1:
        raise ValidationFailed(f"columns.{name} must be one value per row",
                               field=f"columns.{name}")
    counts, missing = ref.counts_of(values)
    rows, n = values.shape[0], int(counts.sum())
    out: list[FeatureDrift] = []
    if rows >= t.min_samples:
        out.append(_quality(name, "missing_rate", missing, rows, ref.missing_rate,
                            ref.missing_rate + t.max_missing_increase, t, "missing"))
    else:
        out.append(_insufficient(name, "missing_rate", rows, t.min_samples, "rows"))
    if n < t.min_samples or ref.count < t.min_samples:
        return out + [_insufficient(name, test, n, t.min_samples, "values")
                      for test in ("chi2", "psi", "new_categories")], []
    other = int(counts[-1])
    out.append(_quality(name, "new_categories", other, n, ref.other_share,
                        ref.other_share + t.max_new_categories, t,
                        "categories the reference did not keep:"))
    reference = ref.reference_counts()
    out.append(_psi_result(name, reference / reference.sum(), counts / n, n, t))
    # Buckets expected fewer than 5 times in the window (by the reference's shares) are
    # pooled; "other" holds the categories the reference never saw.
    expected = reference / reference.sum() * n
    rare = expected < CHI2_MIN_EXPECTED
    table = np.array([reference[~rare], counts[~rare]])
    if rare.any():
        table = np.column_stack([table, [reference[rare].sum(), counts[rare].sum()]])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        stat, p = 0.0, 1.0  # one bucket holds everything on both sides: nothing to compare
    else:
        result = chi2_contingency(table, correction=False)
        stat, p = float(result.statistic), float(result.pvalue)
    return out, [_Pending(name, "chi2", stat, p, n,
                          f"chi2={stat:.2f} over {table.shape[1]} buckets, {n} values vs "
                          f"{ref.count}")]


def _permutations(t: DriftThresholds, alpha: float) -> int:
    # Enough for the smallest possible p-value, 1 / (B + 1), to sit well under the corrected
    # level (10 x), within the configured bound.
    return int(min(t.max_permutations, max(500, math.ceil(10 / alpha))))


def _test_embedding(name: str, ref: EmbeddingProfile, values: np.ndarray,
                    t: DriftThresholds, alpha: float) -> tuple[list[FeatureDrift],
                                                               list[_Pending]]:
    vectors, missing = embedding_rows(np.asarray(values), f"columns.{name}")
    rows, n = vectors.shape[0] + missing, vectors.shape[0]
    out: list[FeatureDrift] = []
    if rows >= t.min_embedding_samples:
        out.append(_quality(name, "missing_rate", missing, rows, ref.missing_rate,
                            ref.missing_rate + t.max_missing_increase, t, "non-finite rows"))
    else:
        out.append(_insufficient(name, "missing_rate", rows, t.min_embedding_samples, "rows"))
    if n < t.min_embedding_samples or ref.sample.shape[0] < t.min_embedding_samples:
        return [*out, _insufficient(name, "mmd", n, t.min_embedding_samples, "vectors")], []
    # The reference's projection (its seed), the window's own sample (the settings' seed).
    current = sample_and_project(vectors, ref.width, ref.dims, ref.seed,
                                 size=ref.sample.shape[0], sample_seed=t.seed)
    permutations = _permutations(t, alpha)
    stat, p, bandwidth = mmd_permutation_test(ref.sample, current, permutations=permutations,
                                              seed=t.seed)
    return out, [_Pending(name, "mmd", stat, p, n,
                          f"MMD^2={stat:.4g} (RBF, bandwidth {bandwidth:.3g}) on "
                          f"{ref.sample.shape[0]} vs {current.shape[0]} vectors in "
                          f"{ref.dims} dims, {permutations} permutations")]


def _test(name: str, ref: FeatureProfile, values: np.ndarray, t: DriftThresholds,
          alpha: float) -> tuple[list[FeatureDrift], list[_Pending]]:
    if isinstance(ref, NumericProfile):
        return _test_numeric(name, ref, values, t)
    if isinstance(ref, CategoricalProfile):
        return _test_categorical(name, ref, values, t)
    return _test_embedding(name, ref, values, t, alpha)


def _enough(ref: FeatureProfile, values: np.ndarray, t: DriftThresholds) -> bool:
    """Whether the decision test will run: decided before running any, since the corrected
    level (and so the permutation count) depends on how many will."""
    if isinstance(ref, EmbeddingProfile):
        return (values.ndim == 2 and values.shape[0] >= t.min_embedding_samples
                and ref.sample.shape[0] >= t.min_embedding_samples)
    return values.shape[0] >= t.min_samples and ref.count >= t.min_samples


def detect_drift(profile: Profile, columns: Mapping[str, Any], predictions: Any = None,
                thresholds: DriftThresholds | None = None) -> DriftReport:
    """Tests a window of traffic (``columns``: name -> array, as given to
    ``profiles.build_profile``; ``predictions``: the model's answers to those rows) against
    ``profile``. A profiled feature absent from the window is reported as insufficient
    data; window columns the profile does not know are listed in ``unprofiled``.
    """
    t = thresholds or DriftThresholds()
    flat = feature_columns(columns)
    rows = next(iter(flat.values())).shape[0] if flat else 0
    pred = None
    if predictions is not None and profile.predictions is not None:
        pred = prediction_column(predictions)
        rows = rows or pred.shape[0]
    targets: list[tuple[str, FeatureProfile, np.ndarray | None, bool]] = [
        (name, ref, flat.get(name), False) for name, ref in profile.features.items()]
    if profile.predictions is not None:
        targets.append(("prediction", profile.predictions, pred, True))
    # Approximate count for the level (only the MMD permutation count depends on it): a
    # feature with enough rows may still have too few non-missing values.
    planned = sum(1 for _, ref, v, _ in targets if v is not None and _enough(ref, v, t))
    alpha = t.corrected_alpha(planned)

    done: list[tuple[bool, list[FeatureDrift]]] = []
    pending: list[tuple[int, _Pending]] = []
    for name, ref, values, is_prediction in targets:
        if values is None:
            done.append((is_prediction, [FeatureDrift(
                name, "missing_rate", None, None, None, None, 0, "insufficient_data",
                "not in the window")]))
            continue
        results, tests = _test(name, ref, values, t, alpha)
        done.append((is_prediction, results))
        pending.extend((len(done) - 1, p) for p in tests)

    tested = len(pending)
    alpha = t.corrected_alpha(tested)
    for index, p in pending:
        drifted = p.p_value < alpha
        done[index][1].insert(0, FeatureDrift(
            p.feature, p.test, p.statistic, p.p_value, alpha, drifted, p.n,
            "drift" if drifted else "ok", f"{p.detail}; p={p.p_value:.3g} vs {alpha:.3g}"))
    features = tuple(r for is_pred, results in done if not is_pred for r in results)
    predicted = tuple(r for is_pred, results in done if is_pred for r in results)
    drifted_names = {r.feature for r in (*features, *predicted)
                     if r.test in DRIFT_TESTS and r.drifted}
    return DriftReport(
        rows=int(rows), drifted=None if not tested else bool(drifted_names),
        score=None if not tested else len(drifted_names) / tested, tested=tested,
        alpha=t.alpha, corrected_alpha=alpha, features=features, predictions=predicted,
        unprofiled=tuple(sorted(set(flat) - set(profile.features))))
