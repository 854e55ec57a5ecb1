"""``inference.GRPCInferenceService`` on grpc.aio: the OIP v2 data plane over gRPC.

It runs on the HTTP server's event loop and shares its backend and access checks, so an
inference call goes the same way as ``POST /v2/models/{name}/infer`` (see
``serving.fastpath``): access check, deployment, shedding, signature validation, the batcher.
Errors carry the problem's ``detail`` as the gRPC message, its ``code`` in the trailing
metadata ``modelyard-error-code`` and its ``field`` (when it has one) in
``modelyard-error-field``; ``status_code`` maps them to gRPC status codes.

Tensors come as typed ``contents`` or as ``raw_input_contents`` (what tritonclient sends). The
answer uses the same form as the request: raw outputs for raw inputs, typed otherwise (and raw
when an output has no typed field, FP16).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from contextvars import Token
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, Protocol

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

try:
    import grpc
    from grpc import aio
except ImportError as exc:  # the optional extra is missing
    raise ImportError("serving OIP v2 over gRPC needs grpcio and protobuf: "
                      "pip install 'modelyard[grpc]'") from exc

from modelyard import __version__
from modelyard.backends.base import Backend, EndpointState
from modelyard.domain.errors import (
    DeadlineExceeded,
    EndpointNotFound,
    InvalidInput,
    InvalidRequest,
    ModelyardError,
    NotReady,
    Overloaded,
    TooManyRequests,
)
from modelyard.domain.registry import ModelVersion
from modelyard.domain.signature import DTYPES, OIP_TO_DTYPE, Signature, dtype_name
from modelyard.domain.tensors import decode
from modelyard.governance.policy import Principal
from modelyard.graph.executor import GraphDeployment
from modelyard.monitor.inference_log import InferenceLog
from modelyard.rollout.routing import TrafficDeployment, summary
from modelyard.serving import oip, pinning
from modelyard.serving.access import DataPlaneAccess
from modelyard.serving.batcher import PRIORITIES, Replaced
from modelyard.serving.dataplane import request_arrays
from modelyard.serving.deployment import Deployment
from modelyard.serving.fastpath import MAX_TIMEOUT_MS, PRIORITY_HEADER, VERSION_HEADER, _rows
from modelyard.serving.grpc_v2 import GrpcListen
from modelyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from modelyard.serving.grpc_v2.grpc_predict_v2_pb2_grpc import (
    add_GRPCInferenceServiceServicer_to_server,
)
from modelyard.serving.metrics import DeploymentMetrics
from modelyard.serving.request_id import HEADER, request_id_from
from modelyard.telemetry.tracing import Tracing

log = logging.getLogger("modelyard.server")
_PROPAGATOR = TraceContextTextMapPropagator()


class Served(Protocol):
    """What an endpoint serves: a model ``Deployment`` (or anything answering like one)."""

    @property
    def version(self) -> ModelVersion: ...

    @property
    def signature(self) -> Signature: ...

    @property
    def observer(self) -> object: ...

    async def predict(self, inputs: Mapping[str, np.ndarray], timeout_s: float,
                      priority: int = 1) -> dict[str, np.ndarray]: ...

ERROR_CODE_KEY = "modelyard-error-code"
ERROR_FIELD_KEY = "modelyard-error-field"
_PRIORITY_KEY = PRIORITY_HEADER.decode()
_VERSION_KEY = VERSION_HEADER.decode()

# The typed field of InferTensorContents that holds each OIP datatype (FP16: none).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(error: ModelyardError) -> grpc.StatusCode:
    """The gRPC status of an error: by its HTTP status, except that load shedding (a 503 over
    HTTP) is RESOURCE_EXHAUSTED, the code gRPC clients read as "back off", not "gone"."""
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return _BY_HTTP_STATUS.get(error.status, grpc.StatusCode.INTERNAL)


def _metadata(context: aio.ServicerContext) -> dict[str, str | bytes]:
    """Invocation metadata by (lower-case) key; the last value of a repeated key wins."""
    return {key.lower(): value for key, value in context.invocation_metadata() or ()}


def _authorization(metadata: Mapping[str, str | bytes]) -> bytes | None:
    value = metadata.get("authorization")
    if value is None:
        return None
    return value if isinstance(value, bytes) else value.encode("latin-1", "replace")


def timeout_s(remaining_s: float | None, state: EndpointState) -> float:
    """The request's deadline: the client's gRPC deadline when it set one (capped like the
    HTTP timeout header), else the endpoint's timeout."""
    if remaining_s is None:
        return state.endpoint.timeout_ms / 1000
    if remaining_s <= 0:
        raise DeadlineExceeded("the call's deadline passed before it was served")
    return min(remaining_s, MAX_TIMEOUT_MS / 1000)


def _priority(metadata: Mapping[str, str | bytes]) -> int:
    value = metadata.get(_PRIORITY_KEY)
    if value is None:
        return 1
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    level = PRIORITIES.get(text.strip().lower())
    if level is None:
        raise InvalidRequest(f"{_PRIORITY_KEY} must be one of {', '.join(PRIORITIES)}",
                             field=_PRIORITY_KEY)
    return level


# -- tensors ------------------------------------------------------------------------------


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's input arrays, from raw_input_contents or from typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for "
                           f"{len(request.inputs)} inputs; send one per input, in order",
                           field="raw_input_contents")
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        where = f"inputs[{i}]"
        head: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                "shape": list(tensor.shape)}
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"tensor {tensor.name!r} has contents, but the request "
                                   "uses raw_input_contents (one or the other)",
                                   field=f"{where}.contents")
            # The same checks and BYTES layout as the HTTP binary extension.
            name, array = oip._from_binary(head, raw[i], where)
        else:
            name, array = _from_contents(head, tensor.contents, where)
        if name in arrays:
            raise InvalidInput(f"tensor {name!r} appears twice", field=f"{where}.name")
        arrays[name] = array
    return arrays


def _from_contents(head: dict[str, Any], contents: pb.InferTensorContents, where: str
                   ) -> tuple[str, np.ndarray]:
    datatype = head["datatype"]
    field = CONTENTS_FIELD.get(datatype)
    if field is None and datatype in OIP_TO_DTYPE:
        raise InvalidInput(f"tensor {head['name']!r} is {datatype}, which has no typed "
                           "contents; send it in raw_input_contents",
                           field=f"{where}.contents")
    # An unknown datatype gets no data here: decode() names the datatype as the problem.
    data = list(getattr(contents, field)) if field is not None else []
    return decode({**head, "data": data}, where)


def encode_outputs(response: pb.ModelInferResponse, outputs: Mapping[str, np.ndarray],
                   raw: bool) -> None:
    kinds = {name: dtype_name(array.dtype) for name, array in outputs.items()}
    # raw_output_contents is all or nothing: one output without a typed field makes it raw.
    raw = raw or any(DTYPES[k][1] not in CONTENTS_FIELD for k in kinds.values())
    for name, array in outputs.items():
        datatype = DTYPES[kinds[name]][1]
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(oip._to_binary(array))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist())
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.reshape(-1).tolist())


# -- the service --------------------------------------------------------------------------


class InferenceServicer:
    """The methods of ``inference.GRPCInferenceService`` (registered by name).

    ``ModelInfer`` is served as the HTTP fast path serves an inference: the same auth,
    version choice under a traffic split (its sticky key read from the call's metadata),
    shadows, rollout evidence (``on_answer``), inference log, request id (``x-request-id``
    in, and in the trailing metadata out) and a server span when tracing samples it."""

    def __init__(self, backend: Backend, access: DataPlaneAccess,
                 on_answer: Callable[[str, bool, float, float | None], None] | None = None,
                 inference_log: InferenceLog | None = None,
                 tracing: Tracing | None = None) -> None:
        self.backend = backend
        self.access = access
        self.on_answer = on_answer
        self.inference_log = inference_log
        self.tracer = tracing.tracer if tracing is not None else None
        self.sample_ratio = tracing.sample_ratio if tracing is not None else 0.0

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext
                         ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext
                          ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.backend.ready())

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: aio.ServicerContext) -> pb.ServerMetadataResponse:
        # No extensions: binary_tensor_data (listed over HTTP) is raw contents here, core.
        return pb.ServerMetadataResponse(name="modelyard", version=__version__)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext
                         ) -> pb.ModelReadyResponse:
        try:
            state = self._state(request.name, _metadata(context))
            ready = state.deployment is not None
            if ready and request.version:
                self._described(state, request.version)  # or VersionNotFound
            return pb.ModelReadyResponse(ready=ready)
        except Exception as exc:
            await _abort(context, exc)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: aio.ServicerContext) -> pb.ModelMetadataResponse:
        try:
            state = self._state(request.name, _metadata(context))
            version = self._described(state, request.version).version
            meta = pb.ModelMetadataResponse(name=request.name, versions=[str(version.version)],
                                            platform=version.flavor)
            for specs, into in ((version.signature.inputs, meta.inputs),
                                (version.signature.outputs, meta.outputs)):
                for spec in specs:
                    into.add(name=spec.name, datatype=spec.oip_datatype, shape=list(spec.shape))
            return meta
        except Exception as exc:
            await _abort(context, exc)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext
                         ) -> pb.ModelInferResponse:
        metadata = _metadata(context)
        span, token = self._span(request.model_name, metadata)
        try:
            return await self._model_infer(request, context, metadata, span)
        finally:
            if span is not None and token is not None:
                otel_context.detach(token)
                span.end()

    async def _model_infer(self, request: pb.ModelInferRequest,
                           context: aio.ServicerContext, metadata: Mapping[str, str | bytes],
                           span: Span | None) -> pb.ModelInferResponse:
        started = time.perf_counter()
        rid = request_id_from(_bytes(metadata.get(HEADER.decode(), b"")))
        deployment: Served | None = None
        state: EndpointState | None = None
        error: Exception | None = None
        response = pb.ModelInferResponse()
        answer: Answer | None = None
        try:
            # Who may call, before anything else is looked at (public endpoints skip it).
            state, caller = self._caller(request.model_name, metadata)
            deployment, traffic = self._deployment(state, request.model_version, metadata,
                                                   caller)
            wait_s = timeout_s(context.time_remaining(), state)
            priority = _priority(metadata)
            # Shed before decoding: under overload a refusal must cost as little as possible.
            # (Only a model has one batcher; anything else admits or sheds on its own.)
            if isinstance(deployment, Deployment):
                batcher = deployment.batcher()
                if batcher.would_refuse(priority, wait_s):
                    batcher.observer.shed(priority)
                    raise Overloaded(f"{deployment.version.ref} is overloaded; retry later")
            try:
                response, answer = await self._infer(request, deployment, wait_s, priority,
                                                     traffic)
            except Replaced:  # swapped while queued: the new deployment answers
                state = self._state(request.model_name, None)
                deployment, traffic = self._deployment(state, request.model_version, metadata,
                                                       caller)
                response, answer = await self._infer(request, deployment, wait_s, priority,
                                                     traffic)
        except Exception as exc:
            error = exc
        trailing: list[tuple[str, str]] = [(HEADER.decode(), rid)]
        status = 200 if error is None else getattr(error, "status", 500)
        if deployment is not None and state is not None:
            ref = deployment.version.ref
            trailing.append((_VERSION_KEY, ref))
            elapsed = time.perf_counter() - started
            observer = deployment.observer
            if isinstance(observer, DeploymentMetrics):  # counted with the HTTP status
                observer.answered(status, elapsed)
            prediction = answer.summary if answer is not None else None
            if self.on_answer is not None:  # per-version evidence for rollouts
                self.on_answer(f"{state.endpoint.name}/{ref}", status < 500, elapsed,
                               prediction)
            if self.inference_log is not None:
                self.inference_log.offer(
                    state.endpoint, ref, rid, status, elapsed,
                    answer.rows if answer is not None else 0,
                    answer.inputs if answer is not None else None,
                    answer.outputs if answer is not None else None, prediction)
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", 0 if error is None else
                               (status_code(error).value[0]
                                if isinstance(error, ModelyardError) else 13))
            span.set_attribute("modelyard.request_id", rid)
            if deployment is not None:
                span.set_attribute("modelyard.version", deployment.version.ref)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        if error is not None:
            await _abort(context, error, trailing)
        context.set_trailing_metadata(trailing)
        return response

    def _span(self, model: str, metadata: Mapping[str, str | bytes]
              ) -> tuple[Span | None, Token[Context] | None]:
        """A server span for this call when tracing is on and samples it (a caller's
        ``traceparent`` is always continued), attached as the current context."""
        if self.tracer is None:
            return None, None
        carrier = {k: _text(metadata[k]) for k in ("traceparent", "tracestate")
                   if k in metadata}
        if not carrier and self.sample_ratio < 1.0 and random.random() >= self.sample_ratio:
            return None, None
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            f"infer {model}", context=parent, kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService",
                        "rpc.method": "ModelInfer", "modelyard.endpoint": model})
        return span, otel_context.attach(set_span_in_context(span, parent))

    async def _infer(self, request: pb.ModelInferRequest, deployment: Served,
                     wait_s: float, priority: int, traffic: TrafficDeployment | None
                     ) -> tuple[pb.ModelInferResponse, Answer]:
        inputs = decode_inputs(request)
        known = {s.name for s in deployment.signature.outputs}
        wanted = {o.name for o in request.outputs}
        unknown = wanted - known if known else set()
        if unknown:
            raise InvalidRequest(f"unknown output {sorted(unknown)[0]!r}; the model gives "
                                 f"{sorted(known)}", field="outputs")
        arrays = request_arrays(deployment.signature, inputs)
        outputs: dict[str, np.ndarray] = await deployment.predict(arrays, wait_s, priority)
        answer = Answer(arrays, outputs, _rows(arrays),
                        summary(outputs) if self.on_answer or self.inference_log else None)
        if traffic is not None and isinstance(deployment, Deployment):
            traffic.mirror(deployment, arrays, outputs, wait_s)
        if wanted:
            outputs = {k: v for k, v in outputs.items() if k in wanted}
        response = pb.ModelInferResponse(model_name=request.model_name,
                                         model_version=str(deployment.version.version),
                                         id=request.id)
        typed = any(t.HasField("contents") for t in request.inputs)
        encode_outputs(response, outputs, raw=bool(request.raw_input_contents) or not typed)
        return response, answer

    def _state(self, name: str, metadata: Mapping[str, str | bytes] | None) -> EndpointState:
        """The endpoint, once the caller may use it (``metadata`` None: already checked)."""
        return self._caller(name, metadata)[0]

    def _caller(self, name: str, metadata: Mapping[str, str | bytes] | None
                ) -> tuple[EndpointState, Principal | None]:
        """The endpoint and who calls it (None: a public endpoint), once they may."""
        state = self.backend.state(name)
        if state is None:
            raise EndpointNotFound(f"endpoint {name!r} does not exist", field="endpoint")
        caller = None
        if metadata is not None:
            caller = self.access.check(state.endpoint, _authorization(metadata))
        return state, caller

    def _deployment(self, state: EndpointState, version: str,
                    metadata: Mapping[str, str | bytes], caller: Principal | None
                    ) -> tuple[Served, TrafficDeployment | None]:
        """What answers this call, and the split it came from: the version ``model_version``
        and/or ``modelyard-version`` metadata name (``serving.pinning``: the rule HTTP
        follows), else the split's pick by its sticky key (read from ``metadata``)."""
        deployment = _loaded(state)
        traffic = deployment if isinstance(deployment, TrafficDeployment) else None
        pinned = metadata.get(pinning.PIN_HEADER)
        if not version and pinned is None:
            if traffic is None:
                return deployment, None
            key = (traffic.policy.sticky_header or "").lower()
            sticky = _bytes(metadata[key]) if key and key in metadata else None
            return traffic.pick(sticky), traffic
        named = []
        if version:
            named.append(pinning.Named("model_version", version))
        if pinned is not None:
            named.append(pinning.Named(pinning.PIN_HEADER, _text(pinned)))
        chosen = pinning.choose(state.endpoint.name, deployment, named,
                                lambda: self._may_pin(state, caller, metadata))
        return chosen, traffic

    def _may_pin(self, state: EndpointState, caller: Principal | None,
                 metadata: Mapping[str, str | bytes]) -> bool:
        if caller is None:  # a public endpoint: whoever said who they are
            caller = self.access.identify(_authorization(metadata))
        return caller is not None and caller.may(pinning.PIN_RIGHT, state.endpoint.project)

    @staticmethod
    def _described(state: EndpointState, version: str) -> Served:
        """What metadata and readiness describe: the version named (any version the endpoint
        serves; describing one chooses nothing), else the split's stable version."""
        deployment = _loaded(state)
        if not version:
            return deployment.primary if isinstance(deployment, TrafficDeployment) \
                else deployment
        return pinning.lookup(state.endpoint.name, pinning.served(deployment),
                              [pinning.Named("version", version)])


def _loaded(state: EndpointState) -> Deployment | GraphDeployment | TrafficDeployment:
    if state.deployment is None:
        raise NotReady(f"endpoint {state.endpoint.name!r} is {state.status}"
                       + (f": {state.error}" if state.error else ""))
    return state.deployment


class Answer(NamedTuple):
    """What a call computed, for rollout evidence and the inference log (references)."""

    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    rows: int
    summary: float | None


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1", "replace")


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


async def _abort(context: aio.ServicerContext, error: Exception,
                 trailing: list[tuple[str, str]] | None = None) -> NoReturn:
    """End the call with the error's status and detail (unexpected errors: INTERNAL, and the
    details stay in the server log)."""
    metadata = list(trailing or [])
    if isinstance(error, ModelyardError):
        code, detail = status_code(error), error.detail
        metadata.append((ERROR_CODE_KEY, error.code))
        if error.field and error.field.isascii() and error.field.isprintable():
            metadata.append((ERROR_FIELD_KEY, error.field))  # the problem's field
        if isinstance(error, Overloaded):
            metadata.append(("retry-after", "1"))
        elif isinstance(error, TooManyRequests):
            metadata.append(("retry-after", str(error.retry_after_s)))
    else:
        log.exception("gRPC call failed", exc_info=error)
        code, detail = grpc.StatusCode.INTERNAL, "internal error; see the server log"
    await context.abort(code, detail, trailing_metadata=tuple(metadata))
    raise AssertionError("unreachable: abort() raises")  # for the type checker


# -- the server ---------------------------------------------------------------------------


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start(listen: GrpcListen, backend: Backend, access: DataPlaneAccess,
                max_message_bytes: int,
                on_answer: Callable[[str, bool, float, float | None], None] | None = None,
                inference_log: InferenceLog | None = None,
                tracing: Tracing | None = None) -> aio.Server:
    """A started gRPC server on the running event loop; stop it with ``await s.stop(grace)``."""
    server = aio.server(options=[
        # The same request size limit as HTTP bodies.
        ("grpc.max_receive_message_length", max_message_bytes),
        # gRPC shares a port with any other process by default on Linux: a second server on
        # the same port must fail, not silently take half of the connections.
        ("grpc.so_reuseport", 0),
    ])
    add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(backend, access, on_answer, inference_log, tracing), server)
    address = _address(listen.host, listen.port)
    if (listen.certfile is None) != (listen.keyfile is None):
        raise ValueError("gRPC over TLS needs both a certificate and a key file")
    try:
        if listen.certfile and listen.keyfile:
            credentials = grpc.ssl_server_credentials(
                [(Path(listen.keyfile).read_bytes(), Path(listen.certfile).read_bytes())])
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio >= 1.51 raises; older versions return 0
        raise RuntimeError(f"cannot serve gRPC on {address}: {exc}") from exc
    if not port:
        raise RuntimeError(f"cannot serve gRPC on {address}")
    await server.start()
    log.info("OIP v2 over gRPC on %s%s", address, " (TLS)" if listen.certfile else "")
    return server
