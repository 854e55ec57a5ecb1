"""Models: a paged list; a model with its aliases, versions (paged) and lineage graph; a
version with its signature, lineage, metrics and model card."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from modelyard.domain.errors import ModelyardError
from modelyard.governance.audit import guard
from modelyard.store import registry as registry_repo
from modelyard.ui import diagram, queries
from modelyard.ui.web import page_args, query, render, session_of


def add_routes(router: APIRouter, dashboard: Any) -> None:
    yard = dashboard.yard

    @router.get("/models", response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        ui_session = session_of(request)
        who = guard(yard.db, ui_session.principal, "models:read", "models", anywhere=True)
        search = query(request, "q", limit=128)
        limit, offset = page_args(request)
        with yard.db.transaction() as session:
            page = queries.models(session, who, search=search, limit=limit, offset=offset)
        return render(request, "models.html", ui_session, page=page, search=search)

    @router.get("/models/{name}", response_class=HTMLResponse)
    def model(request: Request, name: str) -> HTMLResponse:
        ui_session = session_of(request)
        found = yard.registry.get_model(ui_session.principal, name)  # decides, or 404
        limit, offset = page_args(request)
        with yard.db.transaction() as session:
            row = registry_repo.model_row(session, name)
            page = queries.versions(session, row, limit=limit, offset=offset)
        history = yard.registry.alias_history(ui_session.principal, name)[-20:]
        lineage = diagram.lineage_diagram(name, page.rows)
        return render(request, "model.html", ui_session, model=found, page=page,
                      lineage=lineage, history=list(reversed(history)))

    @router.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
    def version(request: Request, name: str, version: int) -> HTMLResponse:
        ui_session = session_of(request)
        who = ui_session.principal
        found = yard.registry.get_version(who, f"{name}:{version}")
        card = yard.registry.card(who, found.ref)
        parents: list[dict[str, Any]] = []
        parent = found.lineage.parent
        # The ancestry, newest first, at most 10 generations (a chain, not a listing).
        while parent and len(parents) < 10:
            try:
                ancestor = yard.registry.get_version(who, parent)
            except ModelyardError:  # a parent outside the yard, or not readable
                break
            parents.append(ancestor.to_dict())
            parent = ancestor.lineage.parent
        chain = [found.to_dict(), *parents]
        picture = diagram.svg(
            [diagram.Box(f"{v['model']}:{v['version']}", f"{v['model']}:{v['version']}",
                         v["flavor"], "current" if v is chain[0] else "node")
             for v in reversed(chain)],
            [diagram.Edge(f"{p['model']}:{p['version']}", f"{c['model']}:{c['version']}",
                          "parent of", dashed=True) for c, p in itertools.pairwise(chain)],
            f"lineage of {found.ref}")
        return render(request, "version.html", ui_session, version=found.to_dict(),
                      card=card.to_dict(), card_markdown=card.markdown(found.ref,
                                                                       found.lineage),
                      lineage=picture)
