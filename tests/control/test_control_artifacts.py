"""Artifact safety over real HTTP: uploads are checked against their sha256, unsafe archives
are refused before anything is stored, pickles and code need explicit trust, and downloads
return exactly the stored bytes."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from support import (
    API,
    Shared,
    assert_problem,
    link,
    sample_tensor,
    server_with,
    sha256,
    tar_bytes,
    upload,
    zip_bytes,
)

Data = tuple[np.ndarray, np.ndarray, np.ndarray]


def _stored(yard: Yard) -> list[str]:
    return sorted(yard.artifacts.digests())


@pytest.fixture
def unchanged(shared: Shared, shared_api: httpx.Client) -> Iterator[None]:
    """The shared yard's store, scratch space and registry are the same after the test, and
    nothing named ``evil*`` was written anywhere under it."""
    before = _stored(shared.yard)
    models = shared_api.get(f"{API}/models").json()
    yield
    assert _stored(shared.yard) == before
    scratch = shared.settings.home / "tmp"
    assert not scratch.exists() or list(scratch.iterdir()) == []
    assert list(shared.settings.home.parent.rglob("evil*")) == []
    assert shared_api.get(f"{API}/models").json() == models


def _skops_bytes(model: LogisticRegression, tmp_path: Path) -> bytes:
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    return path.read_bytes()


# -- digests ------------------------------------------------------------------------------

def test_digest_mismatch_stores_nothing(shared_api: httpx.Client, unchanged: None) -> None:
    data = tar_bytes(("model.onnx", b"weights"))
    response = upload(shared_api, data, digest=sha256(b"something else"))
    body = assert_problem(response, 400, "digest_mismatch", "sha256")
    assert sha256(data) in body["detail"]
    register = shared_api.post(f"{API}/models/evil/versions", json={"artifact": sha256(data)})
    assert_problem(register, 404, "artifact_not_found")


@pytest.mark.parametrize("digest", ["abc", "G" * 64, "A" * 64])
def test_malformed_upload_digest_is_422(shared_api: httpx.Client, unchanged: None,
                                        digest: str) -> None:
    response = upload(shared_api, tar_bytes(("model.onnx", b"w")), digest=digest)
    assert_problem(response, 422, "validation_failed", "sha256")


def test_upload_without_digest_is_422(shared_api: httpx.Client, unchanged: None) -> None:
    response = shared_api.post(f"{API}/artifacts", content=tar_bytes(("model.onnx", b"w")))
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["field"].endswith("sha256")


# -- unsafe archives ----------------------------------------------------------------------

UNSAFE = {
    "dotdot": lambda: tar_bytes(("model.onnx", b"w"), ("../evil.txt", b"x")),
    "nested-dotdot": lambda: tar_bytes(("sub/../../evil.txt", b"x")),
    "absolute": lambda: tar_bytes(("model.onnx", b"w"), ("/tmp/evil.txt", b"x")),
    "symlink-escaping": lambda: tar_bytes(("model.onnx", b"w"),
                                          link("evil-link", "../../../etc/passwd")),
    "symlink-absolute": lambda: tar_bytes(link("evil-link", "/etc/passwd")),
    "symlink-then-write-through": lambda: tar_bytes(link("evil-dir", ".."),
                                                    ("evil-dir/evil.txt", b"x")),
    "hardlink-escaping": lambda: tar_bytes(("a/b/model.onnx", b"w"),
                                           link("a/b/evil", "../outside", hard=True)),
    "device": lambda: tar_bytes(_device("evil-dev")),
    "gzip-dotdot": lambda: tar_bytes(("../evil.txt", b"x"), gz=True),
    "zip-dotdot": lambda: zip_bytes(("model.onnx", b"w"), ("../evil.txt", b"x")),
    "zip-absolute": lambda: zip_bytes(("/evil.txt", b"x")),
    "not-an-archive": lambda: b"just some bytes, neither tar nor zip" * 20,
}


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_archive_is_refused_and_nothing_stored(shared_api: httpx.Client,
                                                      unchanged: None, kind: str) -> None:
    data = UNSAFE[kind]()
    response = upload(shared_api, data)
    assert_problem(response, 400, "invalid_artifact")
    # ...and nothing can be registered from it.
    register = shared_api.post(f"{API}/models/evil/versions", json={"artifact": sha256(data)})
    assert_problem(register, 404, "artifact_not_found")


def test_truncated_archive_is_refused(shared_api: httpx.Client, unchanged: None) -> None:
    whole = tar_bytes(("model.onnx", b"w" * 5000))
    assert_problem(upload(shared_api, whole[:2048]), 400, "invalid_artifact")


def test_empty_archive_is_refused(shared_api: httpx.Client, unchanged: None) -> None:
    assert_problem(upload(shared_api, tar_bytes()), 400, "invalid_request", "body")


def test_links_inside_the_folder_are_accepted(api: httpx.Client, yard: Yard) -> None:
    data = tar_bytes(("weights/model.onnx", b"w"), link("notes.txt", "weights/model.onnx"))
    response = upload(api, data)
    assert response.status_code == 201, response.text
    stored = response.json()["sha256"]
    assert _stored(yard) == [stored]
    with tarfile.open(fileobj=io.BytesIO(api.get(f"{API}/artifacts/{stored}").content)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["notes.txt", "weights/model.onnx"]
    assert all(m.isfile() for m in members.values())  # the link was resolved to a file


# -- trust --------------------------------------------------------------------------------

def test_joblib_pickle_needs_trust(api: httpx.Client, yard: Yard, tmp_path: Path,
                                   classifier: LogisticRegression, tabular: Data) -> None:
    joblib.dump(classifier, tmp_path / "model.joblib")
    data = tar_bytes(("model.joblib", (tmp_path / "model.joblib").read_bytes()))
    uploaded = upload(api, data)
    assert uploaded.status_code == 201, uploaded.text
    digest = uploaded.json()["sha256"]
    rows = tabular[0][:3].tolist()
    body = {"artifact": digest, "sample": sample_tensor(rows)}

    refused = api.post(f"{API}/models/churn/versions", json=body)
    problem = assert_problem(refused, 400, "untrusted_artifact", "trusted")
    assert "pickle" in problem["detail"]
    assert_problem(api.get(f"{API}/models/churn"), 404, "model_not_found")
    assert api.get(f"{API}/versions").json() == []

    accepted = api.post(f"{API}/models/churn/versions", json={**body, "trusted": True})
    assert accepted.status_code == 201, accepted.text
    version = accepted.json()
    assert version["version"] == 1
    assert version["flavor"] == "sklearn"
    assert version["lineage"]["trusted"] is True
    assert version["flavor_options"]["format"] == "pickle"


def test_python_model_code_needs_trust(api: httpx.Client) -> None:
    spec = json.dumps({"class": "os:system"}).encode()
    uploaded = upload(api, tar_bytes(("modelyard_python.json", spec)))
    assert uploaded.status_code == 201, uploaded.text
    response = api.post(f"{API}/models/code/versions",
                        json={"artifact": uploaded.json()["sha256"],
                              "sample": sample_tensor([[0.0]])})
    assert_problem(response, 400, "untrusted_artifact", "trusted")
    assert api.get(f"{API}/models").json() == []


def test_skops_artifact_registers_without_trust(api: httpx.Client, tmp_path: Path,
                                                classifier: LogisticRegression,
                                                tabular: Data) -> None:
    data = tar_bytes(("model.skops", _skops_bytes(classifier, tmp_path)))
    digest = upload(api, data).json()["sha256"]
    response = api.post(f"{API}/models/churn/versions",
                        json={"artifact": digest, "sample": sample_tensor(tabular[0][:3])})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{API}/models/churn/versions/1"
    assert response.json()["lineage"]["trusted"] is False


def test_invalid_onnx_is_refused_at_registration(api: httpx.Client) -> None:
    digest = upload(api, tar_bytes(("model.onnx", b"not a protobuf"))).json()["sha256"]
    response = api.post(f"{API}/models/bad/versions", json={"artifact": digest})
    assert_problem(response, 400, "invalid_artifact")
    assert api.get(f"{API}/models").json() == []


# -- downloads ----------------------------------------------------------------------------

def test_download_returns_the_stored_bytes(api: httpx.Client, tmp_path: Path,
                                           classifier: LogisticRegression,
                                           tabular: Data) -> None:
    skops = _skops_bytes(classifier, tmp_path)
    data = tar_bytes(("model.skops", skops), gz=True)  # not canonical: re-packed on upload
    uploaded = upload(api, data)
    assert uploaded.status_code == 201, uploaded.text
    doc = uploaded.json()
    assert doc["uploaded_sha256"] == sha256(data)
    digest = doc["sha256"]
    assert digest != sha256(data)
    again = upload(api, tar_bytes(("model.skops", skops)))  # same files, same address
    assert again.json()["sha256"] == digest

    version = api.post(f"{API}/models/churn/versions",
                       json={"artifact": digest, "sample": sample_tensor(tabular[0][:3])})
    assert version.json()["artifact"] == {"sha256": digest, "size": doc["size"]}

    response = api.get(f"{API}/artifacts/{digest}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-tar"
    assert int(response.headers["content-length"]) == doc["size"] == len(response.content)
    assert hashlib.sha256(response.content).hexdigest() == digest
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        member = tar.extractfile("model.skops")
        assert member is not None
        assert member.read() == skops


# -- size limits --------------------------------------------------------------------------

ARTIFACT_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_artifacts(shared: Shared) -> Iterator[httpx.Client]:
    """A second server over the shared yard that takes artifacts of at most 64 KiB."""
    with server_with(shared, max_artifact_bytes=ARTIFACT_LIMIT) as c:
        yield c


def test_artifact_over_the_limit_is_413(small_artifacts: httpx.Client, unchanged: None) -> None:
    data = tar_bytes(("model.onnx", np.random.default_rng(0).bytes(2 * ARTIFACT_LIMIT)))
    assert_problem(upload(small_artifacts, data), 413, "payload_too_large")


def test_archive_expanding_past_the_limit_is_refused(small_artifacts: httpx.Client,
                                                     unchanged: None) -> None:
    """A compression bomb: small on the wire, large once extracted."""
    data = tar_bytes(("model.onnx", b"\0" * (16 * ARTIFACT_LIMIT)), gz=True)
    assert len(data) < ARTIFACT_LIMIT
    body = assert_problem(upload(small_artifacts, data), 400, "invalid_artifact")
    assert str(ARTIFACT_LIMIT) in body["detail"]


def test_zip_expanding_past_the_limit_is_refused(small_artifacts: httpx.Client,
                                                 unchanged: None) -> None:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", b"\0" * (16 * ARTIFACT_LIMIT))
    data = buffer.getvalue()
    assert len(data) < ARTIFACT_LIMIT
    assert_problem(upload(small_artifacts, data), 400, "invalid_artifact")
