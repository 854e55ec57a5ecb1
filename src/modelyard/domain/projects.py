"""Projects and their policy: who must approve what, whether versions must be signed, which
model-card fields a production version needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from modelyard.domain.cards import TEXT_FIELDS
from modelyard.domain.errors import ValidationFailed, reject_unknown

DEFAULT_PROJECT = "default"

CARD_FIELDS = (*TEXT_FIELDS, "owners", "risk_level")
# Changes a project can put behind four-eyes approval.
APPROVABLE = ("alias:production", "endpoint:auth", "rollout:promote")
MAX_APPROVERS = 10


@dataclass(frozen=True)
class ProjectPolicy:
    approvals_required: int = 0  # 0: no approvals needed
    approval_actions: tuple[str, ...] = APPROVABLE
    approval_expiry_h: float = 72.0
    signatures_required: bool = False
    trusted_keys: tuple[str, ...] = ()  # Ed25519 public keys (PEM) that may sign versions
    card_required: tuple[str, ...] | None = None  # None: the yard's setting applies

    def needs_approval(self, action: str) -> bool:
        return self.approvals_required > 0 and action in self.approval_actions

    def to_dict(self) -> dict[str, Any]:
        return {"approvals_required": self.approvals_required,
                "approval_actions": list(self.approval_actions),
                "approval_expiry_h": self.approval_expiry_h,
                "signatures_required": self.signatures_required,
                "trusted_keys": list(self.trusted_keys),
                "card_required": None if self.card_required is None
                else list(self.card_required)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ProjectPolicy:
        return cls().merged(data or {})

    def merged(self, changes: Any) -> ProjectPolicy:
        """This policy with ``changes`` applied, each field checked."""
        changes = reject_unknown(changes, set(self.to_dict()), "policy field", "policy")
        out = self
        if "approvals_required" in changes:
            n = changes["approvals_required"]
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_APPROVERS:
                raise ValidationFailed(f"approvals_required must be 0-{MAX_APPROVERS}",
                                       field="policy.approvals_required")
            out = replace(out, approvals_required=n)
        if "approval_actions" in changes:
            actions = _strings(changes["approval_actions"], "policy.approval_actions")
            unknown = sorted(set(actions) - set(APPROVABLE))
            if unknown:
                raise ValidationFailed(f"cannot require approval for {unknown[0]!r}; choose "
                                       f"from {', '.join(APPROVABLE)}",
                                       field="policy.approval_actions")
            out = replace(out, approval_actions=tuple(dict.fromkeys(actions)))
        if "approval_expiry_h" in changes:
            hours = changes["approval_expiry_h"]
            if not isinstance(hours, int | float) or isinstance(hours, bool) or \
                    not 0.01 <= hours <= 24 * 90:
                raise ValidationFailed("approval_expiry_h must be between 0.01 and 2160",
                                       field="policy.approval_expiry_h")
            out = replace(out, approval_expiry_h=float(hours))
        if "signatures_required" in changes:
            if not isinstance(changes["signatures_required"], bool):
                raise ValidationFailed("signatures_required must be true or false",
                                       field="policy.signatures_required")
            out = replace(out, signatures_required=changes["signatures_required"])
        if "trusted_keys" in changes:
            from modelyard.governance.signing import load_public_key

            keys = _strings(changes["trusted_keys"], "policy.trusted_keys")
            for pem in keys:
                load_public_key(pem.encode(), field="policy.trusted_keys")  # Ed25519 only
            out = replace(out, trusted_keys=tuple(dict.fromkeys(keys)))
        if "card_required" in changes:
            wanted = changes["card_required"]
            if wanted is None:
                out = replace(out, card_required=None)
            else:
                fields = _strings(wanted, "policy.card_required")
                unknown = sorted(set(fields) - set(CARD_FIELDS))
                if unknown:
                    raise ValidationFailed(f"{unknown[0]!r} is not a model-card field; fields "
                                           f"are {', '.join(CARD_FIELDS)}",
                                           field="policy.card_required")
                out = replace(out, card_required=tuple(fields))
        if out.signatures_required and not out.trusted_keys:
            raise ValidationFailed("signatures_required needs at least one trusted key",
                                   field="policy.trusted_keys")
        return out


def _strings(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed("must be a list of strings", field=field)
    return list(value)


@dataclass(frozen=True)
class Project:
    name: str
    description: str
    created_at: datetime
    created_by: str
    policy: ProjectPolicy = field(default_factory=ProjectPolicy)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "created_at": self.created_at.isoformat(), "created_by": self.created_by,
                "policy": self.policy.to_dict()}
