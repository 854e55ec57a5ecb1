"""What every dashboard page shares: templates, the session behind a request, CSRF-checked
forms, and HTML error pages for the same errors the API answers with problem+json."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from modelyard.control.json_route import refuse_nul_in_url
from modelyard.domain.errors import (
    Forbidden,
    InvalidRequest,
    ModelyardError,
    NotFound,
    ValidationFailed,
)
from modelyard.governance.policy import Principal, authorize
from modelyard.ui.sessions import COOKIE, SessionStore, UiSession, csrf_ok

HERE = Path(__file__).parent
PREFIX = "/ui"
MAX_FORM_BYTES = 64 * 1024
PAGE_SIZES = (25, 50, 100)  # every listing is paged; 100 rows at most

templates = Jinja2Templates(directory=str(HERE / "templates"))


class LoginRequired(Exception):
    """No live session: the page sends the browser to the login form."""


def _when(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


NONE = "\u2013"  # an en dash: no value


def _number(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return NONE if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return NONE
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value)


templates.env.filters["when"] = _when
templates.env.filters["num"] = _number
templates.env.filters["q"] = lambda s: quote(str(s), safe="")


def store(request: Request) -> SessionStore:
    sessions: SessionStore = request.app.state.ui_sessions
    return sessions


def session_of(request: Request) -> UiSession:
    """The request's session, or ``LoginRequired``."""
    found = store(request).resolve(request.cookies.get(COOKIE))
    if found is None:
        raise LoginRequired
    return found


def can(principal: Principal, action: str, project: str | None = None, *,
        anywhere: bool = False) -> bool:
    """Whether ``authorize`` would allow it: a page shows a button only then."""
    try:
        authorize(principal, action, project, anywhere=anywhere)
    except ModelyardError:
        return False
    return True


async def form(request: Request, ui_session: UiSession) -> dict[str, str]:
    """The posted form, once its CSRF token matched the session's (else 403)."""
    fields = await read_form(request)
    if not csrf_ok(ui_session.token, fields.get("csrf")):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page",
                        field="csrf")
    return fields


async def read_form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise InvalidRequest("dashboard forms are application/x-www-form-urlencoded",
                             field="content-type")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequest("the form is too large", field="body")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"the form cannot be read: {exc}", field="body") from None


def page_args(request: Request) -> tuple[int, int]:
    """(limit, offset) from ?size=&page= (1-based), bounded."""
    try:
        size = int(request.query_params.get("size", PAGE_SIZES[0]))
        number = int(request.query_params.get("page", 1))
    except ValueError:
        raise InvalidRequest("page and size must be whole numbers", field="page") from None
    size = size if size in PAGE_SIZES else PAGE_SIZES[0]
    if not 1 <= number <= 1_000_000:
        raise InvalidRequest("page must be from 1 to 1000000", field="page")
    return size, (number - 1) * size


def render(request: Request, template: str, ui_session: UiSession | None,
           status_code: int = 200, **context: Any) -> HTMLResponse:
    who = ui_session.principal if ui_session else None
    nav = {
        "audit": who is not None and can(who, "audit:read"),
        "keys": who is not None and can(who, "keys:read"),
    }
    return templates.TemplateResponse(request, template, {
        "session": ui_session, "who": who, "nav": nav, "prefix": PREFIX,
        "oidc": request.app.state.ui_oidc is not None, **context}, status_code=status_code)


def _notice_sig(session_token: str, text: str) -> str:
    return hmac.new(session_token.encode(), b"notice:" + text.encode(),
                    hashlib.sha256).hexdigest()[:32]


def redirect(path: str, notice: str | None = None,
             ui_session: UiSession | None = None) -> RedirectResponse:
    """303 after a POST, so reloading the page does not post again. The notice it carries
    is signed for the session, so a crafted link cannot put words in the page's mouth."""
    target = PREFIX + path
    if notice and ui_session is not None:
        text = notice[:300]
        target += ("&" if "?" in target else "?") + urlencode(
            {"notice": text, "sig": _notice_sig(ui_session.token, text)})
    return RedirectResponse(target, status_code=303)


def error_page(request: Request, exc: ModelyardError) -> HTMLResponse:
    try:
        ui_session: UiSession | None = session_of(request)
    except LoginRequired:
        ui_session = None
    return render(request, "error.html", ui_session, status_code=exc.status, error=exc)


async def http_error_page(request: Request, exc: Exception) -> Response:
    """A page for what the router refuses itself (no such page, wrong method)."""
    status = getattr(exc, "status_code", 404)
    error = NotFound(f"no dashboard page {request.url.path}") if status == 404 else \
        InvalidRequest(str(getattr(exc, "detail", "")) or "this request is not allowed")
    error.status = status
    return error_page(request, error)


async def validation_error_page(request: Request, exc: Exception) -> Response:
    """A path or query value of the wrong type (``/ui/rollouts/abc``): 422, with the field."""
    errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
    first = errors[0] if errors else {}
    field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return error_page(request, ValidationFailed(
        f"{field}: {first.get('msg', 'invalid value')}" if field else "invalid request",
        field=field))


class UiRoute(APIRoute):
    """Dashboard routes answer HTML: an error becomes a page with the same status and
    detail the API would give; no session sends the browser to log in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                # Path and query text is compared with stored text: PostgreSQL refuses NUL.
                refuse_nul_in_url(request)
                return await handler(request)
            except LoginRequired:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                if request.method != "GET" or target.endswith(".json"):
                    return render(request, "login.html", None, status_code=401,
                                  next=PREFIX + "/", error_text="Your session ended: log in "
                                  "again.")
                return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}",
                                        status_code=303)
            except ModelyardError as exc:
                return error_page(request, exc)

        return handle


def notice(request: Request) -> str | None:
    """The notice a redirect carried, if it was signed for this browser's session."""
    text, sig = request.query_params.get("notice"), request.query_params.get("sig", "")
    token = request.cookies.get(COOKIE)
    if not text or not token or not hmac.compare_digest(_notice_sig(token, text[:300]),
                                                        sig):
        return None
    return text[:300]


def query(request: Request, name: str, default: str = "", limit: int = 200) -> str:
    return (request.query_params.get(name) or default).strip()[:limit]
