"""``Yard``: one installation opened in-process (notebooks, the CLI, the server).

It wires the metadata store, the artifact store and the services, and offers the same verbs
as the HTTP ``Client``: ``register``, ``models``, ``version``, ``set_alias``, ``archive``,
``create_endpoint``, ``predict``... Whoever can open a yard's files acts as its admin.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np

from modelyard.control.approvals import ApprovalService
from modelyard.control.endpoints import EndpointService
from modelyard.control.jobs import JobService
from modelyard.control.keys import KeyService
from modelyard.control.monitoring import (
    MONITOR_KIND,
    MonitoringService,
    check_monitor_payload,
)
from modelyard.control.projects import ProjectService
from modelyard.control.registry import Registration, RegistryService
from modelyard.domain.approvals import Approval
from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ModelyardError, NotReady, ValidationFailed
from modelyard.domain.jobs import Job, LogLine, Schedule
from modelyard.domain.monitors import training_columns
from modelyard.domain.names import ModelRef
from modelyard.domain.projects import Project
from modelyard.domain.registry import (
    Alias,
    Endpoint,
    Lineage,
    Model,
    ModelVersion,
    fingerprint,
    metric_values,
)
from modelyard.domain.signature import Signature, as_input_dict
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal, authorize
from modelyard.graphs import Graph, graph_document
from modelyard.jobs.retraining import RetrainService
from modelyard.readiness.scorecard import Scorecard
from modelyard.readiness.service import ReadinessService
from modelyard.rollout.controller import RolloutService
from modelyard.serving.batcher import BatchObserver
from modelyard.serving.deployment import Deployment
from modelyard.settings import Settings
from modelyard.store import keys
from modelyard.store.artifacts import ArtifactStore, storage_options
from modelyard.store.db import Database

log = logging.getLogger("modelyard.yard")

class YardNotInitialised(ModelyardError):
    code, status, title = "yard_not_initialised", 404, "No yard here"


class SchemaOutdated(ModelyardError):
    code, status, title = "schema_outdated", 503, "Database schema is behind"


class Yard:
    def __init__(self, path: str | Path | None = None, *, settings: Settings | None = None,
                 principal: Principal | None = None) -> None:
        self.settings = settings or Settings.load(path)
        self.db = Database(self.settings.database_url)
        sqlite_file = self.db.sqlite_path()
        if sqlite_file is not None and not sqlite_file.is_file():
            self.db.dispose()
            raise YardNotInitialised(
                f"no yard at {self.settings.home}; run 'modelyard init' to create one"
            )
        current = self.db.current_revision()
        if current is None:
            self.db.dispose()
            raise YardNotInitialised(
                f"no yard at {self.settings.home} ({self.db!r}); run 'modelyard init'"
            )
        if current != self.db.head_revision():
            self.db.dispose()
            raise SchemaOutdated(
                f"the yard's schema is at {current}, this Modelyard needs "
                f"{self.db.head_revision()}; run 'modelyard db upgrade'"
            )
        self.artifacts = ArtifactStore(self.settings.artifacts_url, self.settings.cache_dir,
                                       **storage_options(self.settings.artifacts_options))
        required = tuple(f.strip() for f in self.settings.card_required_fields.split(",")
                         if f.strip())
        self.approvals = ApprovalService(self.db)
        self.projects = ProjectService(self.db)
        self.registry = RegistryService(self.db, self.artifacts, self.settings.home / "tmp",
                                        self.settings.home,
                                        (self.settings.card_required_alias, required),
                                        approvals=self.approvals)
        self.endpoints = EndpointService(self.db, self.settings.default_timeout_ms,
                                         approvals=self.approvals)
        self.access = KeyService(self.db)
        self.rollouts = RolloutService(self.db, self.endpoints, self.approvals, self.registry)
        self.jobs = JobService(self.db)  # register kinds: yard.jobs.handlers.register
        self.monitoring = MonitoringService(self.db, self.settings.outbound_allow)
        self.monitoring.predict = lambda ref, rows: self.predict(ref, rows)
        self.jobs.handlers.register(MONITOR_KIND, self.monitoring.run_job,
                                    action="monitors:write", check=check_monitor_payload,
                                    description="drift, quality and alerts of an endpoint")
        # Retraining policies and cycles (registers the ``retrain`` job kind).
        self.retraining = RetrainService(
            self.db, self.jobs, self.registry, self.rollouts, self.approvals,
            [h.strip() for h in self.settings.outbound_allow.split(",") if h.strip()])
        self.monitoring.retrain = self.retraining.trigger  # alerts ask for cycles
        self.retraining.runner.profile = self.monitoring.set_profile  # challengers' profiles
        self.readiness_service = ReadinessService(self.db, self.artifacts, self.settings)
        self.principal = principal or Principal.local_admin()
        self._deployments: dict[tuple[str, str], Deployment] = {}

    def __repr__(self) -> str:
        return f"Yard({str(self.settings.home)!r})"

    def __enter__(self) -> Yard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.dispose()

    @classmethod
    def init(cls, path: str | Path | None = None, *,
             settings: Settings | None = None) -> tuple[Yard, str | None]:
        """Create (or upgrade) a yard. Returns it and a new admin key, shown only this once
        (``None`` when the yard already had keys)."""
        settings = settings or Settings.load(path)
        settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.database_url)
        try:
            path = db.sqlite_path()
            if path is not None:  # key hashes, sessions, the audit and inference logs: the
                # owner's only, even in a folder others may read (SQLite's -wal/-shm follow)
                path.touch(mode=0o600, exist_ok=True)
            db.upgrade()
            with db.transaction() as session:
                from sqlalchemy import func, select

                from modelyard.store.tables import ApiKeyRow

                has_keys = session.scalar(select(func.count()).select_from(ApiKeyRow))
                secret = None if has_keys else keys.create(session, "admin", ["admin"])
            if secret:
                write_secret(settings.admin_key_file, secret)
        finally:
            db.dispose()
        return cls(settings=settings), secret

    # -- registry ----------------------------------------------------------------------
    def register(self, name: str, model: Any = None, *, path: str | Path | None = None,
                 **options: Unpack[RegisterOptions]) -> ModelVersion:
        """Register a new version of ``name`` from an object or from ``path``
        (options: see ``RegisterOptions``)."""
        if (model is None) == (path is None):
            raise ValidationFailed("pass either a model object or path=", field="model")
        spec = registration(**options)
        if path is not None:
            version = self.registry.register_path(self.principal, name, Path(path), spec)
        else:
            version = self.registry.register_object(self.principal, name, model, spec)
        data, wanted = options.get("data"), options.get("profile")
        if data is not None and wanted is not False:
            try:
                self.monitoring.set_profile(self.principal, version.ref, columns=(
                    training_columns(data, [s.name for s in version.signature.inputs])))
            except ValidationFailed as exc:
                if wanted:  # asked for: say why not (the version itself is registered)
                    raise ValidationFailed(f"{version.ref} is registered, but without a "
                                           f"reference profile: {exc.detail}",
                                           field=exc.field or "data") from None
                log.warning("%s: no reference profile from data (%s); attach one with "
                            "set_profile", version.ref, exc.detail)
        return version

    def models(self, tags: Mapping[str, str] | None = None) -> list[Model]:
        return self.registry.list_models(self.principal, dict(tags or {}))

    def model(self, name: str) -> Model:
        return self.registry.get_model(self.principal, name)

    def versions(self, name: str) -> list[ModelVersion]:
        return self.registry.list_versions(self.principal, name)

    def version(self, ref: str) -> ModelVersion:
        return self.registry.get_version(self.principal, ref)

    def search(self, tags: Mapping[str, str]) -> list[ModelVersion]:
        return self.registry.search(self.principal, dict(tags))

    def set_alias(self, name: str, alias: str, version: int) -> Alias | Approval:
        """Move an alias; a pending ``Approval`` instead when the project's policy holds
        moves of ``production`` back for four-eyes approval."""
        return self.registry.set_alias(self.principal, name, alias, version)

    def remove_alias(self, name: str, alias: str) -> Approval | None:
        return self.registry.remove_alias(self.principal, name, alias)

    def sign(self, name: str, version: int, private_key: bytes | str | Path
             ) -> dict[str, Any]:
        """Sign a version with an Ed25519 private key (PEM bytes or a file) and attach the
        signature; the project must trust the matching public key."""
        from modelyard.governance import signing

        pem = private_key if isinstance(private_key, bytes) else Path(private_key).read_bytes()
        found = self.version(f"{name}:{version}")
        signature = signing.sign(pem, name, found.artifact_digest)
        return self.registry.add_signature(self.principal, name, version, signature)

    def signatures(self, name: str, version: int) -> list[dict[str, Any]]:
        return self.registry.signatures(self.principal, name, version)

    def card(self, ref: str) -> dict[str, Any]:
        """The version's model card, and the same as Markdown."""
        card = self.registry.card(self.principal, ref)
        version = self.version(ref)
        return {"card": card.to_dict(),
                "markdown": card.markdown(version.ref, version.lineage)}

    def update_card(self, name: str, version: int, **fields: Any) -> dict[str, Any]:
        """Change card fields (intended_use, out_of_scope_use, training_data, limitations,
        owners, risk_level, evaluation); the others stay."""
        self.registry.update_card(self.principal, name, version, fields)
        return self.card(f"{name}:{version}")

    def archive(self, name: str, version: int) -> ModelVersion:
        return self.registry.archive(self.principal, name, version)

    def delete_model(self, name: str) -> None:
        self.registry.delete_model(self.principal, name)

    def collect_garbage(self, *, min_age_s: float = 3600, delete: bool = False) -> list[str]:
        """Stored artifacts no version uses (from failed or deleted registrations)."""
        return self.registry.collect_garbage(self.principal, min_age_s=min_age_s,
                                             delete=delete)

    # -- endpoints ---------------------------------------------------------------------
    def create_endpoint(self, name: str, model: str | None = None, *,
                        graph: Graph | Mapping[str, Any] | str | Path | None = None,
                        timeout_ms: int | None = None,
                        description: str = "",
                        deployment: Mapping[str, Any] | None = None,
                        auth: str = "key",
                        redaction: Mapping[str, str] | None = None,
                        log_sample: float | None = None) -> Endpoint:
        """``deployment``: batching and queueing settings (see ``DeploymentSpec``);
        ``auth``: who may call it: key (the default), jwt, or public (admins only);
        ``redaction``: payload field -> drop, hash or mask for what is stored or logged;
        ``graph``: serve an inference graph (a ``Graph``, a mapping or a YAML file) instead
        of one model; ``log_sample``: the share of requests written to the inference log."""
        return self.endpoints.create(self.principal, name, model, timeout_ms=timeout_ms,
                                     description=description, deployment=deployment,
                                     auth=auth, redaction=redaction, log_sample=log_sample,
                                     graph_doc=graph_document(graph) if graph is not None
                                     else None)

    def update_endpoint(self, name: str, *, model: str | None = None,
                        timeout_ms: int | None = None, description: str | None = None,
                        deployment: Mapping[str, Any] | None = None,
                        auth: str | None = None,
                        redaction: Mapping[str, str] | None = None,
                        graph: Graph | Mapping[str, Any] | str | Path | None = None,
                        log_sample: float | None = None) -> Endpoint | Approval:
        return self.endpoints.update(self.principal, name, model=model, timeout_ms=timeout_ms,
                                     description=description, deployment=deployment,
                                     auth=auth, redaction=redaction, log_sample=log_sample,
                                     graph_doc=graph_document(graph) if graph is not None
                                     else None)

    def set_traffic(self, name: str, traffic: Mapping[str, Any] | None) -> Endpoint:
        """Split an endpoint's traffic across versions (``split``, ``sticky_header``,
        ``shadows``), or with ``None`` send it all to the endpoint's model again."""
        return self.endpoints.set_traffic(self.principal, name,
                                          dict(traffic) if traffic is not None else None)

    # -- monitoring -----------------------------------------------------------------------
    def inference_log(self, endpoint: str, *, since: str | None = None,
                      until: str | None = None, version: str | None = None,
                      status: str | None = None, limit: int = 100,
                      before_id: int | None = None, payloads: bool = True) -> dict[str, Any]:
        """Logged requests (sampled, redacted), newest first; ``since``/``until``: ISO 8601
        or a time ago (``15m``, ``2h``, ``7d``); continue with ``before_id=page["next"]``."""
        return self.monitoring.records(self.principal, endpoint, since=since, until=until,
                                       version=version, status=status, before_id=before_id,
                                       limit=limit, payloads=payloads)

    def inference_log_summary(self, endpoint: str, *, since: str | None = None,
                              until: str | None = None) -> dict[str, Any]:
        return self.monitoring.summary(self.principal, endpoint, since=since, until=until)

    def set_monitor(self, endpoint: str, spec: Mapping[str, Any] | None = None, *,
                    enabled: bool = True) -> dict[str, Any]:
        """Watch an endpoint for drift, quality (with ``quality={"task": ...}``) and SLOs;
        see ``modelyard.domain.monitors.MonitorSpec`` for the settings."""
        return self.monitoring.set_monitor(self.principal, endpoint, spec, enabled)

    def monitor(self, endpoint: str) -> dict[str, Any]:
        return self.monitoring.monitor(self.principal, endpoint)

    def delete_monitor(self, endpoint: str) -> None:
        self.monitoring.delete_monitor(self.principal, endpoint)

    def run_monitor(self, endpoint: str) -> dict[str, Any]:
        return self.monitoring.run_monitor(self.principal, endpoint)

    def drift(self, endpoint: str, *, since: str | None = None, until: str | None = None,
              version: str | None = None, limit: int = 500) -> dict[str, Any]:
        return self.monitoring.results(self.principal, endpoint, "drift", since=since,
                                       until=until, version=version, limit=limit)

    def quality(self, endpoint: str, *, since: str | None = None, until: str | None = None,
                version: str | None = None, limit: int = 500) -> dict[str, Any]:
        return self.monitoring.results(self.principal, endpoint, "quality", since=since,
                                       until=until, version=version, limit=limit)

    def alerts(self, *, endpoint: str | None = None, status: str | None = None
               ) -> list[dict[str, Any]]:
        return self.monitoring.alerts(self.principal, endpoint=endpoint, status=status)

    def alert_events(self, *, after_id: int = 0, endpoint: str | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        return self.monitoring.alert_events(self.principal, after_id=after_id,
                                            endpoint=endpoint, limit=limit)

    def set_profile(self, ref: str, data: Any = None, *, predictions: Any = None,
                    profile: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Attach the reference profile of ``model:version`` from training ``data`` (an
        array for a single-input model, else input name -> rows), or a computed one."""
        columns = None
        if data is not None:
            version = self.version(ref)
            columns = as_input_dict(data, [s.name for s in version.signature.inputs])
        return self.monitoring.set_profile(self.principal, ref, columns=columns,
                                           predictions=predictions, profile=profile)

    def profile(self, ref: str) -> dict[str, Any]:
        return self.monitoring.profile(self.principal, ref)

    # -- rollouts -------------------------------------------------------------------------
    def start_rollout(self, endpoint: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Roll ``spec["target"]`` out on ``endpoint``: ``strategy`` canary (``steps`` of
        weight and duration_s), blue_green (``bake_s``) or shadow (``duration_s``);
        ``analysis`` thresholds; ``interval_s``. Analysis runs in the server."""
        return self.rollouts.start(self.principal, endpoint, spec)

    def rollouts_of(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return self.rollouts.list_rollouts(self.principal, endpoint)

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return self.rollouts.get(self.principal, rollout_id)

    def pause_rollout(self, rollout_id: int) -> dict[str, Any]:
        return self.rollouts.pause(self.principal, rollout_id)

    def resume_rollout(self, rollout_id: int) -> dict[str, Any]:
        return self.rollouts.resume(self.principal, rollout_id)

    def promote_rollout(self, rollout_id: int) -> dict[str, Any]:
        return self.rollouts.promote(self.principal, rollout_id)

    def abort_rollout(self, rollout_id: int) -> dict[str, Any]:
        return self.rollouts.abort(self.principal, rollout_id)

    def validate_graph(self, graph: Graph | Mapping[str, Any] | str | Path
                       ) -> dict[str, Any]:
        """Every problem of a graph (with node paths), or its signature when valid."""
        return self.endpoints.validate_graph(self.principal, graph_document(graph))

    def endpoint(self, name: str) -> Endpoint:
        return self.endpoints.get(self.principal, name)

    def list_endpoints(self) -> list[Endpoint]:
        return self.endpoints.list(self.principal)

    def delete_endpoint(self, name: str) -> None:
        self.endpoints.delete(self.principal, name)

    # -- projects and approvals --------------------------------------------------------
    def create_project(self, name: str, description: str = "",
                       policy: Mapping[str, Any] | None = None) -> Project:
        """A project (models and endpoints grouped, roles granted as ``role@project``);
        ``policy``: approvals_required, approval_actions, approval_expiry_h,
        signatures_required, trusted_keys, card_required."""
        return self.projects.create(self.principal, name, description,
                                    dict(policy) if policy is not None else None)

    def list_projects(self) -> list[Project]:
        return self.projects.list(self.principal)

    def project(self, name: str) -> Project:
        return self.projects.get(self.principal, name)

    def update_project(self, name: str, *, description: str | None = None,
                       policy: Mapping[str, Any] | None = None) -> Project:
        """Merge ``policy`` fields into the project's policy (yard-wide admins only)."""
        return self.projects.update(self.principal, name, description=description,
                                    policy=dict(policy) if policy is not None else None)

    def list_approvals(self, status: str | None = None, project: str | None = None
                       ) -> list[Approval]:
        return self.approvals.list(self.principal, status, project)

    def approval(self, approval_id: int) -> Approval:
        return self.approvals.get(self.principal, approval_id)

    def approve(self, approval_id: int, comment: str = "") -> Approval:
        """Approve a pending change; the approval that completes it executes the change."""
        return self.approvals.approve(self.principal, approval_id, comment)

    def reject(self, approval_id: int, comment: str = "") -> Approval:
        return self.approvals.reject(self.principal, approval_id, comment)

    def cancel_approval(self, approval_id: int) -> Approval:
        return self.approvals.cancel(self.principal, approval_id)

    # -- API keys ----------------------------------------------------------------------
    def create_key(self, owner: str, roles: Sequence[str], *, rate_per_s: float | None = None,
                   daily_quota: int | None = None) -> dict[str, Any]:
        """A new API key; its secret (``key``) is returned this once and never stored.
        ``rate_per_s`` / ``daily_quota`` bound its calls to ``auth=key`` endpoints."""
        return self.access.create(self.principal, owner, list(roles), rate_per_s=rate_per_s,
                                  daily_quota=daily_quota)

    def list_keys(self) -> list[dict[str, Any]]:
        return [k.to_dict() for k in self.access.list(self.principal)]

    def rotate_key(self, prefix: str) -> dict[str, Any]:
        return self.access.rotate(self.principal, prefix)

    def revoke_key(self, prefix: str) -> dict[str, Any]:
        return self.access.revoke(self.principal, prefix).to_dict()

    # -- jobs ----------------------------------------------------------------------------
    def enqueue_job(self, kind: str, payload: Mapping[str, Any] | None = None, *,
                    project: str | None = None, max_attempts: int | None = None,
                    delay_s: float | None = None, backoff_s: float | None = None,
                    dedupe_key: str | None = None) -> Job:
        """Queue a job of a known kind (``call``: a trusted project function,
        ``{"function": "module:function", "args": {...}, "trusted": true}``); a worker runs
        it (the server's, or ``modelyard worker``). The same ``dedupe_key`` gives one job."""
        return self.jobs.enqueue(self.principal, kind, dict(payload or {}), project=project,
                                 max_attempts=max_attempts, delay_s=delay_s,
                                 backoff_s=backoff_s, dedupe_key=dedupe_key)

    def list_jobs(self, *, state: str | None = None, kind: str | None = None,
                  project: str | None = None, before: int | None = None, limit: int = 100
                  ) -> list[Job]:
        """Newest first; ``before``: the smallest id of the previous page."""
        return self.jobs.list(self.principal, state=state, kind=kind, project=project,
                              before=before, limit=limit)

    def job(self, job_id: int) -> Job:
        return self.jobs.get(self.principal, job_id)

    def job_logs(self, job_id: int, after: int = 0, limit: int = 1000) -> list[LogLine]:
        return self.jobs.logs(self.principal, job_id, after, limit)

    def cancel_job(self, job_id: int) -> Job:
        return self.jobs.cancel(self.principal, job_id)

    def wait_job(self, job_id: int, timeout_s: float = 60.0) -> Job:
        """Wait until the job succeeded, failed or was cancelled (``NotReady`` on time-out)."""
        import time

        deadline = time.monotonic() + timeout_s
        while not (job := self.job(job_id)).finished:
            if time.monotonic() > deadline:
                raise NotReady(f"job {job_id} is still {job.state} after {timeout_s} s")
            time.sleep(0.1)
        return job

    def set_schedule(self, name: str, cron: str, kind: str,
                     payload: Mapping[str, Any] | None = None, *, project: str | None = None,
                     enabled: bool = True, max_attempts: int = 3) -> Schedule:
        """Enqueue a ``kind`` job at every slot of ``cron`` (five fields, UTC)."""
        return self.jobs.set_schedule(self.principal, name, cron=cron, kind=kind,
                                      payload=dict(payload or {}), project=project,
                                      enabled=enabled, max_attempts=max_attempts)

    def list_schedules(self) -> list[Schedule]:
        return self.jobs.list_schedules(self.principal)

    def delete_schedule(self, name: str) -> None:
        self.jobs.delete_schedule(self.principal, name)

    # -- retraining ----------------------------------------------------------------------
    def set_retrain_policy(self, model: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace ``model``'s retraining policy: endpoint, entrypoint
        (``module:function``, ``trusted: true``), data, holdout, gate, triggers, rollout,
        require_approval, resources (what training needs as a Ray task on the ray backend; see
        ``domain.retraining.RetrainPolicy``)."""
        return self.retraining.set_policy(self.principal, model, dict(policy))

    def retrain_policy(self, model: str) -> dict[str, Any]:
        return self.retraining.policy(self.principal, model)

    def list_retrain_policies(self) -> list[dict[str, Any]]:
        return self.retraining.policies(self.principal)

    def delete_retrain_policy(self, model: str) -> None:
        self.retraining.delete_policy(self.principal, model)

    def retrain(self, model: str, reason: str = "") -> dict[str, Any]:
        """Start a retraining cycle now (a worker runs it); ``Conflict`` while one runs."""
        return self.retraining.run(self.principal, model, reason)

    def retrain_cycles(self, model: str | None = None, *, limit: int = 50,
                       before: int | None = None) -> list[dict[str, Any]]:
        """Cycles, newest first: trigger, state, champion vs challenger, gate, rollout."""
        return self.retraining.cycles(self.principal, model, limit=limit, before=before)

    def retrain_cycle(self, cycle_id: int) -> dict[str, Any]:
        return self.retraining.cycle(self.principal, cycle_id)

    # -- readiness -----------------------------------------------------------------------
    def readiness(self, endpoint: str | None = None) -> Scorecard:
        """The readiness scorecard of ``endpoint`` (or of every endpoint, and the yard):
        scores per area and every check with its evidence, fix and reference."""
        return self.readiness_service.scorecard(self.principal, endpoint)

    def record_loadtest(self, endpoint: str, result: Mapping[str, Any]) -> dict[str, Any]:
        """Record a load test's result (``modelyard loadtest`` fields) for ``endpoint``."""
        return self.readiness_service.record_loadtest(self.principal, endpoint, dict(result))

    def loadtests(self, endpoint: str, limit: int = 20) -> list[dict[str, Any]]:
        """Recorded load tests of ``endpoint``, newest first."""
        return self.readiness_service.loadtests(self.principal, endpoint, limit)

    # -- audit -------------------------------------------------------------------------
    def audit_verify(self) -> dict[str, Any]:
        """Walk the audit chain; name the first broken or missing record."""
        guard(self.db, self.principal, "audit:read", "audit")
        with self.db.transaction() as session:
            return audit.verify(session).to_dict()

    def audit_records(self, since: datetime | None = None, limit: int | None = None
                      ) -> list[dict[str, Any]]:
        guard(self.db, self.principal, "audit:read", "audit")
        with self.db.transaction() as session:
            return list(audit.records(session, since, limit))

    # -- inference ---------------------------------------------------------------------
    def deployment(self, version: ModelVersion, spec: DeploymentSpec | None = None,
                   observer: BatchObserver | None = None) -> Deployment:
        """Load a version once per replica and warm it up (the server's loader, reused
        in-process)."""
        from modelyard.backends.local import example_inputs

        spec = spec or DeploymentSpec(replicas=1)
        predictors = [self.registry.load_predictor(version) for _ in range(spec.replicas)]
        deployment = Deployment(version, predictors, spec, observer=observer,
                                reload=lambda: self.registry.load_predictor(version))
        deployment.warm_up(example_inputs(version))
        return deployment

    def predict(self, target: str, inputs: Any) -> dict[str, np.ndarray]:
        """Predict in-process with an endpoint's model, or a model reference
        (``name``, ``name:3``, ``name@champion``)."""
        try:
            endpoint = self.endpoint(target)
            if endpoint.graph is not None:
                raise ValidationFailed(
                    f"endpoint {target!r} serves a graph, which runs in the server "
                    "(modelyard serve): call it with Client.predict or over HTTP",
                    field="endpoint")
            ref = ModelRef.parse(endpoint.model_ref)
        except ModelyardError as exc:
            if exc.status != 404:
                raise
            ref = ModelRef.parse(target)
        version = self.version(str(ref))
        authorize(self.principal, "predict", version.project)
        key = (version.ref, version.artifact_digest)
        if key not in self._deployments:
            self._deployments[key] = self.deployment(version)
        deployment = self._deployments[key]
        names = [s.name for s in version.signature.inputs]
        return deployment.predict_sync(version.signature.validate(as_input_dict(inputs, names)))


class RegisterOptions(TypedDict, total=False):
    """What ``register`` accepts besides the model, the same for ``Yard`` and ``Client``."""

    flavor: str | None  # onnx, sklearn, torch, python (detected when omitted)
    sample: Any  # a few input rows: infers and checks the signature, warms the model up
    signature: Signature | Mapping[str, Any] | None  # overrides inference
    params: Mapping[str, Any] | None
    metrics: Mapping[str, float] | None
    tags: Mapping[str, str] | None
    data: Any  # training data, fingerprinted (sha256)
    data_fingerprint: str | None
    code_revision: str | None
    parent: str | None  # "model:version" this one derives from
    description: str
    trusted: bool  # accept pickles / project code the registrant made
    trusted_types: Sequence[str]  # skops types the registrant reviewed
    to_onnx: bool  # convert a scikit-learn model to ONNX (needs sample)
    # with data: the reference profile drift is tested against (default: when data fits
    # the model's inputs; True: it must; False: never)
    profile: bool | None
    project: str | None  # a new model's project (default: "default")


def registration(**options: Unpack[RegisterOptions]) -> Registration:
    signature = options.get("signature")
    if signature is not None and not isinstance(signature, Signature):
        signature = Signature.from_dict(signature)
    data, parent = options.get("data"), options.get("parent")
    lineage = Lineage(
        data_fingerprint=options.get("data_fingerprint")
        or (fingerprint(data) if data is not None else None),
        params=dict(options.get("params") or {}),
        metrics=metric_values(options.get("metrics")),
        code_revision=options.get("code_revision"),
        parent=str(ModelRef.parse(parent, "parent")) if parent else None,
        tags={str(k): str(v) for k, v in (options.get("tags") or {}).items()},
    )
    return Registration(flavor=options.get("flavor"), signature=signature,
                        sample=options.get("sample"), lineage=lineage,
                        description=options.get("description", ""),
                        trusted=options.get("trusted", False),
                        trusted_types=tuple(options.get("trusted_types", ())),
                        to_onnx=options.get("to_onnx", False),
                        project=options.get("project"))


def write_secret(path: Path, secret: str) -> None:
    """Write a secret readable by the owner only, atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
