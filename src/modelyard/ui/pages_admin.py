"""The audit log (searchable, paged, and verified on request) and API keys (admins)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import ROLES
from modelyard.ui import queries
from modelyard.ui.web import can, form, notice, page_args, query, redirect, render, session_of


def add_routes(router: APIRouter, dashboard: Any) -> None:
    yard = dashboard.yard

    def audit_page(request: Request, verdict: audit.Verdict | None = None) -> HTMLResponse:
        ui_session = session_of(request)
        guard(yard.db, ui_session.principal, "audit:read", "audit")
        filters = {name: query(request, name) for name in queries.AUDIT_FILTERS}
        text = query(request, "q")
        limit, offset = page_args(request)
        with yard.db.transaction() as session:
            page = queries.audit(session, filters, text=text, limit=limit, offset=offset)
        search = urlencode({k: v for k, v in {**filters, "q": text}.items() if v})
        return render(request, "audit.html", ui_session, page=page, filters=filters,
                      text=text, search=search, verdict=verdict)

    @router.get("/audit", response_class=HTMLResponse)
    def audit_log(request: Request) -> HTMLResponse:
        return audit_page(request)

    @router.post("/audit/verify", response_class=HTMLResponse)
    async def audit_verify(request: Request) -> HTMLResponse:
        """Walks the whole chain (as ``GET /api/v1/audit/verify``) and shows the verdict."""
        ui_session = session_of(request)
        await form(request, ui_session)
        guard(yard.db, ui_session.principal, "audit:read", "audit")
        with yard.db.transaction() as session:
            verdict = audit.verify(session)
        return audit_page(request, verdict)

    @router.get("/keys", response_class=HTMLResponse)
    def keys_page(request: Request) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        everything = yard.access.list(who)
        shown = query(request, "show", "active")
        if shown == "active":
            everything = [k for k in everything if k.revoked_at is None]
        limit, offset = page_args(request)
        page = queries.Page([], len(everything), limit, offset)
        return render(request, "keys.html", ui_session,
                      keys=everything[offset:offset + limit], page=page, shown=shown,
                      roles=ROLES, may_write=can(who, "keys:write"), notice=notice(request))

    @router.post("/keys", response_class=HTMLResponse)
    async def create_key(request: Request) -> HTMLResponse:
        """The secret is shown on this answer only (never stored, never in a redirect)."""
        ui_session = session_of(request)
        fields = await form(request, ui_session)
        roles = [r.strip() for r in fields.get("roles", "").replace(",", " ").split()
                 if r.strip()]
        created = yard.access.create(ui_session.principal, fields.get("owner", ""), roles)
        everything = [k for k in yard.access.list(ui_session.principal)
                      if k.revoked_at is None]
        limit, offset = page_args(request)
        page = queries.Page([], len(everything), limit, offset)
        response = render(request, "keys.html", ui_session, keys=everything[:limit],
                          page=page, shown="active", roles=ROLES, may_write=True,
                          created=created)
        response.headers["cache-control"] = "no-store"
        return response

    @router.post("/keys/{prefix}/revoke")
    async def revoke_key(request: Request, prefix: str) -> Response:
        ui_session = session_of(request)
        await form(request, ui_session)
        yard.access.revoke(ui_session.principal, prefix)
        return redirect("/keys", f"key {prefix} revoked: its sessions and calls end now",
                        ui_session)
