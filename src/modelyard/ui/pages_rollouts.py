"""Rollouts (steps, weights over time, each verdict with its numbers; pause, resume, promote,
abort) and approvals (approve, reject). Actions call the services the REST routes call."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse

from modelyard.domain.errors import ModelyardError, NotFound
from modelyard.domain.names import ID_MAX
from modelyard.governance.audit import guard
from modelyard.ui import diagram, queries
from modelyard.ui.web import can, form, notice, page_args, query, redirect, render, session_of

STEERING = ("pause", "resume", "promote", "abort")
ROLLOUT_STATUSES = ("active", "running", "paused", "awaiting_approval", "promoted",
                    "completed", "rolled_back", "aborted")
APPROVAL_STATUSES = ("pending", "executed", "rejected", "expired", "failed", "cancelled")
# Ids as the REST routes bound them (a larger one failed on PostgreSQL: a 500).
RolloutId = Annotated[int, Path(ge=1, le=ID_MAX)]
ApprovalId = Annotated[int, Path(ge=1, le=ID_MAX)]


def _weights(history: list[dict[str, Any]], created: str, final: dict[str, Any]
             ) -> list[tuple[float, float | None]]:
    points: list[tuple[float, float | None]] = [(datetime.fromisoformat(created).timestamp(),
                                                 0.0)]
    for entry in history:
        points.append((datetime.fromisoformat(entry["at"]).timestamp(),
                       float(entry.get("weight", 0))))
    if final.get("final"):
        points.append((datetime.fromisoformat(final["updated_at"]).timestamp(),
                       float(final.get("weight", 0))))
    return points


def add_routes(router: APIRouter, dashboard: Any) -> None:
    yard = dashboard.yard

    @router.get("/rollouts", response_class=HTMLResponse)
    def rollouts(request: Request) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        # The listing's own check, as RolloutService.list_rollouts makes it.
        guard(yard.db, who, "rollouts:read", "rollouts", anywhere=True)
        status = query(request, "status")
        if status and status not in ROLLOUT_STATUSES:
            status = ""
        endpoint = query(request, "endpoint", limit=128)
        limit, offset = page_args(request)
        with yard.db.transaction() as session:
            page = queries.rollouts(session, who, status=status, endpoint=endpoint,
                                    limit=limit, offset=offset)
        base = "/rollouts?" + urlencode({"status": status, "endpoint": endpoint})
        return render(request, "rollouts.html", ui_session, page=page, status=status,
                      statuses=ROLLOUT_STATUSES, notice=notice(request), base=base)

    @router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
    def rollout(request: Request, rollout_id: RolloutId) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        found = yard.rollouts.get(who, rollout_id)
        history = found.get("history", [])
        chart = diagram.line_chart(
            {f"weight of {found['target']} (%)": _weights(history, found["created_at"],
                                                          found)},
            f"traffic weight of rollout {rollout_id} over time", "%", step=True)
        approval = None
        if found.get("approval_id"):
            try:
                approval = yard.approvals.get(who, found["approval_id"])
            except ModelyardError:
                approval = None
        project = found["project"]
        allowed = {
            "steer": not found["final"] and can(who, "rollouts:write", project),
            "decide": approval is not None and approval.status == "pending"
            and can(who, "approvals:decide", project),
        }
        return render(request, "rollout.html", ui_session, rollout=found,
                      history=list(reversed(history)), chart=chart, approval=approval,
                      allowed=allowed, notice=notice(request))

    @router.post("/rollouts/{rollout_id}/{action}")
    async def steer(request: Request, rollout_id: RolloutId, action: str) -> Response:
        ui_session = session_of(request)
        await form(request, ui_session)
        if action not in STEERING:
            raise NotFound(f"no rollout action {action!r}; use {', '.join(STEERING)}",
                           field="action")
        done = getattr(yard.rollouts, action)(ui_session.principal, rollout_id)
        return redirect(f"/rollouts/{rollout_id}",
                        f"{action}: rollout {rollout_id} is now {done['status']}", ui_session)

    @router.get("/approvals", response_class=HTMLResponse)
    def approvals(request: Request) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        status = query(request, "status", "pending")
        status = status if status in APPROVAL_STATUSES or status == "all" else "pending"
        everything = yard.approvals.list(who, None if status == "all" else status)
        limit, offset = page_args(request)
        page = queries.Page([], len(everything), limit, offset)
        shown = [(a, a.status == "pending" and can(who, "approvals:decide", a.project))
                 for a in everything[offset:offset + limit]]
        return render(request, "approvals.html", ui_session, approvals=shown, page=page,
                      status=status, statuses=APPROVAL_STATUSES, notice=notice(request))

    @router.post("/approvals/{approval_id}/{decision}")
    async def decide(request: Request, approval_id: ApprovalId, decision: str) -> Response:
        ui_session = session_of(request)
        fields = await form(request, ui_session)
        if decision not in ("approve", "reject"):
            raise NotFound(f"no approval decision {decision!r}; use approve or reject",
                           field="decision")
        comment = fields.get("comment", "")
        decided = getattr(yard.approvals, decision)(ui_session.principal, approval_id,
                                                    comment)
        if decided.status == "executed":
            dashboard.backend.trigger()  # as the REST route does: reconcile now
        back = fields.get("back", "")
        target = back if back.startswith("/rollouts/") or back == "/approvals" \
            else "/approvals"
        return redirect(target, f"approval {approval_id}: {decision}d, now {decided.status}",
                        ui_session)
