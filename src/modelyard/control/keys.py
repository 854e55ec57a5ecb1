"""The API key service: create, list, rotate and revoke keys (secrets shown once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from modelyard.domain.errors import Conflict, Forbidden, ValidationFailed
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import ROLES, Principal, grantable_roles, parse_grant
from modelyard.store import keys as repo
from modelyard.store import projects as projects_repo
from modelyard.store.db import Database


def check_owner(owner: str) -> str:
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 256 or any(
            ord(c) < 32 or ord(c) == 127 for c in owner):
        raise ValidationFailed("owner must be 1-256 printable characters", field="owner")
    return owner.strip()


def check_roles(principal: Principal, roles: list[str]) -> list[str]:
    """Valid grants (``role`` or ``role@project``) the principal holds itself."""
    if not isinstance(roles, list) or not roles:
        raise ValidationFailed(f"give at least one role: {', '.join(ROLES)} (optionally "
                               "ROLE@PROJECT)", field="roles")
    for grant in roles:
        parse_grant(grant)
    beyond = sorted(grantable_roles(principal, roles))
    if beyond:
        raise Forbidden(f"{principal.name} cannot grant roles it does not hold: {beyond}",
                        field="roles")
    return sorted(set(roles))


def check_projects(session: Session, roles: list[str]) -> None:
    """Every project a grant names exists: a typo (``predictor@fruad``) would otherwise be a
    key that opens nothing, or later opens a project created under that name. Grants given
    at creation only: keys made before this check keep their grants when rotated."""
    for index, grant in enumerate(roles):
        _, project = parse_grant(grant, f"roles[{index}]")
        if project is not None and not projects_repo.exists(session, project):
            raise ValidationFailed(f"project {project!r} of grant {grant!r} does not exist: "
                                   "create it first (modelyard projects create)",
                                   field=f"roles[{index}]")


def check_limits(rate_per_s: float | None, daily_quota: int | None) -> None:
    if rate_per_s is not None and not 0 < rate_per_s <= 1_000_000:
        raise ValidationFailed("rate_per_s must be above 0 and at most 1000000",
                               field="rate_per_s")
    if daily_quota is not None and not 0 < daily_quota <= 10**12:
        raise ValidationFailed("daily_quota must be a positive count", field="daily_quota")


class KeyService:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Called after every committed key change (the data plane's key snapshot).
        self.on_change: Callable[[], None] = lambda: None

    def create(self, principal: Principal | None, owner: str, roles: list[str], *,
               rate_per_s: float | None = None, daily_quota: int | None = None
               ) -> dict[str, Any]:
        """A new key: the secret is in the answer under ``key`` and nowhere else, ever.
        ``rate_per_s`` and ``daily_quota`` bound its data-plane calls (429 beyond)."""
        principal = guard(self.db, principal, "keys:write", f"key:{owner}")
        given = roles
        owner, roles = check_owner(owner), check_roles(principal, roles)
        check_limits(rate_per_s, daily_quota)
        with self.db.transaction() as session:
            check_projects(session, given)
            secret = repo.create(session, owner, roles, rate_per_s=rate_per_s,
                                 daily_quota=daily_quota)
            record = repo.to_record(repo.key_row(session, secret.partition(".")[0])).to_dict()
            audit.append(session, principal.name, "key.create", record["prefix"], after=record)
        self.on_change()
        return {"key": secret, **record}

    def list(self, principal: Principal | None) -> list[repo.KeyRecord]:
        guard(self.db, principal, "keys:read", "keys")
        with self.db.transaction() as session:
            return repo.all_keys(session)

    def rotate(self, principal: Principal | None, prefix: str) -> dict[str, Any]:
        """Replace a key by a new one with the same owner and roles; the old stops at once."""
        principal = guard(self.db, principal, "keys:write", f"key:{prefix}")
        with self.db.transaction() as session:
            # Locked: rotations of one key at once each made a replacement (all valid).
            old = repo.key_row(session, prefix, lock=True)
            if old.revoked_at is not None:
                raise Conflict(f"key {prefix} is revoked; create a new one", field="prefix")
            roles = check_roles(principal, list(old.roles))
            secret = repo.create(session, old.owner, roles, rate_per_s=old.rate_per_s,
                                 daily_quota=old.daily_quota)
            repo.revoke(session, prefix)
            record = repo.to_record(repo.key_row(session, secret.partition(".")[0])).to_dict()
            audit.append(session, principal.name, "key.rotate", prefix,
                         before={"prefix": prefix}, after=record)
        self.on_change()
        return {"key": secret, "replaces": prefix, **record}

    def revoke(self, principal: Principal | None, prefix: str) -> repo.KeyRecord:
        principal = guard(self.db, principal, "keys:write", f"key:{prefix}")
        with self.db.transaction() as session:
            target = repo.key_row(session, prefix)
            if "admin" in target.roles and target.revoked_at is None:
                # Counted under lock: two admins revoking each other's key at once each saw
                # the other's, and PostgreSQL was left with no admin key at all.
                admins = [k for k in repo.lock_active(session) if "admin" in k.roles]
                if target.revoked_at is None and len(admins) <= 1:
                    raise Conflict("this is the last active admin key; create another admin "
                                   "key before revoking it", field="prefix")
            revoked = repo.revoke(session, prefix)
            audit.append(session, principal.name, "key.revoke", prefix,
                         after=revoked.to_dict())
        self.on_change()
        return revoked
