"""The endpoint service: desired state for what the data plane serves."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import AlreadyExists, ValidationFailed, VersionArchived
from modelyard.domain.names import ModelRef, check_name
from modelyard.domain.registry import AUTH_MODES, Endpoint
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.store import endpoints as repo
from modelyard.store import registry as registry_repo
from modelyard.store.db import Database

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


class EndpointService:
    def __init__(self, db: Database, default_timeout_ms: int) -> None:
        self.db = db
        self.default_timeout_ms = default_timeout_ms
        # Called after every committed change so an in-process data plane converges at once.
        self.on_change: Callable[[], None] = lambda: None

    def _check_target(self, session: Session, ref: ModelRef) -> None:
        _, row = registry_repo.resolve(session, ref)
        if ref.version is not None and row.status != "active":
            raise VersionArchived(f"{ref} is archived and cannot be served", field="model")

    def create(self, principal: Principal | None, name: str, model: str, *,
               timeout_ms: int | None = None, description: str = "",
               deployment: Mapping[str, Any] | None = None, auth: str = "public") -> Endpoint:
        principal = guard(self.db, principal, "endpoints:write", f"endpoint:{name}")
        check_name(name, "endpoint name", "name")
        ref = ModelRef.parse(model)
        timeout = check_timeout(timeout_ms) or self.default_timeout_ms
        spec = DeploymentSpec.from_dict(deployment)
        check_auth(auth)
        try:
            with self.db.transaction() as session:
                self._check_target(session, ref)
                endpoint = repo.create(session, name, ref, timeout, description, spec, auth)
                audit.append(session, principal.name, "endpoint.create", name,
                             after=endpoint.to_dict())
        except IntegrityError:  # a concurrent create of the same name won the race
            raise AlreadyExists(f"endpoint {name!r} already exists", field="name") from None
        self.on_change()
        return endpoint

    def update(self, principal: Principal | None, name: str, *, model: str | None = None,
               timeout_ms: int | None = None, description: str | None = None,
               deployment: Mapping[str, Any] | None = None,
               auth: str | None = None) -> Endpoint:
        """Change an endpoint; ``deployment`` settings are merged into the current ones."""
        principal = guard(self.db, principal, "endpoints:write", f"endpoint:{name}")
        ref = ModelRef.parse(model) if model is not None else None
        check_timeout(timeout_ms)
        check_auth(auth)
        with self.db.transaction() as session:
            if ref is not None:
                self._check_target(session, ref)
            before = repo.to_endpoint(repo.row(session, name))
            spec = before.deployment.merged(deployment) if deployment is not None else None
            endpoint = repo.update(session, name, ref=ref, timeout_ms=timeout_ms,
                                   description=description, deployment=spec, auth=auth)
            audit.append(session, principal.name, "endpoint.update", name,
                         before=before.to_dict(), after=endpoint.to_dict())
        self.on_change()
        return endpoint

    def delete(self, principal: Principal | None, name: str) -> None:
        principal = guard(self.db, principal, "endpoints:delete", f"endpoint:{name}")
        with self.db.transaction() as session:
            before = repo.to_endpoint(repo.row(session, name))
            repo.remove(session, name)
            audit.append(session, principal.name, "endpoint.delete", name,
                         before=before.to_dict())
        self.on_change()

    def get(self, principal: Principal | None, name: str) -> Endpoint:
        principal = guard(self.db, principal, "endpoints:read", "endpoints")
        with self.db.transaction() as session:
            return repo.to_endpoint(repo.row(session, name))

    def list(self, principal: Principal | None) -> list[Endpoint]:
        principal = guard(self.db, principal, "endpoints:read", "endpoints")
        with self.db.transaction() as session:
            return repo.all_endpoints(session)
