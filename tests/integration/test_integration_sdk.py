"""End-to-end through the Python SDK (``modelyard.Client``) against the real server: register
from objects and paths, alias, serve, predict, promote, archive, delete, search, download.

Most refusals are checked over plain HTTP (status, code, field); the SDK's own typed errors
are checked in test_sdk_raises_the_typed_error_every_time.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression, Ridge

from modelyard import Client
from modelyard.client import ApiError
from modelyard.domain.errors import ModelNotFound, NotFound
from modelyard.serving.server import BackgroundServer
from support import API, assert_problem, wait_until_serving

Data = tuple[np.ndarray, np.ndarray, np.ndarray]
TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture
def http(server: BackgroundServer, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"authorization": f"Bearer {admin_key}"}) as c:
        yield c


@pytest.fixture(scope="module")
def challenger(tabular: Data) -> LogisticRegression:
    """A second classifier whose probabilities differ clearly from ``classifier``'s."""
    x, label, _ = tabular
    return LogisticRegression(C=0.005).fit(x, label)


def test_register_serve_promote_archive_delete(client: Client, http: httpx.Client,
                                               classifier: LogisticRegression,
                                               challenger: LogisticRegression,
                                               tabular: Data) -> None:
    x = tabular[0]
    assert not np.allclose(classifier.predict_proba(x[:10]), challenger.predict_proba(x[:10]),
                           atol=1e-3)

    # Register: v1 saved with skops, v2 converted to ONNX on the client side.
    v1 = client.register("churn", classifier, sample=x[:5], params={"C": 1.0},
                         metrics={"auc": 0.91}, tags={"team": "risk"}, description="baseline",
                         code_revision="abc123", data=x)
    assert (v1["model"], v1["version"], v1["flavor"], v1["status"]) == \
        ("churn", 1, "sklearn", "active")
    assert v1["lineage"]["params"] == {"C": 1.0}
    assert v1["lineage"]["metrics"] == {"auc": 0.91}
    assert v1["lineage"]["code_revision"] == "abc123"
    assert v1["lineage"]["data_fingerprint"].startswith("sha256:")
    assert v1["lineage"]["trusted"] is False
    assert v1["signature"]["inputs"] == [{"name": "input", "dtype": "float32",
                                          "shape": [-1, 4]}]
    v2 = client.register("churn", challenger, sample=x[:5], to_onnx=True,
                         tags={"team": "risk", "stage": "candidate"}, parent="churn:1")
    assert (v2["version"], v2["flavor"]) == (2, "onnx")
    assert v2["lineage"]["parent"] == "churn:1"
    assert v2["artifact"]["sha256"] != v1["artifact"]["sha256"]

    # Alias and serve through it.
    alias = client.set_alias("churn", "champion", 1)
    assert (alias["model"], alias["alias"], alias["version"]) == ("churn", "champion", 1)
    created = client.create_endpoint("churn", "churn@champion", auth="public")
    assert created["model"] == "churn@champion"
    ready = client.wait_ready("churn", timeout_s=30)
    assert ready["status"]["serving"] == ready["status"]["target"] == "churn:1"

    out = client.predict("churn", x[:10])
    assert out["probabilities"].dtype == np.float32
    assert out["label"].dtype == np.int64
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(x[:10]), **TOL)
    np.testing.assert_array_equal(out["label"], classifier.predict(x[:10]))
    named = client.predict("churn", {"input": x[:3]})
    np.testing.assert_allclose(named["probabilities"], classifier.predict_proba(x[:3]), **TOL)

    # Moving the alias moves the endpoint, with no request failing meanwhile.
    client.set_alias("churn", "champion", 2)
    response = wait_until_serving(http, "churn", "churn:2", {"inputs": x[:10].tolist()})
    np.testing.assert_allclose(np.asarray(response.json()["outputs"]["probabilities"]),
                               challenger.predict_proba(x[:10]), **TOL)
    state = client.wait_ready("churn", timeout_s=30)["status"]
    assert state["serving"] == state["target"] == "churn:2"
    out = client.predict("churn", x[:10])
    np.testing.assert_allclose(out["probabilities"], challenger.predict_proba(x[:10]), **TOL)
    assert client.version("churn@champion")["version"] == 2
    assert client.model("churn")["aliases"] == {"champion": 2}
    history = http.get(f"{API}/models/churn/aliases").json()["history"]
    assert [(h["from_version"], h["to_version"]) for h in history] == [(None, 1), (1, 2)]

    # Archive the old version; the one carrying the alias cannot be archived.
    archived = client.archive("churn", 1)
    assert archived["status"] == "archived"
    assert [v["status"] for v in client.versions("churn")] == ["archived", "active"]
    assert client.version("churn")["version"] == 2  # latest active
    assert_problem(http.post(f"{API}/models/churn/versions/2/archive"), 409, "in_use",
                   "version")

    # Deleting the model is refused while an endpoint serves it.
    assert_problem(http.delete(f"{API}/models/churn"), 409, "in_use", "model")
    assert client.model("churn")["latest_version"] == 2
    client.delete_endpoint("churn")
    assert client.list_endpoints() == []
    assert_problem(http.post("/endpoints/churn/predict", json={"inputs": x[:1].tolist()}),
                   404, "endpoint_not_found")
    client.delete_model("churn")
    assert client.models() == []
    assert_problem(http.get(f"{API}/models/churn"), 404, "model_not_found", "model")


def test_register_from_a_path(client: Client, http: httpx.Client, tmp_path: Path,
                              classifier: LogisticRegression, regressor: Ridge,
                              tabular: Data) -> None:
    x = tabular[0]
    folder = tmp_path / "churn-model"
    folder.mkdir()
    sio.dump(classifier, folder / "model.skops")
    (folder / "README.txt").write_text("trained on churn data\n")

    v1 = client.register("churn", path=folder, sample=x[:5])
    assert v1["flavor"] == "sklearn"
    assert v1["flavor_options"]["file"] == "model.skops"
    # A single file works too, and to_onnx converts a folder on the client side.
    single = tmp_path / "ridge.skops"
    sio.dump(regressor, single)
    r1 = client.register("ridge", path=single, sample=x[:5])
    assert r1["flavor"] == "sklearn"
    r2 = client.register("ridge", path=single, sample=x[:5], to_onnx=True)
    assert r2["flavor"] == "onnx"
    assert r2["signature"]["outputs"][0]["name"] == "prediction"

    client.create_endpoint("churn", "churn:1", auth="public")
    client.create_endpoint("ridge", "ridge", auth="public")  # latest active version
    client.wait_ready("churn")
    client.wait_ready("ridge")
    np.testing.assert_allclose(client.predict("churn", x[:8])["probabilities"],
                               classifier.predict_proba(x[:8]), **TOL)
    prediction = client.predict("ridge", x[:8])["prediction"].reshape(-1)
    np.testing.assert_allclose(prediction, regressor.predict(x[:8]), rtol=1e-4, atol=1e-4)
    assert http.post("/endpoints/ridge/predict", json={"inputs": x[:1].tolist()}
                     ).headers["modelyard-model-version"] == "ridge:2"

    # The artifact comes back byte for byte, with the folder's files in it.
    dest = client.download(v1["artifact"]["sha256"], tmp_path / "churn.tar")
    data = dest.read_bytes()
    assert hashlib.sha256(data).hexdigest() == v1["artifact"]["sha256"]
    assert len(data) == v1["artifact"]["size"]
    with tarfile.open(dest) as tar:
        assert sorted(tar.getnames()) == ["README.txt", "model.skops"]
        member = tar.extractfile("model.skops")
        assert member is not None
        assert member.read() == (folder / "model.skops").read_bytes()


def test_models_and_search_by_tags(client: Client, classifier: LogisticRegression,
                                   regressor: Ridge, tabular: Data) -> None:
    x = tabular[0][:5]
    client.register("churn", classifier, sample=x, tags={"team": "risk", "stage": "prod"})
    client.register("churn", classifier, sample=x, tags={"team": "risk", "stage": "dev"})
    client.register("ltv", regressor, sample=x, tags={"team": "growth"})

    assert [m["name"] for m in client.models()] == ["churn", "ltv"]
    assert [m["name"] for m in client.models(tags={"team": "risk"})] == ["churn"]
    assert [m["name"] for m in client.models(tags={"team": "growth"})] == ["ltv"]
    assert [m["name"] for m in client.models(tags={"team": "risk", "stage": "dev"})] == \
        ["churn"]
    assert client.models(tags={"team": "nobody"}) == []
    found = client.search({"stage": "prod"})
    assert [(v["model"], v["version"]) for v in found] == [("churn", 1)]
    assert [(v["model"], v["version"]) for v in client.search({"team": "risk"})] == \
        [("churn", 1), ("churn", 2)]
    assert client.model("churn")["latest_version"] == 2


def test_same_files_twice_share_one_artifact(client: Client, tmp_path: Path,
                                             classifier: LogisticRegression,
                                             tabular: Data) -> None:
    x = tabular[0][:5]
    sio.dump(classifier, tmp_path / "model.skops")
    first = client.register("churn", path=tmp_path / "model.skops", sample=x)
    second = client.register("churn", path=tmp_path / "model.skops", sample=x,
                             description="same files, new version")
    assert second["version"] == 2
    assert first["artifact"] == second["artifact"]


def test_sdk_raises_the_typed_error_every_time(client: Client) -> None:
    for _ in range(3):
        with pytest.raises(ModelNotFound) as failed:
            client.set_alias("nope", "champion", 1)
        assert isinstance(failed.value, ApiError)
        assert isinstance(failed.value, NotFound)
        assert failed.value.status == 404
        assert failed.value.code == "model_not_found"
        assert failed.value.field == "model"
        assert failed.value.problem["instance"] == f"{API}/models/nope/aliases/champion"
