"""Automated analysis of progressive rollouts: is the new version healthy enough to go on?

Three layers, all pure functions of recorded numbers (see docs/decisions/0012):

* ``WindowStats``: what one version did over a time window (counts and bounded samples); the
  data plane's ``serving.observations.Observations`` produces them.
* ``analyze``: health checks of a canary (or shadow, or green) against absolute limits and
  against the baseline, ``Thresholds`` configuring them. The verdict is ``"pass"``,
  ``"fail"`` or ``"wait"``: too little evidence is never a pass.
* ``ab_test``: an A/B comparison that may be looked at after every request without inflating
  false positives (mixture SPRT, always-valid p-value and confidence sequence), with the
  classical fixed-horizon test alongside for reference.

Divergence helpers: ``psi`` (population stability index) and ``jensen_shannon``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from statistics import NormalDist
from typing import Any, Literal, TypeAlias

import numpy as np

from modelyard.domain.errors import ValidationFailed, reject_unknown

Status = Literal["pass", "fail", "wait"]
PASS: Status = "pass"
FAIL: Status = "fail"
WAIT: Status = "wait"

# PSI needs this many samples per bin on each side: under no change, n * PSI is roughly
# chi-square with bins - 1 degrees of freedom, so 20 per bin (200 for 10 bins) keeps the
# chance that pure noise crosses 0.2 at about 2% per check.
MIN_SAMPLES_PER_BIN = 20
PSI_EPSILON = 1e-4  # floor for an empty bin's share: ln(0) would make PSI infinite


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.float64)


def _floats(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise ValidationFailed(f"{name} must be finite numbers", field=name)
    return array


def _weights(weights: Any, size: int, name: str) -> np.ndarray | None:
    if weights is None:
        return None
    array = _floats(weights, name)
    if array.size != size or np.any(array <= 0):
        raise ValidationFailed(f"{name} must hold one positive weight per sample", field=name)
    return array


def quantile(values: np.ndarray, q: float, weights: np.ndarray | None = None) -> float | None:
    """The ``q`` quantile of a (weighted) sample; None for an empty sample.

    Unweighted: numpy's default (linear) definition. Weighted (a sample merged from buckets
    that kept different shares of their requests): the midpoint rule on the weighted CDF.
    """
    if values.size == 0:
        return None
    if weights is None or np.all(weights == weights[0]):
        return float(np.quantile(values, q))
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cumulative = np.cumsum(w)
    positions = (cumulative - 0.5 * w) / cumulative[-1]
    return float(np.interp(q, positions, v))


# ---------------------------------------------------------------------------------------------
# Window statistics


@dataclass(frozen=True, eq=False)
class WindowStats:
    """What one version did during a window: counts plus bounded samples.

    Samples may be subsampled per second (a reservoir); ``*_weights`` then give each sample
    the number of requests it stands for (None: every sample stands for one request).
    ``paired_predictions`` exist for shadows only: the primary's answers to the very requests
    the shadow answered, the fairest reference for its own ``predictions``.
    """

    version: str
    requests: int = 0
    errors: int = 0
    latencies_s: np.ndarray = field(default_factory=_empty)
    predictions: np.ndarray = field(default_factory=_empty)
    paired_predictions: np.ndarray = field(default_factory=_empty)
    agreed: int = 0  # shadows: answers equal to the primary's ...
    compared: int = 0  # ... out of this many compared
    latency_weights: np.ndarray | None = None
    prediction_weights: np.ndarray | None = None
    paired_weights: np.ndarray | None = None
    start: float | None = None  # the window, in the recorder's clock
    end: float | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.errors <= self.requests):
            raise ValidationFailed("errors must be from 0 to requests", field="errors")
        if not (0 <= self.agreed <= self.compared):
            raise ValidationFailed("agreed must be from 0 to compared", field="agreed")
        for name in ("latencies_s", "predictions", "paired_predictions"):
            object.__setattr__(self, name, _floats(getattr(self, name), name))
        for name, of in (("latency_weights", "latencies_s"), ("prediction_weights",
                         "predictions"), ("paired_weights", "paired_predictions")):
            object.__setattr__(self, name, _weights(getattr(self, name),
                                                    getattr(self, of).size, name))

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def latency_quantile_s(self, q: float) -> float | None:
        return quantile(self.latencies_s, q, self.latency_weights)

    @cached_property
    def p50_s(self) -> float | None:
        return self.latency_quantile_s(0.5)

    @cached_property
    def p99_s(self) -> float | None:
        return self.latency_quantile_s(0.99)

    def to_dict(self) -> dict[str, Any]:
        """A summary without the samples (for audit records and the API)."""
        return {"version": self.version, "start": self.start, "end": self.end,
                "requests": self.requests, "errors": self.errors,
                "error_rate": self.error_rate, "p50_s": self.p50_s, "p99_s": self.p99_s,
                "latency_samples": int(self.latencies_s.size),
                "prediction_samples": int(self.predictions.size),
                "paired_samples": int(self.paired_predictions.size),
                "agreed": self.agreed, "compared": self.compared,
                "agreement": self.agreement}


# ---------------------------------------------------------------------------------------------
# Thresholds and verdicts


_OPTIONAL = {"max_error_rate_increase", "max_p99_ratio", "max_p99_ms", "max_divergence",
             "min_agreement"}


@dataclass(frozen=True)
class Thresholds:
    """Limits a new version must stay within. Defaults follow Flagger/Argo Rollouts practice
    (request success rate >= 99%, latency compared to the stable version); see ADR 0012.

    ``None`` switches an optional check off. Relative checks need a baseline.
    """

    min_requests: int = 50  # below it the verdict is "wait", never "pass"
    max_error_rate: float = 0.01  # absolute: success rate >= 99%
    max_error_rate_increase: float | None = None  # over the baseline, 0.005 = +0.5 points
    max_p99_ratio: float | None = 1.5  # canary p99 <= ratio x baseline p99 + slack
    p99_slack_ms: float = 5.0  # so a 2 ms baseline does not make 4 ms a failure
    max_p99_ms: float | None = None  # absolute
    max_divergence: float | None = 0.2  # PSI of prediction distributions: > 0.2 is a shift
    min_agreement: float | None = None  # share of shadow answers equal to the primary's
    failures_to_rollback: int = 2  # consecutive failed checks (used by the controller)

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValidationFailed(f"analysis.{name} must be {rule}",
                                       field=f"analysis.{name}")

        def optional(name: str, low: float, high: float, rule: str) -> None:
            value = getattr(self, name)
            check(value is None or low <= value <= high, name, f"null or {rule}")

        check(1 <= self.min_requests <= 10_000_000, "min_requests", "from 1 to 10000000")
        check(0 <= self.max_error_rate <= 1, "max_error_rate", "from 0 to 1")
        optional("max_error_rate_increase", 0, 1, "from 0 to 1")
        optional("max_p99_ratio", 1, 100, "from 1 to 100")
        check(0 <= self.p99_slack_ms <= 60_000, "p99_slack_ms", "from 0 to 60000")
        optional("max_p99_ms", 1e-3, 3_600_000, "above 0 and at most 3600000")
        optional("max_divergence", 1e-6, 10, "above 0 and at most 10")
        optional("min_agreement", 0, 1, "from 0 to 1")
        check(1 <= self.failures_to_rollback <= 100, "failures_to_rollback", "from 1 to 100")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Thresholds:
        known = {f.name: f for f in fields(cls)}
        data = reject_unknown(data, set(known), "analysis setting", "analysis")
        for name, value in data.items():
            where = f"analysis.{name}"
            if value is None:
                if name not in _OPTIONAL:
                    raise ValidationFailed(f"{where} may not be null", field=where)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValidationFailed(f"{where} must be a number", field=where)
            if name in ("min_requests", "failures_to_rollback"):
                if int(value) != value:
                    raise ValidationFailed(f"{where} must be an integer", field=where)
                data[name] = int(value)
            else:
                data[name] = float(value)
        return cls(**data)

    def merged(self, changes: Mapping[str, Any]) -> Thresholds:
        return Thresholds.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class Check:
    name: str  # traffic, error_rate, error_rate_increase, p99_ratio, p99, divergence, agreement
    value: float | None  # the measured value (None: no data yet)
    limit: float | None
    status: Status
    detail: str  # for humans and audit records

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    status: Status
    checks: tuple[Check, ...]

    @property
    def reason(self) -> str:
        """The details that decided the status (failures first), joined."""
        deciding = [c for c in self.checks if c.status == self.status] or list(self.checks)
        return "; ".join(c.detail for c in deciding)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason,
                "checks": [c.to_dict() for c in self.checks]}


def _pct(rate: float) -> str:
    return f"{rate:.1%}" if rate == 0 or rate >= 0.01 else f"{rate:.2%}"


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def analyze(canary: WindowStats, baseline: WindowStats | None,
            thresholds: Thresholds) -> Verdict:
    """Checks ``canary`` (a canary, shadow or green version) over one window.

    Status: "fail" if any check fails, else "wait" if any lacks data, else "pass". A check
    lacks data when its side has fewer than ``min_requests`` requests (or comparisons, or
    PSI samples). ``baseline=None`` means there is no baseline: checks relative to it are
    left out; a baseline with too little traffic makes them wait instead. The divergence
    check is left out when no numeric predictions were recorded on either side.

    One early failure: with fewer than ``min_requests`` requests the error-rate check fails
    already when the errors alone exceed ``max_error_rate`` of ``min_requests`` (a version
    that errors on every request should not need the full sample to be stopped).
    """
    t = thresholds
    enough = canary.requests >= t.min_requests
    base_enough = baseline is not None and baseline.requests >= t.min_requests
    checks: list[Check] = []

    waiting = f"{canary.requests} of {t.min_requests} requests needed"
    checks.append(Check("traffic", float(canary.requests), float(t.min_requests),
                        PASS if enough else WAIT,
                        f"{canary.requests} requests (min {t.min_requests})" if enough
                        else waiting))

    rate = canary.error_rate
    if rate is None:
        checks.append(Check("error_rate", None, t.max_error_rate, WAIT,
                            f"no requests yet; {waiting}"))
    elif not enough:
        if canary.errors > t.max_error_rate * t.min_requests:
            checks.append(Check("error_rate", rate, t.max_error_rate, FAIL,
                                f"{canary.errors} errors in {canary.requests} requests: over "
                                f"{_pct(t.max_error_rate)} of the {t.min_requests}-request "
                                "minimum already"))
        else:
            checks.append(Check("error_rate", rate, t.max_error_rate, WAIT,
                                f"error rate {_pct(rate)} so far; {waiting}"))
    else:
        ok = rate <= t.max_error_rate
        checks.append(Check("error_rate", rate, t.max_error_rate, PASS if ok else FAIL,
                            f"error rate {_pct(rate)} {'<=' if ok else '>'} "
                            f"{_pct(t.max_error_rate)} over {canary.requests} requests"))

    if t.max_error_rate_increase is not None and baseline is not None:
        limit = t.max_error_rate_increase
        base_rate = baseline.error_rate
        if not enough or not base_enough or rate is None or base_rate is None:
            checks.append(Check("error_rate_increase", None, limit, WAIT,
                                f"needs {t.min_requests} requests on both sides; canary has "
                                f"{canary.requests}, baseline {baseline.requests}"))
        else:
            increase = rate - base_rate
            ok = increase <= limit
            checks.append(Check("error_rate_increase", increase, limit, PASS if ok else FAIL,
                                f"error rate {_pct(rate)} vs baseline {_pct(base_rate)}: "
                                f"{increase * 100:+.2f} points {'<=' if ok else '>'} "
                                f"+{limit * 100:.2f}"))

    if t.max_p99_ratio is not None and baseline is not None:
        p99, base_p99 = canary.p99_s, baseline.p99_s
        if not enough or not base_enough or p99 is None or base_p99 is None:
            checks.append(Check("p99_ratio", None, None, WAIT,
                                f"needs {t.min_requests} timed requests on both sides; canary "
                                f"has {canary.requests}, baseline {baseline.requests}"))
        else:
            limit_ms = t.max_p99_ratio * _ms(base_p99) + t.p99_slack_ms
            ok = _ms(p99) <= limit_ms
            checks.append(Check("p99_ratio", _ms(p99), limit_ms, PASS if ok else FAIL,
                                f"p99 {_ms(p99):.1f} ms {'<=' if ok else '>'} "
                                f"{t.max_p99_ratio:g} x baseline {_ms(base_p99):.1f} ms + "
                                f"{t.p99_slack_ms:g} ms = {limit_ms:.1f} ms"))

    if t.max_p99_ms is not None:
        p99 = canary.p99_s
        if not enough or p99 is None:
            checks.append(Check("p99", None, t.max_p99_ms, WAIT, f"p99: {waiting}"))
        else:
            ok = _ms(p99) <= t.max_p99_ms
            checks.append(Check("p99", _ms(p99), t.max_p99_ms, PASS if ok else FAIL,
                                f"p99 {_ms(p99):.1f} ms {'<=' if ok else '>'} "
                                f"{t.max_p99_ms:g} ms"))

    if t.max_divergence is not None:
        checks.extend(_divergence(canary, baseline, t.max_divergence))

    if t.min_agreement is not None:
        share = canary.agreement
        if canary.compared < t.min_requests or share is None:
            checks.append(Check("agreement", share, t.min_agreement, WAIT,
                                f"{canary.compared} of {t.min_requests} compared answers "
                                "needed"))
        else:
            ok = share >= t.min_agreement
            checks.append(Check("agreement", share, t.min_agreement, PASS if ok else FAIL,
                                f"agreement {_pct(share)} {'>=' if ok else '<'} "
                                f"{_pct(t.min_agreement)} over {canary.compared} compared"))

    statuses = {c.status for c in checks}
    status = FAIL if FAIL in statuses else WAIT if WAIT in statuses else PASS
    return Verdict(status, tuple(checks))


def _divergence(canary: WindowStats, baseline: WindowStats | None,
                limit: float) -> list[Check]:
    # A shadow's reference is the primary's answers to the same requests; otherwise the
    # baseline's own answers over the window.
    if canary.paired_predictions.size:
        reference, weights = canary.paired_predictions, canary.paired_weights
        against = "the primary's answers to the same requests"
    elif baseline is not None:
        reference, weights = baseline.predictions, baseline.prediction_weights
        against = "the baseline"
    else:
        return []
    if not reference.size and not canary.predictions.size:
        return []  # the model's answers have no numeric summary: nothing to compare
    value = psi(reference, canary.predictions, expected_weights=weights,
                actual_weights=canary.prediction_weights)
    if value is None:
        needed = MIN_SAMPLES_PER_BIN * DEFAULT_BINS
        return [Check("divergence", None, limit, WAIT,
                      f"prediction PSI needs {needed} samples per side; has "
                      f"{canary.predictions.size} vs {reference.size} from {against}")]
    ok = value <= limit
    return [Check("divergence", value, limit, PASS if ok else FAIL,
                  f"prediction PSI {value:.3f} {'<=' if ok else '>'} {limit:g} "
                  f"({psi_meaning(value)}) against {against}, {canary.predictions.size} vs "
                  f"{reference.size} samples")]


# ---------------------------------------------------------------------------------------------
# Distribution divergence

DEFAULT_BINS = 10


def histograms(expected: Any, actual: Any, bins: int = DEFAULT_BINS, *,
               expected_weights: Any = None, actual_weights: Any = None,
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """The two samples' shares per bin, the bins cut at the quantiles of ``expected``.

    When ``expected`` has at most ``bins`` distinct values (labels, a constant, clipped
    scores) each value is its own bin, plus one bin for anything else: quantile edges would
    collapse and hide a shift. None when either side has fewer than ``MIN_SAMPLES_PER_BIN *
    bins`` samples: too few to tell drift from noise, which callers treat as "wait".
    Raises ValidationFailed for non-finite values, bad weights or ``bins`` outside 2-100.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 100:
        raise ValidationFailed("bins must be an integer from 2 to 100", field="bins")
    e, a = _floats(expected, "expected"), _floats(actual, "actual")
    ew = _weights(expected_weights, e.size, "expected_weights")
    aw = _weights(actual_weights, a.size, "actual_weights")
    if min(e.size, a.size) < MIN_SAMPLES_PER_BIN * bins:
        return None
    distinct = np.unique(e)
    if distinct.size <= bins:
        def index(x: np.ndarray) -> np.ndarray:
            at = np.minimum(np.searchsorted(distinct, x), distinct.size - 1)
            return np.where(distinct[at] == x, at, distinct.size)

        size = distinct.size + 1
    else:
        qs = np.arange(1, bins) / bins
        if ew is None:
            edges = np.quantile(e, qs)
        else:
            edges = np.array([quantile(e, float(q), ew) for q in qs])
        edges = np.unique(edges)

        def index(x: np.ndarray) -> np.ndarray:
            return np.searchsorted(edges, x, side="right")

        size = edges.size + 1
    counts_e = np.bincount(index(e), weights=ew, minlength=size).astype(np.float64)
    counts_a = np.bincount(index(a), weights=aw, minlength=size).astype(np.float64)
    return counts_e / counts_e.sum(), counts_a / counts_a.sum()


def psi(expected: Any, actual: Any, bins: int = DEFAULT_BINS, *, expected_weights: Any = None,
        actual_weights: Any = None) -> float | None:
    """Population stability index of ``actual`` against ``expected`` (both raw samples).

    PSI = sum over bins of (a - e) * ln(a / e), bins at the quantiles of ``expected`` (see
    ``histograms``), an empty bin's share floored at ``PSI_EPSILON``. Symmetric and >= 0.
    Reading: < 0.1 stable, 0.1-0.2 drifting, > 0.2 shifted.

    Returns None (not an error) when a side has fewer than ``MIN_SAMPLES_PER_BIN * bins``
    samples: a rollout with little traffic is a normal state, and small samples inflate PSI
    (its expectation under no change is about (bins - 1) * (1/n + 1/m)).
    """
    shares = histograms(expected, actual, bins, expected_weights=expected_weights,
                        actual_weights=actual_weights)
    if shares is None:
        return None
    e, a = (np.maximum(s, PSI_EPSILON) for s in shares)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_meaning(value: float) -> str:
    return "stable" if value < 0.1 else "drifting" if value <= 0.2 else "shifted"


def jensen_shannon(p: Any, q: Any) -> float | None:
    """Jensen-Shannon divergence of two distributions over the same bins, base 2: 0 for
    identical, 1 for disjoint. ``p`` and ``q`` are counts or shares (normalized here); for
    raw samples, bin them first: ``jensen_shannon(*histograms(a, b))``.

    None when either has no mass (nothing observed); ValidationFailed for negative or
    non-finite entries or different lengths.
    """
    pa, qa = _floats(p, "p"), _floats(q, "q")
    if pa.size != qa.size or np.any(pa < 0) or np.any(qa < 0):
        raise ValidationFailed("p and q must be non-negative and of the same length",
                               field="p")
    if pa.sum() <= 0 or qa.sum() <= 0:
        return None
    pa, qa = pa / pa.sum(), qa / qa.sum()
    m = 0.5 * (pa + qa)

    def kl(x: np.ndarray) -> float:
        nz = x > 0  # 0 * log 0 = 0; m > 0 wherever x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return min(1.0, max(0.0, 0.5 * kl(pa) + 0.5 * kl(qa)))


# ---------------------------------------------------------------------------------------------
# A/B tests that may be peeked at


@dataclass(frozen=True)
class Sample:
    """Sufficient statistics of one arm: size, mean and (unbiased) variance.

    ``binary`` samples are 0/1 outcomes (conversions, errors); their variance is
    ``mean * (1 - mean)`` and the fixed-horizon test is the two-proportion z test.
    """

    n: int
    mean: float = 0.0
    variance: float = 0.0
    binary: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or self.n < 0:
            raise ValidationFailed("n must be a non-negative integer", field="n")
        if not (math.isfinite(self.mean) and math.isfinite(self.variance)
                and self.variance >= 0):
            raise ValidationFailed("mean and variance must be finite, variance >= 0",
                                   field="variance")
        if self.binary and not 0 <= self.mean <= 1:
            raise ValidationFailed("a binary sample's mean must be from 0 to 1", field="mean")

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray, binary: bool | None = None) -> Sample:
        """From raw observations; ``binary=None`` detects 0/1 outcomes."""
        x = _floats(values, "values")
        if binary is None:
            binary = bool(x.size) and bool(np.all((x == 0) | (x == 1)))
        if not x.size:
            return cls(0, binary=binary)
        mean = float(x.mean())
        if binary:
            return cls(int(x.size), mean, mean * (1 - mean), True)
        return cls(int(x.size), mean, float(x.var(ddof=1)) if x.size > 1 else 0.0, False)

    @classmethod
    def proportion(cls, successes: int, n: int) -> Sample:
        if not 0 <= successes <= n:
            raise ValidationFailed("successes must be from 0 to n", field="successes")
        mean = successes / n if n else 0.0
        return cls(n, mean, mean * (1 - mean), True)

    def merged(self, other: Sample) -> Sample:
        """Both samples as one (Chan et al.'s parallel update): lets a caller accumulate."""
        n = self.n + other.n
        if n == 0:
            return Sample(0, binary=self.binary and other.binary)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        if self.binary and other.binary:
            return Sample(n, mean, mean * (1 - mean), True)
        m2 = (self.variance * max(self.n - 1, 0) + other.variance * max(other.n - 1, 0)
              + delta * delta * self.n * other.n / n)
        return Sample(n, mean, m2 / (n - 1) if n > 1 else 0.0, False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BinaryOrContinuousSample: TypeAlias = Sample | Sequence[float] | np.ndarray

TREATMENT_BETTER = "treatment better"
CONTROL_BETTER = "control better"
NO_DIFFERENCE_YET = "no difference yet"

# Mixing distribution N(0, tau^2) over the effect. tau is where the test is most powerful;
# without a stated one it is this share of the pooled standard deviation (a small effect),
# fixed at the first test that has min_n per arm and carried on through ``previous``.
DEFAULT_MIXING_EFFECT = 0.1
DEFAULT_MIN_N = 30  # per arm: plug-in variances of fewer observations are too unstable


@dataclass(frozen=True)
class ABTestResult:
    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    difference: float  # treatment - control
    relative: float | None  # difference / |mean_control|; None when the control mean is 0
    interval: tuple[float, float]  # always-valid (1 - alpha) confidence sequence, difference
    p_value: float  # always-valid: P(ever this small | no effect) <= p, however often checked
    decision: str  # TREATMENT_BETTER, CONTROL_BETTER or NO_DIFFERENCE_YET
    alpha: float
    higher_is_better: bool
    mixing_sd: float | None  # tau actually used (None: not enough data to fix it yet)
    fixed_test: str  # "welch_t" or "two_proportion_z"
    fixed_p_value: float  # classical: valid only if looked at once, at a planned n
    fixed_interval: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        def bounds(pair: tuple[float, float]) -> list[float | None]:
            return [x if math.isfinite(x) else None for x in pair]

        out = asdict(self)
        out["interval"] = bounds(self.interval)
        out["fixed_interval"] = bounds(self.fixed_interval)
        return out


def _as_sample(value: BinaryOrContinuousSample, name: str) -> Sample:
    if isinstance(value, Sample):
        return value
    try:
        return Sample.of(value)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"{name} must be a Sample or numbers", field=name) from exc


def _log_mixture_lr(delta: Any, v: Any, tau2: Any) -> Any:
    """log of the mSPRT statistic: the likelihood ratio of N(delta; theta, v), averaged over
    theta ~ N(0, tau^2), against theta = 0 (Johari et al. 2017, normal mixture)."""
    return 0.5 * np.log(v / (v + tau2)) + delta * delta * tau2 / (2 * v * (v + tau2))


def _half_width(v: float, tau2: float, alpha: float) -> float:
    # {theta : mixture LR against theta < 1/alpha}, solved for |delta - theta|.
    return math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha)
                                              + math.log((v + tau2) / v)))


def ab_test(control: BinaryOrContinuousSample, treatment: BinaryOrContinuousSample,
            alpha: float = 0.05, *, mixing_sd: float | None = None,
            min_n: int = DEFAULT_MIN_N, higher_is_better: bool = True,
            previous: ABTestResult | None = None) -> ABTestResult:
    """Compares the means of two arms with a test that stays valid under continuous peeking.

    Mixture SPRT with a normal mixing distribution (Johari, Pekelis, Walsh 2017, "Always
    valid inference"), on the difference of means with plug-in variances: ``p_value`` is
    always valid and ``interval`` is a confidence sequence, so the controller may call this
    after every request and stop the first time ``decision`` is not NO_DIFFERENCE_YET, with
    a false-positive rate of at most ``alpha``.

    Pass the previous result of the same experiment as ``previous``: the p-value is the
    running minimum and the interval the running intersection (that is what makes them
    always valid), and the mixing sd stays the one fixed first. The fixed-horizon test
    (Welch t, or two-proportion z for binary arms) is reported for comparison only.
    Until each arm has ``min_n`` observations, p is 1 and the interval unbounded.
    """
    if not 0 < alpha < 1:
        raise ValidationFailed("alpha must be between 0 and 1", field="alpha")
    if mixing_sd is not None and not (math.isfinite(mixing_sd) and mixing_sd > 0):
        raise ValidationFailed("mixing_sd must be a positive number", field="mixing_sd")
    if min_n < 2:
        raise ValidationFailed("min_n must be at least 2", field="min_n")
    c, t = _as_sample(control, "control"), _as_sample(treatment, "treatment")
    if previous is not None:
        if previous.alpha != alpha:
            raise ValidationFailed("previous was computed with another alpha", field="previous")
        if previous.n_control > c.n or previous.n_treatment > t.n:
            raise ValidationFailed("previous has more observations than these samples",
                                   field="previous")
        if mixing_sd is None:
            mixing_sd = previous.mixing_sd
    difference = t.mean - c.mean
    v = t.variance / t.n + c.variance / c.n if c.n and t.n else 0.0
    if mixing_sd is None and c.n >= min_n and t.n >= min_n:
        pooled = math.sqrt((c.variance + t.variance) / 2)
        mixing_sd = DEFAULT_MIXING_EFFECT * pooled if pooled > 0 else None

    p_value, interval = 1.0, (-math.inf, math.inf)
    if c.n >= min_n and t.n >= min_n and v > 0 and mixing_sd is not None:
        tau2 = mixing_sd * mixing_sd
        p_value = min(1.0, math.exp(-float(_log_mixture_lr(difference, v, tau2))))
        half = _half_width(v, tau2, alpha)
        interval = (difference - half, difference + half)
    if previous is not None:
        p_value = min(p_value, previous.p_value)
        lo, hi = max(interval[0], previous.interval[0]), min(interval[1], previous.interval[1])
        if lo <= hi:  # empty only with probability <= alpha: then keep the current interval
            interval = (lo, hi)

    if interval[0] > 0:
        decision = TREATMENT_BETTER if higher_is_better else CONTROL_BETTER
    elif interval[1] < 0:
        decision = CONTROL_BETTER if higher_is_better else TREATMENT_BETTER
    else:
        decision = NO_DIFFERENCE_YET
    fixed_test, fixed_p, fixed_interval = _fixed_horizon(c, t, alpha)
    return ABTestResult(
        n_control=c.n, n_treatment=t.n, mean_control=c.mean, mean_treatment=t.mean,
        difference=difference, relative=difference / abs(c.mean) if c.mean else None,
        interval=interval, p_value=p_value, decision=decision, alpha=alpha,
        higher_is_better=higher_is_better, mixing_sd=mixing_sd, fixed_test=fixed_test,
        fixed_p_value=fixed_p, fixed_interval=fixed_interval)


def _fixed_horizon(c: Sample, t: Sample, alpha: float) -> tuple[str, float, tuple[float, float]]:
    difference = t.mean - c.mean
    unbounded = (-math.inf, math.inf)
    if c.binary and t.binary:
        name = "two_proportion_z"
        if c.n < 1 or t.n < 1:
            return name, 1.0, unbounded
        pooled = (c.mean * c.n + t.mean * t.n) / (c.n + t.n)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / c.n + 1 / t.n))
        p = 1.0 if se0 == 0 else 2 * NormalDist().cdf(-abs(difference) / se0)
        se = math.sqrt(c.variance / c.n + t.variance / t.n)
        z = NormalDist().inv_cdf(1 - alpha / 2)
        return name, min(1.0, p), (difference - z * se, difference + z * se)
    name = "welch_t"
    if c.n < 2 or t.n < 2:
        return name, 1.0, unbounded
    vc, vt = c.variance / c.n, t.variance / t.n
    se = math.sqrt(vc + vt)
    if se == 0:
        return name, 1.0 if difference == 0 else 0.0, (difference, difference)
    from scipy.stats import t as student_t  # imported here: scipy is slow to import

    df = (vc + vt) ** 2 / (vc * vc / (c.n - 1) + vt * vt / (t.n - 1))
    p = float(2 * student_t.sf(abs(difference) / se, df))
    q = float(student_t.ppf(1 - alpha / 2, df))
    return name, min(1.0, p), (difference - q * se, difference + q * se)


def sequential_p_values(control: Sequence[float] | np.ndarray,
                        treatment: Sequence[float] | np.ndarray, *,
                        mixing_sd: float | None = None, min_n: int = DEFAULT_MIN_N,
                        binary: bool | None = None) -> np.ndarray:
    """The always-valid p-value after each of the first k observations per arm, k = 1..K
    (K the shorter arm), as ``ab_test`` chained through ``previous`` would give them;
    vectorized, for simulations and for replaying a finished experiment."""
    c, t = _floats(control, "control"), _floats(treatment, "treatment")
    size = min(c.size, t.size)
    c, t = c[:size], t[:size]
    if binary is None:
        both = np.concatenate([c, t])
        binary = bool(both.size) and bool(np.all((both == 0) | (both == 1)))
    k = np.arange(1, size + 1, dtype=np.float64)
    mc, mt = np.cumsum(c) / k, np.cumsum(t) / k
    if binary:
        vc, vt = mc * (1 - mc), mt * (1 - mt)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            vc = np.maximum((np.cumsum(c * c) - k * mc * mc) / (k - 1), 0.0)
            vt = np.maximum((np.cumsum(t * t) - k * mt * mt) / (k - 1), 0.0)
    v = vc / k + vt / k
    usable = (k >= min_n) & (v > 0)
    if mixing_sd is not None:
        tau2 = np.full(size, mixing_sd * mixing_sd)
    else:
        pooled = np.sqrt((vc + vt) / 2)
        fixable = np.flatnonzero((k >= min_n) & (pooled > 0))
        if not fixable.size:
            return np.ones(size)
        first = int(fixable[0])
        tau2 = np.full(size, (DEFAULT_MIXING_EFFECT * pooled[first]) ** 2)
        usable &= np.arange(size) >= first
    p = np.ones(size)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lr = _log_mixture_lr(mt - mc, v, tau2)
        p[usable] = np.minimum(1.0, np.exp(-log_lr[usable]))
    return np.minimum.accumulate(p)
