"""Prometheus metrics of the data plane, one registry per server (so tests can run several).

What every request touches (counts by code, latency, in-flight, queue depth, batches) is kept
in a ``Tally`` per endpoint version and read at scrape time (serving/tallies.py); the rarer
events use the Prometheus client's families, their label children resolved once per
deployment (graph nodes on first use). Circuit breakers are read when Prometheus
scrapes, not on the request path. With ``enabled=False`` (the ``metrics`` setting) nothing is
counted: observers only carry the tracer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from modelyard.serving.batcher import BatchObserver
from modelyard.serving.resilience import CircuitBreaker
from modelyard.serving.tallies import Tallies

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                   5, 10)
PRIORITY_NAMES = ("low", "normal", "high")


BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class ServingMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, enabled: bool = True, tracer: Tracer | None = None) -> None:
        self.enabled = enabled
        self.tracer = tracer
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("endpoint", "version")
        r = self.registry
        # The per-request families: plain numbers read at scrape time (serving/tallies.py).
        self.tallies = Tallies(LATENCY_BUCKETS, BATCH_BUCKETS)
        if enabled:
            r.register(self.tallies)
        self.shed = Counter("modelyard_shed", "Requests refused or evicted because the queue "
                            "was full.", (*labels, "priority"), registry=r)
        self.expired = Counter("modelyard_expired", "Requests whose deadline passed before "
                               "they were computed.", labels, registry=r)
        self.cache = Counter("modelyard_cache", "Response cache lookups.",
                             (*labels, "result"), registry=r)
        self.node_requests = Counter("modelyard_node_requests", "Graph node calls, by outcome "
                                     "(ok or the error code).", (*labels, "node", "code"),
                                     registry=r)
        self.node_latency = Histogram("modelyard_node_seconds", "Time a graph node took "
                                      "(its retries and branches included).",
                                      (*labels, "node"), buckets=LATENCY_BUCKETS, registry=r)
        # Replicas (docs/decisions/0021): retries of failed batches on another replica, those
        # the retry budget refused, ejections of failing replicas and their replacements.
        self.retries = Counter("modelyard_retries", "Requests of a failed batch retried on "
                               "another replica.", labels, registry=r)
        self.retry_refused = Counter("modelyard_retry_budget_exhausted", "Requests of a "
                                     "failed batch not retried: the retry budget was spent.",
                                     labels, registry=r)
        self.ejections = Counter("modelyard_replica_ejections", "Replicas taken out of "
                                 "service after consecutive failures.", labels, registry=r)
        self.replacements = Counter("modelyard_replica_replacements", "Fresh predictors "
                                    "loaded for failing replicas, by result (ok, failed).",
                                    (*labels, "result"), registry=r)
        # Lazily loaded models under the memory budget (loads on first use, LRU unloads).
        self.model_loads = Counter("modelyard_model_loads", "Lazy model loads.", labels,
                                   registry=r)
        self.model_unloads = Counter("modelyard_model_unloads", "Lazy models unloaded (for "
                                     "room under the memory budget, or retired).", labels,
                                     registry=r)

    def observer(self, endpoint: str, version: str) -> BatchObserver:
        """What a deployment (or a graph) of ``endpoint`` at ``version`` reports to."""
        if not self.enabled:
            bare = BatchObserver()
            bare.tracer = self.tracer
            return bare
        return DeploymentMetrics(self, endpoint, version)

    def watch_breakers(self, states: Callable[[], Iterable[Any]]) -> None:
        """Report the circuit breakers of the endpoints ``states()`` returns (read at scrape
        time): graph nodes' and remote models' upstreams."""
        if self.enabled:
            self.registry.register(_Breakers(states))

    def watch_residency(self, residency: Any) -> None:
        """Report the lazily loaded models (count, bytes, budget), read at scrape time."""
        if self.enabled:
            self.registry.register(_Residency(residency))

    def model_loaded(self, endpoint: str, version: str) -> None:
        if self.enabled:
            self.model_loads.labels(endpoint, version).inc()

    def model_unloaded(self, endpoint: str, version: str) -> None:
        if self.enabled:
            self.model_unloads.labels(endpoint, version).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class DeploymentMetrics(BatchObserver):
    def __init__(self, metrics: ServingMetrics, endpoint: str, version: str) -> None:
        lv = (endpoint, version)
        self._metrics = metrics
        self.tracer = metrics.tracer
        self._tally = metrics.tallies.of(endpoint, version)
        self._nodes: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._labels = lv
        self._expired = metrics.expired.labels(*lv)
        self._shed = [metrics.shed.labels(*lv, p) for p in PRIORITY_NAMES]
        self._cache = (metrics.cache.labels(*lv, "miss"), metrics.cache.labels(*lv, "hit"))

    def answered(self, code: int, seconds: float | None = None) -> None:
        self._tally.answered(code, seconds)

    def queued(self, depth: int) -> None:
        self._tally.queue_depth = depth

    def batch(self, size: int, waits_s: list[float], run_s: float) -> None:
        self._tally.batch(size, waits_s, run_s)

    def shed(self, priority: int) -> None:
        self._shed[priority].inc()

    def expired(self) -> None:
        self._expired.inc()

    def cache(self, hit: bool) -> None:
        self._cache[hit].inc()

    def in_flight(self, delta: int) -> None:
        self._tally.admitted(delta)

    def retried(self, count: int) -> None:
        self._metrics.retries.labels(*self._labels).inc(count)

    def retry_refused(self, count: int) -> None:
        self._metrics.retry_refused.labels(*self._labels).inc(count)

    def ejected(self) -> None:
        self._metrics.ejections.labels(*self._labels).inc()

    def replaced(self, ok: bool) -> None:
        self._metrics.replacements.labels(*self._labels, "ok" if ok else "failed").inc()

    def node(self, name: str, code: str, seconds: float) -> None:
        children = self._nodes.get((name, code))
        if children is None:
            m = self._metrics
            children = self._nodes[(name, code)] = (
                m.node_requests.labels(*self._labels, name, code),
                m.node_latency.labels(*self._labels, name))
        children[0].inc()
        children[1].observe(seconds)


def refused(state: Any, status: int) -> None:
    """Count a refusal that came before a version was chosen (401, 403, 429, 413...) on the
    version the endpoint serves (a split's stable version)."""
    deployment = getattr(state, "deployment", None)
    deployment = getattr(deployment, "primary", deployment)
    observer = getattr(deployment, "observer", None)
    if isinstance(observer, DeploymentMetrics):
        observer.answered(status)


class _Breakers(Collector):
    """``modelyard_breaker_state``: 0 closed, 1 half-open, 2 open; per graph node (``kind``
    node) and per remote model's upstream (``kind`` upstream; the worst of its replicas)."""

    def __init__(self, states: Callable[[], Iterable[Any]]) -> None:
        self.states = states

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("modelyard_breaker_state", "Circuit breaker state: 0 closed, "
                                 "1 half-open (probing), 2 open (calls refused).",
                                 labels=("endpoint", "version", "node", "kind"))

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for state in self.states():
            endpoint = state.endpoint.name
            for node, version, kind, level in _breakers_of(state.deployment):
                family.add_metric((endpoint, version, node, kind), level)
        yield family


class _Residency(Collector):
    """``modelyard_models_loaded``, ``modelyard_model_memory_bytes`` (their measured sizes)
    and ``modelyard_model_memory_budget_bytes`` (0: unlimited) of the lazy models."""

    def __init__(self, residency: Any) -> None:
        self.residency = residency

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (GaugeMetricFamily("modelyard_models_loaded", "Lazy models loaded now."),
                GaugeMetricFamily("modelyard_model_memory_bytes", "Memory the loaded lazy "
                                  "models take (measured at load)."),
                GaugeMetricFamily("modelyard_model_memory_budget_bytes", "The model memory "
                                  "budget (0: unlimited)."),
                GaugeMetricFamily("modelyard_model_memory_pinned_bytes", "What the eagerly "
                                  "loaded models are expected to take of the budget."))

    def collect(self) -> Iterator[Metric]:
        count, used, budget, pinned = self._families()
        count.add_metric((), self.residency.loaded_count())
        used.add_metric((), self.residency.used_bytes())
        budget.add_metric((), self.residency.budget_bytes)
        pinned.add_metric((), self.residency.pinned_bytes())
        yield from (count, used, budget, pinned)


def _breakers_of(deployment: Any) -> Iterator[tuple[str, str, str, int]]:
    """(node, version, kind, state) of every breaker behind a running endpoint."""
    if deployment is None:
        return
    runtimes = getattr(deployment, "runtimes", None)
    if runtimes is not None:  # a graph
        for name, runtime in runtimes.items():
            unit = runtime.deployment
            version = unit.version.ref if unit is not None else ""
            if isinstance(runtime.breaker, CircuitBreaker):
                yield name, version, "node", BREAKER_STATES.get(runtime.breaker.state, 0)
            if unit is not None:
                for _, _, kind, level in _breakers_of(unit):
                    yield name, version, kind, level
        return
    if hasattr(deployment, "targets"):  # a traffic split: each version it runs
        for unit in deployment.deployments():
            yield from _breakers_of(unit)
        return
    levels = [BREAKER_STATES.get(p.breaker.state, 0) for p in deployment.predictors
              if isinstance(getattr(p, "breaker", None), CircuitBreaker)]
    if levels:
        yield "", deployment.version.ref, "upstream", max(levels)
