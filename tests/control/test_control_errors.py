"""Control-plane errors over real HTTP: every refusal is problem+json with a stable code and
the field at fault. The shared yard holds ``churn:1`` (alias ``champion``, endpoint
``churn``); nothing here changes it."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from support import API, assert_problem, sample_tensor

Data = tuple[np.ndarray, np.ndarray, np.ndarray]

MISSING = "0" * 64


# -- 404 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/models/nope"),
    ("GET", "/models/nope/versions"),
    ("GET", "/models/nope/aliases"),
    ("DELETE", "/models/nope"),
    ("POST", "/models/nope/versions/1/archive"),
])
def test_unknown_model_is_404(shared_api: httpx.Client, method: str, path: str) -> None:
    assert_problem(shared_api.request(method, API + path), 404, "model_not_found", "model")


@pytest.mark.parametrize("method,path", [
    ("GET", "/models/churn/versions/9"),
    ("POST", "/models/churn/versions/9/archive"),
])
def test_unknown_version_is_404(shared_api: httpx.Client, method: str, path: str) -> None:
    assert_problem(shared_api.request(method, API + path), 404, "version_not_found", "version")


def test_alias_to_unknown_version_is_404(shared_api: httpx.Client) -> None:
    response = shared_api.put(f"{API}/models/churn/aliases/staging", json={"version": 9})
    assert_problem(response, 404, "version_not_found", "version")
    assert "staging" not in shared_api.get(f"{API}/models/churn").json()["aliases"]


def test_alias_on_unknown_model_is_404(shared_api: httpx.Client) -> None:
    response = shared_api.put(f"{API}/models/nope/aliases/staging", json={"version": 1})
    assert_problem(response, 404, "model_not_found", "model")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_alias_is_404(shared_api: httpx.Client, method: str) -> None:
    response = shared_api.request(method, f"{API}/models/churn/aliases/nope")
    assert_problem(response, 404, "alias_not_found", "alias")


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_unknown_endpoint_is_404(shared_api: httpx.Client, method: str) -> None:
    kwargs = {"json": {"description": "x"}} if method == "PATCH" else {}
    response = shared_api.request(method, f"{API}/endpoints/nope", **kwargs)
    assert_problem(response, 404, "endpoint_not_found", "endpoint")


@pytest.mark.parametrize("model,code,field", [
    ("nope", "model_not_found", "model"),
    ("churn:9", "version_not_found", "version"),
    ("churn@nope", "alias_not_found", "alias"),
])
def test_endpoint_on_unknown_target_is_404(shared_api: httpx.Client, model: str, code: str,
                                           field: str) -> None:
    response = shared_api.post(f"{API}/endpoints", json={"name": "new", "model": model})
    assert_problem(response, 404, code, field)
    assert shared_api.get(f"{API}/endpoints/new").status_code == 404


def test_repoint_endpoint_to_unknown_target_is_404(shared_api: httpx.Client) -> None:
    response = shared_api.patch(f"{API}/endpoints/churn", json={"model": "churn:9"})
    assert_problem(response, 404, "version_not_found", "version")
    assert shared_api.get(f"{API}/endpoints/churn").json()["model"] == "churn@champion"


def test_unknown_artifact_is_404(shared_api: httpx.Client) -> None:
    assert_problem(shared_api.get(f"{API}/artifacts/{MISSING}"), 404, "artifact_not_found")


def test_register_unknown_artifact_is_404(shared_api: httpx.Client) -> None:
    response = shared_api.post(f"{API}/models/ghost/versions", json={
        "artifact": MISSING, "sample": sample_tensor([[0, 0, 0, 0]])})
    assert_problem(response, 404, "artifact_not_found")
    assert shared_api.get(f"{API}/models/ghost").status_code == 404


def test_unknown_route_is_a_404_problem(shared_api: httpx.Client) -> None:
    assert_problem(shared_api.get(f"{API}/nothing"), 404, "not_found")


def test_wrong_method_is_a_405_problem(shared_api: httpx.Client) -> None:
    assert_problem(shared_api.put(f"{API}/models", json={}), 405, "method_not_allowed")


# -- 422 validation_failed ----------------------------------------------------------------

@pytest.mark.parametrize("body,field", [
    ({"version": 0}, "version"),
    ({"version": "two"}, "version"),
    ({}, "version"),
    ({"version": 1, "note": "x"}, "note"),
])
def test_alias_body_is_validated(shared_api: httpx.Client, body: dict[str, object],
                                 field: str) -> None:
    response = shared_api.put(f"{API}/models/churn/aliases/staging", json=body)
    problem = assert_problem(response, 422, "validation_failed", field)
    assert problem["errors"][0]["field"] == field


@pytest.mark.parametrize("alias", ["123", "-x", "a b"])
def test_invalid_alias_name_is_422(shared_api: httpx.Client, alias: str) -> None:
    response = shared_api.put(f"{API}/models/churn/aliases/{alias}", json={"version": 1})
    assert_problem(response, 422, "validation_failed", "alias")


@pytest.mark.parametrize("body,field", [
    ({"name": "bad name!", "model": "churn"}, "name"),
    ({"name": "x", "model": "churn:zero"}, "model"),
    ({"name": "x", "model": "bad model!"}, "model"),
    ({"name": "x", "model": "churn", "timeout_ms": 0}, "timeout_ms"),
    ({"name": "x", "model": "churn", "timeout_ms": 600_001}, "timeout_ms"),
    ({"name": "x", "model": "churn", "replicas": 3}, "replicas"),
    ({"model": "churn"}, "name"),
])
def test_endpoint_body_is_validated(shared_api: httpx.Client, body: dict[str, object],
                                    field: str) -> None:
    response = shared_api.post(f"{API}/endpoints", json=body)
    assert_problem(response, 422, "validation_failed", field)
    assert shared_api.get(f"{API}/endpoints/x").status_code == 404


def test_invalid_model_name_on_register_is_422(shared_api: httpx.Client) -> None:
    digest = shared_api.get(f"{API}/models/churn/versions/1").json()["artifact"]["sha256"]
    response = shared_api.post(f"{API}/models/-bad/versions", json={"artifact": digest})
    assert_problem(response, 422, "validation_failed", "name")


def test_register_with_unknown_body_field_is_422(shared_api: httpx.Client) -> None:
    response = shared_api.post(f"{API}/models/churn/versions",
                               json={"artifact": MISSING, "weights": "x"})
    assert_problem(response, 422, "validation_failed", "weights")


def test_register_with_unknown_flavor_is_422(shared_api: httpx.Client) -> None:
    digest = shared_api.get(f"{API}/models/churn/versions/1").json()["artifact"]["sha256"]
    response = shared_api.post(f"{API}/models/churn/versions",
                               json={"artifact": digest, "flavor": "tensorflow"})
    assert_problem(response, 422, "validation_failed", "flavor")
    assert len(shared_api.get(f"{API}/models/churn/versions").json()) == 1


def test_register_with_malformed_artifact_digest_names_the_artifact_field(
    shared_api: httpx.Client,
) -> None:
    response = shared_api.post(f"{API}/models/churn/versions", json={"artifact": "xyz"})
    assert_problem(response, 422, "validation_failed", "artifact")


def test_malformed_digest_in_path_is_422(shared_api: httpx.Client) -> None:
    assert_problem(shared_api.get(f"{API}/artifacts/xyz"), 422, "validation_failed", "sha256")


def test_non_numeric_version_in_path_is_422(shared_api: httpx.Client) -> None:
    problem = assert_problem(shared_api.get(f"{API}/models/churn/versions/abc"), 422,
                             "validation_failed")
    assert problem["field"].endswith("version")


@pytest.mark.parametrize("tag", ["team", "=risk"])
def test_malformed_tag_filter_is_422(shared_api: httpx.Client, tag: str) -> None:
    for path in ("/models", "/versions"):
        response = shared_api.get(API + path, params={"tag": tag})
        assert_problem(response, 422, "validation_failed", "tag")


def test_tag_filters(shared_api: httpx.Client) -> None:
    models = shared_api.get(f"{API}/models", params={"tag": "team=risk"}).json()
    assert [m["name"] for m in models] == ["churn"]
    assert shared_api.get(f"{API}/models", params={"tag": "team=growth"}).json() == []
    versions = shared_api.get(f"{API}/versions", params={"tag": "team=risk"}).json()
    assert [(v["model"], v["version"]) for v in versions] == [("churn", 1)]


# -- 400 / 415 ----------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("PUT", "/models/churn/aliases/staging"),
    ("POST", "/endpoints"),
    ("PATCH", "/endpoints/churn"),
    ("POST", "/models/churn/versions"),
])
def test_invalid_json_is_400(shared_api: httpx.Client, method: str, path: str) -> None:
    response = shared_api.request(method, API + path, content=b'{"version": ',
                                  headers={"content-type": "application/json"})
    assert_problem(response, 400, "invalid_json")


@pytest.mark.parametrize("method,path", [
    ("PUT", "/models/churn/aliases/staging"),
    ("POST", "/endpoints"),
    ("PATCH", "/endpoints/churn"),
    ("POST", "/models/churn/versions"),
])
def test_wrong_content_type_is_415(shared_api: httpx.Client, method: str, path: str) -> None:
    response = shared_api.request(method, API + path, content=b'{"version": 1}',
                                  headers={"content-type": "text/plain"})
    assert_problem(response, 415, "unsupported_media_type", "content-type")


def test_patch_with_nothing_to_change_is_400(shared_api: httpx.Client) -> None:
    assert_problem(shared_api.patch(f"{API}/endpoints/churn", json={}), 400,
                   "invalid_request")


# -- 409 ----------------------------------------------------------------------------------

def test_duplicate_endpoint_is_409(shared_api: httpx.Client) -> None:
    response = shared_api.post(f"{API}/endpoints", json={"name": "churn", "model": "churn:1"})
    assert_problem(response, 409, "already_exists", "name")
    assert shared_api.get(f"{API}/endpoints/churn").json()["model"] == "churn@champion"


def test_delete_model_served_by_an_endpoint_is_409(shared_api: httpx.Client) -> None:
    response = shared_api.delete(f"{API}/models/churn")
    body = assert_problem(response, 409, "in_use", "model")
    assert "churn" in body["detail"]
    assert shared_api.get(f"{API}/models/churn").status_code == 200


def test_archive_version_carrying_an_alias_is_409(shared_api: httpx.Client) -> None:
    response = shared_api.post(f"{API}/models/churn/versions/1/archive")
    assert_problem(response, 409, "in_use", "version")
    assert shared_api.get(f"{API}/models/churn/versions/1").json()["status"] == "active"


def test_archived_version_cannot_be_served_or_aliased(
    api: httpx.Client, yard: Yard, classifier: LogisticRegression, tabular: Data
) -> None:
    yard.register("churn", classifier, sample=tabular[0][:5])
    yard.register("churn", classifier, sample=tabular[0][5:10])
    archived = api.post(f"{API}/models/churn/versions/1/archive")
    assert archived.status_code == 200, archived.text
    assert archived.json()["status"] == "archived"
    assert_problem(api.put(f"{API}/models/churn/aliases/champion", json={"version": 1}),
                   409, "version_archived", "version")
    assert_problem(api.post(f"{API}/endpoints", json={"name": "e", "model": "churn:1"}),
                   409, "version_archived", "model")
    # The unpinned reference skips the archived version.
    created = api.post(f"{API}/endpoints", json={"name": "e", "model": "churn"})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"{API}/endpoints/e"


def test_archive_version_pinned_by_an_endpoint_is_409(
    api: httpx.Client, yard: Yard, classifier: LogisticRegression, tabular: Data
) -> None:
    yard.register("churn", classifier, sample=tabular[0][:5])
    yard.create_endpoint("pinned", "churn:1")
    assert_problem(api.post(f"{API}/models/churn/versions/1/archive"), 409, "in_use",
                   "version")
