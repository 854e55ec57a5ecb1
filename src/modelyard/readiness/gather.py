"""Evidence from a yard's store: one read of everything the checks look at, for one
endpoint or all of them. The only module of the scorecard that does IO (the metadata store,
and whether each served artifact is in the artifact store)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from modelyard.domain import graph
from modelyard.domain.cards import ModelCard
from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ModelyardError
from modelyard.domain.monitors import MonitorSpec
from modelyard.domain.names import ModelRef
from modelyard.domain.projects import ProjectPolicy
from modelyard.domain.registry import Endpoint, Lineage
from modelyard.domain.signature import Signature
from modelyard.governance import audit, signing
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
from modelyard.readiness.loadtest import without_credentials
from modelyard.settings import Settings
from modelyard.store import loadtests
from modelyard.store import projects as projects_repo
from modelyard.store import registry as registry_repo
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.db import Database
from modelyard.store.tables import (
    AlertRow,
    ApiKeyRow,
    FeedbackRow,
    InferenceRecordRow,
    LabelRow,
    LoadTestRow,
    ModelRow,
    MonitorRow,
    ReferenceProfileRow,
    RetrainPolicyRow,
    RolloutRow,
    VersionRow,
    VersionSignatureRow,
)

TRAFFIC_WINDOW_DAYS = 7.0
FEEDBACK_WINDOW_DAYS = 30.0
LATENCY_SAMPLE = 50_000  # newest answered records the p99 is computed over


class Gatherer:
    def __init__(self, db: Database, artifacts: ArtifactStore, settings: Settings) -> None:
        self.db = db
        self.artifacts = artifacts
        self.settings = settings
        self._present: dict[str, bool] = {}

    def evidence(self, endpoints: Sequence[Endpoint], scope: str | None, now: datetime,
                 *, reveal_keys: bool = True) -> Evidence:
        """``reveal_keys``: name keys by prefix (callers who may list keys), else by
        number only."""
        with self.db.transaction() as session:
            policies = {p.name: p.policy for p in projects_repo.all_projects(session)}
            yard = self._yard(session)
            facts = tuple(self._endpoint(session, e, policies, now) for e in endpoints)
            keys = tuple(KeyFacts(r.prefix if reveal_keys else f"key #{i}", r.owner,
                                  tuple(r.roles), r.created_at, r.last_used_at)
                         for i, r in enumerate(session.scalars(
                             select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))
                             .order_by(ApiKeyRow.id)), start=1))
        return Evidence(now=now, yard=replace(yard, keys=keys),
                        projects=policies, endpoints=facts, scope=scope)

    # -- the yard --------------------------------------------------------------------------
    def _yard(self, session: Session) -> YardFacts:
        verdict = audit.verify(session)
        s = self.settings
        return YardFacts(database=self.db.engine.dialect.name,
                         artifacts_url=without_credentials(s.artifacts_url),
                         backend=s.backend, grpc_port=s.grpc_port,
                         audit=AuditFacts(verdict.ok, verdict.records, verdict.problem),
                         jwt=bool(s.jwt_jwks), model_memory_budget_mb=s.model_memory_budget_mb)

    # -- one endpoint ----------------------------------------------------------------------
    def _endpoint(self, session: Session, ep: Endpoint, policies: dict[str, ProjectPolicy],
                  now: datetime) -> EndpointFacts:
        policy = policies.get(ep.project) or ProjectPolicy()
        required = policy.card_required if policy.card_required is not None else tuple(
            f.strip() for f in self.settings.card_required_fields.split(",") if f.strip())
        refs, node_deployments, problems = self._references(session, ep)
        versions: list[VersionFacts] = []
        unresolved: list[str] = []
        for node, text in refs:
            try:
                model, row = registry_repo.resolve(session, ModelRef.parse(text))
            except ModelyardError:
                unresolved.append(text if node is None else f"{node}: {text}")
                continue
            versions.append(self._version(session, model, row, policy, required, node))
        previous = None
        single_model = None
        if ep.graph is None and versions:
            single_model = versions[0].ref.rpartition(":")[0]
            previous = self._previous(session, single_model, versions[0].ref, policy,
                                      required)
        return EndpointFacts(
            name=ep.name, project=ep.project, model_ref=ep.model_ref, auth=ep.auth,
            timeout_ms=ep.timeout_ms, generation=ep.generation, deployment=ep.deployment,
            graph=ep.graph, graph_problems=tuple(problems),
            node_deployments=node_deployments, traffic_split=ep.traffic is not None,
            log_sample=ep.log_sample, redaction=dict(ep.redaction),
            versions=_unique(versions), unresolved=tuple(unresolved), previous=previous,
            monitor=self._monitor(session, ep.name),
            traffic=self._traffic(session, ep, now),
            loadtests=tuple(_loadtest(r) for r in loadtests.recent(session, ep.name, 5)),
            rollouts=tuple(RolloutFacts(r.strategy, r.status, r.target, r.created_at)
                           for r in session.scalars(
                               select(RolloutRow).where(RolloutRow.endpoint == ep.name)
                               .order_by(RolloutRow.id.desc()).limit(20))),
            labels=_count(session, LabelRow, LabelRow.endpoint == ep.name, LabelRow.at
                          >= now - timedelta(days=FEEDBACK_WINDOW_DAYS)),
            outcomes=_count(session, FeedbackRow, FeedbackRow.endpoint == ep.name,
                            FeedbackRow.at >= now - timedelta(days=FEEDBACK_WINDOW_DAYS)),
            feedback_days=FEEDBACK_WINDOW_DAYS,
            firing_alerts=tuple(f"{a.rule} ({a.severity})" for a in session.scalars(
                select(AlertRow).where(AlertRow.endpoint == ep.name,
                                       AlertRow.status == "firing").order_by(AlertRow.rule))),
            retrain_policy=None if ep.graph is not None else
            self._has_retrain_policy(session, single_model))

    def _has_retrain_policy(self, session: Session, model: str | None) -> bool:
        return model is not None and session.scalars(
            select(RetrainPolicyRow.id).where(RetrainPolicyRow.model == model,
                                              RetrainPolicyRow.enabled.is_(True))
        ).first() is not None

    def _references(self, session: Session, ep: Endpoint
                    ) -> tuple[list[tuple[str | None, str]], dict[str, DeploymentSpec],
                               list[str]]:
        """(node, model reference) served; each graph model node's deployment; the graph's
        problems when validated now against the versions its references resolve to."""
        if ep.graph is None:
            refs: list[tuple[str | None, str]] = [(None, ep.model_ref)]
            split = (ep.traffic or {}).get("split") or []
            refs += [(None, str(s["model"])) for s in split
                     if isinstance(s, dict) and s.get("model")]
            return refs, {}, []
        problems: list[graph.Problem] = []
        spec = graph.parse(ep.graph, problems)
        if problems:
            return [], {}, [str(p) for p in problems]

        def signature_of(reference: str) -> Signature:
            return registry_repo.to_version(
                *registry_repo.resolve(session, ModelRef.parse(reference))).signature

        _, found = graph.validate(spec, signature_of)
        deployments = {}
        for node in spec.nodes.values():
            if node.kind == "model":
                try:
                    deployments[node.name] = DeploymentSpec.from_dict(dict(node.deployment))
                except ModelyardError:
                    deployments[node.name] = DeploymentSpec()
        return ([(name, ref) for name, ref in sorted(spec.model_refs().items())],
                deployments, [str(p) for p in found])

    def _version(self, session: Session, model: ModelRow, row: VersionRow,
                 policy: ProjectPolicy, required: tuple[str, ...], node: str | None
                 ) -> VersionFacts:
        signed = None
        if policy.signatures_required:
            stored = [{"key_id": s.key_id, "algorithm": s.algorithm, "signature": s.signature}
                      for s in session.scalars(select(VersionSignatureRow).where(
                          VersionSignatureRow.version_id == row.id))]
            signed = signing.verify_any(stored, [k.encode() for k in policy.trusted_keys],
                                        model.name, row.artifact_digest) is not None
        try:
            missing = tuple(ModelCard.from_dict(row.card).missing(required))
        except ModelyardError:
            missing = tuple(required)
        return VersionFacts(
            ref=f"{model.name}:{row.version}", flavor=row.flavor,
            signature=Signature.from_dict(row.signature),
            lineage=Lineage.from_dict(row.lineage), created_at=row.created_at,
            status=row.status, card_missing=missing, signed=signed,
            artifact_present=self._artifact_present(row.artifact_digest),
            has_profile=session.scalars(select(ReferenceProfileRow.id).where(
                ReferenceProfileRow.version_id == row.id)).first() is not None,
            node=node)

    def _previous(self, session: Session, model: str, served: str, policy: ProjectPolicy,
                  required: tuple[str, ...]) -> VersionFacts | None:
        number = int(served.rpartition(":")[2])
        found = session.execute(
            select(ModelRow, VersionRow).join(VersionRow, VersionRow.model_id == ModelRow.id)
            .where(ModelRow.name == model, VersionRow.version < number)
            .order_by(VersionRow.version.desc()).limit(1)).first()
        if found is None:
            return None
        return self._version(session, found[0], found[1], policy, required, None)

    def _artifact_present(self, digest: str) -> bool:
        if digest not in self._present:
            try:
                self._present[digest] = self.artifacts.exists(digest)
            except (OSError, ModelyardError):
                self._present[digest] = False
        return self._present[digest]

    def _monitor(self, session: Session, endpoint: str) -> MonitorFacts | None:
        row = session.scalars(select(MonitorRow).where(MonitorRow.endpoint == endpoint)
                              ).one_or_none()
        if row is None:
            return None
        try:
            spec = MonitorSpec.from_dict(row.spec)
        except ModelyardError:
            return MonitorFacts(row.enabled, None, None, False, row.last_evaluated_at)
        latency = [r.threshold for r in spec.rules if r.kind == "latency_p99"
                   and r.threshold is not None]
        return MonitorFacts(row.enabled, spec.slo, min(latency) if latency else None,
                            spec.quality is not None, row.last_evaluated_at)

    def _traffic(self, session: Session, ep: Endpoint, now: datetime) -> TrafficFacts:
        since = now - timedelta(days=TRAFFIC_WINDOW_DAYS)
        where = and_(InferenceRecordRow.endpoint == ep.name, InferenceRecordRow.at >= since)
        total, errors = session.execute(select(
            func.count(), func.sum(case((InferenceRecordRow.status >= 500, 1), else_=0)))
            .where(where)).one()
        latencies = list(session.scalars(
            select(InferenceRecordRow.latency_ms)
            .where(where, InferenceRecordRow.status < 500)
            .order_by(InferenceRecordRow.id.desc()).limit(LATENCY_SAMPLE)))
        p99 = float(np.percentile(np.asarray(latencies, dtype=np.float64), 99)) \
            if latencies else None
        return TrafficFacts(TRAFFIC_WINDOW_DAYS, int(total or 0), int(errors or 0), p99,
                            ep.log_sample)


def _count(session: Session, table: type, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _unique(versions: list[VersionFacts]) -> tuple[VersionFacts, ...]:
    seen: dict[tuple[str, str | None], VersionFacts] = {}
    for v in versions:
        seen.setdefault((v.ref, v.node), v)
    return tuple(seen.values())


def _loadtest(r: LoadTestRow) -> LoadTestFacts:
    return LoadTestFacts(at=r.at, duration_s=r.duration_s, concurrency=r.concurrency,
                         requests=r.requests, errors=r.errors, p50_ms=r.p50_ms,
                         p99_ms=r.p99_ms, throughput=r.throughput, generation=r.generation)
