"""A monitor run over a store (SQLite and PostgreSQL) with a clock the test moves: drift per
closed window against the version's reference profile, quality once labels arrive, alerts
that fire once, resolve, reach a webhook and the audit chain, and ask for retraining."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.control.monitoring import MONITOR_KIND
from modelyard.domain.errors import ValidationFailed
from modelyard.monitor.runner import MonitorRunner
from modelyard.store import inference_log as log_repo

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a window boundary (60 s windows)
RNG = np.random.default_rng(3)


@pytest.fixture
def model(yard: Yard) -> tuple[Yard, LogisticRegression]:
    x = RNG.normal(size=(2000, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    clf = LogisticRegression().fit(x, y)
    yard.register("churn", clf, sample=x[:5], data=x)
    yard.create_endpoint("churn", "churn:1")
    return yard, clf


class Receiver(BaseHTTPRequestHandler):
    """A real webhook endpoint on 127.0.0.1: records what it is sent."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True,
                              kwargs={"poll_interval": 0.05})  # shutdown() in 0.05 s
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()


def traffic(yard: Yard, clf: LogisticRegression, start: datetime, n: int,
            shift: float = 0.0, prefix: str = "r") -> list[tuple[str, int]]:
    """``n`` logged requests of one row in ``[start, start + 60 s)``, as the writer
    stores them; the (request id, true label) of each."""
    x = RNG.normal(size=(n, 4)).astype(np.float32)
    x[:, 0] += shift
    predicted = clf.predict(x)
    truth = (x[:, 0] + x[:, 1] > 0).astype(int)
    records = [{"at": start + timedelta(seconds=60 * i / n), "endpoint": "churn",
                "version": "churn:1", "request_id": f"{prefix}{i}", "status": 200,
                "latency_ms": 2.0, "rows": 1, "inputs": {"input": [x[i].tolist()]},
                "outputs": {"label": [int(predicted[i])]}, "prediction": float(predicted[i])}
               for i in range(n)]
    with yard.db.transaction() as session:
        log_repo.insert_many(session, records)
    return [(f"{prefix}{i}", int(truth[i])) for i in range(n)]


def test_a_shift_is_detected_alerted_once_and_resolved(
        model: tuple[Yard, LogisticRegression], webhook: str) -> None:
    yard, clf = model
    assert yard.profile("churn:1")["profile"]["rows"] == 2000
    # The operator allows the local receiver (the outbound_allow setting): checked when set.
    yard.monitoring.outbound_allow = "127.0.0.1"
    yard.set_monitor("churn", {"window_s": 60, "evaluate_every_s": 10, "webhook": webhook,
                               "quality": {"task": "classification", "min_samples": 50}})
    retrains: list[tuple[str, str, str]] = []
    now = [T0 + timedelta(seconds=5)]
    runner = MonitorRunner(yard.db, clock=lambda: now[0], outbound_allow="127.0.0.1",
                           retrain=lambda *a, **kw: retrains.append(a) or {"id": 1})

    traffic(yard, clf, T0 - timedelta(seconds=60), 400)
    first = runner.run("churn")
    assert first["drift_windows"] == 1 and first["events"] == []
    [window] = yard.drift("churn")["windows"]
    assert window["status"] == "ok" and window["report"]["drifted"] is False

    labels = traffic(yard, clf, T0, 400, shift=2.5, prefix="s")
    now[0] = T0 + timedelta(seconds=65)
    shifted = runner.run("churn")
    assert shifted["events"] == [{"kind": "firing", "rule": "feature-drift"}]
    windows = yard.drift("churn")["windows"]
    assert [w["status"] for w in windows] == ["ok", "drift"]
    assert "input[0]" in windows[-1]["report"]["drifted_features"]
    [alert] = yard.alerts(endpoint="churn", status="firing")
    assert alert["labels"] == {"endpoint": "churn", "version": "churn:1"}
    assert retrains and retrains[0][:2] == ("churn", "drift")
    assert [r["kind"] for r in Receiver.received] == ["firing"]
    [event] = yard.alert_events(endpoint="churn")
    assert event["delivered"] == {"log": "ok", "webhook": "ok", "retrain": "started"}

    # Firing again: no second notification. Labels arrive late: quality of the window.
    now[0] = T0 + timedelta(seconds=80)
    assert runner.run("churn")["events"] == []
    from modelyard.store import inference_log as repo
    with yard.db.transaction() as session:
        repo.put_labels(session, "churn", labels)
    now[0] = T0 + timedelta(seconds=95)
    assert runner.run("churn")["quality_windows"] == 1
    [quality] = yard.quality("churn")["windows"]
    assert quality["status"] == "ok" and quality["n"] == 400
    assert 0.5 < quality["score"] <= 1.0  # accuracy under the shift, computed from labels

    traffic(yard, clf, T0 + timedelta(seconds=60), 400, prefix="b")  # back to normal
    now[0] = T0 + timedelta(seconds=125)
    assert runner.run("churn")["events"] == [{"kind": "resolved", "rule": "feature-drift"}]
    assert [r["kind"] for r in Receiver.received] == ["firing", "resolved"]
    assert yard.alerts(endpoint="churn", status="firing") == []
    actions = [r["action"] for r in yard.audit_records()]
    assert actions.count("alert.firing") == 1 and actions.count("alert.resolved") == 1
    assert yard.audit_verify()["ok"]


def test_a_version_without_profile_says_so_and_windows_are_not_redone(
        yard: Yard, tabular: Any) -> None:
    x = tabular[0]
    yard.register("plain", LogisticRegression().fit(x, tabular[1]), sample=x[:5])
    yard.create_endpoint("plain", "plain:1")
    yard.set_monitor("plain", {"window_s": 60})
    with yard.db.transaction() as session:
        log_repo.insert_many(session, [{
            "at": T0 - timedelta(seconds=30), "endpoint": "plain", "version": "plain:1",
            "request_id": "a", "status": 200, "latency_ms": 1.0, "rows": 1,
            "inputs": {"input": [x[0].tolist()]}, "outputs": {"label": [1]},
            "prediction": 1.0}])
    runner = MonitorRunner(yard.db, clock=lambda: T0 + timedelta(seconds=1))
    assert runner.run("plain")["drift_windows"] == 1
    [window] = yard.drift("plain")["windows"]
    assert window["status"] == "no_reference" and "profile" in window["report"]["reason"]
    assert runner.run("plain")["drift_windows"] == 0  # that window is done


def test_monitor_specs_and_profiles_are_validated(yard: Yard, tabular: Any) -> None:
    x = tabular[0]
    yard.register("churn", LogisticRegression().fit(x, tabular[1]), sample=x[:5])
    yard.create_endpoint("churn", "churn:1")
    with pytest.raises(ValidationFailed) as bad:
        yard.set_monitor("churn", {"window_s": 5})
    assert bad.value.field == "window_s"
    with pytest.raises(ValidationFailed) as bad:
        yard.set_monitor("churn", {"alerts": [{"name": "x", "kind": "quality"}]})
    assert bad.value.field == "alerts[0].op"
    with pytest.raises(ValidationFailed) as bad:
        yard.set_monitor("churn", {"quality": {"task": "ranking"}})
    assert bad.value.field == "quality.task"
    with pytest.raises(ValidationFailed) as bad:  # a column too many: not the inputs
        yard.set_profile("churn:1", np.hstack([x, x[:, :1]]))
    assert bad.value.field is not None and bad.value.field.startswith("columns")
    assert yard.set_profile("churn:1", x)["profile"]["predictions"]["kind"] == "categorical"
    assert MONITOR_KIND in yard.jobs.handlers.kinds()


def test_labels_of_a_window_still_open_are_scored_once_it_closes(
        model: tuple[Yard, LogisticRegression]) -> None:
    """Labels can arrive before their window closes: the run that sees them cannot score
    the window yet, and the next one must not skip them as already seen."""
    from sqlalchemy import update

    from modelyard.store.tables import LabelRow

    yard, clf = model
    yard.set_monitor("churn", {"window_s": 60, "evaluate_every_s": 10,
                               "quality": {"task": "classification", "min_samples": 50}})
    now = [T0 + timedelta(seconds=55)]
    runner = MonitorRunner(yard.db, clock=lambda: now[0])
    labels = traffic(yard, clf, T0 + timedelta(seconds=60), 200, prefix="o")
    with yard.db.transaction() as session:
        log_repo.put_labels(session, "churn", labels)
        session.execute(update(LabelRow).values(at=T0 + timedelta(seconds=90)))
    now[0] = T0 + timedelta(seconds=95)  # labelled, but [T0+60, T0+120) is still open
    assert runner.run("churn")["quality_windows"] == 0
    now[0] = T0 + timedelta(seconds=125)  # closed now; no new labels since the last run
    assert runner.run("churn")["quality_windows"] == 1
    [quality] = yard.quality("churn")["windows"]
    assert quality["n"] == 200
    now[0] = T0 + timedelta(seconds=140)
    assert runner.run("churn")["quality_windows"] == 0  # scored once
