"""Feedback names versions that exist: an outcome or a late label for ``churn:99`` is 422
naming the item's ``version``, and the batch it came in stores nothing (over the real
server, with httpx and the SDK).

The shared yard serves ``churn:1`` on the public endpoint ``churn``; this module adds
``churn:2`` (archived: late outcomes for it still count) and a graph endpoint ``g``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Client
from modelyard.domain import errors
from modelyard.store import feedback as feedback_repo
from support import Shared, assert_problem

Data = tuple[np.ndarray, np.ndarray, np.ndarray]


def stored(shared: Shared, endpoint: str, version: str) -> list[float]:
    with shared.yard.db.transaction() as session:
        return feedback_repo.values(session, endpoint, version,
                                    datetime.now(UTC) - timedelta(hours=1))


@pytest.mark.parametrize("body,field", [
    ({"version": "churn:99", "value": 1}, "body.version"),
    ({"version": 99, "value": 1}, "body.version"),
    # a delayed label that also reports an outcome for a version that never existed
    ({"request_id": "req-1", "label": 1, "version": "churn:99", "value": 0}, "body.version"),
    ([{"version": "churn:1", "value": 1}, {"version": "churn:99", "value": 0}],
     "body[1].version"),
], ids=["ref", "number", "with-label", "in-a-batch"])
def test_feedback_for_a_version_that_does_not_exist_is_422(
        shared: Shared, http: httpx.Client, churn: str, body: object, field: str) -> None:
    before = stored(shared, churn, "churn:1")
    refused = assert_problem(http.post(f"/endpoints/{churn}/feedback", json=body),
                             422, "validation_failed", field)
    assert "churn:99 does not exist" in refused["detail"]
    assert stored(shared, churn, "churn:1") == before  # all or nothing
    assert stored(shared, churn, "churn:99") == []


def test_feedback_for_existing_versions_is_stored(shared: Shared, http: httpx.Client,
                                                 churn: str, classifier: LogisticRegression,
                                                 tabular: Data) -> None:
    shared.yard.register("churn", classifier, sample=tabular[0][:5])
    shared.yard.archive("churn", 2)  # never served here, archived: outcomes may come late
    answer = http.post(f"/endpoints/{churn}/feedback", json=[
        {"version": "churn:1", "value": 1}, {"version": 2, "value": 0.5}])
    assert answer.status_code == 202, answer.text
    assert answer.json()["outcomes"] == 2
    assert stored(shared, churn, "churn:2") == [0.5]


def test_the_sdk_hears_which_item(shared: Shared, churn: str) -> None:
    with Client(shared.url, shared.admin_key) as client, \
            pytest.raises(errors.ValidationFailed) as refused:
        client.send_feedback(churn, [{"version": "churn:1", "value": 1},
                                     {"version": "churn:42", "value": 1}])
    assert refused.value.field == "body[1].version"


def test_a_graph_endpoint_takes_generations_it_reached(shared: Shared,
                                                      http: httpx.Client) -> None:
    graph = {"graph": "g", "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
             "nodes": {"a": {"kind": "model", "model": "churn:1",
                             "inputs": {"input": "inputs.input"}}},
             "outputs": {"label": "a.label"}}
    endpoint = shared.yard.create_endpoint("g", graph=graph, auth="public")
    deadline = time.monotonic() + 30
    while http.get("/v2/models/g/ready").status_code != 200:
        assert time.monotonic() < deadline, "graph endpoint g never became ready"
        time.sleep(0.05)
    answered = http.post("/endpoints/g/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]})
    assert answered.status_code == 200, answered.text
    served = answered.headers["modelyard-model-version"]
    assert served == f"g:{endpoint.generation}"
    assert http.post("/endpoints/g/feedback", json={"version": served, "value": 1}
                     ).status_code == 202
    assert_problem(http.post("/endpoints/g/feedback", json={
        "version": f"g:{endpoint.generation + 5}", "value": 1}),
        422, "validation_failed", "body.version")
