"""Lifecycle: releases through aliases and canaries, a way back, monitors with references,
feedback, retraining and lineage."""

from __future__ import annotations

from modelyard.domain import graph
from modelyard.domain.errors import ModelyardError
from modelyard.domain.names import ModelRef
from modelyard.readiness.checks import references as ref
from modelyard.readiness.checks.base import (
    Check,
    Finding,
    failed,
    not_applicable,
    passed,
    plural,
    warned,
)
from modelyard.readiness.evidence import EndpointFacts, Evidence

STALE_DAYS = 180
LIVE_ROLLOUTS = ("promoted", "completed", "running", "paused", "awaiting_approval",
                 "rolled_back")


def _references(ep: EndpointFacts) -> list[tuple[str, str]]:
    """(where, reference) of every model the endpoint names."""
    if ep.graph is None:
        return [("endpoint", ep.model_ref)]
    try:
        spec = graph.parse(ep.graph)
    except graph.GraphInvalid:
        return []
    return [(f"node {n}", r) for n, r in sorted(spec.model_refs().items())]


def aliases(_: Evidence, ep: EndpointFacts) -> Finding:
    refs = _references(ep)
    if not refs:
        return not_applicable("the graph does not parse (see the graph check)")
    latest, pinned = [], []
    for where, text in refs:
        try:
            parsed = ModelRef.parse(text)
        except ModelyardError:
            continue
        if parsed.alias is None and parsed.version is None:
            latest.append(f"{where} ({text})")
        elif parsed.alias is None:
            pinned.append(f"{where} ({text})")
    fix = "name an alias (MODEL@champion) and release by moving it or by a rollout"
    if latest:
        return failed(f"follows the latest version: {', '.join(latest)}: every new "
                      "registration goes live untested", fix)
    if pinned:
        return warned(f"pinned to a version: {', '.join(pinned)}: each release is an "
                      "endpoint edit", fix)
    return passed(f"served through aliases: {', '.join(t for _, t in refs)}")


def rollouts(_: Evidence, ep: EndpointFacts) -> Finding:
    used = [r for r in ep.rollouts if r.status in LIVE_ROLLOUTS]
    if used:
        latest = used[0]
        return passed(f"{plural(len(used), 'rollout')}; the latest: {latest.strategy} of "
                      f"{latest.target}, {latest.status}")
    if ep.previous is None:
        return not_applicable("the first version: nothing has been released over another "
                              "yet", "release the next version with modelyard rollout "
                              f"start {ep.name} --to REF")
    return warned(f"versions changed without a canary or blue-green rollout (the version "
                  f"before: {ep.previous.ref})",
                  f"release with modelyard rollout start {ep.name} --to MODEL:VERSION "
                  "(canary steps, automated analysis, rollback)")


def rollback(_: Evidence, ep: EndpointFacts) -> Finding:
    if ep.graph is not None:
        return not_applicable("a graph: roll back by moving its nodes' aliases")
    before = ep.previous
    if before is None:
        return not_applicable("no earlier version to roll back to yet")
    if before.status != "active" or not before.artifact_present:
        why = "archived" if before.status != "active" else "its artifact is missing"
        return failed(f"the version before, {before.ref}, is {why}: there is no quick way back",
                      "keep the previous version active (do not archive it) until the new "
                      "one has proven itself")
    return passed(f"{before.ref} is active with its artifact present: moving the alias back "
                  "(or aborting a rollout) restores it")


def monitor(_: Evidence, ep: EndpointFacts) -> Finding:
    watch = ep.monitor
    fix = (f"modelyard monitor set {ep.name} --quality classification (or regression), and "
           "attach reference profiles: modelyard models profile REF --data TRAIN")
    if watch is None:
        return failed("no monitor: drift and quality are not computed", fix)
    if not watch.enabled:
        return failed("the monitor is disabled", fix)
    missing = [v.ref for v in ep.versions if not v.has_profile]
    if missing:
        return warned(f"monitored, but {', '.join(missing)} has no reference profile, so "
                      "drift cannot be tested", f"modelyard models profile {missing[0]} "
                      "--data TRAIN")
    return passed(f"monitor enabled; {plural(len(ep.versions), 'served version')} with a "
                  "reference profile to test drift against")


def feedback(_: Evidence, ep: EndpointFacts) -> Finding:
    days = f"{ep.feedback_days:g} days"
    if ep.labels or ep.outcomes:
        return passed(f"over {days}: {plural(ep.labels, 'label')}, "
                      f"{plural(ep.outcomes, 'outcome')}")
    fix = (f"POST ground truth to /endpoints/{ep.name}/feedback as "
           "{\"request_id\": ..., \"label\": ...} (Client.send_feedback)")
    if ep.monitor is not None and ep.monitor.has_quality:
        return failed(f"the monitor computes quality, but no label arrived in {days}", fix)
    return warned(f"no labels or outcomes in {days}: live quality is unknown", fix)


def retraining(ev: Evidence, ep: EndpointFacts) -> Finding:
    if ep.retrain_policy is None:
        return not_applicable("a graph: retraining is set per model")
    if ep.retrain_policy:
        return passed("a retraining policy (triggers, gate, rollout) exists for the model")
    fix = "modelyard retrain policy set MODEL -f policy.yaml"
    if not ep.versions:
        return warned("no retraining policy", fix)
    age = max((ev.now - v.created_at).days for v in ep.versions)
    if age > STALE_DAYS:
        return failed(f"no retraining policy and the served version is {age} days old", fix)
    return warned(f"no retraining policy (the served version is {age} days old)", fix)


def lineage(_: Evidence, ep: EndpointFacts) -> Finding:
    if not ep.versions:
        return not_applicable("no version is served yet")
    gaps: dict[str, list[str]] = {}
    for v in ep.versions:
        lacking = [name for name, ok in (
            ("data fingerprint", v.lineage.data_fingerprint),
            ("code revision", v.lineage.code_revision),
            ("params or metrics", v.lineage.params or v.lineage.metrics)) if not ok]
        if lacking:
            gaps[v.ref] = lacking
    fix = ("register with data=, code_revision=, params= and metrics= (lineage cannot be "
           "added to a version afterwards: register a new one)")
    if not gaps:
        return passed(f"{plural(len(ep.versions), 'served version')} with data fingerprint, "
                      "code revision and params/metrics")
    text = "; ".join(f"{r} lacks {', '.join(g)}" for r, g in gaps.items())
    if any(len(g) == 3 for g in gaps.values()):
        return failed(f"no lineage: {text}", fix)
    return warned(f"partial lineage: {text}", fix)


CHECKS = (
    Check("life.aliases", "lifecycle", "Aliases used", 2, ref.INFRA_7,
          "serve MODEL@ALIAS", "the endpoint's (or graph nodes') model references",
          endpoint=aliases),
    Check("life.rollouts", "lifecycle", "Releases go through rollouts", 2,
          f"{ref.INFRA_6}; {ref.SRE_CANARY}", "use modelyard rollout start",
          "rollouts recorded for the endpoint", endpoint=rollouts),
    Check("life.rollback", "lifecycle", "A version to roll back to", 1, ref.INFRA_7,
          "keep the previous version active", "the version before the served one: active, "
          "artifact present", endpoint=rollback),
    Check("life.monitor", "lifecycle", "Monitor with reference profiles", 3, ref.MONITOR_2,
          "set a monitor and attach profiles", "the endpoint's monitor and each served "
          "version's reference profile", endpoint=monitor),
    Check("life.feedback", "lifecycle", "Feedback flowing", 2, ref.MONITOR_7,
          "send labels or outcomes", "labels and outcomes received over 30 days",
          endpoint=feedback),
    Check("life.retraining", "lifecycle", "Retraining policy", 1, ref.MONITOR_4,
          "set a retraining policy", f"the model's retraining policy; the served version's "
          f"age (fails past {STALE_DAYS} days without one)", endpoint=retraining),
    Check("life.lineage", "lifecycle", "Lineage complete", 2, ref.INFRA_1,
          "register with full lineage", "served versions' data fingerprint, code revision, "
          "params and metrics", endpoint=lineage),
)
