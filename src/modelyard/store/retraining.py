"""Retraining persistence: policies by model, cycles by id, the active cycle of a model."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.domain.errors import NotFound
from modelyard.domain.retraining import ACTIVE_STATES
from modelyard.store.tables import RetrainCycleRow, RetrainPolicyRow, utcnow


class RetrainPolicyNotFound(NotFound):
    code = "retrain_policy_not_found"


class RetrainCycleNotFound(NotFound):
    code = "retrain_cycle_not_found"


def find_policy(session: Session, model: str, *, lock: bool = False
                ) -> RetrainPolicyRow | None:
    query = select(RetrainPolicyRow).where(RetrainPolicyRow.model == model)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def policy_row(session: Session, model: str, *, lock: bool = False) -> RetrainPolicyRow:
    row = find_policy(session, model, lock=lock)
    if row is None:
        raise RetrainPolicyNotFound(f"model {model!r} has no retraining policy", field="model")
    return row


def all_policies(session: Session) -> list[RetrainPolicyRow]:
    return list(session.scalars(select(RetrainPolicyRow).order_by(RetrainPolicyRow.model)))


def cycle_row(session: Session, cycle_id: int, *, lock: bool = False) -> RetrainCycleRow:
    query = select(RetrainCycleRow).where(RetrainCycleRow.id == cycle_id)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise RetrainCycleNotFound(f"retraining cycle {cycle_id} does not exist", field="id")
    return row


def active_cycle(session: Session, model: str) -> RetrainCycleRow | None:
    return session.scalars(select(RetrainCycleRow).where(
        RetrainCycleRow.model == model, RetrainCycleRow.state.in_(ACTIVE_STATES))
        .order_by(RetrainCycleRow.id)).first()


def cycles(session: Session, model: str | None = None, *, limit: int = 50,
           before: int | None = None) -> list[RetrainCycleRow]:
    query = select(RetrainCycleRow).order_by(RetrainCycleRow.id.desc()).limit(limit)
    if model is not None:
        query = query.where(RetrainCycleRow.model == model)
    if before is not None:
        query = query.where(RetrainCycleRow.id < before)
    return list(session.scalars(query))


def add_cycle(session: Session, *, model: str, project: str, trigger: str, reason: str,
              created_by: str) -> RetrainCycleRow:
    now = utcnow()
    row = RetrainCycleRow(model=model, project=project, trigger=trigger, reason=reason,
                          state="queued", created_by=created_by, created_at=now,
                          updated_at=now)
    session.add(row)
    session.flush()
    return row


def to_cycle(row: RetrainCycleRow) -> dict[str, Any]:
    gate = dict(row.gate or {})
    result = gate.get("result") or {}
    return {"id": row.id, "model": row.model, "project": row.project, "trigger": row.trigger,
            "reason": row.reason, "state": row.state, "job_id": row.job_id,
            "champion": row.champion, "challenger": row.challenger, "data": row.data,
            "gate": gate or None,
            "verdict": None if not result else ("pass" if result.get("passed") else "fail"),
            "metric": result.get("metric"), "champion_value": result.get("champion"),
            "challenger_value": result.get("challenger"), "rollout_id": row.rollout_id,
            "approval_id": row.approval_id, "error": row.error,
            "created_by": row.created_by, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None}


def to_policy(row: RetrainPolicyRow) -> dict[str, Any]:
    return {"model": row.model, "project": row.project, "policy": dict(row.policy),
            "enabled": bool(row.enabled), "created_by": row.created_by,
            "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat()}
