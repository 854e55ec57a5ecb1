"""Regressions from an outside-in fuzzing pass (schemathesis and hand-made requests) over the
control plane and the dashboard, on both databases:

* ids and version numbers past the store's columns were sent to PostgreSQL, which fails the
  statement ("integer out of range"): a 500 there, on the REST routes and the dashboard;
* concurrent changes of one endpoint lost each other's writes on PostgreSQL, and a change
  racing a delete was a 500; two rollouts could start on one endpoint, one key rotated at
  once made several replacements, two admins revoking each other's key at once left no
  admin key, and concurrent creates of one schedule were a 500;
* ``/openapi.json`` described 422 as FastAPI's ``HTTPValidationError`` in
  ``application/json`` while every error is sent as ``application/problem+json``
  (schemathesis: "Undocumented Content-Type" on 52 operations).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.domain.errors import Conflict, ModelyardError
from modelyard.governance.policy import Principal
from support import API, PROBLEM_JSON, Shared, assert_problem

PAST_32_BITS = 2**32
PAST_64_BITS = 10**20


@pytest.mark.parametrize("method, path", [
    ("GET", f"/rollouts/{PAST_32_BITS}"),
    ("POST", f"/rollouts/{PAST_32_BITS}/pause"),
    ("POST", f"/rollouts/{PAST_32_BITS}/abort"),
    ("GET", f"/approvals/{PAST_32_BITS}"),
    ("POST", f"/approvals/{PAST_32_BITS}/approve"),
    ("POST", f"/approvals/{PAST_32_BITS}/cancel"),
    ("POST", f"/models/churn/versions/{PAST_32_BITS}/archive"),
    ("GET", f"/models/churn/versions/{PAST_32_BITS}/signatures"),
    ("GET", f"/models/churn/versions/{PAST_32_BITS}/profile"),
    ("GET", "/models/churn/versions/0"),
    # past 64 bits: SQLite cannot bind it either (schemathesis' stateful phase found this)
    ("POST", f"/models/churn/versions/{PAST_64_BITS}/signatures"),
])
def test_ids_past_their_columns_are_422(shared_api: httpx.Client, method: str,
                                        path: str) -> None:
    body = {"algorithm": "ed25519", "key_id": "k", "signature": "AAAA"} \
        if path.endswith("/signatures") else None
    problem = assert_problem(shared_api.request(method, API + path, json=body), 422,
                             "validation_failed")
    assert problem["field"].startswith("path."), problem


def test_an_alias_to_a_version_past_its_column_is_422_and_moves_nothing(
        shared_api: httpx.Client) -> None:
    assert_problem(shared_api.put(f"{API}/models/churn/aliases/qa",
                                  json={"version": PAST_32_BITS}),
                   422, "validation_failed", "version")
    assert "qa" not in shared_api.get(f"{API}/models/churn/aliases").json()["aliases"]


def _log_in(http: httpx.Client, shared: Shared) -> None:
    """Log ``http`` in to /ui with the admin key."""
    token = _csrf(http.get("/ui/login").text)
    answer = http.post("/ui/login", data={"key": shared.admin_key, "csrf": token})
    assert answer.status_code == 303, answer.text


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_the_dashboard_refuses_ids_past_their_columns(shared: Shared) -> None:
    with httpx.Client(base_url=shared.url, timeout=30) as http:
        _log_in(http, shared)
        csrf = _csrf(http.get("/ui/keys").text)
        for method, path in (("GET", f"/ui/rollouts/{PAST_32_BITS}"),
                             ("POST", f"/ui/rollouts/{PAST_32_BITS}/pause"),
                             ("POST", f"/ui/approvals/{PAST_32_BITS}/approve"),
                             ("GET", f"/ui/jobs/{PAST_64_BITS}"),
                             ("GET", f"/ui/jobs?before={PAST_64_BITS}")):
            answer = http.request(method, path, data={"csrf": csrf} if method == "POST" else None)
            assert answer.status_code in (400, 422), (path, answer.status_code, answer.text[:200])
            assert answer.headers["content-type"].startswith("text/html")


def test_the_openapi_document_describes_errors_as_sent(shared_api: httpx.Client) -> None:
    document = shared_api.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "Problem" in schemas
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert len(operations) >= 50
    for op in operations:
        for status in ("422", "default"):
            if status == "422" and status not in op["responses"]:
                continue
            content = op["responses"][status]["content"]
            assert list(content) == [PROBLEM_JSON], (op["operationId"], status)
            assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
    # What is sent matches what is described.
    answer = shared_api.get(f"{API}/rollouts/0")
    problem = assert_problem(answer, 422, "validation_failed")
    described: dict[str, Any] = schemas["Problem"]
    assert set(described["required"]) <= set(problem)
    assert set(problem) <= set(described["properties"])


def test_concurrent_endpoint_changes_are_all_kept(shared: Shared,
                                                  shared_api: httpx.Client) -> None:
    """Each change reads the endpoint and writes it back (generation + 1, merged deployment
    settings): on PostgreSQL, concurrent ones overwrote each other (20 updates left the
    generation at 3), and one racing a delete was a 500 (StaleDataError), not a 404."""
    created = shared_api.post(f"{API}/endpoints", json={"name": "racy", "model": "churn:1"})
    assert created.status_code == 201, created.text
    settings = {"max_batch_size": 7, "max_queue_delay_ms": 3.0, "max_queue_size": 77,
                "replicas": 2, "cache_max_entries": 5, "cache_ttl_s": 30.0}

    def change(item: tuple[str, Any]) -> int:
        with httpx.Client(base_url=shared.url, timeout=60, headers=shared_api.headers) as c:
            return c.patch(f"{API}/endpoints/racy",
                           json={"deployment": dict([item])}).status_code

    with ThreadPoolExecutor(len(settings)) as pool:
        assert set(pool.map(change, settings.items())) == {200}
    endpoint = shared_api.get(f"{API}/endpoints/racy").json()
    assert endpoint["generation"] == 1 + len(settings)
    assert {k: endpoint["deployment"][k] for k in settings} == settings

    def traffic_or_delete(i: int) -> int:
        with httpx.Client(base_url=shared.url, timeout=60, headers=shared_api.headers) as c:
            if i % 3 == 0:
                return c.delete(f"{API}/endpoints/racy").status_code
            return c.put(f"{API}/endpoints/racy/traffic",
                         json={"split": [{"model": "churn:1", "weight": 100}]}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(traffic_or_delete, range(9)))
    assert set(statuses) <= {200, 204, 404} and statuses.count(204) == 1, statuses
    assert shared_api.get(f"{API}/audit/verify").json()["ok"] is True


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` on threads released together; each one's result or exception."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except ModelyardError as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_two_admins_revoking_each_other_at_once_keep_one_admin_key(yard: Yard) -> None:
    """Each counted the other's key as the remaining admin: PostgreSQL was left with no
    admin key (19 rounds in 20)."""
    for round_ in range(5):
        active = _active_admins(yard)
        while len(active) < 2:
            yard.create_key(f"admin-{round_}-{len(active)}", ["admin"])
            active = _active_admins(yard)
        first, second = active[0], active[1]
        results = _at_once([
            lambda p=first: yard.access.revoke(Principal("a", frozenset({"admin"})), p),
            lambda p=second: yard.access.revoke(Principal("b", frozenset({"admin"})), p)])
        if len(active) == 2:
            assert sum(isinstance(r, Conflict) for r in results) == 1, results
        assert _active_admins(yard)


def _active_admins(yard: Yard) -> list[str]:
    return [k["prefix"] for k in yard.list_keys()
            if "admin" in k["roles"] and k["revoked_at"] is None]


def test_rotating_one_key_at_once_makes_one_replacement(yard: Yard) -> None:
    prefix = yard.create_key("rotated", ["viewer"])["prefix"]
    admin = Principal("a", frozenset({"admin"}))
    results = _at_once([lambda: yard.access.rotate(admin, prefix) for _ in range(4)])
    assert sum(isinstance(r, dict) for r in results) == 1, results
    assert len([k for k in yard.list_keys()
                if k["owner"] == "rotated" and k["revoked_at"] is None]) == 1


def test_starting_two_rollouts_at_once_starts_one(yard: Yard, tabular: Any) -> None:
    x, label, _ = tabular
    for c in (1.0, 0.1):
        yard.register("churn", LogisticRegression(C=c).fit(x, label), sample=x[:4])
    yard.create_endpoint("churn", "churn:1")
    spec = {"target": "churn:2", "strategy": "canary",
            "steps": [{"weight": 10, "duration_s": 600}]}
    results = _at_once([lambda: yard.start_rollout("churn", spec) for _ in range(4)])
    assert sum(isinstance(r, dict) for r in results) == 1, results
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict))
    assert len([r for r in yard.rollouts_of("churn") if r["status"] == "running"]) == 1


def test_putting_one_new_schedule_at_once_replaces_instead_of_failing(yard: Yard) -> None:
    """"Create or replace": concurrent creates of one name were IntegrityErrors (500)."""
    results = _at_once([lambda i=i: yard.set_schedule(
        "nightly", f"{i} 3 * * *", "monitor", {"endpoint": "churn"}) for i in range(4)])
    assert not [r for r in results if isinstance(r, Exception)], results
    assert [s.name for s in yard.list_schedules()] == ["nightly"]
