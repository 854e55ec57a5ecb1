"""Hand-built readiness evidence: a well-run endpoint and yard, changed per test."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.projects import ProjectPolicy
from modelyard.domain.registry import Lineage
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.readiness.evidence import (
    AuditFacts,
    EndpointFacts,
    Evidence,
    KeyFacts,
    LoadTestFacts,
    MonitorFacts,
    RolloutFacts,
    TrafficFacts,
    VersionFacts,
    YardFacts,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SIGNATURE = Signature(inputs=(TensorSpec("input", "float32", (-1, 4)),),
                      outputs=(TensorSpec("label", "int64", (-1,)),
                               TensorSpec("probabilities", "float32", (-1, 2))))
LINEAGE = Lineage(data_fingerprint="sha256:ab", params={"C": 1.0}, metrics={"auc": 0.9},
                  code_revision="abc123")


def version(ref: str = "churn:2", **changes: Any) -> VersionFacts:
    base = VersionFacts(ref=ref, flavor="onnx", signature=SIGNATURE, lineage=LINEAGE,
                        created_at=NOW - timedelta(days=3), has_profile=True)
    return replace(base, **changes)


def endpoint(**changes: Any) -> EndpointFacts:
    base = EndpointFacts(
        name="churn", project="default", model_ref="churn@champion", auth="key",
        timeout_ms=1000, generation=4, deployment=DeploymentSpec(replicas=2),
        versions=(version(),), previous=version("churn:1"),
        monitor=MonitorFacts(enabled=True, slo=0.99, latency_p99_ms=100.0, has_quality=True),
        traffic=TrafficFacts(window_days=7, records=1000, errors=2, p99_ms=40.0, sample=1.0),
        loadtests=(LoadTestFacts(at=NOW - timedelta(days=1), duration_s=30, concurrency=8,
                                 requests=3000, errors=3, p50_ms=10, p99_ms=50,
                                 throughput=100, generation=4),),
        rollouts=(RolloutFacts("canary", "promoted", "churn:2", NOW - timedelta(days=2)),),
        labels=50, outcomes=0, retrain_policy=True)
    return replace(base, **changes)


def yard(**changes: Any) -> YardFacts:
    keys = (KeyFacts("my_admin", "ops", ("admin",), NOW - timedelta(days=10),
                     NOW - timedelta(days=1)),
            KeyFacts("my_appr", "ana", ("approver",), NOW - timedelta(days=10),
                     NOW - timedelta(days=1)),
            KeyFacts("my_pred", "svc", ("predictor",), NOW - timedelta(days=10), None))
    base = YardFacts(database="postgresql", artifacts_url="s3://bucket/yard",
                     backend="local", grpc_port=8001, audit=AuditFacts(True, 120), keys=keys)
    return replace(base, **changes)


GOOD_POLICY = ProjectPolicy(approvals_required=1, signatures_required=True,
                            trusted_keys=("-----BEGIN PUBLIC KEY-----",))


def evidence(*endpoints: EndpointFacts, policy: ProjectPolicy = GOOD_POLICY,
             **yard_changes: Any) -> Evidence:
    eps = endpoints or (endpoint(versions=(version(signed=True),)),)
    return Evidence(now=NOW, yard=yard(**yard_changes), projects={"default": policy},
                    endpoints=tuple(eps))
