"""The live series and the server-drawn diagrams, as pure functions over real inputs (an
``Observations`` ring on an injected clock; real graph documents)."""

from __future__ import annotations

import re

import pytest

from modelyard.domain.graph import GraphInvalid
from modelyard.rollout.observations import Observations
from modelyard.ui import diagram, live


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_series_bins_complete_seconds_per_version() -> None:
    clock = Clock(1000.5)
    seen = Observations(horizon_s=600, clock=clock, seed=1)
    for second in range(990, 1000):  # ten whole seconds, 4 requests each, one error each
        for i in range(4):
            seen.record("churn/churn:1", ok=i != 0, latency_s=0.010 + i * 0.001,
                        at=second + 0.1)
    seen.record("churn/churn:1", ok=True, latency_s=9.0, at=1000.2)  # still filling: left out
    seen.record("other/other:1", ok=True, latency_s=0.5, at=995.0)
    doc = live.series(seen, "churn", window_s=10, step_s=2)
    assert list(doc["versions"]) == ["churn:1"]
    points = doc["versions"]["churn:1"]
    assert len(points) == 5
    for _, rps, p50, p99, error_rate in points:
        assert rps == 4.0 and error_rate == 0.25
        assert 10.0 <= p50 <= 13.0 and p99 <= 13.0  # the 9 s answer is not in any step
    assert points[-1][0] - points[0][0] == pytest.approx(8.0)


def test_steps_without_traffic_have_a_zero_rate_and_no_latency() -> None:
    clock = Clock(2000.0)
    seen = Observations(horizon_s=600, clock=clock)
    seen.record("e/m:1", ok=True, latency_s=0.02, at=1950.0)
    points = live.series(seen, "e", window_s=60, step_s=5)["versions"]["m:1"]
    quiet = [p for p in points if p[1] == 0]
    assert quiet and all(p[2] is None and p[4] is None for p in quiet)
    assert sum(p[1] * 5 for p in points) == pytest.approx(1.0)


def test_summary_over_all_versions() -> None:
    clock = Clock(500.0)
    seen = Observations(horizon_s=600, clock=clock)
    for i in range(60):
        seen.record("e/m:1", ok=True, latency_s=0.01, at=440.0 + i)
        seen.record("e/m:2", ok=i % 10 != 0, latency_s=0.05, at=440.0 + i)
    out = live.summary(seen, "e", window_s=60)
    assert out["requests"] == 120  # seconds 440-499: the last complete minute
    assert out["rps"] == pytest.approx(2.0)
    assert 0 < out["error_rate"] < 0.1 and out["p99_ms"] == pytest.approx(50.0)
    assert live.summary(seen, "nothing")["error_rate"] is None


GRAPH = {"graph": "g", "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
         "nodes": {"a": {"kind": "model", "model": "m:1", "inputs": {"input": "inputs.x"}},
                   "b": {"kind": "model", "model": "m:2", "inputs": {"input": "inputs.x"}},
                   "fb": {"kind": "fallback", "try": ["a", "b"]}},
         "outputs": {"y": "fb.label"}}


def test_graph_diagram_draws_every_node_and_branch() -> None:
    svg = str(diagram.graph_diagram(GRAPH))
    assert svg.startswith("<svg") and 'role="img"' in svg and "<title>" in svg
    for label in ("inputs", "outputs", ">a<", ">b<", ">fb<", "fallback", "model: m:1"):
        assert label in svg, label
    assert svg.count('stroke-dasharray="5 4"') == 2  # fb -> a and fb -> b, on demand
    x_of = {m[2]: float(m[1]) for m in re.finditer(
        r'<rect x="(\d+)"[^>]*/><text[^>]*class="box-label">([^<]+)<', svg)}
    assert x_of["inputs"] < x_of["a"] and x_of["fb"] < x_of["outputs"]


def test_a_broken_graph_raises_instead_of_drawing_nonsense() -> None:
    with pytest.raises(GraphInvalid):
        diagram.graph_diagram({"graph": "g", "nodes": {}})


def test_labels_are_escaped() -> None:
    svg = str(diagram.split_diagram("<script>", [("m:1", 90.0), ("m:2", 10.0)],
                                    [("m:3", 0.2)]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "90%" in svg and "20% mirrored" in svg


def test_line_chart_has_a_legend_and_dashes_alternate_series() -> None:
    svg = str(diagram.line_chart({"a": [(0, 1.0), (10, 2.0)], "b": [(0, 0.5), (10, None)]},
                                 "t", "y"))
    assert ">a</text>" in svg and ">b</text>" in svg and 'stroke-dasharray="6 4"' in svg
    assert str(diagram.line_chart({"a": [(0, None)]}, "t", "y")) == ""


def test_session_lifetime_is_bounded() -> None:
    from modelyard.domain.errors import ValidationFailed
    from modelyard.store.db import Database
    from modelyard.ui.sessions import SessionStore

    db = Database("sqlite://")
    try:
        for ttl in (0, 59, 31 * 86_400):
            with pytest.raises(ValidationFailed) as refused:
                SessionStore(db, ttl)
            assert refused.value.field == "ui_session_ttl_s"
    finally:
        db.dispose()
