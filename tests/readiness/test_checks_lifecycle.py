"""Lifecycle and interoperability checks over hand-built evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from evidence_support import LINEAGE, NOW, endpoint, evidence, version

from modelyard.domain.registry import Lineage
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.readiness.checks import interop, lifecycle
from modelyard.readiness.evidence import MonitorFacts, RolloutFacts

GRAPH = {"graph": "g", "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
         "nodes": {"a": {"kind": "model", "model": "churn@champion",
                         "inputs": {"input": "inputs.x"}},
                   "b": {"kind": "model", "model": "ltv:3", "inputs": {"input": "inputs.x"}}},
         "outputs": {"y": "a.label"}}


def test_aliases() -> None:
    ev = evidence()
    assert lifecycle.aliases(ev, endpoint()).status == "pass"
    assert lifecycle.aliases(ev, endpoint(model_ref="churn:2")).status == "warn"
    latest = lifecycle.aliases(ev, endpoint(model_ref="churn"))
    assert latest.status == "fail" and "latest version" in latest.evidence
    pinned_node = lifecycle.aliases(ev, endpoint(graph=GRAPH))
    assert pinned_node.status == "warn" and "node b (ltv:3)" in pinned_node.evidence


def test_rollouts_and_rollback() -> None:
    ev = evidence()
    assert lifecycle.rollouts(ev, endpoint()).status == "pass"
    assert lifecycle.rollouts(ev, endpoint(rollouts=())).status == "warn"
    assert lifecycle.rollouts(ev, endpoint(rollouts=(), previous=None)).status == "na"
    aborted = (RolloutFacts("canary", "aborted", "churn:2", NOW),)
    assert lifecycle.rollouts(ev, endpoint(rollouts=aborted)).status == "warn"
    assert lifecycle.rollback(ev, endpoint()).status == "pass"
    archived = lifecycle.rollback(ev, endpoint(previous=version("churn:1", status="archived")))
    assert archived.status == "fail" and "archived" in archived.evidence
    gone = endpoint(previous=version("churn:1", artifact_present=False))
    assert lifecycle.rollback(ev, gone).status == "fail"
    assert lifecycle.rollback(ev, endpoint(previous=None)).status == "na"


def test_monitor_and_feedback() -> None:
    ev = evidence()
    assert lifecycle.monitor(ev, endpoint()).status == "pass"
    assert lifecycle.monitor(ev, endpoint(monitor=None)).status == "fail"
    unprofiled = lifecycle.monitor(ev, endpoint(versions=(version(has_profile=False),)))
    assert unprofiled.status == "warn" and "churn:2" in unprofiled.evidence
    assert lifecycle.feedback(ev, endpoint()).status == "pass"
    assert lifecycle.feedback(ev, endpoint(labels=0)).status == "fail"  # quality, no labels
    no_quality = MonitorFacts(True, 0.99, 100.0, has_quality=False)
    assert lifecycle.feedback(ev, endpoint(labels=0, monitor=no_quality)).status == "warn"
    assert lifecycle.feedback(ev, endpoint(labels=0, outcomes=3)).status == "pass"


def test_retraining_and_lineage() -> None:
    ev = evidence()
    assert lifecycle.retraining(ev, endpoint()).status == "pass"
    assert lifecycle.retraining(ev, endpoint(retrain_policy=False)).status == "warn"
    stale = endpoint(retrain_policy=False,
                     versions=(version(created_at=NOW - timedelta(days=400)),))
    assert lifecycle.retraining(ev, stale).status == "fail"
    assert lifecycle.retraining(ev, endpoint(retrain_policy=None)).status == "na"
    assert lifecycle.lineage(ev, endpoint()).status == "pass"
    partial = version(lineage=replace(LINEAGE, code_revision=None))
    assert lifecycle.lineage(ev, endpoint(versions=(partial,))).status == "warn"
    bare = lifecycle.lineage(ev, endpoint(versions=(version(lineage=Lineage()),)))
    assert bare.status == "fail" and "code revision" in bare.evidence


def test_interop() -> None:
    assert interop.protocols(evidence()).status == "pass"
    assert interop.protocols(evidence(grpc_port=0)).status == "warn"
    ev = evidence()
    assert interop.signature_export(ev, endpoint()).status == "pass"
    loose = version(signature=Signature(inputs=(TensorSpec("x", "float32", (-1, -1)),),
                                        outputs=(TensorSpec("y", "float32", (-1,)),)))
    found = interop.signature_export(ev, endpoint(versions=(loose,)))
    assert found.status == "warn" and "churn:2:x [-1, -1]" in found.evidence
