"""``Yard``: one installation opened in-process (notebooks, the CLI, the server).

It wires the metadata store, the artifact store and the services, and offers the same verbs
as the HTTP ``Client``: ``register``, ``models``, ``version``, ``set_alias``, ``archive``,
``create_endpoint``, ``predict``... Whoever can open a yard's files acts as its admin.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np

from modelyard.control.approvals import ApprovalService
from modelyard.control.endpoints import EndpointService
from modelyard.control.keys import KeyService
from modelyard.control.projects import ProjectService
from modelyard.control.registry import Registration, RegistryService
from modelyard.domain.approvals import Approval
from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ModelyardError, ValidationFailed
from modelyard.domain.names import ModelRef
from modelyard.domain.projects import Project
from modelyard.domain.registry import Alias, Endpoint, Lineage, Model, ModelVersion, fingerprint
from modelyard.domain.signature import Signature, as_input_dict
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal, authorize
from modelyard.graphs import Graph, graph_document
from modelyard.rollout.controller import RolloutService
from modelyard.serving.batcher import BatchObserver
from modelyard.serving.deployment import Deployment
from modelyard.settings import Settings
from modelyard.store import keys
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.db import Database


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
        self.artifacts = ArtifactStore(self.settings.artifacts_url, self.settings.cache_dir)
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
            return self.registry.register_path(self.principal, name, Path(path), spec)
        return self.registry.register_object(self.principal, name, model, spec)

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
                        redaction: Mapping[str, str] | None = None) -> Endpoint:
        """``deployment``: batching and queueing settings (see ``DeploymentSpec``);
        ``auth``: who may call it: key (the default), jwt, or public (admins only);
        ``redaction``: payload field -> drop, hash or mask for what is stored or logged;
        ``graph``: serve an inference graph (a ``Graph``, a mapping or a YAML file) instead
        of one model."""
        return self.endpoints.create(self.principal, name, model, timeout_ms=timeout_ms,
                                     description=description, deployment=deployment,
                                     auth=auth, redaction=redaction,
                                     graph_doc=graph_document(graph) if graph is not None
                                     else None)

    def update_endpoint(self, name: str, *, model: str | None = None,
                        timeout_ms: int | None = None, description: str | None = None,
                        deployment: Mapping[str, Any] | None = None,
                        auth: str | None = None,
                        redaction: Mapping[str, str] | None = None,
                        graph: Graph | Mapping[str, Any] | str | Path | None = None
                        ) -> Endpoint | Approval:
        return self.endpoints.update(self.principal, name, model=model, timeout_ms=timeout_ms,
                                     description=description, deployment=deployment,
                                     auth=auth, redaction=redaction,
                                     graph_doc=graph_document(graph) if graph is not None
                                     else None)

    def set_traffic(self, name: str, traffic: Mapping[str, Any] | None) -> Endpoint:
        """Split an endpoint's traffic across versions (``split``, ``sticky_header``,
        ``shadows``), or with ``None`` send it all to the endpoint's model again."""
        return self.endpoints.set_traffic(self.principal, name,
                                          dict(traffic) if traffic is not None else None)

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
        deployment = Deployment(version, predictors, spec, observer=observer)
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
        metrics={k: float(v) for k, v in (options.get("metrics") or {}).items()},
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
