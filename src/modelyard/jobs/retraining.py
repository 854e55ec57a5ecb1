"""Retraining policies and cycles: the closed loop from an alert (or a schedule, or a person)
to a challenger, its gate and its canary (docs/decisions/0018).

``RetrainService`` keeps one policy per model (guarded and audited), opens cycles
(``trigger``: the hook monitoring calls on drift and quality alerts), and reads them back.
A cycle runs as a ``retrain`` job (``jobs/retrain_cycle.py``); its state after the gate
follows the approval and the rollout it started, brought up to date whenever it is read:
promoted (the ``champion`` alias then moves to the challenger) or rolled back.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.control.approvals import ApprovalService
from modelyard.control.jobs import JobService, principal_document
from modelyard.control.registry import RegistryService
from modelyard.domain.errors import Conflict, ModelNotFound, ValidationFailed
from modelyard.domain.retraining import ACTIVE_STATES, TRIGGER_ALIASES, TRIGGERS, RetrainPolicy
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.jobs import schedules
from modelyard.jobs.retrain_cycle import BOT, KIND, CycleRunner, check_payload
from modelyard.jobs.worker import principal_of
from modelyard.rollout.controller import RolloutService
from modelyard.store import endpoints as endpoint_repo
from modelyard.store import registry as registry_repo
from modelyard.store import retraining as repo
from modelyard.store.db import Database
from modelyard.store.tables import (
    ApprovalRow,
    JobRow,
    JobScheduleRow,
    RetrainCycleRow,
    RolloutRow,
    utcnow,
)

log = logging.getLogger("modelyard.jobs")

APPROVAL_ACTION = "retrain:rollout"


def schedule_name(model: str) -> str:
    return f"retrain-{model}"


class RetrainService:
    def __init__(self, db: Database, jobs: JobService, registry: RegistryService,
                 rollouts: RolloutService, approvals: ApprovalService,
                 outbound_allow: Sequence[str] = ()) -> None:
        self.db = db
        self.jobs = jobs
        self.registry = registry
        self.rollouts = rollouts
        self.runner = CycleRunner(db, registry, rollouts, approvals, outbound_allow)
        jobs.handlers.register(KIND, self.runner.run, action="retraining:write",
                              check=check_payload,
                              description="one retraining cycle of a model's policy: train a "
                                          "challenger, gate it against the champion, roll it "
                                          "out")
        approvals.register(APPROVAL_ACTION, self._approved, self._after_approval)

    def __repr__(self) -> str:
        return f"RetrainService({self.db!r})"

    # -- policies ---------------------------------------------------------------------------
    def _project(self, principal: Principal | None, action: str, model: str) -> tuple[
            Principal, str]:
        """Decided in the model's project; an unknown model answers 404 only to callers
        allowed the action somewhere."""
        with self.db.transaction() as session:
            project = registry_repo.project_of(session, model)
        who = guard(self.db, principal, action, f"retrain:{model}", project,
                    anywhere=project is None)
        if project is None:
            raise ModelNotFound(f"model {model!r} does not exist", field="model")
        return who, project

    def set_policy(self, principal: Principal | None, model: str, document: Any
                   ) -> dict[str, Any]:
        """Create or replace ``model``'s policy. It names project code, so the caller needs
        ``jobs:run_code`` in the project besides ``retraining:write``, and ``trusted: true``.
        A ``triggers.schedule`` keeps the cron schedule ``retrain-MODEL`` in step."""
        who, project = self._project(principal, "retraining:write", model)
        guard(self.db, who, "jobs:run_code", f"retrain:{model}", project)
        policy = RetrainPolicy.from_dict(document, model)
        enabled = True
        if isinstance(document, dict) and "enabled" in document:
            raise ValidationFailed("enabled is not a policy field", field="policy.enabled")
        with self.db.transaction() as session:
            endpoint = endpoint_repo.row(session, policy.endpoint)  # 404 for an unknown one
            if endpoint.project != project:
                raise ValidationFailed(f"endpoint {policy.endpoint!r} is in project "
                                       f"{endpoint.project!r}, model {model!r} in {project!r}",
                                       field="endpoint")
            if endpoint.graph is not None:
                raise ValidationFailed("the rollout endpoint must serve one model, not a graph",
                                       field="endpoint")
            row = repo.find_policy(session, model, lock=True)
            before = repo.to_policy(row) if row is not None else None
            now = utcnow()
            if row is None:
                row = repo.RetrainPolicyRow(model=model, created_at=now)
                session.add(row)
            row.project, row.policy, row.enabled = project, policy.to_dict(), enabled
            row.principal, row.created_by, row.updated_at = principal_document(who), who.name, now
            session.flush()
            self._keep_schedule(session, who, policy, project)
            after = repo.to_policy(row)
            audit.append(session, who.name, "retrain.policy.put", f"retrain:{model}",
                         before=before, after=after)
        return after

    def _keep_schedule(self, session: Session, who: Principal, policy: RetrainPolicy,
                       project: str) -> None:
        name = schedule_name(policy.model)
        found = session.scalars(select(JobScheduleRow).where(JobScheduleRow.name == name)
                                ).one_or_none()
        if policy.triggers.schedule is None:
            if found is not None:
                session.delete(found)
                audit.append(session, who.name, "schedule.delete", f"schedule:{name}",
                             before=schedules.to_schedule(found).to_dict())
            return
        before, after = schedules.put(
            session, name, cron=policy.triggers.schedule, kind=KIND, project=project,
            payload={"model": policy.model, "trigger": "schedule"}, enabled=True,
            max_attempts=policy.max_attempts, principal=principal_document(who),
            created_by=who.name, now=self.jobs.queue.clock())
        audit.append(session, who.name, "schedule.put", f"schedule:{name}",
                     before=before.to_dict() if before else None, after=after.to_dict())

    def policy(self, principal: Principal | None, model: str) -> dict[str, Any]:
        self._project(principal, "retraining:read", model)
        with self.db.transaction() as session:
            return repo.to_policy(repo.policy_row(session, model))

    def policies(self, principal: Principal | None) -> builtins.list[dict[str, Any]]:
        who = guard(self.db, principal, "retraining:read", "retrain", anywhere=True)
        with self.db.transaction() as session:
            return [repo.to_policy(r) for r in repo.all_policies(session)
                    if who.may("retraining:read", r.project)]

    def delete_policy(self, principal: Principal | None, model: str) -> None:
        who, _ = self._project(principal, "retraining:write", model)
        with self.db.transaction() as session:
            row = repo.policy_row(session, model, lock=True)
            before = repo.to_policy(row)
            found = session.scalars(select(JobScheduleRow).where(
                JobScheduleRow.name == schedule_name(model))).one_or_none()
            if found is not None:
                session.delete(found)
            session.delete(row)
            audit.append(session, who.name, "retrain.policy.delete", f"retrain:{model}",
                         before=before)

    # -- triggers ---------------------------------------------------------------------------
    def trigger(self, model: str, trigger: str, reason: str,
                principal: Principal | None = None,
                version: str | None = None) -> dict[str, Any] | None:
        """Open a cycle of ``model`` and queue its ``retrain`` job; ``None`` when nothing
        starts: no enabled policy, a trigger the policy does not take (``drift`` needs
        ``on_drift``, ``quality_drop`` or ``quality`` needs ``on_quality_drop``), or a
        cycle of the model still running (one at a time), or an alert about ``version``
        (``model:N``) when the champion is another version by now (the old version's last
        windows say nothing about the one serving). Without ``principal`` (alerts, the
        system) the cycle acts as whoever set the policy; with one, the caller must hold
        ``retraining:write``."""
        opened, _ = self._open(model, trigger, reason, principal, version)
        return opened

    def run(self, principal: Principal | None, model: str, reason: str = "") -> dict[str, Any]:
        """A manual cycle; ``Conflict`` naming the running cycle when one runs."""
        opened, active = self._open(model, "manual", reason or "started by hand", principal)
        if opened is None:
            raise Conflict(f"cycle {active['id']} of {model} is {active['state']}; one cycle "
                           "per model runs at a time" if active else
                           f"the retraining policy of {model} is disabled", field="model",
                           cycle=active)
        return opened

    def _open(self, model: str, trigger: str, reason: str, principal: Principal | None,
              version: str | None = None
              ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        trigger = TRIGGER_ALIASES.get(trigger, trigger)
        if trigger not in TRIGGERS:
            raise ValidationFailed(f"trigger must be one of {', '.join(TRIGGERS)}",
                                   field="trigger")
        if not isinstance(reason, str) or len(reason) > 2000:
            raise ValidationFailed("reason is text of at most 2000 characters", field="reason")
        who = None
        if principal is not None:
            who, _ = self._project(principal, "retraining:write", model)
        with self.db.transaction() as session:
            row = repo.find_policy(session, model, lock=True)
            if row is None:
                if who is not None:
                    repo.policy_row(session, model)  # raises the 404
                log.info("retraining: no policy for %s; %s trigger ignored", model, trigger)
                return None, None
            policy = RetrainPolicy.from_dict(row.policy)
            if not row.enabled or (who is None and not policy.triggers.allows(trigger)):
                log.info("retraining: %s trigger of %s not taken (policy)", trigger, model)
                return None, None
            if version is not None:
                champion = registry_repo.describe_model(
                    session, registry_repo.model_row(session, model)).aliases.get("champion")
                if champion is not None and version != f"{model}:{champion}":
                    log.info("retraining: %s trigger of %s about %s ignored: the champion is "
                             "%s:%s now", trigger, model, version, model, champion)
                    return None, None
            self._sync_active(session, model)
            active = repo.active_cycle(session, model)
            if active is not None:
                return None, repo.to_cycle(active)
            actor = who.name if who is not None else f"modelyard:{trigger}"
            acting = principal_document(who) if who is not None else dict(row.principal)
            cycle = repo.add_cycle(session, model=model, project=row.project, trigger=trigger,
                                   reason=reason, created_by=actor)
            job = self.jobs.queue.enqueue(
                session, KIND, {"model": model, "cycle": cycle.id, "trigger": trigger,
                                "reason": reason},
                principal=acting, created_by=str(acting.get("name") or actor),
                project=row.project, max_attempts=policy.max_attempts, backoff_s=10.0,
                dedupe_key=f"retrain-cycle:{cycle.id}")
            cycle.job_id = job.id
            audit.append(session, actor, "retrain.trigger", f"retrain_cycle:{cycle.id}",
                         after={"model": model, "trigger": trigger, "reason": reason,
                                "job": job.id, "acting_as": acting.get("name")})
            audit.append(session, actor, "job.enqueue", f"job:{job.id}",
                         after={"kind": KIND, "project": row.project,
                                "payload": dict(job.payload),
                                "max_attempts": job.max_attempts})
            opened = repo.to_cycle(cycle)
        if self.jobs.on_enqueue is not None:
            self.jobs.on_enqueue()
        return opened, None

    # -- reading (and bringing cycles up to date) ----------------------------------------------
    def cycles(self, principal: Principal | None, model: str | None = None, *,
               limit: int = 50, before: int | None = None) -> builtins.list[dict[str, Any]]:
        """Newest first; ``before``: the smallest id of the previous page."""
        if model is not None:
            who, _ = self._project(principal, "retraining:read", model)
        else:
            who = guard(self.db, principal, "retraining:read", "retrain", anywhere=True)
        if not 1 <= limit <= 1000:
            raise ValidationFailed("limit must be 1-1000", field="limit")
        with self.db.transaction() as session:
            rows = [r for r in repo.cycles(session, model, limit=limit, before=before)
                    if who.may("retraining:read", r.project)]
            for row in rows:
                self._sync(session, row)
            return [self._describe(session, r) for r in rows]

    def cycle(self, principal: Principal | None, cycle_id: int) -> dict[str, Any]:
        guard(self.db, principal, "retraining:read", f"retrain_cycle:{cycle_id}",
              anywhere=True)
        with self.db.transaction() as session:
            project = repo.cycle_row(session, cycle_id).project
        guard(self.db, principal, "retraining:read", f"retrain_cycle:{cycle_id}", project)
        with self.db.transaction() as session:
            row = repo.cycle_row(session, cycle_id, lock=True)
            self._sync(session, row)
            return self._describe(session, row)

    @staticmethod
    def _describe(session: Session, row: RetrainCycleRow) -> dict[str, Any]:
        out = repo.to_cycle(row)
        if row.rollout_id is not None:
            rollout = session.get(RolloutRow, row.rollout_id)
            if rollout is not None:
                out["rollout"] = {"id": rollout.id, "endpoint": rollout.endpoint,
                                  "status": rollout.status, "step": rollout.step + 1,
                                  "baseline": rollout.baseline, "target": rollout.target,
                                  "reason": rollout.reason}
        return out

    def _sync_active(self, session: Session, model: str) -> None:
        for row in session.scalars(select(RetrainCycleRow).where(
                RetrainCycleRow.model == model, RetrainCycleRow.state.in_(ACTIVE_STATES))):
            self._sync(session, row)

    def _sync(self, session: Session, row: RetrainCycleRow) -> None:
        """Follow what the cycle waits on: its job (failed or cancelled before a verdict),
        its approval (rejected, expired, cancelled) and its rollout (promoted, rolled back)."""
        now = utcnow()
        if row.state in ("queued", "training", "evaluating") and row.job_id is not None:
            job = session.get(JobRow, row.job_id)
            if job is not None and job.state in ("failed", "cancelled"):
                error = job.error or f"the job was {job.state}"
                self._finish(session, row, "failed", error, outcome="failed")
                row.error = error
        elif row.state == "awaiting_approval" and row.approval_id is not None:
            approval = session.get(ApprovalRow, row.approval_id)
            expired = approval is not None and approval.status == "pending" and \
                approval.expires_at.astimezone(UTC) <= now
            if approval is not None and (approval.status in ("rejected", "cancelled",
                                                               "failed") or expired):
                status = "expired" if expired else approval.status
                self._finish(session, row, "rejected",
                             f"approval {approval.id} {status}" +
                             (f": {approval.reason}" if approval.reason else ""))
        elif row.state == "rolling_out" and row.rollout_id is not None:
            rollout = session.get(RolloutRow, row.rollout_id)
            if rollout is None or rollout.status in ("running", "paused", "awaiting_approval"):
                return
            if rollout.status == "promoted":
                self._finish(session, row, "promoted", rollout.reason)
                self._crown(session, row)
            else:
                self._finish(session, row, "rolled_back", f"rollout {rollout.id} "
                             f"{rollout.status}: {rollout.reason}", outcome="rolled_back")

    @staticmethod
    def _finish(session: Session, row: RetrainCycleRow, state: str, why: str,
                outcome: str = "ok") -> None:
        row.state, row.updated_at, row.finished_at = state, utcnow(), utcnow()
        if state in ("rejected", "rolled_back", "failed"):
            row.error = why[:10_000]
        audit.append(session, BOT, f"retrain.{state.replace('_', '')}",
                     f"retrain_cycle:{row.id}", outcome=outcome,
                     after={"model": row.model, "state": state, "reason": why,
                            "challenger": row.challenger, "champion": row.champion,
                            "rollout": row.rollout_id})

    def _crown(self, session: Session, row: RetrainCycleRow) -> None:
        """A promoted challenger is the champion now (audited like any alias move)."""
        if row.challenger is None:
            return
        version = int(row.challenger.rpartition(":")[2])
        aliases = registry_repo.describe_model(
            session, registry_repo.model_row(session, row.model)).aliases
        if aliases.get("champion") != version:
            self.registry._apply_alias(session, Principal(BOT, frozenset({"admin"})),
                                       {"model": row.model, "alias": "champion",
                                        "version": version})

    # -- approvals -------------------------------------------------------------------------------
    def _approved(self, session: Session, who: Principal, change: dict[str, Any]
                  ) -> dict[str, Any]:
        """The approval that completes a cycle's request: the canary may start (it starts
        right after this transaction commits, ``start_approved``)."""
        row = repo.cycle_row(session, int(change["cycle"]), lock=True)
        if row.state != "awaiting_approval":
            raise Conflict(f"retraining cycle {row.id} is {row.state}", field="id")
        row.state, row.updated_at = "approved", utcnow()
        audit.append(session, who.name, "retrain.approve", f"retrain_cycle:{row.id}",
                     after={"challenger": row.challenger})
        return {"cycle": row.id, "state": row.state}

    def _after_approval(self) -> None:
        self.start_approved()

    def start_approved(self) -> builtins.list[dict[str, Any]]:
        """Start the rollouts of approved cycles, acting as the principal of each cycle's job
        (who asked for the approval); a rollout that cannot start fails its cycle."""
        with self.db.transaction() as session:
            waiting = [(r.id, r.job_id) for r in session.scalars(
                select(RetrainCycleRow).where(RetrainCycleRow.state == "approved"))]
        started = []
        for cycle_id, job_id in waiting:
            with self.db.transaction() as session:
                row = repo.cycle_row(session, cycle_id)
                policy = RetrainPolicy.from_dict(repo.policy_row(session, row.model).policy)
                job = self.jobs.queue.get(session, int(job_id or 0))
                stored = dict(session.get(JobRow, job.id).principal)  # type: ignore[union-attr]
                target = row.challenger or ""
            acting = principal_of(job, stored)
            try:
                rollout = self.runner._start_rollout(acting, policy, target)
            except Exception as exc:  # recorded on the cycle: it stops here
                detail = getattr(exc, "detail", str(exc))
                with self.db.transaction() as session:
                    row = repo.cycle_row(session, cycle_id, lock=True)
                    if row.state == "approved":
                        self._finish(session, row, "failed", f"the rollout did not start: "
                                     f"{detail}", outcome="failed")
                continue
            with self.db.transaction() as session:
                row = repo.cycle_row(session, cycle_id, lock=True)
                if row.state == "approved":
                    self.runner._rolling_out(session, cycle_id, rollout)
                    started.append(repo.to_cycle(row))
        return started


__all__ = ["APPROVAL_ACTION", "RetrainService", "schedule_name"]
