"""Helpers shared by the end-to-end tests (imported as a plain module)."""

from __future__ import annotations

import time
from typing import Any

import httpx

PROBLEM_JSON = "application/problem+json"
API = "/api/v1"


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
    if field is not None:
        assert body.get("field") == field, body
    return body


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
