"""Rollouts under real traffic: a bounded load generator on 127.0.0.1 keeps calling the
endpoint while the server moves it from v1 to v2 (or back)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.serving.server import BackgroundServer

X = np.random.default_rng(9).normal(size=(2, 4)).astype(np.float32)
FAST = {"min_requests": 20, "max_divergence": None, "max_p99_ratio": 3.0,
        "p99_slack_ms": 20, "failures_to_rollback": 1}


class Flaky:
    """Fails every other call (a broken new version)."""

    calls = 0

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        Flaky.calls += 1
        if Flaky.calls % 2 == 0 and np.any(inputs["input"] != 0):
            raise RuntimeError("flaky new version")
        rows = len(inputs["input"])
        return {"label": np.zeros(rows, dtype=np.int64),
                "probabilities": np.full((rows, 2), 0.5, dtype=np.float32)}


class Sluggish:
    """Answers correctly but slowly (10x the baseline's cost and more)."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if np.any(inputs["input"] != 0):
            time.sleep(0.05)
        rows = len(inputs["input"])
        return {"label": np.zeros(rows, dtype=np.int64),
                "probabilities": np.full((rows, 2), 0.5, dtype=np.float32)}


SIGNATURE = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
             "outputs": [{"name": "label", "dtype": "int64", "shape": [-1]},
                         {"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}]}


class Load:
    """Calls the endpoint at a steady rate from a thread until stopped (bounded)."""

    def __init__(self, url: str, rate: float = 60.0, limit_s: float = 60.0) -> None:
        self.url, self.rate, self.limit_s = url, rate, limit_s
        self.codes: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10) as http:
            n = 0
            while not self._stop.is_set() and time.monotonic() - started < self.limit_s:
                n += 1
                r = http.post("/endpoints/churn/predict", json={"inputs": X.tolist()},
                              headers={"x-user-id": f"u{n % 500}"})
                self.codes[r.status_code] += 1
                self.versions[r.headers.get("modelyard-model-version", "?")] += 1
                pause = started + n / self.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    @property
    def total(self) -> int:
        return sum(self.codes.values())

    def rate_seen(self, seconds: float) -> float:
        return self.total / seconds


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def churn(yard: Yard, tabular: Any) -> Yard:
    x, label, _ = tabular
    yard.register("churn", LogisticRegression(C=1.0).fit(x, label), to_onnx=True,
                  sample=x[:4])
    yard.register("churn", LogisticRegression(C=0.5).fit(x, label), to_onnx=True,
                  sample=x[:4])
    for cls in ("Flaky", "Sluggish"):
        yard.register("churn", f"test_rollout_controller:{cls}", flavor="python",
                      trusted=True, signature=SIGNATURE)
    yard.update_project("default", policy={"card_required": []})
    yard.set_alias("churn", "production", 1)  # versions: 1, 2 good; 3 flaky; 4 slow
    yard.create_endpoint("churn", "churn@production", auth="public")
    return yard


@pytest.fixture
def server(churn: Yard) -> Iterator[BackgroundServer]:
    churn.settings = churn.settings.with_(rollout_tick_s=0.1)
    with BackgroundServer(churn) as srv:
        yield srv


def report_outcomes(yard: Yard, server: BackgroundServer, rollout_id: int,
                    rates: dict[str, float], seed: int, timeout_s: float = 40) -> None:
    """Call the endpoint and report a 0/1 outcome per answer, drawn at the answering
    version's rate, until the rollout ends (bounded in time)."""
    rng = random.Random(seed)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.url, timeout=10) as http:
        while not yard.rollout(rollout_id)["final"] and time.monotonic() < deadline:
            outcomes = []
            for _ in range(20):
                r = http.post("/endpoints/churn/predict", json={"inputs": X.tolist()},
                              headers={"x-user-id": f"u{rng.random()}"})
                version = r.headers["modelyard-model-version"]
                outcomes.append({"version": version,
                                 "value": float(rng.random() < rates[version])})
            answered = http.post("/endpoints/churn/feedback", json=outcomes)
            assert answered.status_code == 202 and answered.json()["accepted"] == 20


def wait_final(yard: Yard, rollout_id: int, timeout_s: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = yard.rollout(rollout_id)
        if state["final"]:
            return state
        time.sleep(0.1)
    raise AssertionError(f"rollout still {yard.rollout(rollout_id)}")


def test_a_canary_under_load_reaches_100_percent_without_a_failed_request(
        churn: Yard, server: BackgroundServer) -> None:
    started = time.monotonic()
    with Load(server.url) as load:
        time.sleep(0.5)
        rollout = churn.start_rollout("churn", {
            "target": "churn:2", "strategy": "canary", "interval_s": 0.5,
            "steps": [{"weight": 10, "duration_s": 1}, {"weight": 50, "duration_s": 1}],
            "analysis": FAST, "sticky_header": "x-user-id"})
        final = wait_final(churn, rollout["id"])
        time.sleep(0.5)
    seconds = time.monotonic() - started
    assert final["status"] == "promoted", final
    assert load.codes == Counter({200: load.total}), load.codes  # zero failed requests
    assert load.rate_seen(seconds) >= 50
    assert churn.model("churn").aliases["production"] == 2  # the alias moved
    assert churn.endpoint("churn").traffic is None
    assert load.versions["churn:2"] > 0 and load.versions["churn:1"] > 0
    actions = [r["action"] for r in churn.audit_records()]
    assert "rollout.start" in actions and "rollout.advance" in actions
    assert "rollout.promoted" in actions and churn.audit_verify()["ok"]


def test_a_failing_canary_is_rolled_back_within_one_interval(
        churn: Yard, server: BackgroundServer) -> None:
    with Load(server.url) as load:
        time.sleep(0.3)
        rollout = churn.start_rollout("churn", {
            "target": "churn:3", "interval_s": 0.5, "analysis": FAST,
            "steps": [{"weight": 20, "duration_s": 30}]})
        final = wait_final(churn, rollout["id"], timeout_s=20)
        time.sleep(0.3)
    assert final["status"] == "rolled_back", final
    assert "error" in final["reason"]
    failed = load.total - load.codes[200]
    assert 0 < failed < 0.2 * load.total  # bounded by the canary's weight and the window
    assert churn.endpoint("churn").traffic is None
    assert churn.model("churn").aliases["production"] == 1
    record = next(r for r in churn.audit_records() if r["action"] == "rollout.rolledback")
    assert record["actor"] == "modelyard:rollouts" and "error" in record["after"]["reason"]
    assert record["after"]["verdict"]["status"] == "fail"


def test_a_slow_canary_is_rolled_back_on_latency(churn: Yard,
                                                 server: BackgroundServer) -> None:
    with Load(server.url):
        time.sleep(0.3)
        rollout = churn.start_rollout("churn", {
            "target": "churn:4", "interval_s": 0.5, "analysis": FAST,
            "steps": [{"weight": 30, "duration_s": 30}]})
        final = wait_final(churn, rollout["id"], timeout_s=20)
    assert final["status"] == "rolled_back", final
    assert "p99" in final["reason"]


def test_a_rollout_resumes_after_a_restart_at_the_same_step(churn: Yard) -> None:
    churn.settings = churn.settings.with_(rollout_tick_s=0.1)
    with BackgroundServer(churn) as first:
        rollout = churn.start_rollout("churn", {
            # What is tested is the resumption: latency judged on a machine busy with other
            # tests must not roll it back meanwhile (the latency check has its own test).
            "target": "churn:2", "interval_s": 0.3,
            "analysis": {**FAST, "min_requests": 5, "max_p99_ratio": None},
            "steps": [{"weight": 10, "duration_s": 0.5}, {"weight": 40, "duration_s": 600}]})
        with Load(first.url):
            deadline = time.monotonic() + 20
            while churn.rollout(rollout["id"])["step"] < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    state = churn.rollout(rollout["id"])
    assert state["step"] == 2 and state["weight"] == 40 and state["status"] == "running"
    with BackgroundServer(churn) as second:  # a new process would see the same store
        with Load(second.url, limit_s=3) as load:
            time.sleep(2)
        after = churn.rollout(rollout["id"])
        assert after["step"] == 2 and after["status"] == "running"
        assert load.versions["churn:2"] > 0 and load.versions["churn:1"] > 0
        churn.abort_rollout(rollout["id"])
    assert churn.rollout(rollout["id"])["status"] == "aborted"


def test_blue_green_warms_then_switches_at_once_without_a_failed_request(
        churn: Yard, server: BackgroundServer) -> None:
    with Load(server.url) as load:
        time.sleep(0.3)
        rollout = churn.start_rollout("churn", {
            "target": "churn:2", "strategy": "blue_green", "bake_s": 1, "interval_s": 0.3,
            "analysis": {**FAST, "min_requests": 10}})
        final = wait_final(churn, rollout["id"])
        time.sleep(0.3)
    assert final["status"] == "promoted", final
    assert load.codes == Counter({200: load.total})
    steps = [h["action"] for h in churn.rollout(rollout["id"])["history"]]
    assert steps[0] == "advance" and steps[-1] == "promote"


def test_a_shadow_rollout_reports_and_changes_nothing(churn: Yard,
                                                      server: BackgroundServer) -> None:
    with Load(server.url) as load:
        rollout = churn.start_rollout("churn", {
            "target": "churn:2", "strategy": "shadow", "duration_s": 1, "interval_s": 0.3,
            "analysis": {**FAST, "min_requests": 10, "min_agreement": 0.0,
                         "max_p99_ratio": None}})
        final = wait_final(churn, rollout["id"])
    assert final["status"] == "completed", final
    assert set(load.versions) == {"churn:1"}  # the shadow never answered a client
    report = churn.rollout(rollout["id"])["history"][-1]["verdict"]
    agreement = next(c for c in report["checks"] if c["name"] == "agreement")
    assert agreement["value"] is not None and 0 <= agreement["value"] <= 1
    assert churn.model("churn").aliases["production"] == 1


def held_for_approval(churn: Yard) -> dict[str, Any]:
    """A one-step canary of churn:2 run to its end, where the promotion waits for approval
    (the project's policy must say so)."""
    rollout = churn.start_rollout("churn", {
        "target": "churn:2", "interval_s": 0.3, "analysis": FAST,
        "steps": [{"weight": 50, "duration_s": 0.5}]})
    deadline = time.monotonic() + 30
    while churn.rollout(rollout["id"])["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    waiting = churn.rollout(rollout["id"])
    assert waiting["status"] == "awaiting_approval", waiting
    return waiting


def test_promoting_to_production_waits_for_approval_when_the_project_says_so(
        churn: Yard, server: BackgroundServer) -> None:
    from modelyard.governance.policy import Principal

    churn.update_project("default", policy={"approvals_required": 1,
                                            "approval_actions": ["rollout:promote"]})
    with Load(server.url):
        rollout = waiting = held_for_approval(churn)
        assert churn.model("churn").aliases["production"] == 1
        approver = Yard(settings=churn.settings,
                        principal=Principal("key:ana:x", frozenset({"approver"}), "ana"))
        try:
            decided = approver.approve(waiting["approval_id"])
        finally:
            approver.close()
        assert decided.status == "executed"
    assert churn.rollout(rollout["id"])["status"] == "promoted"
    assert churn.model("churn").aliases["production"] == 2


def test_a_promotion_refused_by_its_approver_rolls_the_canary_back(
        churn: Yard, server: BackgroundServer) -> None:
    """Held for approval and then rejected: the split must not stay forever."""
    from modelyard.governance.policy import Principal

    churn.update_project("default", policy={"approvals_required": 1,
                                            "approval_actions": ["rollout:promote"]})
    with Load(server.url) as load:
        rollout = waiting = held_for_approval(churn)
        approver = Yard(settings=churn.settings,
                        principal=Principal("key:ana:x", frozenset({"approver"}), "ana"))
        try:
            assert approver.reject(waiting["approval_id"], "not this week").status == \
                "rejected"
        finally:
            approver.close()
        final = wait_final(churn, rollout["id"])
        time.sleep(0.5)
        load.versions.clear()
        time.sleep(0.5)
    assert final["status"] == "rolled_back", final
    assert "approval" in final["reason"] and "rejected" in final["reason"]
    assert churn.endpoint("churn").traffic is None  # the split is gone
    assert set(load.versions) == {"churn:1"}
    assert churn.model("churn").aliases["production"] == 1


def test_an_ab_test_stops_when_the_outcome_differs_and_promotes_the_winner(
        churn: Yard, server: BackgroundServer) -> None:
    rollout = churn.start_rollout("churn", {
        "target": "churn:2", "strategy": "ab_test", "weight": 50, "interval_s": 0.3,
        "min_n": 50, "promote_winner": True,
        "analysis": {**FAST, "min_requests": 10}})
    # the new version converts three times as often
    report_outcomes(churn, server, rollout["id"], {"churn:1": 0.2, "churn:2": 0.6}, seed=4)
    final = churn.rollout(rollout["id"])
    assert final["status"] == "promoted", final
    assert "is better" in final["reason"] and "interval" in final["reason"]
    report = next(h["ab_test"] for h in reversed(churn.rollout(rollout["id"])["history"])
                  if h.get("ab_test"))
    assert report["decision"] == "treatment better" and report["p_value"] < 0.05
    assert report["interval"][0] > 0  # the whole interval says "better"
    assert churn.model("churn").aliases["production"] == 2


def test_feedback_is_checked(churn: Yard, server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for body, field in ((({"version": "other:1", "value": 1}), "body.version"),
                            ({"version": 2, "value": "yes"}, "body.value"),
                            ([{"version": 1, "value": 1, "extra": 1}], "body[0]"),
                            ([], "body")):
            refused = http.post("/endpoints/churn/feedback", json=body)
            assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
        assert http.post("/endpoints/churn/feedback", json={"version": 1, "value": 0.5}
                         ).status_code == 202


def test_a_canary_worse_on_reported_outcomes_is_rolled_back(churn: Yard,
                                                            server: BackgroundServer) -> None:
    rollout = churn.start_rollout("churn", {
        "target": "churn:2", "interval_s": 0.3, "min_n": 40,
        "analysis": {**FAST, "min_requests": 10},
        "steps": [{"weight": 50, "duration_s": 600}]})
    # the new version's answers turn out wrong
    report_outcomes(churn, server, rollout["id"], {"churn:1": 0.7, "churn:2": 0.2}, seed=8)
    final = churn.rollout(rollout["id"])
    assert final["status"] == "rolled_back", final
    assert "significantly worse" in final["reason"]
