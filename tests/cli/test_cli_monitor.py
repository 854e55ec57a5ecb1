"""``modelyard monitor log|summary`` through Typer's runner: in-process against a yard on disk
(records written by the same writer the server uses), and through a real server with --url."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
from typer.testing import CliRunner

from modelyard import Yard
from modelyard.cli.main import app
from modelyard.monitor.inference_log import InferenceLog
from modelyard.serving.server import BackgroundServer

runner = CliRunner()
X = np.arange(4, dtype=np.float32).reshape(1, 4)


def cli(yard: Yard, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["--yard", str(yard.settings.home), *args],
                           env={"MODELYARD_DATABASE_URL": yard.settings.database_url,
                                "MODELYARD_ARTIFACTS_URL": yard.settings.artifacts_url,
                                "COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def seeded(yard: Yard) -> Yard:
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X)
    endpoint = yard.create_endpoint("echo", "echo:1")
    log = InferenceLog(yard.db)
    for i in range(5):
        log.offer(endpoint, "echo:1", f"req-{i}", 500 if i == 3 else 200, 0.002, 1,
                  {"input": X}, {"output": X}, None)
    log.flush()
    return yard


def test_log_and_summary_in_process(yard: Yard) -> None:
    seeded(yard)
    out = cli(yard, "monitor", "log", "echo", "--limit", "2")
    assert "req-4" in out and "req-3" in out and "req-2" not in out and "--before-id" in out
    page = json.loads(cli(yard, "--json", "monitor", "log", "echo", "--status", "error"))
    assert [r["request_id"] for r in page["records"]] == ["req-3"]
    summary = json.loads(cli(yard, "--json", "monitor", "summary", "echo", "--since", "1h"))
    assert summary["versions"][0]["records"] == 5 and summary["versions"][0]["errors"] == 1
    assert "echo:1" in cli(yard, "monitor", "summary", "echo")
    out = cli(yard, "monitor", "log", "echo", "--since", "last week", code=1)
    assert "since" in out


def test_log_through_a_server(yard: Yard, admin_key: str) -> None:
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X)
    yard.create_endpoint("echo", "echo:1", auth="public")
    with BackgroundServer(yard) as srv:
        with httpx.Client(base_url=srv.url) as http:
            rid = http.post("/endpoints/echo/predict", json={"inputs": X.tolist()}
                            ).headers["x-request-id"]
        deadline = time.monotonic() + 10
        page: dict[str, Any] = {"records": []}
        while not page["records"] and time.monotonic() < deadline:
            result = runner.invoke(app, ["--url", srv.url, "--key", admin_key, "--json",
                                         "monitor", "log", "echo"])
            assert result.exit_code == 0, result.output
            page = json.loads(result.output)
            time.sleep(0.1)
    assert [r["request_id"] for r in page["records"]] == [rid]


def test_monitor_set_show_run_and_profiles(yard: Yard, tmp_path: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    yard.register("churn", LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)),
                  sample=x[:3])
    yard.create_endpoint("churn", "churn:1")
    assert "no reference profile" in cli(yard, "models", "profile", "churn:1", code=1)
    data = tmp_path / "train.csv"
    data.write_text("a,b,c,d\n" + "\n".join(",".join(f"{v:.4f}" for v in row) for row in x))
    out = cli(yard, "models", "profile", "churn:1", "--data", str(data))
    assert "reference profile of churn:1 (300 rows)" in out and "input[3]" in out

    spec = tmp_path / "monitor.yaml"
    spec.write_text("window_s: 600\nalerts:\n  - {name: accuracy-low, kind: quality, "
                    "metric: accuracy, op: '<', threshold: 0.8}\n")
    out = cli(yard, "monitor", "set", "churn", "--file", str(spec), "--quality",
              "classification", "--slo", "0.999")
    assert "windows of 600 s" in out
    shown = json.loads(cli(yard, "--json", "monitor", "show", "churn"))
    assert shown["monitor"]["spec"]["quality"]["task"] == "classification"
    assert shown["monitor"]["spec"]["slo"] == 0.999
    assert "0 drift and 0 quality results" in cli(yard, "monitor", "run", "churn")
    # Endpoint rules are evaluated (no traffic: no data, nothing fires); per-version rules
    # wait for a version that answered.
    alerts = json.loads(cli(yard, "--json", "monitor", "alerts"))
    assert {a["rule"] for a in alerts} == {"error-budget-page", "error-budget-ticket"}
    assert {a["status"] for a in alerts} == {"inactive"}
    assert "no drift results yet" in cli(yard, "monitor", "drift", "churn")
    bad = tmp_path / "bad.yaml"
    bad.write_text("window_s: 600\nwindow: 3\n")
    assert "window" in cli(yard, "monitor", "set", "churn", "--file", str(bad), code=1)
