"""The facts a readiness scorecard is graded on: a plain snapshot, gathered once at the edge
(``readiness/gather.py``) and read by the pure checks. Nothing here does IO, so every check
is a function of these values and is tested over hand-built snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.projects import ProjectPolicy
from modelyard.domain.registry import Lineage
from modelyard.domain.signature import Signature


@dataclass(frozen=True)
class VersionFacts:
    """One version an endpoint serves (or could roll back to)."""

    ref: str  # model:version
    flavor: str
    signature: Signature
    lineage: Lineage
    created_at: datetime
    status: str = "active"
    card_missing: tuple[str, ...] = ()  # required card fields it lacks
    # None: the project does not require signatures; else whether one verifies.
    signed: bool | None = None
    artifact_present: bool = True
    has_profile: bool = False
    node: str | None = None  # the graph node serving it (None for a single-model endpoint)


@dataclass(frozen=True)
class MonitorFacts:
    enabled: bool
    slo: float | None  # availability target
    latency_p99_ms: float | None  # the tightest latency_p99 alert threshold
    has_quality: bool
    last_evaluated_at: datetime | None = None


@dataclass(frozen=True)
class TrafficFacts:
    """What the inference log holds for an endpoint over a window (it is sampled)."""

    window_days: float
    records: int
    errors: int  # status >= 500
    p99_ms: float | None
    sample: float  # the endpoint's log_sample

    @property
    def availability(self) -> float | None:
        return None if self.records == 0 else 1.0 - self.errors / self.records


@dataclass(frozen=True)
class LoadTestFacts:
    at: datetime
    duration_s: float
    concurrency: int
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    throughput: float
    generation: int  # the endpoint's generation it ran against

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


@dataclass(frozen=True)
class RolloutFacts:
    strategy: str
    status: str
    target: str
    at: datetime


@dataclass(frozen=True)
class EndpointFacts:
    name: str
    project: str
    model_ref: str
    auth: str
    timeout_ms: int
    generation: int
    deployment: DeploymentSpec = field(default_factory=DeploymentSpec)
    graph: Mapping[str, Any] | None = None  # the stored graph document
    graph_problems: tuple[str, ...] = ()  # validation now, against current versions
    node_deployments: Mapping[str, DeploymentSpec] = field(default_factory=dict)
    traffic_split: bool = False
    log_sample: float = 1.0
    redaction: Mapping[str, str] = field(default_factory=dict)
    versions: tuple[VersionFacts, ...] = ()  # what it serves now
    unresolved: tuple[str, ...] = ()  # references that resolve to nothing
    previous: VersionFacts | None = None  # the version before the served one (rollback)
    monitor: MonitorFacts | None = None
    traffic: TrafficFacts | None = None
    loadtests: tuple[LoadTestFacts, ...] = ()  # newest first
    rollouts: tuple[RolloutFacts, ...] = ()  # newest first
    labels: int = 0  # ground truth received over the feedback window
    outcomes: int = 0
    feedback_days: float = 30.0
    firing_alerts: tuple[str, ...] = ()  # "rule (severity)"
    retrain_policy: bool | None = None  # None: a graph (no single model to retrain)


@dataclass(frozen=True)
class KeyFacts:
    prefix: str
    owner: str
    roles: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class AuditFacts:
    ok: bool
    records: int
    problem: str | None = None


@dataclass(frozen=True)
class YardFacts:
    database: str  # sqlite or postgresql
    artifacts_url: str
    backend: str
    grpc_port: int
    audit: AuditFacts
    keys: tuple[KeyFacts, ...] = ()  # active (not revoked) keys
    jwt: bool = False  # OIDC tokens accepted
    model_memory_budget_mb: float = 0.0


@dataclass(frozen=True)
class Evidence:
    """Everything the checks read, taken at ``now``."""

    now: datetime
    yard: YardFacts
    projects: Mapping[str, ProjectPolicy]
    endpoints: tuple[EndpointFacts, ...]
    scope: str | None = None  # the endpoint asked for, or None for the whole yard

    def policy(self, project: str) -> ProjectPolicy:
        return self.projects.get(project) or ProjectPolicy()
