"""The endpoint service: desired state for what the data plane serves."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.control.approvals import ApprovalService
from modelyard.domain import graph, limits
from modelyard.domain.approvals import Approval
from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import (
    AlreadyExists,
    ModelNotFound,
    ValidationFailed,
    VersionArchived,
)
from modelyard.domain.graph import Problem
from modelyard.domain.names import ModelRef, check_name
from modelyard.domain.projects import DEFAULT_PROJECT
from modelyard.domain.registry import AUTH_MODES, Endpoint
from modelyard.domain.signature import Signature
from modelyard.domain.traffic import TrafficPolicy
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.governance.redaction import check_rules
from modelyard.store import endpoints as repo
from modelyard.store import projects as projects_repo
from modelyard.store import registry as registry_repo
from modelyard.store.db import Database
from modelyard.store.tables import EndpointRow

MAX_TIMEOUT_MS = 600_000


def check_auth(auth: str | None) -> str | None:
    if auth is not None and auth not in AUTH_MODES:
        raise ValidationFailed(f"auth must be one of {', '.join(AUTH_MODES)}", field="auth")
    return auth


def check_timeout(timeout_ms: int | None) -> int | None:
    if timeout_ms is not None and not (1 <= timeout_ms <= MAX_TIMEOUT_MS):
        raise ValidationFailed(f"timeout_ms must be between 1 and {MAX_TIMEOUT_MS}",
                               field="timeout_ms")
    return timeout_ms


def check_log_sample(share: float | None) -> float | None:
    if share is not None and not (isinstance(share, int | float) and 0.0 <= share <= 1.0):
        raise ValidationFailed("log_sample must be a share from 0 (log nothing) to 1 (log "
                               "every request)", field="log_sample")
    return None if share is None else float(share)


class EndpointService:
    def __init__(self, db: Database, default_timeout_ms: int,
                 approvals: ApprovalService | None = None) -> None:
        self.db = db
        self.default_timeout_ms = default_timeout_ms
        # Called after every committed change so an in-process data plane converges at once.
        self.on_change: Callable[[], None] = lambda: None
        self.approvals = approvals or ApprovalService(db)
        self.approvals.register("endpoint:auth", self._apply_auth, lambda: self.on_change())

    def _target_project(self, session: Session, ref: ModelRef) -> str:
        """The project of the model ``ref`` names (an endpoint lives in its model's)."""
        model, row = registry_repo.resolve(session, ref)
        if ref.version is not None and row.status != "active":
            raise VersionArchived(f"{ref} is archived and cannot be served", field="model")
        return model.project

    def _project_of(self, name: str) -> str | None:
        with self.db.transaction() as session:
            return session.scalars(select(EndpointRow.project)
                                   .where(EndpointRow.name == name)).first()

    def _guard(self, principal: Principal | None, action: str, name: str
               ) -> tuple[Principal, str | None]:
        project = self._project_of(name)
        who = guard(self.db, principal, action, f"endpoint:{name}", project,
                    anywhere=project is None)
        return who, project

    # -- graphs ----------------------------------------------------------------------------
    def _check_graph(self, session: Session, doc: Any, principal: Principal | None
                     ) -> tuple[dict[str, Any], str]:
        """The graph's canonical document and its project, or GraphInvalid with every
        problem (structure, models, types and shapes along every edge, one project).
        A model ``principal`` may not read is reported as missing: the problems would
        otherwise show its signature (and that it exists) to anyone."""
        problems: list[Problem] = []
        spec = graph.parse(doc, problems)
        projects: dict[str, str] = {}

        def signature_of(reference: str) -> Signature:
            ref = ModelRef.parse(reference)
            project = registry_repo.model_row(session, ref.model).project
            if principal is None or not principal.may("models:read", project):
                raise ModelNotFound(f"model {ref.model!r} does not exist", field="model")
            model, row = registry_repo.resolve(session, ref)
            if ref.version is not None and row.status != "active":
                raise VersionArchived(f"{ref} is archived", field="model")
            projects[reference] = model.project
            return registry_repo.to_version(model, row).signature

        if not problems:
            _, found = graph.validate(spec, signature_of)
            problems += found
        if len(spec.description) > limits.DESCRIPTION_MAX:
            problems.append(Problem("description", "must be text of at most "
                                    f"{limits.DESCRIPTION_MAX} characters"))
        if len(set(projects.values())) > 1:
            problems.append(Problem("nodes", "a graph serves models of one project; these "
                                    f"span {', '.join(sorted(set(projects.values())))}"))
        if problems:
            raise graph.invalid(problems)
        return spec.to_dict(), next(iter(projects.values()), DEFAULT_PROJECT)

    def validate_graph(self, principal: Principal | None, doc: Any) -> dict[str, Any]:
        """Check a graph without deploying it: every problem with its node path, or the
        graph's signature."""
        guard(self.db, principal, "models:read", "graphs", anywhere=True)
        with self.db.transaction() as session:
            try:
                canonical, project = self._check_graph(session, doc, principal)
            except graph.GraphInvalid as exc:
                return {"ok": False, "problems": exc.extra.get("problems", [])}
            spec = graph.parse(canonical)
            produced, _ = graph.validate(spec, lambda r: registry_repo.to_version(
                *registry_repo.resolve(session, ModelRef.parse(r))).signature)
        return {"ok": True, "problems": [], "project": project,
                "signature": graph.signature(spec, produced).to_dict()}

    def create(self, principal: Principal | None, name: str, model: str | None = None, *,
               timeout_ms: int | None = None, description: str = "",
               deployment: Mapping[str, Any] | None = None, auth: str = "key",
               redaction: Mapping[str, str] | None = None,
               graph_doc: Mapping[str, Any] | None = None,
               log_sample: float | None = None) -> Endpoint:
        """A new endpoint serving a model (``model``) or an inference graph (``graph_doc``),
        in that model's (or the graph's models') project. ``auth="public"`` (no credentials
        at all) needs an admin of that project. ``redaction``: payload field -> drop, hash or
        mask, for whatever Modelyard stores or logs from its payloads. ``log_sample``: the
        share of requests written to the inference log (default: all)."""
        rules = check_rules(redaction) if redaction is not None else {}
        sample = check_log_sample(log_sample)
        check_name(name, "endpoint name", "name")
        limits.description(description)
        if (model is None) == (graph_doc is None):
            raise ValidationFailed("give a model or a graph (one of them)", field="model")
        ref = ModelRef.parse(model) if model is not None else None
        timeout = check_timeout(timeout_ms) or self.default_timeout_ms
        spec = DeploymentSpec.from_dict(deployment)
        check_auth(auth)
        with self.db.transaction() as session:
            if ref is not None:
                project = registry_repo.project_of(session, ref.model)
            else:
                _, project = self._check_graph(session, graph_doc, principal)
        principal = guard(self.db, principal, "endpoints:write", f"endpoint:{name}", project,
                          anywhere=project is None)
        if auth == "public" and project is not None:
            guard(self.db, principal, "endpoints:publish", f"endpoint:{name}", project)
        if _runs_code(graph_doc):
            guard(self.db, principal, "jobs:run_code", f"endpoint:{name}", project)
        try:
            with self.db.transaction() as session:
                document = None
                if ref is not None:
                    project = self._target_project(session, ref)
                else:
                    document, project = self._check_graph(session, graph_doc, principal)
                endpoint = repo.create(session, name, ref, timeout, description, spec, auth,
                                       project, rules, document,
                                       1.0 if sample is None else sample)
                audit.append(session, principal.name, "endpoint.create", name,
                             after=endpoint.to_dict())
        except IntegrityError:  # a concurrent create of the same name won the race
            raise AlreadyExists(f"endpoint {name!r} already exists", field="name") from None
        self.on_change()
        return endpoint

    def update(self, principal: Principal | None, name: str, *, model: str | None = None,
               timeout_ms: int | None = None, description: str | None = None,
               deployment: Mapping[str, Any] | None = None,
               auth: str | None = None, redaction: Mapping[str, str] | None = None,
               graph_doc: Mapping[str, Any] | None = None,
               log_sample: float | None = None) -> Endpoint | Approval:
        """Change an endpoint; ``deployment`` settings are merged into the current ones.
        A change of ``auth`` the project holds back for approval is split off: the other
        changes apply now and the answer is the pending approval for the auth change."""
        principal, project = self._guard(principal, "endpoints:write", name)
        ref = ModelRef.parse(model) if model is not None else None
        if ref is not None and graph_doc is not None:
            raise ValidationFailed("give a model or a graph (one of them)", field="model")
        check_timeout(timeout_ms)
        check_auth(auth)
        if description is not None:
            limits.description(description)
        rules = check_rules(redaction) if redaction is not None else None
        sample = check_log_sample(log_sample)
        if auth == "public" and project is not None:
            guard(self.db, principal, "endpoints:publish", f"endpoint:{name}", project)
        if _runs_code(graph_doc):
            guard(self.db, principal, "jobs:run_code", f"endpoint:{name}", project)
        pending: Approval | None = None
        with self.db.transaction() as session:
            current = repo.row(session, name, lock=True)  # changed below from what it holds
            if ref is not None and self._target_project(session, ref) != current.project:
                raise ValidationFailed(
                    f"endpoint {name!r} serves models of project {current.project!r}",
                    field="model")
            document = None
            if graph_doc is not None:
                document, graph_project = self._check_graph(session, graph_doc, principal)
                if graph_project != current.project:
                    raise ValidationFailed(f"endpoint {name!r} serves models of project "
                                           f"{current.project!r}", field="graph")
            policy = projects_repo.get(session, current.project).policy
            if auth is not None and auth != current.auth and \
                    policy.needs_approval("endpoint:auth"):
                pending = self.approvals.request(
                    session, principal, policy, current.project, "endpoint:auth",
                    f"endpoint:{name}", {"endpoint": name, "auth": auth})
                auth = None
            if ref is None and timeout_ms is None and description is None and \
                    deployment is None and auth is None and rules is None and \
                    document is None and sample is None:
                endpoint = repo.to_endpoint(current)
            else:
                endpoint = self._apply(session, principal, name, ref=ref,
                                       timeout_ms=timeout_ms, description=description,
                                       deployment=deployment, auth=auth, redaction=rules,
                                       graph_doc=document, log_sample=sample)
        self.on_change()
        return pending if pending is not None else endpoint

    def _apply(self, session: Session, who: Principal, name: str, *, ref: ModelRef | None,
               timeout_ms: int | None, description: str | None,
               deployment: Mapping[str, Any] | None, auth: str | None,
               redaction: dict[str, str] | None = None,
               graph_doc: dict[str, Any] | None = None,
               log_sample: float | None = None) -> Endpoint:
        before = repo.to_endpoint(repo.row(session, name, lock=True))
        spec = before.deployment.merged(deployment) if deployment is not None else None
        endpoint = repo.update(session, name, ref=ref, timeout_ms=timeout_ms,
                               description=description, deployment=spec, auth=auth,
                               redaction=redaction, graph=graph_doc, log_sample=log_sample)
        audit.append(session, who.name, "endpoint.update", name,
                     before=before.to_dict(), after=endpoint.to_dict())
        return endpoint

    def _apply_auth(self, session: Session, who: Principal, change: dict[str, Any]
                    ) -> dict[str, Any]:
        endpoint = self._apply(session, who, change["endpoint"], ref=None, timeout_ms=None,
                               description=None, deployment=None, auth=change["auth"])
        return {"endpoint": endpoint.name, "auth": endpoint.auth}

    # -- traffic -----------------------------------------------------------------------------
    def set_traffic(self, principal: Principal | None, name: str,
                    traffic: Mapping[str, Any] | None) -> Endpoint:
        """Split the endpoint's traffic across versions (sticky by a header, with shadows),
        or (``None``) send it all to the endpoint's model again."""
        who, _ = self._guard(principal, "endpoints:write", name)
        policy = TrafficPolicy.from_dict(traffic) if traffic is not None else None
        with self.db.transaction() as session:
            endpoint = self.apply_traffic(session, who, name, policy)
        self.on_change()
        return endpoint

    def apply_traffic(self, session: Session, who: Principal, name: str,
                      policy: TrafficPolicy | None, model: ModelRef | None = None) -> Endpoint:
        """Check and store a traffic policy (rollouts call this inside their transaction):
        every version active, in the endpoint's project, taking the endpoint's inputs."""
        current = repo.row(session, name, lock=True)
        before = repo.to_endpoint(current)
        if current.graph is not None:
            raise ValidationFailed("a graph endpoint has no traffic split (yet)",
                                   field="traffic")
        if policy is not None:
            base = registry_repo.to_version(*registry_repo.resolve(
                session, ModelRef.parse(current.model_ref)))
            for index, ref in enumerate(policy.refs()):
                where = "traffic.split" if index < len(policy.split) else "traffic.shadows"
                parsed = ModelRef.parse(ref, where)
                if self._target_project(session, parsed) != current.project:
                    raise ValidationFailed(f"{ref} is not in project {current.project!r}",
                                           field=where)
                version = registry_repo.to_version(*registry_repo.resolve(session, parsed))
                if _inputs(version.signature) != _inputs(base.signature):
                    raise ValidationFailed(f"{ref} takes other inputs than "
                                           f"{base.ref}", field=where)
        endpoint = repo.set_traffic(session, name, policy.to_dict() if policy else None,
                                    model)
        audit.append(session, who.name, "endpoint.traffic", name,
                     before={"model": before.model_ref, "traffic": before.traffic},
                     after={"model": endpoint.model_ref, "traffic": endpoint.traffic})
        return endpoint

    def delete(self, principal: Principal | None, name: str) -> None:
        principal, _ = self._guard(principal, "endpoints:delete", name)
        with self.db.transaction() as session:
            before = repo.to_endpoint(repo.row(session, name, lock=True))
            repo.remove(session, name)
            audit.append(session, principal.name, "endpoint.delete", name,
                         before=before.to_dict())
        self.on_change()

    def get(self, principal: Principal | None, name: str) -> Endpoint:
        self._guard(principal, "endpoints:read", name)
        with self.db.transaction() as session:
            return repo.to_endpoint(repo.row(session, name))

    def list(self, principal: Principal | None) -> list[Endpoint]:
        who = guard(self.db, principal, "endpoints:read", "endpoints", anywhere=True)
        with self.db.transaction() as session:
            return [e for e in repo.all_endpoints(session)
                    if who.may("endpoints:read", e.project)]


def _inputs(signature: Signature) -> list[tuple[str, str, int]]:
    return sorted((s.name, s.dtype, len(s.shape)) for s in signature.inputs)


def _runs_code(doc: Any) -> bool:
    """Whether a graph document has a transform node: project code that runs in the server,
    which takes the right to run code (``jobs:run_code``), as a trusted model does."""
    nodes = doc.get("nodes") if isinstance(doc, Mapping) else None
    return isinstance(nodes, Mapping) and any(
        isinstance(node, Mapping) and node.get("kind") == "transform" for node in nodes.values())
