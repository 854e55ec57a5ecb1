"""The replica's direct listener without Ray: the rule that decides when it answers, its port
choice, and the listener itself on a real port (the same code a Ray replica runs)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.backends.ray_ingress import (
    DirectConfig,
    DirectIngress,
    DirectView,
    NotServedDirectly,
    bind_in_range,
    port_range,
)
from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ValidationFailed
from modelyard.serving.server import free_port
from modelyard.settings import Settings
from modelyard.store.db import Database

X = np.random.default_rng(1).normal(size=(60, 3)).astype(np.float32)


@pytest.fixture
def yard(tmp_path: Path) -> Any:
    settings = Settings.load(tmp_path / "yard", env={}, inference_log_flush_s=0.05,
                             inference_log_max_per_s=0)
    yard, _ = Yard.init(settings=settings)
    for c in (1.0, 0.3):
        yard.register("m", LogisticRegression(C=c).fit(X, (X[:, 0] > 0).astype(np.int64)),
                      sample=X[:2])
    yard.create_endpoint("e", "m:1", auth="public", deployment={"max_batch_size": 8})
    yield yard
    yard.close()


def _view(yard: Any, spec: dict[str, Any] | None = None) -> DirectView:
    deployment = yard.deployment(yard.version("m:1"))
    return DirectView(Database(yard.settings.database_url), "e", deployment,
                      DeploymentSpec.from_dict(spec or {"max_batch_size": 8}))


def _refusal(view: DirectView) -> str | None:
    view.refresh()
    try:
        view.state("e")
    except NotServedDirectly as exc:
        return exc.detail
    return None


def test_it_answers_only_for_a_single_model_served_by_itself(yard: Any) -> None:
    view = _view(yard)
    assert view.state("e") is None and not view.ready()  # nothing read yet
    assert _refusal(view) is None and view.ready()
    assert view.state("other") is None
    yard.set_traffic("e", {"split": [{"model": "m:1", "weight": 50},
                                     {"model": "m:2", "weight": 50}]})
    assert "traffic split" in str(_refusal(view)) and not view.ready()
    yard.set_traffic("e", None)
    assert _refusal(view) is None
    yard.update_endpoint("e", model="m:2")
    assert "now serves m:2" in str(_refusal(view))
    yard.update_endpoint("e", model="m:1", deployment={"max_batch_size": 4})
    assert "settings changed" in str(_refusal(view))
    yard.delete_endpoint("e")
    view.refresh()
    assert view.state("e") is None and not view.ready()  # deleted: 404, as on the server


def test_a_graph_is_never_served_directly(yard: Any) -> None:
    from modelyard.graphs import Graph

    graph = (Graph("g").input("input", "float32", (-1, 3))
             .model("a", "m:1", inputs={"input": "inputs.input"})
             .output("label", "a.label"))
    yard.update_endpoint("e", graph=graph)
    assert "graph" in str(_refusal(_view(yard)))


def test_ports_come_from_the_range_and_skip_used_ones() -> None:
    low = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", low))
        taken.listen()
        chosen = bind_in_range("127.0.0.1", low, low + 20)
        try:
            assert low < chosen.getsockname()[1] <= low + 20
        finally:
            chosen.close()
    assert port_range({}) == (30000, 31000)
    assert port_range({"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "40000",
                       "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "40010"}) == (40000, 40010)
    for env in ({"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "x"},
                {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "500",
                 "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "400"}):
        with pytest.raises(ValidationFailed) as info:
            port_range(env)
        assert info.value.field == "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"


def test_the_listener_serves_refers_and_stops(yard: Any) -> None:
    deployment = yard.deployment(yard.version("m:1"))
    low = free_port()
    config = DirectConfig.of("e", yard.settings.with_(reconcile_interval_s=0.1,
                                                      oidc_client_secret="s3cret"),
                             (low, low + 20))
    assert config.settings.oidc_client_secret == ""  # replicas never get login secrets
    assert "s3cret" not in repr(config)
    body = {"inputs": X[:2].tolist()}

    async def scenario() -> None:
        ingress = DirectIngress(config, deployment, DeploymentSpec.from_dict(
            {"max_batch_size": 8}))
        url = await ingress.start("10.0.0.9")
        assert url.startswith("http://127.0.0.1:")  # its own host, not the node's address
        async with httpx.AsyncClient(base_url=url) as http:
            answer = await http.post("/endpoints/e/predict", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.headers["modelyard-model-version"] == "m:1"
            assert answer.json()["outputs"]["label"] == \
                yard.predict("m:1", X[:2])["label"].tolist()
            yard.set_traffic("e", {"split": [{"model": "m:1", "weight": 50},
                                             {"model": "m:2", "weight": 50}]})
            for _ in range(100):  # refreshed every 0.1 s
                refused = await http.post("/endpoints/e/predict", json=body)
                if refused.status_code == 503:
                    break
                await asyncio.sleep(0.05)
            assert refused.json()["code"] == "not_served_directly"
            assert (await http.get("/readyz")).status_code == 503
            missing = await http.get("/nowhere")
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"
        await ingress.stop()
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient(base_url=url) as http:
                await http.post("/endpoints/e/predict", json=body)

    asyncio.run(scenario())
    deployment.retire()


def test_load_counts_requests_in_flight_in_full_batches(yard: Any) -> None:
    deployment = yard.deployment(yard.version("m:1"))
    config = DirectConfig.of("e", yard.settings, (30000, 31000))
    ingress = DirectIngress(config, deployment, DeploymentSpec.from_dict({"max_batch_size": 8}))
    app: Any = ingress.app()

    async def scenario() -> None:
        ingress.view.refresh()
        ingress.access.refresh()
        arrived = asyncio.Event()
        release = asyncio.Event()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            arrived.set()
            await release.wait()  # the body is still on its way
            return {"type": "http.request", "body": b'{"inputs": [[1, 2, 3]]}',
                    "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/endpoints/e/predict",
                 "headers": [(b"content-type", b"application/json")], "query_string": b""}
        call = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(arrived.wait(), 10)
        assert ingress.in_flight == 1 and ingress.load() == 1 / 8
        release.set()
        await asyncio.wait_for(call, 10)
        assert sent[0]["status"] == 200
        assert ingress.in_flight == 0 and ingress.load() == 0.0

    asyncio.run(scenario())
    deployment.retire()
