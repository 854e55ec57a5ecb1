"""Body size limits on a server built with a small ``max_body_bytes`` (fast to exceed)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator

import httpx
import pytest

from support import Shared, assert_problem, server_with

LIMIT = 4096
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def small(shared: Shared) -> Iterator[httpx.Client]:
    """A second server over the shared yard whose request bodies may be at most LIMIT bytes
    (endpoint ``churn`` is loaded at start-up)."""
    with server_with(shared, max_body_bytes=LIMIT) as c:
        yield c


def _big_json() -> bytes:
    body = b'{"inputs": [' + b"[0.0, 0.0, 0.0, 0.0]," * 400 + b"[0.0, 0.0, 0.0, 0.0]]}"
    assert len(body) > LIMIT
    return body


def test_small_body_is_served(small: httpx.Client) -> None:
    response = small.post("/endpoints/churn/predict", json={"inputs": [[0.0] * 4] * 10})
    assert response.status_code == 200, response.text


def test_declared_length_over_limit_is_413(small: httpx.Client) -> None:
    response = small.post("/endpoints/churn/predict", content=_big_json(), headers=JSON)
    body = assert_problem(response, 413, "payload_too_large")
    assert str(LIMIT) in body["detail"]


def test_streamed_body_over_limit_is_413(small: httpx.Client) -> None:
    """No Content-Length (chunked): the limit is enforced while counting."""
    data = _big_json()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 512):
            yield data[i:i + 512]

    response = small.post("/endpoints/churn/predict", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


def test_oip_body_over_limit_is_413_with_error_member(small: httpx.Client) -> None:
    tensor = {"name": "input", "datatype": "FP32", "shape": [400, 4], "data": [0.0] * 1600}
    response = small.post("/v2/models/churn/infer", json={"inputs": [tensor]})
    assert_problem(response, 413, "payload_too_large")


def test_control_plane_json_over_limit_is_413(small: httpx.Client) -> None:
    response = small.post("/api/v1/endpoints",
                          json={"name": "big", "model": "churn", "description": "x" * LIMIT})
    assert_problem(response, 413, "payload_too_large")
    assert small.get("/api/v1/endpoints/big").status_code == 404


def test_artifact_uploads_have_their_own_larger_limit(small: httpx.Client) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        payload = bytes(range(256)) * 64  # 16 KiB, four times the JSON limit
        info = tarfile.TarInfo("model.onnx")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    data = buffer.getvalue()
    assert len(data) > LIMIT
    response = small.post("/api/v1/artifacts",
                          params={"sha256": hashlib.sha256(data).hexdigest()}, content=data,
                          headers={"content-type": "application/x-tar"})
    assert response.status_code == 201, response.text
