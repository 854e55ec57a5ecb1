"""Data-plane routes that are not on the hot path (health, model metadata, metrics), and the
plain JSON body shapes. Inference itself is answered by ``serving.fastpath``."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard import __version__
from modelyard.backends.base import Backend, EndpointState
from modelyard.domain.errors import (
    EndpointNotFound,
    InvalidInput,
    InvalidRequest,
    NotFound,
    NotReady,
    ValidationFailed,
)
from modelyard.domain.names import ModelRef
from modelyard.domain.signature import Signature
from modelyard.graph.executor import GraphDeployment
from modelyard.rollout.routing import TrafficDeployment
from modelyard.serving import pinning
from modelyard.serving.access import DataPlaneAccess
from modelyard.serving.codecs import dumps, json_response, loads, require_json
from modelyard.serving.deployment import Deployment
from modelyard.serving.metrics import ServingMetrics
from modelyard.serving.request_id import caller_id
from modelyard.store import endpoints as endpoints_repo
from modelyard.store import feedback as feedback_repo
from modelyard.store import inference_log as inference_log_repo
from modelyard.store import registry as registry_repo
from modelyard.store.db import Database


class DataPlane:
    def __init__(self, backend: Backend, metrics: ServingMetrics,
                 access: DataPlaneAccess, public_metrics: bool = False,
                 db: Database | None = None) -> None:
        self.db = db
        self.backend = backend
        self.metrics = metrics
        self.access = access
        self.public_metrics = public_metrics

    def routes(self) -> list[Route]:
        return [
            Route("/endpoints/{name}/feedback", self.feedback, methods=["POST"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models/{name}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/ready", self.model_ready,
                  methods=["GET"]),
            Route("/healthz", self.live, methods=["GET"]),
            Route("/readyz", self.ready, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]

    def _state(self, name: str, request: Request | None = None) -> EndpointState:
        state = self.backend.state(name)
        if state is None:
            raise EndpointNotFound(f"endpoint {name!r} does not exist", field="endpoint")
        if request is not None:  # metadata of a protected endpoint is protected too
            header = request.headers.get("authorization")
            self.access.check(state.endpoint, header.encode("latin-1") if header else None)
        return state

    def _deployment(self, request: Request) -> Deployment | GraphDeployment | TrafficDeployment:
        """What the metadata describes: the version the path names (any the endpoint serves,
        by the rule of ``serving.pinning``; describing one chooses nothing), else the
        endpoint's deployment."""
        name = request.path_params["name"]
        state = self._state(name, request)
        if state.deployment is None:
            raise NotReady(f"endpoint {name!r} is {state.status}"
                           + (f": {state.error}" if state.error else ""))
        version = request.path_params.get("version")
        if version is None:
            return state.deployment
        return pinning.lookup(name, pinning.served(state.deployment),
                              [pinning.Named("version", version)])

    async def server_metadata(self, request: Request) -> Response:
        """OIP v2 server metadata: name, version, protocol extensions."""
        return json_response({"name": "modelyard", "version": __version__,
                              "extensions": ["binary_tensor_data"]})

    async def live(self, request: Request) -> Response:
        """Liveness: 200 while the process serves HTTP."""
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        """Readiness: 200 when every endpoint has a loaded deployment, else 503 (``/readyz``
        also says whether this process leads)."""
        ready = self.backend.ready()
        body: dict[str, Any] = {"ready": ready}
        leadership = getattr(request.app.state, "leadership", None)
        if leadership is not None and request.url.path == "/readyz":
            body["leader"] = leadership.is_leader  # followers serve too (ADR 0020)
        return json_response(body, status=200 if ready else 503)

    async def model_ready(self, request: Request) -> Response:
        """OIP v2: whether an endpoint (and version) can answer now (200) or not (503)."""
        name = request.path_params["name"]
        state = self._state(name, request)
        ready = state.deployment is not None
        if ready and "version" in request.path_params:
            self._deployment(request)
        return json_response({"name": name, "ready": ready}, status=200 if ready else 503)

    async def feedback(self, request: Request) -> Response:
        """What became of answers, reported by the client, one item or a list of up to 1,000:

        * an outcome A/B tests decide on: ``{"version": "churn:2" (the answer's
          Modelyard-Model-Version), "value": 1.0}``; with ``request_id`` instead of
          ``version``, the version comes from the inference log;
        * ground truth, however late: ``{"request_id": "...", "label": 1}`` (the answer's
          X-Request-Id; a list of labels for a request of several rows). Live quality per
          version joins labels with the inference log.

        Answers 202 with the counts stored; ``unmatched``: labels of requests the inference
        log does not hold (not sampled, or expired). A version that does not exist (or a
        generation a graph endpoint has not reached) is 422 naming the item, and nothing
        of the batch is stored."""
        name = request.path_params["name"]
        state = self._state(name, request)  # the endpoint's own auth mode decides
        require_json(request)
        doc = loads(await request.body())
        items = doc if isinstance(doc, list) else [doc]
        if not items or len(items) > MAX_FEEDBACK:
            raise ValidationFailed(f"send 1-{MAX_FEEDBACK} outcomes", field="body")
        graph = state.endpoint.graph is not None
        model = name if graph else ModelRef.parse(state.endpoint.model_ref).model
        parsed = [_feedback(item, model, f"body[{i}]" if isinstance(doc, list) else "body")
                  for i, item in enumerate(items)]
        if self.db is None:
            raise NotReady("feedback needs the metadata store")
        db = self.db

        def store() -> dict[str, int]:
            with db.transaction() as session:  # all or nothing
                known: set[str] = set()
                for where, version, _, _, _ in parsed:
                    if version is not None and version not in known:
                        _check_version(session, name, graph, version, f"{where}.version")
                        known.add(version)
                outcomes: list[tuple[str, float, str | None]] = []
                for where, version, value, request_id, _ in parsed:
                    if value is None:
                        continue
                    if version is None:
                        assert request_id is not None
                        version = inference_log_repo.version_of(session, name, request_id)
                        if version is None:
                            raise ValidationFailed(
                                f"request {request_id!r} is not in the inference log (not "
                                "sampled, expired, or not written yet): give the version",
                                field=f"{where}.version")
                    outcomes.append((version, value, request_id))
                labels = [(rid, label) for _, _, _, rid, label in parsed
                          if label is not None and rid is not None]
                feedback_repo.add(session, name, outcomes)
                stored = inference_log_repo.put_labels(session, name, labels)
                unmatched = sum(inference_log_repo.version_of(session, name, rid) is None
                                for rid, _ in labels)
            return {"accepted": len(parsed), "outcomes": len(outcomes), "labels": stored,
                    "unmatched": unmatched}

        return json_response(await asyncio.to_thread(store), status=202)

    async def model_metadata(self, request: Request) -> Response:
        """OIP v2 model metadata: versions, platform, input and output tensors."""
        deployment = self._deployment(request)
        version = deployment.version

        def specs(tensors: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.oip_datatype, "shape": list(t.shape)}
                    for t in tensors]

        return json_response({
            "name": request.path_params["name"],
            "versions": [str(version.version)],
            "platform": version.flavor,
            "inputs": specs(version.signature.inputs),
            "outputs": specs(version.signature.outputs),
        })

    async def prometheus(self, request: Request) -> Response:
        """Prometheus metrics of this process (text format)."""
        if not self.public_metrics:  # endpoint names and traffic are not for everyone
            header = request.headers.get("authorization")
            self.access.check_action(header.encode("latin-1") if header else None,
                                     "metrics:read", "metrics")
        return Response(self.metrics.render(), media_type=self.metrics.content_type)


def request_arrays(signature: Signature, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """An inference request's inputs, checked against the signature, and at least one row
    in each input with a batch axis: a model asked about nothing fails or answers nothing
    (Triton refuses a batch of 0 too), and either is the caller's mistake, not a 500."""
    arrays = signature.validate(inputs)
    for spec in signature.inputs:
        array = arrays[spec.name]
        if spec.shape and spec.shape[0] == -1 and array.ndim and not array.shape[0]:
            raise InvalidInput(f"input {spec.name!r} has no rows; send at least one",
                               field=f"inputs.{spec.name}")
    return arrays


def plain_inputs(body: Any, signature: Signature) -> dict[str, Any]:
    """``{"inputs": {name: value}}``, ``{"inputs": value}`` (one input), or
    ``{"instances": [row, ...]}`` with rows as objects (or bare values for one input)."""
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object: {"inputs": ...} or '
                             '{"instances": [...]}', field="body")
    names = [s.name for s in signature.inputs]
    if "inputs" in body and "instances" in body:
        raise InvalidRequest("send either 'inputs' or 'instances', not both", field="body")
    if "inputs" in body:
        value = body["inputs"]
        if isinstance(value, dict):
            return value
        if len(names) == 1:
            return {names[0]: value}
        raise InvalidInput(f"'inputs' must be an object with {names}", field="inputs")
    if "instances" in body:
        return _instances(body["instances"], names)
    raise InvalidRequest("the body needs 'inputs' or 'instances'", field="body")


def _instances(rows: Any, names: list[str]) -> dict[str, Any]:
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("'instances' must be a non-empty list", field="instances")
    if not all(isinstance(r, dict) for r in rows):
        if len(names) == 1:
            return {names[0]: rows}
        raise InvalidInput(f"each instance must be an object with {names}", field="instances")
    out: dict[str, Any] = {}
    for name in names:
        column = []
        for i, row in enumerate(rows):
            if name not in row:
                raise InvalidInput(f"instance {i} has no {name!r}",
                                   field=f"instances[{i}].{name}")
            column.append(row[name])
        out[name] = column
    for i, row in enumerate(rows):
        extra = sorted(set(row) - set(names))
        if extra:
            raise InvalidInput(f"instance {i} has unknown input {extra[0]!r}",
                               field=f"instances[{i}].{extra[0]}")
    return out


MAX_FEEDBACK = 1000


def _check_version(session: Session, endpoint: str, graph: bool, version: str,
                   where: str) -> None:
    """Feedback names a version that exists: a model's registered version (archived ones
    too: outcomes arrive late), or a generation a graph endpoint has reached. An outcome
    for ``churn:99`` would otherwise be stored and counted for a version that never
    answered (an A/B test reads outcomes by version)."""
    ref = ModelRef.parse(version, where)
    number = ref.version or 0
    if graph:
        current = endpoints_repo.row(session, endpoint).generation
        if number > current:
            raise ValidationFailed(f"graph endpoint {endpoint!r} is at generation {current}; "
                                   f"{version} never answered", field=where)
        return
    try:
        registry_repo.version_row(session, registry_repo.model_row(session, ref.model), number)
    except NotFound:
        raise ValidationFailed(f"{version} does not exist: give the version that answered "
                               "(the answer's Modelyard-Model-Version)", field=where) from None


MAX_LABEL_BYTES = 64 * 1024


def _feedback(item: Any, model: str, where: str
              ) -> tuple[str, str | None, float | None, str | None, Any]:
    """One item: (where, model:version or None, outcome value or None, request id or
    None, label or None)."""
    if not isinstance(item, dict) or set(item) - {"version", "value", "request_id", "label"} \
            or ("value" not in item and "label" not in item):
        raise ValidationFailed("feedback is {version?, value, request_id?} (an outcome) or "
                               "{request_id, label} (ground truth), or both", field=where)
    request_id = item.get("request_id")
    # Only an id an answer can carry (NUL, say, cannot be stored in PostgreSQL anyway).
    if request_id is not None and (not isinstance(request_id, str)
                                   or caller_id(request_id.encode()) != request_id.encode()):
        raise ValidationFailed("request_id is the answer's X-Request-Id: 1-128 printable "
                               "ASCII characters without spaces", field=f"{where}.request_id")
    version = item.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version >= 1:
        version = f"{model}:{version}"
    if version is not None and (
            not isinstance(version, str)
            or ModelRef.parse(version, f"{where}.version").version is None
            or not version.startswith(f"{model}:")):
        raise ValidationFailed(f"version must be a version of {model} (as the answer's "
                               "Modelyard-Model-Version says)", field=f"{where}.version")
    value = item.get("value")
    if value is not None:
        if not isinstance(value, int | float) or isinstance(value, bool) or \
                not math.isfinite(value):
            raise ValidationFailed("value must be a finite number", field=f"{where}.value")
        if version is None and request_id is None:
            raise ValidationFailed("an outcome needs the version that answered, or the "
                                   "request_id", field=f"{where}.version")
        value = float(value)
    label = item.get("label")
    if "label" in item:
        if request_id is None:
            raise ValidationFailed("a label needs the request_id of the answer it is for",
                                   field=f"{where}.request_id")
        try:  # orjson writes at most 254 levels of nesting (and reads 1,024)
            size = len(dumps(label)) if label is not None else 0
        except orjson.JSONEncodeError:
            size = 0
        if not 0 < size <= MAX_LABEL_BYTES:
            raise ValidationFailed("label must be a JSON value (a class, a number, or a "
                                   f"list of them) of at most {MAX_LABEL_BYTES} bytes",
                                   field=f"{where}.label")
    return where, version, value, request_id, label
