"""The hand-kept per-request metrics expose exactly what prometheus_client's own families would."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.serving.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from modelyard.serving.tallies import Tallies


def _samples(registry: CollectorRegistry, family: str) -> dict[tuple, float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) if f.name == family
            for s in f.samples if not s.name.endswith("_created")}


def test_latency_histogram_and_codes_match_the_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tallies = Tallies(LATENCY_BUCKETS, BATCH_BUCKETS)
    ours.register(tallies)
    hist = Histogram("modelyard_request_seconds", "x", ("endpoint", "version"),
                     buckets=LATENCY_BUCKETS, registry=theirs)
    count = Counter("modelyard_requests", "x", ("endpoint", "version", "code"), registry=theirs)
    tally = tallies.of("ep", "m:1")
    # Values on, just under and just over bucket bounds, and past the last one.
    values = [0.0005, 0.0004999, 0.0005001, 0.001, 0.0, 2.5, 10.0, 11.0, 0.3] * 3
    for i, v in enumerate(values):
        code = 200 if i % 4 else 503
        tally.answered(code, v)
        hist.labels("ep", "m:1").observe(v)
        count.labels("ep", "m:1", str(code)).inc()
    assert _samples(ours, "modelyard_request_seconds") == \
        _samples(theirs, "modelyard_request_seconds")
    assert _samples(ours, "modelyard_requests") == _samples(theirs, "modelyard_requests")


def test_a_redeploy_keeps_counting_and_threads_lose_nothing() -> None:
    tallies = Tallies(LATENCY_BUCKETS, BATCH_BUCKETS)
    first, again = tallies.of("ep", "m:1"), tallies.of("ep", "m:1")
    assert first is again  # counters of a version only grow, whatever its deployment

    def work() -> None:
        for _ in range(20_000):
            first.answered(200, 0.002)
            first.admitted(1)
            first.admitted(-1)
            first.batch(2, [0.001, 0.002], 0.0005)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    registry = CollectorRegistry()
    registry.register(tallies)
    requests = _samples(registry, "modelyard_requests")
    assert requests == {("modelyard_requests_total",
                         (("code", "200"), ("endpoint", "ep"), ("version", "m:1"))): 80_000}
    waits = _samples(registry, "modelyard_queue_wait_seconds")
    assert waits[("modelyard_queue_wait_seconds_count",
                  (("endpoint", "ep"), ("version", "m:1")))] == 160_000
    assert _samples(registry, "modelyard_in_flight") == {
        ("modelyard_in_flight", (("endpoint", "ep"), ("version", "m:1"))): 0}
