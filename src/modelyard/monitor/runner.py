"""One monitor run for one endpoint: drift of the closed windows, quality where labels
arrived, alert rules evaluated, events delivered, retraining triggered.

Runs as a ``monitor`` job (the server enqueues one per endpoint every ``evaluate_every_s``);
everything it computes is a pure function of the store (``domain.drift``, ``domain.quality``,
``domain.alerts``), so a run repeated after a crash writes the same results again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import numpy as np
from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from modelyard.domain.alerts import AlertInputs, AlertRule, AlertState, evaluate
from modelyard.domain.drift import DriftReport, detect_drift
from modelyard.domain.errors import ModelyardError
from modelyard.domain.monitors import MonitorSpec, closed_windows, labelled_pairs, window_columns
from modelyard.domain.profiles import Profile
from modelyard.domain.quality import QualityReport, classification_quality, regression_quality
from modelyard.governance import audit
from modelyard.governance.outbound import guarded_client
from modelyard.store import inference_log as log_repo
from modelyard.store import monitoring as repo
from modelyard.store.db import Database
from modelyard.store.tables import EndpointRow, InferenceRecordRow, LabelRow

log = logging.getLogger("modelyard.alerts")

ACTOR = "modelyard:monitor"
PER_VERSION = frozenset({"drift_score", "feature_drift", "quality", "quality_drop"})
RETRAIN_ON = {"drift_score": "drift", "feature_drift": "drift", "quality": "quality_drop",
              "quality_drop": "quality_drop"}
class Offload(Protocol):
    """``JobContext.offload``: run ``fn(*args)`` where the worker sends heavy work."""

    def __call__(self, key: str, fn: Callable[..., Any], *args: Any) -> Any: ...


class RetrainHook(Protocol):
    """Asks for a retraining cycle of ``model`` (jobs/retraining.py ``trigger``); ``version``:
    the version the alert is about (no cycle when it is no longer the champion)."""

    def __call__(self, model: str, trigger: str, reason: str, *,
                 version: str | None = None) -> Any: ...



class MonitorRunner:
    def __init__(self, db: Database, *, retrain: RetrainHook | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 outbound_allow: str = "", webhook_attempts: int = 3,
                 webhook_backoff_s: float = 0.5) -> None:
        self.db = db
        # Private hosts webhooks may reach (the outbound_allow setting); public need none.
        self.outbound_allow = [a.strip() for a in outbound_allow.split(",") if a.strip()]
        self.retrain = retrain
        self.clock = clock
        self.webhook_attempts = webhook_attempts
        self.webhook_backoff_s = webhook_backoff_s

    def run(self, endpoint: str, progress: Callable[[str], None] = lambda _: None,
            offload: Offload | None = None) -> dict[str, Any]:
        """``offload``: where each window's drift test runs (a job's ``ctx.offload``: a Ray
        task on the ray backend, memoized per window and version); None: here."""
        now = self.clock()
        with self.db.transaction() as session:
            row = repo.monitor_row(session, endpoint)
            spec = MonitorSpec.from_dict(row.spec)
            last_end, labels_seen = row.last_window_end, row.labels_seen_at
            model = session.scalars(select(EndpointRow.model_name)
                                    .where(EndpointRow.name == endpoint)).first() or ""
        summary: dict[str, Any] = {"endpoint": endpoint, "drift_windows": 0,
                                   "quality_windows": 0, "events": []}
        windows = closed_windows(spec.window_s, last_end, now)
        for start, end in windows:
            summary["drift_windows"] += self._drift(endpoint, model, spec, start, end, offload)
            progress(f"drift of {start:%Y-%m-%d %H:%M}-{end:%H:%M}")
        seen_until = now
        if spec.quality is not None:
            relabelled, pending = self._relabelled(endpoint, spec, labels_seen, now)
            for start, end in relabelled:
                summary["quality_windows"] += self._quality(endpoint, spec, start, end)
                progress(f"quality of {start:%Y-%m-%d %H:%M}-{end:%H:%M}")
            if pending is not None:  # labels of windows still open: look at them again
                seen_until = min(now, pending)
        events = self._alerts(endpoint, spec, now)
        with self.db.transaction() as session:
            row = repo.monitor_row(session, endpoint, lock=True)
            if windows and (row.last_window_end is None or row.last_window_end < windows[-1][1]):
                row.last_window_end = windows[-1][1]
            row.last_evaluated_at = now
            if spec.quality is not None:
                row.labels_seen_at = seen_until
        for event in events:
            self._deliver(event, spec, model)
        summary["events"] = [{"kind": e["kind"], "rule": e["payload"]["rule"]}
                             for e in events]
        return summary

    # -- drift -----------------------------------------------------------------------------
    def _drift(self, endpoint: str, model: str, spec: MonitorSpec, start: datetime,
               end: datetime, offload: Offload | None = None) -> int:
        with self.db.transaction() as session:
            versions = [v["version"] for v in log_repo.summary(session, endpoint, start, end)]
        for version in versions:
            with self.db.transaction() as session:
                records = log_repo.window(session, endpoint, start, end, version=version,
                                          limit=spec.max_records)
                # Only versions of the endpoint's model have profiles: a graph's generation
                # ("name:3") must not pick up a model's that happens to share its name.
                stored = repo.profile_of(session, version) \
                    if model and version.startswith(f"{model}:") else None
            if stored is None:
                status, score, n = "no_reference", None, len(records)
                report: dict[str, Any] = {
                    "reason": f"{version} has no reference profile: register it with "
                    "training data (data=...) or attach one (modelyard models profile)"}
            else:
                output = spec.quality.output if spec.quality is not None else None
                columns, predictions = window_columns(records, output)
                args = (stored, columns, predictions, spec.drift)
                outcome = offload(f"drift {version} {start.isoformat()}", drift_outcome,
                                  *args) if offload is not None else drift_outcome(*args)
                status, score, n, report = (outcome["status"], outcome["score"],
                                            outcome["rows"], outcome["report"])
            with self.db.transaction() as session:
                repo.put_result(session, endpoint, version, "drift", start, end, status, score,
                                n, report)
        return len(versions)

    # -- quality ---------------------------------------------------------------------------
    def _relabelled(self, endpoint: str, spec: MonitorSpec, seen: datetime | None,
                    now: datetime) -> tuple[list[tuple[datetime, datetime]], datetime | None]:
        """Closed windows whose answers got labels since the last run (within lookback),
        and when the earliest label of a window still open arrived (None: no such label):
        the next run must look from there again, or that window would never be scored."""
        assert spec.quality is not None
        oldest = now - timedelta(seconds=spec.quality.lookback_s)
        with self.db.transaction() as session:
            query = (select(InferenceRecordRow.at, LabelRow.at)
                     .join(LabelRow, and_(LabelRow.endpoint == InferenceRecordRow.endpoint,
                                          LabelRow.request_id == InferenceRecordRow.request_id))
                     .where(InferenceRecordRow.endpoint == endpoint,
                            InferenceRecordRow.at >= oldest))
            if seen is not None:
                query = query.where(LabelRow.at >= seen - timedelta(seconds=1))
            pairs = [(row[0], row[1]) for row in session.execute(query.distinct().limit(100_000))]
        step = spec.window_s
        closed_ends: set[float] = set()
        pending: datetime | None = None
        for answered_at, labelled_at in pairs:
            end = int(answered_at.timestamp() // step + 1) * step
            if end <= now.timestamp():
                closed_ends.add(end)
            else:
                labelled_at = labelled_at if labelled_at.tzinfo else \
                    labelled_at.replace(tzinfo=UTC)
                pending = labelled_at if pending is None else min(pending, labelled_at)
        return [(datetime.fromtimestamp(e - step, UTC), datetime.fromtimestamp(e, UTC))
                for e in sorted(closed_ends)[-200:]], pending

    def _quality(self, endpoint: str, spec: MonitorSpec, start: datetime,
                 end: datetime) -> int:
        q = spec.quality
        assert q is not None
        with self.db.transaction() as session:
            records = log_repo.labelled(session, endpoint, start, end)
        by_version: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_version.setdefault(record["version"], []).append(record)
        for version, labelled in by_version.items():
            truth, predicted, scores = labelled_pairs(labelled, q.output, q.scores_output)
            if not truth:
                continue
            try:
                report = quality_report(q.task, truth, predicted, scores, q.main_metric,
                                        q.min_samples)
            except ModelyardError as exc:  # labels that cannot be compared: say so, go on
                with self.db.transaction() as session:
                    repo.put_result(session, endpoint, version, "quality", start, end,
                                    "invalid", None, len(truth), {"reason": exc.detail})
                continue
            with self.db.transaction() as session:
                repo.put_result(session, endpoint, version, "quality", start, end,
                                report.status, report.value, report.n, report.to_dict())
        return len(by_version)

    # -- alerts ----------------------------------------------------------------------------
    def _alerts(self, endpoint: str, spec: MonitorSpec, now: datetime) -> list[dict[str, Any]]:
        recent = now - timedelta(seconds=2 * spec.window_s)
        with self.db.transaction() as session:
            versions = [v["version"] for v in log_repo.summary(session, endpoint, recent, now)]
            inputs_of = {v: self._version_inputs(session, endpoint, v, spec, now)
                         for v in versions}
            endpoint_inputs = self._endpoint_inputs(session, endpoint, spec, now)
        events: list[dict[str, Any]] = []
        stamp = now.timestamp()
        for rule in spec.rules:
            targets = [(replace(rule, labels={**rule.labels, "endpoint": endpoint,
                                              "version": v}), inputs_of[v])
                       for v in versions] if rule.kind in PER_VERSION else \
                [(replace(rule, labels={**rule.labels, "endpoint": endpoint}),
                  endpoint_inputs)]
            for labelled_rule, inputs in targets:
                event = self._evaluate(endpoint, labelled_rule, inputs, stamp)
                if event is not None:
                    events.append(event)
        return events

    def _version_inputs(self, session: Session, endpoint: str, version: str,
                        spec: MonitorSpec, now: datetime) -> AlertInputs:
        since = now - timedelta(seconds=2 * spec.window_s)
        drift = repo.latest_result(session, endpoint, version, "drift", since)
        quality = None
        if spec.quality is not None:
            quality = repo.latest_result(session, endpoint, version, "quality",
                                         now - timedelta(seconds=spec.quality.lookback_s))
        return AlertInputs.of(
            drift=DriftReport.from_dict(drift) if drift and "schema_version" in drift
            else None,
            quality=QualityReport.from_dict(quality) if quality and "schema_version" in quality
            else None)

    @staticmethod
    def _endpoint_inputs(session: Session, endpoint: str, spec: MonitorSpec,
                         now: datetime) -> AlertInputs:
        """p99 latency and error ratios over each burn-rate window, from the (sampled)
        inference log: a uniform sample estimates both without bias."""
        windows = sorted({w for rule in spec.rules for bw in rule.windows
                          for w in (bw.long_s, bw.short_s)})
        ratios: dict[float, float] = {}
        for w in windows:
            total, errors = session.execute(
                select(func.count(), func.sum(case((InferenceRecordRow.status >= 500, 1),
                                                   else_=0)))
                .where(InferenceRecordRow.endpoint == endpoint,
                       InferenceRecordRow.at >= now - timedelta(seconds=w),
                       InferenceRecordRow.at < now)).one()
            if total:
                ratios[float(w)] = float(errors or 0) / total
        latencies = list(session.scalars(
            select(InferenceRecordRow.latency_ms)
            .where(InferenceRecordRow.endpoint == endpoint,
                   InferenceRecordRow.at >= now - timedelta(seconds=spec.latency_window_s),
                   InferenceRecordRow.status < 500)
            .order_by(InferenceRecordRow.id.desc()).limit(50_000)))
        p99 = float(np.quantile(latencies, 0.99)) / 1000 if latencies else None
        return AlertInputs(latency_p99_s=p99, error_ratios=ratios)

    def _evaluate(self, endpoint: str, rule: AlertRule, inputs: AlertInputs,
                  now: float) -> dict[str, Any] | None:
        with self.db.transaction() as session:
            stored = repo.alert_state(session, rule.fingerprint)
            previous = AlertState.from_dict({k: v for k, v in stored.items() if k != "labels"}
                                            ) if stored else None
            transition = evaluate(rule, inputs, previous, now)
            state = {**transition.state.to_dict(), "labels": dict(rule.labels)}
            since = transition.state.since
            row = repo.put_alert(session, rule.fingerprint, endpoint, rule.name, rule.severity,
                                 state, transition.state.status, transition.detail,
                                 transition.value,
                                 datetime.fromtimestamp(since, UTC) if since else None)
            if not transition.notify:
                return None
            kind = "firing" if transition.event == "fired" else "resolved"
            payload = {**transition.to_dict(), "endpoint": endpoint, "rule_kind": rule.kind}
            event_id = repo.add_event(session, row.id, kind, payload)
            audit.append(session, ACTOR, f"alert.{kind}", f"endpoint:{endpoint}",
                         after={"rule": rule.name, "severity": rule.severity,
                                "labels": dict(rule.labels), "value": transition.value,
                                "threshold": transition.threshold,
                                "detail": transition.detail})
            return {"id": event_id, "kind": kind, "payload": payload}

    # -- sinks -----------------------------------------------------------------------------
    def _deliver(self, event: dict[str, Any], spec: MonitorSpec, model: str) -> None:
        payload = event["payload"]
        level = logging.WARNING if event["kind"] == "firing" else logging.INFO
        log.log(level, "alert %s %s on %s (%s): %s", payload["rule"], event["kind"],
                payload["endpoint"], payload["severity"], payload["detail"])
        outcomes = {"log": "ok"}
        if spec.webhook:
            outcomes["webhook"] = self._webhook(spec.webhook, event)
        if event["kind"] == "firing" and self.retrain is not None and model \
                and payload["rule_kind"] in RETRAIN_ON:
            try:
                cycle = self.retrain(model, RETRAIN_ON[payload["rule_kind"]],
                                     f"alert {payload['rule']}: {payload['detail']}",
                                     version=(payload.get("labels") or {}).get("version"))
                outcomes["retrain"] = "started" if cycle else "not started"
            except Exception as exc:  # a retraining refusal must not lose the alert
                outcomes["retrain"] = f"error: {exc}"
                log.warning("retraining of %s not started: %s", model, exc)
        with self.db.transaction() as session:
            for sink, outcome in outcomes.items():
                repo.mark_delivered(session, event["id"], sink, outcome)

    def _webhook(self, url: str, event: dict[str, Any]) -> str:
        """POST the event (guarded: no private addresses unless allow-listed), with retries
        and backoff on connection errors and 5xx; the outcome is recorded."""
        body = {"id": event["id"], "kind": event["kind"], **event["payload"]}
        outcome = "error: not attempted"
        for attempt in range(self.webhook_attempts):
            try:
                with guarded_client(self.outbound_allow, timeout=10.0) as client:
                    response = client.post(url, json=body)
                if response.status_code < 500:
                    return "ok" if response.status_code < 400 else \
                        f"error: HTTP {response.status_code}"
                outcome = f"error: HTTP {response.status_code}"
            except (httpx.HTTPError, ModelyardError) as exc:
                outcome = f"error: {exc}"
                if isinstance(exc, ModelyardError):  # a refused URL will not get better
                    break
            if attempt + 1 < self.webhook_attempts:
                time.sleep(self.webhook_backoff_s * 2 ** attempt)
        log.warning("alert webhook failed: %s", outcome)
        return outcome


def drift_outcome(stored: dict[str, Any], columns: Any, predictions: Any,
                  spec: Any) -> dict[str, Any]:
    """One window's drift test against a stored profile, as JSON (it may run as an offloaded
    step of the monitor job, in another process)."""
    drift = detect_drift(Profile.from_dict(stored), columns, predictions, spec)
    status = "insufficient_data" if drift.drifted is None else \
        "drift" if drift.drifted else "ok"
    return {"status": status, "score": drift.score, "rows": drift.rows,
            "report": drift.to_dict()}


def quality_report(task: str, truth: list[Any], predicted: list[Any],
                   scores: list[Any] | None, metric: str, min_samples: int) -> QualityReport:
    if task == "classification":
        return classification_quality(truth, predicted, scores, main_metric=metric,
                                      min_samples=min_samples)
    return regression_quality(np.asarray(truth, dtype=np.float64),
                              np.asarray(predicted, dtype=np.float64), main_metric=metric,
                              min_samples=min_samples)
