"""Free text is bounded (decision record 0028) and grants name projects that exist: over the
real server (httpx and the SDK), each refusal is 422 ``validation_failed`` naming the field,
and a refused write leaves nothing behind (no version, no change, no audit record).

The shared yard holds ``churn:1`` (alias ``champion``, endpoint ``churn``); tests here add
their own models, endpoints and keys under names of their own.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Client
from modelyard.domain import errors
from support import API, Shared, assert_problem, sample_tensor

Data = tuple[np.ndarray, np.ndarray, np.ndarray]
LONG = "x" * 10_001


def _register(api: httpx.Client, name: str, rows: Any, **fields: Any) -> httpx.Response:
    digest = api.get(f"{API}/models/churn/versions/1").json()["artifact"]["sha256"]
    return api.post(f"{API}/models/{name}/versions",
                    json={"artifact": digest, "sample": sample_tensor(rows), **fields})


def _audited(api: httpx.Client) -> str:
    return api.get(f"{API}/audit", params={"limit": 100_000}).text


# -- point 1: lengths ------------------------------------------------------------------------

@pytest.mark.parametrize("fields,field", [
    ({"description": LONG}, "description"),
    ({"tags": {"k" * 129: "v"}}, "tags"),
    ({"tags": {"team": "v" * 513}}, "tags.team"),
    ({"tags": {f"t{i}": "v" for i in range(101)}}, "tags"),
    ({"params": {"C": "p" * 6_001}}, "params.C"),
    ({"params": {"grid": list(range(2_000))}}, "params.grid"),  # 6,000+ as JSON
    ({"params": {"p" * 251: 1}}, "params"),
    ({"metrics": {"m" * 251: 0.5}}, "metrics"),
    ({"code_revision": "c" * 1_001}, "code_revision"),
    ({"data_fingerprint": "s" * 1_001}, "data_fingerprint"),
], ids=["description", "tag-key", "tag-value", "tag-count", "param-value", "param-json",
        "param-key", "metric-name", "code-revision", "data-fingerprint"])
def test_registration_text_over_the_limit_is_422_and_stores_nothing(
        shared_api: httpx.Client, tabular: Data, fields: dict[str, Any], field: str) -> None:
    before = _audited(shared_api)
    assert_problem(_register(shared_api, "limited", tabular[0][:3], **fields),
                   422, "validation_failed", field)
    assert_problem(shared_api.get(f"{API}/models/limited"), 404, "model_not_found")
    assert _audited(shared_api) == before


def test_registration_text_at_the_limits_is_stored(shared_api: httpx.Client,
                                                  tabular: Data) -> None:
    """Exactly at each limit is accepted, on PostgreSQL too (a 600-character tag value was a
    500 there: the column holds 512)."""
    fields = {"description": "d" * 10_000, "tags": {"k" * 128: "v" * 512},
              "params": {"p" * 250: "x" * 6_000}, "code_revision": "c" * 1_000}
    answer = _register(shared_api, "at-limits", tabular[0][:3], **fields)
    assert answer.status_code == 201, answer.text
    stored = shared_api.get(f"{API}/models/at-limits/versions/1").json()
    assert stored["description"] == fields["description"]
    assert stored["lineage"]["tags"] == fields["tags"]
    assert stored["lineage"]["params"] == fields["params"]
    found = shared_api.get(f"{API}/versions", params={"tag": f"{'k' * 128}={'v' * 512}"})
    assert [v["model"] for v in found.json()] == ["at-limits"]


def test_endpoint_and_project_descriptions_are_bounded(shared_api: httpx.Client) -> None:
    before = _audited(shared_api)
    assert_problem(shared_api.post(f"{API}/endpoints", json={
        "name": "long-desc", "model": "churn:1", "description": LONG}),
        422, "validation_failed", "description")
    assert_problem(shared_api.get(f"{API}/endpoints/long-desc"), 404, "endpoint_not_found")
    assert_problem(shared_api.patch(f"{API}/endpoints/churn", json={"description": LONG}),
                   422, "validation_failed", "description")
    assert_problem(shared_api.post(f"{API}/projects", json={
        "name": "long-desc", "description": LONG}), 422, "validation_failed", "description")
    assert_problem(shared_api.get(f"{API}/projects/long-desc"), 404, "project_not_found")
    assert shared_api.get(f"{API}/endpoints/churn").json()["description"] != LONG
    assert _audited(shared_api) == before
    at_limit = shared_api.patch(f"{API}/endpoints/churn", json={"description": "e" * 10_000})
    assert at_limit.status_code == 200 and at_limit.json()["description"] == "e" * 10_000


def test_a_graph_description_is_bounded(shared_api: httpx.Client) -> None:
    graph = {"graph": "g", "description": LONG,
             "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
             "nodes": {"a": {"kind": "model", "model": "churn:1",
                             "inputs": {"input": "inputs.input"}}},
             "outputs": {"label": "a.label"}}
    checked = shared_api.post(f"{API}/graphs/validate", json=graph).json()
    assert not checked["ok"] and [p["path"] for p in checked["problems"]] == ["description"]
    body = assert_problem(shared_api.post(f"{API}/endpoints", json={"name": "g",
                                                                    "graph": graph}),
                          422, "graph_invalid")
    assert [p["path"] for p in body["problems"]] == ["description"]


def test_card_owners_are_bounded(shared_api: httpx.Client) -> None:
    card = f"{API}/models/churn/versions/1/card"
    before = shared_api.get(card).json()["card"]
    assert_problem(shared_api.patch(card, json={"owners": ["ok", "o" * 257]}),
                   422, "validation_failed", "card.owners[1]")
    assert_problem(shared_api.patch(card, json={"owners": [f"o{i}" for i in range(101)]}),
                   422, "validation_failed", "card.owners")
    assert_problem(shared_api.patch(card, json={"limitations": "l" * 20_001}),
                   422, "validation_failed", "card.limitations")
    assert shared_api.get(card).json()["card"] == before


def test_the_sdk_hears_the_limit_with_its_field(shared: Shared, tabular: Data,
                                                classifier: LogisticRegression) -> None:
    unreferenced = shared.yard.collect_garbage(min_age_s=0)
    with Client(shared.url, shared.admin_key) as client:
        with pytest.raises(errors.ValidationFailed) as refused:
            client.register("sdk-limited", classifier, sample=tabular[0][:3],
                            tags={"team": "v" * 513})
        assert refused.value.field == "tags.team"
        assert shared.yard.collect_garbage(min_age_s=0) == unreferenced  # nothing uploaded
        with pytest.raises(errors.ValidationFailed) as refused:
            client.update_endpoint("churn", description=LONG)
        assert refused.value.field == "description"
    with pytest.raises(errors.ValidationFailed) as local:  # in-process: the same check
        shared.yard.register("sdk-limited", "modelyard.testing.models:Echo", flavor="python",
                             trusted=True, sample=tabular[0][:3], description=LONG)
    assert local.value.field == "description"


# -- point 3: grants name projects that exist ------------------------------------------------

def test_a_grant_in_an_unknown_project_is_422(shared_api: httpx.Client) -> None:
    keys_before = len(shared_api.get(f"{API}/keys").json())
    before = _audited(shared_api)
    for roles, field in ((["predictor@nonexistent"], "roles[0]"),
                         (["viewer", "developer@default", "approver@fruad"], "roles[2]")):
        body = assert_problem(shared_api.post(f"{API}/keys", json={"owner": "svc",
                                                                   "roles": roles}),
                              422, "validation_failed", field)
        assert "does not exist" in body["detail"]
    assert len(shared_api.get(f"{API}/keys").json()) == keys_before
    assert _audited(shared_api) == before
    # Once the project exists, the same grant is fine; yard-wide and default grants always.
    assert shared_api.post(f"{API}/projects", json={"name": "fruad"}).status_code == 201
    made = shared_api.post(f"{API}/keys", json={
        "owner": "svc", "roles": ["viewer", "developer@default", "approver@fruad"]})
    assert made.status_code == 201, made.text
    assert made.json()["roles"] == ["approver@fruad", "developer@default", "viewer"]
