"""Four-eyes approvals: a change a project's policy holds back until enough approvers
(other people than the requester) agree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

STATUSES = ("pending", "executed", "rejected", "cancelled", "expired", "failed")


@dataclass(frozen=True)
class Vote:
    subject: str
    actor: str
    decision: str  # approve or reject
    comment: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "actor": self.actor, "decision": self.decision,
                "comment": self.comment, "at": self.at.isoformat()}


@dataclass(frozen=True)
class Approval:
    id: int
    project: str
    action: str  # one of domain.projects.APPROVABLE
    target: str
    payload: dict[str, Any]
    requested_by: str
    required: int
    status: str
    created_at: datetime
    expires_at: datetime
    votes: tuple[Vote, ...] = ()
    decided_at: datetime | None = None
    reason: str = ""
    result: Any = None

    @property
    def approvals(self) -> int:
        return sum(1 for v in self.votes if v.decision == "approve")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "project": self.project, "action": self.action,
                "target": self.target, "payload": self.payload,
                "requested_by": self.requested_by, "required": self.required,
                "approvals": self.approvals, "status": self.status,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
                "decided_at": self.decided_at.isoformat() if self.decided_at else None,
                "reason": self.reason, "result": self.result,
                "votes": [v.to_dict() for v in self.votes]}
