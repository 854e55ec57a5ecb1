"""The closed loop of issue 7, end to end through the real server, on generated data:

traffic over HTTP -> an injected shift (the inputs move and the world's rule changes) ->
drift detected on the first window after the shift -> labels arrive late through /feedback
-> the drift alert starts a retraining cycle -> the challenger, trained on the labelled
inference log, beats the champion on a holdout -> a canary under live load -> promoted (the
endpoint's champion alias moves). A second cycle with a worse challenger stops at the gate.
Everything is in the audit chain, which verifies.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Client, Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings

WINDOW_S = 10
# The project's training entrypoint (trusted project code): a logistic regression on the
# labelled window, or, with params kind=bad, the commonest class.
TRAINING = """
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression


def train(ctx):
    if ctx.params.get("kind") == "bad":
        model = DummyClassifier(strategy="most_frequent").fit(ctx.x, ctx.y)
    else:
        model = LogisticRegression().fit(ctx.x, ctx.y)
    return {"model": model, "params": dict(ctx.params)}
"""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Real time passes (windows close, a canary runs): SQLite only here; the cycle itself
    runs on PostgreSQL too in tests/jobs/test_retraining_cycle.py."""
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings.load(tmp_path / "yard", env={}, database_url=database_url,
                         inference_log_flush_s=0.05, inference_log_max_per_s=0,
                         monitor_tick_s=0.5, rollout_tick_s=0.2)


@pytest.fixture
def entrypoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "lifecycle_training.py").write_text(TRAINING)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    return "lifecycle_training:train"


def world(n: int, rng: np.random.Generator, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Before: x ~ N(0, 1), the class is x0 + 0.5 x1 > 0. After: x1 moved by +2 and the
    class follows x0 - x1 + 2 > 0 (what the champion learned no longer holds)."""
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 3] = rng.integers(0, 3, size=n)
    if not shifted:
        return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    x[:, 1] += 2.0
    return x, (x[:, 0] - x[:, 1] + 2.0 > 0).astype(np.int64)


def wait_for_boundary() -> None:
    time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.2)


def until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_drift_retrain_gate_canary_promotion(yard: Yard, admin_key: str,
                                             entrypoint: str) -> None:
    rng = np.random.default_rng(11)
    x_train, y_train = world(3000, rng, shifted=False)
    yard.register("churn", LogisticRegression().fit(x_train, y_train), sample=x_train[:4],
                  data=x_train)  # the reference profile: drift is tested against it
    yard.set_alias("churn", "champion", 1)
    yard.create_endpoint("churn", "churn@champion", auth="public")
    yard.set_monitor("churn", {"window_s": WINDOW_S, "evaluate_every_s": 2,
                               "drift": {"min_samples": 100}})
    yard.set_retrain_policy("churn", {
        "endpoint": "churn", "entrypoint": entrypoint, "trusted": True,
        "data": {"inference_log": {"since": "1h", "min_labels": 100}},
        "holdout": {"share": 0.3, "seed": 3},
        "gate": {"metric": "accuracy", "min_gain": 0.05},
        "triggers": {"on_drift": True},
        "rollout": {"strategy": "canary", "steps": [{"weight": 50, "duration_s": 3}],
                    "interval_s": 1, "analysis": {"min_requests": 10}},
    })
    start_seq = yard.audit_records()[-1]["seq"]

    with BackgroundServer(yard) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        client = Client(srv.url, admin_key)

        def send(x: np.ndarray) -> list[str]:
            ids = []
            for row in x:
                r = http.post("/endpoints/churn/predict", json={"inputs": [row.tolist()]})
                assert r.status_code == 200, r.text
                ids.append(r.headers["x-request-id"])
            return ids

        wait_for_boundary()
        send(world(150, rng, shifted=False)[0])
        wait_for_boundary()
        shifted_x, shifted_y = world(400, rng, shifted=True)
        ids = send(shifted_x)
        # Ground truth arrives later, by request id.
        client.send_feedback("churn", [{"request_id": rid, "label": int(label)}
                                       for rid, label in zip(ids, shifted_y, strict=True)])
        shift_window_end = (time.time() // WINDOW_S + 1) * WINDOW_S

        # Live load on the shifted world while the loop runs (the canary needs traffic).
        stop = threading.Event()
        failures: list[str] = []

        def load() -> None:
            gen = np.random.default_rng(99)
            with httpx.Client(base_url=srv.url, timeout=30) as h:
                while not stop.is_set():
                    row = world(1, gen, shifted=True)[0][0]
                    r = h.post("/endpoints/churn/predict", json={"inputs": [row.tolist()]})
                    if r.status_code != 200:
                        failures.append(r.text)
                    time.sleep(0.01)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        try:
            firing = until(lambda: client.alerts(endpoint="churn", status="firing"),
                           2 * WINDOW_S + 15, "the drift alert")
            assert firing[0]["rule"] == "feature-drift"
            drift = client.drift("churn")["windows"]
            first_drift = next(w for w in drift if w["status"] == "drift")
            # Detected on the first window that closed after the shift began.
            assert first_drift["window_end"].startswith(time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(shift_window_end)))

            cycles = until(lambda: client.retrain_cycles("churn"), 10, "a retraining cycle")
            cycle = cycles[0]
            assert cycle["trigger"] == "drift"
            done = until(lambda: (c := client.retrain_cycle(cycle["id"]))["state"] in (
                "promoted", "rolled_back", "rejected", "failed") and c, 90,
                "the cycle to finish")
            assert done["state"] == "promoted", (done.get("error"), done.get("rollout"))
            gate = done["gate"]["result"]
            assert gate["challenger"] >= gate["champion"] + 0.05, gate
            assert client.model("churn")["aliases"]["champion"] == 2
            r = http.post("/endpoints/churn/predict", json={"inputs": [x_train[0].tolist()]})
            assert r.headers["modelyard-model-version"] == "churn:2"
        finally:
            stop.set()
            loader.join(10)
        assert not failures, failures[:3]  # not one failed request through the release

        # A second cycle with a worse challenger stops at the gate.
        policy = client.retrain_policy("churn")["policy"]
        policy["params"] = {"kind": "bad"}
        client.set_retrain_policy("churn", policy)
        second = client.retrain("churn", "a baseline, for comparison")
        rejected = until(lambda: (c := client.retrain_cycle(second["id"]))["state"] in (
            "rejected", "failed", "rolling_out") and c, 60, "the second cycle")
        assert rejected["state"] == "rejected", rejected
        assert rejected["gate"]["result"]["reason"].startswith("not better enough")
        assert client.model("churn")["aliases"]["champion"] == 2

    trail = [(r["action"], r["target"]) for r in yard.audit_records()
             if r["seq"] > start_seq]
    actions = [a for a, _ in trail]
    for expected in ("alert.firing", "retrain.trigger", "job.enqueue", "model.register",
                     "retrain.gate", "rollout.start", "rollout.promoted"):
        assert expected in actions, (expected, sorted(set(actions)))
    assert actions.index("alert.firing") < actions.index("retrain.trigger") < \
        actions.index("retrain.gate") < actions.index("rollout.start")
    assert yard.audit_verify()["ok"]
