"""Monitoring (drift per feature over time, quality from feedback, alerts) and jobs (status,
logs, retraining cycles)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse

from modelyard.domain.errors import InvalidRequest, ModelyardError
from modelyard.domain.jobs import STATES
from modelyard.domain.names import BIG_ID_MAX
from modelyard.ui import diagram
from modelyard.ui.web import can, form, notice, page_args, query, redirect, render, session_of

WINDOWS = 200  # monitor windows drawn per chart (the newest)
DATA_QUALITY_TESTS = frozenset({"missing_rate", "out_of_range", "new_categories"})


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def drift_views(windows: list[dict[str, Any]]) -> tuple[dict[str, list[Any]],
                                                         list[dict[str, Any]]]:
    """Per feature (and version) the test statistic per window; the newest window's tests."""
    series: dict[str, list[Any]] = {}
    latest: list[dict[str, Any]] = []
    for window in windows:
        report = window.get("report") or {}
        results = [*report.get("features", []), *report.get("predictions", [])]
        for result in results:
            if result.get("test") in DATA_QUALITY_TESTS:
                continue  # missing values and ranges are listed, not charted as drift
            name = f"{result['feature']} {result['test']} ({window['version']})"
            series.setdefault(name, []).append((_t(window["window_end"]),
                                                result.get("statistic")))
        if results:
            latest = [{**r, "version": window["version"],
                       "window_end": window["window_end"]} for r in results]
    return series, latest


def add_routes(router: APIRouter, dashboard: Any) -> None:
    yard = dashboard.yard

    @router.get("/monitoring", response_class=HTMLResponse)
    def monitoring(request: Request) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        endpoints = [e for e in yard.endpoints.list(who) if can(who, "monitors:read",
                                                                 e.project)]
        monitors = {}
        for endpoint in endpoints:
            try:
                monitors[endpoint.name] = yard.monitoring.monitor(who, endpoint.name)
            except ModelyardError:  # no monitor set (404)
                monitors[endpoint.name] = None
        alerts = yard.monitoring.alerts(who) if endpoints else []
        return render(request, "monitoring.html", ui_session, endpoints=endpoints,
                      monitors=monitors, alerts=[a for a in alerts
                                                 if a["status"] != "inactive"])

    @router.get("/monitoring/{name}", response_class=HTMLResponse)
    def monitor(request: Request, name: str) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        endpoint = yard.endpoints.get(who, name)
        try:
            spec = yard.monitoring.monitor(who, name)
        except ModelyardError:
            spec = None
        drift = yard.monitoring.results(who, name, "drift", limit=WINDOWS)["windows"]
        quality = yard.monitoring.results(who, name, "quality", limit=WINDOWS)["windows"]
        series, latest = drift_views(drift)
        drift_chart = diagram.line_chart(dict(list(series.items())[:12]),
                                         f"drift statistic per feature of {name}",
                                         "statistic")
        by_version: dict[str, list[Any]] = {}
        for window in quality:
            value = (window.get("report") or {}).get("value", window.get("score"))
            by_version.setdefault(window["version"], []).append(
                (_t(window["window_end"]), value))
        quality_chart = diagram.line_chart(by_version, f"live quality of {name}",
                                           "metric")
        alerts = yard.monitoring.alerts(who, endpoint=name)
        events = yard.monitoring.alert_events(who, endpoint=name, limit=50)
        return render(request, "monitor.html", ui_session, endpoint=endpoint, spec=spec,
                      drift=list(reversed(drift[-20:])), latest=latest,
                      drift_chart=drift_chart, quality=list(reversed(quality[-20:])),
                      quality_chart=quality_chart, alerts=alerts,
                      events=list(reversed(events)),
                      may_run=can(who, "monitors:write", endpoint.project),
                      notice=notice(request))

    @router.post("/monitoring/{name}/run")
    async def run_monitor(request: Request, name: str) -> Response:
        """Run the monitor now, as ``POST /api/v1/endpoints/{name}/monitor/run`` does."""
        ui_session = session_of(request)
        await form(request, ui_session)
        yard.monitoring.run_monitor(ui_session.principal, name)
        return redirect(f"/monitoring/{quote(name, safe='')}", "the monitor ran", ui_session)

    @router.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        state = query(request, "state")
        state = state if state in STATES else ""
        limit, _ = page_args(request)
        before_text = query(request, "before")
        try:
            before = int(before_text) if before_text else None
        except ValueError:
            before = 0
        if before is not None and not 1 <= before <= BIG_ID_MAX:
            raise InvalidRequest("before must be a job id", field="before")
        found = yard.jobs.list(who, state=state or None, before=before, limit=limit + 1)
        more = len(found) > limit
        found = found[:limit]
        cycles = yard.retraining.cycles(who, limit=20) \
            if can(who, "retraining:read", anywhere=True) else []
        return render(request, "jobs.html", ui_session, jobs=found, state=state,
                      states=STATES, next_before=found[-1].id if more and found else None,
                      limit=limit, cycles=cycles)

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job(request: Request, job_id: Annotated[int, Path(ge=1, le=BIG_ID_MAX)]
            ) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        found = yard.jobs.get(who, job_id)
        lines = yard.jobs.logs(who, job_id, limit=1000)
        return render(request, "job.html", ui_session, job=found, lines=lines)
