"""Every control-plane request gets an id (the client's ``X-Request-Id`` or a new one): it is
echoed in the answer and written with the audit records the request causes."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.governance.audit import request_id

HEADER = b"x-request-id"


def request_id_from(given: bytes) -> str:
    """The caller's id if it is printable ASCII (it ends up in logs and the audit chain),
    bounded to 128 characters; else a new one."""
    given = given[:128]
    if given and all(33 <= c < 127 for c in given):
        return given.decode("ascii")
    return uuid.uuid4().hex


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(next((v for k, v in scope["headers"] if k == HEADER), b""))
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
