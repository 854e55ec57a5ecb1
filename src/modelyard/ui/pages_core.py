"""The overview (every endpoint's health and traffic) and an endpoint's page (its graph or
traffic split drawn, live charts per version, the inference log summarised in SQL)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from modelyard.domain.errors import ModelyardError
from modelyard.domain.registry import Endpoint
from modelyard.ui import diagram, live, queries
from modelyard.ui.web import can, notice, page_args, render, session_of


def _status(dashboard: Any, endpoint: Endpoint) -> dict[str, Any]:
    state = dashboard.backend.state(endpoint.name)
    if state is None:
        return {"status": "pending", "serving": None, "error": None}
    out = state.to_dict()
    return {"status": out["status"], "serving": out["serving"], "error": out["error"]}


def _split(endpoint: Endpoint) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    traffic = endpoint.traffic or {}
    split = [(str(s.get("model")), float(s.get("weight", 0)))
             for s in traffic.get("split", [])] or [(endpoint.model_ref, 100.0)]
    shadows = [(str(s.get("model")), float(s.get("sample", 1.0)))
               for s in traffic.get("shadows", [])]
    return split, shadows


def add_routes(router: APIRouter, dashboard: Any) -> None:
    yard = dashboard.yard

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        everything = yard.endpoints.list(who)
        limit, offset = page_args(request)
        shown = everything[offset:offset + limit]
        with yard.db.transaction() as session:
            active = queries.active_rollouts_by_endpoint(session, who)
        alerts = yard.monitoring.alerts(who, status="firing") \
            if can(who, "monitors:read", anywhere=True) else []
        firing: dict[str, int] = {}
        for alert in alerts:
            firing[alert["endpoint"]] = firing.get(alert["endpoint"], 0) + 1
        rows = [{"endpoint": e, "state": _status(dashboard, e),
                 "traffic": live.summary(dashboard.observations, e.name),
                 "rollout": active.get(e.name), "alerts": firing.get(e.name, 0)}
                for e in shown]
        page = queries.Page([], len(everything), limit, offset)
        return render(request, "overview.html", ui_session, rows=rows, page=page,
                      alerts=alerts[:20], rollouts=list(active.values()),
                      notice=notice(request))

    @router.get("/overview.json")
    def overview_live(request: Request) -> JSONResponse:
        """The overview's traffic columns, polled every 5 s: the last minute per endpoint
        the session may read, with its health."""
        who = session_of(request).principal
        names = [e.name for e in yard.endpoints.list(who)]
        doc = {name: {**live.summary(dashboard.observations, name),
                      "status": (state.status if (state := dashboard.backend.state(name))
                                 else "pending")} for name in names}
        return JSONResponse(doc, headers={"cache-control": "no-store"})

    @router.get("/endpoints/{name}", response_class=HTMLResponse)
    def endpoint_page(request: Request, name: str) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        endpoint = yard.endpoints.get(who, name)
        if endpoint.graph is not None:
            try:
                picture = diagram.graph_diagram(endpoint.graph)
            except ModelyardError:
                picture = None
        else:
            split, shadows = _split(endpoint)
            picture = diagram.split_diagram(name, split, shadows)
        log_summary = None
        if can(who, "inference:read", endpoint.project):
            log_summary = yard.monitoring.summary(who, name, since="24h")["versions"]
        with yard.db.transaction() as session:
            rollout = queries.active_rollouts_by_endpoint(session, who).get(name)
        return render(request, "endpoint.html", ui_session, endpoint=endpoint,
                      state=_status(dashboard, endpoint), diagram=picture,
                      split=_split(endpoint)[0] if endpoint.graph is None else [],
                      log_summary=log_summary, rollout=rollout,
                      traffic=live.summary(dashboard.observations, name))

    @router.get("/endpoints/{name}/live.json")
    def endpoint_live(request: Request, name: str) -> JSONResponse:
        """What the charts poll every 2 s (the endpoint readable by the session first)."""
        ui_session = session_of(request)
        yard.endpoints.get(ui_session.principal, name)
        return JSONResponse(live.series(dashboard.observations, name),
                            headers={"cache-control": "no-store"})
