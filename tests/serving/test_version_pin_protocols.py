"""One rule for naming a version, on every protocol (serving/pinning.py, ADR 0028 "Later"):
the ``Modelyard-Version`` header (plain JSON, OIP v2 and the OpenAI-compatible routes), the
OIP v2 path ``/versions/{v}``, gRPC ``model_version`` and gRPC ``modelyard-version`` metadata.

* naming the one version an endpoint serves: anyone who may call it;
* choosing among the versions of a split: developer, operator or admin (else 403);
* a version not served: 404 ``version_not_found`` naming the field.

One SQLite yard for the module (the rule reads no database): ``one`` serves ``churn:1``
(public), ``keyed`` serves ``churn:1`` (key), ``ab`` splits ``churn:1``/``churn:2`` 100/0
(public), ``words`` and ``words-ab`` are the same for an embedder (key).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from support import assert_problem

grpc = pytest.importorskip("grpc")
from modelyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb  # noqa: E402
from modelyard.serving.grpc_v2.grpc_predict_v2_pb2_grpc import (  # noqa: E402
    GRPCInferenceServiceStub,
)

PIN = "modelyard-version"
ROW = [0.1, 0.2, 0.3, 0.4]
BODY = {"inputs": [ROW]}
OIP = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}


class Served(NamedTuple):
    server: BackgroundServer
    keys: dict[str, str]
    stub: Any


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("pins")
    yard, _ = Yard.init(settings=Settings.load(home, env={},
                                               database_url=f"sqlite:///{home / 'yard.db'}"))
    x, label, _ = tabular
    try:
        for c in (1.0, 0.1):
            yard.register("churn", LogisticRegression(C=c).fit(x, label), sample=x[:4])
            yard.register("words", "modelyard.testing.models:WordHashEmbedder",
                          flavor="python", trusted=True,
                          sample=np.array(["hello world"], dtype=object))
        split = [{"model": "churn:1", "weight": 100}, {"model": "churn:2", "weight": 0}]
        yard.create_endpoint("one", "churn:1", auth="public")
        yard.create_endpoint("keyed", "churn:1")
        yard.create_endpoint("ab", "churn:1", auth="public")
        yard.set_traffic("ab", {"split": split})
        yard.create_endpoint("words", "words:1")
        yard.create_endpoint("words-ab", "words:1")
        yard.set_traffic("words-ab", {"split": [{"model": "words:1", "weight": 100},
                                                {"model": "words:2", "weight": 0}]})
        keys = {role: yard.create_key(f"pin-{role}", [role])["key"]
                for role in ("predictor", "developer", "operator", "viewer")}
        with BackgroundServer(yard, grpc=True) as server, \
                grpc.insecure_channel(server.grpc_target) as channel:
            _wait_for_both(server.url, keys["developer"])
            yield Served(server, keys, GRPCInferenceServiceStub(channel))
    finally:
        yard.close()


def _wait_for_both(url: str, key: str) -> None:
    deadline = time.monotonic() + 60
    while True:  # a split answers once both its versions are loaded
        answer = httpx.post(f"{url}/endpoints/ab/predict", json=BODY,
                            headers={PIN: "2", "authorization": f"Bearer {key}"}, timeout=30)
        if answer.status_code == 200:
            return
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.server.url, timeout=30) as c:
        yield c


def bearer(served: Served, role: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {served.keys[role]}"} if role else {}


# -- one version served: naming it is anyone's ---------------------------------------------

@pytest.mark.parametrize("role", [None, "predictor", "viewer"])
@pytest.mark.parametrize("named", ["1", "churn:1"])
def test_naming_the_served_version_is_allowed_to_any_caller(
        served: Served, http: httpx.Client, role: str | None, named: str) -> None:
    headers = bearer(served, role)
    endpoint = "one" if role is None else "keyed"
    for path, body in ((f"/endpoints/{endpoint}/predict", BODY),
                       (f"/v2/models/{endpoint}/infer", OIP)):
        answer = http.post(path, json=body, headers={**headers, PIN: named})
        assert answer.status_code == 200, answer.text
        assert answer.headers["modelyard-model-version"] == "churn:1"
    answer = http.post(f"/v2/models/{endpoint}/versions/{named}/infer", json=OIP,
                       headers=headers)
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"


def test_a_version_not_served_is_404_naming_the_field(served: Served,
                                                      http: httpx.Client) -> None:
    predictor = bearer(served, "predictor")
    problem = assert_problem(http.post("/endpoints/keyed/predict", json=BODY,
                                       headers={**predictor, PIN: "2"}),
                             404, "version_not_found", PIN)
    assert "serves version 1" in problem["detail"]
    assert_problem(http.post("/v2/models/keyed/versions/2/infer", json=OIP, headers=predictor),
                   404, "version_not_found", "version")
    # the path and the header each name a version: both must be the one served
    assert_problem(http.post("/v2/models/keyed/versions/1/infer", json=OIP,
                             headers={**predictor, PIN: "churn:2"}),
                   404, "version_not_found", PIN)


# -- a split: choosing takes the pin right -------------------------------------------------

@pytest.mark.parametrize("role", [None, "predictor", "viewer"])
def test_choosing_inside_a_split_needs_the_pin_right(served: Served, http: httpx.Client,
                                                     role: str | None) -> None:
    headers = bearer(served, role)
    for version in ("1", "2", "9"):  # refused before it is looked up: nothing is revealed
        assert_problem(http.post("/endpoints/ab/predict", json=BODY,
                                 headers={**headers, PIN: version}), 403, "forbidden", PIN)
        assert_problem(http.post(f"/v2/models/ab/versions/{version}/infer", json=OIP,
                                 headers=headers), 403, "forbidden", "version")
    # without naming a version, the split answers as before
    assert http.post("/endpoints/ab/predict", json=BODY, headers=headers).status_code == 200


@pytest.mark.parametrize("role", ["developer", "operator"])
def test_testers_choose_inside_a_split_on_every_http_route(served: Served, http: httpx.Client,
                                                           role: str) -> None:
    headers = bearer(served, role)
    pinned = http.post("/endpoints/ab/predict", json=BODY, headers={**headers, PIN: "2"})
    assert pinned.status_code == 200 and pinned.headers["modelyard-model-version"] == "churn:2"
    path = http.post("/v2/models/ab/versions/churn:2/infer", json=OIP, headers=headers)
    assert path.status_code == 200 and path.json()["model_version"] == "2"
    assert_problem(http.post("/endpoints/ab/predict", json=BODY, headers={**headers, PIN: "3"}),
                   404, "version_not_found", PIN)
    assert_problem(http.post("/v2/models/ab/versions/1/infer", json=OIP,
                             headers={**headers, PIN: "2"}), 404, "version_not_found", "version")


def test_describing_a_version_of_a_split_chooses_nothing(http: httpx.Client) -> None:
    """OIP metadata and readiness of any served version: no right beyond calling."""
    meta = http.get("/v2/models/ab/versions/2")
    assert meta.status_code == 200 and meta.json()["versions"] == ["2"]
    assert http.get("/v2/models/ab/versions/churn:2/ready").json()["ready"] is True
    assert_problem(http.get("/v2/models/ab/versions/3"), 404, "version_not_found", "version")


def test_the_openai_routes_honour_the_header_too(served: Served, http: httpx.Client) -> None:
    """``Modelyard-Version`` was ignored on /v1: never again silently."""
    body = {"model": "words", "input": "hello"}
    predictor, developer = bearer(served, "predictor"), bearer(served, "developer")
    named = http.post("/v1/embeddings", json=body, headers={**predictor, PIN: "words:1"})
    assert named.status_code == 200 and named.headers["modelyard-model-version"] == "words:1"
    assert_problem(http.post("/v1/embeddings", json=body, headers={**predictor, PIN: "2"}),
                   404, "version_not_found", PIN)
    split = {"model": "words-ab", "input": "hello"}
    assert_problem(http.post("/v1/embeddings", json=split, headers={**predictor, PIN: "2"}),
                   403, "forbidden", PIN)
    chosen = http.post("/v1/embeddings", json=split, headers={**developer, PIN: "2"})
    assert chosen.status_code == 200 and chosen.headers["modelyard-model-version"] == "words:2"


# -- gRPC: model_version and modelyard-version metadata, the same rule ---------------------

def _infer(served: Served, endpoint: str, version: str = "",
           metadata: tuple[tuple[str, str], ...] = ()) -> str:
    """The version that answered (its ref), or raises grpc.RpcError."""
    request = pb.ModelInferRequest(model_name=endpoint, model_version=version)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4]
                       ).contents.fp32_contents.extend(ROW)
    _, call = served.stub.ModelInfer.with_call(request, metadata=metadata, timeout=30)
    return str(dict(call.trailing_metadata())["modelyard-model-version"])


def _refused(served: Served, endpoint: str, version: str = "",
             metadata: tuple[tuple[str, str], ...] = ()) -> tuple[Any, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        _infer(served, endpoint, version, metadata)
    return info.value.code(), {**dict(info.value.trailing_metadata() or ()),
                               "details": info.value.details()}


def test_grpc_follows_the_same_rule(served: Served) -> None:
    def key(role: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {served.keys[role]}"),)

    # one version served: anyone may name it, by model_version or by metadata
    assert _infer(served, "one", "1") == "churn:1"
    assert _infer(served, "keyed", "churn:1", key("predictor")) == "churn:1"
    assert _infer(served, "keyed", metadata=(*key("predictor"), (PIN, "1"))) == "churn:1"
    code, trailing = _refused(served, "keyed", "2", key("predictor"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert trailing["modelyard-error-code"] == "version_not_found"
    assert trailing["modelyard-error-field"] == "model_version"
    assert "model_version" in trailing["details"]
    code, trailing = _refused(served, "one", metadata=((PIN, "7"),))
    assert code == grpc.StatusCode.NOT_FOUND and trailing["modelyard-error-field"] == PIN
    # a split: model_version and the metadata both need the pin right
    for metadata in ((), key("predictor")):
        assert _refused(served, "ab", "2", metadata)[0] == grpc.StatusCode.PERMISSION_DENIED
        assert _refused(served, "ab", metadata=(*metadata, (PIN, "2")))[0] == \
            grpc.StatusCode.PERMISSION_DENIED
    assert _infer(served, "ab", "2", key("developer")) == "churn:2"
    assert _infer(served, "ab", metadata=(*key("developer"), (PIN, "churn:2"))) == "churn:2"
    code, trailing = _refused(served, "ab", "1", (*key("developer"), (PIN, "2")))
    assert code == grpc.StatusCode.NOT_FOUND and trailing["modelyard-error-field"] == \
        "model_version"
    # and without a version named, the split picks as before
    assert _infer(served, "ab") == "churn:1"
