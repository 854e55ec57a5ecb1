"""The server: data plane and control plane in one ASGI app, plus the reconciler loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelyard import __version__
from modelyard.backends.local import LocalBackend
from modelyard.control.api import API, build_control_api
from modelyard.control.leadership import Leadership
from modelyard.control.openapi_problems import describe_problems
from modelyard.domain.analysis import WindowStats
from modelyard.domain.errors import InvalidJSON, ModelyardError, ValidationFailed
from modelyard.governance import oidc
from modelyard.governance.redaction import redact_logs
from modelyard.jobs.schedules import Scheduler
from modelyard.jobs.worker import Worker
from modelyard.monitor.inference_log import InferenceLog
from modelyard.rollout.evidence import SharedEvidence
from modelyard.rollout.observations import Observations
from modelyard.serving.access import DataPlaneAccess
from modelyard.serving.browser import BrowserGuard
from modelyard.serving.dataplane import DataPlane
from modelyard.serving.fastpath import FastPath
from modelyard.serving.grpc_v2 import GrpcListen
from modelyard.serving.limits import BodyLimit
from modelyard.serving.metrics import ServingMetrics
from modelyard.serving.openai_api import OpenAIRoutes
from modelyard.serving.problems import (
    CatchAll,
    error_response,
    http_error_handler,
    loggable,
    modelyard_error_handler,
)
from modelyard.serving.request_id import RequestId
from modelyard.telemetry import tracing as tracing_setup
from modelyard.telemetry.asgi import RequestTelemetry
from modelyard.telemetry.logs import check_format
from modelyard.ui import mount_dashboard
from modelyard.yard import Yard

log = logging.getLogger("modelyard.server")


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error_response(InvalidJSON("the body is not valid JSON"), request)
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    detail = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    problem = ValidationFailed(detail, field=field, errors=[
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
         "message": e.get("msg")} for e in errors
    ])
    return error_response(problem, request)


def create_app(yard: Yard, *, start_reconciler: bool = True,
               on_ready: Callable[[float], None] | None = None, tls: bool = False,
               grpc: GrpcListen | None = None,
               tracing: tracing_setup.Tracing | None = None) -> FastAPI:
    """The whole server. ``on_ready`` is called with the seconds start-up took, once every
    endpoint is loaded and warm. ``grpc``: where OIP v2 over gRPC listens too (default: the
    ``host`` and ``grpc_port`` settings; port 0: no gRPC). ``tracing``: where spans go
    (default: from the trace settings; shut down with the server)."""
    settings = yard.settings
    tracing = tracing or tracing_setup.from_settings(settings)
    tracer = tracing.tracer if tracing is not None else None
    grpc_listen = grpc or GrpcListen(settings.host, settings.grpc_port)
    redact_logs("modelyard.http", "modelyard.server", "modelyard.backend", "modelyard.graph")
    metrics = ServingMetrics(enabled=settings.metrics, tracer=tracer)
    tokens = oidc.from_settings(settings)
    access = DataPlaneAccess(yard.db, tokens)
    backend: LocalBackend
    if settings.backend == "ray":  # imported only now: ray is an optional extra
        from modelyard.backends import ray as ray_backend

        backend = ray_backend.from_settings(settings, yard.db, yard.registry, yard.artifacts,
                                            metrics, on_reconcile=access.refresh)
    elif settings.backend == "local":
        backend = LocalBackend(yard.db, yard.deployment, settings.reconcile_interval_s,
                               metrics, on_reconcile=access.refresh,
                               memory_budget_mb=settings.model_memory_budget_mb,
                               memory_factor=settings.model_memory_factor)
    else:
        raise ValidationFailed(f"backend must be local or ray, not {settings.backend!r}",
                               field="backend")
    metrics.watch_breakers(backend.states)
    yard.access.on_change = access.refresh
    yard.endpoints.on_change = backend.trigger
    # What each version did, per endpoint: the evidence rollouts are decided on.
    observations = Observations()
    backend.on_shadow = observations.record_shadow
    inference_log = InferenceLog(yard.db, capacity=settings.inference_log_buffer,
                                 flush_interval_s=settings.inference_log_flush_s,
                                 max_payload_bytes=settings.inference_log_max_payload_bytes,
                                 max_per_s=settings.inference_log_max_per_s,
                                 registry=metrics.registry)
    # One leader per yard runs rollouts, schedules, monitors and retention (ADR 0020).
    leadership = Leadership(yard.db, lease_s=settings.leader_lease_s)
    metrics.registry.register(leadership.collector())
    # Every process's observations of versions under rollout, for the leader's analysis.
    evidence = SharedEvidence(yard.db, leadership.owner, observations)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        # Model threads and the event loop hand the GIL back and forth on every batch; the
        # default 5 ms switch interval would add up to that much to each hand-off (measured:
        # bench/, medium model, p99 55 ms -> 31 ms).
        sys.setswitchinterval(0.001)
        backend.attach(asyncio.get_running_loop())
        # Load every endpoint before accepting traffic, so "ready" means ready.
        await asyncio.to_thread(backend.reconcile)
        grpc_server = None
        if grpc_listen.port:
            # Imported only now: grpc is an optional extra.
            from modelyard.serving.grpc_v2 import server as grpc_v2

            try:
                grpc_server = await grpc_v2.start(grpc_listen, backend, access,
                                                  settings.max_body_bytes,
                                                  observations.record, inference_log, tracing)
            except BaseException:
                backend.close()
                raise
        app.state.ready_after_s = time.perf_counter() - started
        # Modules loaded so far live as long as the server: move them out of the collector's
        # sight, so full collections stay short (they set the p99). Models: backends/local.py.
        gc.collect()
        gc.freeze()
        if on_ready is not None:
            on_ready(app.state.ready_after_s)
        stop = asyncio.Event()
        if start_reconciler:
            await asyncio.to_thread(leadership.start)
        inference_log.start()
        expiry = asyncio.create_task(expire_inference_log(
            inference_log, settings.inference_log_retention_days, stop,
            leader=leadership.checker("retention"))) if start_reconciler else None
        task = asyncio.create_task(backend.run(stop)) if start_reconciler else None
        rollouts = asyncio.create_task(run_rollouts(yard, backend, observations, stop,
                                                    settings.rollout_tick_s,
                                                    leadership.checker("rollouts"))) \
            if start_reconciler else None
        sharing = asyncio.create_task(share_evidence(
            evidence, stop, leadership.checker("evidence"))) if start_reconciler else None
        # Jobs run on a worker thread here unless only 'modelyard worker' processes should.
        # On the ray backend, work a job offloads (ctx.offload) runs as Ray tasks.
        jobs = Worker(yard, schedules=False, offload=getattr(backend, "offload", None)).start() \
            if start_reconciler and settings.jobs_in_process else None
        if jobs is not None:
            yard.jobs.on_enqueue = jobs.wake
        crons = asyncio.create_task(schedule_jobs(
            yard, stop, settings.job_poll_s, leadership.checker("schedules"))) \
            if jobs is not None else None
        monitors = asyncio.create_task(schedule_monitors(
            yard, stop, settings.monitor_tick_s, leadership.checker("monitors"))) \
            if start_reconciler else None
        try:
            yield
        finally:
            stop.set()
            if jobs is not None:
                yard.jobs.on_enqueue = None
                # A job still running after this is taken over once its lease expires.
                await asyncio.to_thread(jobs.stop, 10.0)
            if rollouts is not None:
                await rollouts
            if sharing is not None:
                await sharing
            evidence.close()
            if expiry is not None:
                await expiry
            if monitors is not None:
                await monitors
            if crons is not None:
                await crons
            await asyncio.to_thread(leadership.stop)  # a successor takes over at once
            if grpc_server is not None:
                await grpc_server.stop(5)  # in-flight calls get 5 s, as HTTP ones do
            if task is not None:
                await task
            backend.close()
            # After the last answer: what the drained requests left in the buffer is written,
            # and the refusals counted since the last reconcile go to the audit chain.
            await asyncio.to_thread(inference_log.stop)
            with contextlib.suppress(Exception):  # a store gone at shutdown loses only counts
                await asyncio.to_thread(access.refresh)
            if tracing is not None:  # export the spans still buffered
                await asyncio.to_thread(tracing.shutdown)

    app = FastAPI(
        title="Modelyard",
        version=__version__,
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        description="Control plane of a Modelyard yard: models, versions, aliases, artifacts "
        "and endpoints. The data plane (/endpoints/{name}/predict and the Open Inference "
        "Protocol v2 under /v2) is served by the same process.",
        lifespan=lifespan,
        exception_handlers={
            ModelyardError: modelyard_error_handler,
            HTTPException: http_error_handler,
            RequestValidationError: _validation_handler,
        },
    )
    app.state.yard = yard
    app.state.backend = backend
    app.state.tokens = tokens
    build_control_api(app, yard, backend)
    describe_problems(app)  # errors in /openapi.json as they are sent: problem+json
    mount_dashboard(app, yard, backend, observations)  # /ui: server-rendered pages
    for route in DataPlane(backend, metrics, access, settings.public_metrics,
                           yard.db).routes():
        app.router.routes.append(route)
    app.router.routes.extend(OpenAIRoutes(backend, access).routes())  # /v1: OpenAI clients
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       overrides={f"{API}/artifacts": settings.max_artifact_bytes})
    app.add_middleware(BrowserGuard,
                       allowed_origins=[o.strip() for o in settings.allowed_origins.split(",")],
                       tls=tls)
    app.add_middleware(RequestId)
    app.add_middleware(CatchAll)
    if tracer is None and check_format(settings.log_format) == "json":
        # Request ids for the log lines of every other request; inference requests set their
        # own in the fast path, so they do not pass through this layer.
        app.add_middleware(RequestTelemetry, tracing=None)
    # Outermost (but for tracing): inference requests skip the framework entirely.
    app.add_middleware(FastPath, backend=backend, access=access,
                       max_body_bytes=settings.max_body_bytes,
                       on_answer=observations.record, inference_log=inference_log)
    if tracer is not None:
        # Outside even the fast path: a span per inference request, and request ids.
        app.add_middleware(RequestTelemetry, tracing=tracing)
    app.state.metrics = metrics
    app.state.inference_log = inference_log
    app.state.observations = observations
    app.state.leadership = leadership
    return app


async def run_rollouts(yard: Yard, backend: LocalBackend, observations: Observations,
                       stop: asyncio.Event, tick_s: float,
                       leader: Callable[[], bool] = lambda: True) -> None:
    """Analyse running rollouts (each at its own interval) until the server stops; only
    while ``leader()`` says this process leads."""

    def stats(key: str, seconds: float, shadow: bool) -> WindowStats:
        return observations.stats(key, seconds, shadow=shadow)

    def ready(endpoint: str, version: str) -> bool:
        state = backend.state(endpoint)
        if state is None or state.deployment is None:
            return False
        units = state.deployment.deployments() if hasattr(state.deployment, "deployments") \
            else [state.deployment]
        return any(d.version.ref == version for d in units)

    while not stop.is_set():
        try:
            for decision in await asyncio.to_thread(yard.rollouts.tick, stats, ready) \
                    if leader() else ():
                if decision["action"] != "wait":
                    log.info("rollout %s: %s (%s)", decision["rollout"], decision["action"],
                             loggable(decision["reason"]))
        except Exception:  # keep analysing: a database blip must not end every rollout
            log.exception("rollout analysis failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick_s)


async def share_evidence(evidence: SharedEvidence, stop: asyncio.Event,
                         leader: Callable[[], bool] = lambda: True, every_s: float = 1.0,
                         expire_every_s: float = 60.0) -> None:
    """Publish this process's rollout evidence every second (``rollout/evidence.py``); the
    leader also deletes what is past the horizon, once a minute."""
    expired_at = 0.0
    while not stop.is_set():
        try:
            await asyncio.to_thread(evidence.publish)
            if leader() and time.monotonic() - expired_at >= expire_every_s:
                await asyncio.to_thread(evidence.expire)
                expired_at = time.monotonic()
        except Exception:  # a database blip: the next second publishes what this one missed
            log.exception("sharing rollout evidence failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)


async def expire_inference_log(inference_log: InferenceLog, retention_days: float,
                               stop: asyncio.Event, every_s: float = 3600.0,
                               leader: Callable[[], bool] = lambda: True) -> None:
    """Delete inference records past their retention: at start, then hourly (the leader
    only; a follower looks again every minute, in case it becomes the leader)."""
    while not stop.is_set():
        if not leader():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(every_s, 60.0))
            continue
        try:
            gone = await asyncio.to_thread(inference_log.expire, retention_days)
            if gone:
                log.info("inference log: deleted %d records older than %s days", gone,
                         retention_days)
        except Exception:  # a busy database now is no reason to stop expiring later
            log.exception("inference log retention failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)


async def schedule_monitors(yard: Yard, stop: asyncio.Event, tick_s: float,
                            leader: Callable[[], bool] = lambda: True) -> None:
    """Queue the monitor jobs that are due, every ``tick_s`` (the leader only); workers
    run them."""
    while not stop.is_set():
        try:
            if leader():
                await asyncio.to_thread(yard.monitoring.schedule_due, yard.jobs)
        except Exception:  # keep scheduling: a database blip must not end monitoring
            log.exception("scheduling monitors failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick_s)


async def schedule_jobs(yard: Yard, stop: asyncio.Event, tick_s: float,
                        leader: Callable[[], bool] = lambda: True) -> None:
    """Enqueue the jobs of due cron slots, every ``tick_s`` (the leader only; each slot is
    enqueued once however many schedulers run, jobs/schedules.py)."""
    scheduler = Scheduler(yard.jobs.queue)
    while not stop.is_set():
        try:
            enqueued = await asyncio.to_thread(scheduler.tick) if leader() else []
            if enqueued and yard.jobs.on_enqueue is not None:
                yard.jobs.on_enqueue()  # the in-process worker looks at once
        except Exception:  # keep scheduling: a database blip must not end the schedules
            log.exception("scheduling jobs failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick_s)


def app_from_environment() -> FastAPI:
    """The app factory for ``modelyard serve --workers N`` (each worker process calls it;
    the yard comes from MODELYARD_HOME and the other MODELYARD_* settings)."""
    return create_app(Yard())
