"""The inference log through the real server and clients: every answer carries its request
id and version, the log holds the same version, labels and outcomes join by request id, and
reading the log needs a developer (payloads are data, not metadata)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from support import assert_problem

X = np.arange(8, dtype=np.float32).reshape(2, 4)
API = "/api/v1"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings.load(tmp_path / "yard", env={}, database_url=database_url,
                         inference_log_flush_s=0.05, inference_log_max_per_s=0)


@pytest.fixture
def setup(yard: Yard, admin_key: str) -> Iterator[tuple[BackgroundServer, dict[str, str]]]:
    for _ in range(2):  # echo:1 and echo:2
        yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                      sample=X)
    yard.create_endpoint("echo", "echo:1", redaction={"secret": "drop"})
    yard.create_endpoint("quiet", "echo:1", log_sample=0.0)
    yard.set_traffic("echo", {"split": [{"model": "echo:1", "weight": 50},
                                        {"model": "echo:2", "weight": 50}]})
    keys = {role: yard.create_key(f"{role}-owner", [role])["key"]
            for role in ("predictor", "developer", "viewer")}
    keys["admin"] = admin_key
    with BackgroundServer(yard) as srv:
        yield srv, keys


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def log_of(http: httpx.Client, key: str, endpoint: str, want: int,
           **params: Any) -> list[dict[str, Any]]:
    """The endpoint's records once ``want`` of them are written (the writer is async)."""
    deadline = time.monotonic() + 15
    while True:
        r = http.get(f"{API}/endpoints/{endpoint}/log", headers=bearer(key),
                     params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        records: list[dict[str, Any]] = r.json()["records"]
        if len(records) >= want or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_the_log_holds_the_version_that_answered_each_request(
        setup: tuple[BackgroundServer, dict[str, str]]) -> None:
    srv, keys = setup
    served: dict[str, str] = {}
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for i in range(40):
            headers = bearer(keys["predictor"])
            if i % 2:
                headers["x-request-id"] = f"client-{i}"
            r = http.post("/endpoints/echo/predict", headers=headers,
                          json={"inputs": X.tolist()})
            assert r.status_code == 200, r.text
            rid = r.headers["x-request-id"]
            assert rid == f"client-{i}" if i % 2 else len(rid) == 24 and rid not in served
            served[rid] = r.headers["modelyard-model-version"]
        assert set(served.values()) == {"echo:1", "echo:2"}
        records = log_of(http, keys["developer"], "echo", 40)
        assert {r["request_id"]: r["version"] for r in records} == served
        assert all(r["inputs"] == {"input": X.tolist()} and r["rows"] == 2 for r in records)
        assert all(r["outputs"] == {"output": X.tolist()} for r in records)

        only_v2 = log_of(http, keys["developer"], "echo", 1, version="echo:2")
        assert {r["version"] for r in only_v2} == {"echo:2"}
        assert len(only_v2) == sum(v == "echo:2" for v in served.values())
        page = http.get(f"{API}/endpoints/echo/log", headers=bearer(keys["developer"]),
                        params={"limit": 15, "since": "1h", "payloads": "false"}).json()
        assert len(page["records"]) == 15 and "inputs" not in page["records"][0]
        rest = http.get(f"{API}/endpoints/echo/log", headers=bearer(keys["developer"]),
                        params={"limit": 1000, "before_id": page["next"]}).json()
        assert len(rest["records"]) == 25 and rest["next"] is None

        summary = http.get(f"{API}/endpoints/echo/log/summary",
                           headers=bearer(keys["developer"])).json()["versions"]
        assert sum(s["records"] for s in summary) == 40
        assert all(s["errors"] == 0 for s in summary)


def test_sampling_zero_logs_nothing_and_viewers_cannot_read_payloads(
        setup: tuple[BackgroundServer, dict[str, str]]) -> None:
    srv, keys = setup
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for _ in range(5):
            r = http.post("/endpoints/quiet/predict", headers=bearer(keys["predictor"]),
                          json={"inputs": X.tolist()})
            assert r.status_code == 200
        http.post("/endpoints/echo/predict", headers=bearer(keys["predictor"]),
                  json={"inputs": X.tolist()})
        assert log_of(http, keys["developer"], "echo", 1)
        assert log_of(http, keys["developer"], "quiet", 0) == []
        for role in ("viewer", "predictor"):
            r = http.get(f"{API}/endpoints/echo/log", headers=bearer(keys[role]))
            assert_problem(r, 403, "forbidden")
        r = http.get(f"{API}/endpoints/echo/log", headers=bearer(keys["developer"]),
                     params={"since": "yesterday"})
        assert_problem(r, 422, "validation_failed", field="since")
        r = http.get(f"{API}/endpoints/nope/log", headers=bearer(keys["developer"]))
        assert_problem(r, 404, "endpoint_not_found")


def test_labels_and_outcomes_join_by_request_id(
        setup: tuple[BackgroundServer, dict[str, str]], yard: Yard) -> None:
    srv, keys = setup
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        ids = []
        for i in range(6):
            r = http.post("/endpoints/echo/predict", headers={
                **bearer(keys["predictor"]), "x-request-id": f"req-{i}"},
                json={"inputs": X.tolist()})
            ids.append((r.headers["x-request-id"], r.headers["modelyard-model-version"]))
        log_of(http, keys["developer"], "echo", 6)
        feedback = [{"request_id": rid, "label": [1, 0]} for rid, _ in ids]
        feedback += [{"request_id": ids[0][0], "value": 1.0},  # version from the log
                     {"request_id": "never-logged", "label": 3}]
        r = http.post("/endpoints/echo/feedback", headers=bearer(keys["predictor"]),
                      json=feedback)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": 8, "outcomes": 1, "labels": 7, "unmatched": 1}

        # All or nothing: one bad item and nothing of the batch is stored.
        r = http.post("/endpoints/echo/feedback", headers=bearer(keys["predictor"]), json=[
            {"request_id": ids[1][0], "label": 0},
            {"request_id": "never-logged", "value": 1.0}])
        assert_problem(r, 422, "validation_failed", field="body[1].version")
        r = http.post("/endpoints/echo/feedback", headers=bearer(keys["predictor"]),
                      json={"label": 1})
        assert_problem(r, 422, "validation_failed", field="body.request_id")
        r = http.post("/endpoints/echo/feedback", json={"request_id": "x", "label": 1})
        assert r.status_code == 401  # the endpoint's own auth mode decides

    from datetime import UTC, datetime, timedelta

    from modelyard.store import feedback as feedback_repo
    from modelyard.store import inference_log as repo
    with yard.db.transaction() as session:
        joined = repo.labelled(session, "echo", datetime.now(UTC) - timedelta(hours=1),
                               datetime.now(UTC) + timedelta(minutes=1))
        assert sorted((j["request_id"], j["version"], j["label"]) for j in joined) == \
            sorted((rid, version, [1, 0]) for rid, version in ids)
        first_version = ids[0][1]
        assert feedback_repo.values(session, "echo", first_version,
                                    datetime.now(UTC) - timedelta(hours=1)) == [1.0]


def test_redaction_rules_apply_to_the_log(yard: Yard, admin_key: str) -> None:
    yard.register("pair", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample={"x": X, "secret": X})
    yard.create_endpoint("pair", "pair:1", redaction={"secret": "drop"}, auth="public")
    with BackgroundServer(yard) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        r = http.post("/endpoints/pair/predict",
                      json={"inputs": {"x": X.tolist(), "secret": (X + 1).tolist()}})
        assert r.status_code == 200, r.text
        [record] = log_of(http, admin_key, "pair", 1)
    assert set(record["inputs"]) == {"x"} and set(record["outputs"]) == {"x"}
