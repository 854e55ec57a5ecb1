"""Four-eyes approvals: hold a change back, collect approvals, execute it exactly once.

A service that meets a change its project's policy guards (``ProjectPolicy.needs_approval``)
calls ``request`` inside its own transaction instead of applying the change. Approvers other
than the requester (compared by subject, so a second key of the same person does not count)
approve or reject; the approval that reaches the required number executes the change in the
same transaction, under the requester's name, through the executor the owning service
registered. The row is locked while deciding, so two concurrent last approvals cannot both
execute. Every step is in the audit chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.domain.approvals import STATUSES, Approval, Vote
from modelyard.domain.errors import (
    ApprovalClosed,
    ApprovalNotFound,
    Conflict,
    Forbidden,
    ModelyardError,
    SelfApproval,
    ValidationFailed,
)
from modelyard.domain.projects import ProjectPolicy
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.store.db import Database
from modelyard.store.tables import ApiKeyRow, ApprovalRow, ApprovalVoteRow, utcnow

# Applies the held-back change inside the deciding transaction; returns what to record.
Executor = Callable[[Session, Principal, dict[str, Any]], Any]


class ApprovalService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._executors: dict[str, tuple[Executor, Callable[[], None]]] = {}

    def register(self, action: str, execute: Executor,
                 after: Callable[[], None] = lambda: None) -> None:
        """``after`` runs once the executing transaction has committed (e.g. to reconcile)."""
        self._executors[action] = (execute, after)

    # -- requesting (inside the caller's transaction) ------------------------------------
    def request(self, session: Session, principal: Principal, policy: ProjectPolicy,
                project: str, action: str, target: str, payload: dict[str, Any]) -> Approval:
        if action not in self._executors:
            raise ValidationFailed(f"no executor for {action!r}")  # a programming error
        now = utcnow()
        row = ApprovalRow(project=project, action=action, target=target, payload=payload,
                          requested_by=principal.name, requester_subject=principal.subject,
                          requester_roles=sorted(principal.roles),
                          required=policy.approvals_required, status="pending", reason="",
                          created_at=now,
                          expires_at=now + timedelta(hours=policy.approval_expiry_h))
        session.add(row)
        session.flush()
        approval = _to_approval(session, row)
        audit.append(session, principal.name, "approval.request", f"approval:{row.id}",
                     after=approval.to_dict())
        return approval

    # -- reads ---------------------------------------------------------------------------
    def list(self, principal: Principal | None, status: str | None = None,
             project: str | None = None) -> list[Approval]:
        if status is not None and status not in STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}",
                                   field="status")
        who = guard(self.db, principal, "approvals:read", "approvals", anywhere=True)
        with self.db.transaction() as session:
            query = select(ApprovalRow).order_by(ApprovalRow.id.desc())
            if project is not None:
                query = query.where(ApprovalRow.project == project)
            found = [_to_approval(session, r) for r in session.scalars(query)
                     if who.may("approvals:read", r.project)]
        return [a for a in found if status is None or a.status == status]

    def get(self, principal: Principal | None, approval_id: int) -> Approval:
        project = self._project_of(principal, approval_id, "approvals:read")
        guard(self.db, principal, "approvals:read", f"approval:{approval_id}", project)
        with self.db.transaction() as session:
            return _to_approval(session, _row(session, approval_id))

    # -- decisions -----------------------------------------------------------------------
    def approve(self, principal: Principal | None, approval_id: int, comment: str = ""
                ) -> Approval:
        return self._decide(principal, approval_id, "approve", comment)

    def reject(self, principal: Principal | None, approval_id: int, comment: str = ""
               ) -> Approval:
        return self._decide(principal, approval_id, "reject", comment)

    def cancel(self, principal: Principal | None, approval_id: int) -> Approval:
        """The requester (or a project admin) withdraws a pending request."""
        project = self._project_of(principal, approval_id, "approvals:read")
        who = guard(self.db, principal, "approvals:read", f"approval:{approval_id}", project)
        with self.db.transaction() as session:
            row = _row(session, approval_id, lock=True)
            closed = _close_if_expired(session, row)
            if closed is None:
                if who.subject != row.requester_subject and "admin" not in who.roles_in(project):
                    raise SelfApproval("only the requester or an admin can cancel a request",
                                       field="id")
                row.status, row.decided_at = "cancelled", utcnow()
                audit.append(session, who.name, "approval.cancel", f"approval:{row.id}",
                             before={"status": "pending"}, after={"status": "cancelled"})
                cancelled = _to_approval(session, row)
        if closed is not None:
            raise closed
        return cancelled

    def _decide(self, principal: Principal | None, approval_id: int, decision: str,
                comment: str) -> Approval:
        if not isinstance(comment, str) or len(comment) > 2000:
            raise ValidationFailed("comment must be text of at most 2000 characters",
                                   field="comment")
        project = self._project_of(principal, approval_id, "approvals:decide")
        who = guard(self.db, principal, "approvals:decide", f"approval:{approval_id}", project)
        after: Callable[[], None] | None = None
        with self.db.transaction() as session:
            row = _row(session, approval_id, lock=True)
            closed = _close_if_expired(session, row)
            if closed is None:
                if who.subject == row.requester_subject:
                    raise SelfApproval("four eyes: the requester cannot approve or reject "
                                       "their own request", field="id")
                if session.get(ApprovalVoteRow, (row.id, who.subject)) is not None:
                    raise Conflict(f"{who.subject} already decided on this request",
                                   field="id")
                session.add(ApprovalVoteRow(approval_id=row.id, subject=who.subject,
                                            actor=who.name, decision=decision,
                                            comment=comment, at=utcnow()))
                session.flush()
                audit.append(session, who.name, f"approval.{decision}", f"approval:{row.id}",
                             after={"comment": comment})
                if decision == "reject":
                    row.status, row.decided_at = "rejected", utcnow()
                elif _to_approval(session, row).approvals >= row.required:
                    after = self._execute(session, row)
                decided = _to_approval(session, row)
        if closed is not None:
            raise closed
        if after is not None:
            after()
        return decided

    def _execute(self, session: Session, row: ApprovalRow) -> Callable[[], None] | None:
        """Run the change once; a failure of the change itself is recorded, not raised."""
        execute, after = self._executors[row.action]
        requester = Principal(row.requested_by, frozenset(row.requester_roles),
                              subject=row.requester_subject)
        row.decided_at = utcnow()
        try:
            _check_still_valid(session, row.requested_by)
            with session.begin_nested():
                result = execute(session, requester, dict(row.payload))
        except ModelyardError as exc:
            row.status, row.reason = "failed", exc.detail
            audit.append(session, "modelyard", "approval.execute", f"approval:{row.id}",
                         outcome="failed", after={"reason": exc.detail})
            return None
        row.status, row.result = "executed", json.loads(json.dumps(result, default=str))
        audit.append(session, "modelyard", "approval.execute", f"approval:{row.id}",
                     after={"action": row.action, "target": row.target,
                            "result": row.result})
        return after

    def _project_of(self, principal: Principal | None, approval_id: int, action: str) -> str:
        """The request's project, once ``action`` is allowed somewhere (so an unknown id
        answers 404 only to those who could act on one)."""
        guard(self.db, principal, action, f"approval:{approval_id}", anywhere=True)
        with self.db.transaction() as session:
            return _row(session, approval_id).project


def _check_still_valid(session: Session, requested_by: str) -> None:
    """A change asked for with an API key runs only while that key is still valid: revoking
    a key also withdraws what it left waiting for approval."""
    kind, _, rest = requested_by.partition(":")
    if kind != "key":
        return
    prefix = rest.rpartition(":")[2]
    key = session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).one_or_none()
    if key is None or key.revoked_at is not None:
        raise Forbidden(f"the requester's key {prefix} was revoked after asking; the change "
                        "does not run", field="id")


def _row(session: Session, approval_id: int, *, lock: bool = False) -> ApprovalRow:
    query = select(ApprovalRow).where(ApprovalRow.id == approval_id)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise ApprovalNotFound(f"approval request {approval_id} does not exist", field="id")
    return row


def _close_if_expired(session: Session, row: ApprovalRow) -> ApprovalClosed | None:
    """Mark an overdue request expired (recorded); the error to raise after commit."""
    if row.status == "pending" and row.expires_at <= utcnow():
        row.status, row.decided_at = "expired", utcnow()
        audit.append(session, "modelyard", "approval.expire", f"approval:{row.id}",
                     before={"status": "pending"}, after={"status": "expired"})
    if row.status != "pending":
        return ApprovalClosed(f"approval request {row.id} is {row.status}", field="id",
                              status_now=row.status)
    return None


def _to_approval(session: Session, row: ApprovalRow) -> Approval:
    votes = session.scalars(select(ApprovalVoteRow).where(ApprovalVoteRow.approval_id == row.id)
                            .order_by(ApprovalVoteRow.at)).all()
    status = row.status
    if status == "pending" and row.expires_at <= utcnow():
        status = "expired"
    return Approval(row.id, row.project, row.action, row.target, dict(row.payload),
                    row.requested_by, row.required, status, row.created_at, row.expires_at,
                    tuple(Vote(v.subject, v.actor, v.decision, v.comment, v.at)
                          for v in votes),
                    row.decided_at, row.reason, row.result)
