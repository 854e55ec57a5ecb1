"""The inference hot path as a bare ASGI app: no framework routing, no Request object, no
pydantic, no database. It answers ``POST /endpoints/{name}/predict`` and
``POST /v2/models/{name}[/versions/{v}]/infer`` and hands everything else to the full app.

Per request: read the body (bounded), decode with orjson, check against the signature,
queue for the batcher, encode with orjson. Errors become problem+json like everywhere else.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.backends.base import Backend, EndpointState
from modelyard.domain.errors import (
    EndpointNotFound,
    InvalidRequest,
    ModelyardError,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    TooManyRequests,
    UnsupportedMediaType,
)
from modelyard.governance.audit import request_id as current_request_id
from modelyard.governance.policy import Principal
from modelyard.graph.executor import GraphDeployment
from modelyard.monitor.inference_log import InferenceLog
from modelyard.rollout.routing import TrafficDeployment, summary
from modelyard.serving import oip, pinning
from modelyard.serving.access import DataPlaneAccess
from modelyard.serving.batcher import PRIORITIES, Replaced
from modelyard.serving.codecs import dumps, loads
from modelyard.serving.dataplane import plain_inputs, request_arrays
from modelyard.serving.deployment import Deployment
from modelyard.serving.metrics import DeploymentMetrics, refused
from modelyard.serving.problems import loggable
from modelyard.serving.request_id import caller_id

TIMEOUT_HEADER = b"modelyard-timeout-ms"
PRIORITY_HEADER = b"modelyard-priority"
VERSION_HEADER = b"modelyard-model-version"
MAX_TIMEOUT_MS = 600_000
PIN_HEADER = pinning.PIN_HEADER.encode()
# ("endpoint/model:version", ok (not a 5xx), seconds, one number of the answer or None)
AnswerRecorder = Callable[[str, bool, float, float | None], None]
_JSON = b"application/json"
_PROBLEM = b"application/problem+json"
log = logging.getLogger("modelyard.http")


class _Request:
    __slots__ = ("authorization", "content_type", "header_length", "headers", "inputs",
                 "length", "outputs", "pinned", "priority", "request_id", "summary",
                 "timeout_ms", "trace")

    def __init__(self, scope: Scope) -> None:
        query: bytes = scope.get("query_string", b"")
        # ?trace=1: answer with what ran (graphs: nodes, rows, timings, fallbacks).
        self.trace = b"trace=1" in query or b"trace=true" in query
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.pinned: bytes | None = None  # Modelyard-Version: a version chosen by the caller
        self.summary: float | None = None  # one number of the answer, for rollout analysis
        # What was computed, for the inference log (references, not copies).
        self.inputs: Mapping[str, np.ndarray] | None = None
        self.outputs: Mapping[str, Any] | None = None
        self.content_type = b""
        self.length: int | None = None
        self.timeout_ms: bytes | None = None
        self.priority: bytes | None = None
        self.request_id: bytes | None = None
        self.header_length: bytes | None = None
        self.authorization: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                self.content_type = value
            elif name == b"content-length":
                self.length = int(value) if value.isdigit() else None
            elif name == TIMEOUT_HEADER:
                self.timeout_ms = value
            elif name == PRIORITY_HEADER:
                self.priority = value
            elif name == b"x-request-id":
                self.request_id = caller_id(value)  # else a new one, as on the control plane
            elif name == b"inference-header-content-length":
                self.header_length = value
            elif name == b"authorization":
                self.authorization = value
            elif name == PIN_HEADER:
                self.pinned = value


def _route(path: str) -> tuple[str, str, str | None] | None:
    """("predict"|"infer", endpoint, version) for a hot-path URL, else None."""
    if path.startswith("/endpoints/") and path.endswith("/predict"):
        name = path[11:-8]
        return ("predict", name, None) if name and "/" not in name else None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[11:-6].split("/")
        if len(parts) == 1 and parts[0]:
            return "infer", parts[0], None
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return "infer", parts[0], parts[2]
    return None


class _InternalError(ModelyardError):
    code, status, title = "internal_error", 500, "Internal error"


def _internal(scope: Scope, error: Exception) -> ModelyardError:
    """An unexpected error (a bug): logged, and answered as the rest of the app answers one
    (the fast path runs outside its CatchAll; Starlette's plain-text 500 also dropped the
    keep-alive connection)."""
    log.error("unhandled error on %s %s", loggable(scope["method"]), loggable(scope["path"]),
              exc_info=error)
    return _InternalError("the server failed; the log has the details")


# Request ids: a random per-process prefix and a counter (unique across processes, and far
# cheaper than a uuid4 per request: it showed in profiles of the hot path).
_ID_PREFIX = os.urandom(8).hex().encode()
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> bytes:
    return b"%s%08x" % (_ID_PREFIX, next(_ID_COUNTER))


def _reseed_request_ids() -> None:
    """A forked worker process gets its own prefix, never its parent's."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(8).hex().encode()
    _ID_COUNTER = itertools.count(1)


os.register_at_fork(after_in_child=_reseed_request_ids)


def _count(raw: bytes) -> int | None:
    """A header's non-negative integer: 1-18 ASCII digits (``int()`` of a longer one costs
    quadratic time, and past 4,300 digits raises), else None."""
    return int(raw) if 0 < len(raw) <= 18 and raw.isdigit() else None


def _rows(inputs: Mapping[str, np.ndarray] | None) -> int:
    if not inputs:
        return 0
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim else 1


class FastPath:
    def __init__(self, app: ASGIApp, backend: Backend, access: DataPlaneAccess,
                 max_body_bytes: int, on_answer: AnswerRecorder | None = None,
                 inference_log: InferenceLog | None = None) -> None:
        self.app = app
        self.on_answer = on_answer
        self.inference_log = inference_log
        self.backend = backend
        self.access = access
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = _route(scope["path"])
            if route is not None:
                if scope["method"] == "POST":
                    await self._handle(route, scope, receive, send)
                else:
                    await self._method_not_allowed(route[0], scope, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _method_not_allowed(kind: str, scope: Scope, send: Send) -> None:
        problem = {"type": "https://modelyard.dev/problems/method_not_allowed",
                   "title": "Method not allowed", "status": 405,
                   "detail": f"{scope['method']} is not allowed here; use POST",
                   "code": "method_not_allowed", "instance": scope["path"]}
        if kind == "infer":
            problem["error"] = problem["detail"]
        body = dumps(problem)
        await send({"type": "http.response.start", "status": 405, "headers": [
            (b"content-type", _PROBLEM), (b"content-length", str(len(body)).encode()),
            (b"allow", b"POST")]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, route: tuple[str, str, str | None], scope: Scope,
                      receive: Receive, send: Send) -> None:
        kind, name, version = route
        request = _Request(scope)
        # Every answer carries an id (the caller's or a new one): labels join on it later.
        if request.request_id is None:
            request.request_id = _new_request_id()
        # Log lines (and audit records) of this request carry it; the task's own context.
        current_request_id.set(request.request_id.decode("latin-1"))
        started = time.perf_counter()
        deployment: Deployment | GraphDeployment | TrafficDeployment | None = None
        extra: list[tuple[bytes, bytes]] = []
        known: EndpointState | None = None
        try:
            # Who may call: decided before the body is read (public endpoints skip it).
            known = self.backend.state(name)
            caller = None
            if known is not None:
                caller = self.access.check(known.endpoint, request.authorization)
            body = await self._body(request, receive)
            if body is None:
                return  # the client went away
            # Resolved after the body arrived, so an alias move meanwhile is honoured.
            state, deployment, traffic = self._deployment(name, version, request, caller)
            timeout_s = self._timeout_s(request, state)
            priority = self._priority(request)
            # Shed before decoding: under overload a refusal must cost as little as possible.
            # (A graph's nodes each admit or shed on their own batcher.)
            if isinstance(deployment, Deployment):
                batcher = deployment.batcher()
                if batcher.would_refuse(priority, timeout_s):
                    batcher.observer.shed(priority)
                    raise Overloaded(f"{deployment.version.ref} is overloaded; retry later")
            handler = self._predict if kind == "predict" else self._infer
            try:
                payload, content_type, extra = await handler(
                    request, body, name, deployment, timeout_s, priority, traffic)
            except Replaced:  # swapped while decoding: the new deployment answers
                state, deployment, traffic = self._deployment(name, version, request, caller)
                payload, content_type, extra = await handler(
                    request, body, name, deployment, timeout_s, priority, traffic)
            status = 200
        except Exception as caught:  # a problem+json like everywhere, a bug included
            exc = caught if isinstance(caught, ModelyardError) else _internal(scope, caught)
            status = exc.status
            problem = exc.to_problem()
            problem["instance"] = scope["path"]
            if kind == "infer":
                problem["error"] = exc.detail
            payload, content_type = dumps(problem), _PROBLEM
            if isinstance(exc, Overloaded):
                extra = [(b"retry-after", b"1")]
            elif exc.status == 401:
                extra = [(b"www-authenticate", b'Bearer realm="modelyard"')]
            elif isinstance(exc, TooManyRequests):
                extra = [(b"retry-after", str(exc.retry_after_s).encode())]
        if deployment is not None:
            extra.append((VERSION_HEADER, deployment.version.ref.encode()))
            observer = deployment.observer
            elapsed = time.perf_counter() - started
            if isinstance(observer, DeploymentMetrics):
                observer.answered(status, elapsed)
            if self.on_answer is not None:  # per-version evidence for rollouts
                self.on_answer(f"{name}/{deployment.version.ref}", status < 500, elapsed,
                               request.summary)
            if self.inference_log is not None and known is not None:
                self.inference_log.offer(known.endpoint, deployment.version.ref,
                                         request.request_id.decode("latin-1"), status, elapsed,
                                         _rows(request.inputs), request.inputs,
                                         request.outputs, request.summary)
        elif 400 <= status < 500 and known is not None:  # refused before a version was chosen
            refused(known, status)
        extra.append((b"x-request-id", request.request_id))
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(payload)).encode()),
            *extra,
        ]})
        await send({"type": "http.response.body", "body": payload})

    def _deployment(self, name: str, version: str | None, request: _Request,
                    caller: Principal | None
                    ) -> tuple[EndpointState, Deployment | GraphDeployment,
                               TrafficDeployment | None]:
        """The endpoint's state, what answers this request, and the split it came from."""
        state = self.backend.state(name)
        if state is None:
            raise EndpointNotFound(f"endpoint {name!r} does not exist", field="endpoint")
        deployment = state.deployment
        if deployment is None:
            raise NotReady(f"endpoint {name!r} is {state.status}"
                           + (f": {state.error}" if state.error else ""))
        traffic: TrafficDeployment | None = None
        if isinstance(deployment, TrafficDeployment):
            traffic = deployment
            if version is None and request.pinned is None:  # no version named: the split
                return state, deployment.pick(deployment.key_of(request.headers)), traffic
        elif version is None and request.pinned is None:  # the hot path
            return state, deployment, None
        named = []
        if version is not None:
            named.append(pinning.Named("version", version))
        if request.pinned is not None:
            named.append(pinning.Named(pinning.PIN_HEADER, request.pinned.decode("latin-1")))
        chosen = pinning.choose(name, deployment, named,
                                lambda: self._may_pin(request, state, caller))
        return state, chosen, traffic

    def _may_pin(self, request: _Request, state: EndpointState,
                 caller: Principal | None) -> bool:
        """Whether the caller may choose among a split's versions (a public endpoint's
        caller is identified only now, from the credential they sent, if any)."""
        if caller is None and request.authorization is not None:
            caller = self.access.identify(request.authorization)
        return caller is not None and caller.may(pinning.PIN_RIGHT, state.endpoint.project)

    @staticmethod
    def _timeout_s(request: _Request, state: EndpointState) -> float:
        raw = request.timeout_ms
        if raw is None:
            return state.endpoint.timeout_ms / 1000
        value = _count(raw)
        if value is None or not 1 <= value <= MAX_TIMEOUT_MS:
            raise InvalidRequest(f"{TIMEOUT_HEADER.decode()} must be an integer from 1 to "
                                 f"{MAX_TIMEOUT_MS}", field=TIMEOUT_HEADER.decode())
        return value / 1000

    @staticmethod
    def _priority(request: _Request) -> int:
        if request.priority is None:
            return 1
        level = PRIORITIES.get(request.priority.decode("latin-1").strip().lower())
        if level is None:
            raise InvalidRequest(f"{PRIORITY_HEADER.decode()} must be one of "
                                 f"{', '.join(PRIORITIES)}", field=PRIORITY_HEADER.decode())
        return level

    async def _body(self, request: _Request, receive: Receive) -> bytes | None:
        if request.length is not None and request.length > self.max_body:
            raise PayloadTooLarge(f"request body is over the {self.max_body} byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"request body is over the {self.max_body} byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _require_json(request: _Request, allow_missing: bool = False) -> None:
        media = request.content_type.split(b";", 1)[0].strip().lower()
        if allow_missing and not media:
            return
        if media != _JSON and not media.endswith(b"+json"):
            raise UnsupportedMediaType(
                "send JSON with 'Content-Type: application/json' (got "
                f"{media.decode('latin-1') or 'none'!r})", field="content-type")

    async def _predict(self, request: _Request, body: bytes, name: str,
                       deployment: Deployment | GraphDeployment, timeout_s: float,
                       priority: int, traffic: TrafficDeployment | None = None
                       ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        self._require_json(request)
        inputs = plain_inputs(loads(body), deployment.signature)
        arrays = request_arrays(deployment.signature, inputs)
        version = deployment.version
        request.inputs = arrays
        if isinstance(deployment, GraphDeployment):
            outputs, trace = await deployment.predict_traced(arrays, timeout_s, priority)
            request.outputs = outputs
            answer: dict[str, Any] = {"graph": version.model, "generation": version.version,
                                      "outputs": outputs}
            if request.trace:
                answer["trace"] = trace
            return dumps(answer), _JSON, []
        outputs = await deployment.predict(arrays, timeout_s, priority)
        self._after(request, deployment, traffic, arrays, outputs, timeout_s)
        return dumps({"model": version.model, "version": version.version,
                      "outputs": outputs}), _JSON, []

    def _after(self, request: _Request, deployment: Deployment | GraphDeployment,
               traffic: TrafficDeployment | None, arrays: Mapping[str, np.ndarray],
               outputs: Mapping[str, np.ndarray], timeout_s: float) -> None:
        """Evidence for rollouts and the inference log, and the shadows' copy."""
        request.inputs, request.outputs = arrays, outputs
        if self.on_answer is not None or self.inference_log is not None:
            request.summary = summary(outputs)
        if traffic is not None and isinstance(deployment, Deployment):
            traffic.mirror(deployment, arrays, outputs, timeout_s)

    async def _infer(self, request: _Request, body: bytes, name: str,
                     deployment: Deployment | GraphDeployment,
                     timeout_s: float, priority: int,
                     traffic: TrafficDeployment | None = None
                     ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        header_length = None
        if request.header_length is not None:
            header_length = _count(request.header_length)
            if header_length is None:
                raise InvalidRequest(f"{oip.HEADER_LENGTH} must be a byte count",
                                     field=oip.HEADER_LENGTH)
        else:
            # OIP clients (tritonclient) may send JSON without a Content-Type.
            self._require_json(request, allow_missing=True)
        doc, inputs = oip.parse_request(body, header_length)
        known = {s.name for s in deployment.signature.outputs}
        wanted, binary, all_binary = oip.wanted_outputs(doc, known)
        arrays = request_arrays(deployment.signature, inputs)
        outputs: dict[str, np.ndarray] = await deployment.predict(arrays, timeout_s, priority)
        self._after(request, deployment, traffic, arrays, outputs, timeout_s)
        if wanted:
            outputs = {k: v for k, v in outputs.items() if k in wanted}
        head: dict[str, Any] = {"model_name": name,
                                "model_version": str(deployment.version.version)}
        if isinstance(doc.get("id"), str):
            head["id"] = doc["id"]
        payload, json_length = oip.response_body(head, outputs, binary, all_binary, dumps)
        if json_length is None:
            return payload, _JSON, []
        return payload, b"application/octet-stream", [
            (oip.HEADER_LENGTH.encode(), str(json_length).encode())]
