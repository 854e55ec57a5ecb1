"""The one policy function that decides every request.

Actions are ``resource:verb`` strings; each names the roles allowed. Roles, scopes per project
and OIDC come with the governance issue; this table is where they grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelyard.domain.errors import Forbidden, Unauthenticated

ROLES = ("viewer", "predictor", "developer", "approver", "operator", "admin")

_READ = frozenset({"viewer", "developer", "approver", "operator", "admin"})
_WRITE = frozenset({"developer", "operator", "admin"})

ACTIONS: dict[str, frozenset[str]] = {
    "models:read": _READ,
    "models:write": _WRITE,
    "models:delete": frozenset({"admin"}),
    "aliases:write": _WRITE,
    "artifacts:read": _READ,
    "artifacts:write": _WRITE,
    "artifacts:delete": frozenset({"admin"}),
    "endpoints:read": _READ,
    "endpoints:write": _WRITE,
    "endpoints:delete": frozenset({"operator", "admin"}),
    "predict": frozenset({"predictor", *_READ}),
    "keys:read": frozenset({"admin"}),
    "audit:read": frozenset({"admin", "approver"}),
    "keys:write": frozenset({"admin"}),
}


def grantable_roles(principal: Principal) -> frozenset[str]:
    """Roles a principal may put on a new key: never more than it holds (admin holds all)."""
    return frozenset(ROLES) if "admin" in principal.roles else principal.roles


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def local_admin(cls) -> Principal:
        """Whoever can open the yard's files: the same power as its admin key."""
        import getpass

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(f"local:{user}", frozenset({"admin"}))


def authorize(principal: Principal | None, action: str) -> Principal:
    if action not in ACTIONS:
        raise Forbidden(f"unknown action {action!r}")  # fail closed on a typo
    if principal is None:
        raise Unauthenticated("this request needs an API key: Authorization: Bearer <key>")
    if not principal.roles & ACTIONS[action]:
        # (issue 4 records this refusal in the audit chain)
        raise Forbidden(f"{principal.name} may not {action}")
    return principal
