"""The project service: projects group models and endpoints; their policy says what needs
approvals, signatures and complete model cards."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from modelyard.domain import limits
from modelyard.domain.errors import AlreadyExists
from modelyard.domain.names import check_name
from modelyard.domain.projects import Project, ProjectPolicy
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.store import projects as repo
from modelyard.store.db import Database


class ProjectService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, principal: Principal | None, name: str, description: str = "",
               policy: dict[str, Any] | None = None) -> Project:
        who = guard(self.db, principal, "projects:write", f"project:{name}")
        check_name(name, "project name", "name")
        settled = ProjectPolicy.from_dict(policy)
        try:
            with self.db.transaction() as session:
                if repo.exists(session, name):
                    raise AlreadyExists(f"project {name!r} already exists", field="name")
                project = repo.create(session, name, limits.description(description), settled,
                                      who.name)
                audit.append(session, who.name, "project.create", name,
                             after=project.to_dict())
        except IntegrityError:
            raise AlreadyExists(f"project {name!r} already exists", field="name") from None
        return project

    def list(self, principal: Principal | None) -> list[Project]:
        who = guard(self.db, principal, "projects:read", "projects", anywhere=True)
        with self.db.transaction() as session:
            return [p for p in repo.all_projects(session) if who.may("projects:read", p.name)]

    def get(self, principal: Principal | None, name: str) -> Project:
        guard(self.db, principal, "projects:read", f"project:{name}", name)
        with self.db.transaction() as session:
            return repo.get(session, name)

    def update(self, principal: Principal | None, name: str, *,
               description: str | None = None, policy: dict[str, Any] | None = None
               ) -> Project:
        """Change the description or policy; ``policy`` fields are merged into the current
        ones. Only a yard-wide admin may: a project's own admin must not be able to switch
        off the approvals that hold them back."""
        who = guard(self.db, principal, "projects:write", f"project:{name}")
        with self.db.transaction() as session:
            row = repo.row(session, name, lock=True)
            before = repo.to_project(row)
            if description is not None:
                row.description = limits.description(description)
            if policy is not None:
                row.policy = before.policy.merged(policy).to_dict()
            after = repo.to_project(row)
            audit.append(session, who.name, "project.update", name, before=before.to_dict(),
                         after=after.to_dict())
            return after

    def policy(self, name: str) -> ProjectPolicy:
        """The project's policy, for the services that enforce it (no principal: internal)."""
        with self.db.transaction() as session:
            return repo.get(session, name).policy
