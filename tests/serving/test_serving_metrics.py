"""/metrics after real traffic: requests by status code (refusals before a version was chosen
included), in-flight requests, graph nodes by outcome and latency, and circuit breakers of
graph nodes and remote models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from modelyard import Client, Graph, Yard
from modelyard.flavors.remote import ALLOW_ENV, RemoteModel
from modelyard.serving.server import BackgroundServer

ROWS = np.random.default_rng(11).normal(size=(2, 4)).astype(np.float32)
SIGNATURE = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
             "outputs": [{"name": "label", "dtype": "int64", "shape": [-1]},
                         {"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}]}


def answer_of(rows: int) -> dict[str, np.ndarray]:
    return {"label": np.zeros(rows, dtype=np.int64),
            "probabilities": np.full((rows, 2), 0.5, dtype=np.float32)}


class Failing:
    """Fails on real traffic (warms up on zeros)."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if np.any(inputs["input"] != 0):
            raise RuntimeError("the feature store is down")
        return answer_of(len(inputs["input"]))


class Patient:
    """Answers after a while: a request stays in flight long enough to be seen."""

    seconds = 0.0

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        return answer_of(len(inputs["input"]))


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def http(server: BackgroundServer, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"authorization": f"Bearer {admin_key}"}) as c:
        yield c


def scrape(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_refusals_are_counted_by_code_with_the_answers(
        yard: Yard, http: httpx.Client, client: Client, server: BackgroundServer,
        tabular: Any) -> None:
    x, label, _ = tabular
    yard.register("clf", LogisticRegression().fit(x, label), to_onnx=True, sample=x[:4])
    yard.create_endpoint("clf", "clf:1")  # a key is needed
    client.wait_ready("clf")
    ok = http.post("/endpoints/clf/predict", json={"inputs": ROWS.tolist()})
    assert ok.status_code == 200, ok.text
    anonymous = httpx.post(f"{server.url}/endpoints/clf/predict",
                           json={"inputs": ROWS.tolist()})
    assert anonymous.status_code == 401
    bad = http.post("/endpoints/clf/predict", json={"inputs": "nonsense"})
    assert bad.status_code == 422
    samples = scrape(http)
    labels = {"endpoint": "clf", "version": "clf:1"}
    assert value(samples, "modelyard_requests_total", code="200", **labels) == 1
    assert value(samples, "modelyard_requests_total", code="401", **labels) == 1
    assert value(samples, "modelyard_requests_total", code="422", **labels) == 1
    assert value(samples, "modelyard_in_flight", **labels) == 0
    assert value(samples, "modelyard_batch_size_count", **labels) == 1


def test_in_flight_counts_requests_being_computed(yard: Yard, http: httpx.Client,
                                                  client: Client,
                                                  server: BackgroundServer) -> None:
    Patient.seconds = 0.0
    yard.register("patient", "test_serving_metrics:Patient", flavor="python", trusted=True,
                  signature=SIGNATURE)
    yard.create_endpoint("patient", "patient:1", auth="public")
    client.wait_ready("patient")
    Patient.seconds = 1.0  # (the server runs in this process: the class is shared)
    threads = [threading.Thread(target=lambda: httpx.post(
        f"{server.url}/endpoints/patient/predict", json={"inputs": ROWS.tolist()},
        timeout=30)) for _ in range(2)]
    for thread in threads:
        thread.start()
    labels = {"endpoint": "patient", "version": "patient:1"}
    deadline = time.monotonic() + 5
    while value(scrape(http), "modelyard_in_flight", **labels) != 2:
        assert time.monotonic() < deadline, "the two requests never showed as in flight"
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    assert value(scrape(http), "modelyard_in_flight", **labels) == 0


def test_graph_nodes_and_their_breakers(yard: Yard, http: httpx.Client, client: Client,
                                        tabular: Any) -> None:
    x, label, _ = tabular
    yard.register("clf", LogisticRegression().fit(x, label), to_onnx=True, sample=x[:4])
    yard.register("failing", "test_serving_metrics:Failing", flavor="python", trusted=True,
                  signature=SIGNATURE)
    graph = (Graph("safe").input("features", "float32", (-1, 4))
             .model("primary", "failing:1", inputs={"input": "inputs.features"},
                    breaker={"failures": 1, "reset_s": 60})
             .model("backup", "clf:1", inputs={"input": "inputs.features"})
             .fallback("answer", ["primary", "backup"])
             .output("label", "answer.label"))
    yard.create_endpoint("safe", graph=graph, auth="public")
    client.wait_ready("safe")
    before = scrape(http)
    assert value(before, "modelyard_breaker_state", endpoint="safe", version="failing:1",
                 node="primary", kind="node") == 0
    for _ in range(2):  # the first call fails and opens the breaker; the second is refused
        answer = http.post("/endpoints/safe/predict", json={"inputs": {"features":
                                                                       ROWS.tolist()}})
        assert answer.status_code == 200, answer.text
    version = answer.headers["modelyard-model-version"]
    samples = scrape(http)
    graph_labels = {"endpoint": "safe", "version": version}
    assert value(samples, "modelyard_requests_total", code="200", **graph_labels) == 2
    assert value(samples, "modelyard_in_flight", **graph_labels) == 0
    nodes = {(dict(k[1])["node"], dict(k[1])["code"]): v for k, v in samples.items()
             if k[0] == "modelyard_node_requests_total"}
    assert nodes == {("primary", "node_failed"): 2, ("backup", "ok"): 2, ("answer", "ok"): 2}
    assert value(samples, "modelyard_node_seconds_count", node="backup", **graph_labels) == 2
    assert value(samples, "modelyard_breaker_state", endpoint="safe", version="failing:1",
                 node="primary", kind="node") == 2
    assert value(samples, "modelyard_breaker_state", endpoint="safe", version="clf:1",
                 node="backup", kind="node") == 0


def test_a_remote_models_breaker_state(yard: Yard, http: httpx.Client, client: Client,
                                       server: BackgroundServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_ENV, "127.0.0.1")
    # The upstream: an OIP v2 endpoint of this same server, failing on real traffic (500).
    yard.register("failing", "test_serving_metrics:Failing", flavor="python", trusted=True,
                  signature=SIGNATURE)
    yard.create_endpoint("upstream", "failing:1", auth="public")
    client.wait_ready("upstream")
    yard.register("proxy", RemoteModel(kind="oip", url=server.url, model="upstream",
                                       retries=0, breaker_failures=1, breaker_reset_s=60),
                  signature=SIGNATURE)
    yard.create_endpoint("proxy", "proxy:1", auth="public")
    client.wait_ready("proxy")
    labels = {"endpoint": "proxy", "version": "proxy:1", "node": "", "kind": "upstream"}
    assert value(scrape(http), "modelyard_breaker_state", **labels) == 0
    failed = http.post("/endpoints/proxy/predict", json={"inputs": ROWS.tolist()})
    assert failed.status_code == 502, failed.text
    refused = http.post("/endpoints/proxy/predict", json={"inputs": ROWS.tolist()})
    assert refused.status_code == 503 and refused.json()["code"] == "circuit_open"
    samples = scrape(http)
    assert value(samples, "modelyard_breaker_state", **labels) == 2
    proxy = {"endpoint": "proxy", "version": "proxy:1"}
    assert value(samples, "modelyard_requests_total", code="502", **proxy) == 1
    assert value(samples, "modelyard_requests_total", code="503", **proxy) == 1
