"""The plain JSON data plane (POST /endpoints/{name}/predict) over real HTTP: good input in
every accepted format, and every kind of bad input answered with problem+json."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from support import assert_problem

Data = tuple[np.ndarray, np.ndarray, np.ndarray]
PREDICT = "/endpoints/churn/predict"


def _rows(tabular: Data, n: int = 3) -> list[list[float]]:
    return tabular[0][:n].tolist()


# -- accepted formats ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["inputs-bare", "inputs-named", "instances-bare",
                                   "instances-objects"])
def test_predict_formats_agree_with_sklearn(http: httpx.Client, churn: str, tabular: Data,
                                            classifier: LogisticRegression,
                                            shape: str) -> None:
    rows = _rows(tabular, 4)
    body = {
        "inputs-bare": {"inputs": rows},
        "inputs-named": {"inputs": {"input": rows}},
        "instances-bare": {"instances": rows},
        "instances-objects": {"instances": [{"input": r} for r in rows]},
    }[shape]
    response = http.post(PREDICT, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["modelyard-model-version"] == "churn:1"
    doc = response.json()
    assert doc["model"] == "churn"
    assert doc["version"] == 1
    expected = classifier.predict_proba(tabular[0][:4])
    np.testing.assert_allclose(np.asarray(doc["outputs"]["probabilities"]), expected,
                               rtol=1e-4, atol=1e-5)
    assert doc["outputs"]["label"] == classifier.predict(tabular[0][:4]).tolist()


def test_predict_needs_no_api_key(http: httpx.Client, churn: str, tabular: Data) -> None:
    assert "authorization" not in {k.lower() for k in http.headers}
    assert http.post(PREDICT, json={"inputs": _rows(tabular)}).status_code == 200


def test_integers_are_accepted_for_a_float_input(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"inputs": [[1, 0, -1, 2]]})
    assert response.status_code == 200, response.text


# -- 404 ----------------------------------------------------------------------------------

def test_unknown_endpoint_is_404(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post("/endpoints/nope/predict", json={"inputs": _rows(tabular)})
    assert_problem(response, 404, "endpoint_not_found", "endpoint")


def test_unknown_route_is_a_404_problem(http: httpx.Client, churn: str) -> None:
    response = http.get("/endpoints/churn/nothing-here")
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("path", [PREDICT, "/v2/models/churn/infer"])
def test_wrong_method_is_a_405_problem(http: httpx.Client, churn: str, path: str) -> None:
    response = http.get(path)
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers.get("allow", "")


def test_wrong_method_elsewhere_is_a_405_problem(http: httpx.Client, churn: str) -> None:
    assert_problem(http.post("/v2/health/live", json={}), 405, "method_not_allowed")


# -- 422 invalid_input --------------------------------------------------------------------

def test_wrong_dtype_strings_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"inputs": [["a", "b", "c", "d"]]})
    body = assert_problem(response, 422, "invalid_input", "inputs.input")
    assert "float32" in body["detail"]


def test_wrong_dtype_bool_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"inputs": [[True, False, True, False]]})
    assert_problem(response, 422, "invalid_input", "inputs.input")


def test_null_value_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"inputs": [[1.0, None, 0.0, 0.0]]})
    assert_problem(response, 422, "invalid_input", "inputs.input")


def test_wrong_width_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"inputs": [[0.1, 0.2, 0.3]]})
    body = assert_problem(response, 422, "invalid_input", "inputs.input")
    assert "axis 1" in body["detail"]


def test_wrong_rank_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"inputs": [0.1, 0.2, 0.3, 0.4]})
    body = assert_problem(response, 422, "invalid_input", "inputs.input")
    assert "dimensions" in body["detail"]


def test_ragged_rows_are_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"inputs": [[0.1, 0.2, 0.3, 0.4], [0.1]]})
    assert_problem(response, 422, "invalid_input", "inputs.input")


def test_missing_input_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"inputs": {}})
    body = assert_problem(response, 422, "invalid_input", "inputs.input")
    assert "missing" in body["detail"]


def test_unknown_input_is_422(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post(PREDICT, json={"inputs": {"input": _rows(tabular), "extra": [1]}})
    body = assert_problem(response, 422, "invalid_input", "inputs.extra")
    assert "unknown input" in body["detail"]


def test_instance_missing_input_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"instances": [{"other": [1, 2, 3, 4]}]})
    assert_problem(response, 422, "invalid_input", "instances[0].input")


def test_instance_unknown_input_is_422(http: httpx.Client, churn: str) -> None:
    rows = [{"input": [0.0, 0.0, 0.0, 0.0]}, {"input": [0.0, 0.0, 0.0, 0.0], "bogus": 1}]
    response = http.post(PREDICT, json={"instances": rows})
    assert_problem(response, 422, "invalid_input", "instances[1].bogus")


def test_empty_instances_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"instances": []})
    assert_problem(response, 422, "invalid_input", "instances")


# -- 400 ----------------------------------------------------------------------------------

def test_invalid_json_is_400(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, content=b'{"inputs": [[1, 2,',
                         headers={"content-type": "application/json"})
    assert_problem(response, 400, "invalid_json")


def test_non_finite_json_number_is_400(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, content=b'{"inputs": [[NaN, 0, 0, 0]]}',
                         headers={"content-type": "application/json"})
    assert_problem(response, 400, "invalid_json")


def test_body_must_be_an_object(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post(PREDICT, json=_rows(tabular))
    assert_problem(response, 400, "invalid_request", "body")


def test_body_needs_inputs_or_instances(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, json={"rows": []})
    assert_problem(response, 400, "invalid_request", "body")


def test_inputs_and_instances_together_is_400(http: httpx.Client, churn: str,
                                              tabular: Data) -> None:
    rows = _rows(tabular)
    response = http.post(PREDICT, json={"inputs": rows, "instances": rows})
    assert_problem(response, 400, "invalid_request", "body")


@pytest.mark.parametrize("value", ["0", "-5", "abc", "600001"])
def test_bad_timeout_header_is_400(http: httpx.Client, churn: str, tabular: Data,
                                   value: str) -> None:
    response = http.post(PREDICT, json={"inputs": _rows(tabular)},
                         headers={"modelyard-timeout-ms": value})
    assert_problem(response, 400, "invalid_request", "modelyard-timeout-ms")


# -- 415 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(http: httpx.Client, churn: str, media: str | None) -> None:
    headers = {"content-type": media} if media else {}
    response = http.post(PREDICT, content=b'{"inputs": [[0, 0, 0, 0]]}', headers=headers)
    assert_problem(response, 415, "unsupported_media_type", "content-type")


def test_json_suffix_media_type_is_accepted(http: httpx.Client, churn: str) -> None:
    response = http.post(PREDICT, content=b'{"inputs": [[0, 0, 0, 0]]}',
                         headers={"content-type": "application/vnd.modelyard+json"})
    assert response.status_code == 200, response.text


# -- 413 ----------------------------------------------------------------------------------

def test_body_over_the_default_32_mib_limit_is_413(http: httpx.Client, churn: str) -> None:
    payload = b"[" + b"0," * ((32 << 20) // 2) + b"0]"
    assert len(payload) > 32 << 20
    response = http.post(PREDICT, content=payload,
                         headers={"content-type": "application/json"})
    body = assert_problem(response, 413, "payload_too_large")
    assert str(32 << 20) in body["detail"]
