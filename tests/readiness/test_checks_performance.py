"""Performance and reliability checks over hand-built evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from evidence_support import NOW, endpoint, evidence, version

from modelyard.domain.deployment import DeploymentSpec
from modelyard.readiness.checks import performance as perf
from modelyard.readiness.evidence import MonitorFacts, TrafficFacts


def test_slo_defined() -> None:
    ev = evidence()
    assert perf.slo_defined(ev, endpoint()).status == "pass"
    assert perf.slo_defined(ev, endpoint(monitor=None)).status == "fail"
    only_slo = MonitorFacts(True, 0.999, None, False)
    assert perf.slo_defined(ev, endpoint(monitor=only_slo)).status == "warn"
    neither = MonitorFacts(True, None, None, False)
    assert perf.slo_defined(ev, endpoint(monitor=neither)).status == "fail"
    off = MonitorFacts(False, 0.999, 100.0, False)
    assert perf.slo_defined(ev, endpoint(monitor=off)).status == "fail"


def test_slo_met_over_the_window() -> None:
    ev = evidence()
    met = perf.slo_met(ev, endpoint())
    assert met.status == "pass" and "availability 99.8000%" in met.evidence
    erroring = TrafficFacts(7, 1000, 20, 40.0, 1.0)  # 98% < 99%
    missed = perf.slo_met(ev, endpoint(traffic=erroring))
    assert missed.status == "fail" and "missed availability" in missed.evidence
    slow = TrafficFacts(7, 1000, 0, 250.0, 1.0)
    assert "p99 250.0 ms" in perf.slo_met(ev, endpoint(traffic=slow)).evidence
    # No data: n/a with the way to get some, never a made-up number.
    quiet = perf.slo_met(ev, endpoint(traffic=TrafficFacts(7, 0, 0, None, 1.0)))
    assert quiet.status == "na" and quiet.fix
    assert perf.slo_met(ev, endpoint(monitor=None)).status == "na"


def test_loadtest() -> None:
    ev = evidence()
    good = endpoint()
    assert perf.loadtest(ev, good).status == "pass"
    assert perf.loadtest(ev, endpoint(loadtests=())).status == "fail"
    test = good.loadtests[0]
    slow = perf.loadtest(ev, endpoint(loadtests=(replace(test, p99_ms=500.0),)))
    assert slow.status == "fail" and "limit 100 ms" in slow.evidence
    erroring = perf.loadtest(ev, endpoint(loadtests=(replace(test, errors=300),)))
    assert erroring.status == "fail" and "errors 10.00%" in erroring.evidence
    old = perf.loadtest(ev, endpoint(loadtests=(replace(test, at=NOW - timedelta(days=30)),)))
    assert old.status == "warn"
    changed = perf.loadtest(ev, endpoint(generation=5))
    assert changed.status == "warn" and "generation 4 -> 5" in changed.evidence
    # Without objectives: the deadline and 1% errors are the limits.
    plain = perf.loadtest(ev, endpoint(monitor=None))
    assert plain.status == "pass" and "the deadline" in plain.evidence


def test_batching() -> None:
    ev = evidence()
    assert perf.batching(ev, endpoint()).status == "pass"
    one = endpoint(deployment=DeploymentSpec(max_batch_size=1, replicas=2))
    assert perf.batching(ev, one).status == "warn"
    remote = endpoint(versions=(version(flavor="remote"),),
                      deployment=DeploymentSpec(max_batch_size=1))
    assert perf.batching(ev, remote).status == "na"


def test_deadlines_and_alerts() -> None:
    ev = evidence()
    assert perf.deadlines(ev, endpoint()).status == "pass"
    assert perf.deadlines(ev, endpoint(timeout_ms=120_000)).status == "warn"
    generative = endpoint(timeout_ms=120_000, versions=(version(flavor="causal_lm"),))
    assert perf.deadlines(ev, generative).status == "pass"
    assert perf.alerts(ev, endpoint()).status == "pass"
    assert perf.alerts(ev, endpoint(firing_alerts=("drift (ticket)",))).status == "warn"
    assert perf.alerts(ev, endpoint(firing_alerts=("slo-burn (page)",))).status == "fail"
    assert perf.alerts(ev, endpoint(monitor=None)).status == "na"
