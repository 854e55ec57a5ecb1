"""Retraining through the real server on a random 127.0.0.1 port: answers and their labels go
through the data plane (inference log, feedback route), the cycle runs on the server's own
worker, and the SDK, the roles and the CLI (``--url``) see it to its canary."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from retrain_support import champion, generated, policy, write_entrypoint
from typer.testing import CliRunner

from modelyard import Client, Yard
from modelyard.cli.main import app
from modelyard.client import ApiError
from modelyard.serving.server import BackgroundServer


@pytest.fixture
def entrypoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    ref = write_entrypoint(tmp_path / "code", "api_test_training")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    return ref


def until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def serve_and_label(server: BackgroundServer, client: Client, admin_key: str,
                    requests: int) -> None:
    """``requests`` answers of four rows each through the data plane, then their labels."""
    x, y = generated(requests * 4, seed=11)
    labels = []
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"authorization": f"Bearer {admin_key}"}) as http:
        for i in range(requests):
            rid = uuid.uuid4().hex
            r = http.post("/endpoints/churn/predict", headers={"x-request-id": rid},
                          json={"inputs": x[i * 4:(i + 1) * 4].tolist()})
            assert r.status_code == 200, r.text
            labels.append({"request_id": rid, "label": y[i * 4:(i + 1) * 4].tolist()})
    until(lambda: len(client.inference_log("churn", limit=1000)["records"]) >= requests, 30,
          "the inference log writer")
    answer = client.send_feedback("churn", labels)
    assert answer["labels"] == requests and answer["unmatched"] == 0, answer


def test_a_cycle_through_the_server_sdk_roles_and_cli(
        yard: Yard, server: BackgroundServer, client: Client, admin_key: str,
        entrypoint: str, tmp_path: Path) -> None:
    champion(yard)
    client.wait_ready("churn")
    serve_and_label(server, client, admin_key, 60)

    keys = {name: client.create_key(name, roles)["key"] for name, roles in {
        "viewer": ["viewer"], "operator": ["operator"], "dev": ["developer"]}.items()}
    doc = policy(entrypoint, data={"inference_log": {"since": "1h", "min_labels": 200}})
    with Client(server.url, keys["operator"]) as operator:
        with pytest.raises(ApiError) as refused:  # names project code: jobs:run_code
            operator.set_retrain_policy("churn", doc)
        assert refused.value.status == 403
    with Client(server.url, keys["dev"]) as dev:
        saved = dev.set_retrain_policy("churn", doc)
    assert saved["policy"]["entrypoint"] == entrypoint and saved["created_by"].startswith(
        "key:dev:")
    with pytest.raises(ApiError) as invalid:
        client.set_retrain_policy("churn", {**doc, "gate": {"metric": "accuracy",
                                                            "min_gain": "lots"}})
    assert (invalid.value.status, invalid.value.problem["field"]) == (422, "gate.min_gain")
    with pytest.raises(ApiError) as unknown:
        client.set_retrain_policy("nope", doc)
    assert unknown.value.code == "model_not_found"

    with Client(server.url, keys["viewer"]) as viewer:
        assert viewer.retrain_policy("churn")["policy"]["endpoint"] == "churn"
        with pytest.raises(ApiError) as forbidden:
            viewer.retrain("churn")
        assert forbidden.value.status == 403
    with Client(server.url, keys["operator"]) as operator:
        cycle = operator.retrain("churn", "labels came in")
    with pytest.raises(ApiError) as busy:
        client.retrain("churn")
    assert busy.value.status == 409 and busy.value.problem["cycle"]["id"] == cycle["id"]

    done = until(lambda: (c := client.retrain_cycle(cycle["id"]))["state"] not in (
        "queued", "training", "evaluating") and c, 120, "the cycle's verdict")
    assert done["state"] == "rolling_out", done
    assert done["data"]["rows"] == 240 and done["data"]["sources"][0]["inference_log"] == \
        "churn"
    assert done["rollout"]["target"] == "churn:2" and done["rollout"]["status"] == "running"
    assert client.rollout(done["rollout_id"])["baseline"] == "churn:1"
    assert client.version("churn:2")["lineage"]["parent"] == "churn:1"
    assert [c["id"] for c in client.retrain_cycles("churn")] == [cycle["id"]]
    with pytest.raises(ApiError) as missing:
        client.retrain_cycle(999_999)
    assert missing.value.code == "retrain_cycle_not_found"
    assert client.audit_verify()["ok"]

    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> str:
        result = runner.invoke(app, ["--url", server.url, "--key", admin_key, *args],
                               env={"COLUMNS": "200"})
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    out = run("retrain", "status", "churn")
    assert "Retraining cycles" in out and "rolling_out" in out and "churn:2" in out
    assert "accuracy:" in out and "pass" in out and f"{done['rollout_id']} running" in out
    detail = run("retrain", "status", "--cycle", str(cycle["id"]))
    assert "gate: better: accuracy" in detail and "input[3]=" in detail
    shown = yaml.safe_load(run("retrain", "policy", "show", "churn"))
    assert shown["entrypoint"] == entrypoint
    assert json.loads(run("--json", "retrain", "status"))[0]["id"] == cycle["id"]
    assert "model_not_found" in run("retrain", "run", "other-model", ok=False)
    file = tmp_path / "policy.yaml"
    file.write_text(yaml.safe_dump({**doc, "triggers": {"schedule": "0 3 * * *"}}))
    assert "saved" in run("retrain", "policy", "set", "churn", "-f", str(file))
    [schedule] = [s for s in client.list_schedules() if s["name"] == "retrain-churn"]
    assert schedule["kind"] == "retrain" and schedule["cron"] == "0 3 * * *"
    assert schedule["payload"] == {"model": "churn", "trigger": "schedule"}
    client.abort_rollout(done["rollout_id"])
    assert "rolled_back" in run("retrain", "status", "churn")
