"""Every control-plane request gets an id (the client's ``X-Request-Id`` or a new one): it is
echoed in the answer and written with the audit records the request causes."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.governance.audit import request_id

HEADER = b"x-request-id"


_PRINTABLE = bytes(range(33, 127))


def caller_id(given: bytes) -> bytes | None:
    """The caller's id, bounded to 128 characters, if it is printable ASCII without spaces
    (it ends up in logs, the audit chain and the inference log, where labels are joined on
    it); else ``None``. One C-level pass: the data plane calls it on every request."""
    given = given[:128]
    return given if given and not given.translate(None, _PRINTABLE) else None


def request_id_from(given: bytes) -> str:
    """The caller's id if ``caller_id`` takes it; else a new one."""
    rid = caller_id(given)
    return rid.decode("ascii") if rid is not None else uuid.uuid4().hex


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
