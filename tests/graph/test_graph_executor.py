"""Graphs served end to end: real models, the real server, cascades, fallbacks, routers,
ensembles, transforms, breakers and traces."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Client, Graph, Yard
from modelyard.serving.server import BackgroundServer
from support import assert_problem

ROWS = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)


class Broken:
    """Fails on real traffic (it warms up on zeros): a node that needs a fallback."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if np.any(inputs["input"] != 0):
            raise RuntimeError("upstream feature store is down")
        rows = len(inputs["input"])
        return {"label": np.zeros(rows, dtype=np.int64),
                "probabilities": np.full((rows, 2), 0.5, dtype=np.float32)}


class Slow:
    """Answers like the classifiers, slowly."""

    seconds = 0.4

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        rows = len(inputs["input"])
        return {"label": np.zeros(rows, dtype=np.int64),
                "probabilities": np.full((rows, 2), 0.5, dtype=np.float32)}


def double(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A project transform: scale features."""
    return {"scaled": arrays["x"] * 2}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def models(yard: Yard, tabular: Any) -> Yard:
    x, label, _ = tabular
    for name, c in (("small", 0.01), ("large", 10.0)):
        yard.register(name, LogisticRegression(C=c).fit(x, label), to_onnx=True,
                      sample=x[:5])
        yard.set_alias(name, "champion", 1)
    proba_sample = {"input": x[:2]}
    for name, cls in (("broken", "Broken"), ("slow", "Slow")):
        yard.register(name, f"test_graph_executor:{cls}", flavor="python", trusted=True,
                      signature={"inputs": [{"name": "input", "dtype": "float32",
                                             "shape": [-1, 4]}],
                                 "outputs": [{"name": "label", "dtype": "int64",
                                              "shape": [-1]},
                                             {"name": "probabilities", "dtype": "float32",
                                              "shape": [-1, 2]}]})
    assert proba_sample
    return yard


@pytest.fixture
def http(models: Yard, server: BackgroundServer, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"authorization": f"Bearer {admin_key}"}) as c:
        yield c


def features(rows: np.ndarray = ROWS) -> dict[str, Any]:
    return {"inputs": {"features": rows.tolist()}}


def cascade() -> Graph:
    return (Graph("churn-cascade")
            .input("features", "float32", (-1, 4))
            .model("small", "small@champion", inputs={"input": "inputs.features"})
            .model("large", "large@champion", inputs={"input": "inputs.features"})
            .cascade("answer", ["small", "large"], confidence="probabilities",
                     threshold=0.9)
            .output("label", "answer.label")
            .output("probabilities", "answer.probabilities"))


def test_a_cascade_escalates_unsure_rows_and_traces_them(http: httpx.Client, client: Client,
                                                          models: Yard, tabular: Any) -> None:
    client.create_endpoint("churn", graph=cascade())
    client.wait_ready("churn")
    answer = http.post("/endpoints/churn/predict?trace=1", json=features())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["graph"] == "churn" and len(body["outputs"]["label"]) == len(ROWS)
    steps = body["trace"]
    small = next(s for s in steps if s["node"] == "small")
    assert small["rows"] == len(ROWS) and small["version"] == "small:1"
    escalated = next(s for s in steps if s["node"] == "answer")["escalated"]
    large = [s for s in steps if s["node"] == "large"]
    assert escalated == (large[0]["rows"] if large else 0)
    # each row answered by the step that was sure enough, in request order
    x = ROWS
    small_model = models.deployment(models.version("small:1"))
    large_model = models.deployment(models.version("large:1"))
    p_small = small_model.predict_sync({"input": x})["probabilities"]
    p_large = large_model.predict_sync({"input": x})["probabilities"]
    expected = np.where((p_small.max(axis=1) >= 0.9)[:, None], p_small, p_large)
    assert np.allclose(body["outputs"]["probabilities"], expected, atol=1e-5)
    plain = http.post("/endpoints/churn/predict", json=features()).json()
    assert "trace" not in plain
    # the same graph over OIP v2
    oip = http.post("/v2/models/churn/infer", json={"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [len(x), 4],
         "data": x.ravel().tolist()}]})
    assert oip.status_code == 200, oip.text
    assert {o["name"] for o in oip.json()["outputs"]} == {"label", "probabilities"}


def test_fallback_covers_failures_and_timeouts_and_says_why(http: httpx.Client,
                                                           client: Client) -> None:
    graph = (Graph("safe")
             .input("features", "float32", (-1, 4))
             .model("primary", "broken:1", inputs={"input": "inputs.features"},
                    retries=1, breaker={"failures": 2, "reset_s": 60})
             .model("slowpoke", "slow:1", inputs={"input": "inputs.features"},
                    timeout_ms=100)
             .model("backup", "small@champion", inputs={"input": "inputs.features"})
             .fallback("answer", ["primary", "slowpoke", "backup"])
             .output("label", "answer.label"))
    client.create_endpoint("safe", graph=graph)
    client.wait_ready("safe")
    answer = http.post("/endpoints/safe/predict?trace=1", json=features())
    assert answer.status_code == 200, answer.text
    trace = answer.json()["trace"]
    fell = [s for s in trace if s["status"] == "fell_back"]
    assert [s["skipped"] for s in fell] == ["primary", "slowpoke"]
    assert "feature store is down" in fell[0]["reason"]
    assert "longer than" in fell[1]["reason"]
    used = next(s for s in trace if s.get("used"))
    assert used["used"] == "backup" and len(used["fallbacks"]) == 2
    # the breaker opened after two failures (one call + its retry): now refused at once
    again = http.post("/endpoints/safe/predict?trace=1", json=features()).json()["trace"]
    primary = next(s for s in again if s["node"] == "primary")
    assert "not calling it" in primary["error"]


def test_a_failing_node_without_fallback_is_a_502_naming_it(http: httpx.Client,
                                                             client: Client) -> None:
    graph = (Graph().input("features", "float32", (-1, 4))
             .model("primary", "broken:1", inputs={"input": "inputs.features"})
             .output("label", "primary.label"))
    client.create_endpoint("fragile", graph=graph)
    client.wait_ready("fragile")
    failed = http.post("/endpoints/fragile/predict", json=features())
    body = assert_problem(failed, 502, "node_failed", "nodes.primary")
    assert "feature store is down" in body["detail"]
    slow = (Graph().input("features", "float32", (-1, 4))
            .model("s", "slow:1", inputs={"input": "inputs.features"}, timeout_ms=50)
            .output("label", "s.label"))
    client.create_endpoint("sluggish", graph=slow)
    client.wait_ready("sluggish")
    assert_problem(http.post("/endpoints/sluggish/predict", json=features()), 504,
                   "node_timeout", "nodes.s")


def test_router_ensemble_and_transform(http: httpx.Client, client: Client) -> None:
    graph = (Graph("mixed")
             .input("features", "float32", (-1, 4))
             .input("amount", "float64", (-1,))
             .transform("scale", "test_graph_executor:double", inputs={"x": "inputs.features"},
                        outputs=[{"name": "scaled", "dtype": "float32", "shape": [-1, 4]}],
                        trusted=True)
             .model("small", "small@champion", inputs={"input": "scale.scaled"})
             .model("large", "large@champion", inputs={"input": "scale.scaled"})
             .ensemble("blend", ["small", "large"], output="probabilities",
                       method="weighted_mean", weights=[1, 3])
             .model("review", "large@champion", inputs={"input": "inputs.features"})
             .model("auto", "small@champion", inputs={"input": "inputs.features"})
             .router("route", [("inputs.amount > 1000", "review")], default="auto")
             .output("blend", "blend.probabilities")
             .output("routed", "route.label"))
    client.create_endpoint("mixed", graph=graph)
    client.wait_ready("mixed")
    amounts = [10.0, 5000.0, 20.0, 7000.0, 1.0, 2.0]
    answer = http.post("/endpoints/mixed/predict?trace=1",
                       json={"inputs": {"features": ROWS.tolist(), "amount": amounts}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    routes = next(s for s in body["trace"] if s["node"] == "route")["routes"]
    assert routes == {"review": 2, "auto": 4}
    blend = np.asarray(body["outputs"]["blend"])
    assert blend.shape == (6, 2) and np.allclose(blend.sum(axis=1), 1, atol=1e-5)
    # small and large read the transform's output and ran side by side
    small = next(s for s in body["trace"] if s["node"] == "small")
    large = next(s for s in body["trace"] if s["node"] == "large")
    scale = next(s for s in body["trace"] if s["node"] == "scale")
    assert small["start_ms"] >= scale["start_ms"] + scale["ms"] - 1
    assert len(body["outputs"]["routed"]) == 6
    assert large["status"] == "ok"


def test_invalid_graphs_are_refused_whole_and_nothing_is_deployed(
        http: httpx.Client, client: Client, yard: Yard) -> None:
    doc = cascade().to_dict()
    doc["nodes"]["small"]["model"] = "nope@champion"
    doc["nodes"]["large"]["inputs"] = {"input": "inputs.missing"}
    refused = http.post("/api/v1/endpoints", json={"name": "bad", "graph": doc})
    body = assert_problem(refused, 422, "graph_invalid")
    paths = {p["path"] for p in body["problems"]}
    assert {"nodes.small.model", "nodes.large.inputs.input"} <= paths
    assert "bad" not in [e.name for e in yard.list_endpoints()]
    checked = client.validate_graph(doc)
    assert checked["ok"] is False and len(checked["problems"]) == len(body["problems"])
    assert client.validate_graph(cascade())["ok"] is True
    assert yard.audit_verify()["ok"]


def test_moving_one_nodes_alias_reloads_that_node(http: httpx.Client, client: Client,
                                                  models: Yard, tabular: Any) -> None:
    client.create_endpoint("churn", graph=cascade())
    client.wait_ready("churn")
    x, label, _ = tabular
    models.register("small", LogisticRegression(C=1.0).fit(x, label), to_onnx=True,
                    sample=x[:5])
    client.set_alias("small", "champion", 2)
    deadline = time.monotonic() + 30
    while True:
        trace = http.post("/endpoints/churn/predict?trace=1", json=features()).json()["trace"]
        version = next(s for s in trace if s["node"] == "small")["version"]
        if version == "small:2" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert version == "small:2"


def test_the_sdk_calls_a_graph_like_a_model(http: httpx.Client, client: Client,
                                            models: Yard) -> None:
    client.create_endpoint("churn", graph=cascade())
    client.wait_ready("churn")
    outputs = client.predict("churn", {"features": ROWS})
    assert outputs["probabilities"].shape == (len(ROWS), 2)
    assert outputs["label"].dtype == np.int64
    with pytest.raises(Exception) as in_process:
        models.predict("churn", {"features": ROWS})
    assert "runs in the server" in str(in_process.value)


def test_branches_wait_for_the_nodes_they_read(http: httpx.Client, client: Client) -> None:
    graph = (Graph("nested")
             .input("features", "float32", (-1, 4))
             .transform("scale", "test_graph_executor:double", inputs={"x": "inputs.features"},
                        outputs=[{"name": "scaled", "dtype": "float32", "shape": [-1, 4]}],
                        trusted=True)
             .model("quick", "small@champion", inputs={"input": "scale.scaled"})
             .model("expert", "broken:1", inputs={"input": "scale.scaled"})
             .model("backup", "large@champion", inputs={"input": "scale.scaled"})
             .fallback("careful", ["expert", "backup"])
             .cascade("answer", ["quick", "careful"], confidence="probabilities",
                      threshold=0.99)
             .output("label", "answer.label"))
    client.create_endpoint("nested", graph=graph)
    client.wait_ready("nested")
    answer = http.post("/endpoints/nested/predict?trace=1", json=features())
    assert answer.status_code == 200, answer.text
    trace = answer.json()["trace"]
    assert trace[0]["node"] == "scale"
    assert any(s.get("used") == "backup" for s in trace)


def test_a_graph_answers_tritonclient_over_grpc(models: Yard, admin_key: str) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc",
                                     reason="tritonclient[grpc] is a dev dependency")
    models.create_endpoint("churn", graph=cascade(), auth="public")
    with BackgroundServer(models, grpc=True) as served, Client(served.url, admin_key) as sdk:
        sdk.wait_ready("churn")
        triton = grpcclient.InferenceServerClient(served.grpc_target)
        try:
            meta = triton.get_model_metadata("churn", as_json=True)
            assert [i["name"] for i in meta["inputs"]] == ["features"]
            tensor = grpcclient.InferInput("features", list(ROWS.shape), "FP32")
            tensor.set_data_from_numpy(ROWS)
            result = triton.infer("churn", [tensor])
            assert result.as_numpy("probabilities").shape == (len(ROWS), 2)
        finally:
            triton.close()


def test_models_a_graph_uses_cannot_be_deleted_or_archived(models: Yard) -> None:
    from modelyard.domain.errors import InUse

    graph = (Graph().input("features", "float32", (-1, 4))
             .model("a", "small:1", inputs={"input": "inputs.features"})
             .output("label", "a.label"))
    models.create_endpoint("uses-small", graph=graph)
    with pytest.raises(InUse):
        models.delete_model("small")
    models.set_alias("small", "champion", 1)
    models.remove_alias("small", "champion")
    with pytest.raises(InUse):
        models.archive("small", 1)
    models.delete_endpoint("uses-small")
    models.delete_model("small")
