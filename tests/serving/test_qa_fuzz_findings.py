"""Regressions from an outside-in fuzzing pass over the data plane (real server, both
databases): each request below was a 500 (a plain-text one from the fast path, which also
dropped the keep-alive connection, or a gRPC INTERNAL) and is now the caller's 4xx problem.

The shared yard serves ``churn:1`` (scikit-learn, 4 float inputs) on the public endpoint
``churn``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard.serving import fastpath
from support import Shared, assert_problem

INFER = "/v2/models/churn/infer"
ROW = [0.1, 0.2, 0.3, 0.4]


def _tensor(shape: list[int], data: list[float]) -> dict[str, Any]:
    return {"name": "input", "datatype": "FP32", "shape": shape, "data": data}


def _binary(shape: list[int], raw: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape,
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return head + raw, {"inference-header-content-length": str(len(head)),
                        "content-type": "application/octet-stream"}


def _still_serving(http: httpx.Client) -> None:
    """The same keep-alive connection answers the next request."""
    answer = http.post(INFER, json={"inputs": [_tensor([1, 4], ROW)]})
    assert answer.status_code == 200, answer.text


def test_a_tensor_of_too_many_dimensions_is_422(http: httpx.Client, churn: str) -> None:
    # numpy holds at most 64 dimensions: reshaping into 70 raised ValueError (a 500).
    shape = [1] * 70
    assert_problem(http.post(INFER, json={"inputs": [_tensor(shape, [1.0])]}),
                   422, "invalid_input", "inputs.input.shape")
    body, headers = _binary(shape, np.zeros(1, np.float32).tobytes())
    problem = assert_problem(http.post(INFER, content=body, headers=headers),
                             422, "invalid_input", "inputs.input.shape")
    assert "70 dimensions" in problem["detail"]
    _still_serving(http)


@pytest.mark.parametrize("header", ["modelyard-timeout-ms", "inference-header-content-length"])
def test_numeric_headers_of_thousands_of_digits_are_400(http: httpx.Client, churn: str,
                                                        header: str) -> None:
    # int() of over 4,300 digits raises ValueError: a 500 that also reset the connection.
    assert_problem(http.post(INFER, json={"inputs": [_tensor([1, 4], ROW)]},
                             headers={header: "9" * 5000}), 400, "invalid_request", header)
    _still_serving(http)


def test_a_request_of_zero_rows_is_422(http: httpx.Client, churn: str) -> None:
    # scikit-learn fails on an empty batch: it was 500 model_failed (502 in a graph).
    assert_problem(http.post(INFER, json={"inputs": [_tensor([0, 4], [])]}),
                   422, "invalid_input", "inputs.input")
    body, headers = _binary([0, 4], b"")
    assert_problem(http.post(INFER, content=body, headers=headers),
                   422, "invalid_input", "inputs.input")
    assert_problem(http.post(f"/endpoints/{churn}/predict",
                             json={"inputs": {"input": np.zeros((0, 4)).tolist()}}),
                   422, "invalid_input", "inputs.input")


def test_a_feedback_label_nested_too_deep_is_422_and_stores_nothing(
        shared: Shared, http: httpx.Client, churn: str) -> None:
    rid = "qa-deep-label"
    http.post(f"/endpoints/{churn}/predict", json={"inputs": [ROW]},
              headers={"x-request-id": rid})
    # orjson reads 1,024 levels but writes 254: the size check raised (a 500).
    body = b'{"request_id": "' + rid.encode() + b'", "label": ' + b"[" * 300 + b"]" * 300 + b"}"
    assert_problem(http.post(f"/endpoints/{churn}/feedback", content=body,
                             headers={"content-type": "application/json"}),
                   422, "validation_failed", "body.label")
    fine = http.post(f"/endpoints/{churn}/feedback", json={"request_id": rid, "label": 1})
    assert fine.status_code == 202, fine.text


def test_an_unexpected_error_in_the_fast_path_is_a_problem(
        http: httpx.Client, churn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug, not the caller's mistake: still problem+json (``internal_error``), and the
    connection stays usable (the fast path runs outside the app's CatchAll)."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fastpath, "plain_inputs", broken)
    answer = http.post(f"/endpoints/{churn}/predict", json={"inputs": [ROW]})
    problem = assert_problem(answer, 500, "internal_error")
    assert "a bug" not in answer.text  # the details are in the log, not the answer
    assert problem["instance"] == f"/endpoints/{churn}/predict"
    monkeypatch.undo()
    _still_serving(http)


def test_grpc_refuses_the_same_tensors(shared: Shared, churn: str) -> None:
    """The gRPC ModelInfer path shares the checks: INVALID_ARGUMENT, not INTERNAL."""
    grpc = pytest.importorskip("grpc")
    from modelyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
    from modelyard.serving.grpc_v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
    from modelyard.serving.server import BackgroundServer

    with BackgroundServer(shared.yard, grpc=True) as server, \
            grpc.insecure_channel(server.grpc_target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        for shape, raw in (([1] * 70, np.zeros(1, np.float32).tobytes()), ([0, 4], b"")):
            request = pb.ModelInferRequest(model_name=churn)
            request.inputs.add(name="input", datatype="FP32", shape=shape)
            request.raw_input_contents.append(raw)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            trailing = dict(info.value.trailing_metadata() or ())
            assert trailing["modelyard-error-code"] == "invalid_input"

