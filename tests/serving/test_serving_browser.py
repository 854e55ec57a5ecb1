"""Browser-style cross-origin requests cannot change anything (any method), and every answer
carries the security headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelyard import Client, Yard
from modelyard.serving.server import BackgroundServer
from support import assert_problem

X = np.arange(8, dtype=np.float32).reshape(2, 4)
EVIL = "https://evil.example"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def admin(server: BackgroundServer, admin_key: str, client: Client, yard: Yard
          ) -> Iterator[httpx.Client]:
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X)
    client.create_endpoint("open", "echo", auth="public")
    client.wait_ready("open")
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"authorization": f"Bearer {admin_key}"}) as http:
        yield http


@pytest.mark.parametrize("method,path,body", [
    ("DELETE", "/api/v1/endpoints/open", None),
    ("PATCH", "/api/v1/endpoints/open", {"description": "pwned"}),
    ("PUT", "/api/v1/models/echo/aliases/production", {"version": 1}),
    ("POST", "/api/v1/keys", {"owner": "mallory", "roles": ["admin"]}),
    ("POST", "/api/v1/models/echo/versions/1/archive", None),
])
@pytest.mark.parametrize("headers", [{"origin": EVIL}, {"sec-fetch-site": "cross-site"},
                                     {"origin": "null"}, {"sec-fetch-site": "same-site"}])
def test_cross_origin_changes_are_refused_with_a_valid_key(
        admin: httpx.Client, yard: Yard, method: str, path: str, body: object,
        headers: dict[str, str]) -> None:
    keys_before = len(yard.list_keys())
    refused = admin.request(method, path, json=body, headers=headers)
    assert_problem(refused, 403, "cross_origin", "origin")
    assert yard.endpoint("open").description == ""
    assert "production" not in yard.model("echo").aliases
    assert yard.version("echo:1").status == "active"
    assert len(yard.list_keys()) == keys_before
    assert yard.audit_verify()["ok"]


def test_same_origin_and_non_browser_changes_pass(admin: httpx.Client,
                                                  server: BackgroundServer) -> None:
    own = server.url.rstrip("/")
    assert admin.patch("/api/v1/endpoints/open", json={"description": "a"},
                       headers={"origin": own, "sec-fetch-site": "same-origin"}
                       ).status_code == 200
    assert admin.patch("/api/v1/endpoints/open", json={"description": "b"}).status_code == 200


def test_reads_and_inference_stay_open_to_other_origins(admin: httpx.Client) -> None:
    assert admin.get("/api/v1/models", headers={"origin": EVIL}).status_code == 200
    with httpx.Client(base_url=str(admin.base_url)) as browser:
        answer = browser.post("/endpoints/open/predict", json={"inputs": X.tolist()},
                              headers={"origin": EVIL, "sec-fetch-site": "cross-site"})
    assert answer.status_code == 200


def test_allowed_origins_may_change(yard: Yard, admin_key: str, admin: httpx.Client) -> None:
    yard.settings = yard.settings.with_(allowed_origins="https://ops.example.com, ")
    with BackgroundServer(yard) as other, httpx.Client(
            base_url=other.url, headers={"authorization": f"Bearer {admin_key}"}) as http:
        ok = http.patch("/api/v1/endpoints/open", json={"description": "ops"},
                        headers={"origin": "https://ops.example.com"})
        assert ok.status_code == 200
        assert_problem(http.patch("/api/v1/endpoints/open", json={"description": "x"},
                                  headers={"origin": EVIL}), 403, "cross_origin")


def test_answers_carry_security_headers(admin: httpx.Client) -> None:
    for response in (admin.get("/api/v1/models"), admin.get("/api/v1/models/nope"),
                     admin.get("/healthz")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
    # The interactive docs load scripts from a CDN: off unless the api_docs setting asks.
    assert admin.get("/docs").status_code == 404
    assert admin.get("/redoc").status_code == 404
    assert admin.get("/openapi.json").status_code == 200


def test_the_interactive_api_docs_come_with_the_setting(yard: Yard) -> None:
    docs_on = Yard(settings=yard.settings.with_(api_docs=True))
    try:
        with BackgroundServer(docs_on) as srv, httpx.Client(base_url=srv.url) as http:
            page = http.get("/docs")
            assert page.status_code == 200 and "swagger" in page.text.lower()
            assert page.headers["x-frame-options"] == "DENY"
            assert http.get("/redoc").status_code == 200
    finally:
        docs_on.close()
