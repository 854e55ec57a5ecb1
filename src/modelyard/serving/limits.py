"""Request body size limits, enforced before a handler reads the body."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.domain.errors import PayloadTooLarge


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413 (by Content-Length up front, or by counting
    a streamed body). Paths under a prefix in ``overrides`` get their own limit."""

    def __init__(self, app: ASGIApp, limit: int, overrides: dict[str, int] | None = None
                 ) -> None:
        self.app = app
        self.limit = limit
        self.overrides = overrides or {}

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.overrides.items():
            if path.startswith(prefix):
                return limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _too_large(scope, send, limit)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body is over the {limit} byte limit")
            return message

        await self.app(scope, limited_receive, send)


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    problem = PayloadTooLarge(f"request body is over the {limit} byte limit").to_problem()
    problem["instance"] = scope["path"]
    if scope["path"].startswith("/v2"):
        problem["error"] = problem["detail"]
    body = orjson.dumps(problem)
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
