"""The load generator (against a real ASGI app, in-process) and its result's validation."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from modelyard.domain.errors import ValidationFailed
from modelyard.readiness.loadtest import (
    LoadTestRefused,
    LoadTestResult,
    example_request,
    run_load,
    summarize,
    without_credentials,
)

GOOD: dict[str, Any] = {"duration_s": 10.0, "concurrency": 4, "requests": 100, "errors": 1,
                        "p50_ms": 2.0, "p99_ms": 9.5, "throughput": 9.9,
                        "target": "http://127.0.0.1:8000/v2/models/churn/infer",
                        "details": {"statuses": {"200": 99, "503": 1}}}


def _app(seen: Counter[str]) -> Starlette:
    async def infer(request: Request) -> JSONResponse:
        body = await request.json()
        seen["calls"] += 1
        seen["auth:" + request.headers.get("authorization", "")] += 1
        if seen["calls"] % 4 == 0:  # every fourth call is refused, as under overload
            return JSONResponse({"error": "busy"}, status_code=503)
        return JSONResponse({"outputs": body["inputs"]})

    return Starlette(routes=[Route("/v2/models/m/infer", infer, methods=["POST"])])


def test_stops_at_max_requests_and_counts_errors() -> None:
    seen: Counter[str] = Counter()
    progress: list[tuple[float, int, int]] = []
    result = run_load("http://test/v2/models/m/infer", b'{"inputs": []}',
                      headers={"Authorization": "Bearer k"}, duration_s=300, concurrency=3,
                      max_requests=40, transport=httpx.ASGITransport(app=_app(seen)),
                      progress=lambda *p: progress.append(p))
    # One first request (not counted) checks the endpoint takes the body at all.
    assert result.requests == 40 == seen["calls"] - 1 == seen["auth:Bearer k"] - 1
    assert result.errors == 10 and result.details["statuses"] == {"200": 30, "503": 10}
    assert result.p50_ms is not None and result.p99_ms is not None
    assert result.p50_ms <= result.p99_ms
    assert progress and progress[-1][1:] == (40, 10)


def test_stops_at_the_duration() -> None:
    seen: Counter[str] = Counter()
    result = run_load("http://test/v2/models/m/infer", b'{"inputs": []}', duration_s=0.3,
                      concurrency=2, transport=httpx.ASGITransport(app=_app(seen)))
    assert 0 < result.requests == seen["calls"] - 1 < 1_000_000


def test_refuses_unbounded_runs_and_an_absent_server() -> None:
    with pytest.raises(ValidationFailed) as exc:
        run_load("http://127.0.0.1:9/x", b"{}", duration_s=3600)
    assert exc.value.field == "duration"
    with pytest.raises(ValidationFailed) as exc:
        run_load("http://127.0.0.1:9/x", b"{}", concurrency=0)
    assert exc.value.field == "concurrency"
    with pytest.raises(httpx.ConnectError):
        run_load("http://127.0.0.1:9/x", b"{}", duration_s=5, concurrency=4)


def test_a_refused_first_request_ends_the_test() -> None:
    seen: Counter[str] = Counter()
    with pytest.raises(LoadTestRefused) as exc:
        run_load("http://test/v2/models/other/infer", b'{"inputs": []}', duration_s=60,
                 concurrency=4, transport=httpx.ASGITransport(app=_app(seen)))
    assert "answered 404" in exc.value.detail and seen["calls"] == 0


def test_summary_percentiles_over_answered_requests_only() -> None:
    result = summarize([1.0, 2.0, 3.0, 100.0], Counter({"200": 4, "503": 6}), 2.0, 2, "u")
    assert (result.requests, result.errors, result.throughput) == (10, 6, 2.0)
    assert result.p50_ms == 2.5 and result.p99_ms is not None and result.p99_ms > 90
    with pytest.raises(ValidationFailed):
        summarize([], Counter(), 1.0, 1, "u")  # nothing finished: no result is made up


def test_result_validation_names_the_field() -> None:
    assert LoadTestResult.from_dict(GOOD).error_rate == 0.01
    for change, field in (({"errors": 101}, "errors"), ({"requests": 0}, "requests"),
                          ({"p50_ms": 20.0}, "p50_ms"), ({"concurrency": 10_000},
                                                         "concurrency"),
                          ({"throughput": -1.0}, "throughput"), ({"duration_s": "x"},
                                                                  "duration_s"),
                          ({"details": {"x": float("nan")}}, "details"),
                          ({"surprise": 1}, "body.surprise")):
        with pytest.raises(ValidationFailed) as exc:
            LoadTestResult.from_dict({**GOOD, **change})
        assert exc.value.field == field, (change, exc.value.field)
    missing = {k: v for k, v in GOOD.items() if k != "requests"}
    with pytest.raises(ValidationFailed) as exc:
        LoadTestResult.from_dict(missing)
    assert exc.value.field == "requests"


def test_credentials_never_reach_the_record() -> None:
    found = LoadTestResult.from_dict({**GOOD, "target": "http://ci:s3cret@host:8000/v2/x"})
    assert found.target == "http://host:8000/v2/x"
    assert without_credentials("s3://bucket/p") == "s3://bucket/p"
    assert without_credentials("http://u:p@h:notaport/x") == "http://h:notaport/x"


def test_example_request() -> None:
    example = [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]
    assert example_request({}, example) == {"inputs": example}
    made = example_request({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]},
                                       {"name": "t", "datatype": "BYTES", "shape": [-1]}]})
    assert made == {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]},
        {"name": "t", "datatype": "BYTES", "shape": [1], "data": ["example"]}]}
    with pytest.raises(ValidationFailed):
        example_request({"inputs": []})
