"""``modelyard rollout`` and ``modelyard endpoints traffic`` through Typer's runner: against a
yard on disk (the analysis is driven by hand there), and end to end through a real server
that analyses and promotes while a bounded load generator calls the endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelyard import Yard
from modelyard.cli.main import app
from modelyard.cli.rollouts import build_spec, parse_steps
from modelyard.domain.analysis import WindowStats
from modelyard.domain.errors import ValidationFailed
from modelyard.serving.server import BackgroundServer

runner = CliRunner()
X = np.random.default_rng(11).normal(size=(2, 4)).astype(np.float32)


def cli(yard: Yard, *args: str, code: int = 0) -> str:
    """Run against ``yard`` (its database and artifacts, SQLite or PostgreSQL); wide, so
    Rich does not wrap what the assertions look for."""
    result = runner.invoke(app, ["--yard", str(yard.settings.home), *args],
                           env={"MODELYARD_DATABASE_URL": yard.settings.database_url,
                                "MODELYARD_ARTIFACTS_URL": yard.settings.artifacts_url,
                                "COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def remote(url: str, key: str, *args: str) -> Any:
    return runner.invoke(app, ["--url", url, "--key", key, *args], env={"COLUMNS": "200"})


@pytest.fixture
def churn(yard: Yard, tabular: Any) -> Yard:
    """Three ONNX versions of a small classifier; a public endpoint on churn@production
    (version 1)."""
    x, label, _ = tabular
    for c in (1.0, 0.5, 0.25):
        yard.register("churn", LogisticRegression(C=c).fit(x, label), to_onnx=True,
                      sample=x[:4])
    yard.update_project("default", policy={"card_required": []})
    yard.set_alias("churn", "production", 1)
    yard.create_endpoint("churn", "churn@production", auth="public")
    return yard


# -- endpoints traffic ---------------------------------------------------------------------
def test_traffic_set_show_and_clear_with_validation_errors(churn: Yard) -> None:
    out = cli(churn, "endpoints", "traffic", "churn", "--split", "churn:2=10,churn:1=90",
              "--sticky-header", "X-User-Id", "--shadow", "churn:3=0.2")
    assert "churn:2 10% | churn:1 90% (sticky by x-user-id); shadow churn:3 20%" in out
    assert churn.endpoint("churn").traffic == {
        "split": [{"model": "churn:2", "weight": 10.0}, {"model": "churn:1", "weight": 90.0}],
        "sticky_header": "x-user-id", "shadows": [{"model": "churn:3", "sample": 0.2}]}
    shown = cli(churn, "endpoints", "show", "churn")
    assert "churn:2 10% | churn:1 90%" in shown
    assert json.loads(cli(churn, "--json", "endpoints", "show", "churn"))["traffic"][
        "split"][0] == {"model": "churn:2", "weight": 10.0}

    # Shadows alone: the endpoint's own model keeps every live request.
    out = cli(churn, "endpoints", "traffic", "churn", "--shadow", "churn:3")
    assert "churn@production 100%; shadow churn:3 100% of requests" in out

    refused = [
        (["--split", "churn:2=10,churn:1=80"], "split weights must add up to 100"),
        (["--split", "churn:2"], "must look like MODEL:VERSION=PERCENT"),
        (["--split", "churn:2=ten,churn:1=90"], "must look like MODEL:VERSION=PERCENT"),
        (["--split", "churn:9=10,churn:1=90"], "version_not_found"),
        (["--split", "churn:2=10,churn:1=90", "--shadow", "churn:3=1.5"],
         "sample is a share of requests"),
        (["--split", "churn:2=10,churn:1=90", "--sticky-header", "no spaces"],
         "traffic.sticky_header"),
        (["--clear", "--split", "churn:1=100"], "--clear takes no --split"),
        ([], "give --split and/or --shadow"),
    ]
    for args, message in refused:
        out = cli(churn, "endpoints", "traffic", "churn", *args, code=1)
        assert message in out and out.startswith("error"), (args, out)
    assert churn.endpoint("churn").traffic is not None  # unchanged by the refusals
    cli(churn, "endpoints", "traffic", "nope", "--split", "churn:1=100", code=1)

    out = cli(churn, "endpoints", "traffic", "churn", "--clear")
    assert "all traffic to churn@production" in out
    assert churn.endpoint("churn").traffic is None


# -- building a spec -----------------------------------------------------------------------
def test_options_override_the_spec_file(tmp_path: Path) -> None:
    spec_file = tmp_path / "rollout.yaml"
    spec_file.write_text(yaml.safe_dump({
        "target": "churn:3", "steps": [{"weight": 20, "duration_s": 60}],
        "interval_s": 5, "analysis": {"max_divergence": None, "min_requests": 99}}))
    spec = build_spec(spec_file, to="churn:2", strategy=None, steps="5:120,50:300",
                      bake_s=None, duration_s=None, interval_s=None, sticky_header="x-user",
                      analysis={"min_requests": 7, "max_error_rate": None,
                                "max_p99_ratio": 2.0})
    assert spec == {"target": "churn:2", "interval_s": 5, "sticky_header": "x-user",
                    "steps": [{"weight": 5.0, "duration_s": 120.0},
                              {"weight": 50.0, "duration_s": 300.0}],
                    "analysis": {"max_divergence": None, "min_requests": 7,
                                 "max_p99_ratio": 2.0}}
    assert parse_steps("5:120, 25:300") == [{"weight": 5.0, "duration_s": 120.0},
                                            {"weight": 25.0, "duration_s": 300.0}]
    for bad in ("5", "5:", "x:10", "5:10,,"):
        with pytest.raises(ValidationFailed, match="WEIGHT:SECONDS"):
            parse_steps(bad)
    with pytest.raises(ValidationFailed, match="--bake-s is for blue_green"):
        build_spec(spec_file, to=None, strategy=None, steps=None, bake_s=30, duration_s=None,
                   interval_s=None, sticky_header=None, analysis={})
    # Another strategy than the file's drops the file's canary steps.
    shadow = build_spec(spec_file, to=None, strategy="shadow", steps=None, bake_s=None,
                        duration_s=30, interval_s=None, sticky_header=None, analysis={})
    assert "steps" not in shadow and shadow["duration_s"] == 30
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValidationFailed, match="mapping of rollout fields"):
        build_spec(tmp_path / "list.yaml", to="churn:2", strategy=None, steps=None,
                   bake_s=None, duration_s=None, interval_s=None, sticky_header=None,
                   analysis={})


# -- rollouts in a yard (the analysis driven by hand) --------------------------------------
def _analyse(yard: Yard, requests: int, errors: int) -> None:
    """One analysis round, as the server would run it, on made-up observations."""
    latencies = np.full(max(requests, 1), 0.002)

    def stats(key: str, window: float, shadow: bool) -> WindowStats:
        version = key.split("/", 1)[1]
        if version == "churn:1":  # the baseline: plenty of clean traffic
            return WindowStats(version, requests=200, latencies_s=np.full(200, 0.002))
        return WindowStats(version, requests=requests, errors=errors,
                           latencies_s=latencies[:requests])

    yard.rollouts.tick(stats, lambda endpoint, version: True)


def test_start_list_status_and_steer_a_rollout(churn: Yard) -> None:
    out = cli(churn, "rollout", "start", "churn", "--to", "churn:2", "--steps", "10:60,50:60",
              "--interval-s", "0.05", "--min-requests", "5", "--max-error-rate", "0.05",
              "--max-p99-ratio", "2", "--sticky-header", "x-user-id")
    assert "rollout 1 started on churn: churn:1 -> churn:2 (canary, 3 step(s))" in out
    state = churn.rollout(1)
    assert state["spec"]["steps"] == [{"weight": 10.0, "duration_s": 60.0},
                                      {"weight": 50.0, "duration_s": 60.0},
                                      {"weight": 100.0, "duration_s": 0.0}]
    analysis = state["spec"]["analysis"]
    assert (analysis["min_requests"], analysis["max_error_rate"],
            analysis["max_p99_ratio"]) == (5, 0.05, 2.0)
    assert churn.endpoint("churn").traffic["split"][0] == {"model": "churn:2",  # type: ignore[index]
                                                           "weight": 10.0}

    # Refusals: one line, exit code 1.
    for args, message in [
        (["--to", "churn:3"], "already has an active rollout"),
        (["--to", "churn:3", "--steps", "10"], "WEIGHT:SECONDS"),
        (["--to", "churn:3", "--strategy", "blue_green", "--steps", "5:1"],
         "--steps is for canary"),
        (["--to", "churn:3", "--strategy", "sideways"], "strategy must be one of"),
        ([], "--to MODEL:VERSION"),
    ]:
        out = cli(churn, "rollout", "start", "churn", *args, code=1)
        assert message in out, (args, out)

    listed = cli(churn, "rollout", "list")
    assert "churn:1 -> churn:2" in listed and "running" in listed and "1/3" in listed
    assert [r["id"] for r in json.loads(cli(churn, "--json", "rollout", "list",
                                            "--endpoint", "churn"))] == [1]
    assert json.loads(cli(churn, "--json", "rollout", "list", "--endpoint", "other")) == []

    out = cli(churn, "rollout", "status", "churn")  # running: exit 0
    assert "no analysis yet" in out and "step      1/3" in out
    assert "churn:1 90% | churn:2 10%" in out

    _analyse(churn, requests=3, errors=0)  # too little traffic: wait
    out = cli(churn, "rollout", "status", "1")
    assert "Last analysis" in out and ": wait -> wait" in out
    traffic_row = next(line for line in out.splitlines() if line.strip().startswith("│ traffic"))
    assert "3" in traffic_row and "5" in traffic_row and "wait" in traffic_row
    time.sleep(0.06)  # the next interval
    _analyse(churn, requests=20, errors=10)  # half of them fail: the first failure of two
    out = cli(churn, "rollout", "status", "churn")
    error_row = next(line for line in out.splitlines()
                     if line.strip().startswith("│ error_rate"))
    assert "0.5" in error_row and "0.05" in error_row and "fail" in error_row
    assert "failures  1 in a row (2 roll it back)" in out
    shown = json.loads(cli(churn, "--json", "rollout", "status", "churn"))
    assert shown["failures"] == 1 and shown["history"][-1]["verdict"]["status"] == "fail"

    out = cli(churn, "rollout", "pause", "1")
    assert "rollout 1 on churn: paused" in out
    assert churn.rollout(1)["status"] == "paused"
    assert "paused" in cli(churn, "rollout", "status", "churn")
    out = cli(churn, "rollout", "resume", "1")
    assert "running" in out and churn.rollout(1)["status"] == "running"
    # --watch gives up at --timeout-s with its own exit code (not a success, not a rollback).
    cli(churn, "rollout", "status", "churn", "--watch", "--timeout-s", "0", code=2)
    out = cli(churn, "rollout", "abort", "1")
    assert "aborted" in out and "aborted by" in out
    assert churn.rollout(1)["status"] == "aborted"
    assert churn.endpoint("churn").traffic is None
    out = cli(churn, "rollout", "status", "churn", code=1)  # aborted: CI must not pass
    assert "aborted" in out
    cli(churn, "rollout", "status", "1", "--watch", code=1)  # already final: at once
    out = cli(churn, "rollout", "pause", "1", code=1)
    assert "rollout 1 is aborted" in out

    # A second rollout, promoted by hand: the production alias moves.
    out = cli(churn, "--json", "rollout", "start", "churn", "--to", "churn:3")
    second = json.loads(out)["id"]
    assert cli(churn, "rollout", "status", "churn").count(f"Rollout {second} on churn") == 1
    out = cli(churn, "rollout", "promote", str(second))
    assert "promoted" in out
    assert churn.model("churn").aliases["production"] == 3
    out = cli(churn, "rollout", "status", "churn")  # promoted: exit 0
    assert "churn:1 0% | churn:3 100%" in out
    listed = cli(churn, "rollout", "list")
    assert "promoted" in listed and "aborted" in listed

    out = cli(churn, "rollout", "status", "nope", code=1)
    assert "endpoint 'nope' has no rollout" in out
    assert "rollout_not_found" in cli(churn, "rollout", "status", "99", code=1)
    cli(churn, "rollout", "abort", "99", code=1)


# -- end to end through a server -----------------------------------------------------------
class Load:
    """Calls the public endpoint about 60 times a second from one thread, until stopped or
    for ``limit_s`` at most (127.0.0.1 only)."""

    def __init__(self, url: str, limit_s: float = 40.0) -> None:
        self.url, self.limit_s = url, limit_s
        self.codes: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10) as http:
            n = 0
            while not self._stop.is_set() and time.monotonic() - started < self.limit_s:
                n += 1
                r = http.post("/endpoints/churn/predict", json={"inputs": X.tolist()},
                              headers={"x-user-id": f"u{n % 100}"})
                self.codes[r.status_code] += 1
                self._stop.wait(max(0.0, started + n / 60 - time.monotonic()))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive()


@pytest.fixture
def served(churn: Yard) -> Iterator[BackgroundServer]:
    churn.settings = churn.settings.with_(rollout_tick_s=0.1)  # analyse often
    with BackgroundServer(churn) as srv:
        yield srv


def test_a_watched_canary_is_promoted_and_exits_0(churn: Yard, served: BackgroundServer,
                                                  admin_key: str, tmp_path: Path) -> None:
    # Two similar models over one repeated input: compare errors and latency, not the
    # prediction distribution (the file also shows that options add to a spec file).
    spec_file = tmp_path / "canary.yaml"
    spec_file.write_text(yaml.safe_dump({
        "strategy": "canary",
        "analysis": {"max_divergence": None, "p99_slack_ms": 20, "failures_to_rollback": 3}}))
    started = time.monotonic()
    with Load(served.url) as load:
        result = remote(served.url, admin_key, "rollout", "start", "churn", "--to", "churn:2",
                        "-f", str(spec_file), "--steps", "50:1", "--interval-s", "0.3",
                        "--min-requests", "5", "--max-p99-ratio", "3", "--watch",
                        "--timeout-s", "30")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 40
    # A log (not a terminal) gets a line per change, then the final view.
    assert "rollout 1 running, step 1/2, churn:2 at 50%" in result.output
    assert "rollout 1 promoted" in result.output
    assert "churn:1 0% | churn:2 100%" in result.output
    assert load.codes[200] > 0 and set(load.codes) == {200}, load.codes
    state = churn.rollouts_of("churn")[0]
    assert state["status"] == "promoted" and state["spec"]["analysis"]["min_requests"] == 5
    assert churn.model("churn").aliases["production"] == 2  # the endpoint's new version
    assert churn.endpoint("churn").traffic is None
    watched = remote(served.url, admin_key, "--json", "rollout", "status", "churn",
                     "--watch")
    assert watched.exit_code == 0 and json.loads(watched.output)["status"] == "promoted"
