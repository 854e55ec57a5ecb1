"""Open Inference Protocol v2 over real HTTP: metadata, health, typed infer, and errors that
carry both problem+json members and the OIP ``error`` member."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import __version__
from support import assert_problem

Data = tuple[np.ndarray, np.ndarray, np.ndarray]
INFER = "/v2/models/churn/infer"


def _tensor(x: np.ndarray, nested: bool = False) -> dict[str, object]:
    return {"name": "input", "datatype": "FP32", "shape": list(x.shape),
            "data": x.tolist() if nested else x.reshape(-1).tolist()}


def test_server_metadata(http: httpx.Client, churn: str) -> None:
    response = http.get("/v2")
    assert response.status_code == 200
    doc = response.json()
    assert doc["name"] == "modelyard"
    assert doc["version"] == __version__
    assert isinstance(doc["extensions"], list)
    assert all(isinstance(e, str) for e in doc["extensions"])


def test_health_live_and_ready(http: httpx.Client, churn: str) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    ready = http.get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200


def test_model_metadata(http: httpx.Client, churn: str) -> None:
    response = http.get("/v2/models/churn")
    assert response.status_code == 200
    assert response.json() == {
        "name": "churn",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
    }
    assert http.get("/v2/models/churn/versions/1").json() == response.json()


def test_model_ready(http: httpx.Client, churn: str) -> None:
    response = http.get("/v2/models/churn/ready")
    assert response.status_code == 200
    assert response.json() == {"name": "churn", "ready": True}
    assert http.get("/v2/models/churn/versions/1/ready").status_code == 200


@pytest.mark.parametrize("nested", [False, True])
def test_infer_typed_round_trip(http: httpx.Client, churn: str, tabular: Data,
                                classifier: LogisticRegression, nested: bool) -> None:
    x = tabular[0][:3]
    response = http.post(INFER, json={"id": "req-42", "inputs": [_tensor(x, nested)]})
    assert response.status_code == 200, response.text
    assert response.headers["modelyard-model-version"] == "churn:1"
    doc = response.json()
    assert doc["id"] == "req-42"
    assert doc["model_name"] == "churn"
    assert doc["model_version"] == "1"
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert set(outputs) == {"label", "probabilities"}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["shape"] == [3]
    assert outputs["label"]["data"] == classifier.predict(x).tolist()
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [3, 2]
    got = np.asarray(outputs["probabilities"]["data"]).reshape(3, 2)
    np.testing.assert_allclose(got, classifier.predict_proba(x), rtol=1e-4, atol=1e-5)


def test_infer_without_id_has_no_id(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post(INFER, json={"inputs": [_tensor(tabular[0][:1])]})
    assert response.status_code == 200
    assert "id" not in response.json()


def test_infer_outputs_filter(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post(INFER, json={"inputs": [_tensor(tabular[0][:2])],
                                      "outputs": [{"name": "probabilities"}]})
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities"]


def test_infer_unknown_output_is_400(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post(INFER, json={"inputs": [_tensor(tabular[0][:2])],
                                      "outputs": [{"name": "logits"}]})
    body = assert_problem(response, 400, "invalid_request", "outputs")
    assert "logits" in body["error"]


def test_infer_malformed_outputs_is_400(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post(INFER, json={"inputs": [_tensor(tabular[0][:2])],
                                      "outputs": ["probabilities"]})
    assert_problem(response, 400, "invalid_request", "outputs")


def test_infer_on_the_served_version(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post("/v2/models/churn/versions/1/infer",
                         json={"inputs": [_tensor(tabular[0][:2])]})
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "1"


def test_infer_on_another_version_is_404(http: httpx.Client, churn: str,
                                         tabular: Data) -> None:
    response = http.post("/v2/models/churn/versions/2/infer",
                         json={"inputs": [_tensor(tabular[0][:2])]})
    assert_problem(response, 404, "version_not_found", "version")


@pytest.mark.parametrize("path", ["/v2/models/churn/versions/7",
                                  "/v2/models/churn/versions/7/ready"])
def test_metadata_of_another_version_is_404(http: httpx.Client, churn: str, path: str) -> None:
    assert_problem(http.get(path), 404, "version_not_found", "version")


@pytest.mark.parametrize("path", ["/v2/models/nope", "/v2/models/nope/ready"])
def test_unknown_model_is_404(http: httpx.Client, churn: str, path: str) -> None:
    assert_problem(http.get(path), 404, "endpoint_not_found", "endpoint")


def test_infer_unknown_model_is_404(http: httpx.Client, churn: str, tabular: Data) -> None:
    response = http.post("/v2/models/nope/infer", json={"inputs": [_tensor(tabular[0][:1])]})
    assert_problem(response, 404, "endpoint_not_found", "endpoint")


def test_unknown_v2_route_is_404(http: httpx.Client, churn: str) -> None:
    assert_problem(http.get("/v2/repository/index"), 404, "not_found")


# -- input errors -------------------------------------------------------------------------

def test_unknown_datatype_is_422(http: httpx.Client, churn: str) -> None:
    tensor = {"name": "input", "datatype": "FP99", "shape": [1, 4], "data": [0, 0, 0, 0]}
    response = http.post(INFER, json={"inputs": [tensor]})
    assert_problem(response, 422, "invalid_input", "inputs.input.datatype")


def test_wrong_datatype_for_the_model_is_422(http: httpx.Client, churn: str) -> None:
    tensor = {"name": "input", "datatype": "BYTES", "shape": [1, 4], "data": ["a"] * 4}
    response = http.post(INFER, json={"inputs": [tensor]})
    assert_problem(response, 422, "invalid_input", "inputs.input")


def test_data_not_matching_datatype_is_422(http: httpx.Client, churn: str) -> None:
    tensor = {"name": "input", "datatype": "INT64", "shape": [1, 4],
              "data": [0.5, 1.5, 2.5, 3.5]}
    response = http.post(INFER, json={"inputs": [tensor]})
    assert_problem(response, 422, "invalid_input", "inputs.input.data")


def test_data_count_not_matching_shape_is_422(http: httpx.Client, churn: str) -> None:
    tensor = {"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [0.0] * 4}
    response = http.post(INFER, json={"inputs": [tensor]})
    assert_problem(response, 422, "invalid_input", "inputs.input.data")


def test_wrong_shape_for_the_model_is_422(http: httpx.Client, churn: str) -> None:
    tensor = {"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [0.0] * 6}
    response = http.post(INFER, json={"inputs": [tensor]})
    assert_problem(response, 422, "invalid_input", "inputs.input")


def test_bad_shape_member_is_422(http: httpx.Client, churn: str) -> None:
    tensor = {"name": "input", "datatype": "FP32", "shape": [-1, 4], "data": [0.0] * 4}
    response = http.post(INFER, json={"inputs": [tensor]})
    assert_problem(response, 422, "invalid_input", "inputs.input.shape")


def test_missing_input_tensor_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(INFER, json={"inputs": []})
    assert_problem(response, 422, "invalid_input", "inputs.input")


def test_unknown_input_tensor_is_422(http: httpx.Client, churn: str, tabular: Data) -> None:
    extra = {"name": "extra", "datatype": "FP32", "shape": [1], "data": [0.0]}
    response = http.post(INFER, json={"inputs": [_tensor(tabular[0][:1]), extra]})
    assert_problem(response, 422, "invalid_input", "inputs.extra")


def test_duplicate_input_tensor_is_422(http: httpx.Client, churn: str, tabular: Data) -> None:
    tensor = _tensor(tabular[0][:1])
    response = http.post(INFER, json={"inputs": [tensor, tensor]})
    assert_problem(response, 422, "invalid_input", "inputs[1].name")


def test_inputs_not_a_list_is_422(http: httpx.Client, churn: str) -> None:
    response = http.post(INFER, json={"inputs": {"input": [[0, 0, 0, 0]]}})
    assert_problem(response, 422, "invalid_input", "inputs")


def test_body_not_an_object_is_400(http: httpx.Client, churn: str) -> None:
    assert_problem(http.post(INFER, json=[1, 2]), 400, "invalid_request", "body")


def test_invalid_json_is_400(http: httpx.Client, churn: str) -> None:
    response = http.post(INFER, content=b"{'inputs': []}",
                         headers={"content-type": "application/json"})
    assert_problem(response, 400, "invalid_json")


def test_wrong_content_type_is_415(http: httpx.Client, churn: str) -> None:
    response = http.post(INFER, content=b'{"inputs": []}',
                         headers={"content-type": "application/octet-stream"})
    assert_problem(response, 415, "unsupported_media_type", "content-type")


def test_oip_client_error_carries_request_id(http: httpx.Client, churn: str) -> None:
    response = http.post("/v2/models/nope/infer", json={"inputs": []},
                         headers={"x-request-id": "abc-123"})
    body = assert_problem(response, 404, "endpoint_not_found")
    assert response.headers["x-request-id"] == "abc-123"
    assert body["instance"] == "/v2/models/nope/infer"
