"""The outermost layer when telemetry is on: every HTTP request gets its id before anything
else runs, and each inference request a server span.

- Request id: the caller's ``X-Request-Id`` (printable ASCII, at most 128 characters) or a new
  one, put in the ``request_id`` context variable (JSON log lines carry it) and into the
  request's headers, so the fast path, the control plane and the crash handler all use and
  echo the same id.
- Span: one per inference request (``POST /endpoints/{name}/predict``, ``/v2/models/.../infer``
  and the OpenAI-compatible ``/v1`` routes), continuing the caller's W3C ``traceparent``. Graph
  nodes and batches are traced below it (graph/executor.py, serving/batcher.py). The answer's
  status and the version that answered become attributes; a 5xx marks the span as an error.

Installed only when tracing is on or logs are JSON, so the bare server pays nothing for it.
"""

from __future__ import annotations

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.governance.audit import request_id
from modelyard.serving.request_id import HEADER, request_id_from

_VERSION = b"modelyard-model-version"
_PROPAGATOR = TraceContextTextMapPropagator()
_CARRIED = (b"traceparent", b"tracestate")


def span_name(method: str, path: str) -> tuple[str, str, str] | None:
    """(span name, route template, endpoint) of an inference request, else None."""
    if method != "POST":
        return None
    if path.startswith("/endpoints/") and path.endswith("/predict"):
        name = path[11:-8]
        return (f"predict {name}", "/endpoints/{name}/predict", name) \
            if name and "/" not in name else None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        name = path[11:-6].split("/", 1)[0]
        return (f"infer {name}", "/v2/models/{name}/infer", name) if name else None
    if path.startswith("/v1/") and path.count("/") <= 3:  # OpenAI-compatible, fixed paths
        return f"POST {path}", path, ""
    return None


class RequestTelemetry:
    def __init__(self, app: ASGIApp, tracer: Tracer | None = None) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        given = b""
        carrier: dict[str, str] = {}
        for name, value in headers:
            if name == HEADER:
                given = value
            elif name in _CARRIED:
                carrier[name.decode()] = value.decode("latin-1")
        rid = request_id_from(given)
        if rid.encode() != given:  # no id, or one we do not accept: the new one travels on
            scope = {**scope, "headers": [*(h for h in headers if h[0] != HEADER),
                                          (HEADER, rid.encode())]}
        token = request_id.set(rid)
        try:
            named = span_name(scope["method"], scope["path"]) if self.tracer else None
            if named is None:
                await self.app(scope, receive, send)
            else:
                await self._traced(named, rid, carrier, scope, receive, send)
        finally:
            request_id.reset(token)

    async def _traced(self, named: tuple[str, str, str], rid: str, carrier: dict[str, str],
                      scope: Scope, receive: Receive, send: Send) -> None:
        assert self.tracer is not None
        name, route, endpoint = named
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        attributes = {"http.request.method": "POST", "http.route": route,
                      "url.path": scope["path"], "modelyard.request_id": rid}
        if endpoint:
            attributes["modelyard.endpoint"] = endpoint
        with self.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER,
                                               attributes=attributes) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    for key, value in message.get("headers", ()):
                        if key == _VERSION:
                            span.set_attribute("modelyard.version", value.decode("latin-1"))
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                await send(message)

            await self.app(scope, receive, send_traced)
