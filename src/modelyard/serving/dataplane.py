"""The data plane: plain Starlette handlers, numpy end to end, no database, no pydantic.

Routes: ``POST /endpoints/{name}/predict`` (plain JSON) and the Open Inference Protocol v2
REST API (``/v2/...``), where an OIP "model" is a Modelyard endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard import __version__
from modelyard.backends.base import Backend, EndpointState
from modelyard.domain.errors import (
    EndpointNotFound,
    InvalidInput,
    InvalidRequest,
    NotReady,
    VersionNotFound,
)
from modelyard.domain.signature import Signature
from modelyard.domain.tensors import decode_many, encode_many
from modelyard.serving.codecs import json_response, read_json
from modelyard.serving.deployment import Deployment

TIMEOUT_HEADER = "modelyard-timeout-ms"
VERSION_HEADER = "modelyard-model-version"
MAX_TIMEOUT_MS = 600_000


class DataPlane:
    def __init__(self, backend: Backend, pool: ThreadPoolExecutor) -> None:
        self.backend = backend
        self.pool = pool

    def routes(self) -> list[Route]:
        return [
            Route("/endpoints/{name}/predict", self.predict, methods=["POST"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models/{name}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/ready", self.model_ready,
                  methods=["GET"]),
            Route("/v2/models/{name}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", self.infer, methods=["POST"]),
            Route("/healthz", self.live, methods=["GET"]),
            Route("/readyz", self.ready, methods=["GET"]),
        ]

    # -- lookups -------------------------------------------------------------------------
    def _state(self, name: str) -> EndpointState:
        state = self.backend.state(name)
        if state is None:
            raise EndpointNotFound(f"endpoint {name!r} does not exist", field="endpoint")
        return state

    def _deployment(self, request: Request) -> Deployment:
        name = request.path_params["name"]
        state = self._state(name)
        if state.deployment is None:
            raise NotReady(f"endpoint {name!r} is {state.status}"
                           + (f": {state.error}" if state.error else ""))
        version = request.path_params.get("version")
        if version is not None and version != str(state.deployment.version.version):
            raise VersionNotFound(
                f"endpoint {name!r} serves version {state.deployment.version.version}, "
                f"not {version!r}",
                field="version",
            )
        return state.deployment

    def _timeout_s(self, request: Request, state: EndpointState) -> float:
        raw = request.headers.get(TIMEOUT_HEADER)
        if raw is None:
            return state.endpoint.timeout_ms / 1000
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if not 1 <= value <= MAX_TIMEOUT_MS:
            raise InvalidRequest(f"{TIMEOUT_HEADER} must be an integer from 1 to "
                                 f"{MAX_TIMEOUT_MS}", field=TIMEOUT_HEADER)
        return value / 1000

    async def _run(self, request: Request, deployment: Deployment,
                   inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays = deployment.signature.validate(inputs)
        state = self._state(request.path_params["name"])
        return await deployment.predict(arrays, self.pool, self._timeout_s(request, state))

    # -- plain JSON ----------------------------------------------------------------------
    async def predict(self, request: Request) -> Response:
        deployment = self._deployment(request)
        body = await read_json(request)
        inputs = plain_inputs(body, deployment.signature)
        start = time.perf_counter()
        outputs = await self._run(request, deployment, inputs)
        version = deployment.version
        return json_response(
            {"model": version.model, "version": version.version, "outputs": outputs},
            headers={VERSION_HEADER: version.ref,
                     "server-timing": f"model;dur={(time.perf_counter() - start) * 1000:.2f}"},
        )

    # -- Open Inference Protocol v2 ------------------------------------------------------
    async def server_metadata(self, request: Request) -> Response:
        return json_response({"name": "modelyard", "version": __version__, "extensions": []})

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.backend.ready()
        return json_response({"ready": ready}, status=200 if ready else 503)

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        state = self._state(name)
        ready = state.deployment is not None
        if ready and "version" in request.path_params:
            self._deployment(request)
        return json_response({"name": name, "ready": ready}, status=200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
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

    async def infer(self, request: Request) -> Response:
        deployment = self._deployment(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object with 'inputs'", field="body")
        inputs = decode_many(body.get("inputs"))
        wanted = _requested_outputs(body.get("outputs"), deployment.signature)
        outputs = await self._run(request, deployment, inputs)
        if wanted:
            outputs = {k: v for k, v in outputs.items() if k in wanted}
        version = deployment.version
        response: dict[str, Any] = {
            "model_name": request.path_params["name"],
            "model_version": str(version.version),
            "outputs": encode_many(outputs),
        }
        if isinstance(body.get("id"), str):
            response["id"] = body["id"]
        return json_response(response, headers={VERSION_HEADER: version.ref})


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
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("'instances' must be a non-empty list", field="instances")
        if all(isinstance(r, dict) for r in rows):
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
                extra = set(row) - set(names)
                if extra:
                    raise InvalidInput(f"instance {i} has unknown input {sorted(extra)[0]!r}",
                                       field=f"instances[{i}].{sorted(extra)[0]}")
            return out
        if len(names) == 1:
            return {names[0]: rows}
        raise InvalidInput(f"each instance must be an object with {names}", field="instances")
    raise InvalidRequest("the body needs 'inputs' or 'instances'", field="body")


def _requested_outputs(requested: Any, signature: Signature) -> set[str]:
    if requested is None:
        return set()
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InvalidRequest("'outputs' must be a list of objects with a 'name'",
                             field="outputs")
    known = {s.name for s in signature.outputs}
    names = {o["name"] for o in requested}
    unknown = names - known if known else set()
    if unknown:
        raise InvalidRequest(f"unknown output {sorted(unknown)[0]!r}; the model gives "
                             f"{sorted(known)}", field="outputs")
    return names
