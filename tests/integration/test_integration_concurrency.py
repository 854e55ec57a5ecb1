"""Concurrency over real HTTP: parallel registrations number versions uniquely and without
gaps, parallel creates of one endpoint give one winner and clean 409s, and traffic keeps
flowing while the alias behind an endpoint moves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from modelyard import Client, Yard
from modelyard.serving.server import BackgroundServer
from modelyard.store.archive import pack_to_file
from support import API, assert_problem, wait_until_serving

Data = tuple[np.ndarray, np.ndarray, np.ndarray]
WORKERS = 8


@pytest.fixture
def http(server: BackgroundServer, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"authorization": f"Bearer {admin_key}"}) as c:
        yield c


def _uploaded_skops(http: httpx.Client, model: LogisticRegression, tmp: Path) -> str:
    folder = tmp / "m"
    folder.mkdir()
    sio.dump(model, folder / "model.skops")
    archive, digest, _ = pack_to_file(folder, tmp)
    response = http.post(f"{API}/artifacts", params={"sha256": digest},
                         content=archive.read_bytes())
    assert response.status_code == 201, response.text
    return str(response.json()["sha256"])


@pytest.mark.parametrize("model_exists", [True, False], ids=["existing", "new"])
def test_parallel_registrations_get_unique_versions(
    http: httpx.Client, server: BackgroundServer, admin_key: str, tmp_path: Path,
    classifier: LogisticRegression, tabular: Data, model_exists: bool,
) -> None:
    digest = _uploaded_skops(http, classifier, tmp_path)
    rows = tabular[0][:3]
    body = {"artifact": digest, "sample": [{"name": "input", "datatype": "FP32",
                                            "shape": [3, 4],
                                            "data": rows.reshape(-1).tolist()}]}
    if model_exists:
        assert http.post(f"{API}/models/churn/versions", json=body).status_code == 201
    barrier = threading.Barrier(WORKERS)

    def register(i: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60,
                          headers={"authorization": f"Bearer {admin_key}"}) as c:
            barrier.wait()
            return c.post(f"{API}/models/churn/versions",
                          json={**body, "description": f"worker {i}"})

    with ThreadPoolExecutor(WORKERS) as pool:
        responses = list(pool.map(register, range(WORKERS)))
    assert [r.status_code for r in responses] == [201] * WORKERS, \
        [r.text for r in responses if r.status_code != 201]
    numbers = sorted(r.json()["version"] for r in responses)
    first = 2 if model_exists else 1
    assert numbers == list(range(first, first + WORKERS))
    listed = http.get(f"{API}/models/churn/versions").json()
    assert [v["version"] for v in listed] == list(range(1, first + WORKERS))


def test_traffic_keeps_flowing_while_the_alias_moves(
    client: Client, server: BackgroundServer, classifier: LogisticRegression,
    tabular: Data,
) -> None:
    x, label, _ = tabular
    other = LogisticRegression(C=0.01).fit(x, label)
    client.register("churn", classifier, sample=x[:5])
    client.register("churn", other, sample=x[:5], to_onnx=True)
    client.set_alias("churn", "champion", 1)
    client.create_endpoint("churn", "churn@champion", auth="public")
    client.wait_ready("churn")

    stop = threading.Event()
    seen: list[tuple[int, str]] = []
    bodies: list[str] = []

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/endpoints/churn/predict", json={"inputs": x[:4].tolist()})
                seen.append((r.status_code, r.headers.get("modelyard-model-version", "")))
                if r.status_code != 200:
                    bodies.append(r.text)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for target in (2, 1, 2):
            client.set_alias("churn", "champion", target)
            deadline = time.monotonic() + 30
            while not seen or seen[-1][1] != f"churn:{target}":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(seen) > 20
    # The one refusal known today is test_request_in_flight_survives_an_alias_move's bug;
    # anything else (a 404, a 500, a 503 of another kind) fails here.
    unexpected = [b for b in bodies if '"overloaded"' not in b or "being replaced" not in b]
    assert unexpected == []
    assert {status for status, _ in seen} <= {200, 503}
    assert {ref for _, ref in seen} == {"churn:1", "churn:2"}


def test_parallel_creates_of_one_endpoint_give_one_winner(
    server: BackgroundServer, admin_key: str, yard: Yard, classifier: LogisticRegression,
    tabular: Data,
) -> None:
    yard.register("churn", classifier, sample=tabular[0][:5])
    barrier = threading.Barrier(WORKERS)

    def create(i: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60,
                          headers={"authorization": f"Bearer {admin_key}"}) as c:
            barrier.wait()
            return c.post(f"{API}/endpoints", json={"name": "churn", "model": "churn:1",
                                                    "description": f"worker {i}"})

    with ThreadPoolExecutor(WORKERS) as pool:
        responses = list(pool.map(create, range(WORKERS)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (WORKERS - 1), [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409, "already_exists", "name")
    assert len(yard.list_endpoints()) == 1


def test_request_in_flight_survives_an_alias_move(
    client: Client, server: BackgroundServer, classifier: LogisticRegression,
    tabular: Data,
) -> None:
    """Deterministic: the request's headers arrive, the alias moves and the new version is
    served, then the request's body arrives. It must be answered (by either version)."""
    x, label, _ = tabular
    client.register("churn", classifier, sample=x[:5])
    client.register("churn", LogisticRegression(C=0.01).fit(x, label), sample=x[:5])
    client.set_alias("churn", "champion", 1)
    client.create_endpoint("churn", "churn@champion", auth="public")
    client.wait_ready("churn")
    with httpx.Client(base_url=server.url, timeout=30) as c:  # churn:1 has taken traffic
        first = c.post("/endpoints/churn/predict", json={"inputs": x[:1].tolist()})
        assert first.headers["modelyard-model-version"] == "churn:1"
    payload = json.dumps({"inputs": x[:4].tolist()}).encode()
    headers_sent, release = threading.Event(), threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield payload[:10]
        headers_sent.set()
        release.wait(30)
        yield payload[10:]

    result: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            result.append(c.post("/endpoints/churn/predict", content=slow_body(),
                                 headers={"content-type": "application/json"}))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert headers_sent.wait(30)
        time.sleep(0.2)  # the server has the headers and is waiting for the body
        client.set_alias("churn", "champion", 2)
        with httpx.Client(base_url=server.url, timeout=30) as c:
            wait_until_serving(c, "churn", "churn:2", {"inputs": x[:1].tolist()})
        time.sleep(0.1)
    finally:
        release.set()
        sender.join(timeout=60)
    (response,) = result
    assert response.status_code == 200, response.text
    assert response.headers["modelyard-model-version"] in {"churn:1", "churn:2"}
