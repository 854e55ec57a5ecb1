"""Direct ingress on the ray backend: a single-model endpoint's replica answers HTTP on its
own port with Modelyard's data plane (backends/ray_ingress.py). Against a real local Ray
instance and the real server: the same answers and problem documents as the server, keys
from the shared store (revocation within the refresh interval), the inference log written to
the store, metrics, and the rule that splits, moved aliases and changed settings go through
the server only."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

pytest.importorskip("ray", reason="Ray is not installed (pip install 'modelyard[ray]')")

from modelyard import Yard
from modelyard.backends import ray_ingress
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings

SMALL = {"num_cpus": 0.1}
REFRESH_S = 0.5  # reconcile_interval_s: the replicas' refresh of endpoint and keys
ROWS = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def served(ray_instance: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, Any]]:
    settings = Settings.load(tmp_path_factory.mktemp("yard"), env={}, backend="ray",
                             reconcile_interval_s=REFRESH_S, inference_log_flush_s=0.05,
                             inference_log_max_per_s=0)
    yard, admin = Yard.init(settings=settings)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    label = (x[:, 0] - x[:, 2] > 0).astype(np.int64)
    yard.register("churn", LogisticRegression().fit(x, label), sample=x[:3])
    yard.register("churn", LogisticRegression(C=0.1).fit(x, label), sample=x[:3])
    yard.register("other", LogisticRegression(C=3.0).fit(x, label), sample=x[:3])
    # Settings the replica's own deployment differs in (it runs without a cache).
    yard.create_endpoint("scored", "churn:1", auth="key", log_sample=1.0,
                         deployment={**SMALL, "cache_max_entries": 8})
    yard.create_endpoint("moving", "churn:1", auth="public", deployment=SMALL)
    server = BackgroundServer(Yard(settings=settings)).start(300)
    try:
        yield {"yard": yard, "admin": admin, "server": server, "settings": settings}
    finally:
        server.stop()
        yard.close()


def _status(served: dict[str, Any], name: str) -> dict[str, Any]:
    answer = httpx.get(f"{served['server'].url}/api/v1/endpoints/{name}",
                       headers={"Authorization": f"Bearer {served['admin']}"})
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["status"])


def _direct(served: dict[str, Any], name: str) -> str:
    urls = _status(served, name)["direct"]
    assert len(urls) == 1, urls  # one replica, one listener
    return str(urls[0])


def _eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> float:
    """Seconds until ``check()`` held (fails past ``timeout_s``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, "condition never held"
        time.sleep(0.05)
    return time.monotonic() - started


def _without_id(problem: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    return problem.status_code, problem.headers["content-type"], problem.json()


def test_the_replica_answers_like_the_server(served: dict[str, Any]) -> None:
    url = _direct(served, "scored")
    low, high = ray_ingress.port_range(os.environ)
    assert url.startswith("http://127.0.0.1:")  # the server's host: loopback by default
    assert low <= int(url.rsplit(":", 1)[1]) <= high
    key = {"Authorization": f"Bearer {served['admin']}"}
    front = served["server"].url
    body = {"inputs": ROWS.tolist()}
    a = httpx.post(f"{front}/endpoints/scored/predict", json=body, headers=key)
    b = httpx.post(f"{url}/endpoints/scored/predict", json=body, headers=key)
    assert a.status_code == b.status_code == 200, b.text
    assert a.content == b.content
    assert b.headers["modelyard-model-version"] == "churn:1"
    assert b.headers["x-request-id"]
    oip = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4],
                       "data": ROWS.ravel().tolist()}]}
    a = httpx.post(f"{front}/v2/models/scored/infer", json=oip, headers=key)
    b = httpx.post(f"{url}/v2/models/scored/infer", json=oip, headers=key)
    assert b.status_code == 200 and a.content == b.content
    # Refusals are the server's problem documents, field paths included.
    refusals: list[tuple[str, dict[str, Any]]] = [
        ("/endpoints/scored/predict", {"json": body}),  # no key
        ("/endpoints/scored/predict", {"json": body, "headers": {
            "Authorization": "Bearer myk_nope.nope"}}),
        ("/endpoints/scored/predict", {"content": b"{}", "headers": {
            **key, "Content-Type": "text/plain"}}),
        ("/endpoints/scored/predict", {"json": {"inputs": [[1.0, 2.0]]}, "headers": key}),
        ("/endpoints/scored/predict", {"json": body, "headers": {
            **key, "Modelyard-Timeout-Ms": "0"}}),
        ("/endpoints/nowhere/predict", {"json": body, "headers": key}),
    ]
    for path, kwargs in refusals:
        a = httpx.post(front + path, **kwargs)
        b = httpx.post(url + path, **kwargs)
        assert 400 <= b.status_code < 500, (path, b.text)
        assert _without_id(a) == _without_id(b), path
    assert httpx.get(f"{url}/endpoints/scored/predict").status_code == 405
    assert httpx.get(f"{url}/readyz").json() == {"ready": True}
    assert httpx.get(f"{url}/v2/models/scored", headers=key).json()["name"] == "scored"


def test_inference_log_and_metrics_come_from_the_replica(served: dict[str, Any]) -> None:
    url = _direct(served, "scored")
    key = {"Authorization": f"Bearer {served['admin']}"}
    answer = httpx.post(f"{url}/endpoints/scored/predict", json={"inputs": ROWS.tolist()},
                        headers={**key, "X-Request-Id": "direct-logged-1"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "direct-logged-1"

    def logged() -> bool:
        records = served["yard"].inference_log("scored", limit=50)["records"]
        return any(r["request_id"] == "direct-logged-1" for r in records)

    _eventually(logged)
    record = next(r for r in served["yard"].inference_log("scored", limit=50)["records"]
                  if r["request_id"] == "direct-logged-1")
    assert record["version"] == "churn:1" and record["status"] == 200 and record["rows"] == 3
    assert httpx.get(f"{url}/metrics").status_code == 401  # not public unless configured
    text = httpx.get(f"{url}/metrics", headers=key).text
    assert 'modelyard_requests_total{code="200",endpoint="scored",version="churn:1"}' in text


def test_a_revoked_key_stops_working_within_the_refresh_interval(served: dict[str, Any]
                                                                  ) -> None:
    yard, url = served["yard"], _direct(served, "scored")
    made = yard.create_key("caller", ["viewer"])
    headers = {"Authorization": f"Bearer {made['key']}"}
    body = {"inputs": ROWS.tolist()}

    def answers(status: int) -> Callable[[], bool]:
        return lambda: httpx.post(f"{url}/endpoints/scored/predict", json=body,
                                  headers=headers).status_code == status

    _eventually(answers(200))  # a new key: known at the replica's next refresh
    yard.revoke_key(made["prefix"])
    took = _eventually(answers(401))
    # One refresh interval, plus a store round trip and scheduling on a busy machine.
    assert took < REFRESH_S + 5, took


def test_splits_and_moves_go_through_the_server_only(served: dict[str, Any]) -> None:
    yard, front = served["yard"], served["server"].url
    body = {"inputs": ROWS.tolist()}
    first = _direct(served, "moving")
    assert httpx.post(f"{first}/endpoints/moving/predict", json=body).status_code == 200

    # A split (a rollout's shape): the server serves it; the replica's port refers there.
    yard.set_traffic("moving", {"split": [{"model": "churn:1", "weight": 50},
                                          {"model": "other:1", "weight": 50}]})
    # (A split's state lists no direct URL: the server has built it.)
    _eventually(lambda: _status(served, "moving")["direct"] == [])
    _eventually(lambda: httpx.post(f"{first}/endpoints/moving/predict",
                                   json=body).status_code == 503)
    refused = httpx.post(f"{first}/endpoints/moving/predict", json=body)
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "not_served_directly"
    assert httpx.get(f"{first}/readyz").status_code == 503  # out of a balancer's rotation
    assert httpx.post(f"{front}/endpoints/moving/predict", json=body).status_code == 200

    # Back to one model: the split's deployment of churn:1 answers directly again.
    yard.set_traffic("moving", None)
    _eventually(lambda: _status(served, "moving")["direct"] == [first])
    _eventually(lambda: httpx.post(f"{first}/endpoints/moving/predict",
                                   json=body).status_code == 200)

    # A new version: a new application with its own listener; the old one goes away.
    yard.update_endpoint("moving", model="churn:2")
    _eventually(lambda: _status(served, "moving")["serving"] == "churn:2"
                and bool(_status(served, "moving")["direct"]), timeout_s=120)
    second = _direct(served, "moving")
    answer = httpx.post(f"{second}/endpoints/moving/predict", json=body)
    assert answer.status_code == 200
    assert answer.headers["modelyard-model-version"] == "churn:2"

    def old_gone() -> bool:
        try:
            return httpx.post(f"{first}/endpoints/moving/predict", json=body,
                              timeout=5).status_code == 503
        except httpx.TransportError:
            return True  # retired: nothing listens there any more

    _eventually(old_gone, timeout_s=60)


def test_direct_ingress_can_be_turned_off(served: dict[str, Any]) -> None:
    off = BackgroundServer(Yard(settings=served["settings"].with_(
        ray_direct_ingress=False))).start(300)
    try:
        answer = httpx.get(f"{off.url}/api/v1/endpoints/moving",
                           headers={"Authorization": f"Bearer {served['admin']}"})
        assert answer.json()["status"]["direct"] == []
        assert httpx.post(f"{off.url}/endpoints/moving/predict",
                          json={"inputs": ROWS.tolist()}).status_code == 200
    finally:
        off.stop()


def test_without_a_free_port_the_replica_serves_through_the_server(
        served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:  # the whole range: one port, in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", port)
        monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", port)
        crowded = BackgroundServer(Yard(settings=served["settings"])).start(300)
        try:
            answer = httpx.get(f"{crowded.url}/api/v1/endpoints/moving",
                               headers={"Authorization": f"Bearer {served['admin']}"})
            assert answer.json()["status"]["ready"] is True
            assert answer.json()["status"]["direct"] == []
            assert httpx.post(f"{crowded.url}/endpoints/moving/predict",
                              json={"inputs": ROWS.tolist()}).status_code == 200
        finally:
            crowded.stop()


def test_the_autoscaling_policy_adds_direct_load() -> None:
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    from modelyard.backends import ray as ray_backend

    def context(replicas: int, handle_requests: float,
                direct: dict[str, float]) -> AutoscalingContext:
        return AutoscalingContext(
            deployment_id=cast(Any, None), deployment_name="model", app_name="app",
            current_num_replicas=replicas, target_num_replicas=replicas,
            running_replicas=[], total_num_requests=handle_requests,
            total_queued_requests=0,
            aggregated_metrics=cast(Any, {ray_backend.DIRECT_LOAD: direct}),
            raw_metrics={}, capacity_adjusted_min_replicas=1,
            capacity_adjusted_max_replicas=4, policy_state={}, current_time=0.0,
            config=AutoscalingConfig(min_replicas=1, max_replicas=4,
                                     target_ongoing_requests=1),
            last_scale_up_time=None, last_scale_down_time=None)

    policy = ray_backend.autoscaling_policy
    assert policy(context(2, 2.0, {}))[0] == 2  # Ray's own rule without direct traffic
    assert policy(context(2, 0.0, {"r1": 1.5, "r2": 1.5}))[0] == 3  # direct load alone
    assert policy(context(2, 1.0, {"r1": 2.0, "r2": 1.0}))[0] == 4  # both add up


def test_direct_traffic_scales_replicas(served: dict[str, Any]) -> None:
    """Load on the replica's own port alone (none through the server) adds a replica."""
    yard = served["yard"]
    yard.register("slow", "modelyard.testing.models:Sleepy", flavor="python", trusted=True,
                  sample=ROWS[:1])
    yard.create_endpoint("slow", "slow:1", auth="public", deployment={
        "num_cpus": 0.1, "max_batch_size": 1,
        "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                        "upscale_delay_s": 2, "look_back_period_s": 2}})
    _eventually(lambda: len(_status(served, "slow").get("direct", [])) == 1, timeout_s=120)
    url = _direct(served, "slow")
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                http.post(f"{url}/endpoints/slow/predict", json={"inputs": ROWS[:1].tolist()})

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        # Ray's upscale delay and look-back window (30 s each by default) set to 2 s.
        _eventually(lambda: len(_status(served, "slow").get("direct", [])) == 2,
                    timeout_s=180)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    yard.delete_endpoint("slow")
