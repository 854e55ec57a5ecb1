"""Data-plane features over real HTTP: priorities, deadlines, shedding, metrics, the response
cache, the OIP v2 binary extension, deployment settings and several worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelyard import Client, Yard
from modelyard.serving.server import BackgroundServer, free_port

X = np.arange(12, dtype=np.float32).reshape(3, 4)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The data plane never reads the database: SQLite (inside the yard folder, so that
    ``modelyard --yard`` finds it) is enough here."""
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def echo(yard: Yard) -> Yard:
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X)
    yard.register("slow", "modelyard.testing.models:Sleepy", flavor="python", trusted=True,
                  sample=X)
    yard.create_endpoint("echo", "echo", auth="public", deployment={"cache_max_entries": 100})
    yard.create_endpoint("slow", "slow", auth="public", timeout_ms=5000,
                         deployment={"max_batch_size": 1, "max_queue_size": 2})
    return yard


@pytest.fixture
def http(echo: Yard, server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    return dict(body)


def test_bad_priority_and_timeout_headers_are_named(http: httpx.Client) -> None:
    body = {"inputs": X.tolist()}
    r = http.post("/endpoints/echo/predict", json=body, headers={"modelyard-priority": "urgent"})
    assert problem(r, 400, "invalid_request")["field"] == "modelyard-priority"
    r = http.post("/endpoints/echo/predict", json=body, headers={"modelyard-timeout-ms": "0"})
    assert problem(r, 400, "invalid_request")["field"] == "modelyard-timeout-ms"
    r = http.post("/endpoints/echo/predict", json=body, headers={"modelyard-priority": "high"})
    assert r.status_code == 200


def test_a_request_past_its_deadline_is_a_504(http: httpx.Client) -> None:
    r = http.post("/endpoints/slow/predict", json={"inputs": X.tolist()},
                  headers={"modelyard-timeout-ms": "1"})
    problem(r, 504, "deadline_exceeded")


def test_a_full_queue_sheds_with_retry_after(echo: Yard, server: BackgroundServer) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            return await asyncio.gather(*[
                c.post("/endpoints/slow/predict", json={"inputs": X.tolist()})
                for _ in range(12)])

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    shed = next(r for r in responses if r.status_code == 503)
    assert shed.headers["retry-after"] == "1"
    problem(shed, 503, "overloaded")


def test_metrics_count_requests_batches_and_cache(http: httpx.Client, yard: Yard) -> None:
    for _ in range(3):
        assert http.post("/endpoints/echo/predict", json={"inputs": X.tolist()}).status_code \
            == 200
    http.post("/endpoints/echo/predict", json={"inputs": [[1, 2]]})  # a 422
    problem(http.get("/metrics"), 401, "unauthenticated")  # names and traffic need a key
    scraper = yard.create_key("prometheus", ["predictor"])["key"]
    text = http.get("/metrics", headers={"authorization": f"Bearer {scraper}"}).text
    assert 'modelyard_requests_total{code="200",endpoint="echo",version="echo:1"} 3.0' in text
    assert 'modelyard_requests_total{code="422",endpoint="echo",version="echo:1"} 1.0' in text
    assert 'modelyard_cache_total{endpoint="echo",result="hit",version="echo:1"} 2.0' in text
    assert 'modelyard_cache_total{endpoint="echo",result="miss",version="echo:1"} 1.0' in text
    assert 'modelyard_batch_size_count{endpoint="echo",version="echo:1"} 1.0' in text
    assert "modelyard_queue_depth" in text and "modelyard_inference_seconds_bucket" in text


def test_oip_binary_tensors_round_trip(http: httpx.Client) -> None:
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4],
                                   "parameters": {"binary_data_size": X.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    r = http.post("/v2/models/echo/infer", content=head + X.tobytes(), headers={
        "inference-header-content-length": str(len(head)),
        "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    header = json.loads(r.content[:n])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == X.nbytes
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], dtype=np.float32).reshape(3, 4),
                                  X)


def test_binary_input_with_json_output_and_a_lying_size(http: httpx.Client) -> None:
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4],
                                   "parameters": {"binary_data_size": X.nbytes}}]}).encode()
    r = http.post("/v2/models/echo/infer", content=head + X.tobytes(),
                  headers={"inference-header-content-length": str(len(head))})
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == X.reshape(-1).tolist()
    r = http.post("/v2/models/echo/infer", content=head + X.tobytes()[:-4],
                  headers={"inference-header-content-length": str(len(head))})
    problem(r, 422, "invalid_input")
    r = http.post("/v2/models/echo/infer", content=head,
                  headers={"inference-header-content-length": "99999"})
    problem(r, 400, "invalid_request")


def test_deployment_settings_are_checked_and_applied(echo: Yard, server: BackgroundServer,
                                                     admin_key: str) -> None:
    with Client(server.url, admin_key) as client:
        with pytest.raises(Exception) as bad:
            client.create_endpoint("e2", "echo", auth="public", deployment={"max_batch_size": 0})
        assert getattr(bad.value, "field", None) == "deployment.max_batch_size"
        with pytest.raises(Exception) as unknown:
            client.create_endpoint("e2", "echo", auth="public", deployment={"max_batch": 8})
        assert getattr(unknown.value, "status", None) == 422
        updated = client.update_endpoint("echo", deployment={"replicas": 2})
        assert updated["deployment"]["replicas"] == 2
        assert updated["deployment"]["cache_max_entries"] == 100  # merged, not replaced
        state = client.wait_ready("echo")
        assert state["status"]["current"]
        np.testing.assert_array_equal(client.predict("echo", X)["output"], X)


@pytest.mark.slow
def test_several_worker_processes_share_one_port(echo: Yard) -> None:
    port = free_port()
    with open(echo.settings.home / "serve.log", "w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "--yard", str(echo.settings.home), "serve",
             "--port", str(port), "--workers", "2", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            log = (echo.settings.home / "serve.log").read_text()
            assert proc.poll() is None and time.monotonic() < deadline, log
            time.sleep(0.2)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) >= 2
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(20):
                r = c.post("/endpoints/echo/predict", json={"inputs": X.tolist()})
                assert r.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
