"""NVIDIA's tritonclient.grpc talks to Modelyard's OIP v2 gRPC service (KServe's
``inference.GRPCInferenceService``), served by the same process as HTTP: health, metadata,
FP32/INT64/BYTES tensors (raw and typed contents), API keys in the call metadata, and errors
as gRPC status codes carrying the problem's detail."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings

grpc = pytest.importorskip("grpc", reason="grpcio not installed (pip install 'modelyard[grpc]')")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

Tabular = tuple[np.ndarray, np.ndarray, np.ndarray]


class TextStats:
    """INT64 and BYTES in, INT64 and BYTES out (a python model: this module is importable)."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = inputs["ids"]
        if (ids < 0).any():
            raise ValueError("ids must not be negative")
        words = [v.decode() if isinstance(v, bytes) else str(v) for v in inputs["text"].tolist()]
        return {"total": ids.sum(axis=1),
                "shout": np.array([w.upper() + "!" for w in words], dtype=object)}


class Sleepy:
    """Takes a second for any positive input (zeros, as in warm-up, are quick)."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (inputs["x"] > 0).any():
            time.sleep(1.0)
        return {"y": inputs["x"]}


@dataclass
class Served:
    server: BackgroundServer
    client: Any  # tritonclient.grpc.InferenceServerClient
    key: str  # may call "text"
    outsider: str  # a valid key, for another project only
    classifier: LogisticRegression


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, classifier: LogisticRegression,
           tabular: Tabular) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("grpc-yard")
    settings = Settings.load(home, env={}, database_url=f"sqlite:///{home / 'yard.db'}")
    yard, _ = Yard.init(settings=settings)
    try:
        yard.register("churn", classifier, sample=tabular[0][:4], to_onnx=True)
        yard.create_endpoint("churn", "churn", auth="public")
        yard.register("text", TextStats, trusted=True, sample={
            "ids": np.array([[1, 2, 3]], dtype=np.int64), "text": np.array(["a"], dtype=object)})
        yard.create_endpoint("text", "text")  # auth="key"
        yard.register("sleepy", Sleepy, trusted=True,
                      sample={"x": np.zeros((1, 2), dtype=np.float32)})
        yard.create_endpoint("sleepy", "sleepy", auth="public", timeout_ms=200)
        key = yard.create_key("grpc-tests", ["predictor"])["key"]
        yard.create_project("fraud")
        outsider = yard.create_key("fraud-svc", ["predictor@fraud"])["key"]
        with BackgroundServer(yard, grpc=True) as server:
            client = grpcclient.InferenceServerClient(server.grpc_target)
            try:
                yield Served(server, client, key, outsider, classifier)
            finally:
                client.close()
    finally:
        yard.close()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def churn_input(x: np.ndarray) -> Any:
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def text_inputs(ids: np.ndarray, text: np.ndarray) -> list[Any]:
    a = grpcclient.InferInput("ids", list(ids.shape), "INT64")
    a.set_data_from_numpy(ids)
    b = grpcclient.InferInput("text", list(text.shape), "BYTES")
    b.set_data_from_numpy(text)
    return [a, b]


def status_of(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(info.value.status())


def test_grpc_health_and_metadata_with_tritonclient(served: Served) -> None:
    client = served.client
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("churn")
    assert client.is_model_ready("churn", "1")
    server = client.get_server_metadata()
    assert server.name == "modelyard" and server.version
    meta = client.get_model_metadata("churn")
    assert (meta.name, list(meta.versions), meta.platform) == ("churn", ["1"], "onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input", "FP32", [-1, 4])]
    assert {t.name for t in meta.outputs} == {"label", "probabilities"}
    # Metadata of a key endpoint needs the key, as over HTTP.
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("text")
    assert status_of(info) == "StatusCode.UNAUTHENTICATED"
    text = client.get_model_metadata("text", headers=bearer(served.key), as_json=True)
    assert [(t["name"], t["datatype"]) for t in text["inputs"]] == [
        ("ids", "INT64"), ("text", "BYTES")]


def test_grpc_infer_fp32_with_tritonclient(served: Served, tabular: Tabular) -> None:
    x = tabular[0][:3]
    outputs = [grpcclient.InferRequestedOutput("probabilities")]
    result = served.client.infer("churn", [churn_input(x)], outputs=outputs, request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("probabilities"),
                               served.classifier.predict_proba(x), rtol=1e-4, atol=1e-5)
    assert result.as_numpy("label") is None  # only what was asked for
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("churn", "1", "r-1")
    # No outputs asked for: all of them, and an explicit version is the served one.
    everything = served.client.infer("churn", [churn_input(x)], model_version="1")
    np.testing.assert_array_equal(everything.as_numpy("label"), served.classifier.predict(x))


def test_grpc_infer_int64_and_bytes_with_an_api_key(served: Served) -> None:
    ids = np.array([[1, 2, 3], [10, 20, 30]], dtype=np.int64)
    text = np.array(["héllo", "b"], dtype=object)
    result = served.client.infer("text", text_inputs(ids, text), headers=bearer(served.key))
    total = result.as_numpy("total")
    assert total.dtype == np.int64 and total.tolist() == [6, 60]
    assert result.as_numpy("shout").tolist() == ["HÉLLO!".encode(), b"B!"]


def test_grpc_api_keys_come_from_the_call_metadata(served: Served) -> None:
    inputs = text_inputs(np.ones((1, 3), dtype=np.int64), np.array(["a"], dtype=object))
    for headers in (None, bearer("my_wrong.key"), {"authorization": "Basic abc"}):
        with pytest.raises(InferenceServerException, match=r"Bearer|valid API key") as info:
            served.client.infer("text", inputs, headers=headers)
        assert status_of(info) == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException, match="may not call") as info:
        served.client.infer("text", inputs, headers=bearer(served.outsider))
    assert status_of(info) == "StatusCode.PERMISSION_DENIED"


def test_grpc_errors_are_status_codes_with_the_problem_detail(served: Served) -> None:
    client = served.client
    wrong = grpcclient.InferInput("input", [2, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
    cases: list[tuple[str, str, Any]] = [
        ("StatusCode.INVALID_ARGUMENT", "size 4 on axis 1", lambda: client.infer("churn", [wrong])),
        ("StatusCode.NOT_FOUND", "does not exist", lambda: client.infer("nope", [wrong])),
        ("StatusCode.NOT_FOUND", "does not exist", lambda: client.is_model_ready("nope")),
        ("StatusCode.NOT_FOUND", "serves version 1, not '7'",
         lambda: client.infer("churn", [churn_input(np.zeros((1, 4), np.float32))],
                              model_version="7")),
        ("StatusCode.NOT_FOUND", "serves version 1", lambda: client.is_model_ready("churn", "7")),
        ("StatusCode.INVALID_ARGUMENT", "unknown output 'nope'",
         lambda: client.infer("churn", [churn_input(np.zeros((1, 4), np.float32))],
                              outputs=[grpcclient.InferRequestedOutput("nope")])),
        ("StatusCode.INTERNAL", "ids must not be negative",
         lambda: client.infer("text", text_inputs(-np.ones((1, 3), dtype=np.int64),
                                                  np.array(["a"], dtype=object)),
                              headers=bearer(served.key))),
        ("StatusCode.DEADLINE_EXCEEDED", "within the deadline",  # the endpoint's 200 ms
         lambda: client.infer("sleepy", [_fp32("x", np.ones((1, 2), np.float32))])),
    ]
    for status, message, call in cases:
        with pytest.raises(InferenceServerException, match=message) as info:
            call()
        assert status_of(info) == status, (status, message, info.value)


def _fp32(name: str, x: np.ndarray) -> Any:
    tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def test_grpc_async_and_concurrent_calls(served: Served, tabular: Tabular) -> None:
    answers: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    rows = tabular[0][:8]
    for i in range(8):
        served.client.async_infer(
            "churn", [churn_input(rows[i:i + 1])],
            callback=lambda result, error, i=i: answers.put((i, result, error)),
            outputs=[grpcclient.InferRequestedOutput("probabilities")])
    expected = served.classifier.predict_proba(rows)
    for _ in range(8):
        i, result, error = answers.get(timeout=30)
        assert error is None, error
        np.testing.assert_allclose(result.as_numpy("probabilities")[0], expected[i],
                                   rtol=1e-4, atol=1e-5)


def test_grpc_typed_contents_get_typed_answers(served: Served) -> None:
    """KServe-style clients send typed ``contents`` (tritonclient always sends raw bytes):
    here through tritonclient's own generated stubs."""
    with grpc.insecure_channel(served.server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="text", id="typed")
        ids = request.inputs.add(name="ids", datatype="INT64", shape=[2, 3])
        ids.contents.int64_contents.extend([1, 2, 3, 4, 5, 6])
        text = request.inputs.add(name="text", datatype="BYTES", shape=[2])
        text.contents.bytes_contents.extend([b"x", b"yz"])
        response, call = stub.ModelInfer.with_call(
            request, metadata=[("authorization", f"Bearer {served.key}")], timeout=30)
        assert not response.raw_output_contents
        outputs = {o.name: o for o in response.outputs}
        assert list(outputs["total"].contents.int64_contents) == [6, 15]
        assert list(outputs["shout"].contents.bytes_contents) == [b"X!", b"YZ!"]
        assert outputs["shout"].datatype == "BYTES" and list(outputs["shout"].shape) == [2]
        trailing = dict(call.trailing_metadata())
        assert trailing["modelyard-model-version"] == "text:1"

        # A count that does not match the shape is refused, with the stable error code.
        bad = service_pb2.ModelInferRequest(model_name="churn")
        tensor = bad.inputs.add(name="input", datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend([1.0, 2.0])
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(bad, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "has 2 values but shape [1, 4] needs 4" in info.value.details()
        assert dict(info.value.trailing_metadata())["modelyard-error-code"] == "invalid_input"


def test_grpc_status_code_mapping() -> None:
    from modelyard.domain import errors
    from modelyard.serving.grpc_v2.server import status_code

    code = grpc.StatusCode
    expected = {
        errors.InvalidRequest("x"): code.INVALID_ARGUMENT,
        errors.InvalidInput("x"): code.INVALID_ARGUMENT,
        errors.PayloadTooLarge("x"): code.RESOURCE_EXHAUSTED,
        errors.Unauthenticated("x"): code.UNAUTHENTICATED,
        errors.Forbidden("x"): code.PERMISSION_DENIED,
        errors.EndpointNotFound("x"): code.NOT_FOUND,
        errors.VersionNotFound("x"): code.NOT_FOUND,
        errors.TooManyRequests("x"): code.RESOURCE_EXHAUSTED,
        errors.QuotaExceeded("x"): code.RESOURCE_EXHAUSTED,
        errors.Overloaded("x"): code.RESOURCE_EXHAUSTED,
        errors.NotReady("x"): code.UNAVAILABLE,
        errors.DeadlineExceeded("x"): code.DEADLINE_EXCEEDED,
        errors.ModelFailed("x"): code.INTERNAL,
    }
    for error, status in expected.items():
        assert status_code(error) == status, error


def test_grpc_deadline_replaces_the_endpoint_timeout(served: Served) -> None:
    """The call's gRPC deadline, when set, is the request's timeout (capped at 600 s, as the
    HTTP timeout header is); without one, the endpoint's timeout applies."""
    from modelyard.domain.errors import DeadlineExceeded
    from modelyard.serving.grpc_v2.server import timeout_s

    # "sleepy" takes 1 s, past its endpoint's 200 ms: a 20 s deadline lets it finish.
    x = np.ones((1, 2), np.float32)
    result = served.client.infer("sleepy", [_fp32("x", x)], client_timeout=20)
    np.testing.assert_array_equal(result.as_numpy("y"), x)

    class Endpoint:
        timeout_ms = 200

    class State:
        endpoint = Endpoint()

    assert timeout_s(None, State()) == pytest.approx(0.2)  # type: ignore[arg-type]
    assert timeout_s(3.5, State()) == pytest.approx(3.5)  # type: ignore[arg-type]
    assert timeout_s(10_000.0, State()) == pytest.approx(600)  # type: ignore[arg-type]
    with pytest.raises(DeadlineExceeded):
        timeout_s(0.0, State())  # type: ignore[arg-type]


def test_grpc_server_is_off_unless_asked(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path / "yard", env={},
                             database_url=f"sqlite:///{tmp_path / 'yard.db'}")
    assert settings.grpc_port == 0
    yard, _ = Yard.init(settings=settings)
    try:
        server = BackgroundServer(yard)
        with pytest.raises(RuntimeError, match="no gRPC"):
            server.grpc_target  # noqa: B018
    finally:
        yard.close()


def test_grpc_calls_follow_the_split_and_reach_the_log_and_the_rollout_evidence(
        tmp_path: Path, classifier: LogisticRegression, tabular: Tabular) -> None:
    """Under a 50/50 split with a sticky key: gRPC calls pick versions as HTTP ones do (the
    key read from the call's metadata), say which version answered and echo the request id
    in the trailing metadata, and are written to the inference log and to the rollout
    evidence under that version."""
    home = tmp_path / "yard"
    settings = Settings.load(home, env={}, database_url=f"sqlite:///{home / 'yard.db'}",
                             inference_log_flush_s=0.05, inference_log_max_per_s=0)
    yard, _ = Yard.init(settings=settings)
    x = tabular[0][:1]
    try:
        for c in (1.0, 0.2):
            yard.register("churn", LogisticRegression(C=c).fit(tabular[0], tabular[1]),
                          sample=tabular[0][:4], to_onnx=True)
        yard.create_endpoint("churn", "churn:1", auth="public")
        yard.set_traffic("churn", {"split": [{"model": "churn:1", "weight": 50},
                                             {"model": "churn:2", "weight": 50}],
                                   "sticky_header": "x-user"})
        with BackgroundServer(yard, grpc=True) as server, \
                grpc.insecure_channel(server.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = service_pb2.ModelInferRequest(model_name="churn")
            tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
            tensor.contents.fp32_contents.extend(x.ravel().tolist())
            answered: dict[str, str] = {}
            by_user: dict[str, set[str]] = {}
            for i in range(40):
                _, call = stub.ModelInfer.with_call(request, metadata=(
                    ("x-request-id", f"g-{i}"), ("x-user", f"u{i % 4}")))
                trailing = dict(call.trailing_metadata())
                assert trailing["x-request-id"] == f"g-{i}"
                answered[f"g-{i}"] = trailing["modelyard-model-version"]
                by_user.setdefault(f"u{i % 4}", set()).add(answered[f"g-{i}"])
            assert all(len(seen) == 1 for seen in by_user.values()), by_user  # sticky
            # A pinned version, as /v2/models/churn/versions/2/infer would (a split: it
            # takes a developer's key).
            request.model_version = "2"
            developer = yard.create_key("pin", ["developer"])["key"]
            _, call = stub.ModelInfer.with_call(
                request, metadata=(("authorization", f"Bearer {developer}"),))
            assert dict(call.trailing_metadata())["modelyard-model-version"] == "churn:2"
            observations = server.server.config.app.state.observations
            counted = sum(observations.stats(f"churn/churn:{v}", 300).requests for v in (1, 2))
            assert counted == 41
            deadline = time.monotonic() + 15
            while True:
                records = yard.inference_log("churn", limit=1000, payloads=False)["records"]
                logged = {r["request_id"]: r["version"] for r in records
                          if str(r["request_id"]).startswith("g-")}
                if len(logged) >= 40 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert logged == answered
    finally:
        yard.close()
