"""Readiness and endpoint status over real HTTP: an endpoint is ready only once its model is
loaded and warmed up; load failures, model failures and deadlines are reported as problems.

The python-flavor models below are real models served by the real server (which runs in this
process, so it can import them); class attributes let a test hold a warm-up open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from modelyard import Client, Yard
from modelyard.domain.errors import NotReady
from modelyard.serving.server import BackgroundServer
from support import assert_problem

SAMPLE = {"x": np.zeros((2, 3), dtype=np.float32)}


class GatedModel:
    """Predicts row sums; while ``hold`` is set, every predict (the warm-up too) waits for
    ``gate``."""

    hold = False
    gate = threading.Event()

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if GatedModel.hold:
            GatedModel.gate.wait(30)
        return {"score": inputs["x"].sum(axis=1)}


class BrokenOnLoad:
    broken = False

    def load(self, path: str) -> None:
        if BrokenOnLoad.broken:
            raise RuntimeError("weights are corrupt")

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"score": inputs["x"].sum(axis=1)}


class SleepyModel:
    """Sleeps as many seconds as the largest input value (at most 2)."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(min(float(inputs["x"].max()), 2.0))
        return {"score": inputs["x"].sum(axis=1)}


class FailingModel:
    """Raises on negative inputs, like a model with a bug."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (inputs["x"] < 0).any():
            raise ValueError("log of a negative number")
        return {"score": inputs["x"].sum(axis=1)}


@pytest.fixture
def http(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    GatedModel.hold, GatedModel.gate = False, threading.Event()
    try:
        yield GatedModel.gate
    finally:
        GatedModel.gate.set()  # never leave the reconciler blocked
        GatedModel.hold = False


def _poll(client: Client, name: str, until: Callable[[dict[str, Any]], bool],
          timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        state = client.endpoint(name)
        if until(state["status"]):
            return state
        assert time.monotonic() < deadline, f"endpoint {name} never got there: {state}"
        time.sleep(0.02)


def test_ready_only_after_warm_up(client: Client, http: httpx.Client,
                                  gate: threading.Event) -> None:
    client.register("gated", GatedModel, sample=SAMPLE, trusted=True)
    GatedModel.hold = True
    created = client.create_endpoint("gated", "gated:1", auth="public")
    assert created["status"]["ready"] is False

    loading = _poll(client, "gated", lambda s: s["status"] == "loading")["status"]
    assert loading["ready"] is False
    assert loading["serving"] is None
    assert loading["target"] == "gated:1"
    assert http.get("/v2/models/gated/ready").status_code == 503
    assert http.get("/v2/models/gated/ready").json() == {"name": "gated", "ready": False}
    assert http.get("/v2/health/ready").status_code == 503
    assert http.get("/v2/health/ready").json() == {"ready": False}
    assert_problem(http.post("/endpoints/gated/predict", json={"inputs": [[1, 2, 3]]}),
                   503, "not_ready")
    assert_problem(http.get("/v2/models/gated"), 503, "not_ready")
    with pytest.raises(NotReady):
        client.wait_ready("gated", timeout_s=0.3)

    time.sleep(0.2)
    gate.set()  # the warm-up finishes
    state = client.wait_ready("gated", timeout_s=15)["status"]
    assert state["status"] == "ready"
    assert state["ready"] is True
    assert state["serving"] == state["target"] == "gated:1"
    assert state["warmup_ms"] >= 150  # the warm-up really ran, and ready came after it
    assert http.get("/v2/models/gated/ready").status_code == 200
    assert http.get("/v2/health/ready").json() == {"ready": True}
    response = http.post("/endpoints/gated/predict", json={"inputs": [[1, 2, 3]]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == {"score": [6.0]}


def test_endpoint_status_shows_serving_and_target(
    client: Client, classifier: LogisticRegression,
    tabular: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    client.register("churn", classifier, sample=tabular[0][:5])
    client.set_alias("churn", "champion", 1)
    client.create_endpoint("churn", "churn@champion", auth="public", timeout_ms=2500,
                           description="prod")
    client.wait_ready("churn")
    doc = client.endpoint("churn")
    assert doc["name"] == "churn"
    assert doc["model"] == "churn@champion"
    assert doc["timeout_ms"] == 2500
    assert doc["description"] == "prod"
    assert doc["status"]["endpoint"] == "churn"
    assert doc["status"]["status"] == "ready"
    assert doc["status"]["ready"] is True
    assert doc["status"]["serving"] == "churn:1"
    assert doc["status"]["target"] == "churn:1"
    assert doc["status"]["error"] is None
    assert doc["status"]["warmup_ms"] >= 0
    assert [e["name"] for e in client.list_endpoints()] == ["churn"]
    assert client.list_endpoints()[0]["status"]["serving"] == "churn:1"


def test_target_that_stops_resolving_keeps_the_old_version_serving(
    client: Client, http: httpx.Client, classifier: LogisticRegression,
    tabular: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    client.register("churn", classifier, sample=tabular[0][:5])
    client.set_alias("churn", "champion", 1)
    client.create_endpoint("churn", "churn@champion", auth="public")
    client.wait_ready("churn")
    client.remove_alias("churn", "champion")
    state = _poll(client, "churn", lambda s: s["status"] == "failed")["status"]
    assert state["serving"] == "churn:1"
    assert "champion" in state["error"]
    response = http.post("/endpoints/churn/predict", json={"inputs": tabular[0][:2].tolist()})
    assert response.status_code == 200
    assert response.headers["modelyard-model-version"] == "churn:1"


def test_load_failure_is_reported_on_the_endpoint(client: Client, http: httpx.Client) -> None:
    client.register("broken", BrokenOnLoad, sample=SAMPLE, trusted=True)
    BrokenOnLoad.broken = True
    try:
        client.create_endpoint("broken", "broken:1", auth="public")
        state = _poll(client, "broken", lambda s: s["status"] == "failed")["status"]
    finally:
        BrokenOnLoad.broken = False
    assert state["ready"] is False
    assert state["serving"] is None
    assert state["target"] == "broken:1"
    assert "weights are corrupt" in state["error"]
    with pytest.raises(NotReady):
        client.wait_ready("broken", timeout_s=5)
    body = assert_problem(http.post("/endpoints/broken/predict", json={"inputs": [[0, 0, 0]]}),
                          503, "not_ready")
    assert "weights are corrupt" in body["detail"]
    assert http.get("/v2/health/ready").status_code == 503
    assert http.get("/v2/models/broken/ready").status_code == 503


def test_model_failure_is_a_500_problem(client: Client, http: httpx.Client) -> None:
    client.register("failing", FailingModel, sample=SAMPLE, trusted=True)
    client.create_endpoint("failing", "failing:1", auth="public")
    client.wait_ready("failing")
    ok = http.post("/endpoints/failing/predict", json={"inputs": [[1, 2, 3]]})
    assert ok.status_code == 200
    body = assert_problem(http.post("/endpoints/failing/predict", json={"inputs": [[-1, 2, 3]]}),
                          500, "model_failed")
    assert "log of a negative number" in body["detail"]
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [-1, 0, 0]}
    assert_problem(http.post("/v2/models/failing/infer", json={"inputs": [tensor]}),
                   500, "model_failed")


def test_deadline_exceeded_is_504(client: Client, http: httpx.Client) -> None:
    client.register("sleepy", SleepyModel, sample=SAMPLE, trusted=True)
    client.create_endpoint("sleepy", "sleepy:1", auth="public", timeout_ms=150)
    client.wait_ready("sleepy")
    fast = http.post("/endpoints/sleepy/predict", json={"inputs": [[0, 0, 0]]})
    assert fast.status_code == 200
    started = time.monotonic()
    slow = http.post("/endpoints/sleepy/predict", json={"inputs": [[0.6, 0, 0]]})
    assert time.monotonic() - started < 0.55  # answered at the deadline, not after the model
    assert_problem(slow, 504, "deadline_exceeded")
    # The per-request header overrides the endpoint's timeout, both ways.
    longer = http.post("/endpoints/sleepy/predict", json={"inputs": [[0.3, 0, 0]]},
                       headers={"modelyard-timeout-ms": "5000"})
    assert longer.status_code == 200, longer.text
    client.update_endpoint("sleepy", timeout_ms=10_000)
    shorter = http.post("/endpoints/sleepy/predict", json={"inputs": [[0.3, 0, 0]]},
                        headers={"modelyard-timeout-ms": "50"})
    # Either run and time out, or (admission control, knowing the model's latency by now)
    # refuse up front; both are problems, never a late 200.
    if shorter.status_code == 503:
        assert_problem(shorter, 503, "overloaded")
        assert shorter.headers["retry-after"]
    else:
        assert_problem(shorter, 504, "deadline_exceeded")


def test_endpoints_load_before_the_server_takes_traffic(
    yard: Yard, classifier: LogisticRegression,
    tabular: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Endpoints that exist at start-up are loaded and warm before the port answers."""
    yard.register("churn", classifier, sample=tabular[0][:5])
    yard.create_endpoint("churn", "churn:1", auth="public")
    with BackgroundServer(yard) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}
        first = c.post("/endpoints/churn/predict", json={"inputs": tabular[0][:2].tolist()})
        assert first.status_code == 200, first.text
        assert first.headers["modelyard-model-version"] == "churn:1"


def test_repointing_an_endpoint_switches_the_served_version(
    client: Client, http: httpx.Client, classifier: LogisticRegression, regressor: Ridge,
    tabular: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x = tabular[0][:3]
    client.register("churn", classifier, sample=x)
    client.register("ltv", regressor, sample=x)
    client.create_endpoint("main", "churn:1", auth="public")
    client.wait_ready("main")
    updated = client.update_endpoint("main", model="ltv:1", description="now ltv")
    assert updated["model"] == "ltv:1"
    assert updated["generation"] == 2
    # (Polled by header: wait_ready can return early, see
    # test_wait_ready_waits_for_a_repointed_endpoint.)
    deadline = time.monotonic() + 15
    while True:
        response = http.post("/endpoints/main/predict", json={"inputs": x.tolist()})
        assert response.status_code == 200, response.text
        if response.headers["modelyard-model-version"] == "ltv:1":
            break
        assert time.monotonic() < deadline, "the endpoint still serves churn:1"
        time.sleep(0.02)
    state = client.wait_ready("main")["status"]
    assert state["serving"] == state["target"] == "ltv:1"
    np.testing.assert_allclose(response.json()["outputs"]["prediction"], regressor.predict(x),
                               rtol=1e-5)
    client.delete_endpoint("main")
    deadline = time.monotonic() + 15
    while http.post("/endpoints/main/predict", json={"inputs": x.tolist()}).status_code != 404:
        assert time.monotonic() < deadline, "the deleted endpoint is still served"
        time.sleep(0.02)
    assert_problem(http.post("/endpoints/main/predict", json={"inputs": x.tolist()}), 404,
                   "endpoint_not_found", "endpoint")


def test_wait_ready_waits_for_a_repointed_endpoint(
    client: Client, http: httpx.Client, gate: threading.Event,
    classifier: LogisticRegression, regressor: Ridge,
    tabular: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Deterministic: a slow load elsewhere keeps the reconciler busy while ``main`` is
    repointed, so the old state stays visible until the gate opens."""
    x = tabular[0][:3]
    client.register("churn", classifier, sample=x)
    client.register("ltv", regressor, sample=x)
    client.register("gated", GatedModel, sample=SAMPLE, trusted=True)
    client.create_endpoint("main", "churn:1", auth="public")
    client.wait_ready("main")
    GatedModel.hold = True
    # "a-gated" sorts first: it is reconciled before "main"
    client.create_endpoint("a-gated", "gated:1", auth="public")
    _poll(client, "a-gated", lambda s: s["status"] == "loading")
    client.update_endpoint("main", model="ltv:1")
    threading.Timer(0.5, gate.set).start()
    state = client.wait_ready("main", timeout_s=15)["status"]
    assert state["serving"] == "ltv:1"
