"""Live series for the dashboard's charts, read from the rollout evidence ring.

The data plane already records every answer per endpoint and version in one-second buckets
(``rollout.observations``: exact counts, reservoir-sampled latencies, 15 minutes). Reading it
when a page polls costs one pass over the ring per version and nothing per request, so no
second recorder is needed (decision record 0024).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from modelyard.rollout.observations import Observations

WINDOW_S = 300
STEP_S = 2


def _keys(observations: Observations, endpoint: str) -> list[str]:
    return [k for k in observations.versions() if k.startswith(endpoint + "/")]


def _quantiles(samples: list[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    p50, p99 = np.quantile(np.asarray(samples, dtype=np.float64), [0.5, 0.99])
    return round(float(p50) * 1000, 3), round(float(p99) * 1000, 3)


def series(observations: Observations, endpoint: str, window_s: int = WINDOW_S,
           step_s: int = STEP_S) -> dict[str, Any]:
    """Per version of ``endpoint``: points every ``step_s`` over the last ``window_s``
    (complete seconds only): time (unix s), requests/s, p50 and p99 (ms), error share.
    Steps without traffic have a rate of 0 and no latency."""
    wall, versions = time.time(), {}
    end = None
    for key in _keys(observations, endpoint):
        now, seconds = observations.seconds(key, window_s + step_s)
        last = math.floor(now) - 1  # the current second is still filling
        first = last - window_s + 1
        end = last
        buckets: dict[int, list[Any]] = {}
        for second, requests, errors, latencies in seconds:
            if not first <= second <= last:
                continue
            slot = first + ((second - first) // step_s) * step_s
            acc = buckets.setdefault(slot, [0, 0, []])
            acc[0] += requests
            acc[1] += errors
            acc[2].extend(latencies)
        points = []
        for slot in range(first, last + 1, step_s):
            requests, errors, latencies = buckets.get(slot, (0, 0, []))
            span = min(step_s, last - slot + 1)
            p50, p99 = _quantiles(latencies)
            points.append([round(wall - (now - slot), 3), round(requests / span, 3), p50, p99,
                           round(errors / requests, 4) if requests else None])
        versions[key.partition("/")[2]] = points
    return {"endpoint": endpoint, "step_s": step_s, "window_s": window_s,
            "fields": ["t", "rps", "p50_ms", "p99_ms", "error_rate"],
            "versions": versions, "complete_to": end}


def summary(observations: Observations, endpoint: str, window_s: int = 60
            ) -> dict[str, Any]:
    """All versions of ``endpoint`` together over the last ``window_s``: requests/s, p99
    (ms) and error share (None without traffic)."""
    requests = errors = 0
    latencies: list[float] = []
    for key in _keys(observations, endpoint):
        now, seconds = observations.seconds(key, window_s + 1)
        last = math.floor(now) - 1
        for second, count, failed, samples in seconds:
            if last - window_s < second <= last:
                requests += count
                errors += failed
                latencies.extend(samples)
    _, p99 = _quantiles(latencies)
    return {"rps": round(requests / window_s, 3), "p99_ms": p99,
            "error_rate": round(errors / requests, 4) if requests else None,
            "requests": requests}


def summaries(observations: Observations, endpoints: Iterable[str]) -> dict[str, Any]:
    return {name: summary(observations, name) for name in endpoints}
