"""What a browser needs to be told: no cross-origin changes, and safe response headers.

Modelyard's credentials are bearer tokens, which a browser never attaches by itself, so a
forged cross-site request carries no identity today. The rule holds anyway, without relying on
that (the dashboard's browser sessions will carry cookies): a request that changes something
(any method but GET, HEAD and OPTIONS, DELETE included) and that a browser marks as coming
from another site (``Sec-Fetch-Site: cross-site|same-site``, or an ``Origin`` other than this
server's) is refused with 403 before it reaches a route, unless its origin is allow-listed.
Inference is not a change and stays callable from browser apps.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.domain.errors import CrossOrigin
from modelyard.serving.problems import problem_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes that only compute (the data plane): a browser app may call a public endpoint.
_COMPUTE_PREFIXES = ("/endpoints/", "/v2/", "/v1/")

_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_API_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]
# The interactive API docs load their own scripts and styles.
_DOC_PATHS = ("/docs", "/redoc")
# The dashboard loads its own scripts and styles, and only those (no inline script). Its
# forms need the browser to send their Origin: with no-referrer it would send "null".
_UI_PATH = "/ui"
_UI_HEADERS = [
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]


class BrowserGuard:
    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = (),
                 tls: bool = False) -> None:
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed_origins if o}
        self.extra = [(b"strict-transport-security", b"max-age=31536000")] if tls else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] not in SAFE_METHODS and not path.startswith(_COMPUTE_PREFIXES):
            refusal = self._cross_origin(scope)
            if refusal is not None:
                problem = CrossOrigin(refusal, field="origin").to_problem()
                problem["instance"] = path
                await problem_response(problem)(scope, receive, send)
                return
        headers = _HEADERS + self.extra
        if path == _UI_PATH or path.startswith(_UI_PATH + "/"):
            headers = _UI_HEADERS + [h for h in headers if h[0] != b"referrer-policy"]
            if path.startswith(_UI_PATH + "/static/"):  # revalidated by ETag, not refetched
                headers = [(b"cache-control", b"no-cache") if h[0] == b"cache-control" else h
                           for h in headers]
        elif not path.startswith(_DOC_PATHS):
            headers = headers + _API_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in headers if name not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cross_origin(self, scope: Scope) -> str | None:
        """Why this request looks cross-origin, or None."""
        headers = {name: value.decode("latin-1") for name, value in scope["headers"]
                   if name in (b"origin", b"sec-fetch-site", b"host")}
        origin = headers.get(b"origin", "").rstrip("/").lower()
        if origin and origin in self.allowed:
            return None
        site = headers.get(b"sec-fetch-site", "").lower()
        if site in ("cross-site", "same-site"):
            return f"a {site} browser request cannot change anything here"
        if origin:
            scheme = scope.get("scheme", "http")
            own = f"{scheme}://{headers.get(b'host', '')}".lower()
            if origin != own:
                return (f"requests from origin {origin[:200]!r} cannot change anything here "
                        "(add it to allowed_origins to permit it)")
        return None
