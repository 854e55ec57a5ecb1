"""Reference profiles: what a model's inputs and predictions looked like when it was trained.

Built once, when a version is registered, from its training (or validation) data, stored as
JSON, and later tested against windows of live traffic by ``drift``. Pure functions of the
arrays given; sizes are bounded whatever the number of rows (see docs/decisions/0015):

* numeric feature: count, missing, min/max, mean/std, ``QUANTILE_PROBS`` quantiles (the
  reference CDF for a Kolmogorov-Smirnov test, with its error bound ``cdf_error``) and decile
  bins with their shares (for PSI); about 3 KB of JSON.
* categorical feature (strings, bools, integers with few distinct values): the ``TOP_K``
  most frequent categories with counts, one "other" count, the missing count.
* embedding (2-D floats wider than ``EMBEDDING_MIN_WIDTH``): a seeded sample of at most
  ``EMBEDDING_SAMPLE`` vectors projected to at most ``PROJECTION_DIMS`` dimensions by a
  Gaussian random projection regenerated from the stored seed, the mean vector and the
  quantiles of the vector norms; about 45 KB for a 1,024-wide embedding.

A 2-D input at most ``EMBEDDING_MIN_WIDTH`` wide (a tabular model's single input tensor) is
split into one feature per column, named ``name[j]``; ``feature_columns`` does the split for
both the profile and the windows tested against it.
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np

from modelyard.domain import jsonfields as jf
from modelyard.domain.analysis import DEFAULT_BINS
from modelyard.domain.errors import ValidationFailed

PROFILE_SCHEMA_VERSION = 1

Kind = Literal["numeric", "categorical", "embedding"]
KINDS: tuple[Kind, ...] = ("numeric", "categorical", "embedding")

# Every percentile plus finer steps in the tails: between two stored quantiles the reference
# CDF is a straight line, and it is in the tails (min to 1st percentile) that a straight line
# is furthest from a real CDF.
QUANTILE_PROBS: np.ndarray = np.unique(np.concatenate(
    [[0.0, 0.001, 0.002, 0.005], np.arange(1, 100) / 100, [0.995, 0.998, 0.999, 1.0]]))
TOP_K = 50  # categories kept with their own count; the rest share one "other" bucket
MAX_INT_CATEGORIES = 20  # integer columns with at most this many distinct values are categories
EMBEDDING_MIN_WIDTH = 16  # wider 2-D float columns are embeddings; narrower are split
EMBEDDING_SAMPLE = 256  # vectors kept: enough for an MMD test, 32 KB as float32 x 32 dims
PROJECTION_DIMS = 32  # Johnson-Lindenstrauss: pairwise distances kept within ~25%
NORM_PROBS: np.ndarray = np.linspace(0.0, 1.0, 11)
DEFAULT_SEED = 20240611


# ---------------------------------------------------------------------------------------------
# Columns


def _as_array(values: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged nested lists
        raise ValidationFailed(f"{where} is not a rectangular array: {exc}", field=where) from exc
    if array.ndim == 0:
        raise ValidationFailed(f"{where} must have one row per example, got a scalar",
                               field=where)
    return array


def feature_columns(columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Named 1-D feature columns and 2-D embedding columns, every one with the same rows.

    A 2-D column at most ``EMBEDDING_MIN_WIDTH`` wide becomes one column per index
    (``x[0]``, ``x[1]``, ...); deeper arrays (images) are flattened per row first.
    """
    out: dict[str, np.ndarray] = {}
    rows: int | None = None
    for name, values in columns.items():
        where = f"columns.{name}"
        array = _as_array(values, where)
        if array.ndim > 2:
            array = array.reshape(array.shape[0], -1)
        if rows is not None and array.shape[0] != rows:
            raise ValidationFailed(f"column {name!r} has {array.shape[0]} rows, another has "
                                   f"{rows}", field=where)
        rows = array.shape[0]
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim == 2 and array.shape[1] <= EMBEDDING_MIN_WIDTH:
            for j in range(array.shape[1]):
                out[f"{name}[{j}]"] = array[:, j]
        else:
            out[name] = array
    return out


def prediction_column(predictions: Any) -> np.ndarray:
    """Predictions as one column: 1-D as given; 2-D scores of a few classes become the index
    of the top class; wider 2-D outputs (embeddings) stay 2-D."""
    array = _as_array(predictions, "predictions")
    if array.ndim > 2:
        array = array.reshape(array.shape[0], -1)
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    if array.ndim == 2 and array.shape[1] <= EMBEDDING_MIN_WIDTH:
        if array.dtype.kind not in "iuf":
            raise ValidationFailed("2-D predictions must be numeric class scores",
                                   field="predictions")
        return np.argmax(array, axis=1)
    return array


def _numeric_objects(array: np.ndarray) -> np.ndarray | None:
    """An object column of numbers and nulls (decoded JSON) as floats; None if not that."""
    def number(v: Any) -> bool:
        return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
            v, bool | np.bool_)

    if all(v is None or number(v) for v in array):
        return np.array([np.nan if v is None else float(v) for v in array], dtype=np.float64)
    return None


def infer_kind(values: np.ndarray) -> Kind:
    """The profile kind a column gets when none is given (see the module docstring)."""
    if values.ndim == 2:
        if values.dtype.kind not in "iuf":
            raise ValidationFailed("a 2-D column must be numeric", field="columns")
        return "embedding"
    kind = values.dtype.kind
    if kind == "b" or kind in "US":
        return "categorical"
    if kind == "O":
        return "numeric" if _numeric_objects(values) is not None else "categorical"
    if kind in "iu":
        return "categorical" if np.unique(values).size <= MAX_INT_CATEGORIES else "numeric"
    if kind == "f":
        return "numeric"
    raise ValidationFailed(f"cannot profile a column of dtype {values.dtype}", field="columns")


def numeric_values(values: np.ndarray, where: str) -> np.ndarray:
    """A 1-D column as float64, missing values (null, NaN, +-Inf) as NaN."""
    if values.ndim != 1:
        raise ValidationFailed(f"{where} must be one value per row", field=where)
    if values.dtype.kind == "O":
        converted = _numeric_objects(values)
        if converted is None:
            raise ValidationFailed(f"{where} must hold numbers", field=where)
        array = converted
    elif values.dtype.kind in "iufb":
        array = values.astype(np.float64)
    else:
        raise ValidationFailed(f"{where} must hold numbers, got {values.dtype}", field=where)
    array[~np.isfinite(array)] = np.nan
    return array


def category_key(value: Any) -> str | None:
    """The stored name of a category: JSON object keys are strings, so ``True`` is
    ``"true"`` and ``3`` (or ``3.0``) is ``"3"``; None for a missing value."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def category_counts(values: np.ndarray) -> tuple[Counter[str], int]:
    """Counts per category key, and the number of missing values."""
    if values.ndim != 1:
        raise ValidationFailed("a categorical column must be one value per row",
                               field="columns")
    counts: Counter[str] = Counter()
    if values.dtype.kind in "biuf":  # few distinct values: count them, then name them
        uniques, n = np.unique(values, return_counts=True)
        pairs = zip(uniques.tolist(), n.tolist(), strict=True)
    else:
        pairs = Counter(values.tolist()).items()  # type: ignore[assignment]
    missing = 0
    for value, n_value in pairs:
        key = category_key(value)
        if key is None:
            missing += int(n_value)
        else:
            counts[key] += int(n_value)
    return counts, missing


# ---------------------------------------------------------------------------------------------
# Profiles per kind


def _rows_to_floats(values: tuple[float, ...]) -> list[float]:
    return [float(v) for v in values]


def _bin_shares(edges: np.ndarray, discrete: bool, values: np.ndarray) -> np.ndarray:
    if discrete:
        at = np.minimum(np.searchsorted(edges, values), edges.size - 1)
        index = np.where(edges[at] == values, at, edges.size)
    else:
        index = np.searchsorted(edges, values, side="right")
    counts = np.bincount(index, minlength=edges.size + 1).astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts


def _cdf(quantiles: np.ndarray, x: np.ndarray, *, left: bool = False) -> np.ndarray:
    # Piecewise linear through (quantile, prob). A value repeated over several probs (a
    # point mass) is a jump: the CDF at it is the highest of those probs, its left limit the
    # lowest; between distinct values the line runs from one's high to the next's low.
    knots, first = np.unique(quantiles, return_index=True)
    last = quantiles.size - 1 - np.unique(quantiles[::-1], return_index=True)[1]
    p_low, p_high = QUANTILE_PROBS[first], QUANTILE_PROBS[last]
    k = np.searchsorted(knots, x, side="left" if left else "right") - 1
    out = np.where(k < 0, 0.0, 1.0)
    if knots.size > 1:
        inner = (k >= 0) & (k < knots.size - 1)
        kk = np.clip(k, 0, knots.size - 2)
        frac = np.clip((x - knots[kk]) / (knots[kk + 1] - knots[kk]), 0.0, 1.0)
        out = np.where(inner, p_high[kk] + frac * (p_low[kk + 1] - p_high[kk]), out)
    return out


def _ks_distance(quantiles: np.ndarray, x: np.ndarray) -> float:
    """sup |F_n - F_ref| for sorted ``x``, exact for a reference with jumps too."""
    n = x.size
    if not n:
        return 0.0
    # With ties the last of equal values carries the ECDF's value there and the first its
    # left limit; taking the max over all positions picks exactly those.
    i = np.arange(1, n + 1, dtype=np.float64)
    above = np.max(i / n - _cdf(quantiles, x))
    below = np.max(_cdf(quantiles, x, left=True) - (i - 1) / n)
    return float(max(above, below, 0.0))


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """A numeric feature. The reference CDF is piecewise linear through ``quantiles`` (at
    ``QUANTILE_PROBS``); ``cdf_error`` is its largest distance from the data's own empirical
    CDF, which the KS test subtracts so the summary's coarseness never reads as drift.

    ``bin_edges``/``bin_shares`` are the PSI bins, cut as ``analysis.histograms`` cuts them:
    at the deciles, or, when there are at most ``DEFAULT_BINS`` distinct values (``discrete``),
    one bin per value plus a last bin for anything else.
    """

    kind: ClassVar[Kind] = "numeric"
    count: int  # non-missing values
    missing: int
    min: float | None = None  # None when every value is missing
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: tuple[float, ...] = ()
    cdf_error: float = 0.0
    bin_edges: tuple[float, ...] = ()
    bin_shares: tuple[float, ...] = ()
    discrete: bool = False

    def __post_init__(self) -> None:
        if self.count and len(self.quantiles) != QUANTILE_PROBS.size:
            raise ValidationFailed(f"quantiles must hold {QUANTILE_PROBS.size} values",
                                   field="quantiles")
        if self.count and np.any(np.diff(self.quantiles) < 0):
            raise ValidationFailed("quantiles must not decrease", field="quantiles")
        if self.count and len(self.bin_shares) != len(self.bin_edges) + 1:
            raise ValidationFailed("bin_shares must hold one share more than bin_edges",
                                   field="bin_shares")
        if self.count and np.any(np.diff(self.bin_edges) <= 0):
            raise ValidationFailed("bin_edges must increase", field="bin_edges")

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> NumericProfile:
        x = numeric_values(values, "values")
        present = np.sort(x[~np.isnan(x)])
        missing = int(x.size - present.size)
        if not present.size:
            return cls(count=0, missing=missing)
        quantiles = np.quantile(present, QUANTILE_PROBS)
        distinct = np.unique(present)
        if distinct.size <= DEFAULT_BINS:
            edges, discrete = distinct, True
        else:
            edges = np.unique(np.quantile(present, np.arange(1, DEFAULT_BINS) / DEFAULT_BINS))
            discrete = False
        return cls(count=int(present.size), missing=missing, min=float(present[0]),
                   max=float(present[-1]), mean=float(present.mean()),
                   std=float(present.std(ddof=1)) if present.size > 1 else 0.0,
                   quantiles=tuple(quantiles.tolist()),
                   cdf_error=_ks_distance(quantiles, present),
                   bin_edges=tuple(edges.tolist()),
                   bin_shares=tuple(_bin_shares(edges, discrete, present).tolist()),
                   discrete=discrete)

    def shares(self, values: np.ndarray) -> np.ndarray:
        """The share of (non-missing) ``values`` in each of this profile's PSI bins."""
        return _bin_shares(np.asarray(self.bin_edges), self.discrete, values)

    def cdf(self, x: np.ndarray, *, left: bool = False) -> np.ndarray:
        """The reference CDF at ``x`` (``left``: its limit from the left, which differs at
        a value that holds a share of its own, like 0 in a zero-inflated feature)."""
        return _cdf(np.asarray(self.quantiles), x, left=left)

    def ks_distance(self, values: np.ndarray) -> float:
        """sup |F_n - F_ref| between the empirical CDF of ``values`` (non-missing) and the
        reference CDF."""
        return _ks_distance(np.asarray(self.quantiles), np.sort(values))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "missing": self.missing,
                "min": self.min, "max": self.max, "mean": self.mean, "std": self.std,
                "quantiles": _rows_to_floats(self.quantiles), "cdf_error": self.cdf_error,
                "bin_edges": _rows_to_floats(self.bin_edges),
                "bin_shares": _rows_to_floats(self.bin_shares), "discrete": self.discrete}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> NumericProfile:
        d = jf.obj(data, {"kind", "count", "missing", "min", "max", "mean", "std", "quantiles",
                          "cdf_error", "bin_edges", "bin_shares", "discrete"}, "profile", where)
        count = jf.integer(jf.required(d, "count", where), f"{where}.count")
        stats = {k: jf.number(d.get(k), f"{where}.{k}", optional=not count)
                 for k in ("min", "max", "mean", "std")}
        return _construct(cls, where, count=count,
                          missing=jf.integer(jf.required(d, "missing", where),
                                             f"{where}.missing"),
                          **stats,
                          quantiles=jf.numbers(d.get("quantiles", []), f"{where}.quantiles"),
                          cdf_error=jf.share(d.get("cdf_error", 0.0), f"{where}.cdf_error"),
                          bin_edges=jf.numbers(d.get("bin_edges", []), f"{where}.bin_edges"),
                          bin_shares=jf.numbers(d.get("bin_shares", []),
                                                f"{where}.bin_shares"),
                          discrete=jf.boolean(d.get("discrete", False), f"{where}.discrete"))


def _construct(cls: Any, where: str, **kwargs: Any) -> Any:
    """``cls(**kwargs)``, its own checks' errors placed under ``where``."""
    try:
        return cls(**kwargs)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{where}: {exc.detail}", field=f"{where}.{exc.field}") from exc


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """A categorical feature: the ``TOP_K`` most frequent categories (most frequent first)
    with their counts, and ``other``: how many values fell in any further category."""

    kind: ClassVar[Kind] = "categorical"
    count: int  # non-missing values
    missing: int
    categories: tuple[tuple[str, int], ...] = ()
    other: int = 0
    distinct: int = 0  # distinct categories seen, kept or not

    def __post_init__(self) -> None:
        if sum(n for _, n in self.categories) + self.other != self.count:
            raise ValidationFailed("category counts and other must add up to count",
                                   field="categories")
        if len({k for k, _ in self.categories}) != len(self.categories):
            raise ValidationFailed("categories must be distinct", field="categories")

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def other_share(self) -> float:
        return self.other / self.count if self.count else 0.0

    @classmethod
    def of(cls, values: np.ndarray, top_k: int = TOP_K) -> CategoricalProfile:
        counts, missing = category_counts(values)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = tuple(ranked[:top_k])
        total = sum(counts.values())
        return cls(count=total, missing=missing, categories=kept,
                   other=total - sum(n for _, n in kept), distinct=len(counts))

    def counts_of(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """Counts of ``values`` per kept category plus a last "other" bucket, and the
        number of missing values."""
        counts, missing = category_counts(values)
        kept = [counts.get(k, 0) for k, _ in self.categories]
        other = sum(counts.values()) - sum(kept)
        return np.array([*kept, other], dtype=np.float64), missing

    def reference_counts(self) -> np.ndarray:
        return np.array([*(n for _, n in self.categories), self.other], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "missing": self.missing,
                "categories": [[k, n] for k, n in self.categories], "other": self.other,
                "distinct": self.distinct}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> CategoricalProfile:
        d = jf.obj(data, {"kind", "count", "missing", "categories", "other", "distinct"},
                   "profile", where)
        raw = jf.required(d, "categories", where)
        if not isinstance(raw, list):
            raise ValidationFailed(f"{where}.categories must be a list of [name, count]",
                                   field=f"{where}.categories")
        categories = []
        for i, pair in enumerate(raw):
            at = f"{where}.categories[{i}]"
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValidationFailed(f"{at} must be [name, count]", field=at)
            categories.append((jf.string(pair[0], at), jf.integer(pair[1], at)))
        return _construct(cls, where,
                          count=jf.integer(jf.required(d, "count", where), f"{where}.count"),
                          missing=jf.integer(jf.required(d, "missing", where),
                                             f"{where}.missing"),
                          categories=tuple(categories),
                          other=jf.integer(d.get("other", 0), f"{where}.other"),
                          distinct=jf.integer(d.get("distinct", len(categories)),
                                              f"{where}.distinct"))


def projection(width: int, dims: int, seed: int) -> np.ndarray | None:
    """The ``width x dims`` Gaussian random projection for ``seed`` (None: no projection,
    the vectors are narrow enough). Drawn from numpy's legacy ``RandomState``, whose stream
    numpy keeps frozen: a profile stored today projects the same way after an upgrade."""
    if width <= dims:
        return None
    matrix: np.ndarray = np.random.RandomState(seed).standard_normal((width, dims))
    return matrix / math.sqrt(dims)


def embedding_rows(values: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """Rows of a 2-D numeric column with only finite entries, and how many were not."""
    if values.ndim != 2 or values.dtype.kind not in "iuf":
        raise ValidationFailed(f"{where} must be a 2-D numeric array", field=where)
    ok = _finite_rows(values)
    return values[ok].astype(np.float64), int(values.shape[0] - ok.sum())


_CHUNK = 1 << 16  # rows per step over a large embedding column: bounded temporary memory


def _finite_rows(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "iu":
        return np.ones(values.shape[0], dtype=bool)
    return np.concatenate([np.all(np.isfinite(values[i:i + _CHUNK]), axis=1)
                           for i in range(0, values.shape[0], _CHUNK)] or [np.zeros(0, bool)])


def sample_and_project(vectors: np.ndarray, width: int, dims: int, seed: int,
                       size: int = EMBEDDING_SAMPLE, *,
                       sample_seed: int | None = None) -> np.ndarray:
    """At most ``size`` of ``vectors``, chosen uniformly (with ``sample_seed``, by default
    ``seed``), projected by ``projection(width, dims, seed)``."""
    if vectors.shape[1] != width:
        raise ValidationFailed(f"vectors are {vectors.shape[1]} wide, the profile's {width}",
                               field="columns")
    if vectors.shape[0] > size:
        rng = np.random.default_rng(seed if sample_seed is None else sample_seed)
        vectors = vectors[np.sort(rng.choice(vectors.shape[0], size, replace=False))]
    matrix = projection(width, dims, seed)
    return vectors if matrix is None else vectors @ matrix


@dataclass(frozen=True, eq=False)
class EmbeddingProfile:
    """Vectors (embeddings, or any wide numeric output): a seeded sample, projected."""

    kind: ClassVar[Kind] = "embedding"
    count: int  # rows with only finite entries
    missing: int
    width: int
    dims: int  # after projection (== width when not projected)
    seed: int
    sample: np.ndarray  # (at most EMBEDDING_SAMPLE, dims), float32
    mean: tuple[float, ...] = ()  # full width
    norm_quantiles: tuple[float, ...] = ()  # at NORM_PROBS

    def __post_init__(self) -> None:
        if self.width < 1 or not 1 <= self.dims <= self.width:
            raise ValidationFailed("dims must be from 1 to width", field="dims")
        sample = np.asarray(self.sample, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[1] != self.dims or sample.shape[0] > self.count:
            raise ValidationFailed("sample must be (rows <= count, dims)", field="sample")
        if not np.all(np.isfinite(sample)):
            raise ValidationFailed("sample must be finite", field="sample")
        object.__setattr__(self, "sample", sample)
        if self.count and (len(self.mean) != self.width
                           or len(self.norm_quantiles) != NORM_PROBS.size):
            raise ValidationFailed("mean must be width long and norm_quantiles "
                                   f"{NORM_PROBS.size} long", field="mean")

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @classmethod
    def of(cls, values: np.ndarray, seed: int = DEFAULT_SEED) -> EmbeddingProfile:
        if values.ndim != 2 or values.dtype.kind not in "iuf":
            raise ValidationFailed("an embedding must be a 2-D numeric array", field="values")
        width = int(values.shape[1])
        dims = min(PROJECTION_DIMS, width)
        ok = _finite_rows(values)
        count = int(ok.sum())
        missing = int(values.shape[0] - count)
        if not count:
            return cls(count=0, missing=missing, width=width, dims=dims, seed=seed,
                       sample=np.zeros((0, dims), dtype=np.float32))
        # In chunks, in float64: a million float32 rows must not be copied whole.
        total = np.zeros(width)
        norms = []
        for i in range(0, values.shape[0], _CHUNK):
            chunk = values[i:i + _CHUNK][ok[i:i + _CHUNK]].astype(np.float64)
            total += chunk.sum(axis=0)
            norms.append(np.sqrt(np.einsum("ij,ij->i", chunk, chunk)))
        rows = np.flatnonzero(ok)
        if rows.size > EMBEDDING_SAMPLE:
            rows = np.sort(np.random.default_rng(seed).choice(rows, EMBEDDING_SAMPLE,
                                                              replace=False))
        return cls(count=count, missing=missing, width=width, dims=dims, seed=seed,
                   sample=sample_and_project(values[rows].astype(np.float64), width, dims,
                                             seed),
                   mean=tuple((total / count).tolist()),
                   norm_quantiles=tuple(np.quantile(np.concatenate(norms), NORM_PROBS)
                                        .tolist()))

    def to_dict(self) -> dict[str, Any]:
        # float32 bytes in base64: a third of the size of the same numbers as JSON text.
        data = base64.b64encode(self.sample.astype("<f4").tobytes()).decode("ascii")
        return {"kind": self.kind, "count": self.count, "missing": self.missing,
                "width": self.width, "dims": self.dims, "seed": self.seed,
                "sample": {"dtype": "<f4", "shape": list(self.sample.shape), "data": data},
                "mean": _rows_to_floats(self.mean),
                "norm_quantiles": _rows_to_floats(self.norm_quantiles)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> EmbeddingProfile:
        d = jf.obj(data, {"kind", "count", "missing", "width", "dims", "seed", "sample",
                          "mean", "norm_quantiles"}, "profile", where)
        s = jf.obj(jf.required(d, "sample", where), {"dtype", "shape", "data"}, "sample",
                   f"{where}.sample")
        jf.string(s.get("dtype"), f"{where}.sample.dtype", choices=("<f4",))
        shape = s.get("shape")
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                           for v in shape)):
            raise ValidationFailed(f"{where}.sample.shape must be [rows, dims]",
                                   field=f"{where}.sample.shape")
        try:
            raw = base64.b64decode(jf.string(s.get("data"), f"{where}.sample.data"),
                                   validate=True)
        except ValueError as exc:
            raise ValidationFailed(f"{where}.sample.data must be base64",
                                   field=f"{where}.sample.data") from exc
        if len(raw) != 4 * shape[0] * shape[1]:
            raise ValidationFailed(f"{where}.sample.data does not match its shape",
                                   field=f"{where}.sample.data")
        sample = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
        return _construct(
            cls, where, count=jf.integer(jf.required(d, "count", where), f"{where}.count"),
            missing=jf.integer(jf.required(d, "missing", where), f"{where}.missing"),
            width=jf.integer(jf.required(d, "width", where), f"{where}.width", 1),
            dims=jf.integer(jf.required(d, "dims", where), f"{where}.dims", 1),
            seed=jf.integer(jf.required(d, "seed", where), f"{where}.seed"),
            sample=sample, mean=jf.numbers(d.get("mean", []), f"{where}.mean"),
            norm_quantiles=jf.numbers(d.get("norm_quantiles", []), f"{where}.norm_quantiles"))


FeatureProfile: TypeAlias = NumericProfile | CategoricalProfile | EmbeddingProfile
_BY_KIND: dict[str, type[NumericProfile] | type[CategoricalProfile] | type[EmbeddingProfile]] = {
    "numeric": NumericProfile, "categorical": CategoricalProfile, "embedding": EmbeddingProfile}


def profile_feature(values: np.ndarray, kind: Kind | None = None, *,
                    seed: int = DEFAULT_SEED, top_k: int = TOP_K,
                    where: str = "columns") -> FeatureProfile:
    """The profile of one column (``kind`` inferred when None)."""
    kind = kind or infer_kind(values)
    if kind == "embedding":
        if values.ndim != 2:
            raise ValidationFailed(f"{where} is not 2-D: it cannot be an embedding",
                                   field=where)
        return EmbeddingProfile.of(values, seed)
    if values.ndim != 1:
        raise ValidationFailed(f"{where} is 2-D: only an embedding can be", field=where)
    if kind == "numeric":
        if values.dtype.kind in "USb":
            raise ValidationFailed(f"{where} holds {values.dtype}, not numbers", field=where)
        return NumericProfile.of(values)
    if kind == "categorical":
        return CategoricalProfile.of(values, top_k)
    raise ValidationFailed(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}",
                           field=where)


def feature_from_dict(data: Any, where: str) -> FeatureProfile:
    if not isinstance(data, Mapping):
        raise ValidationFailed(f"{where} must be an object", field=where)
    kind = jf.string(data.get("kind"), f"{where}.kind", choices=KINDS)
    return _BY_KIND[kind].from_dict(data, where)


# ---------------------------------------------------------------------------------------------
# The profile of a model version


@dataclass(frozen=True, eq=False)
class Profile:
    """The reference for drift tests: one profile per feature, and one of the predictions."""

    rows: int
    features: Mapping[str, FeatureProfile]
    predictions: FeatureProfile | None = None
    seed: int = DEFAULT_SEED
    schema_version: int = PROFILE_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "rows": self.rows, "seed": self.seed,
                "features": {name: p.to_dict() for name, p in self.features.items()},
                "predictions": None if self.predictions is None
                else self.predictions.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        where = "profile"
        d = jf.obj(data, {"schema_version", "rows", "seed", "features", "predictions"},
                   "profile", where)
        jf.schema(d, PROFILE_SCHEMA_VERSION, where)
        raw = jf.required(d, "features", where)
        if not isinstance(raw, Mapping):
            raise ValidationFailed("profile.features must be an object",
                                   field="profile.features")
        features = {jf.string(name, "profile.features"):
                    feature_from_dict(f, f"profile.features.{name}") for name, f in raw.items()}
        predictions = d.get("predictions")
        return cls(rows=jf.integer(jf.required(d, "rows", where), "profile.rows"),
                   features=features,
                   predictions=None if predictions is None
                   else feature_from_dict(predictions, "profile.predictions"),
                   seed=jf.integer(d.get("seed", DEFAULT_SEED), "profile.seed"))


def build_profile(columns: Mapping[str, Any], predictions: Any = None, *,
                  kinds: Mapping[str, Kind] | None = None, seed: int = DEFAULT_SEED,
                  top_k: int = TOP_K) -> Profile:
    """The reference profile of training data ``columns`` (name -> array, one row per
    example; 2-D narrow columns are split, see ``feature_columns``) and, optionally, of the
    model's ``predictions`` on them (see ``prediction_column``).

    ``kinds`` overrides the inferred kind of a feature (by its name after splitting, or
    ``"predictions"``). Missing values: null, NaN and +-Inf (an embedding row with any).
    Raises ValidationFailed naming the column for unusable input.
    """
    if not isinstance(top_k, int) or not 1 <= top_k <= 1000:
        raise ValidationFailed("top_k must be from 1 to 1000", field="top_k")
    kinds = dict(kinds or {})
    flat = feature_columns(columns)
    unknown = sorted(set(kinds) - set(flat) - {"predictions"})
    if unknown:
        raise ValidationFailed(f"kinds names unknown column {unknown[0]!r}",
                               field=f"kinds.{unknown[0]}")
    features = {name: profile_feature(values, kinds.get(name), seed=seed, top_k=top_k,
                                      where=f"columns.{name}")
                for name, values in flat.items()}
    rows = next(iter(flat.values())).shape[0] if flat else 0
    predicted: FeatureProfile | None = None
    if predictions is not None:
        column = prediction_column(predictions)
        if flat and column.shape[0] != rows:
            raise ValidationFailed(f"predictions have {column.shape[0]} rows, the columns "
                                   f"{rows}", field="predictions")
        rows = rows or column.shape[0]
        predicted = profile_feature(column, kinds.get("predictions"), seed=seed, top_k=top_k,
                                    where="predictions")
    return Profile(rows=int(rows), features=features, predictions=predicted, seed=seed)
