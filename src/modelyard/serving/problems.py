"""RFC 9457 problem+json responses, and the handlers that turn every error into one."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.domain.errors import ModelyardError

log = logging.getLogger("modelyard.http")


def loggable(value: object, limit: int = 300) -> str:
    """User-controlled text made safe for one log line: control characters (newlines
    included) escaped, length bounded, so nobody can forge log lines."""
    text = str(value)[:limit]
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
}


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None,
                     oip: bool = False) -> Response:
    if oip:
        # OIP v2 clients (tritonclient, kserve) read the message from "error".
        problem = {**problem, "error": problem.get("detail", problem.get("title", ""))}
    response = Response(orjson.dumps(problem), status_code=int(problem["status"]),
                        media_type="application/problem+json", headers=headers)
    return response


def error_response(exc: ModelyardError, request: Request | None = None) -> Response:
    problem = exc.to_problem()
    headers = {}
    if request is not None:
        problem["instance"] = request.url.path
        rid = request.headers.get("x-request-id")
        if rid:
            headers["x-request-id"] = rid[:128]
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="modelyard"'
    oip = request is not None and request.url.path.startswith("/v2")
    return problem_response(problem, headers, oip)


async def modelyard_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelyardError)
    if exc.status >= 500:
        log.error("%s %s -> %s: %s", loggable(request.method), loggable(request.url.path),
                  exc.code, loggable(exc.detail))
    return error_response(exc, request)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    problem = {
        "type": f"https://modelyard.dev/problems/{code}",
        "title": str(exc.detail) if exc.status_code != 404 else "Not found",
        "status": exc.status_code,
        "detail": str(exc.detail) if exc.status_code != 404 else
        f"no route {request.method} {request.url.path}",
        "code": code,
        "instance": request.url.path,
    }
    return problem_response(problem, dict(exc.headers or {}),
                            request.url.path.startswith("/v2"))


class CatchAll:
    """Answer an unhandled exception with a 500 problem and keep the connection usable.

    (Starlette's own handler for ``Exception`` re-raises to the server after answering, which
    makes uvicorn drop the keep-alive connection and log a traceback twice.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", loggable(scope.get("method")),
                          loggable(scope.get("path")))
            if started:
                raise
            path = scope.get("path", "")
            body = orjson.dumps({
                "type": "https://modelyard.dev/problems/internal_error",
                "title": "Internal error", "status": 500,
                "detail": "the server failed; the log has the details",
                "code": "internal_error", "instance": path,
                **({"error": "internal error"} if path.startswith("/v2") else {}),
            })
            await send({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
