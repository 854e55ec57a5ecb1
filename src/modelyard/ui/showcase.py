"""A small seeded yard for the dashboard's browser tests and screenshots: keys of each role,
a project policy that holds promotions for approval, the churn endpoint (two ONNX versions,
one the other's child), an ensemble graph endpoint, and steady traffic from a thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from modelyard.yard import Yard

# A quick analysis, so a canary reaches its promotion within seconds of traffic; lenient
# on latency (both versions are the same kind of model on a machine that may be busy: a
# shared CI runner's hiccup must not roll the showcase back).
FAST_ANALYSIS = {"min_requests": 20, "max_divergence": None, "max_p99_ratio": 5.0,
                 "p99_slack_ms": 250, "failures_to_rollback": 3}


@dataclass(frozen=True)
class Keys:
    admin: str
    viewer: str
    approver: str
    developer: str
    predictor: str


def data(rows: int = 400, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)


def seed(yard: Yard, admin_key: str) -> Keys:
    """Fill a fresh yard (``Yard.init``'s admin key given back in ``Keys``)."""
    from sklearn.linear_model import LogisticRegression

    x, label = data()
    made = {role: yard.create_key(owner, [role])["key"] for role, owner in (
        ("viewer", "vera"), ("approver", "ana"), ("developer", "dev"),
        ("predictor", "traffic"))}
    yard.update_project("default", policy={"approvals_required": 1,
                                           "approval_actions": ["rollout:promote"],
                                           "card_required": []})
    first = LogisticRegression(C=1.0).fit(x, label)
    yard.register("churn", first, to_onnx=True, sample=x[:4], data=x,
                  params={"C": 1.0}, metrics={"accuracy": float(first.score(x, label))},
                  description="churn classifier, first training run")
    second = LogisticRegression(C=0.3).fit(x, label)
    yard.register("churn", second, to_onnx=True, sample=x[:4], parent="churn:1",
                  params={"C": 0.3}, metrics={"accuracy": float(second.score(x, label))},
                  description="retrained with stronger regularisation")
    yard.update_card("churn", 1, intended_use="rank customers by churn risk for outreach",
                     owners=["ml-platform@example.com"], risk_level="limited",
                     limitations="trained on generated data")
    yard.set_alias("churn", "production", 1)
    yard.set_alias("churn", "champion", 1)
    yard.create_endpoint("churn", "churn@production", description="customer churn risk")
    yard.create_endpoint("churn-ensemble", graph={
        "graph": "churn-ensemble",
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
        "nodes": {
            "v1": {"kind": "model", "model": "churn:1", "inputs": {"input": "inputs.input"}},
            "v2": {"kind": "model", "model": "churn:2", "inputs": {"input": "inputs.input"}},
            "mean": {"kind": "ensemble", "members": ["v1", "v2"], "method": "mean",
                     "output": "probabilities"}},
        "outputs": {"probabilities": "mean.probabilities"}})
    return Keys(admin_key, made["viewer"], made["approver"], made["developer"],
                made["predictor"])


def start_canary(yard: Yard, developer_key: str, server_url: str) -> dict[str, Any]:
    """A canary of churn:2 on the churn endpoint, started by the developer over the API."""
    with httpx.Client(base_url=server_url, timeout=30,
                      headers={"authorization": f"Bearer {developer_key}"}) as http:
        answer = http.post("/api/v1/rollouts", json={"endpoint": "churn", "spec": {
            "target": "churn:2", "strategy": "canary", "interval_s": 0.5,
            "steps": [{"weight": 30, "duration_s": 2}], "analysis": FAST_ANALYSIS,
            "sticky_header": "x-user"}})
        answer.raise_for_status()
        started: dict[str, Any] = answer.json()
        return started


class Traffic:
    """Calls an endpoint from a thread at about ``rate`` requests/s until stopped (at most
    ``limit_s``); counts answers by status code."""

    def __init__(self, url: str, key: str, endpoint: str = "churn", rate: float = 40.0,
                 limit_s: float = 120.0) -> None:
        self.url, self.key, self.endpoint = url, key, endpoint
        self.rate, self.limit_s = rate, limit_s
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-traffic", daemon=True)
        self._rows = data(64, seed=11)[0].tolist()

    def _run(self) -> None:
        started = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10,
                          headers={"authorization": f"Bearer {self.key}"}) as http:
            n = 0
            while not self._stop.is_set() and time.monotonic() - started < self.limit_s:
                n += 1
                answer = http.post(f"/endpoints/{self.endpoint}/predict",
                                   json={"inputs": [self._rows[n % len(self._rows)]]},
                                   headers={"x-user": f"u{n % 300}"})
                self.codes[answer.status_code] = self.codes.get(answer.status_code, 0) + 1
                pause = started + n / self.rate - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def wait_for(check: Any, timeout_s: float = 60.0, every_s: float = 0.2) -> Any:
    """Poll ``check()`` until it returns something truthy (returned) or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {timeout_s} s")
        time.sleep(every_s)
