"""NVIDIA's own OIP v2 client (tritonclient.http) talks to Modelyard unchanged: JSON and
binary tensors, metadata, readiness, and errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelyard import Yard
from modelyard.serving.server import BackgroundServer

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard.db'}"


@pytest.fixture
def triton(yard: Yard, classifier: object, tabular: tuple[np.ndarray, ...]
           ) -> Iterator[tuple[object, object]]:
    yard.register("churn", classifier, sample=tabular[0][:4], to_onnx=True)
    yard.create_endpoint("churn", "churn", auth="public")
    with BackgroundServer(yard) as server:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            yield client, classifier
        finally:
            client.close()


@pytest.mark.parametrize("binary", [True, False])
def test_infer_with_tritonclient(triton: tuple[object, object], binary: bool,
                                 tabular: tuple[np.ndarray, ...]) -> None:
    client, classifier = triton
    x = tabular[0][:3]
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("churn", [tensor], outputs=outputs)  # type: ignore[attr-defined]
    np.testing.assert_allclose(result.as_numpy("probabilities"),
                               classifier.predict_proba(x), rtol=1e-4,  # type: ignore[attr-defined]
                               atol=1e-5)
    assert result.as_numpy("label") is None  # only what was asked for


def test_metadata_and_readiness_with_tritonclient(triton: tuple[object, object]) -> None:
    client, _ = triton
    assert client.is_server_live()  # type: ignore[attr-defined]
    assert client.is_server_ready()  # type: ignore[attr-defined]
    assert client.is_model_ready("churn")  # type: ignore[attr-defined]
    meta = client.get_model_metadata("churn")  # type: ignore[attr-defined]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}


def test_errors_reach_tritonclient_with_their_message(triton: tuple[object, object]) -> None:
    client, _ = triton
    wrong = httpclient.InferInput("input", [2, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="size 4 on axis 1"):
        client.infer("churn", [wrong])  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException, match="does not exist"):
        client.infer("nope", [wrong])  # type: ignore[attr-defined]
