"""Crash injection over the API: a failure between storing the artifact and committing the
metadata answers a problem+json 5xx and leaves no version behind; the next registration
works and numbers versions without a gap."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from modelyard import Client, Yard
from modelyard.client import ApiError
from modelyard.domain.errors import Conflict
from modelyard.serving.server import BackgroundServer
from modelyard.store.archive import pack_to_file
from support import API, assert_problem, sample_tensor, upload

Data = tuple[np.ndarray, np.ndarray, np.ndarray]


class Crash(RuntimeError):
    pass


def _crash() -> None:
    raise Crash("injected: the process dies before the commit")


@pytest.fixture
def crashing(yard: Yard) -> Iterator[Yard]:
    yard.registry.before_commit = _crash
    try:
        yield yard
    finally:
        yard.registry.before_commit = lambda: None


def _skops_artifact(yard: Yard, model: LogisticRegression, api: httpx.Client) -> str:
    """Upload ``model`` saved with skops; return its digest."""
    import skops.io as sio

    folder = yard.settings.home / "pack"
    folder.mkdir(exist_ok=True)
    sio.dump(model, folder / "model.skops")
    archive, _, _ = pack_to_file(folder, yard.settings.home)
    try:
        response = upload(api, archive.read_bytes())
    finally:
        archive.unlink()
    assert response.status_code == 201, response.text
    return str(response.json()["sha256"])


def test_crash_before_commit_leaves_no_version(api: httpx.Client, crashing: Yard,
                                               classifier: LogisticRegression,
                                               tabular: Data) -> None:
    digest = _skops_artifact(crashing, classifier, api)
    body = {"artifact": digest, "sample": sample_tensor(tabular[0][:3].tolist())}

    response = api.post(f"{API}/models/churn/versions", json=body)
    problem = assert_problem(response, 500, "internal_error")
    assert "injected" not in response.text  # internals stay in the log
    assert problem["instance"] == f"{API}/models/churn/versions"

    assert_problem(api.get(f"{API}/models/churn"), 404, "model_not_found")
    assert api.get(f"{API}/models").json() == []
    assert api.get(f"{API}/versions").json() == []
    # The stored archive is only an unreferenced blob.
    assert digest in crashing.registry.unreferenced_artifacts()

    crashing.registry.before_commit = lambda: None
    created = api.post(f"{API}/models/churn/versions", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    assert crashing.registry.unreferenced_artifacts() == []


def test_crash_on_a_later_version_keeps_the_earlier_ones(
    client: Client, yard: Yard, classifier: LogisticRegression,
    regressor: Ridge, tabular: Data,
) -> None:
    x = tabular[0][:3]
    client.register("churn", classifier, sample=x)
    client.set_alias("churn", "champion", 1)

    yard.registry.before_commit = _crash
    try:
        with pytest.raises(ApiError) as failed:
            client.register("churn", regressor, sample=x, tags={"try": "1"})
    finally:
        yard.registry.before_commit = lambda: None
    assert failed.value.status == 500
    assert failed.value.code == "internal_error"

    versions = client.versions("churn")
    assert [v["version"] for v in versions] == [1]
    assert client.model("churn")["latest_version"] == 1
    assert client.model("churn")["aliases"] == {"champion": 1}
    assert client.search({"try": "1"}) == []

    again = client.register("churn", regressor, sample=x, tags={"try": "2"})
    assert again["version"] == 2
    assert [v["version"] for v in client.versions("churn")] == [1, 2]


def test_domain_error_before_commit_keeps_its_status(api: httpx.Client, yard: Yard,
                                                     classifier: LogisticRegression,
                                                     tabular: Data) -> None:
    def conflict() -> None:
        raise Conflict("someone else registered first", field="name")

    digest = _skops_artifact(yard, classifier, api)
    yard.registry.before_commit = conflict
    try:
        response = api.post(f"{API}/models/churn/versions", json={
            "artifact": digest, "sample": sample_tensor(tabular[0][:3].tolist())})
    finally:
        yard.registry.before_commit = lambda: None
    assert_problem(response, 409, "conflict", "name")
    assert api.get(f"{API}/models").json() == []


def test_unhandled_error_keeps_the_connection_usable(
    server: BackgroundServer, admin_key: str, crashing: Yard, classifier: LogisticRegression,
    tabular: Data,
) -> None:
    """One raw HTTP/1.1 keep-alive connection: after the 500, the server must either keep the
    connection open or say ``Connection: close``; silently dropping it breaks clients that
    pool connections (httpx, the SDK) on their next call."""
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"authorization": f"Bearer {admin_key}"}) as api:
        digest = _skops_artifact(crashing, classifier, api)
    body = json.dumps({"artifact": digest, "sample": sample_tensor(tabular[0][:3].tolist())}
                      ).encode()
    head = (f"POST {API}/models/churn/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {admin_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(head + body)
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(65536)
        headers, _, rest = response.partition(b"\r\n\r\n")
        assert headers.startswith(b"HTTP/1.1 500"), headers
        found = re.search(rb"(?i)content-length: *(\d+)", headers)
        assert found is not None
        length = int(found.group(1))
        while len(rest) < length:
            rest += sock.recv(65536)
        assert json.loads(rest[:length])["code"] == "internal_error"
        announced_close = re.search(rb"(?i)^connection: *close", headers, re.M) is not None
        sock.settimeout(0.5)
        try:
            dropped = sock.recv(1) == b""
        except TimeoutError:
            dropped = False  # still open: fine
    assert announced_close or not dropped, "the server dropped the connection silently"
