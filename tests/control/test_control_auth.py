"""Authentication and authorization over real HTTP.

The control plane needs a bearer key on every route; the data plane needs none. The OpenAPI
walk guards against a route added later without the policy check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.store import keys
from support import API, Shared, assert_problem, sha256, tar_bytes

AUTH_HEADER = 'Bearer realm="modelyard"'
WRONG_KEY = "my_000000000000.definitely-not-a-real-key"


@pytest.fixture(scope="module")
def anon_shared(shared: Shared) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.url, timeout=30) as c:
        yield c


def _key(shared: Shared, *roles: str) -> str:
    with shared.yard.db.transaction() as session:
        return keys.create(session, f"test-{'-'.join(roles)}", list(roles))


def _as(shared: Shared, key: str) -> httpx.Client:
    return httpx.Client(base_url=shared.url, timeout=30,
                        headers={"authorization": f"Bearer {key}"})


# -- 401 ----------------------------------------------------------------------------------

def test_no_key_is_401_with_challenge(anon_shared: httpx.Client) -> None:
    response = anon_shared.get(f"{API}/models")
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == AUTH_HEADER


@pytest.mark.parametrize("header", [
    f"Bearer {WRONG_KEY}",
    "Bearer my_nodot",
    "Bearer not-even-prefixed.x",
    "Bearer " + "my_" + "a" * 300,
])
def test_wrong_key_is_401(shared: Shared, header: str) -> None:
    with httpx.Client(base_url=shared.url, headers={"authorization": header}) as c:
        response = c.get(f"{API}/models")
    assert_problem(response, 401, "unauthenticated", "authorization")
    assert response.headers["www-authenticate"] == AUTH_HEADER


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Token x", "bearer"])
def test_malformed_authorization_is_401(shared: Shared, header: str) -> None:
    with httpx.Client(base_url=shared.url, headers={"authorization": header}) as c:
        response = c.get(f"{API}/models")
    assert_problem(response, 401, "unauthenticated", "authorization")
    assert response.headers["www-authenticate"] == AUTH_HEADER


def test_key_of_another_yard_is_401(shared: Shared, admin_key: str) -> None:
    """A real key, but issued by a different yard (the function-scoped one)."""
    with _as(shared, admin_key) as c:
        assert_problem(c.get(f"{API}/models"), 401, "unauthenticated", "authorization")


def test_revoked_key_is_401(shared: Shared) -> None:
    from sqlalchemy import update

    from modelyard.store.tables import ApiKeyRow, utcnow

    key = _key(shared, "admin")
    with _as(shared, key) as c:
        assert c.get(f"{API}/models").status_code == 200
        with shared.yard.db.transaction() as session:
            session.execute(update(ApiKeyRow).where(ApiKeyRow.prefix == key.split(".")[0])
                            .values(revoked_at=utcnow()))
        assert_problem(c.get(f"{API}/models"), 401, "unauthenticated", "authorization")


def test_data_plane_needs_no_key(anon_shared: httpx.Client) -> None:
    response = anon_shared.post("/endpoints/churn/predict", json={"inputs": [[0, 0, 0, 0]]})
    assert response.status_code == 200, response.text
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}
    infer = anon_shared.post("/v2/models/churn/infer", json={"inputs": [tensor]})
    assert infer.status_code == 200, infer.text
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/churn",
                 "/v2/models/churn/ready"):
        assert anon_shared.get(path).status_code == 200, path


# -- 403 ----------------------------------------------------------------------------------

def test_viewer_can_read_but_not_write(shared: Shared) -> None:
    with _as(shared, _key(shared, "viewer")) as c:
        assert c.get(f"{API}/models").status_code == 200
        assert c.get(f"{API}/endpoints/churn").status_code == 200
        assert_problem(c.put(f"{API}/models/churn/aliases/staging", json={"version": 1}),
                       403, "forbidden")
        assert_problem(c.post(f"{API}/endpoints", json={"name": "v", "model": "churn"}),
                       403, "forbidden")
        assert_problem(c.delete(f"{API}/models/churn"), 403, "forbidden")
        data = tar_bytes(("model.onnx", b"w"))
        assert_problem(c.post(f"{API}/artifacts", params={"sha256": sha256(data)},
                              content=data), 403, "forbidden")
    with _as(shared, shared.admin_key) as admin:
        assert "staging" not in admin.get(f"{API}/models/churn").json()["aliases"]
        assert admin.get(f"{API}/endpoints/v").status_code == 404


def test_predictor_role_cannot_read_the_registry(shared: Shared) -> None:
    with _as(shared, _key(shared, "predictor")) as c:
        assert_problem(c.get(f"{API}/models"), 403, "forbidden")
        assert_problem(c.get(f"{API}/endpoints"), 403, "forbidden")


def test_developer_cannot_delete_models_or_endpoints(shared: Shared) -> None:
    with _as(shared, _key(shared, "developer")) as c:
        assert_problem(c.delete(f"{API}/models/nope"), 403, "forbidden")
        assert_problem(c.delete(f"{API}/endpoints/nope"), 403, "forbidden")


# -- every route in the OpenAPI document --------------------------------------------------

def _routes(client: httpx.Client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [(method.upper(), path) for path, ops in spec["paths"].items()
            if path.startswith(API + "/") or path == API
            for method in ops if method in {"get", "post", "put", "patch", "delete"}]


def _request(shared: Shared, method: str, path: str) -> dict[str, Any]:
    """A well-formed request for a route, so that only the missing key can refuse it."""
    digest = shared.yard.version("churn:1").artifact_digest
    values = {"name": "churn", "version": "1", "alias": "champion", "digest": digest}
    url = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)
    data = tar_bytes(("model.onnx", b"w"))
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", f"{API}/models/{{name}}/versions"): {"json": {"artifact": digest}},
        ("PUT", f"{API}/models/{{name}}/aliases/{{alias}}"): {"json": {"version": 1}},
        ("POST", f"{API}/endpoints"): {"json": {"name": "fresh", "model": "churn"}},
        ("PATCH", f"{API}/endpoints/{{name}}"): {"json": {"description": "changed"}},
        ("POST", f"{API}/artifacts"): {"params": {"sha256": sha256(data)}, "content": data},
    }
    kwargs = bodies.get((method, path))
    if kwargs is None:
        kwargs = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
    return {"method": method, "url": url, **kwargs}


def test_openapi_lists_the_control_plane(anon_shared: httpx.Client) -> None:
    routes = _routes(anon_shared)
    assert len(routes) >= 18
    assert ("POST", f"{API}/artifacts") in routes
    assert ("DELETE", f"{API}/models/{{name}}") in routes


def test_no_control_route_answers_2xx_without_a_key(shared: Shared,
                                                    anon_shared: httpx.Client) -> None:
    open_routes = []
    for method, path in _routes(anon_shared):
        response = anon_shared.request(**_request(shared, method, path))
        if response.is_success:
            open_routes.append(f"{method} {path} -> {response.status_code}")
            continue
        assert response.status_code == 401, (method, path, response.text)
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == AUTH_HEADER
    assert open_routes == []
    # Nothing changed.
    with _as(shared, shared.admin_key) as admin:
        assert admin.get(f"{API}/endpoints/fresh").status_code == 404
        assert admin.get(f"{API}/models/churn").json()["latest_version"] == 1
        assert admin.get(f"{API}/endpoints/churn").json()["description"] == ""


def test_no_control_route_answers_2xx_with_a_wrong_key(shared: Shared,
                                                       anon_shared: httpx.Client) -> None:
    with _as(shared, WRONG_KEY) as c:
        for method, path in _routes(anon_shared):
            response = c.request(**_request(shared, method, path))
            assert_problem(response, 401, "unauthenticated", "authorization")
