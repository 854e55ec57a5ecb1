"""The web dashboard, served by the control plane at ``/ui``: server-rendered pages (Jinja2),
a little vanilla JavaScript for live charts (uPlot, vendored), no Node at run time.

Every page reads through the same services the REST API calls, with the session's principal,
so ``governance.policy.authorize`` decides every read and every action; a button is shown
only when it would allow the action, and the POST behind it is decided again.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelyard.backends.base import Backend
from modelyard.rollout.observations import Observations
from modelyard.ui.sessions import SessionStore
from modelyard.ui.web import HERE, PREFIX, UiRoute, http_error_page, validation_error_page
from modelyard.yard import Yard


@dataclass(frozen=True)
class Dashboard:
    yard: Yard
    backend: Backend
    observations: Observations


def mount_dashboard(app: FastAPI, yard: Yard, backend: Backend,
                    observations: Observations) -> None:
    """Mount the dashboard at ``/ui`` (its own ASGI app: pages are not API routes and stay
    out of the OpenAPI document) and lead ``/`` there. The server's middleware (browser
    guard, body limit, request ids) applies to it as to everything else."""
    from modelyard.ui import (
        login,
        pages_admin,
        pages_core,
        pages_ops,
        pages_registry,
        pages_rollouts,
    )

    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, exception_handlers={
        StarletteHTTPException: http_error_page, RequestValidationError: validation_error_page})
    ui.state.ui_sessions = SessionStore(yard.db, yard.settings.ui_session_ttl_s)
    ui.state.ui_oidc = login.oidc_client(yard.settings)
    dashboard = Dashboard(yard, backend, observations)
    router = APIRouter(route_class=UiRoute)
    for module in (login, pages_core, pages_rollouts, pages_registry, pages_ops,
                   pages_admin):
        module.add_routes(router, dashboard)
    ui.include_router(router)
    ui.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount(PREFIX, ui, name="ui")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)


__all__ = ["Dashboard", "mount_dashboard"]
