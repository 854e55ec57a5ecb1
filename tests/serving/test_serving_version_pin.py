"""``Modelyard-Version`` on an endpoint that serves one version: honoured when it names that
version (for anyone who may call the endpoint), 404 ``version_not_found`` (field
``modelyard-version``) when it names another; choosing among the versions of a split takes
``traffic:override`` (serving/pinning.py, ADR 0028). Over the real server, plain JSON and
OIP v2.

The shared yard serves ``churn:1`` on the public endpoint ``churn``; this module adds
``churn:2`` and an endpoint ``ab`` that splits traffic between them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from support import Shared, assert_problem

Data = tuple[np.ndarray, np.ndarray, np.ndarray]
BODY = {"inputs": [[0.1, 0.2, 0.3, 0.4]]}
OIP = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                   "data": [0.1, 0.2, 0.3, 0.4]}]}
PIN = "modelyard-version"


@pytest.fixture(scope="module")
def keys(shared: Shared) -> dict[str, str]:
    return {role: shared.yard.create_key(f"pin-{role}", [role])["key"]
            for role in ("developer", "predictor")}


@pytest.fixture(scope="module")
def developer(shared: Shared, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.url, timeout=30,
                      headers={"authorization": f"Bearer {keys['developer']}"}) as c:
        yield c


def test_without_the_header_nothing_changes(http: httpx.Client, churn: str) -> None:
    answer = http.post(f"/endpoints/{churn}/predict", json=BODY)
    assert answer.status_code == 200 and answer.headers["modelyard-model-version"] == "churn:1"


@pytest.mark.parametrize("pinned", ["1", "churn:1"])
def test_naming_the_served_version_is_honoured(developer: httpx.Client, churn: str,
                                               pinned: str) -> None:
    answer = developer.post(f"/endpoints/{churn}/predict", json=BODY, headers={PIN: pinned})
    assert answer.status_code == 200, answer.text
    assert answer.headers["modelyard-model-version"] == "churn:1"
    oip = developer.post(f"/v2/models/{churn}/infer", json=OIP, headers={PIN: pinned})
    assert oip.status_code == 200 and oip.json()["model_version"] == "1"


@pytest.mark.parametrize("pinned", ["2", "churn:2", "other:1", "latest", ""])
def test_naming_another_version_is_404(developer: httpx.Client, churn: str,
                                       pinned: str) -> None:
    refused = assert_problem(developer.post(f"/endpoints/{churn}/predict", json=BODY,
                                            headers={PIN: pinned}),
                             404, "version_not_found", PIN)
    assert "serves version 1" in refused["detail"] and "churn:1" in refused["detail"]
    assert_problem(developer.post(f"/v2/models/{churn}/infer", json=OIP,
                                  headers={PIN: pinned}), 404, "version_not_found", PIN)
    # the path and the header must agree with what is served
    assert_problem(developer.post(f"/v2/models/{churn}/versions/1/infer", json=OIP,
                                  headers={PIN: pinned}), 404, "version_not_found", PIN)


def test_naming_the_one_served_version_needs_no_more_than_calling(
        http: httpx.Client, churn: str, keys: dict[str, str]) -> None:
    for headers in ({PIN: "1"},  # anonymous, on a public endpoint
                    {PIN: "1", "authorization": f"Bearer {keys['predictor']}"}):
        answer = http.post(f"/endpoints/{churn}/predict", json=BODY, headers=headers)
        assert answer.status_code == 200, answer.text
        assert_problem(http.post(f"/endpoints/{churn}/predict", json=BODY,
                                 headers={**headers, PIN: "2"}), 404, "version_not_found", PIN)


def test_under_a_split_the_header_is_named_too(shared: Shared, developer: httpx.Client,
                                               classifier: LogisticRegression,
                                               tabular: Data) -> None:
    shared.yard.register("churn", classifier, sample=tabular[0][:5])
    shared.yard.create_endpoint("ab", "churn:1", auth="public")
    shared.yard.set_traffic("ab", {"split": [{"model": "churn:1", "weight": 100},
                                             {"model": "churn:2", "weight": 0}]})
    deadline = time.monotonic() + 60
    while True:  # the split answers once both versions are loaded
        pinned = developer.post("/endpoints/ab/predict", json=BODY, headers={PIN: "2"})
        if pinned.status_code == 200 and pinned.headers["modelyard-model-version"] == "churn:2":
            break
        assert time.monotonic() < deadline, pinned.text
        time.sleep(0.1)
    assert_problem(developer.post("/endpoints/ab/predict", json=BODY, headers={PIN: "3"}),
                   404, "version_not_found", PIN)
    # the URL names one version, the header another
    assert_problem(developer.post("/v2/models/ab/versions/1/infer", json=OIP,
                                  headers={PIN: "2"}), 404, "version_not_found", "version")
    both = developer.post("/v2/models/ab/versions/2/infer", json=OIP, headers={PIN: "churn:2"})
    assert both.status_code == 200 and both.json()["model_version"] == "2"
