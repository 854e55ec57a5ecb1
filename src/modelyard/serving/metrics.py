"""Prometheus metrics of the data plane, one registry per server (so tests can run several).

Label children are resolved once per deployment, so the hot path pays one observe per metric.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelyard.serving.batcher import BatchObserver

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                   5, 10)
PRIORITY_NAMES = ("low", "normal", "high")


class ServingMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("endpoint", "version")
        r = self.registry
        self.requests = Counter("modelyard_requests", "Inference requests answered, by status "
                                "code.", (*labels, "code"), registry=r)
        self.latency = Histogram("modelyard_request_seconds", "Time from decoded request to "
                                 "answer.", labels, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("modelyard_queue_depth", "Requests waiting to be batched.",
                                 labels, registry=r)
        self.batch_size = Histogram("modelyard_batch_size", "Rows per executed batch.", labels,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram("modelyard_queue_wait_seconds", "Time a request waited "
                                    "before its batch ran.", labels, buckets=LATENCY_BUCKETS,
                                    registry=r)
        self.inference = Histogram("modelyard_inference_seconds", "Time the predictor took per "
                                   "batch.", labels, buckets=LATENCY_BUCKETS, registry=r)
        self.shed = Counter("modelyard_shed", "Requests refused or evicted because the queue "
                            "was full.", (*labels, "priority"), registry=r)
        self.expired = Counter("modelyard_expired", "Requests whose deadline passed before "
                               "they were computed.", labels, registry=r)
        self.cache = Counter("modelyard_cache", "Response cache lookups.",
                             (*labels, "result"), registry=r)

    def observer(self, endpoint: str, version: str) -> DeploymentMetrics:
        return DeploymentMetrics(self, endpoint, version)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class DeploymentMetrics(BatchObserver):
    def __init__(self, metrics: ServingMetrics, endpoint: str, version: str) -> None:
        lv = (endpoint, version)
        self._metrics = metrics
        self._labels = lv
        self._depth = metrics.queue_depth.labels(*lv)
        self._size = metrics.batch_size.labels(*lv)
        self._wait = metrics.queue_wait.labels(*lv)
        self._inference = metrics.inference.labels(*lv)
        self._expired = metrics.expired.labels(*lv)
        self._shed = [metrics.shed.labels(*lv, p) for p in PRIORITY_NAMES]
        self.latency = metrics.latency.labels(*lv)
        self._cache = (metrics.cache.labels(*lv, "miss"), metrics.cache.labels(*lv, "hit"))
        self._codes: dict[int, object] = {}

    def answered(self, code: int, seconds: float | None = None) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._metrics.requests.labels(*self._labels, str(code))
        child.inc()  # type: ignore[attr-defined]
        if seconds is not None:
            self.latency.observe(seconds)

    def queued(self, depth: int) -> None:
        self._depth.set(depth)

    def batch(self, size: int, waits_s: list[float], run_s: float) -> None:
        self._size.observe(size)
        self._inference.observe(run_s)
        for wait in waits_s:
            self._wait.observe(wait)

    def shed(self, priority: int) -> None:
        self._shed[priority].inc()

    def expired(self) -> None:
        self._expired.inc()

    def cache(self, hit: bool) -> None:
        self._cache[hit].inc()
