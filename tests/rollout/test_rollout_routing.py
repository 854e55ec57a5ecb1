"""Traffic splits across versions over real HTTP: weights, sticky keys, testers' override,
shadows that are compared and never returned."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Client, Yard
from modelyard.domain.traffic import TrafficPolicy
from modelyard.serving.server import BackgroundServer
from support import assert_problem

X = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
BODY = {"inputs": X.tolist()}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def versions(yard: Yard, tabular: Any) -> Yard:
    x, label, _ = tabular
    for c in (0.01, 1.0, 100.0):
        yard.register("churn", LogisticRegression(C=c).fit(x, label), to_onnx=True,
                      sample=x[:4])
    yard.create_endpoint("churn", "churn:1", auth="public")
    return yard


@pytest.fixture
def http(versions: Yard, server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def wait_split(client: Client, http: httpx.Client, seen: set[str]) -> None:
    client.wait_ready("churn")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = {http.post("/endpoints/churn/predict", json=BODY).headers["modelyard-model-version"]
               for _ in range(30)}
        if got >= seen:
            return
        time.sleep(0.1)
    raise AssertionError(f"the split never showed {seen}")


def test_sticky_keys_keep_their_version_and_the_split_follows_the_weights(
        http: httpx.Client, client: Client) -> None:
    client.set_traffic("churn", {"split": [{"model": "churn:2", "weight": 30},
                                           {"model": "churn:1", "weight": 70}],
                                 "sticky_header": "X-User-Id"})
    wait_split(client, http, {"churn:1", "churn:2"})
    first = {}
    for user in range(60):
        answers = {http.post("/endpoints/churn/predict", json=BODY,
                             headers={"x-user-id": f"user-{user}"}).headers[
            "modelyard-model-version"] for _ in range(3)}
        assert len(answers) == 1, (user, answers)  # the same user, the same version
        first[user] = answers.pop()
    # the split itself, over 10,000 keys (the same hashing the server uses)
    policy = TrafficPolicy.from_dict(client.endpoint("churn")["traffic"])
    assert policy is not None
    counts = Counter(policy.choose(f"user-{k}".encode()) for k in range(10_000))
    assert abs(counts[0] / 10_000 - 0.30) < 0.02
    assert all(first[u] == ("churn:2" if policy.choose(f"user-{u}".encode()) == 0
                            else "churn:1") for u in first)


def test_growing_the_new_version_moves_only_new_keys(client: Client) -> None:
    small = TrafficPolicy.from_dict({"split": [{"model": "churn:2", "weight": 5},
                                               {"model": "churn:1", "weight": 95}]})
    large = TrafficPolicy.from_dict({"split": [{"model": "churn:2", "weight": 25},
                                               {"model": "churn:1", "weight": 75}]})
    assert small is not None and large is not None
    keys = [f"k{i}".encode() for i in range(5000)]
    on_canary = [k for k in keys if small.choose(k) == 0]
    assert on_canary and all(large.choose(k) == 0 for k in on_canary)


def test_only_testers_choose_the_version(http: httpx.Client, client: Client,
                                         yard: Yard, server: BackgroundServer) -> None:
    client.set_traffic("churn", {"split": [{"model": "churn:1", "weight": 100},
                                           {"model": "churn:2", "weight": 0}]})
    wait_split(client, http, {"churn:1"})
    assert_problem(http.post("/endpoints/churn/predict", json=BODY,
                             headers={"modelyard-version": "2"}), 403, "forbidden",
                   "modelyard-version")
    viewer = yard.create_key("qa-viewer", ["viewer"])["key"]
    tester = yard.create_key("qa", ["developer"])["key"]
    assert http.post("/endpoints/churn/predict", json=BODY,
                     headers={"modelyard-version": "2", "authorization": f"Bearer {viewer}"}
                     ).status_code == 403
    pinned = http.post("/endpoints/churn/predict", json=BODY,
                       headers={"modelyard-version": "2", "authorization": f"Bearer {tester}"})
    assert pinned.status_code == 200 and pinned.headers["modelyard-model-version"] == "churn:2"
    # OIP v2 names the version in the path: the same right, under a split
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4],
                        "data": X.ravel().tolist()}]}
    assert_problem(http.post("/v2/models/churn/versions/2/infer", json=body), 403,
                   "forbidden", "version")
    oip = http.post("/v2/models/churn/versions/2/infer", json=body,
                    headers={"authorization": f"Bearer {tester}"})
    assert oip.status_code == 200 and oip.json()["model_version"] == "2"
    assert_problem(http.post("/v2/models/churn/versions/3/infer", json={"inputs": []},
                             headers={"authorization": f"Bearer {tester}"}),
                   404, "version_not_found", "version")


def test_shadows_are_compared_and_never_returned(http: httpx.Client, client: Client,
                                                 server: BackgroundServer) -> None:
    client.set_traffic("churn", {"split": [{"model": "churn:1", "weight": 100}],
                                 "shadows": [{"model": "churn:3", "sample": 1.0}]})
    wait_split(client, http, {"churn:1"})
    recorded: list[tuple[Any, ...]] = []
    backend = server.server.config.app.state.backend
    state = backend.state("churn")
    state.deployment.on_shadow = lambda *args: recorded.append(args)
    for _ in range(20):
        answer = http.post("/endpoints/churn/predict", json=BODY)
        assert answer.headers["modelyard-model-version"] == "churn:1"
    deadline = time.monotonic() + 10
    while len(recorded) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(recorded) >= 20  # (and a few from the warm-up requests above)
    primary, shadow, agreed, primary_value, _, latency, ok = recorded[0]
    assert (primary, shadow, ok) == ("churn/churn:1", "churn/churn:3", True) and latency >= 0
    assert isinstance(agreed, bool) and primary_value is not None


def test_bad_traffic_policies_are_named_and_change_nothing(client: Client, yard: Yard,
                                                           http: httpx.Client) -> None:
    cases = [
        ({"split": [{"model": "churn:1", "weight": 60}]}, "traffic.split"),
        ({"split": [{"model": "churn:9", "weight": 100}]}, "version"),
        ({"split": [{"model": "churn:1", "weight": 100}], "shadows": [{"model": "churn:2",
                                                                      "sample": 2}]},
         "traffic.shadows[0].sample"),
        ({"split": [{"model": "churn:1", "weight": 100}], "extra": 1}, "traffic.extra"),
    ]
    for body, field in cases:
        with pytest.raises(Exception) as raised:
            client.set_traffic("churn", body)
        assert getattr(raised.value, "field", None) == field, raised.value
        assert getattr(raised.value, "status", None) in (404, 422)
    assert yard.endpoint("churn").traffic is None
    assert yard.audit_verify()["ok"]


def test_a_split_endpoint_reports_ready_and_current(client: Client, http: httpx.Client) -> None:
    client.set_traffic("churn", {"split": [{"model": "churn:2", "weight": 50},
                                           {"model": "churn:1", "weight": 50}]})
    state = client.wait_ready("churn", timeout_s=30)  # must not wait for one version
    assert state["status"]["current"] is True and state["status"]["ready"] is True
