"""The per-request metrics, kept as plain numbers and turned into Prometheus families at scrape
time (ADR 0017, "the cost of metrics").

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` are safe and simple, but each call
walks several Python layers and takes a lock per sample (a histogram observation: one for the
bucket, one for the sum), which made up most of what metrics cost a request. Here one
``Tally`` per endpoint version holds the request counts by code, the latency histogram, the
in-flight gauge, the queue depth and the batch histograms; each event takes the tally's one
lock once, and a histogram bucket is found by ``bisect`` in C. The names, labels and bucket
bounds on ``/metrics`` are those of the Prometheus client's own families.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class Buckets:
    """A histogram's counts per bucket (the last one +Inf) and its sum; the caller locks."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        # bisect_left: the first bound >= value, as Prometheus' ``le`` (less or equal) wants.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((floatToGoString(bound), running))
        return out


class Tally:
    """What one endpoint version's requests and batches did. Called from the event loop
    (answers) and from model threads (batches), hence the lock: one acquisition an event."""

    def __init__(self, latency_bounds: Sequence[float], batch_bounds: Sequence[float]) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, int] = {}
        self.latency = Buckets(latency_bounds)
        self.in_flight = 0
        self.queue_depth = 0  # a plain store: one writer at a time is enough for a gauge
        self.batch_size = Buckets(batch_bounds)
        self.queue_wait = Buckets(latency_bounds)
        self.inference = Buckets(latency_bounds)

    def answered(self, code: int, seconds: float | None) -> None:
        key = str(code)
        with self.lock:
            self.codes[key] = self.codes.get(key, 0) + 1
            if seconds is not None:
                self.latency.add(seconds)

    def admitted(self, delta: int) -> None:
        with self.lock:
            self.in_flight += delta

    def batch(self, size: int, waits_s: Iterable[float], run_s: float) -> None:
        with self.lock:
            self.batch_size.add(size)
            self.inference.add(run_s)
            for wait in waits_s:
                self.queue_wait.add(wait)


class Tallies(Collector):
    """Every endpoint version's tally (kept across redeploys, so counters only grow), exported
    as the ``modelyard_requests``, ``modelyard_request_seconds``, ``modelyard_in_flight``,
    ``modelyard_queue_depth``, ``modelyard_batch_size``, ``modelyard_queue_wait_seconds`` and
    ``modelyard_inference_seconds`` families."""

    def __init__(self, latency_bounds: Sequence[float], batch_bounds: Sequence[float]) -> None:
        self._latency_bounds = latency_bounds
        self._batch_bounds = batch_bounds
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._lock = threading.Lock()

    def of(self, endpoint: str, version: str) -> Tally:
        with self._lock:
            tally = self._tallies.get((endpoint, version))
            if tally is None:
                tally = self._tallies[(endpoint, version)] = Tally(self._latency_bounds,
                                                                   self._batch_bounds)
            return tally

    @staticmethod
    def _families() -> dict[str, Metric]:
        labels = ["endpoint", "version"]
        return {
            "requests": CounterMetricFamily("modelyard_requests", "Inference requests answered, "
                                            "by status code.", labels=[*labels, "code"]),
            "latency": HistogramMetricFamily("modelyard_request_seconds", "Time from decoded "
                                             "request to answer.", labels=labels),
            "queue_depth": GaugeMetricFamily("modelyard_queue_depth", "Requests waiting to be "
                                             "batched.", labels=labels),
            "batch_size": HistogramMetricFamily("modelyard_batch_size", "Rows per executed "
                                                "batch.", labels=labels),
            "queue_wait": HistogramMetricFamily("modelyard_queue_wait_seconds", "Time a request "
                                                "waited before its batch ran.", labels=labels),
            "inference": HistogramMetricFamily("modelyard_inference_seconds", "Time the "
                                               "predictor took per batch.", labels=labels),
            "in_flight": GaugeMetricFamily("modelyard_in_flight", "Requests admitted to a "
                                           "model's queue or a graph and not answered yet.",
                                           labels=labels),
        }

    def describe(self) -> Iterable[Metric]:
        return self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        with self._lock:
            tallies = list(self._tallies.items())
        for (endpoint, version), tally in tallies:
            lv = [endpoint, version]
            with tally.lock:  # one consistent reading of this version
                codes = dict(tally.codes)
                histograms = {name: (getattr(tally, name).cumulative(), getattr(tally, name).total)
                              for name in ("latency", "batch_size", "queue_wait", "inference")}
                in_flight, depth = tally.in_flight, tally.queue_depth
            for code, count in sorted(codes.items()):
                families["requests"].add_metric([*lv, code], count)  # type: ignore[attr-defined]
            for name, (buckets, total) in histograms.items():
                families[name].add_metric(lv, buckets, total)  # type: ignore[attr-defined]
            families["in_flight"].add_metric(lv, in_flight)  # type: ignore[attr-defined]
            families["queue_depth"].add_metric(lv, depth)  # type: ignore[attr-defined]
        yield from families.values()
