"""The rollout service: start, watch, steer and automatically finish progressive rollouts.

The state (step, when it began, consecutive failures, the verdict history) lives in the
store, and the traffic split of each step is the endpoint's traffic policy, so a restarted
server resumes a rollout at the same step with the same weights. ``tick`` runs the analysis:
in the server, every interval, with the server's own observations of each version.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.control.approvals import ApprovalService
from modelyard.control.endpoints import EndpointService
from modelyard.control.registry import RegistryService
from modelyard.domain.analysis import (
    CONTROL_BETTER,
    NO_DIFFERENCE_YET,
    TREATMENT_BETTER,
    ABTestResult,
    Check,
    Verdict,
    WindowStats,
    ab_test,
    analyze,
)
from modelyard.domain.errors import Conflict, NotFound, ValidationFailed
from modelyard.domain.names import ModelRef
from modelyard.domain.rollouts import ACTIVE, FINAL, Decision, RolloutSpec, decide
from modelyard.domain.traffic import Shadow, Target, TrafficPolicy
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.store import endpoints as endpoint_repo
from modelyard.store import feedback as feedback_repo
from modelyard.store import projects as projects_repo
from modelyard.store import registry as registry_repo
from modelyard.store.db import Database
from modelyard.store.tables import ApprovalRow, RolloutRow, utcnow

HISTORY = 50  # verdicts kept per rollout
BOT = "modelyard:rollouts"  # the actor of automated decisions

# (observation key, seconds back, shadow traffic?) -> what that version did
StatsOf = Callable[[str, float, bool], WindowStats]
# (endpoint, model:version) -> whether that version is loaded and warm for the endpoint
ReadyOf = Callable[[str, str], bool]


class RolloutNotFound(NotFound):
    code = "rollout_not_found"


class RolloutService:
    def __init__(self, db: Database, endpoints: EndpointService,
                 approvals: ApprovalService, registry: RegistryService) -> None:
        self.db = db
        self.endpoints = endpoints
        self.registry = registry
        self.approvals = approvals
        self.approvals.register("rollout:promote", self._approved_promotion,
                                lambda: endpoints.on_change())

    # -- starting ----------------------------------------------------------------------------
    def start(self, principal: Principal | None, endpoint: str, spec_doc: Mapping[str, Any]
              ) -> dict[str, Any]:
        """Start rolling ``spec_doc["target"]`` out on ``endpoint`` (canary, blue_green or
        shadow); the current version is the baseline."""
        who, project = self.endpoints._guard(principal, "rollouts:write", endpoint)
        spec = RolloutSpec.from_dict(dict(spec_doc))
        with self.db.transaction() as session:
            # Locked: two starts at once both found no active rollout (two ran on PostgreSQL).
            row = endpoint_repo.row(session, endpoint, lock=True)
            if row.graph is not None:
                raise ValidationFailed("graph endpoints cannot be rolled out (yet)",
                                       field="endpoint")
            if self._active(session, endpoint) is not None:
                raise Conflict(f"endpoint {endpoint!r} already has an active rollout",
                               field="endpoint")
            baseline = _pin(session, row.model_ref)
            target = _pin(session, spec.target)
            if baseline == target:
                raise ValidationFailed(f"{target} already serves {endpoint!r}",
                                       field="rollout.target")
            spec = replace(spec, target=target)
            rollout = RolloutRow(endpoint=endpoint, project=row.project,
                                 strategy=spec.strategy, spec=spec.to_dict(),
                                 baseline=baseline, target=target, status="running", step=0,
                                 step_started_at=utcnow(), failures=0, history=[], reason="",
                                 created_by=who.name, created_at=utcnow(),
                                 updated_at=utcnow())
            session.add(rollout)
            session.flush()
            self.endpoints.apply_traffic(session, who, endpoint, _policy(rollout, spec, 0))
            audit.append(session, who.name, "rollout.start", f"rollout:{rollout.id}",
                         after=_summary(rollout))
            out = _summary(rollout)
        self.endpoints.on_change()
        del project
        return out

    # -- reading -----------------------------------------------------------------------------
    def list_rollouts(self, principal: Principal | None, endpoint: str | None = None
             ) -> list[dict[str, Any]]:
        who = guard(self.db, principal, "rollouts:read", "rollouts", anywhere=True)
        with self.db.transaction() as session:
            query = select(RolloutRow).order_by(RolloutRow.id.desc())
            if endpoint is not None:
                query = query.where(RolloutRow.endpoint == endpoint)
            return [_summary(r) for r in session.scalars(query)
                    if who.may("rollouts:read", r.project)]

    def get(self, principal: Principal | None, rollout_id: int) -> dict[str, Any]:
        # Allowed somewhere first, so an unknown id answers 404 only to those who could look.
        guard(self.db, principal, "rollouts:read", f"rollout:{rollout_id}", anywhere=True)
        with self.db.transaction() as session:
            row = self._row(session, rollout_id)
            guard(self.db, principal, "rollouts:read", f"rollout:{rollout_id}", row.project)
            return _summary(row, history=True)

    # -- steering ----------------------------------------------------------------------------
    def pause(self, principal: Principal | None, rollout_id: int) -> dict[str, Any]:
        return self._steer(principal, rollout_id, "pause")

    def resume(self, principal: Principal | None, rollout_id: int) -> dict[str, Any]:
        return self._steer(principal, rollout_id, "resume")

    def abort(self, principal: Principal | None, rollout_id: int) -> dict[str, Any]:
        """All traffic back to the baseline at once."""
        return self._steer(principal, rollout_id, "abort")

    def promote(self, principal: Principal | None, rollout_id: int) -> dict[str, Any]:
        """Skip the remaining steps: the new version takes the endpoint (approval rules
        apply when the endpoint follows the production alias)."""
        return self._steer(principal, rollout_id, "promote")

    def _steer(self, principal: Principal | None, rollout_id: int, action: str
               ) -> dict[str, Any]:
        guard(self.db, principal, "rollouts:write", f"rollout:{rollout_id}", anywhere=True)
        with self.db.transaction() as session:
            project = self._row(session, rollout_id).project
        who = guard(self.db, principal, "rollouts:write", f"rollout:{rollout_id}", project)
        with self.db.transaction() as session:
            row = self._row(session, rollout_id, lock=True)
            if row.status not in ACTIVE:
                raise Conflict(f"rollout {rollout_id} is {row.status}", field="id")
            spec = RolloutSpec.from_dict(row.spec)
            if action == "pause":
                row.status = "paused"
                audit.append(session, who.name, "rollout.pause", f"rollout:{row.id}")
            elif action == "resume":
                row.status, row.step_started_at = "running", utcnow()
                audit.append(session, who.name, "rollout.resume", f"rollout:{row.id}")
            elif action == "abort":
                self._finish(session, who, row, "aborted", "aborted by " + who.name)
            else:
                self._promote(session, who, row, spec, "promoted by " + who.name)
            row.updated_at = utcnow()
            out = _summary(row)
        self.endpoints.on_change()
        return out

    # -- the controller ------------------------------------------------------------------------
    def tick(self, stats_of: StatsOf, ready: ReadyOf, now: datetime | None = None
             ) -> list[dict[str, Any]]:
        """Analyse every running rollout once and act on the verdicts (the server calls this
        every interval). Returns what was decided, for logs and tests."""
        decided = []
        with self.db.transaction() as session:
            ids = list(session.scalars(select(RolloutRow.id)
                                       .where(RolloutRow.status == "running")))
            held = list(session.scalars(select(RolloutRow.id)
                                        .where(RolloutRow.status == "awaiting_approval")))
        for rollout_id in held:
            with self.db.transaction() as session:
                result = self._unapproved(session, rollout_id, now or utcnow())
                if result is not None:
                    decided.append(result)
        for rollout_id in ids:
            with self.db.transaction() as session:
                row = self._row(session, rollout_id, lock=True)
                if row.status != "running" or not _due(row, now or utcnow()):
                    continue
                result = self._analyse(session, row, stats_of, ready, now or utcnow())
                if result is not None:
                    decided.append(result)
        if decided:
            self.endpoints.on_change()
        return decided

    def _unapproved(self, session: Session, rollout_id: int, now: datetime
                    ) -> dict[str, Any] | None:
        """A promotion held for approval whose approval ended without executing it
        (rejected, cancelled, expired, or failed: e.g. the version lacks the card the
        production alias needs) rolls back, instead of holding the split forever."""
        row = self._row(session, rollout_id, lock=True)
        if row.status != "awaiting_approval" or row.approval_id is None:
            return None
        approval = session.get(ApprovalRow, row.approval_id)
        if approval is None:
            status, why = "gone", ""
        else:
            status, why = approval.status, approval.reason or ""
            if status == "pending" and approval.expires_at.astimezone(UTC) <= now:
                status = "expired"
            if status in ("pending", "executed"):
                return None
        reason = f"the promotion was not approved: approval {row.approval_id} {status}" + \
            (f" ({why})" if why else "")
        self._finish(session, Principal(BOT, frozenset({"admin"})), row, "rolled_back",
                     reason)
        return {"rollout": row.id, "status": row.status, "reason": reason}

    def _analyse(self, session: Session, row: RolloutRow, stats_of: StatsOf, ready: ReadyOf,
                 now: datetime) -> dict[str, Any] | None:
        spec = RolloutSpec.from_dict(row.spec)
        if not ready(row.endpoint, row.target):
            return None  # still loading: the step has not begun for traffic yet
        elapsed = (now - row.step_started_at).total_seconds()
        outcome: ABTestResult | None = None  # the outcome test, when outcomes are reported
        if spec.strategy == "blue_green" and row.step == 0:
            decision = Decision("advance", f"{row.target} is loaded and warm", 0)
            verdict = Verdict("pass", ())
        else:
            window = max(elapsed, 1.0)
            shadow = spec.strategy == "shadow"
            canary = stats_of(f"{row.endpoint}/{row.target}", window, shadow)
            has_baseline = spec.steps[row.step].weight < 100 or shadow
            baseline = stats_of(f"{row.endpoint}/{row.baseline}", window, False) \
                if has_baseline else None
            verdict = analyze(canary, baseline, spec.analysis)
            if spec.strategy in ("canary", "blue_green"):
                verdict, outcome = self._with_quality(session, row, spec, verdict)
            decision = decide(spec, row.step, elapsed, row.failures, verdict)
        if spec.strategy == "ab_test" and decision.action != "rollback":
            outcome = self._outcome_test(session, row, spec)
            decision = _ab_decision(spec, outcome, elapsed, decision)
        row.failures = decision.failures
        entry = {"at": now.isoformat(), "step": row.step,
                 "weight": spec.steps[row.step].weight, "action": decision.action,
                 "reason": decision.reason, "verdict": verdict.to_dict()}
        if outcome is not None:  # kept: the next look continues the sequential test
            entry["ab_test"] = outcome.to_dict()
        row.history = [*list(row.history or [])[-(HISTORY - 1):], entry]
        row.reason = decision.reason
        bot = Principal(BOT, frozenset({"admin"}))
        if decision.action == "rollback":
            self._finish(session, bot, row, "rolled_back", decision.reason, verdict)
        elif decision.action == "advance":
            row.step += 1
            row.step_started_at = now
            self.endpoints.apply_traffic(session, bot, row.endpoint,
                                         _policy(row, spec, row.step))
            audit.append(session, BOT, "rollout.advance", f"rollout:{row.id}",
                         after={"step": row.step, "weight": spec.steps[row.step].weight,
                                "verdict": verdict.to_dict()})
        elif decision.action == "promote":
            self._promote(session, bot, row, spec, decision.reason, verdict)
        elif decision.action == "complete":
            self._finish(session, bot, row, "completed", decision.reason, verdict)
            if outcome is not None and spec.strategy == "ab_test":
                audit.append(session, BOT, "rollout.ab_result", f"rollout:{row.id}",
                             after=outcome.to_dict())
        row.updated_at = now
        return {"rollout": row.id, "action": decision.action, "reason": decision.reason}

    def _with_quality(self, session: Session, row: RolloutRow, spec: RolloutSpec,
                      verdict: Verdict) -> tuple[Verdict, ABTestResult]:
        """Where clients report outcomes (labels, conversions) through the feedback route,
        a canary that is significantly worse on them fails like one with errors. Without
        enough outcomes the check is left out (outcomes may never come; waiting for them
        would stall every rollout)."""
        outcome = self._outcome_test(session, row, spec)
        if outcome.n_control < spec.min_n or outcome.n_treatment < spec.min_n:
            return verdict, outcome
        worse = outcome.decision == CONTROL_BETTER
        check = Check("quality", outcome.difference, 0.0, "fail" if worse else "pass",
                      f"reported outcome {outcome.mean_treatment:.4g} vs "
                      f"{outcome.mean_control:.4g} (p={outcome.p_value:.3g}, "
                      f"n={outcome.n_treatment}/{outcome.n_control})"
                      + (": significantly worse" if worse else ""))
        status = "fail" if worse else verdict.status
        return Verdict(status, (*verdict.checks, check)), outcome

    def _outcome_test(self, session: Session, row: RolloutRow, spec: RolloutSpec
                      ) -> ABTestResult:
        """The sequential test on the outcomes reported since the rollout began, continued
        from the previous look (what keeps its p-value valid under repeated looks)."""
        control = feedback_repo.values(session, row.endpoint, row.baseline, row.created_at)
        treatment = feedback_repo.values(session, row.endpoint, row.target, row.created_at)
        previous = next((_ab_from_dict(h["ab_test"]) for h in reversed(row.history or [])
                         if h.get("ab_test")), None)
        if previous is not None and (previous.n_control > len(control) or
                                     previous.n_treatment > len(treatment)):
            previous = None  # outcomes were removed meanwhile: start the sequence over
        return ab_test(np.asarray(control, dtype=np.float64),
                       np.asarray(treatment, dtype=np.float64), spec.alpha,
                       min_n=spec.min_n, higher_is_better=spec.higher_is_better,
                       previous=previous)

    def _promote(self, session: Session, who: Principal, row: RolloutRow, spec: RolloutSpec,
                 reason: str, verdict: Verdict | None = None) -> None:
        if spec.strategy == "shadow":
            raise ValidationFailed("a shadow rollout only reports; start a canary or "
                                   "blue_green rollout to promote", field="id")
        endpoint = endpoint_repo.row(session, row.endpoint)
        ref = ModelRef.parse(endpoint.model_ref)
        policy = projects_repo.get(session, row.project).policy
        if ref.alias == "production" and policy.needs_approval("rollout:promote"):
            requester = Principal(row.created_by, frozenset({"operator"}),
                                  subject=_subject_of(row.created_by))
            approval = self.approvals.request(
                session, requester, policy, row.project, "rollout:promote",
                f"rollout:{row.id}", {"rollout": row.id})
            row.status, row.approval_id, row.reason = "awaiting_approval", approval.id, \
                f"waiting for approval {approval.id}: {reason}"
            return
        self._apply_promotion(session, who, row, reason, verdict)

    def _apply_promotion(self, session: Session, who: Principal, row: RolloutRow,
                         reason: str, verdict: Verdict | None = None) -> None:
        endpoint = endpoint_repo.row(session, row.endpoint)
        ref = ModelRef.parse(endpoint.model_ref)
        target = ModelRef.parse(row.target)
        if ref.alias is not None:
            # The alias is the truth of what "production" is: move it (model-card rules
            # apply, and it is audited), keep the endpoint following it.
            self.registry._apply_alias(session, who, {"model": ref.model, "alias": ref.alias,
                                                      "version": target.version})
            self.endpoints.apply_traffic(session, who, row.endpoint, None)
        else:
            self.endpoints.apply_traffic(session, who, row.endpoint, None, model=target)
        self._finish(session, who, row, "promoted", reason, verdict, traffic_done=True)

    def _approved_promotion(self, session: Session, who: Principal,
                            change: dict[str, Any]) -> dict[str, Any]:
        row = self._row(session, int(change["rollout"]), lock=True)
        if row.status != "awaiting_approval":
            raise Conflict(f"rollout {row.id} is {row.status}", field="id")
        self._apply_promotion(session, who, row, f"approved (approval {row.approval_id})")
        return {"rollout": row.id, "status": row.status, "target": row.target}

    def _finish(self, session: Session, who: Principal, row: RolloutRow, status: str,
                reason: str, verdict: Verdict | None = None,
                traffic_done: bool = False) -> None:
        if not traffic_done:  # back to the baseline alone
            self.endpoints.apply_traffic(session, who, row.endpoint, None)
        row.status, row.reason, row.updated_at = status, reason, utcnow()
        audit.append(session, who.name, f"rollout.{status.replace('_', '')}",
                     f"rollout:{row.id}",
                     after={"status": status, "reason": reason, "target": row.target,
                            "baseline": row.baseline,
                            "verdict": verdict.to_dict() if verdict else None})

    # -- helpers --------------------------------------------------------------------------------
    def _row(self, session: Session, rollout_id: int, *, lock: bool = False) -> RolloutRow:
        query = select(RolloutRow).where(RolloutRow.id == rollout_id)
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            raise RolloutNotFound(f"rollout {rollout_id} does not exist", field="id")
        return row

    @staticmethod
    def _active(session: Session, endpoint: str) -> RolloutRow | None:
        return session.scalars(select(RolloutRow).where(
            RolloutRow.endpoint == endpoint, RolloutRow.status.in_(ACTIVE))).first()


def _ab_decision(spec: RolloutSpec, outcome: ABTestResult, elapsed: float,
                 safety: Decision) -> Decision:
    """An A/B test ends when the outcome test decides or time is up (never on a safety
    verdict that merely passed); safety failures keep counting as in a canary."""
    effect = (f"{outcome.difference:+.4g} ({outcome.mean_treatment:.4g} vs "
              f"{outcome.mean_control:.4g}; {1 - outcome.alpha:.0%} interval "
              f"[{outcome.interval[0]:.3g}, {outcome.interval[1]:.3g}], p={outcome.p_value:.3g}, "
              f"n={outcome.n_treatment}/{outcome.n_control})")
    if outcome.decision == TREATMENT_BETTER:
        action = "promote" if spec.promote_winner else "complete"
        return Decision(action, f"{spec.target} is better: {effect}", safety.failures)
    if outcome.decision != NO_DIFFERENCE_YET:
        return Decision("complete", f"the baseline is better: {effect}", safety.failures)
    if elapsed >= spec.steps[0].duration_s:
        return Decision("complete", f"no significant difference in time: {effect}",
                        safety.failures)
    return Decision("wait", f"no decision yet: {effect}", safety.failures)


def _ab_from_dict(data: dict[str, Any]) -> ABTestResult:
    def bounds(pair: list[float | None]) -> tuple[float, float]:
        low, high = pair
        return (-math.inf if low is None else low, math.inf if high is None else high)

    values = dict(data)
    values["interval"] = bounds(values["interval"])
    values["fixed_interval"] = bounds(values["fixed_interval"])
    return ABTestResult(**values)


def _subject_of(name: str) -> str:
    """The person behind a principal's name (``key:OWNER:PREFIX``, ``jwt:SUB``,
    ``local:USER``), as four-eyes approvals compare them."""
    kind, _, rest = name.partition(":")
    if kind == "key":
        return rest.rpartition(":")[0].strip().lower() or rest
    return rest.lower() if kind in ("jwt", "local") and rest else name


def _pin(session: Session, reference: str) -> str:
    """``name@alias`` or ``name`` -> ``name:VERSION`` as it resolves now."""
    model, row = registry_repo.resolve(session, ModelRef.parse(reference))
    if row.status != "active":
        raise ValidationFailed(f"{model.name}:{row.version} is archived", field="rollout.target")
    return f"{model.name}:{row.version}"


def _due(row: RolloutRow, now: datetime) -> bool:
    """Whether the rollout's analysis interval has passed since its last verdict."""
    if not row.history:
        return True
    last = datetime.fromisoformat(row.history[-1]["at"])
    return (now - last).total_seconds() >= float(row.spec.get("interval_s", 10)) * 0.95


def _policy(row: RolloutRow, spec: RolloutSpec, step: int) -> TrafficPolicy:
    """The traffic split of a step: the new version listed first, so raising its weight
    moves only new keys to it."""
    if spec.strategy == "shadow":
        return TrafficPolicy((Target(row.baseline, 100.0),), spec.sticky_header,
                             (Shadow(row.target, spec.shadow_sample),))
    weight = spec.steps[step].weight
    return TrafficPolicy((Target(row.target, weight), Target(row.baseline, 100.0 - weight)),
                         spec.sticky_header)


def _summary(row: RolloutRow, history: bool = False) -> dict[str, Any]:
    spec = RolloutSpec.from_dict(row.spec)
    weight = spec.steps[min(row.step, len(spec.steps) - 1)].weight
    out: dict[str, Any] = {
        "id": row.id, "endpoint": row.endpoint, "project": row.project,
        "strategy": row.strategy, "baseline": row.baseline, "target": row.target,
        "status": row.status, "step": row.step + 1, "steps": len(spec.steps),
        "weight": weight if row.status in ACTIVE else (100.0 if row.status == "promoted"
                                                       else 0.0),
        "step_started_at": row.step_started_at.isoformat(), "failures": row.failures,
        "reason": row.reason, "approval_id": row.approval_id, "created_by": row.created_by,
        "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
        "spec": spec.to_dict(), "final": row.status in FINAL}
    if history:
        out["history"] = list(row.history or [])
    elif row.history:
        out["last"] = row.history[-1]
    return out
