"""Project persistence."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.domain.errors import ProjectNotFound
from modelyard.domain.projects import Project, ProjectPolicy
from modelyard.store.tables import ProjectRow, utcnow


def to_project(row: ProjectRow) -> Project:
    return Project(row.name, row.description, row.created_at, row.created_by,
                   ProjectPolicy.from_dict(row.policy))


def row(session: Session, name: str, *, lock: bool = False) -> ProjectRow:
    query = select(ProjectRow).where(ProjectRow.name == name)
    if lock:
        query = query.with_for_update()
    found = session.scalars(query).one_or_none()
    if found is None:
        raise ProjectNotFound(f"project {name!r} does not exist", field="project")
    return found


def get(session: Session, name: str) -> Project:
    return to_project(row(session, name))


def exists(session: Session, name: str) -> bool:
    return session.scalars(select(ProjectRow.id).where(ProjectRow.name == name)).first() \
        is not None


def create(session: Session, name: str, description: str, policy: ProjectPolicy,
           actor: str) -> Project:
    new = ProjectRow(name=name, description=description, policy=policy.to_dict(),
                     created_at=utcnow(), created_by=actor)
    session.add(new)
    session.flush()
    return to_project(new)


def all_projects(session: Session) -> list[Project]:
    return [to_project(r) for r in session.scalars(select(ProjectRow).order_by(ProjectRow.name))]
