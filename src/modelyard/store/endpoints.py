"""Endpoint persistence: the desired state the data plane converges to."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import AlreadyExists, EndpointNotFound
from modelyard.domain.names import ModelRef
from modelyard.domain.registry import Endpoint
from modelyard.store.tables import DEFAULT_PROJECT, EndpointRow, utcnow

GRAPH_REF = "(graph)"  # model_ref of an endpoint that serves a graph


def to_endpoint(row: EndpointRow) -> Endpoint:
    return Endpoint(row.name, row.model_ref, row.timeout_ms, row.description, row.created_at,
                    row.updated_at, row.generation, DeploymentSpec.from_dict(row.deployment),
                    row.auth, row.project, dict(row.redaction or {}), row.graph, row.traffic,
                    row.log_sample)


def row(session: Session, name: str, *, lock: bool = False) -> EndpointRow:
    """The endpoint's row; ``lock`` it (``SELECT ... FOR UPDATE``) before changing it: a change
    reads the row and writes it back (``generation + 1``, merged deployment settings), so two
    concurrent changes on PostgreSQL lost one of them, and a change racing a delete failed
    with StaleDataError (a 500) instead of finding the endpoint gone."""
    query = select(EndpointRow).where(EndpointRow.name == name)
    if lock:  # and read it again: the session may hold it from before the lock
        query = query.with_for_update().execution_options(populate_existing=True)
    found = session.scalars(query).one_or_none()
    if found is None:
        raise EndpointNotFound(f"endpoint {name!r} does not exist", field="endpoint")
    return found


def create(session: Session, name: str, ref: ModelRef | None, timeout_ms: int,
           description: str, deployment: DeploymentSpec, auth: str = "key",
           project: str = DEFAULT_PROJECT, redaction: dict[str, str] | None = None,
           graph: dict[str, Any] | None = None, log_sample: float = 1.0) -> Endpoint:
    if session.scalars(select(EndpointRow.id).where(EndpointRow.name == name)).first():
        raise AlreadyExists(f"endpoint {name!r} already exists", field="name")
    now = utcnow()
    new = EndpointRow(name=name, model_name=ref.model if ref else "",
                      model_ref=str(ref) if ref else GRAPH_REF,
                      timeout_ms=timeout_ms, description=description,
                      deployment=deployment.to_dict(), auth=auth, project=project,
                      redaction=redaction or {}, graph=graph, log_sample=log_sample,
                      created_at=now,
                      updated_at=now, generation=1)
    session.add(new)
    session.flush()
    return to_endpoint(new)


def update(session: Session, name: str, *, ref: ModelRef | None, timeout_ms: int | None,
           description: str | None, deployment: DeploymentSpec | None = None,
           auth: str | None = None, redaction: dict[str, str] | None = None,
           graph: dict[str, Any] | None = None, log_sample: float | None = None) -> Endpoint:
    found = row(session, name, lock=True)
    if log_sample is not None:
        found.log_sample = log_sample
    if graph is not None:  # a graph replaces the model (and a model the graph, below)
        found.graph, found.model_name, found.model_ref = graph, "", GRAPH_REF
    if redaction is not None:
        found.redaction = redaction
    if auth is not None:
        found.auth = auth
    if deployment is not None:
        found.deployment = deployment.to_dict()
    if ref is not None:
        found.model_name, found.model_ref, found.graph = ref.model, str(ref), None
    if timeout_ms is not None:
        found.timeout_ms = timeout_ms
    if description is not None:
        found.description = description
    found.updated_at = utcnow()
    found.generation += 1
    return to_endpoint(found)


def set_traffic(session: Session, name: str, traffic: dict[str, Any] | None,
                model_ref: ModelRef | None = None) -> Endpoint:
    """Replace the traffic policy (``None``: all traffic to the model again), optionally
    pointing the endpoint at a new model in the same change (a promotion)."""
    found = row(session, name, lock=True)
    found.traffic = traffic
    if model_ref is not None:
        found.model_name, found.model_ref = model_ref.model, str(model_ref)
    found.updated_at = utcnow()
    found.generation += 1
    return to_endpoint(found)


def remove(session: Session, name: str) -> None:
    session.delete(row(session, name, lock=True))


def all_endpoints(session: Session) -> list[Endpoint]:
    return [to_endpoint(r) for r in session.scalars(select(EndpointRow).order_by(EndpointRow.name))]
