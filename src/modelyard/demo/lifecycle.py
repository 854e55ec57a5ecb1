"""``modelyard demo --lifecycle``: the whole life of a model in one narrated run.

A fresh yard (under ``<yard>/lifecycle/<UTC time>``, so a re-run never meets an old one) and
a real server on 127.0.0.1, driven over HTTP with keys of three people:

deploy a model and a graph on it -> scorecard before -> monitor + retraining policy -> traffic
-> the world shifts -> drift detected on the first window after it -> labels arrive late by
request id -> the drift alert starts a retraining cycle -> the challenger, trained on the
labelled inference log, is gated against the champion -> a canary under live load -> held
for a second person's approval (four-eyes on ``rollout:promote``) -> approved, promoted: the
endpoint and the graph serve it -> load test recorded -> scorecard after -> audit verified.

The dashboard (``/ui``) of the same server shows every step while it runs. ``check``: verify
each step and return 0/1 (CI); otherwise keep serving until Ctrl+C.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.client import Client
from modelyard.readiness import Scorecard, scorecard_for
from modelyard.readiness.loadtest import run_load
from modelyard.serving.server import BackgroundServer, free_port
from modelyard.settings import Settings
from modelyard.yard import Yard, write_secret

WINDOW_S = 10  # the monitor's window (its minimum): drift is judged per closed window
FEATURES = ("tenure", "spend", "tickets", "plan")
PROJECT = "lifecycle"
T = TypeVar("T")


def world(n: int, rng: np.random.Generator, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Before: features ~ N(0, 1) (plan: 0-2), risky when tenure + spend / 2 > 0. After the
    shift: spend moved by +2 and the rule changed (risky when tenure - spend + 2 > 0): what
    the first model learned no longer holds."""
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 3] = rng.integers(0, 3, size=n)
    if not shifted:
        return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    x[:, 1] += 2.0
    return x, (x[:, 0] - x[:, 1] + 2.0 > 0).astype(np.int64)


def train(ctx: Any) -> dict[str, Any]:
    """The retraining entrypoint the policy names (``modelyard.demo.lifecycle:train``): a
    logistic regression on the labelled window the cycle hands over."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(ctx.x, ctx.y)
    return {"model": model, "params": {"model": "logistic", **dict(ctx.params)}}


@dataclass
class Traffic:
    """Steady calls to the model's endpoint and to the graph from a thread; answers of the
    shifted world are kept (request id, true label) for the late labels."""

    url: str
    key: str
    shifted: bool = False
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    pending_labels: list[tuple[float, str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        rng = np.random.default_rng(99)
        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"Authorization": f"Bearer {self.key}"}) as http:
            while not self._stop.is_set():
                shifted = self.shifted
                x, y = world(1, rng, shifted)
                body = {"inputs": [x[0].tolist()]}
                for path in ("/endpoints/risk/predict", "/endpoints/risk-review/predict"):
                    try:
                        r = http.post(path, json=body)
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{path}: {type(exc).__name__}")
                        continue
                    self.sent += 1
                    if r.status_code != 200:
                        self.failures.append(f"{path}: {r.status_code} {r.text[:200]}")
                    elif shifted and path.endswith("/risk/predict"):
                        with self._lock:
                            self.pending_labels.append(
                                (time.time(), r.headers["x-request-id"], int(y[0])))
                self._stop.wait(0.02)

    def labels_older_than(self, seconds: float) -> list[dict[str, Any]]:
        """The ground truth of answers given ``seconds`` ago or earlier: labels come late."""
        cutoff = time.time() - seconds
        with self._lock:
            due = [p for p in self.pending_labels if p[0] <= cutoff]
            self.pending_labels = [p for p in self.pending_labels if p[0] > cutoff]
        return [{"request_id": rid, "label": label} for _, rid, label in due]


@dataclass
class Story:
    console: Console
    progress: Progress
    task: Any
    log: list[tuple[str, str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def step(self, text: str) -> None:
        self.progress.update(self.task, advance=1, description=text)

    def say(self, what: str, detail: str = "") -> None:
        at = time.monotonic() - self.started
        self.log.append((what, detail, at))
        self.progress.console.print(f"[dim]{at:6.1f}s[/dim] [bold]{what}[/bold]"
                                    + (f": {detail}" if detail else ""), highlight=False)

    def wait(self, what: str, check: Callable[[], T | None], timeout_s: float,
             tick: Callable[[], None] | None = None) -> T:
        waiting = self.progress.add_task(f"  waiting: {what}", total=timeout_s)
        begun = time.monotonic()
        try:
            while True:
                if tick is not None:
                    tick()
                found = check()
                if found:
                    return found
                elapsed = time.monotonic() - begun
                if elapsed > timeout_s:
                    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
                self.progress.update(waiting, completed=elapsed)
                time.sleep(0.25)
        finally:
            self.progress.remove_task(waiting)


def _key_file(home: Path, name: str, secret: str) -> Path:
    path = home / f"demo-{name}.key"
    write_secret(path, secret)
    return path


def _deploy(yard: Yard) -> dict[str, str]:
    """The project (promotions held for a second person), its people, the first model with
    its reference profile and card, a value model, the endpoint and a graph on both."""
    from sklearn.linear_model import LogisticRegression, Ridge

    yard.create_project(PROJECT, "the lifecycle demo", policy={
        "approvals_required": 1, "approval_actions": ["rollout:promote"]})
    keys = {name: yard.create_key(owner, roles)["key"] for name, owner, roles in (
        ("developer", "dev", [f"developer@{PROJECT}"]),
        ("approver", "ana", [f"approver@{PROJECT}", f"viewer@{PROJECT}"]),
        ("predictor", "traffic", [f"predictor@{PROJECT}"]))}
    rng = np.random.default_rng(11)
    x, y = world(3000, rng, shifted=False)
    first = LogisticRegression().fit(x, y)
    yard.register("risk", first, to_onnx=True, sample=x[:4], data=x, project=PROJECT,
                  metrics={"accuracy": float(first.score(x, y))},
                  params={"model": "logistic"}, description="account risk, first training")
    value = Ridge().fit(x, x[:, 1] * 40 + 100)
    yard.register("value", value, to_onnx=True, sample=x[:4], project=PROJECT,
                  description="account value in dollars")
    for model, use in (("risk", "rank accounts by risk for a review queue"),
                       ("value", "estimate an account's value for the same queue")):
        yard.update_card(model, 1, intended_use=use, owners=["ml-platform@example.com"],
                         risk_level="limited", limitations="trained on generated data")
    for model in ("risk", "value"):
        yard.set_alias(model, "production", 1)
        yard.set_alias(model, "champion", 1)
    yard.create_endpoint("risk", "risk@production", description="account risk",
                         deployment={"replicas": 2})
    yard.create_endpoint("risk-review", graph={
        "graph": "risk-review",
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
        "nodes": {
            "risk": {"kind": "model", "model": "risk@production",
                     "inputs": {"input": "inputs.input"}},
            "value": {"kind": "model", "model": "value@production",
                      "inputs": {"input": "inputs.input"}}},
        "outputs": {"probabilities": "risk.probabilities", "value": "value.prediction"}},
        description="risk and value of an account, side by side (a graph)")
    return keys


def _watch(yard: Yard) -> None:
    """The monitor and the retraining policy: drift on closed windows starts a cycle; the
    challenger must beat the champion by 5 accuracy points on a holdout, then goes through
    a canary under live load."""
    yard.set_monitor("risk", {"window_s": WINDOW_S, "evaluate_every_s": 2,
                              "drift": {"min_samples": 100}, "slo": 0.999,
                              "alerts": [{"name": "feature-drift", "kind": "feature_drift",
                                          "severity": "ticket"},
                                         {"name": "p99", "kind": "latency_p99",
                                          "threshold": 250}]})
    yard.set_retrain_policy("risk", {
        "endpoint": "risk", "entrypoint": "modelyard.demo.lifecycle:train", "trusted": True,
        "data": {"inference_log": {"since": "1h", "min_labels": 150}},
        "holdout": {"share": 0.3, "seed": 3},
        "gate": {"metric": "accuracy", "min_gain": 0.05},
        "triggers": {"on_drift": True},
        "rollout": {"strategy": "canary", "interval_s": 1,
                    "steps": [{"weight": 20, "duration_s": 4}, {"weight": 50, "duration_s": 4}],
                    # A laptop's p99 is noisy: the canary fails on errors or a tripled p99.
                    "analysis": {"min_requests": 10, "max_p99_ratio": 3.0,
                                 "p99_slack_ms": 25}},
    })


def _scores(before: Scorecard, after: Scorecard) -> Table:
    table = Table(title="readiness of endpoint risk (modelyard readiness risk)",
                  title_justify="left")
    table.add_column("area")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    for area in before.areas:
        table.add_row(area.title, shown(area.score), shown(after.area(area.area).score))
    table.add_row("[bold]overall[/bold]", shown(before.score), shown(after.score))
    return table


def run(yard_path: Path | None, port: int, check: bool, console: Console) -> int:
    console.print(Panel.fit(
        "[bold]Modelyard lifecycle demo[/bold]: deploy a model and a graph, watch them, let "
        "the world shift, detect it, retrain on late labels, gate the challenger, canary it "
        "under load, promote it after a second person's approval, and grade the system "
        "before and after. Open the dashboard URL below to watch it live.",
        border_style="cyan"))
    base = Settings.load(yard_path)
    home = base.home / "lifecycle" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # Quick loops for a demo: monitors, rollouts and the inference log act within a second.
    host = "127.0.0.1"
    grpc_port = free_port(host) if _grpc_available() else 0  # OIP v2 over gRPC too
    settings = Settings.load(home, monitor_tick_s=0.5, rollout_tick_s=0.2,
                             inference_log_flush_s=0.1, grpc_port=grpc_port)
    yard, admin_key = Yard.init(settings=settings)
    server = BackgroundServer(yard, host, port if port and _free(host, port)
                              else free_port(host), grpc=grpc_port).start()
    traffic: Traffic | None = None
    ok = False
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            story = Story(console, progress, progress.add_task("deploying", total=9))
            keys = _deploy(yard)
            admin = Client(server.url, admin_key)
            approver = Client(server.url, keys["approver"])
            files = {name: _key_file(home, name, key) for name, key in keys.items()}
            story.say("deployed", "risk:1 (ONNX, reference profile, model card) behind "
                      "endpoint risk; graph risk-review fans out to risk@production and "
                      "value@production")
            progress.console.print(
                f"dashboard: [bold]{server.url}/ui[/bold] (log in with the admin key "
                f"{settings.admin_key_file}, or the approver's {files['approver']})",
                highlight=False)
            story.step("scorecard before")
            before = scorecard_for(admin, "risk")
            story.say("scorecard before", f"{before.score:.0f}/100, weakest: "
                      f"{before.weakest}")
            story.step("monitoring and retraining policy")
            _watch(yard)
            story.say("watching", f"drift on {WINDOW_S} s windows against the reference "
                      "profile, a 99.9% SLO and a p99 alert; retrain on a drift alert; gate: "
                      "+5 accuracy points")
            traffic = Traffic(server.url, keys["predictor"]).start()
            story.step("traffic on the world as trained")
            story.wait("a window of normal traffic", _window_passed(), 2 * WINDOW_S + 1)
            story.step("the world shifts")
            traffic.shifted = True
            shifted_at = time.time()
            story.say("shift injected", "spend moved by +2 and the rule behind the label "
                      "changed")

            def late_labels() -> None:
                due = traffic.labels_older_than(3.0) if traffic else []
                if due:
                    admin.send_feedback("risk", due)

            firing = story.wait("drift detected", lambda: admin.alerts(
                endpoint="risk", status="firing"), 3 * WINDOW_S + 20, tick=late_labels)
            drift = admin.drift("risk")["windows"]
            first = next((w for w in drift if w["status"] == "drift"), None)
            windows_after = 0 if first is None else int(
                (_epoch(first["window_end"]) - shifted_at) // WINDOW_S) + 1
            story.say("drift detected", f"alert {firing[0]['rule']} (severity "
                      f"{firing[0]['severity']})"
                      f" on the window ending {first['window_end'] if first else '?'}: "
                      f"{windows_after} window(s) after the shift")
            story.step("retraining")
            cycle = story.wait("a retraining cycle", lambda: admin.retrain_cycles("risk"), 30,
                               tick=late_labels)[0]
            story.say("retraining started", f"cycle {cycle['id']}, trigger {cycle['trigger']}")

            def cycle_moved(*states: str) -> dict[str, Any] | None:
                found = admin.retrain_cycle(cycle["id"])
                return found if found["state"] in (*states, "rejected", "failed",
                                                   "rolled_back", "promoted") else None

            rolling = story.wait("training and the gate", lambda: cycle_moved("rolling_out"),
                                 120, tick=late_labels)
            gate = (rolling.get("gate") or {}).get("result") or {}
            if rolling["state"] != "rolling_out":
                raise RuntimeError(f"the cycle ended {rolling['state']}: "
                                   f"{rolling.get('error') or gate.get('reason')}")
            story.say("gate passed", f"{rolling['challenger']} accuracy "
                      f"{gate.get('challenger', 0):.3f} vs champion {rolling['champion']} "
                      f"{gate.get('champion', 0):.3f} on the holdout")
            story.step("canary under load")
            rollout_id = int(rolling["rollout_id"])
            held = story.wait("the canary's steps", lambda: _held(admin, rollout_id), 120,
                              tick=late_labels)
            story.say("canary passed; promotion held", f"rollout {rollout_id} waits for "
                      f"approval {held['approval_id']} (four-eyes on rollout:promote)")
            story.step("approval")
            approver.approve(int(held["approval_id"]), "canary clean; gate +"
                             f"{gate.get('challenger', 0) - gate.get('champion', 0):.3f}")
            done = story.wait("the promotion", lambda: cycle_moved(), 30)
            if done["state"] != "promoted":
                raise RuntimeError(f"the cycle ended {done['state']}: {done.get('error')}")
            served = _served_version(server.url, keys["predictor"])
            story.say("promoted", f"approved by ana; endpoint risk and graph risk-review now "
                      f"serve {served}")
            story.step("load test")
            result = run_load(f"{server.url}/v2/models/risk/infer", json.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                             "data": [0.1, 2.1, -0.3, 1.0]}]}).encode(),
                headers={"Authorization": f"Bearer {keys['predictor']}",
                         "Content-Type": "application/json"},
                duration_s=5, concurrency=8)
            measured = result.to_dict()
            admin.record_loadtest("risk", measured)
            story.say("load test recorded", f"{measured.get('requests')} requests, "
                      f"p99 {measured.get('p99_ms')} ms, {measured.get('errors')} errors")
            story.step("scorecard after")
            after = scorecard_for(admin, "risk")
        traffic.stop()
        verified = admin.audit_verify()
        console.print(_scores(before, after))
        for check_result in after.failing()[:5]:
            console.print(f"  next: [bold]{check_result.title}[/bold] "
                          f"({check_result.status}): {check_result.fix}", highlight=False)
        console.print(f"audit chain: {'verifies' if verified.get('ok') else 'BROKEN'} "
                      f"({verified.get('records', verified.get('count', '?'))} records); "
                      f"requests sent {traffic.sent}, failed {len(traffic.failures)}")
        ok = (served.endswith(":2") and verified.get("ok") is True and not traffic.failures
              and (after.score or 0) > (before.score or 0))
        if traffic.failures:
            console.print(f"[red]failed requests:[/red] {traffic.failures[:3]}")
        if check:
            console.print("[green]lifecycle check passed[/green]" if ok else
                          "[red]lifecycle check failed[/red]")
            return 0 if ok else 1
        console.print(Panel(
            f"yard:      {home}\ndashboard: {server.url}/ui\n"
            f"admin key: {settings.admin_key_file}\nother keys: "
            + ", ".join(str(p) for p in files.values())
            + "\nCtrl+C stops the server.", title="still serving", border_style="green",
            expand=False), highlight=False)
        try:
            while server.thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("\nstopping")
        return 0
    except (TimeoutError, RuntimeError) as exc:
        console.print(f"[red]lifecycle demo stopped: {exc}[/red]")
        return 1
    finally:
        if traffic is not None:
            traffic.stop()
        server.stop()
        yard.close()


def _grpc_available() -> bool:
    """Whether the grpc extra is installed."""
    import importlib.util

    return importlib.util.find_spec("grpc") is not None


def _free(host: str, port: int) -> bool:
    from modelyard.demo.story import _port_free

    return _port_free(host, port)


def _window_passed() -> Callable[[], bool]:
    """True once a whole monitor window has passed since the next window boundary."""
    start = (time.time() // WINDOW_S + 1) * WINDOW_S
    return lambda: time.time() >= start + WINDOW_S


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _held(client: Client, rollout_id: int) -> dict[str, Any] | None:
    rollout = client.rollout(rollout_id)
    if rollout["status"] == "awaiting_approval":
        return rollout
    if rollout["status"] not in ("running", "paused"):
        raise RuntimeError(f"rollout {rollout_id} ended {rollout['status']}: "
                           f"{rollout.get('reason')}")
    return None


def _served_version(url: str, key: str) -> str:
    with httpx.Client(base_url=url, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        for _ in range(40):  # the graph follows the alias on its next reconcile
            a = http.post("/endpoints/risk/predict", json={"inputs": [[0, 0, 0, 1]]})
            b = http.post("/endpoints/risk-review/predict", json={"inputs": [[0, 0, 0, 1]]})
            version = a.headers.get("modelyard-model-version", "?")
            if version.endswith(":2") and b.status_code == 200 and \
                    "risk:2" in json.dumps(b.json()) + b.headers.get("modelyard-model-version",
                                                                     ""):
                return version
            time.sleep(0.25)
        return version
