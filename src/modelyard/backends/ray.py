"""The ray backend: every model deployment runs as a Ray Serve application.

The control plane stays in the Modelyard process: the same reconciler as the local backend
(``LocalBackend``) resolves endpoints from the store, and the same data plane (``FastPath``:
auth, signature checks, traffic choice, shadows, graphs, problem+json) answers HTTP. Only the
loader differs: instead of loading a version in-process it deploys a Ray Serve application of
``ModelReplica`` replicas (replicas or autoscaling, CPUs and GPUs from the DeploymentSpec) and
returns a ``RayDeployment``, which answers like a local ``Deployment`` by calling a
deployment handle. Each replica loads the version from the artifact store itself (sha256
verified on the way) and batches with our batcher. Graphs and traffic splits compose
``RayDeployment`` objects exactly as they compose local ones, so their behaviour is the same
code on both backends. See docs/decisions/0019-ray-backend.md.

This is the only module that imports ``ray``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ray Serve reads its flags when ``ray.serve`` is imported, in this process and (through the
# environment they inherit) in the Ray processes a local instance starts. The throughput-
# optimized mode is Ray's fastest (gRPC between handles and replicas, user code on the
# replica's own loop, buffered request logs); measured in bench/ray.py. Direct ingress (the
# replica answering HTTP itself) is left off: our data plane answers HTTP.
for _flag, _value in (("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1"),
                      ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0"),
                      ("RAY_USAGE_STATS_ENABLED", "0")):
    os.environ.setdefault(_flag, _value)

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve.exceptions import BackPressureError  # noqa: E402

from modelyard.backends.local import LocalBackend, example_inputs  # noqa: E402
from modelyard.control.registry import RegistryService  # noqa: E402
from modelyard.domain.deployment import DeploymentSpec  # noqa: E402
from modelyard.domain.errors import (  # noqa: E402
    DeadlineExceeded,
    ModelFailed,
    ModelyardError,
    NotReady,
    Overloaded,
)
from modelyard.domain.registry import ModelVersion  # noqa: E402
from modelyard.serving.batcher import Arrays, Batcher, BatchObserver  # noqa: E402
from modelyard.serving.deployment import Deployment, cache_key  # noqa: E402
from modelyard.serving.metrics import ServingMetrics  # noqa: E402
from modelyard.store.artifacts import ArtifactStore  # noqa: E402
from modelyard.store.db import Database  # noqa: E402

log = logging.getLogger("modelyard.backend")

APP_PREFIX = "modelyard-"
# How long a new application may take to have every replica running (load, warm-up,
# scheduling); past it the endpoint reports the failure and the previous version serves on.
DEPLOY_TIMEOUT_S = 300.0
# The answer may take the request's deadline plus this to come back over Ray before the front
# gives up (the replica's batcher enforces the deadline itself and answers 504).
TRANSPORT_GRACE_S = 1.0


class ModelReplica:
    """One Ray Serve replica of one model version: our ``Deployment`` (batcher, warm-up)."""

    def __init__(self, artifacts_url: str, cache_dir: str, version: ModelVersion,
                 spec: DeploymentSpec) -> None:
        from modelyard import flavors

        store = ArtifactStore(artifacts_url, Path(cache_dir))
        folder = store.materialize(version.artifact_digest)  # verifies the sha256
        predictor = flavors.get(version.flavor).load(folder, version.flavor_options,
                                                     trusted=version.lineage.trusted)
        # One model thread per Ray replica: Ray's replicas are the replication; the response
        # cache lives in the front, where a hit costs no hop.
        self.deployment = Deployment(version, [predictor],
                                     spec.merged({"replicas": 1, "cache_max_entries": 0}))
        self.deployment.warm_up(example_inputs(version))

    def warmup_ms(self) -> float:
        return self.deployment.warmup_ms

    async def predict(self, inputs: dict[str, np.ndarray], timeout_s: float,
                      priority: int) -> dict[str, np.ndarray] | ModelyardError:
        """The outputs, or the refusal/failure as a value: it reaches the front as itself
        (a raised one would arrive wrapped in Ray's task error)."""
        try:
            return await self.deployment.predict(inputs, timeout_s, priority)
        except ModelyardError as exc:
            return exc


class _FrontAdmission(Batcher):
    """Admission for a ``RayDeployment`` in the front process: refuses cheaply (before the
    body is decoded) once as many requests are in flight as the replicas may queue. Nothing
    is batched here; the replicas batch."""

    def __init__(self, owner: RayDeployment) -> None:
        super().__init__([], owner.spec, owner.observer, name=owner.version.ref)
        self.owner = owner

    def refusal(self, rows: int, timeout_s: float) -> str | None:
        if self.owner.in_flight >= self.owner.capacity:
            return f"{self.owner.in_flight} requests in flight (the replicas' queues are full)"
        return None


@dataclass(eq=False)
class RayDeployment(Deployment):
    """A model deployment whose replicas are Ray Serve replicas; answers like ``Deployment``."""

    handle: Any = None  # ray.serve.handle.DeploymentHandle
    app_name: str = ""
    capacity: int = 1  # requests in flight before the front refuses

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_flight = 0
        self._sync: Any = None

    def batcher(self) -> Batcher:
        if self._batcher is None:
            self._batcher = _FrontAdmission(self)
        return self._batcher

    async def predict(self, inputs: Arrays, timeout_s: float,
                      priority: int = 1) -> dict[str, np.ndarray]:
        cache = self._cache
        key = None
        if cache is not None:
            key = cache_key(inputs)
            hit = cache.get(key)
            if hit is not None:
                self._observe_cache(True)
                return hit
            self._observe_cache(False)
        if self.in_flight >= self.capacity:
            raise Overloaded(f"{self.version.ref} is overloaded; retry later")
        observer = self.observer
        self.in_flight += 1
        if observer is not None:
            observer.in_flight(1)
        try:
            response = self.handle.predict.remote(dict(inputs), timeout_s, priority)
            try:
                answer = await asyncio.wait_for(response, timeout_s + TRANSPORT_GRACE_S)
            except TimeoutError:
                response.cancel()
                raise DeadlineExceeded(f"{self.version.ref}: no answer within the "
                                       "deadline") from None
            except BackPressureError as exc:
                raise Overloaded(f"{self.version.ref} is overloaded; retry later") from exc
            except ModelyardError:
                raise
            except Exception as exc:  # a replica died, the cluster went away...
                raise ModelFailed(f"{self.version.ref} failed on Ray: "
                                  f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.in_flight -= 1
            if observer is not None:
                observer.in_flight(-1)
        if isinstance(answer, ModelyardError):
            raise answer
        if cache is not None:
            cache[key] = answer
        return answer

    def predict_sync(self, inputs: Arrays) -> dict[str, np.ndarray]:
        if self._sync is None:
            self._sync = RayCluster.sync_handle(self.app_name)
        answer = self._sync.predict.remote(dict(inputs), 60.0, 1).result()
        if isinstance(answer, ModelyardError):
            raise answer
        return dict(answer)

    def warm_up(self, example: Arrays | None) -> None:
        """The replicas warmed up before they reported healthy."""

    def retire(self) -> None:
        """Delete the application; Ray drains the replicas' in-flight requests first."""
        name = self.app_name

        def delete() -> None:
            try:
                serve.delete(name)
            except Exception:  # the cluster may be gone already (shutdown)
                log.warning("could not delete Ray Serve application %s", name, exc_info=True)

        threading.Thread(target=delete, name=f"retire-{name}", daemon=True).start()


class RayCluster:
    """Every call this backend makes to the cluster: connect, deploy, wait, shut down."""

    def __init__(self, address: str = "", num_cpus: int | None = None,
                 temp_dir: str | None = None) -> None:
        """``address``: empty starts a local Ray instance in this process (``num_cpus``
        logical CPUs, default all cores); ``auto`` joins the one running on this machine;
        ``ray://host:port`` goes through Ray Client."""
        self.address = address
        # A Ray already initialised in this process (tests, notebooks) stays its owner's.
        self.owned = not ray.is_initialized()
        if self.owned:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "namespace": "modelyard"}
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, _temp_dir=temp_dir,
                         **options)
        # No Ray HTTP proxy: our data plane answers HTTP and calls the replicas' handles.
        serve.start(proxy_location="Disabled")

    def deploy(self, name: str, version: ModelVersion, spec: DeploymentSpec,
               artifacts: ArtifactStore) -> tuple[Any, float]:
        """Start an application of ``spec`` replicas of ``version``; wait until every replica
        is running (loaded and warm). Returns its handle and the replicas' warm-up time."""
        options: dict[str, Any] = {
            "name": "model",
            "ray_actor_options": {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus},
            # Enough concurrency for our batcher to form full batches and queue behind them;
            # it admits and sheds within this itself.
            "max_ongoing_requests": spec.max_queue_size + spec.max_batch_size,
            "max_queued_requests": -1,
        }
        if spec.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": int(spec.autoscaling.get("min_replicas", 1)),
                "max_replicas": int(spec.autoscaling["max_replicas"]),
                "target_ongoing_requests": float(
                    spec.autoscaling.get("target_ongoing_requests", spec.max_batch_size)),
            }
        else:
            options["num_replicas"] = spec.replicas
        replica: Any = serve.deployment(ModelReplica)
        app = replica.options(**options).bind(
            artifacts.url, str(artifacts.cache_dir), version, spec)
        # Its router binds to the event loop of the first call: the data plane's.
        handle = serve._run(app, name=name, route_prefix=None, _blocking=False)
        try:
            self.wait_running(name)
            warmup = float(self.sync_handle(name).warmup_ms.remote().result(timeout_s=60))
        except BaseException:
            with_ignored(serve.delete, name)
            raise
        return handle, warmup

    @staticmethod
    def sync_handle(name: str) -> Any:
        """A handle for calls from threads without an event loop (its router runs on Ray
        Serve's own loop thread)."""
        handle = serve.get_app_handle(name)
        handle._init(_run_router_in_separate_loop=True)
        return handle

    @staticmethod
    def wait_running(name: str, timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            app = serve.status().applications.get(name)
            status = str(app.status) if app is not None else "NOT_STARTED"
            if status.endswith("RUNNING"):
                return
            if "FAILED" in status or time.monotonic() > deadline:
                message = app.message if app is not None else ""
                for deployment in (app.deployments.values() if app is not None else []):
                    message = deployment.message or message
                if "FAILED" in status:
                    raise ModelFailed(f"Ray Serve could not start {name}: {message}")
                raise NotReady(f"Ray Serve did not start {name} within {timeout_s:.0f} s "
                               f"(not enough CPUs/GPUs for its replicas?): {message}")
            time.sleep(0.1)

    def shutdown(self) -> None:
        if self.owned:
            with_ignored(serve.shutdown)
            ray.shutdown()


def with_ignored(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # best effort while tearing down
        log.debug("ignored failure in %s", fn, exc_info=True)


class RayBackend(LocalBackend):
    """The local backend's reconciler and tables, with model deployments on Ray Serve."""

    def __init__(self, db: Database, registry: RegistryService, artifacts: ArtifactStore,
                 cluster: RayCluster, interval_s: float = 2.0,
                 metrics: ServingMetrics | None = None,
                 on_reconcile: Any = None) -> None:
        super().__init__(db, self._deploy, interval_s, metrics, on_reconcile=on_reconcile)
        self.registry = registry
        self.artifacts = artifacts
        self.cluster = cluster

    def _deploy(self, version: ModelVersion, spec: DeploymentSpec,
                observer: BatchObserver | None) -> RayDeployment:
        self.registry.check_signed(version)  # the store is here; replicas only load
        name = f"{APP_PREFIX}{version.model}-{version.version}-{uuid.uuid4().hex[:8]}"
        handle, warmup_ms = self.cluster.deploy(name, version, spec, self.artifacts)
        replicas = int(spec.autoscaling["max_replicas"]) if spec.autoscaling \
            else spec.replicas
        log.info("Ray Serve application %s runs %s", name, version.ref)
        return RayDeployment(version, [], spec, warmup_ms, observer, handle=handle,
                             app_name=name, capacity=spec.max_queue_size * replicas)

    def close(self) -> None:
        """Delete every application, then stop Ray if this process started it."""
        names = [d.app_name for s in self._table.values() for d in _ray_units(s)]
        self._table = {}
        for name in names:
            with_ignored(serve.delete, name)
        self.cluster.shutdown()


def _ray_units(state: Any) -> list[RayDeployment]:
    deployment = state.deployment
    units = deployment.deployments() if hasattr(deployment, "deployments") else [deployment]
    return [d for d in units if isinstance(d, RayDeployment)]


def from_settings(settings: Any, db: Database, registry: RegistryService,
                  artifacts: ArtifactStore, metrics: ServingMetrics | None,
                  on_reconcile: Any = None) -> RayBackend:
    """The backend ``modelyard serve --backend ray`` runs (address from ``ray_address``)."""
    cluster = RayCluster(settings.ray_address)
    return RayBackend(db, registry, artifacts, cluster, settings.reconcile_interval_s,
                      metrics, on_reconcile=on_reconcile)
