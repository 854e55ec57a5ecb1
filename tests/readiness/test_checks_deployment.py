"""Deployment and scale checks over hand-built evidence."""

from __future__ import annotations

from evidence_support import endpoint, evidence, version

from modelyard.domain.deployment import DeploymentSpec
from modelyard.readiness.checks import deployment as deploy


def test_replicas() -> None:
    ev = evidence()
    assert deploy.replicas(ev, endpoint()).status == "pass"
    single = deploy.replicas(ev, endpoint(deployment=DeploymentSpec(replicas=1)))
    assert single.status == "warn" and "single replica" in single.evidence
    scaled = DeploymentSpec(replicas=1, autoscaling={"min_replicas": 2, "max_replicas": 4})
    assert deploy.replicas(ev, endpoint(deployment=scaled)).status == "pass"
    graph = endpoint(graph={"graph": "g"}, node_deployments={
        "a": DeploymentSpec(replicas=2), "b": DeploymentSpec(replicas=1)})
    found = deploy.replicas(ev, graph)
    assert found.status == "warn" and "graph nodes b" in found.evidence


def test_resources() -> None:
    lazy = endpoint(deployment=DeploymentSpec(replicas=2, load="lazy"))
    assert deploy.resources(evidence(), endpoint()).status == "na"
    assert deploy.resources(evidence(), lazy).status == "warn"
    assert deploy.resources(evidence(model_memory_budget_mb=2048), lazy).status == "pass"
    assert deploy.resources(evidence(backend="ray"), endpoint()).status == "warn"
    autoscaled = endpoint(deployment=DeploymentSpec(
        replicas=1, autoscaling={"min_replicas": 1, "max_replicas": 4}))
    assert deploy.resources(evidence(backend="ray"), autoscaled).status == "pass"


def test_scale_out() -> None:
    assert deploy.scale_out(evidence()).status == "pass"
    local = deploy.scale_out(evidence(database="sqlite", artifacts_url="/srv/yard/artifacts"))
    assert local.status == "warn"
    assert local.fix is not None and "PostgreSQL" in local.fix and "object store" in local.fix
    half = deploy.scale_out(evidence(artifacts_url="/srv/artifacts"))
    assert half.status == "warn" and half.fix is not None and "PostgreSQL" not in half.fix


def test_restart_safety() -> None:
    ev = evidence()
    assert deploy.restart_safety(ev, endpoint()).status == "pass"
    gone = deploy.restart_safety(ev, endpoint(versions=(version(artifact_present=False),)))
    assert gone.status == "fail" and "churn:2" in gone.evidence
    assert deploy.restart_safety(ev, endpoint(versions=())).status == "na"
    volatile = deploy.restart_safety(evidence(artifacts_url="memory://yard"), endpoint())
    assert volatile.status == "fail" and "in memory" in volatile.evidence
