"""Paged, aggregated reads behind the dashboard's listings: one bounded query per page, so a
yard with 10,000 versions or a million inference records answers as fast as a small one.

Each function takes a principal that ``authorize`` already allowed somewhere and limits rows
to the projects where it may read (``readable_projects``), as the API's listings do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from modelyard.control.jobs import readable_projects
from modelyard.governance.policy import Principal
from modelyard.store import registry as registry_repo
from modelyard.store.tables import (
    AliasRow,
    AuditRow,
    ModelRow,
    RolloutRow,
    VersionRow,
)


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

    @property
    def number(self) -> int:
        return self.offset // self.limit + 1

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.limit))


def _scoped(query: Select[Any], column: Any, who: Principal, action: str) -> Select[Any]:
    projects = readable_projects(who, action)
    return query if projects is None else query.where(column.in_(sorted(projects)))


def models(session: Session, who: Principal, *, search: str = "", limit: int,
           offset: int) -> Page:
    """Models by name, with their version count, latest version and aliases."""
    base = _scoped(select(ModelRow), ModelRow.project, who, "models:read")
    if search:
        base = base.where(ModelRow.name.contains(search, autoescape=True))
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    counts = (select(VersionRow.model_id, func.count().label("n"),
                     func.max(VersionRow.version).label("latest"))
              .group_by(VersionRow.model_id).subquery())
    query = (base.add_columns(counts.c.n, counts.c.latest)
             .outerjoin(counts, counts.c.model_id == ModelRow.id)
             .order_by(ModelRow.name).limit(limit).offset(offset))
    found = session.execute(query).all()
    ids = [row.id for row, _, _ in found]
    aliases: dict[int, dict[str, int]] = {}
    for model_id, alias, version in session.execute(
            select(AliasRow.model_id, AliasRow.name, VersionRow.version)
            .join(VersionRow, VersionRow.id == AliasRow.version_id)
            .where(AliasRow.model_id.in_(ids))):
        aliases.setdefault(model_id, {})[alias] = version
    rows = [{"name": row.name, "project": row.project, "description": row.description,
             "versions": n or 0, "latest": latest, "aliases": aliases.get(row.id, {}),
             "created_at": row.created_at} for row, n, latest in found]
    return Page(rows, total, limit, offset)


def versions(session: Session, model: ModelRow, *, limit: int, offset: int) -> Page:
    """A model's versions, newest first, with their aliases."""
    total = session.scalar(select(func.count()).where(VersionRow.model_id == model.id)) or 0
    found = session.scalars(select(VersionRow).where(VersionRow.model_id == model.id)
                            .order_by(VersionRow.version.desc()).limit(limit).offset(offset))
    aliases = registry_repo.aliases_by_version(session, model.id)
    rows = [registry_repo.to_version(model, r, aliases.get(r.version)).to_dict()
            for r in found]
    return Page(rows, total, limit, offset)


AUDIT_FILTERS = ("actor", "action", "target", "outcome")


def audit(session: Session, filters: dict[str, str], *, limit: int, offset: int,
          text: str = "") -> Page:
    """Audit records, newest first; each filter is a substring of its column, ``text``
    matches any of them."""
    query = select(AuditRow)
    for name in AUDIT_FILTERS:
        if filters.get(name):
            query = query.where(getattr(AuditRow, name).contains(filters[name],
                                                                   autoescape=True))
    if text:
        query = query.where(or_(*(getattr(AuditRow, name).contains(text, autoescape=True)
                                  for name in AUDIT_FILTERS)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = [{"seq": r.seq, "at": r.at, "actor": r.actor, "action": r.action,
             "target": r.target, "outcome": r.outcome, "before": r.before, "after": r.after,
             "request_id": r.request_id, "hash": r.hash}
            for r in session.scalars(query.order_by(AuditRow.seq.desc())
                                     .limit(limit).offset(offset))]
    return Page(rows, total, limit, offset)


ACTIVE_ROLLOUTS = ("running", "paused", "awaiting_approval")


def rollouts(session: Session, who: Principal, *, status: str = "", endpoint: str = "",
             limit: int, offset: int) -> Page:
    query = _scoped(select(RolloutRow), RolloutRow.project, who, "rollouts:read")
    if status == "active":
        query = query.where(RolloutRow.status.in_(ACTIVE_ROLLOUTS))
    elif status:
        query = query.where(RolloutRow.status == status)
    if endpoint:
        query = query.where(RolloutRow.endpoint == endpoint)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = [{"id": r.id, "endpoint": r.endpoint, "project": r.project,
             "strategy": r.strategy, "baseline": r.baseline, "target": r.target,
             "status": r.status, "step": r.step + 1, "steps": len(r.spec.get("steps") or [1]),
             "reason": r.reason, "approval_id": r.approval_id, "created_by": r.created_by,
             "updated_at": r.updated_at}
            for r in session.scalars(query.order_by(RolloutRow.id.desc())
                                     .limit(limit).offset(offset))]
    return Page(rows, total, limit, offset)


def active_rollouts_by_endpoint(session: Session, who: Principal) -> dict[str, dict[str, Any]]:
    query = _scoped(select(RolloutRow).where(RolloutRow.status.in_(ACTIVE_ROLLOUTS)),
                    RolloutRow.project, who, "rollouts:read")
    return {r.endpoint: {"id": r.id, "status": r.status, "target": r.target}
            for r in session.scalars(query)}
