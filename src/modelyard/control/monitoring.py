"""Monitoring as the control plane offers it: the inference log (records and per-version
summaries), monitors of endpoints (their drift and quality time series, alerts and alert
events), reference profiles of versions, and the ``monitor`` job kind that computes them.
Every call is decided in the endpoint's (or model's) project like everything else."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.domain.errors import (
    EndpointNotFound,
    ModelyardError,
    ProfileNotFound,
    ValidationFailed,
)
from modelyard.domain.monitors import MonitorSpec, sample_rows
from modelyard.domain.names import ModelRef
from modelyard.domain.profiles import Profile, build_profile
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.outbound import check_url
from modelyard.governance.policy import Principal
from modelyard.monitor.runner import MonitorRunner, RetrainHook
from modelyard.store import inference_log as repo
from modelyard.store import monitoring as monitoring_repo
from modelyard.store import registry as registry_repo
from modelyard.store.db import Database
from modelyard.store.tables import EndpointRow

if TYPE_CHECKING:
    from modelyard.control.jobs import JobService
    from modelyard.jobs.worker import JobContext

PROFILE_ROWS = 20_000  # rows of training data a profile is computed from (a seeded sample)
MONITOR_KIND = "monitor"
# Scheduled monitor runs act as this principal (the jobs they queue need one).
SYSTEM_NAME = "modelyard:monitor"
SYSTEM: dict[str, Any] = {"name": SYSTEM_NAME, "roles": ["operator"], "subject": SYSTEM_NAME}

MAX_PAGE = 1000
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | None, field: str, now: datetime | None = None
               ) -> datetime | None:
    """ISO 8601 (``2026-11-24T10:00:00Z``; UTC when no zone is given) or a time ago
    (``15m``, ``2h``, ``7d``)."""
    if text is None or text == "":
        return None
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        seconds = float(relative[1]) * _UNITS[relative[2]]
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:  # before year 1: a typo, not a time
            raise ValidationFailed(f"{field} {text.strip()!r} reaches back before year 1",
                                   field=field) from None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{field} must be an ISO 8601 time (2026-11-24T10:00:00Z) or "
                               "a time ago such as 15m, 2h or 7d", field=field) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class MonitoringService:
    def __init__(self, db: Database, outbound_allow: str = "") -> None:
        self.db = db
        self.outbound_allow = outbound_allow
        # Set by the yard once retraining exists: alerts on drift or quality ask for a cycle.
        self.retrain: RetrainHook | None = None
        # Predictions of a version on rows (profiles of predictions); set by the yard.
        self.predict: Callable[[str, Mapping[str, np.ndarray]], Mapping[str, Any]] | None = \
            None

    def _model_guard(self, principal: Principal | None, action: str, model: str
                     ) -> Principal:
        with self.db.transaction() as session:
            project = registry_repo.project_of(session, model)
        return guard(self.db, principal, action, f"model:{model}", project,
                     anywhere=project is None)

    def _guard(self, principal: Principal | None, action: str, endpoint: str) -> Principal:
        """Decided in the endpoint's project; for an endpoint that does not exist, the
        caller must hold the right somewhere before learning that (no probing of names)."""
        with self.db.transaction() as session:
            project = session.scalars(select(EndpointRow.project)
                                      .where(EndpointRow.name == endpoint)).first()
        who = guard(self.db, principal, action, f"endpoint:{endpoint}", project,
                    anywhere=project is None)
        if project is None:
            raise EndpointNotFound(f"endpoint {endpoint!r} does not exist", field="endpoint")
        return who

    def records(self, principal: Principal | None, endpoint: str, *,
                since: str | None = None, until: str | None = None,
                version: str | None = None, status: str | None = None,
                before_id: int | None = None, limit: int = 100,
                payloads: bool = True) -> dict[str, Any]:
        """A page of logged requests, newest first; ``next`` continues it."""
        self._guard(principal, "inference:read", endpoint)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed(f"limit must be from 1 to {MAX_PAGE}", field="limit")
        if status not in (None, "ok", "error"):
            raise ValidationFailed("status must be ok or error", field="status")
        start, end = parse_time(since, "since"), parse_time(until, "until")
        with self.db.transaction() as session:
            items = repo.page(session, endpoint, since=start, until=end, version=version,
                              status=status, before_id=before_id, limit=limit,
                              payloads=payloads)
        following = items[-1]["id"] if len(items) == limit else None
        return {"endpoint": endpoint, "records": items, "next": following}

    def summary(self, principal: Principal | None, endpoint: str, *,
                since: str | None = None, until: str | None = None) -> dict[str, Any]:
        """Per version: how many records, errors, mean latency, first and last."""
        self._guard(principal, "inference:read", endpoint)
        start, end = parse_time(since, "since"), parse_time(until, "until")
        with self.db.transaction() as session:
            versions = repo.summary(session, endpoint, start, end)
        return {"endpoint": endpoint, "versions": versions}

    # -- monitors ------------------------------------------------------------------------
    def set_monitor(self, principal: Principal | None, endpoint: str,
                    spec: Mapping[str, Any] | None, enabled: bool = True) -> dict[str, Any]:
        """Watch an endpoint: windows, drift thresholds, quality task, alert rules, SLO,
        webhook (see ``domain.monitors.MonitorSpec``); replaces the current monitor."""
        who = self._guard(principal, "monitors:write", endpoint)
        settled = MonitorSpec.from_dict(dict(spec or {})).to_dict()
        if settled.get("webhook"):
            # Refused now, not at the first alert (ADR 0006); sending checks it again.
            allow = [a.strip() for a in self.outbound_allow.split(",") if a.strip()]
            check_url(settled["webhook"], allow, field="webhook", unresolved_ok=True)
        with self.db.transaction() as session:
            before, after = monitoring_repo.put_monitor(session, endpoint, settled, enabled)
            audit.append(session, who.name, "monitor.set", f"endpoint:{endpoint}",
                         before=before, after=after)
        return after

    def monitor(self, principal: Principal | None, endpoint: str) -> dict[str, Any]:
        self._guard(principal, "monitors:read", endpoint)
        with self.db.transaction() as session:
            return monitoring_repo.describe(monitoring_repo.monitor_row(session, endpoint))

    def delete_monitor(self, principal: Principal | None, endpoint: str) -> None:
        who = self._guard(principal, "monitors:write", endpoint)
        with self.db.transaction() as session:
            before = monitoring_repo.delete_monitor(session, endpoint)
            audit.append(session, who.name, "monitor.delete", f"endpoint:{endpoint}",
                         before=before)

    def run_monitor(self, principal: Principal | None, endpoint: str,
                    progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
        """One monitor run now, here (the server also runs them as jobs on a schedule)."""
        self._guard(principal, "monitors:write", endpoint)
        return self.runner().run(endpoint, progress)

    def schedule_due(self, jobs: JobService, now: datetime | None = None) -> int:
        """Queue a ``monitor`` job for every enabled monitor whose evaluation is due; one per
        endpoint and slot however many servers ask (a de-duplication key). The count."""
        now = now or datetime.now(UTC)
        with self.db.transaction() as session:
            projects = _projects(session)
            due = []
            for row in monitoring_repo.enabled_monitors(session):
                every = float(row.spec.get("evaluate_every_s", 60.0))
                last = row.last_evaluated_at
                if row.endpoint in projects and (
                        last is None or (now - last).total_seconds() >= every * 0.99):
                    due.append((row.endpoint, every))
        queued = 0
        for endpoint, every in due:
            key = f"monitor:{endpoint}:{monitor_slot(every, now)}"
            try:
                with self.db.transaction() as session:
                    if jobs.queue.by_dedupe_key(session, key) is not None:
                        continue
                    jobs.queue.enqueue(session, MONITOR_KIND, {"endpoint": endpoint},
                                       principal=SYSTEM, created_by=SYSTEM_NAME,
                                       project=projects[endpoint], max_attempts=2,
                                       backoff_s=5.0, dedupe_key=key)
                queued += 1
            except IntegrityError:  # another server queued this slot first
                continue
        if queued and jobs.on_enqueue is not None:
            jobs.on_enqueue()
        return queued

    def runner(self) -> MonitorRunner:
        return MonitorRunner(self.db, retrain=self.retrain, outbound_allow=self.outbound_allow)

    def run_job(self, ctx: JobContext, payload: dict[str, Any]) -> Any:
        """The ``monitor`` job kind: ``{"endpoint": name}``."""
        endpoint = check_monitor_payload(payload)["endpoint"]
        # On the ray backend each window's drift test is a Ray task (ADR 0019); elsewhere it
        # runs here, without a step record per window.
        offload = ctx.offload if ctx.offloader is not None else None
        return self.runner().run(endpoint, lambda line: ctx.log(line), offload)

    def results(self, principal: Principal | None, endpoint: str, kind: str, *,
                since: str | None = None, until: str | None = None,
                version: str | None = None, limit: int = 500,
                reports: bool = True) -> dict[str, Any]:
        """The drift (or quality) time series of an endpoint, oldest first."""
        self._guard(principal, "monitors:read", endpoint)
        if kind not in ("drift", "quality"):
            raise ValidationFailed("kind must be drift or quality", field="kind")
        if not 1 <= limit <= 5000:
            raise ValidationFailed("limit must be from 1 to 5000", field="limit")
        start, end = parse_time(since, "since"), parse_time(until, "until")
        with self.db.transaction() as session:
            series = monitoring_repo.results(session, endpoint, kind, since=start, until=end,
                                             version=version, limit=limit, reports=reports)
        return {"endpoint": endpoint, "kind": kind, "windows": series}

    def alerts(self, principal: Principal | None, *, endpoint: str | None = None,
               status: str | None = None) -> list[dict[str, Any]]:
        who = self._readable(principal, endpoint)
        with self.db.transaction() as session:
            found = monitoring_repo.alerts(session, endpoint=endpoint, status=status)
            projects = _projects(session)
        return [a for a in found if who.may("monitors:read", projects.get(a["endpoint"]))]

    def alert_events(self, principal: Principal | None, *, after_id: int = 0,
                     endpoint: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Alert events after ``after_id``, oldest first: poll with the last id seen."""
        who = self._readable(principal, endpoint)
        if not 1 <= limit <= 1000:
            raise ValidationFailed("limit must be from 1 to 1000", field="limit")
        with self.db.transaction() as session:
            found = monitoring_repo.events(session, after_id=after_id, endpoint=endpoint,
                                           limit=limit)
            projects = _projects(session)
        return [e for e in found if who.may("monitors:read", projects.get(e["endpoint"]))]

    def _readable(self, principal: Principal | None, endpoint: str | None) -> Principal:
        if endpoint is not None:
            return self._guard(principal, "monitors:read", endpoint)
        return guard(self.db, principal, "monitors:read", "alerts", anywhere=True)

    # -- reference profiles ----------------------------------------------------------------
    def set_profile(self, principal: Principal | None, ref: str, *,
                    columns: Mapping[str, Any] | None = None, predictions: Any = None,
                    profile: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Attach the reference profile of ``model:version``: computed here from training
        data ``columns`` (input name -> rows; the model's predictions on them are computed
        too unless given), or a ``profile`` computed elsewhere."""
        parsed = ModelRef.parse(ref)
        who = self._model_guard(principal, "models:write", parsed.model)
        if (columns is None) == (profile is None):
            raise ValidationFailed("give training data (columns) or a profile",
                                   field="columns")
        with self.db.transaction() as session:
            model, row = registry_repo.resolve(session, parsed)
            version_ref, version_id = f"{model.name}:{row.version}", row.id
            signature = registry_repo.to_version(model, row).signature
        if columns is not None:
            try:  # the inputs as the model takes them, so windows explode the same way
                columns = signature.validate(dict(columns))
            except ModelyardError as exc:
                raise ValidationFailed(f"the training data does not fit {version_ref}'s "
                                       f"inputs: {exc.detail}",
                                       field=f"columns.{exc.field}" if exc.field
                                       else "columns") from None
        if profile is not None:
            built = Profile.from_dict(dict(profile))
        else:
            assert columns is not None
            built = self.profile_of_data(version_ref, columns, predictions)
        document = built.to_dict()
        with self.db.transaction() as session:
            monitoring_repo.put_profile(session, version_id, document, who.name)
            audit.append(session, who.name, "profile.set", version_ref,
                         after={"rows": built.rows, "features": sorted(built.features),
                                "predictions": built.predictions is not None})
        return {"version": version_ref, "profile": document}

    def profile_of_data(self, ref: str, columns: Mapping[str, Any],
                        predictions: Any = None) -> Profile:
        """A profile from training data: a seeded sample of at most ``PROFILE_ROWS`` rows,
        and the version's own predictions on them when none are given."""
        arrays = {str(k): np.asarray(v) for k, v in columns.items()}
        rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        if len(rows) != 1 or min(rows) < 1:
            raise ValidationFailed("every training data column needs the same number of "
                                   "rows (at least one)", field="columns")
        if predictions is not None:
            arrays["\0predictions"] = np.asarray(predictions)
        arrays = sample_rows(arrays, PROFILE_ROWS)
        predictions = arrays.pop("\0predictions", None)
        if predictions is None and self.predict is not None:
            predictions = self._predictions(ref, arrays)
        return build_profile(arrays, predictions)

    def _predictions(self, ref: str, arrays: Mapping[str, np.ndarray]) -> Any:
        assert self.predict is not None
        chunks: list[Any] = []
        size = next(iter(arrays.values())).shape[0]
        step = 1024
        for start in range(0, size, step):
            try:
                outputs = self.predict(ref, {k: v[start:start + step]
                                             for k, v in arrays.items()})
            except ModelyardError as exc:
                raise ValidationFailed(f"{ref} could not predict on the training data: "
                                       f"{exc.detail}", field="columns") from exc
            chunks.append(np.asarray(next(iter(outputs.values()))))
        return np.concatenate(chunks) if chunks else None

    def profile(self, principal: Principal | None, ref: str) -> dict[str, Any]:
        parsed = ModelRef.parse(ref)
        self._model_guard(principal, "models:read", parsed.model)
        with self.db.transaction() as session:
            model, row = registry_repo.resolve(session, parsed)
            version_ref = f"{model.name}:{row.version}"
            stored = monitoring_repo.profile_of(session, version_ref)
        if stored is None:
            raise ProfileNotFound(f"{version_ref} has no reference profile", field="version")
        return {"version": version_ref, "profile": stored}


def _projects(session: Session) -> dict[str, str]:
    """Endpoint name -> project, to filter what a caller may see."""
    return {name: project for name, project in
            session.execute(select(EndpointRow.name, EndpointRow.project))}


def check_monitor_payload(payload: dict[str, Any]) -> dict[str, Any]:
    endpoint = payload.get("endpoint") if isinstance(payload, dict) else None
    if set(payload or {}) - {"endpoint"} or not isinstance(endpoint, str) or not endpoint:
        raise ValidationFailed('a monitor job is {"endpoint": NAME}', field="payload")
    return {"endpoint": endpoint}


def monitor_slot(evaluate_every_s: float, now: datetime) -> str:
    """The de-duplication key of a scheduled monitor run: one per endpoint and slot."""
    return str(math.floor(now.timestamp() / evaluate_every_s))

