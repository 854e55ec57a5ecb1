"""A bounded closed-loop load test against one endpoint, and its result.

``concurrency`` workers each send a request, wait for the answer, and send the next, until
``duration_s`` has passed or ``max_requests`` were sent: the load stops by itself, however
the server behaves (every request has a timeout). Latency is measured at the client, so it
includes the network and the codec, as callers see it. Any answer other than 2xx, and any
request that failed or timed out, counts as an error.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np

from modelyard.domain import jsonfields as jf
from modelyard.domain.errors import ModelyardError, ValidationFailed

MAX_DURATION_S = 600.0
MAX_CONCURRENCY = 256
MAX_REQUESTS = 10_000_000
MAX_DETAILS_BYTES = 8192

Progress = Callable[[float, int, int], None]  # elapsed s, requests, errors


class LoadTestRefused(ModelyardError):
    """The first request was refused for a reason load cannot change (a missing key, an
    unknown endpoint, a body that does not fit): a run of such answers measures nothing."""

    code, status, title = "loadtest_refused", 422, "The endpoint refused the load's request"


@dataclass(frozen=True)
class LoadTestResult:
    duration_s: float  # how long the load ran
    concurrency: int
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    throughput: float  # answered requests (2xx) per second
    target: str
    details: Mapping[str, Any] = field(default_factory=dict)  # status counts, mean...

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValidationFailed(f"{name} must be {rule}", field=name)

        check(0 < self.duration_s <= MAX_DURATION_S * 2, "duration_s",
              f"above 0 and at most {MAX_DURATION_S * 2:g}")
        check(1 <= self.concurrency <= MAX_CONCURRENCY, "concurrency",
              f"from 1 to {MAX_CONCURRENCY}")
        check(1 <= self.requests <= MAX_REQUESTS, "requests", f"from 1 to {MAX_REQUESTS}")
        check(0 <= self.errors <= self.requests, "errors", "from 0 to requests")
        for name in ("p50_ms", "p99_ms"):
            value = getattr(self, name)
            check(value is None or (math.isfinite(value) and value >= 0), name,
                  "a non-negative number of milliseconds")
        check(self.p50_ms is None or self.p99_ms is None or self.p50_ms <= self.p99_ms,
              "p50_ms", "at most p99_ms")
        check(math.isfinite(self.throughput) and self.throughput >= 0, "throughput",
              "a non-negative number")
        check(0 < len(self.target) <= 512, "target", "1 to 512 characters")

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests

    def to_dict(self) -> dict[str, Any]:
        return {"duration_s": self.duration_s, "concurrency": self.concurrency,
                "requests": self.requests, "errors": self.errors, "p50_ms": self.p50_ms,
                "p99_ms": self.p99_ms, "throughput": self.throughput, "target": self.target,
                "details": dict(self.details)}

    @classmethod
    def from_dict(cls, data: Any) -> LoadTestResult:
        d = jf.obj(data, {"duration_s", "concurrency", "requests", "errors", "p50_ms",
                          "p99_ms", "throughput", "target", "details"}, "load test field",
                   "body")
        details = d.get("details") or {}
        if not isinstance(details, Mapping):
            raise ValidationFailed("details must be an object", field="details")
        try:
            size = len(json.dumps(details, allow_nan=False))
        except (TypeError, ValueError):
            raise ValidationFailed("details must be plain JSON", field="details") from None
        if size > MAX_DETAILS_BYTES:
            raise ValidationFailed(f"details must be at most {MAX_DETAILS_BYTES} bytes of "
                                   "JSON", field="details")
        return cls(duration_s=jf.number(_required(d, "duration_s"), "duration_s"),
                   concurrency=jf.integer(_required(d, "concurrency"), "concurrency"),
                   requests=jf.integer(_required(d, "requests"), "requests"),
                   errors=jf.integer(_required(d, "errors"), "errors"),
                   p50_ms=jf.number(d.get("p50_ms"), "p50_ms", optional=True),
                   p99_ms=jf.number(d.get("p99_ms"), "p99_ms", optional=True),
                   throughput=jf.number(_required(d, "throughput"), "throughput"),
                   target=without_credentials(jf.string(_required(d, "target"), "target")),
                   details=dict(details))


def _required(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise ValidationFailed(f"{key} is required", field=key)
    return data[key]


def summarize(latencies_ms: list[float], statuses: Counter[str], elapsed_s: float,
              concurrency: int, target: str) -> LoadTestResult:
    """The result of a run: percentiles over answered (2xx) requests only, since a refusal
    in a microsecond would otherwise make an overloaded server look fast."""
    requests = sum(statuses.values())
    if requests == 0:
        raise ValidationFailed("no request finished within the duration: make it longer",
                               field="duration")
    ok = sum(n for s, n in statuses.items() if s.startswith("2"))
    answered = np.asarray(latencies_ms, dtype=np.float64)
    p50 = float(np.percentile(answered, 50)) if answered.size else None
    p99 = float(np.percentile(answered, 99)) if answered.size else None
    return LoadTestResult(
        duration_s=round(elapsed_s, 3), concurrency=concurrency, requests=requests,
        errors=requests - ok, p50_ms=None if p50 is None else round(p50, 3),
        p99_ms=None if p99 is None else round(p99, 3),
        throughput=round(ok / elapsed_s, 3) if elapsed_s > 0 else 0.0, target=target,
        details={"statuses": dict(sorted(statuses.items())),
                 "mean_ms": round(float(answered.mean()), 3) if answered.size else None,
                 "max_ms": round(float(answered.max()), 3) if answered.size else None})


async def _run(url: str, body: bytes, headers: Mapping[str, str], duration_s: float,
               concurrency: int, max_requests: int, timeout_s: float,
               progress: Progress | None, transport: httpx.AsyncBaseTransport | None
               ) -> LoadTestResult:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    sent = 0
    start = time.perf_counter()
    deadline = start + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, transport=transport,
                                 headers={"Content-Type": "application/json", **headers}
                                 ) as client:
        async def worker() -> None:
            nonlocal sent
            while sent < max_requests and time.perf_counter() < deadline:
                sent += 1
                began = time.perf_counter()
                try:
                    response = await client.post(url, content=body)
                    await response.aread()
                    status = str(response.status_code)
                except httpx.TimeoutException:
                    status = "timeout"
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                statuses[status] += 1
                if status.startswith("2"):
                    latencies.append((time.perf_counter() - began) * 1000.0)

        async def ticker() -> None:
            while True:
                if progress is not None:
                    errors = sum(n for s, n in statuses.items() if not s.startswith("2"))
                    progress(time.perf_counter() - start, sum(statuses.values()), errors)
                await asyncio.sleep(0.2)

        # One request first, not counted: nothing listening, or a request the endpoint
        # refuses outright (401, 404, 422...), ends the test here instead of a run of errors.
        first = await client.post(url, content=body)
        if 400 <= first.status_code < 500 and first.status_code not in (408, 429):
            raise LoadTestRefused(f"{url} answered {first.status_code} to the first request: "
                                  f"{first.text[:300]}")
        start = time.perf_counter()
        deadline = start + duration_s
        tick = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            tick.cancel()
    elapsed = time.perf_counter() - start
    if progress is not None:
        errors = sum(n for s, n in statuses.items() if not s.startswith("2"))
        progress(elapsed, sum(statuses.values()), errors)
    return summarize(latencies, statuses, elapsed, concurrency, without_credentials(url))


def run_load(url: str, body: bytes, *, headers: Mapping[str, str] | None = None,
             duration_s: float = 30.0, concurrency: int = 8, max_requests: int = 1_000_000,
             timeout_s: float = 30.0, progress: Progress | None = None,
             transport: httpx.AsyncBaseTransport | None = None) -> LoadTestResult:
    """POST ``body`` to ``url`` from ``concurrency`` closed-loop workers for ``duration_s``
    (at most ``max_requests`` requests in all)."""
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValidationFailed(f"duration must be above 0 and at most {MAX_DURATION_S:g} s",
                               field="duration")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValidationFailed(f"concurrency must be from 1 to {MAX_CONCURRENCY}",
                               field="concurrency")
    if not 1 <= max_requests <= MAX_REQUESTS:
        raise ValidationFailed(f"max_requests must be from 1 to {MAX_REQUESTS}",
                               field="max_requests")
    return asyncio.run(_run(url, body, dict(headers or {}), duration_s, concurrency,
                            max_requests, timeout_s, progress, transport))


def example_request(metadata: Mapping[str, Any], example: list[dict[str, Any]] | None = None
                    ) -> dict[str, Any]:
    """An OIP v2 request body: the version's recorded input example when there is one,
    else one row per input from the endpoint's metadata (zeros, or the text "example")."""
    if example:
        return {"inputs": example}
    inputs = []
    for spec in metadata.get("inputs") or []:
        shape = [1 if d == -1 else int(d) for d in spec.get("shape") or [-1]]
        shape[0] = 1
        count = int(np.prod(shape)) if shape else 1
        datatype = spec.get("datatype", "FP32")
        value: Any = "example" if datatype == "BYTES" else (False if datatype == "BOOL"
                                                            else 0)
        inputs.append({"name": spec["name"], "datatype": datatype, "shape": shape,
                       "data": [value] * count})
    if not inputs:
        raise ValidationFailed("the endpoint's metadata names no inputs: pass --data with a "
                               "request body", field="data")
    return {"inputs": inputs}


def without_credentials(url: str) -> str:
    """A URL as shown in a report: any user:password part removed."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path,
                       parts.query, parts.fragment))
