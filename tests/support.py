"""Helpers shared by the tests (imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings

PROBLEM_JSON = "application/problem+json"
API = "/api/v1"


@dataclass
class Shared:
    settings: Settings
    yard: Yard
    admin_key: str
    server: BackgroundServer

    @property
    def url(self) -> str:
        return self.server.url


def assert_problem(response: httpx.Response, status: int, code: str,
                   field: str | None = None) -> dict[str, Any]:
    """Check an RFC 9457 problem+json answer and return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    media = response.headers.get("content-type", "").split(";")[0].strip()
    assert media == PROBLEM_JSON, (media, response.text)
    body = response.json()
    assert isinstance(body, dict)
    assert body["status"] == status
    assert body["code"] == code, body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert str(body.get("type", "")).endswith(code), body
    if field is not None:
        assert body.get("field") == field, body
    if response.request.url.path.startswith("/v2"):
        # OIP v2 clients read the message from "error".
        assert isinstance(body.get("error"), str) and body["error"], body
    return body


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes(*members: tuple[str, bytes] | tarfile.TarInfo, gz: bool = False) -> bytes:
    """A tar archive from (name, content) pairs and ready-made TarInfo entries (links)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, content = member
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def link(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def zip_bytes(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members:
            zf.writestr(name, content)
    return buffer.getvalue()


def upload(http: httpx.Client, data: bytes, digest: str | None = None) -> httpx.Response:
    return http.post(f"{API}/artifacts", params={"sha256": digest or sha256(data)},
                     content=data, headers={"content-type": "application/x-tar"})


def sample_tensor(rows: Any) -> list[dict[str, Any]]:
    """Rows of floats as the one-tensor ``sample`` a registration request carries."""
    flat = [float(v) for row in rows for v in row]
    return [{"name": "input", "datatype": "FP32", "shape": [len(rows), len(rows[0])],
             "data": flat}]


def wait_until_serving(http: httpx.Client, endpoint: str, ref: str, body: dict[str, Any],
                       timeout_s: float = 30.0) -> httpx.Response:
    """POST predictions until the ``modelyard-model-version`` header names ``ref``."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = http.post(f"/endpoints/{endpoint}/predict", json=body)
        assert response.status_code == 200, response.text
        if response.headers["modelyard-model-version"] == ref:
            return response
        assert time.monotonic() < deadline, f"{endpoint} still serves " \
            f"{response.headers['modelyard-model-version']}, not {ref}"
        time.sleep(0.05)


@contextlib.contextmanager
def server_with(shared: Shared, **settings: Any) -> Iterator[httpx.Client]:
    """A second server over the shared yard with some settings changed, and an admin client."""
    limited = Yard(settings=shared.settings.with_(**settings))
    try:
        with BackgroundServer(limited) as srv, httpx.Client(
            base_url=srv.url, timeout=30,
            headers={"authorization": f"Bearer {shared.admin_key}"},
        ) as c:
            yield c
    finally:
        limited.close()
