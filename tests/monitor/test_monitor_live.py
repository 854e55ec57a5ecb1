"""Monitoring end to end through the real server: traffic over HTTP, the server's own
scheduler queues monitor jobs and its worker runs them, drift shows up in the API, the SDK and
the CLI, an alert fires, and labels sent later through /feedback become live quality."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelyard import Client, Yard
from modelyard.cli.main import app
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings

WINDOW_S = 10
runner = CliRunner()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Real time passes here (windows must close): SQLite only; the same runs on PostgreSQL
    are in test_monitor_runner.py with a clock the test moves."""
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings.load(tmp_path / "yard", env={}, database_url=database_url,
                         inference_log_flush_s=0.05, inference_log_max_per_s=0, monitor_tick_s=0.5)


def wait_for_boundary() -> None:
    """Sleep to just after the next window boundary (windows are aligned to the epoch)."""
    time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.2)


def send(http: httpx.Client, x: np.ndarray) -> list[tuple[str, int]]:
    ids = []
    for row in x:
        r = http.post("/endpoints/churn/predict", json={"inputs": [row.tolist()]})
        assert r.status_code == 200, r.text
        ids.append((r.headers["x-request-id"], int(r.json()["outputs"]["label"][0])))
    return ids


def until(check: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def test_drift_and_quality_under_real_traffic(yard: Yard, admin_key: str) -> None:
    rng = np.random.default_rng(5)
    x_train = rng.normal(size=(3000, 4)).astype(np.float32)
    y_train = (x_train[:, 0] + x_train[:, 1] > 0).astype(np.int64)
    yard.register("churn", LogisticRegression().fit(x_train, y_train), sample=x_train[:5],
                  data=x_train)
    yard.create_endpoint("churn", "churn:1", auth="public")
    yard.set_monitor("churn", {"window_s": WINDOW_S, "evaluate_every_s": 5,
                               "drift": {"min_samples": 100},
                               "quality": {"task": "classification", "min_samples": 30}})
    with BackgroundServer(yard) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        client = Client(srv.url, admin_key)
        wait_for_boundary()
        send(http, rng.normal(size=(150, 4)).astype(np.float32))
        wait_for_boundary()
        shifted = rng.normal(size=(150, 4)).astype(np.float32)
        shifted[:, 1] += 3.0
        answered = send(http, shifted)
        wait_for_boundary()

        until(lambda: any(w["status"] == "drift" for w in client.drift("churn")["windows"]))
        statuses = [w["status"] for w in client.drift("churn")["windows"]]
        assert "drift" in statuses and statuses.index("drift") > statuses.index("ok"), statuses
        firing = until(lambda: client.alerts(endpoint="churn", status="firing"))
        assert [a["rule"] for a in firing] == ["feature-drift"]
        events = client.alert_events(endpoint="churn")
        assert events[0]["kind"] == "firing"
        assert "input[1]" in events[0]["payload"]["detail"]

        # Labels arrive late: the truth for the shifted window's answers.
        truth = (shifted[:, 0] + shifted[:, 1] > 0).astype(int)
        accepted = client.send_feedback("churn", [
            {"request_id": rid, "label": int(t)} for (rid, _), t in zip(answered, truth,
                                                                       strict=True)])
        assert accepted["labels"] == 150 and accepted["unmatched"] == 0
        quality = until(lambda: client.quality("churn")["windows"])
        assert quality[-1]["n"] == 150 and quality[-1]["status"] == "ok"
        expected = float(np.mean([p == t for (_, p), t in zip(answered, truth, strict=True)]))
        assert quality[-1]["score"] == pytest.approx(expected)

        # The same through the CLI, against the server.
        out = runner.invoke(app, ["--url", srv.url, "--key", admin_key, "monitor", "drift",
                                  "churn"], env={"COLUMNS": "200"})
        assert out.exit_code == 0, out.output
        assert "drift" in out.output and "input[1]" in out.output
        out = runner.invoke(app, ["--url", srv.url, "--key", admin_key, "--json", "monitor",
                                  "alerts", "--status", "firing"])
        assert [a["rule"] for a in json.loads(out.output)] == ["feature-drift"]
        jobs = client.list_jobs(kind="monitor")
        assert jobs and all(j["state"] in ("succeeded", "queued", "running") for j in jobs)
