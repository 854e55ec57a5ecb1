"""What each served version did recently, for rollout analysis (``domain.analysis``).

The data plane calls ``record`` for every answered request and ``record_shadow`` for every
mirrored one; the rollout controller asks ``stats`` for a window and hands the result to
``analyze`` or ``ab_test``. Nothing here does I/O.

Several processes (``--workers``, several servers on one store): each one ``export``s its
whole seconds of the versions under rollout to the store, and ``peers`` (set by
``rollout/evidence.py``) reads the other processes' seconds back into ``stats``, so the
leader's analysis counts all the traffic, not its own share.

Memory is bounded: per version, a ring of one-second buckets covering ``horizon_s``; each
bucket keeps exact counts and at most ``samples_per_second`` latencies and predictions,
reservoir-sampled (so a busy second is still represented uniformly, and its samples carry
the weight of the requests they stand for).

Cost on the hot path: one clock read, one lock, a dict lookup and a few integer updates
(about 1 us per call in CPython); a random draw only past ``samples_per_second`` requests in
a second. Allocation: one small
bucket object per version per second. ``stats`` copies the window's samples under the lock
(up to horizon x samples_per_second floats per series), so call it per analysis step, not per
request.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from modelyard.domain.analysis import WindowStats
from modelyard.domain.errors import ValidationFailed

__all__ = ["Observations", "WindowStats"]


class _Reservoir:
    """Algorithm R: a uniform sample of at most ``size`` of the values offered."""

    __slots__ = ("seen", "values")

    def __init__(self) -> None:
        self.seen = 0
        self.values: list[float] = []

    def add(self, value: float, size: int, rng: random.Random) -> None:
        self.seen += 1
        if len(self.values) < size:
            self.values.append(value)
        else:
            slot = rng.randrange(self.seen)
            if slot < size:
                self.values[slot] = value


class _Bucket:
    __slots__ = ("agreed", "compared", "errors", "latencies", "paired", "predictions",
                 "requests", "second")

    def __init__(self, second: int) -> None:
        self.second = second
        self.requests = 0
        self.errors = 0
        self.agreed = 0
        self.compared = 0
        self.latencies = _Reservoir()
        self.predictions = _Reservoir()
        self.paired = _Reservoir()  # shadows: the primary's answers to the same requests


_Key = tuple[str, bool]  # (version, shadow traffic?)


class Observations:
    """Thread-safe per-version recorder of answered requests, kept for ``horizon_s``.

    ``ok`` is False for server-side failures only (the model failed, timed out, was shed),
    never for a caller's bad input: those say nothing about the version. Latencies of failed
    requests are kept too (a version that times out must show it in its p99). Shadow
    traffic is kept apart from a version's real traffic (``stats(..., shadow=True)``): it
    runs at low priority, so its latency reads high and is not comparable one to one.
    """

    def __init__(self, horizon_s: int = 900, samples_per_second: int = 256, *,
                 clock: Callable[[], float] = time.monotonic, seed: int | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        if isinstance(horizon_s, bool) or not 1 <= horizon_s <= 86_400:
            raise ValidationFailed("horizon_s must be from 1 to 86400", field="horizon_s")
        if not 1 <= samples_per_second <= 65_536:
            raise ValidationFailed("samples_per_second must be from 1 to 65536",
                                   field="samples_per_second")
        self.horizon_s = int(horizon_s)
        self.samples_per_second = int(samples_per_second)
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._series: dict[_Key, list[_Bucket | None]] = {}
        # Other processes' seconds (``rollout/evidence.py``): (series, shadow, first, last
        # Unix second) -> their buckets as ``export`` wrote them. None: this process alone.
        self.peers: Callable[[str, bool, int, int], list[dict[str, Any]]] | None = None
        self._wall = wall
        self._exported: dict[_Key, int] = {}  # the last second given to ``export``, per series

    def _bucket(self, key: _Key, second: int) -> _Bucket | None:
        """The bucket for ``second`` (caller holds the lock); None if that second is gone."""
        ring = self._series.get(key)
        if ring is None:
            ring = self._series[key] = [None] * self.horizon_s
        slot = second % self.horizon_s
        bucket = ring[slot]
        if bucket is None or bucket.second < second:
            bucket = ring[slot] = _Bucket(second)
        elif bucket.second > second:
            return None  # a horizon older than data already recorded: dropped
        return bucket

    def record(self, version: str, ok: bool, latency_s: float,
               prediction: float | None = None, at: float | None = None) -> None:
        """One answered request of ``version``. ``prediction``: one number summarizing the
        answer (see ``rollout.routing.summary``), None if it has none; ``at``: when, in the
        clock's time (default now)."""
        second = math.floor(self._clock() if at is None else at)
        with self._lock:
            bucket = self._bucket((version, False), second)
            if bucket is None:
                return
            bucket.requests += 1
            if not ok:
                bucket.errors += 1
            if latency_s >= 0:  # NaN fails this too
                bucket.latencies.add(latency_s, self.samples_per_second, self._rng)
            if ok and prediction is not None and math.isfinite(prediction):
                bucket.predictions.add(prediction, self.samples_per_second, self._rng)

    def record_shadow(self, primary_version: str, shadow_version: str, agreed: bool,
                      primary_value: float | None, shadow_value: float | None,
                      latency_s: float, ok: bool, at: float | None = None) -> None:
        """One mirrored request, after the shadow answered (or failed). The argument order is
        ``rollout.routing.ShadowRecorder``'s, so the bound method can be passed as one.

        Counted under ``shadow_version`` as shadow traffic. ``agreed`` counts toward the
        agreement share only when the shadow answered (failures count as errors instead).
        ``primary_value`` is kept as the paired reference for the shadow's predictions;
        ``primary_version`` itself is not needed for that (one shadow may mirror several).
        """
        del primary_version
        second = math.floor(self._clock() if at is None else at)
        with self._lock:
            bucket = self._bucket((shadow_version, True), second)
            if bucket is None:
                return
            size, rng = self.samples_per_second, self._rng
            bucket.requests += 1
            if latency_s >= 0:
                bucket.latencies.add(latency_s, size, rng)
            if not ok:
                bucket.errors += 1
                return
            bucket.compared += 1
            if agreed:
                bucket.agreed += 1
            if shadow_value is not None and math.isfinite(shadow_value):
                bucket.predictions.add(shadow_value, size, rng)
            if primary_value is not None and math.isfinite(primary_value):
                bucket.paired.add(primary_value, size, rng)

    def stats(self, version: str, since_s: float, until: float | None = None, *,
              shadow: bool = False) -> WindowStats:
        """What ``version`` did in the ``since_s`` seconds up to ``until`` (default now).

        Whole seconds: every bucket overlapping (until - since_s, until] counts, so the
        window may reach up to one second further back. ``since_s`` beyond the horizon is
        cut to it. ``shadow=True``: the version's mirrored traffic instead of its own.
        """
        if not since_s > 0:
            raise ValidationFailed("since_s must be above 0", field="since_s")
        end = self._clock() if until is None else until
        start = end - min(since_s, self.horizon_s)
        low, high = math.floor(start), math.floor(end)
        with self._lock:
            ring = self._series.get((version, shadow), ())
            kept = [(b.requests, b.errors, b.agreed, b.compared,
                     (b.latencies.seen, list(b.latencies.values)),
                     (b.predictions.seen, list(b.predictions.values)),
                     (b.paired.seen, list(b.paired.values)))
                    for b in ring if b is not None and low <= b.second <= high]
        if self.peers is not None:
            offset = self._offset()
            kept += [(int(d["requests"]), int(d["errors"]), int(d["agreed"]),
                      int(d["compared"]), _samples(d["latencies"]),
                      _samples(d["predictions"]), _samples(d["paired"]))
                     for d in self.peers(version, shadow, low + offset, high + offset)]
        latencies, latency_weights = _merge([k[4] for k in kept])
        predictions, prediction_weights = _merge([k[5] for k in kept])
        paired, paired_weights = _merge([k[6] for k in kept])
        return WindowStats(
            version=version, requests=sum(k[0] for k in kept), errors=sum(k[1] for k in kept),
            latencies_s=latencies, predictions=predictions, paired_predictions=paired,
            agreed=sum(k[2] for k in kept), compared=sum(k[3] for k in kept),
            latency_weights=latency_weights, prediction_weights=prediction_weights,
            paired_weights=paired_weights, start=start, end=end)

    def export(self, wanted: Callable[[str], bool] | None = None
               ) -> list[tuple[str, bool, int, dict[str, Any]]]:
        """The whole seconds recorded since the previous export, for other processes:
        (series, shadow, Unix second, bucket). ``wanted``: which series to give (the others
        are given, from their horizon on, once they are wanted)."""
        now = self._clock()
        done = math.floor(now) - 1  # the last whole second: nothing more is recorded in it
        offset = self._offset(now)
        out = []
        with self._lock:
            for key, ring in self._series.items():
                if wanted is not None and not wanted(key[0]):
                    continue
                last = self._exported.get(key, -1)
                for b in ring:
                    if b is not None and last < b.second <= done:
                        out.append((key[0], key[1], b.second + offset, {
                            "requests": b.requests, "errors": b.errors, "agreed": b.agreed,
                            "compared": b.compared,
                            "latencies": [b.latencies.seen, list(b.latencies.values)],
                            "predictions": [b.predictions.seen, list(b.predictions.values)],
                            "paired": [b.paired.seen, list(b.paired.values)]}))
                self._exported[key] = done
        return out

    def _offset(self, now: float | None = None) -> int:
        """Unix seconds minus this recorder's clock seconds (whole seconds)."""
        return round(self._wall() - (self._clock() if now is None else now))

    def seconds(self, version: str, since_s: float, *, shadow: bool = False
                ) -> tuple[float, list[tuple[int, int, int, list[float]]]]:
        """The clock's now, and per recorded second of the last ``since_s`` (oldest first):
        (second, requests, errors, latency samples). What the dashboard charts: reading
        the ring costs the hot path nothing."""
        now = self._clock()
        low = math.floor(now - min(since_s, self.horizon_s))
        with self._lock:
            ring = self._series.get((version, shadow), ())
            kept = [(b.second, b.requests, b.errors, list(b.latencies.values))
                    for b in ring if b is not None and b.second >= low]
        return now, sorted(kept, key=lambda k: k[0])

    def versions(self) -> list[str]:
        """Versions with a recorded series (own or shadow traffic), sorted."""
        with self._lock:
            return sorted({version for version, _ in self._series})

    def forget(self, version: str) -> None:
        """Drops a retired version's series (both its own and its shadow traffic)."""
        with self._lock:
            self._series.pop((version, False), None)
            self._series.pop((version, True), None)


def _merge(parts: list[tuple[int, list[float]]]) -> tuple[np.ndarray, np.ndarray | None]:
    """Concatenates per-bucket samples; weights only when some bucket was subsampled (each
    sample then stands for seen / kept requests of its second)."""
    values = np.fromiter((x for _, kept in parts for x in kept), dtype=np.float64)
    if all(seen == len(kept) for seen, kept in parts):
        return values, None
    weights = np.concatenate([np.full(len(kept), seen / len(kept))
                              for seen, kept in parts if kept])
    return values, weights


def _samples(pair: Any) -> tuple[int, list[float]]:
    """A peer's reservoir as ``export`` wrote it: [seen, values]."""
    seen, values = pair
    return int(seen), [float(v) for v in values]
