"""The outermost layer when telemetry is on: every HTTP request has its id before anything
else runs, and each inference request a server span.

- Request id: the fast path gives its requests their id (the caller's ``X-Request-Id`` or a new
  one) and sets the ``request_id`` context variable itself. For every other request this layer
  does it, before the crash handler and the control plane run: the caller's id if printable
  ASCII (at most 128 characters), else a new one, put into the request's headers too, so the
  inner ``RequestId`` middleware echoes the same id that log lines carry.
- Span: one per inference request (``POST /endpoints/{name}/predict``, ``/v2/models/.../infer``
  and the OpenAI-compatible ``/v1`` routes), continuing the caller's W3C ``traceparent``. Graph
  nodes and batches are traced below it (graph/executor.py, serving/batcher.py). The answer's
  status, request id and the version that answered become attributes; a 5xx is an error.

Installed only when tracing is on or logs are JSON, so the bare server pays nothing for it.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from opentelemetry import context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.governance.audit import request_id
from modelyard.serving.request_id import HEADER, request_id_from
from modelyard.telemetry.tracing import Tracing

_VERSION = b"modelyard-model-version"
_PROPAGATOR = TraceContextTextMapPropagator()
_CARRIED = (b"traceparent", b"tracestate")


class Named(NamedTuple):
    span: str
    route: str
    endpoint: str
    fast: bool  # served by the fast path (which gives the request its id itself)


def span_name(method: str, path: str) -> Named | None:
    """How an inference request is traced, or None for any other request."""
    if method != "POST":
        return None
    if path.startswith("/endpoints/") and path.endswith("/predict"):
        name = path[11:-8]
        return Named(f"predict {name}", "/endpoints/{name}/predict", name, True) \
            if name and "/" not in name else None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        name = path[11:-6].split("/", 1)[0]
        return Named(f"infer {name}", "/v2/models/{name}/infer", name, True) if name else None
    if path.startswith("/v1/") and path.count("/") <= 3:  # OpenAI-compatible, fixed paths
        return Named(f"POST {path}", path, "", False)
    return None


class RequestTelemetry:
    def __init__(self, app: ASGIApp, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracer = tracing.tracer if tracing is not None else None
        self.sample_ratio = tracing.sample_ratio if tracing is not None else 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        named = span_name(scope["method"], scope["path"])
        if named is not None and named.fast:  # the fast path sets the request id itself
            if self.tracer is None:
                await self.app(scope, receive, send)
            else:
                await self._traced(self.tracer, named, scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        given = next((v for k, v in headers if k == HEADER), b"")
        rid = request_id_from(given)
        if rid.encode() != given:  # no id, or one we do not accept: the new one travels on
            scope = {**scope, "headers": [*(h for h in headers if h[0] != HEADER),
                                          (HEADER, rid.encode())]}
        token = request_id.set(rid)
        try:
            if named is None or self.tracer is None:
                await self.app(scope, receive, send)
            else:
                await self._traced(self.tracer, named, scope, receive, send)
        finally:
            request_id.reset(token)

    async def _traced(self, tracer: Tracer, named: Named, scope: Scope, receive: Receive,
                      send: Send) -> None:
        name, route, endpoint, _ = named
        carrier = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]
                   if k in _CARRIED}
        if not carrier and self.sample_ratio < 1.0 and random.random() >= self.sample_ratio:
            # Not traced: no span at all (nor below it: nodes and batches check).
            await self.app(scope, receive, send)
            return
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        attributes = {"http.request.method": "POST", "http.route": route}
        if endpoint:
            attributes["modelyard.endpoint"] = endpoint
        # start_span and attach by hand: a context manager per request costs more (bench/).
        span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                                 attributes=attributes)
        token = context.attach(set_span_in_context(span, parent))

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start" and span.is_recording():
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
                for key, value in message.get("headers", ()):
                    if key == _VERSION:
                        span.set_attribute("modelyard.version", value.decode("latin-1"))
                    elif key == HEADER:
                        span.set_attribute("modelyard.request_id", value.decode("latin-1"))
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            context.detach(token)
            span.end()
