"""Modelyard's data plane inside a Ray Serve replica: the replica answers HTTP itself.

A replica of a model deployment that belongs to an endpoint listens on a port of its own
(``DirectIngress``) and answers ``POST /endpoints/{name}/predict`` and OIP v2 for that
endpoint with the server's own code: ``FastPath`` (codecs, signature checks, problem+json,
request ids), ``DataPlaneAccess`` (key snapshots from the shared store), the replica's batcher,
the inference log written to the shared store, and Prometheus metrics. No handle hop: this is
Ray's "direct ingress" topology with Modelyard as the ingress (docs/decisions/0019).

It answers only while the endpoint, as last read from the store, is a single model whose
reference resolves to this replica's version and settings. A traffic split, shadows, a rollout
in progress, a graph, a moved alias or changed settings make it refuse with 503
``not_served_directly`` (and ``/readyz`` 503, so a load balancer's health check sends traffic
to the Modelyard server, which serves everything). It re-reads the endpoint and the active keys
every ``reconcile_interval_s``: a revoked key stops working here within that interval.

This module does not import ``ray``: ``backends/ray.py`` starts it inside ``ModelReplica``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.backends.base import EndpointState
from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import EndpointNotFound, ModelyardError, NotReady, ValidationFailed
from modelyard.domain.names import ModelRef
from modelyard.domain.registry import Endpoint, ModelVersion
from modelyard.governance import oidc
from modelyard.monitor.inference_log import InferenceLog
from modelyard.serving.access import DataPlaneAccess
from modelyard.serving.dataplane import DataPlane
from modelyard.serving.deployment import Deployment
from modelyard.serving.fastpath import FastPath
from modelyard.serving.limits import BodyLimit
from modelyard.serving.metrics import ServingMetrics
from modelyard.serving.problems import CatchAll, http_error_handler, modelyard_error_handler
from modelyard.settings import Settings
from modelyard.store import endpoints as endpoint_repo
from modelyard.store import registry as registry_repo
from modelyard.store.db import Database

log = logging.getLogger("modelyard.backend")

# Ray's own direct-ingress replicas take their HTTP ports from this range (Ray's defaults and
# environment variables), so one firewall rule covers both.
PORT_RANGE_ENV = ("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT",
                  "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT")
DEFAULT_PORTS = (30000, 31000)


class NotServedDirectly(NotReady):
    """This replica's port does not answer for the endpoint now; the Modelyard server does."""

    code = "not_served_directly"


@dataclass(frozen=True)
class DirectConfig:
    """What a replica needs to answer for ``endpoint`` (sent to it with its arguments)."""

    endpoint: str
    # The server's settings without its login secrets: database, limits, auth, inference log.
    settings: Settings = field(repr=False)
    host: str = "127.0.0.1"
    ports: tuple[int, int] = DEFAULT_PORTS

    @classmethod
    def of(cls, endpoint: str, settings: Settings, ports: tuple[int, int]) -> DirectConfig:
        return cls(endpoint, settings.with_(oidc_client_secret="", remote_secrets=""),
                   settings.ray_direct_host, ports)


class DirectView:
    """The one endpoint this replica may answer for, as the data plane's ``Backend``.
    ``spec``: the endpoint's deployment settings it was deployed with (the replica's own
    ``Deployment`` runs a variant of them: one predictor, no cache)."""

    def __init__(self, db: Database, name: str, deployment: Deployment,
                 spec: DeploymentSpec) -> None:
        self.db = db
        self.name = name
        self.deployment = deployment
        self.spec = spec
        self._state: EndpointState | None = None
        self._refusal: str | None = "not read from the store yet"

    def refresh(self) -> None:
        """Read the endpoint; answer for it only if it is a single model served by exactly
        this version and these settings."""
        version, spec = self.deployment.version, self.spec
        try:
            with self.db.transaction() as session:
                endpoint = endpoint_repo.to_endpoint(endpoint_repo.row(session, self.name))
                current: ModelVersion | None = None
                if endpoint.graph is None and endpoint.traffic is None:
                    model, row = registry_repo.resolve(session,
                                                       ModelRef.parse(endpoint.model_ref))
                    current = registry_repo.to_version(model, row)
        except EndpointNotFound:
            self._state, self._refusal = None, None  # deleted: 404, as on the server
            return
        self._state = EndpointState(endpoint, "ready", self.deployment, None, version.ref)
        self._refusal = _refusal(endpoint, current, version, spec)

    def state(self, name: str) -> EndpointState | None:
        if name != self.name or self._state is None:
            return None
        if self._refusal is not None:
            raise NotServedDirectly(f"endpoint {name!r} is not served on this port now "
                                    f"({self._refusal}); send it to the Modelyard server")
        return self._state

    def states(self) -> list[EndpointState]:
        return [self._state] if self._state is not None and self._refusal is None else []

    def ready(self) -> bool:
        return self._state is not None and self._refusal is None

    def reconcile(self) -> None:
        self.refresh()

    def drop(self, name: str) -> None:
        """Endpoints are deleted through the server; the next refresh notices."""

    def trigger(self) -> None:
        """Refreshes run on their own interval."""


def _refusal(endpoint: Endpoint, current: ModelVersion | None, version: ModelVersion,
             spec: DeploymentSpec) -> str | None:
    """Why this replica must not answer for ``endpoint`` now, or None."""
    if endpoint.graph is not None:
        return "it is a graph"
    if endpoint.traffic is not None:
        return "it has a traffic split or shadows"
    if current is None or current.ref != version.ref or \
            current.artifact_digest != version.artifact_digest:
        return f"it now serves {current.ref if current else 'another version'}"
    if endpoint.deployment != spec:
        return "its deployment settings changed"
    return None


class _Server(uvicorn.Server):
    """uvicorn on a loop it does not own: the replica's process keeps its signal handlers
    (Ray stops replicas; SIGTERM is not ours to capture)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class DirectIngress:
    """The replica's own HTTP listener and the loop that keeps its view and keys fresh."""

    def __init__(self, config: DirectConfig, deployment: Deployment,
                 spec: DeploymentSpec) -> None:
        settings = config.settings
        self.config = config
        self.db = Database(settings.database_url)
        self.metrics = ServingMetrics(enabled=settings.metrics)
        self.view = DirectView(self.db, config.endpoint, deployment, spec)
        self.access = DataPlaneAccess(self.db, oidc.from_settings(settings))
        self.inference_log = InferenceLog(
            self.db, capacity=settings.inference_log_buffer,
            flush_interval_s=settings.inference_log_flush_s,
            max_payload_bytes=settings.inference_log_max_payload_bytes,
            max_per_s=settings.inference_log_max_per_s, registry=self.metrics.registry)
        self.interval_s = settings.reconcile_interval_s
        self.in_flight = 0  # requests being answered here (Ray's autoscaler does not see them)
        self.url = ""
        self._server: _Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def load(self) -> float:
        """Direct requests in flight, in full batches: the unit of the front's calls that
        Ray's autoscaler counts (``backends/ray.py``, ``autoscaling_policy``)."""
        return self.in_flight / max(1, self.view.spec.max_batch_size)

    def app(self) -> ASGIApp:
        """The same stack as the server's data plane: hot path in front, then health,
        metadata and metrics routes, every error a problem document."""
        settings = self.config.settings
        routes = DataPlane(self.view, self.metrics, self.access, settings.public_metrics,
                           self.db).routes()
        inner = Starlette(routes=routes, exception_handlers={
            ModelyardError: modelyard_error_handler, HTTPException: http_error_handler})
        fast = FastPath(CatchAll(BodyLimit(inner, limit=settings.max_body_bytes)), self.view,
                        self.access, settings.max_body_bytes,
                        inference_log=self.inference_log)

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "POST":
                return await fast(scope, receive, send)
            self.in_flight += 1
            try:
                await fast(scope, receive, send)
            finally:
                self.in_flight -= 1

        return counted

    async def start(self, node_ip: str) -> str:
        """Read the endpoint and the keys, then listen; returns the listener's URL (with
        ``node_ip`` when it listens on every interface)."""
        await asyncio.to_thread(self._refresh)
        sock = bind_in_range(self.config.host, *self.config.ports)
        host, port = sock.getsockname()[:2]
        server = _Server(uvicorn.Config(self.app(), host=host, port=port, loop="none",
                                        lifespan="off", access_log=False, log_config=None,
                                        log_level="warning", timeout_graceful_shutdown=5))
        self._server = server
        self.inference_log.start()
        self._tasks = [asyncio.create_task(server.serve(sockets=[sock])),
                       asyncio.create_task(self._refresh_loop())]
        while not server.started:
            if self._tasks[0].done():  # failed to start: surface why
                self._tasks[0].result()
                raise NotReady(f"the direct listener on {host}:{port} stopped at start")
            await asyncio.sleep(0.01)
        advertised = node_ip if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{_url_host(advertised)}:{port}"
        log.info("endpoint %s: this replica answers directly on %s", self.config.endpoint,
                 self.url)
        return self.url

    def _refresh(self) -> None:
        self.view.refresh()
        self.access.refresh()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self._refresh)
            except Exception:  # a database blip: keep the last view, as the server does
                log.exception("direct ingress for %s: refresh failed", self.config.endpoint)

    async def stop(self) -> None:
        """Stop listening (in-flight requests get the graceful period), then write what the
        inference log still holds."""
        for task in self._tasks[1:]:
            task.cancel()
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tasks[0], timeout=10)
        await asyncio.to_thread(self.inference_log.stop)
        self.db.engine.dispose()


def bind_in_range(host: str, low: int, high: int) -> socket.socket:
    """A listening-ready socket on the first free port of ``low..high`` (inclusive)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in range(low, high + 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        return sock
    raise NotReady(f"no free port for the direct listener on {host} in {low}-{high}")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def port_range(env: Mapping[str, str]) -> tuple[int, int]:
    """The listeners' port range from Ray's variables (validated: a clear error, not a
    replica that fails to start)."""
    values = []
    for name, default in zip(PORT_RANGE_ENV, DEFAULT_PORTS, strict=True):
        raw = env.get(name, str(default))
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise ValidationFailed(f"{name} must be a port number, not {raw!r}", field=name)
        values.append(int(raw))
    low, high = values
    if low > high:
        raise ValidationFailed(f"{PORT_RANGE_ENV[0]} ({low}) is above {PORT_RANGE_ENV[1]} "
                             f"({high})", field=PORT_RANGE_ENV[0])
    return low, high
