"""Performance and reliability: objectives defined and met, a recent load test that met
them, batching, deadlines, and no alert firing."""

from __future__ import annotations

from modelyard.readiness.checks import references as ref
from modelyard.readiness.checks.base import (
    Check,
    Finding,
    failed,
    not_applicable,
    passed,
    warned,
)
from modelyard.readiness.evidence import EndpointFacts, Evidence, LoadTestFacts

LOADTEST_MAX_AGE_DAYS = 14.0
DEFAULT_MAX_ERROR_RATE = 0.01  # when no availability SLO is set
LONG_DEADLINE_MS = 60_000
GENERATIVE = ("causal_lm",)
SLO_FIX = ("modelyard monitor set ENDPOINT --slo 0.999 plus a latency_p99 alert rule "
           "(spec: {\"slo\": 0.999, \"alerts\": [{\"name\": \"p99\", \"kind\": "
           "\"latency_p99\", \"threshold\": 250}]})")


def slo_defined(_: Evidence, ep: EndpointFacts) -> Finding:
    monitor = ep.monitor
    if monitor is None or not monitor.enabled:
        return failed("no enabled monitor, so no objective is defined", SLO_FIX)
    have = []
    if monitor.slo is not None:
        have.append(f"availability {monitor.slo:.4g}")
    if monitor.latency_p99_ms is not None:
        have.append(f"p99 latency <= {monitor.latency_p99_ms:g} ms")
    if len(have) == 2:
        return passed(f"objectives: {' and '.join(have)}")
    if have:
        lacking = "a latency objective (latency_p99 rule)" if monitor.slo is not None \
            else "an availability objective (slo)"
        return warned(f"objective: {have[0]}; no {lacking}", SLO_FIX)
    return failed("the monitor sets neither an availability SLO nor a latency objective",
                  SLO_FIX)


def slo_met(_: Evidence, ep: EndpointFacts) -> Finding:
    monitor = ep.monitor
    if monitor is None or (monitor.slo is None and monitor.latency_p99_ms is None):
        return not_applicable("no objective to measure against", SLO_FIX)
    traffic = ep.traffic
    if traffic is None or traffic.records == 0:
        days = traffic.window_days if traffic else 7
        return not_applicable(f"no logged requests in the last {days:g} days to measure "
                              "the objectives on",
                              "send traffic (or keep log_sample above 0) and check again")
    seen = (f"{traffic.records} logged requests over {traffic.window_days:g} days "
            f"(log_sample {traffic.sample:g})")
    misses: list[str] = []
    met: list[str] = []
    availability = traffic.availability
    if monitor.slo is not None and availability is not None:
        text = f"availability {availability:.4%} vs objective {monitor.slo:.4%}"
        (misses if availability < monitor.slo else met).append(text)
    if monitor.latency_p99_ms is not None and traffic.p99_ms is not None:
        text = f"p99 {traffic.p99_ms:.1f} ms vs objective {monitor.latency_p99_ms:g} ms"
        (misses if traffic.p99_ms > monitor.latency_p99_ms else met).append(text)
    if misses:
        return failed(f"{seen}: missed {'; '.join(misses)}"
                      + (f"; met {'; '.join(met)}" if met else ""),
                      "find the cause (modelyard monitor log ENDPOINT --status error, the "
                      "p99 in /metrics), then fix capacity (replicas, batching) or the model")
    return passed(f"{seen}: {'; '.join(met)}")


def _loadtest_verdict(test: LoadTestFacts, ep: EndpointFacts) -> tuple[bool, str]:
    slo = ep.monitor.slo if ep.monitor else None
    latency = ep.monitor.latency_p99_ms if ep.monitor else None
    max_errors = 1 - slo if slo is not None else DEFAULT_MAX_ERROR_RATE
    max_p99 = latency if latency is not None else float(ep.timeout_ms)
    ok_errors = test.error_rate <= max_errors
    ok_p99 = test.p99_ms is not None and test.p99_ms <= max_p99
    p99 = f"{test.p99_ms:.1f} ms" if test.p99_ms is not None else "none"
    text = (f"{test.requests} requests at concurrency {test.concurrency} for "
            f"{test.duration_s:g} s: {test.throughput:.1f} req/s, p99 {p99} (limit "
            f"{max_p99:g} ms{'' if latency is not None else ', the deadline'}), errors "
            f"{test.error_rate:.2%} (limit {max_errors:.2%})")
    return ok_errors and ok_p99, text


def loadtest(ev: Evidence, ep: EndpointFacts) -> Finding:
    fix = (f"modelyard loadtest {ep.name} --duration 30 --concurrency 8 (records the result); "
           "run it against a staging copy if production has no headroom")
    if not ep.loadtests:
        return failed("no load test recorded", fix)
    latest = ep.loadtests[0]
    age_days = (ev.now - latest.at).total_seconds() / 86400
    ok, text = _loadtest_verdict(latest, ep)
    when = f"{age_days:.1f} days ago"
    if not ok:
        return failed(f"the latest load test ({when}) missed the objectives: {text}",
                      "add capacity (replicas, batching) or speed up the model, then "
                      f"{fix}")
    if age_days > LOADTEST_MAX_AGE_DAYS:
        return warned(f"the latest load test is {when} (older than "
                      f"{LOADTEST_MAX_AGE_DAYS:g}): {text}", fix)
    if latest.generation != ep.generation:
        return warned(f"met the objectives {when}, but the endpoint changed since "
                      f"(generation {latest.generation} -> {ep.generation}): {text}", fix)
    return passed(f"met the objectives {when}: {text}")


def batching(_: Evidence, ep: EndpointFacts) -> Finding:
    specs = dict(ep.node_deployments) if ep.graph is not None else {ep.name: ep.deployment}
    flavors = {v.node or ep.name: v.flavor for v in ep.versions}
    relevant = {n: s for n, s in specs.items() if flavors.get(n) not in ("remote",
                                                                        *GENERATIVE)}
    if not relevant:
        return not_applicable("no locally computed model to batch (remote or generative)")
    unbatched = sorted(n for n, s in relevant.items() if s.max_batch_size < 2)
    if unbatched:
        return warned(f"max_batch_size 1 for {', '.join(unbatched)}: every request runs "
                      "alone, so throughput under load is what one call at a time gives",
                      "set deployment.max_batch_size (e.g. 32) and max_queue_delay_ms "
                      "(e.g. 2)")
    shown = ", ".join(f"{n}: up to {s.max_batch_size} rows, {s.max_queue_delay_ms:g} ms"
                      for n, s in sorted(relevant.items()))
    return passed(f"dynamic batching on ({shown})")


def deadlines(_: Evidence, ep: EndpointFacts) -> Finding:
    generative = any(v.flavor in GENERATIVE for v in ep.versions)
    if ep.timeout_ms > LONG_DEADLINE_MS and not generative:
        return warned(f"the deadline is {ep.timeout_ms / 1000:g} s: a stalled model holds "
                      "callers and queue slots that long",
                      f"lower timeout_ms to a few times the p99 (at most "
                      f"{LONG_DEADLINE_MS // 1000} s)")
    return passed(f"every request carries a {ep.timeout_ms} ms deadline; queued requests "
                  "past it are dropped")


def alerts(_: Evidence, ep: EndpointFacts) -> Finding:
    if ep.monitor is None or not ep.monitor.enabled:
        return not_applicable("no enabled monitor, so no alert rules",
                              "modelyard monitor set ENDPOINT")
    if not ep.firing_alerts:
        return passed("no alert firing")
    pages = [a for a in ep.firing_alerts if "(page)" in a]
    text = f"firing: {', '.join(ep.firing_alerts)}"
    fix = f"see modelyard monitor alerts --endpoint {ep.name} and resolve the cause"
    return failed(text, fix) if pages else warned(text, fix)


CHECKS = (
    Check("perf.slo_defined", "performance", "SLOs defined", 2, ref.SRE_SLO, SLO_FIX,
          "the endpoint's monitor: slo (availability) and latency_p99 alert rules",
          endpoint=slo_defined),
    Check("perf.slo_met", "performance", "SLOs met over the window", 3, ref.SRE_SLO,
          "fix capacity or the model until the objectives hold",
          "inference log over the last 7 days: share of 5xx answers and the p99 latency "
          "(sampled at log_sample)", endpoint=slo_met),
    Check("perf.loadtest", "performance", "Recent load test met the SLO", 3,
          f"{ref.MONITOR_6}; {ref.SRE_TESTING}", "modelyard loadtest ENDPOINT",
          f"the newest recorded load test: within {LOADTEST_MAX_AGE_DAYS:g} days, against "
          "the current generation, error rate and p99 within the objectives (without a "
          "latency objective: the deadline; without an SLO: 1% errors)",
          endpoint=loadtest),
    Check("perf.batching", "performance", "Batching configured", 1, ref.CLIPPER,
          "set deployment.max_batch_size and max_queue_delay_ms",
          "max_batch_size and max_queue_delay_ms of locally computed models",
          endpoint=batching),
    Check("perf.deadlines", "performance", "Deadlines set", 1, ref.SRE_CASCADING,
          "lower timeout_ms", f"the endpoint's timeout_ms (a warning above "
          f"{LONG_DEADLINE_MS // 1000} s, except generative models)", endpoint=deadlines),
    Check("perf.alerts", "performance", "No alert firing", 2, ref.SRE_ALERTING,
          "resolve firing alerts", "alerts of the endpoint's monitor that fire now (a page "
          "fails, a ticket warns)", endpoint=alerts),
)
