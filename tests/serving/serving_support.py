"""Helpers shared by the data-plane tests (imported as a plain module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings

PROBLEM_JSON = "application/problem+json"


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
