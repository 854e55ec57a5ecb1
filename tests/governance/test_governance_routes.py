"""No route is left unguarded: every route of the app is in the policy table, the docs table
is current, and every route answers a key of every role as the table says."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard import Client, Yard
from modelyard.control.api import PUBLIC_ROUTES, ROUTE_ACTIONS
from modelyard.control.routes_doc import render
from modelyard.governance.policy import ACTIONS, ROLES
from modelyard.serving.server import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


def app_routes(server: BackgroundServer) -> set[tuple[str, str]]:
    """Every (method, path) the app answers: the OpenAPI document (all control-plane routes)
    plus the plain routes mounted beside it."""
    app = server.server.config.app
    out = {(method.upper(), path) for path, ops in app.openapi()["paths"].items()
           for method in ops}
    for route in app.routes:
        path = getattr(route, "path", None)
        for method in getattr(route, "methods", None) or ():
            if path is not None and method not in ("HEAD", "OPTIONS"):
                out.add((method, path))
    return out


def test_every_route_is_in_the_policy_table(server: BackgroundServer) -> None:
    routes = app_routes(server)
    unguarded = {r for r in routes if r not in ROUTE_ACTIONS and r[1] not in PUBLIC_ROUTES}
    assert not unguarded, f"routes with no entry in ROUTE_ACTIONS: {sorted(unguarded)}"
    stale = set(ROUTE_ACTIONS) - routes
    assert not stale, f"ROUTE_ACTIONS names routes that do not exist: {sorted(stale)}"
    assert all(action in ACTIONS for action in ROUTE_ACTIONS.values())


def test_the_docs_table_is_current() -> None:
    assert (ROOT / "docs" / "security" / "routes.md").read_text() == render(), \
        "run: python -m modelyard.control.routes_doc > docs/security/routes.md"


def _archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return buffer.getvalue()


def request_for(method: str, path: str) -> dict[str, Any]:
    """A well-formed request naming things that do not exist: an allowed caller gets past the
    policy and meets a 404 (or a harmless success), a refused one gets 403."""
    filled = (path.replace("{name}", "ghost").replace("{version}", "7")
              .replace("{alias}", "nobody").replace("{digest}", "0" * 64)
              .replace("{prefix}", "my_000000000000").replace("{approval_id}", "4242")
              .replace("{rollout_id}", "4242").replace("{job_id}", "4242")
              .replace("{cycle_id}", "4242").replace("{model}", "ghost"))
    kwargs: dict[str, Any] = {"method": method, "url": filled}
    if path.endswith("/artifacts") and method == "POST":
        data = _archive()
        kwargs.update(content=data, params={"sha256": hashlib.sha256(data).hexdigest()})
    elif path.endswith("/versions") and method == "POST":
        kwargs["json"] = {"artifact": "0" * 64}
    elif path.endswith("/endpoints") and method == "POST":
        kwargs["json"] = {"name": "ghost-endpoint", "model": "ghost"}
    elif path.endswith("/traffic") and method == "PUT":
        kwargs["json"] = {"split": [{"model": "ghost:1", "weight": 100}]}
    elif method == "PATCH":
        kwargs["json"] = {"description": "x"}
    elif path.endswith("/monitor") and method == "PUT":
        kwargs["json"] = {"spec": {"window_s": 600}}
    elif path.endswith("/profile") and method == "PUT":
        kwargs["json"] = {"columns": {"input": [[1.0]]}}
    elif method == "PUT":
        kwargs["json"] = {"version": 1}
    elif path.endswith("/rollouts") and method == "POST":
        kwargs["json"] = {"endpoint": "ghost", "spec": {"target": "ghost:2"}}
    elif path.endswith("/jobs") and method == "POST":
        kwargs["json"] = {"kind": "ghost"}
    elif path.endswith("/graphs/validate"):
        kwargs["json"] = {"inputs": [], "nodes": {}, "outputs": {}}
    elif path.endswith("/projects") and method == "POST":
        kwargs["json"] = {"name": "ghost-project"}
    elif path.endswith("/signatures") and method == "POST":
        kwargs["json"] = {"key_id": "0" * 16, "algorithm": "ed25519", "signature": "AA=="}
    elif path.endswith("/keys") and method == "POST":
        kwargs["json"] = {"owner": "matrix", "roles": ["viewer"]}
    return kwargs


@pytest.fixture
def role_keys(client: Client) -> Iterator[dict[str, str]]:
    yield {role: client.create_key(f"role-{role}", [role])["key"] for role in ROLES}


def test_every_route_for_every_role(server: BackgroundServer, role_keys: dict[str, str],
                                    yard: Yard) -> None:
    wrong: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for (method, path), action in sorted(ROUTE_ACTIONS.items()):
            for role in ROLES:
                response = http.request(**request_for(method, path),
                                        headers={"authorization": f"Bearer {role_keys[role]}"})
                allowed = role in ACTIONS[action]
                if allowed and response.status_code in (401, 403):
                    wrong.append(f"{role} refused {method} {path}: {response.status_code}")
                if not allowed and response.status_code != 403:
                    wrong.append(f"{role} not refused {method} {path}: "
                                 f"{response.status_code} {response.text[:120]}")
                assert response.status_code < 500, (method, path, role, response.text)
    assert not wrong, "\n".join(wrong)
    assert yard.audit_verify()["ok"]  # every refusal above went into an intact chain


def test_no_guarded_route_answers_without_credentials(server: BackgroundServer,
                                                      yard: Yard) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for method, path in sorted(ROUTE_ACTIONS):
            response = anonymous.request(**request_for(method, path))
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert yard.audit_verify()["ok"]
