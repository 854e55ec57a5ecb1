"""The one policy function that decides every request.

Actions are ``resource:verb`` strings; each names the roles allowed. A principal holds role
grants: ``developer`` holds the role in every project, ``developer@fraud`` only in project
``fraud``. An action on something inside a project (a model, an endpoint, an approval) is
decided by the roles held there; yard-wide actions (keys, projects, the audit log) only by
grants without a project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from modelyard.domain.errors import Forbidden, Unauthenticated, ValidationFailed

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
    # Making an endpoint answer without credentials is an admin's explicit decision.
    "endpoints:publish": frozenset({"admin"}),
    "predict": frozenset({"predictor", *_READ}),
    # Choosing the version that answers (Modelyard-Version) instead of the traffic split.
    "traffic:override": frozenset({"developer", "operator", "admin"}),
    # Logged payloads (redacted) are data, not metadata: not for viewers.
    "inference:read": frozenset({"developer", "operator", "admin"}),
    "monitors:read": _READ,
    "monitors:write": frozenset({"developer", "operator", "admin"}),
    "rollouts:read": _READ,
    "rollouts:write": frozenset({"developer", "operator", "admin"}),
    "approvals:read": _READ,
    "approvals:decide": frozenset({"approver", "admin"}),
    "projects:read": _READ,
    "projects:write": frozenset({"admin"}),
    "keys:read": frozenset({"admin"}),
    "keys:write": frozenset({"admin"}),
    "audit:read": frozenset({"admin", "approver"}),
    "metrics:read": frozenset({"predictor", *_READ}),
    # Jobs (training, evaluation, drift...): enqueue and cancel them, keep cron schedules.
    "jobs:read": _READ,
    "jobs:write": frozenset({"developer", "operator", "admin"}),
    # Jobs that run project code (the ``call`` kind), as a transform or python model does.
    "jobs:run_code": frozenset({"developer", "admin"}),
    # Retraining policies and cycles; setting a policy also needs jobs:run_code (it names a
    # training entrypoint, project code).
    "retraining:read": _READ,
    "retraining:write": frozenset({"developer", "operator", "admin"}),
    # The readiness scorecard (facts about endpoints and the yard, never secrets).
    "readiness:read": _READ,
}

# The project part is a project name as ``check_name`` allows it (upper case included).
_GRANT = re.compile(r"(?P<role>[a-z]+)(?:@(?P<project>[A-Za-z0-9][A-Za-z0-9._-]{0,127}))?")


def parse_grant(grant: str, field: str = "roles") -> tuple[str, str | None]:
    """``"developer"`` -> (developer, None); ``"developer@fraud"`` -> (developer, fraud)."""
    match = _GRANT.fullmatch(grant) if isinstance(grant, str) else None
    if match is None or match["role"] not in ROLES:
        raise ValidationFailed(
            f"unknown role {grant!r}; roles are {', '.join(ROLES)}, optionally scoped to a "
            "project as ROLE@PROJECT", field=field)
    return match["role"], match["project"]


@dataclass(frozen=True)
class Principal:
    """Who acts. ``roles`` are grants (``role`` or ``role@project``); ``subject`` is the
    person or service behind the credential (a key's owner, a token's ``sub``), which is what
    four-eyes approvals compare, so two keys of one owner are still one pair of eyes."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    subject: str = ""

    def __post_init__(self) -> None:
        if not self.subject:
            object.__setattr__(self, "subject", self.name)

    def roles_in(self, project: str | None) -> frozenset[str]:
        """Roles held in ``project``; with ``None``, roles held yard-wide."""
        held = set()
        for grant in self.roles:
            role, _, scope = grant.partition("@")
            if not scope or scope == project:
                held.add(role)
        return frozenset(held)

    def may(self, action: str, project: str | None = None) -> bool:
        return bool(self.roles_in(project) & ACTIONS.get(action, frozenset()))

    def may_somewhere(self, action: str) -> bool:
        allowed = ACTIONS.get(action, frozenset())
        return any(grant.partition("@")[0] in allowed for grant in self.roles)

    @classmethod
    def local_admin(cls) -> Principal:
        """Whoever can open the yard's files: the same power as its admin key."""
        import getpass

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(f"local:{user}", frozenset({"admin"}), subject=user.lower())


def grantable_roles(principal: Principal, wanted: list[str]) -> list[str]:
    """The wanted grants a principal may not hand out: a yard-wide admin may grant anything;
    otherwise a grant needs the same role held where the grant applies."""
    if "admin" in principal.roles_in(None):
        return []
    beyond = []
    for grant in wanted:
        role, project = parse_grant(grant)
        if role not in principal.roles_in(project):
            beyond.append(grant)
    return beyond


def authorize(principal: Principal | None, action: str, project: str | None = None,
              *, anywhere: bool = False) -> Principal:
    """Allow or refuse ``action``: in ``project``, yard-wide (``project=None``), or, with
    ``anywhere``, in at least one project (for listings, which then show only what
    ``Principal.may`` allows)."""
    if action not in ACTIONS:
        raise Forbidden(f"unknown action {action!r}")  # fail closed on a typo
    if principal is None:
        raise Unauthenticated("this request needs an API key: Authorization: Bearer <key>")
    allowed = principal.may_somewhere(action) if anywhere else principal.may(action, project)
    if not allowed:
        where = f" in project {project!r}" if project and not anywhere else ""
        raise Forbidden(f"{principal.name} may not {action}{where}")
    return principal
