"""The ``retrain`` job: one retraining cycle, from its data to the gate's verdict and rollout.

Steps (each a durable memo of the job, so a worker killed anywhere resumes without doing a
finished step again): pin the champion; load the data window (ending when the cycle was
created, so every attempt sees the same rows) and split the holdout by a fixed seed; train by
calling the project's entrypoint and register the result (``register``: exactly one version
per cycle; the version also carries the cycle's tag, which a retry looks for first); point the
``challenger`` alias at it; score champion and challenger on the same holdout; apply the gate;
record the rejection, ask for approval, or start the rollout.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from sqlalchemy.orm import Session

from modelyard.control.approvals import ApprovalService
from modelyard.control.registry import Registration, RegistryService
from modelyard.domain.errors import ModelyardError, ValidationFailed
from modelyard.domain.jobs import JobCancelled, LeaseLost
from modelyard.domain.names import ModelRef, check_name
from modelyard.domain.registry import Lineage, ModelVersion
from modelyard.domain.retraining import (
    TRIGGER_ALIASES,
    TRIGGERS,
    RetrainPolicy,
    Scores,
    evaluate_gate,
    score,
)
from modelyard.governance import audit
from modelyard.governance.policy import Principal
from modelyard.jobs import retrain_data as data
from modelyard.jobs.handlers import load_function
from modelyard.rollout.controller import RolloutService
from modelyard.store import endpoints as endpoint_repo
from modelyard.store import inference_log as log_repo
from modelyard.store import projects as projects_repo
from modelyard.store import registry as registry_repo
from modelyard.store import retraining as repo
from modelyard.store.db import Database
from modelyard.store.tables import RolloutRow, utcnow

if TYPE_CHECKING:
    from modelyard.jobs.worker import JobContext

log = logging.getLogger("modelyard.jobs")

KIND = "retrain"
BOT = "modelyard:retraining"  # the actor of automated decisions (gate, outcome)
CYCLE_TAG, JOB_TAG, TRIGGER_TAG = "retrain_cycle", "retrain_job", "retrain_trigger"


def check_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """``{"model": NAME, "cycle": ID}`` (a trigger), or ``{"model": NAME, "trigger":
    "schedule"}`` (a schedule slot, which opens its cycle when it runs)."""
    from modelyard.domain.errors import reject_unknown

    payload = reject_unknown(payload, {"model", "cycle", "trigger", "reason"}, "retrain field",
                             "payload")
    model = check_name(payload.get("model"), "model name", "payload.model")  # type: ignore[arg-type]
    out: dict[str, Any] = {"model": model}
    cycle = payload.get("cycle")
    if cycle is not None:
        if isinstance(cycle, bool) or not isinstance(cycle, int) or cycle < 1:
            raise ValidationFailed("cycle must be a cycle id", field="payload.cycle")
        out["cycle"] = cycle
    trigger = payload.get("trigger", "schedule" if cycle is None else "manual")
    trigger = TRIGGER_ALIASES.get(trigger, trigger)
    if trigger not in TRIGGERS:
        raise ValidationFailed(f"trigger must be one of {', '.join(TRIGGERS)}",
                               field="payload.trigger")
    out["trigger"] = trigger
    reason = payload.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise ValidationFailed("reason is text of at most 2000 characters",
                               field="payload.reason")
    out["reason"] = reason
    return out


class TrainingJob(Protocol):
    """The part of the job a training entrypoint sees."""

    @property
    def attempt(self) -> int: ...

    def log(self, message: str) -> None: ...

    def check_cancelled(self) -> None: ...


@dataclass
class RemoteTrainingJob:
    """The job as seen from a Ray task: log lines are kept and logged with the cycle once
    the task returns; cancellation arrives by Ray cancelling the task (its process ends),
    so there is nothing to check in between."""

    attempt: int
    lines: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        self.lines.append(str(message))
        log.info("%s", message)

    def check_cancelled(self) -> None:
        """The worker cancels the task itself when the job is cancelled."""


def train_remotely(function: Callable[[TrainingContext], Any], training: TrainingContext
                   ) -> tuple[Any, list[str]]:
    """In a Ray task: run the entrypoint; its result (the model) and its log lines go back
    to the worker, which registers the model (``register`` is idempotent by the cycle tag,
    so a retry after a lost worker trains again but registers once)."""
    job = training.job
    assert isinstance(job, RemoteTrainingJob)
    return function(training), job.lines


@dataclass
class TrainingContext:
    """What the project's entrypoint gets: ``x`` (rows x features, float64) and ``y`` of the
    training part (the holdout is kept back), the feature names, the policy's ``params``, the
    champion it competes with, and the job (``log``, ``check_cancelled``)."""

    x: np.ndarray
    y: np.ndarray
    features: tuple[str, ...]
    params: Mapping[str, Any]
    model: str
    cycle: int
    champion: ModelVersion | None
    job: TrainingJob = field(repr=False)

    def __repr__(self) -> str:
        return f"TrainingContext(model={self.model!r}, cycle={self.cycle}, " \
               f"rows={len(self.y)}, features={list(self.features)})"

    @property
    def attempt(self) -> int:
        return self.job.attempt

    def log(self, message: str) -> None:
        self.job.log(message)

    def check_cancelled(self) -> None:
        self.job.check_cancelled()


def unpack(result: Any) -> tuple[Any, dict[str, Any], dict[str, float], dict[str, Any]]:
    """An entrypoint returns a model, or ``{"model": ..., "params": {...}, "metrics": {...},
    "flavor": ..., "code_revision": ..., "trusted": ...}``, or ``(model, params, metrics)``."""
    if isinstance(result, Mapping) and "model" in result:
        extra = {k: result[k] for k in ("flavor", "code_revision", "trusted") if k in result}
        return (result["model"], dict(result.get("params") or {}),
                dict(result.get("metrics") or {}), extra)
    if isinstance(result, tuple) and 1 <= len(result) <= 3:
        model, *rest = result
        params = dict(rest[0] or {}) if rest else {}
        metrics = dict(rest[1] or {}) if len(rest) > 1 else {}
        return model, params, metrics, {}
    if result is None:
        raise ValidationFailed("the entrypoint returned nothing; return the trained model",
                               field="entrypoint")
    return result, {}, {}, {}


def code_revision(function: Any) -> str | None:
    """``MODELYARD_CODE_REVISION`` when the deployment sets it (a git commit), else the
    sha256 of the entrypoint's module source: a changed training script shows."""
    if os.environ.get("MODELYARD_CODE_REVISION"):
        return os.environ["MODELYARD_CODE_REVISION"][:200]
    try:
        source = inspect.getsource(inspect.getmodule(function))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None
    return f"{function.__module__}@sha256:{hashlib.sha256(source.encode()).hexdigest()[:16]}"


class CycleRunner:
    """The handler of the ``retrain`` job kind."""

    def __init__(self, db: Database, registry: RegistryService, rollouts: RolloutService,
                 approvals: ApprovalService, outbound_allow: Sequence[str] = ()) -> None:
        self.db = db
        self.registry = registry
        self.rollouts = rollouts
        self.approvals = approvals
        self.outbound_allow = tuple(outbound_allow)
        # Attaches a version's reference profile (MonitoringService.set_profile; the yard
        # wires it): a challenger is profiled on its training rows, so once it serves, drift
        # is tested against what it learned from.
        self.profile: Callable[..., Any] | None = None

    def __repr__(self) -> str:
        return f"CycleRunner({self.db!r})"

    # -- the handler ----------------------------------------------------------------------
    def run(self, ctx: JobContext, payload: dict[str, Any]) -> Any:
        settled = check_payload(payload)
        if "cycle" in settled:
            cycle_id = int(settled["cycle"])
        else:  # a schedule slot: open the cycle with the job, or skip while one runs
            opened = ctx.transaction_step("cycle", lambda s: self._open(s, ctx, settled))
            if opened.get("skipped"):
                ctx.log(opened["skipped"])
                return opened
            cycle_id = int(opened["cycle"])
        try:
            return self._run(ctx, cycle_id)
        except (LeaseLost, JobCancelled):
            if ctx.cancelled:
                self._fail(cycle_id, "the job was cancelled", final=True)
            raise
        except Exception as exc:
            retry = not (isinstance(exc, ModelyardError) and exc.status < 500)
            final = not retry or ctx.attempt >= ctx.job.max_attempts
            detail = exc.detail if isinstance(exc, ModelyardError) else str(exc)
            self._fail(cycle_id, f"{type(exc).__name__}: {detail}", final=final)
            raise

    def _open(self, session: Session, ctx: JobContext, settled: dict[str, Any]
              ) -> dict[str, Any]:
        model = settled["model"]
        policy = repo.find_policy(session, model, lock=True)
        if policy is None or not policy.enabled:
            return {"skipped": f"model {model!r} has no enabled retraining policy"}
        active = repo.active_cycle(session, model)
        if active is not None:
            return {"skipped": f"cycle {active.id} of {model} is {active.state}; this "
                               f"{settled['trigger']} trigger waits for the next one"}
        row = repo.add_cycle(session, model=model, project=policy.project,
                             trigger=settled["trigger"], created_by=ctx.job.created_by,
                             reason=settled["reason"] or f"{settled['trigger']} (job {ctx.id})")
        row.job_id = ctx.id
        audit.append(session, ctx.job.created_by, "retrain.trigger", f"retrain_cycle:{row.id}",
                     after={"model": model, "trigger": row.trigger, "reason": row.reason,
                            "job": ctx.id})
        return {"cycle": row.id}

    def _run(self, ctx: JobContext, cycle_id: int) -> dict[str, Any]:
        who = self._principal(ctx)
        with self.db.transaction() as session:
            cycle = repo.cycle_row(session, cycle_id, lock=True)
            policy = RetrainPolicy.from_dict(repo.policy_row(session, cycle.model).policy)
            if cycle.state not in ("queued", "training", "evaluating"):
                return {"cycle": cycle_id, "state": cycle.state}  # decided by an earlier attempt
            if cycle.state == "queued":
                cycle.state, cycle.updated_at = "training", utcnow()
            until = cycle.created_at
        ctx.log(f"retraining cycle {cycle_id} of {policy.model}: {policy.entrypoint}")
        champion_ref = ctx.step("champion", lambda: self._champion(policy))
        champion = self.registry.get_version(who, champion_ref) if champion_ref else None
        table, summary = self._data(ctx, policy, until)
        train, holdout = data.split(table, policy.holdout) if policy.holdout.url is None \
            else (table, data.dataset(policy.holdout.url, policy.data, self.outbound_allow,
                                      "holdout.url"))
        summary.update(train_rows=len(train), holdout_rows=len(holdout))
        ctx.log(f"data: {len(train)} training rows, {len(holdout)} holdout rows "
                f"({summary['fingerprint']})")
        registered = ctx.step("register", lambda: self._train_and_register(
            ctx, who, policy, cycle_id, train, champion, summary))
        challenger_ref = f"{policy.model}:{registered['version']}"
        if champion is not None:
            ctx.step("card", lambda: self._inherit_card(who, champion, policy.model,
                                                        int(registered["version"])))
        if self.profile is not None:
            ctx.step("profile", lambda: self._profile(who, challenger_ref, train))
        ctx.step("challenger", lambda: bool(self.registry.set_alias(
            who, policy.model, "challenger", int(registered["version"]))))
        with self.db.transaction() as session:
            cycle = repo.cycle_row(session, cycle_id, lock=True)
            cycle.champion, cycle.challenger, cycle.data = champion_ref, challenger_ref, summary
            cycle.state, cycle.updated_at = "evaluating", utcnow()
        gate = ctx.step("gate", lambda: self._gate(who, policy, champion, challenger_ref,
                                                   holdout))
        ctx.log(f"gate: {'pass' if gate['result']['passed'] else 'fail'}: "
                f"{gate['result']['reason']}")
        decided = ctx.transaction_step("decide", lambda s: self._decide(
            s, who, policy, cycle_id, gate))
        if decided["next"] == "rollout":
            rollout = ctx.step("rollout", lambda: self._start_rollout(
                who, policy, challenger_ref))
            decided = ctx.transaction_step("rolling_out", lambda s: self._rolling_out(
                s, cycle_id, rollout))
        return {"cycle": cycle_id, "challenger": challenger_ref, "champion": champion_ref,
                "passed": gate["result"]["passed"], "reason": gate["result"]["reason"],
                **decided}

    @staticmethod
    def _principal(ctx: JobContext) -> Principal:
        if ctx.yard is None or ctx.yard.principal is None:
            raise ValidationFailed("a retrain job needs the yard it acts in", field="job")
        return ctx.yard.principal

    # -- the steps ----------------------------------------------------------------------------
    def _champion(self, policy: RetrainPolicy) -> str | None:
        """``MODEL@champion``, else the version the endpoint serves when it is of this model,
        pinned for the whole cycle."""
        with self.db.transaction() as session:
            model = registry_repo.model_row(session, policy.model)
            aliases = registry_repo.describe_model(session, model).aliases
            if "champion" in aliases:
                return f"{policy.model}:{aliases['champion']}"
            endpoint = endpoint_repo.row(session, policy.endpoint)
            ref = ModelRef.parse(endpoint.model_ref) if endpoint.model_ref else None
            if ref is None or ref.model != policy.model:
                return None
            _, row = registry_repo.resolve(session, ref)
            return f"{policy.model}:{row.version}"

    def _data(self, ctx: JobContext, policy: RetrainPolicy, until: Any
              ) -> tuple[data.Table, dict[str, Any]]:
        window = policy.data
        parts: list[data.Table] = []
        sources: list[dict[str, Any]] = []
        if window.dataset_url is not None:
            parts.append(data.dataset(window.dataset_url, window, self.outbound_allow))
            sources.append({"dataset_url": window.dataset_url, "rows": len(parts[-1])})
        if window.inference_log is not None:
            since = until - timedelta(seconds=window.inference_log.since_s)
            with self.db.transaction() as session:
                records = log_repo.labelled(session, policy.endpoint, since, until)
            names = window.features or (parts[0].features if parts else ())
            logged, skipped = data.from_log(records, names)
            ctx.log(f"inference log of {policy.endpoint}: {len(records)} labelled answers "
                    f"since {since.isoformat()}, {len(logged)} rows ({skipped} skipped)")
            if len(logged) < window.inference_log.min_labels:
                raise data.DataUnavailable(
                    f"the inference log of {policy.endpoint} holds {len(logged)} labelled rows "
                    f"from {since.isoformat()} to {until.isoformat()}; the policy needs "
                    f"{window.inference_log.min_labels}", field="data.inference_log.min_labels")
            parts.append(logged)
            sources.append({"inference_log": policy.endpoint, "since": since.isoformat(),
                            "until": until.isoformat(), "rows": len(logged),
                            "skipped": skipped})
        table = parts[0] if len(parts) == 1 else data.combine(parts[0], parts[1])
        return table, {"rows": len(table), "features": list(table.features),
                       "fingerprint": table.fingerprint, "sources": sources}

    def _train_and_register(self, ctx: JobContext, who: Principal, policy: RetrainPolicy,
                            cycle_id: int, train: data.Table, champion: ModelVersion | None,
                            summary: dict[str, Any]) -> dict[str, Any]:
        # A retry after a register that committed but whose memo did not: find it by its tag.
        for found in self.registry.search(who, {CYCLE_TAG: str(cycle_id)}):
            if found.model == policy.model:
                ctx.log(f"{found.ref} was registered for this cycle already")
                return {"version": found.version}
        function = load_function(policy.entrypoint)
        ctx.log(f"training: {policy.entrypoint} on {len(train)} rows")
        training = TrainingContext(train.x, train.y, train.features, dict(policy.params),
                                   policy.model, cycle_id, champion, ctx)
        if ctx.offloader is None:
            result = function(training)
        else:  # the ray backend: a Ray task with the policy's resources
            training.job = RemoteTrainingJob(ctx.attempt)
            result, lines = ctx.elsewhere(train_remotely, function, training,
                                          resources=policy.resources)
            for line in lines:
                ctx.log(f"training: {line}")
        ctx.check_cancelled()
        model, params, metrics, extra = unpack(result)
        head = train.take(np.arange(min(5, len(train))))
        signature = champion.signature if champion is not None else None
        sample = data.model_inputs(signature, head) if signature is not None else \
            {"input": head.x.astype(np.float32)}
        lineage = Lineage(
            data_fingerprint=summary["fingerprint"],
            params={**dict(policy.params), **params},
            metrics={str(k): float(v) for k, v in metrics.items()},
            code_revision=extra.get("code_revision") or code_revision(function),
            parent=champion.ref if champion is not None else None,
            tags={CYCLE_TAG: str(cycle_id), JOB_TAG: str(ctx.id),
                  TRIGGER_TAG: str(ctx.job.payload.get("trigger", "manual")),
                  "entrypoint": policy.entrypoint})
        version = self.registry.register_object(
            who, policy.model, model,
            Registration(flavor=extra.get("flavor"), signature=signature, sample=sample,
                         lineage=lineage, trusted=bool(extra.get("trusted", False)),
                         description=f"challenger of retraining cycle {cycle_id} (job "
                                     f"{ctx.id}), trained on {len(train)} rows"))
        ctx.log(f"registered {version.ref}")
        return {"version": version.version}

    def _profile(self, who: Principal, ref: str, train: data.Table) -> bool:
        """The challenger's reference profile, from the rows it was trained on."""
        assert self.profile is not None
        signature = self.registry.get_version(who, ref).signature
        self.profile(who, ref, columns=data.model_inputs(signature, train))
        return True

    def _inherit_card(self, who: Principal, champion: ModelVersion, model: str,
                      version: int) -> bool:
        """The challenger serves the champion's purpose: it takes over what people wrote on
        the champion's card (use, limits, owners, risk; training data and metrics come from
        its own lineage), so it can take the aliases a card is required for. Audited as any
        card change; owners edit it as usual afterwards."""
        card = self.registry.card(who, champion.ref).to_dict()
        people = {k: v for k, v in card.items() if k not in ("training_data", "evaluation")
                  and v}
        if people:
            self.registry.update_card(who, model, version, people)
        return bool(people)

    def _scores(self, who: Principal, ref: str, holdout: data.Table,
                policy: RetrainPolicy) -> Scores:
        version = self.registry.get_version(who, ref)
        predictor = self.registry.load_predictor(version)
        inputs = version.signature.validate(data.model_inputs(version.signature, holdout))
        y_pred, proba = data.predictions(predictor.predict(inputs), policy.gate.task)
        return score(policy.gate, holdout.y, y_pred, proba, holdout.columns())

    def _gate(self, who: Principal, policy: RetrainPolicy, champion: ModelVersion | None,
              challenger: str, holdout: data.Table) -> dict[str, Any]:
        theirs = self._scores(who, champion.ref, holdout, policy) if champion else None
        mine = self._scores(who, challenger, holdout, policy)
        result = evaluate_gate(theirs, mine, policy)
        return {"result": result.to_dict(), "champion": theirs.to_dict() if theirs else None,
                "challenger": mine.to_dict()}

    def _decide(self, session: Session, who: Principal, policy: RetrainPolicy, cycle_id: int,
                gate: dict[str, Any]) -> dict[str, Any]:
        cycle = repo.cycle_row(session, cycle_id, lock=True)
        cycle.gate, cycle.updated_at = gate, utcnow()
        result = gate["result"]
        audit.append(session, BOT, "retrain.gate", f"retrain_cycle:{cycle_id}",
                     outcome="ok" if result["passed"] else "rejected",
                     after={"model": cycle.model, "champion": cycle.champion,
                            "challenger": cycle.challenger, **result})
        if not result["passed"]:
            cycle.state, cycle.finished_at = "rejected", utcnow()
            return {"next": "done", "state": "rejected"}
        if not policy.require_approval:
            return {"next": "rollout", "state": cycle.state}
        from dataclasses import replace

        project = projects_repo.get(session, cycle.project).policy
        approval = self.approvals.request(
            session, who, replace(project, approvals_required=max(1, project.approvals_required)),
            cycle.project, "retrain:rollout", f"retrain_cycle:{cycle_id}",
            {"cycle": cycle_id, "challenger": cycle.challenger, "endpoint": policy.endpoint})
        cycle.state, cycle.approval_id = "awaiting_approval", approval.id
        return {"next": "done", "state": "awaiting_approval", "approval_id": approval.id}

    def _start_rollout(self, who: Principal, policy: RetrainPolicy, target: str) -> int:
        """Start the rollout, or find the one an earlier attempt started."""
        with self.db.transaction() as session:
            from sqlalchemy import select

            from modelyard.domain.rollouts import ACTIVE

            existing = session.scalars(select(RolloutRow.id).where(
                RolloutRow.endpoint == policy.endpoint, RolloutRow.target == target,
                RolloutRow.status.in_(ACTIVE))).first()
        if existing is not None:
            return int(existing)
        return int(self.rollouts.start(who, policy.endpoint, policy.rollout_spec(target))["id"])

    @staticmethod
    def _rolling_out(session: Session, cycle_id: int, rollout_id: int) -> dict[str, Any]:
        cycle = repo.cycle_row(session, cycle_id, lock=True)
        cycle.state, cycle.rollout_id, cycle.updated_at = "rolling_out", rollout_id, utcnow()
        audit.append(session, BOT, "retrain.rollout", f"retrain_cycle:{cycle_id}",
                     after={"rollout": rollout_id, "challenger": cycle.challenger,
                            "champion": cycle.champion})
        return {"state": "rolling_out", "rollout_id": rollout_id}

    def _fail(self, cycle_id: int, error: str, *, final: bool) -> None:
        """Record the error on the cycle; when no attempt is left, the cycle failed."""
        try:
            with self.db.transaction() as session:
                cycle = repo.cycle_row(session, cycle_id, lock=True)
                if cycle.state not in ("queued", "training", "evaluating"):
                    return
                cycle.error, cycle.updated_at = error[:10_000], utcnow()
                if final:
                    cycle.state, cycle.finished_at = "failed", utcnow()
                    audit.append(session, BOT, "retrain.fail", f"retrain_cycle:{cycle_id}",
                                 outcome="failed", after={"error": error[:2000]})
        except Exception:  # the job's own failure is recorded regardless
            log.warning("retraining cycle %s: could not record its error", cycle_id,
                        exc_info=True)
