"""The ray backend: every model deployment runs as a Ray Serve application.

The control plane stays in the Modelyard process: the same reconciler as the local backend
(``LocalBackend``) resolves endpoints from the store, and the same data plane (``FastPath``:
auth, signature checks, traffic choice, shadows, graphs, problem+json) answers HTTP. Only the
loader differs: instead of loading a version in-process it deploys a Ray Serve application of
``ModelReplica`` replicas (replicas or autoscaling, CPUs and GPUs from the DeploymentSpec) and
returns a ``RayDeployment``: a local ``Deployment`` (cache, admission, deadlines, our adaptive
batcher) whose predictors are lanes to the replicas, so concurrent requests cross to Ray as
one call per batch. Each replica loads the version from the artifact store itself (sha256
verified on the way), warms it up, and runs each batch it receives at once. Graphs and
traffic splits compose
``RayDeployment`` objects exactly as they compose local ones, so their behaviour is the same
code on both backends. See docs/decisions/0019-ray-backend.md.

Deployments with ``load: lazy`` instead share a pool of replicas that each hold many models
under a memory budget (``ray_pool.py``, docs/decisions/0027). Each server owns its
applications (their names carry its id) through a named actor that dies with it, so a server
that died without deleting them has them collected by the next one (``collect_orphans``).

This module and ``ray_pool.py`` are the only ones that import ``ray``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

# Ray Serve reads its flags when ``ray.serve`` is imported, in this process and (through the
# environment they inherit) in the Ray processes a local instance starts. The throughput-
# optimized mode is Ray's fastest (gRPC between handles and replicas, user code on the
# replica's own loop, buffered request logs); measured in bench/ray.py. Ray's own direct
# ingress is left off: a replica answers HTTP itself with our data plane instead
# (backends/ray_ingress.py; why not Ray's: docs/decisions/0019-ray-backend.md).
for _flag, _value in (("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1"),
                      ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0"),
                      ("RAY_USAGE_STATS_ENABLED", "0")):
    os.environ.setdefault(_flag, _value)

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.experimental import internal_kv  # noqa: E402
from ray.serve.exceptions import BackPressureError  # noqa: E402

from modelyard.backends.base import EndpointState  # noqa: E402
from modelyard.backends.local import LocalBackend, example_inputs  # noqa: E402
from modelyard.backends.ray_ingress import DirectConfig, DirectIngress, port_range  # noqa: E402
from modelyard.backends.ray_pool import (  # noqa: E402
    POOL_NAMESPACE,
    ModelPool,
    PoolConfig,
    PoolShape,
    pool_key,
    pool_stats,
)
from modelyard.control.registry import RegistryService  # noqa: E402
from modelyard.domain.deployment import DeploymentSpec  # noqa: E402
from modelyard.domain.errors import (  # noqa: E402
    ModelFailed,
    ModelyardError,
    NotReady,
    Overloaded,
    ValidationFailed,
)
from modelyard.domain.registry import Endpoint, ModelVersion  # noqa: E402
from modelyard.serving.batcher import Arrays, BatchObserver  # noqa: E402
from modelyard.serving.deployment import Deployment  # noqa: E402
from modelyard.serving.metrics import ServingMetrics  # noqa: E402
from modelyard.settings import Settings  # noqa: E402
from modelyard.store.artifacts import ArtifactStore  # noqa: E402
from modelyard.store.db import Database  # noqa: E402

log = logging.getLogger("modelyard.backend")
_INIT_LOCK = threading.Lock()

APP_PREFIX = "modelyard-"
# The named actor that stands for a live server (its id is in its applications' names); it
# dies with the server's Ray driver, which is how other servers know the server is gone.
OWNER_PREFIX = "modelyard-owner-"
ORPHAN_SWEEP_S = 60.0
# How long a new application may take to have every replica running (load, warm-up,
# scheduling); past it the endpoint reports the failure and the previous version serves on.
DEPLOY_TIMEOUT_S = 300.0
# A batch's call to a replica: the longest it may take (the front's batcher enforces each
# request's own deadline), and the slack for the answer to come back over Ray.
REPLICA_TIMEOUT_S = 600.0
TRANSPORT_GRACE_S = 5.0
# How often a job's Ray task is checked for the job's cancellation.
TASK_POLL_S = 0.5
# Batches in flight per replica: one computing while the next crosses the network.
LANES_PER_REPLICA = 2
# Where replicas publish their direct listeners' URLs (Ray's key-value store, per app).
DIRECT_NAMESPACE = "modelyard-direct"
# The custom autoscaling metric replicas report, and the policy that adds it (import path:
# Serve's controller imports it, so modelyard must be installed on the head node).
DIRECT_LOAD = "modelyard_direct_batches"
AUTOSCALING_POLICY = "modelyard.backends.ray:autoscaling_policy"


class ModelReplica:
    """One Ray Serve replica of one model version. It receives whole batches (the front's
    batcher formed them) and runs each at once: a second queue here would only add a hop
    (measured: docs/decisions/0019-ray-backend.md). With ``direct``, it also answers its
    endpoint's HTTP requests itself (``DirectIngress``); then the front's batches join the
    same batcher, so neither stalls the loop the listener runs on."""

    # Ray Serve awaits an async constructor on the replica's loop, where the listener runs.
    async def __init__(  # type: ignore[misc]
            self, artifacts_url: str, cache_dir: str, version: ModelVersion,
            spec: DeploymentSpec, direct: DirectConfig | None = None) -> None:
        from modelyard import flavors

        store = ArtifactStore(artifacts_url, Path(cache_dir))
        folder = store.materialize(version.artifact_digest)  # verifies the sha256
        predictor = flavors.get(version.flavor).load(folder, version.flavor_options,
                                                     trusted=version.lineage.trusted)
        # Ray's replicas are the replication; the response cache lives in the front, where a
        # hit costs no hop.
        self.deployment = Deployment(version, [predictor],
                                     spec.merged({"replicas": 1, "cache_max_entries": 0}))
        self.deployment.warm_up(example_inputs(version))
        self.ingress: DirectIngress | None = None
        self._published = ""
        if direct is not None:
            await self._listen(direct, spec)

    async def _listen(self, direct: DirectConfig, spec: DeploymentSpec) -> None:
        """Start the direct listener and publish its URL. If it cannot start (no free port,
        the store out of reach), the replica still serves through the front, and says why."""
        ingress = DirectIngress(direct, self.deployment, spec)
        try:
            url = await ingress.start(ray.util.get_node_ip_address())
        except Exception:
            log.exception("endpoint %s: no direct listener on this replica (it answers "
                          "through the server only)", direct.endpoint)
            await ingress.stop()
            return
        self.ingress = ingress
        self.deployment.observer = ingress.metrics.observer(direct.endpoint,
                                                            self.deployment.version.ref)
        context = serve.get_replica_context()
        self._published = f"{context.app_name}/{context.replica_id.unique_id}"
        internal_kv._internal_kv_put(self._published, url, namespace=DIRECT_NAMESPACE)

    def warmup_ms(self) -> float:
        return self.deployment.warmup_ms

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's hook for custom autoscaling metrics: the direct listener's load, which
        Ray's own count of ongoing (handle) requests misses."""
        return {DIRECT_LOAD: self.ingress.load() if self.ingress is not None else 0.0}

    def __del__(self) -> Any:
        """Ray Serve calls this when it stops the replica (and awaits what it returns): stop
        listening, let in-flight requests finish, write the inference log. Returns nothing
        the second time (when Python collects the object)."""
        ingress, self.ingress = getattr(self, "ingress", None), None
        if ingress is None:
            return None
        return self._stop(ingress)

    async def _stop(self, ingress: DirectIngress) -> None:
        if self._published:
            with_ignored(partial(internal_kv._internal_kv_del, self._published,
                                 namespace=DIRECT_NAMESPACE))
        await ingress.stop()

    async def predict(self, inputs: dict[str, np.ndarray], timeout_s: float,
                      priority: int) -> dict[str, np.ndarray] | ModelyardError:
        """The outputs, or the failure as a value: it reaches the front as itself (a raised
        one would arrive wrapped in Ray's task error). Computed on the replica's loop (one
        batch at a time is all one model thread can do anyway), or by the batcher when the
        loop also serves HTTP."""
        try:
            if self.ingress is not None:
                return await self.deployment.predict(inputs, timeout_s, priority)
            return self.deployment.predict_sync(inputs)
        except ModelyardError as exc:
            return exc


class ReplicaPredictor:
    """A ``Predictor`` whose ``predict`` is one call to the application's replicas (Ray
    routes it to the least busy). The front's batcher stacks concurrent requests and hands
    each batch to one of these, on its own thread: one Ray call per batch, not per request."""

    def __init__(self, app_name: str, ref: str) -> None:
        self.app_name = app_name
        self.ref = ref
        self._handle: Any = None

    def __repr__(self) -> str:
        return f"ReplicaPredictor({self.app_name!r})"

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        try:
            # The front's batcher already enforces each request's deadline; the replica's
            # only guards against a call that never returns.
            answer = self._call(dict(inputs)).result(
                timeout_s=REPLICA_TIMEOUT_S + TRANSPORT_GRACE_S)
        except BackPressureError as exc:
            raise Overloaded(f"{self.ref} is overloaded; retry later") from exc
        if isinstance(answer, ModelyardError):
            raise answer
        return dict(answer)

    def _call(self, inputs: dict[str, np.ndarray]) -> Any:
        if self._handle is None:
            self._handle = RayCluster.sync_handle(self.app_name)
        return self._handle.predict.remote(inputs, REPLICA_TIMEOUT_S, 1)


class PoolPredictor(ReplicaPredictor):
    """A lane to a model pool (``ray_pool.ModelPool``): each call names the version, and
    Ray's multiplexed routing prefers the pool replicas that hold it."""

    def __init__(self, app_name: str, version: ModelVersion, spec: DeploymentSpec) -> None:
        super().__init__(app_name, version.ref)
        self.key = pool_key(version, spec)
        self.version = version
        self.spec = spec

    def __repr__(self) -> str:
        return f"PoolPredictor({self.app_name!r}, {self.key!r})"

    def _call(self, inputs: dict[str, np.ndarray]) -> Any:
        if self._handle is None:
            self._handle = RayCluster.sync_handle(self.app_name).options(
                multiplexed_model_id=self.key)
        return self._handle.predict.remote(self.key, self.version, self.spec, inputs,
                                           REPLICA_TIMEOUT_S, 1)


@dataclass(eq=False)
class RayDeployment(Deployment):
    """A model deployment whose replicas are Ray Serve replicas; answers like ``Deployment``
    (the same cache, admission and batcher, in front of ``ReplicaPredictor`` lanes)."""

    app_name: str = ""
    direct: str = ""  # the endpoint its replicas answer for on their own ports, if any
    in_process: ClassVar[bool] = False  # the model lives in Ray's replicas

    def direct_urls(self) -> list[str]:
        """Where this deployment's replicas answer HTTP themselves (empty: only through
        the server)."""
        return RayCluster.direct_urls(self.app_name) if self.direct else []

    def warm_up(self, example: Arrays | None) -> None:
        """The replicas warmed up before they reported healthy."""

    def retire(self) -> None:
        """Stop the front's batcher, then delete the application (Ray drains the replicas'
        in-flight requests first)."""
        super().retire()
        name = self.app_name

        def delete() -> None:
            try:
                serve.delete(name)
            except Exception:  # the cluster may be gone already (shutdown)
                log.warning("could not delete Ray Serve application %s", name, exc_info=True)
            RayCluster.forget_direct(name)  # replicas that died without unpublishing

        threading.Thread(target=delete, name=f"retire-{name}", daemon=True).start()


@dataclass(eq=False)
class PooledDeployment(RayDeployment):
    """A ``load: lazy`` deployment on the ray backend: the front (cache, admission, batcher)
    in the server, the model in whichever replicas of its pool load it on demand."""

    def retire(self) -> None:
        """Stop the front's batcher; the pool stays (other versions use it) and unloads the
        version when it needs the room."""
        Deployment.retire(self)

    def pool_status(self) -> dict[str, Any]:
        """The pool's application, its replicas, and how many hold this version now."""
        key = pool_key(self.version, self.spec)
        stats = pool_stats(self.app_name)
        return {"application": self.app_name, "replicas": len(stats),
                "loaded_on": sum(1 for replica in stats.values() if key in replica["loaded"])}


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
        self.owner = uuid.uuid4().hex[:8]  # in every application name this server deploys
        if self.owned:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "namespace": "modelyard"}
            if address:
                ray.init(address=address, **options)
            else:  # "local": its own instance, not one found running on the machine
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,
                         _temp_dir=temp_dir, **options)
        # No Ray HTTP proxy: our data plane answers HTTP and calls the replicas' handles.
        serve.start(proxy_location="Disabled")
        self._presence = _Presence.options(  # type: ignore[attr-defined]
            name=OWNER_PREFIX + self.owner, namespace="modelyard", num_cpus=0).remote()
        self._swept = 0.0

    def app_name(self, what: str) -> str:
        """A name for a new application of this server's."""
        return f"{APP_PREFIX}{self.owner}-{what}"

    def collect_orphans(self, every_s: float = 0.0) -> list[str]:
        """Delete the applications of servers that are gone (their owner actor died with
        them), at most once per ``every_s``. Returns the names deleted."""
        if time.monotonic() - self._swept < every_s:
            return []
        self._swept = time.monotonic()
        alive: dict[str, bool] = {self.owner: True}
        deleted = []
        for name in list(serve.status().applications):
            owner = _owner_of(name)
            if owner is None:
                continue
            if owner not in alive:
                alive[owner] = _is_alive(owner)
            if not alive[owner]:
                log.warning("deleting Ray Serve application %s: the server that deployed "
                            "it is gone", name)
                with_ignored(serve.delete, name)
                RayCluster.forget_direct(name)
                forget_pool(name)
                deleted.append(name)
        return deleted

    def deploy_pool(self, name: str, shape: PoolShape, config: PoolConfig,
                    artifacts: ArtifactStore) -> None:
        """Start a model pool's application and wait until its replicas run."""
        options: dict[str, Any] = {
            "name": "pool",
            "ray_actor_options": {"num_cpus": shape.num_cpus, "num_gpus": shape.num_gpus},
            # Batches of every model the replica holds, each model on its own thread.
            "max_ongoing_requests": 16 * LANES_PER_REPLICA,
        }
        if config.max_replicas > config.replicas:
            options["autoscaling_config"] = {"min_replicas": config.replicas,
                                             "max_replicas": config.max_replicas,
                                             "target_ongoing_requests": 2.0}
        else:
            options["num_replicas"] = config.replicas
        pool: Any = serve.deployment(ModelPool)
        app = pool.options(**options).bind(artifacts.url, str(artifacts.cache_dir), config)
        serve._run(app, name=name, route_prefix=None, _blocking=False)
        try:
            self.wait_running(name)
        except BaseException:
            with_ignored(serve.delete, name)
            raise

    def deploy(self, name: str, version: ModelVersion, spec: DeploymentSpec,
               artifacts: ArtifactStore, direct: DirectConfig | None = None) -> float:
        """Start an application of ``spec`` replicas of ``version``; wait until every replica
        is running (loaded, warm and, with ``direct``, listening). Returns the replicas'
        warm-up time (ms)."""
        options: dict[str, Any] = {
            "name": "model",
            "ray_actor_options": {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus},
            # Batches from every front's lanes; more wait in the callers' routers.
            "max_ongoing_requests": 4 * LANES_PER_REPLICA,
        }
        if spec.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": int(spec.autoscaling.get("min_replicas", 1)),
                "max_replicas": int(spec.autoscaling["max_replicas"]),
                # Ongoing requests here are the fronts' batches: one in flight per replica
                # keeps each busy without a queue.
                "target_ongoing_requests": float(
                    spec.autoscaling.get("target_ongoing_requests", 1)),
                # Ray's defaults (30 s, 600 s, 30 s) where the spec says nothing.
                **{key: float(spec.autoscaling[key])
                   for key in ("upscale_delay_s", "downscale_delay_s", "look_back_period_s")
                   if key in spec.autoscaling},
            }
            if direct is not None:
                options["autoscaling_config"]["policy"] = {"policy_function": AUTOSCALING_POLICY}
        else:
            options["num_replicas"] = spec.replicas
        replica: Any = serve.deployment(ModelReplica)
        app = replica.options(**options).bind(
            artifacts.url, str(artifacts.cache_dir), version, spec, direct)
        serve._run(app, name=name, route_prefix=None, _blocking=False)
        try:
            self.wait_running(name)
            warmup = float(self.sync_handle(name).warmup_ms.remote().result(timeout_s=60))
        except BaseException:
            with_ignored(serve.delete, name)
            raise
        return warmup

    @staticmethod
    def direct_urls(name: str) -> list[str]:
        """The URLs the application's replicas published (one per running replica)."""
        keys = internal_kv._internal_kv_list(f"{name}/", namespace=DIRECT_NAMESPACE)
        urls = (internal_kv._internal_kv_get(key, namespace=DIRECT_NAMESPACE) for key in keys)
        return sorted(url.decode() for url in urls if url)

    @staticmethod
    def forget_direct(name: str) -> None:
        with_ignored(partial(internal_kv._internal_kv_del, f"{name}/", del_by_prefix=True,
                             namespace=DIRECT_NAMESPACE))

    @staticmethod
    def sync_handle(name: str) -> Any:
        """A handle for calls from threads without an event loop (its router runs on Ray
        Serve's own loop thread)."""
        handle = serve.get_app_handle(name)  # one per application, cached by Serve
        with _INIT_LOCK:
            if not handle.is_initialized:
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
        """Stop the local instance this process started; from a cluster it joined, only
        disconnect (Serve there may run other applications; ours were deleted)."""
        with_ignored(ray.kill, self._presence)
        if self.owned:
            if not self.address:
                with_ignored(serve.shutdown)
            ray.shutdown()


@ray.remote
class _Presence:
    """Stands for a live server: a named actor owned by the server's Ray driver, so Ray ends
    it when the server's process ends, however it ends (docs/decisions/0027)."""

    def ping(self) -> bool:
        return True


def _owner_of(name: str) -> str | None:
    """The server id in one of our application names (``modelyard-OWNER-...``)."""
    if not name.startswith(APP_PREFIX):
        return None
    owner = name[len(APP_PREFIX):].split("-", 1)[0]
    return owner if len(owner) == 8 and all(c in "0123456789abcdef" for c in owner) else None


def _is_alive(owner: str) -> bool:
    try:
        ray.get_actor(OWNER_PREFIX + owner, namespace="modelyard")
    except ValueError:  # no such live actor: its driver (the server) is gone
        return False
    return True


def forget_pool(name: str) -> None:
    """Drop what a deleted pool's replicas published (ones that died could not)."""
    with_ignored(partial(internal_kv._internal_kv_del, f"{name}/", del_by_prefix=True,
                         namespace=POOL_NAMESPACE))


def with_ignored(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # best effort while tearing down
        log.debug("ignored failure in %s", fn, exc_info=True)


class RayBackend(LocalBackend):
    """The local backend's reconciler and tables, with model deployments on Ray Serve.

    ``direct``: the server's settings when replicas should answer HTTP themselves. Every
    model deployment loaded for an endpoint's own model or its split (not a graph's nodes)
    then gets a listener bound to that endpoint; it answers only while the endpoint is a
    single model served by that deployment (``ray_ingress.DirectView``), so a deployment
    reused from a split back to one model serves directly again."""

    def __init__(self, db: Database, registry: RegistryService, artifacts: ArtifactStore,
                 cluster: RayCluster, interval_s: float = 2.0,
                 metrics: ServingMetrics | None = None,
                 on_reconcile: Any = None, direct: Settings | None = None,
                 direct_ports: tuple[int, int] = (30000, 31000),
                 pool: PoolConfig | None = None) -> None:
        super().__init__(db, self._deploy, interval_s, metrics, on_reconcile=on_reconcile)
        self.registry = registry
        self.artifacts = artifacts
        self.cluster = cluster
        self.direct = direct
        self.direct_ports = direct_ports
        self.pool = pool or PoolConfig()
        self.pools: dict[PoolShape, str] = {}  # the model pools started, by resource shape
        # The endpoint a load is for, set around the reconciler's calls (a lazy endpoint's
        # first load happens on a request's thread: it gets no listener).
        self._loading_for = threading.local()

    def reconcile(self) -> None:
        super().reconcile()
        try:
            self.cluster.collect_orphans(every_s=ORPHAN_SWEEP_S)
        except Exception:  # the sweep is housekeeping: serving goes on without it
            log.warning("could not look for applications of servers that are gone",
                        exc_info=True)

    def _load_or_defer(self, name: str, version: ModelVersion, spec: DeploymentSpec,
                       observer: BatchObserver | None) -> Deployment:
        with self._for_endpoint(name):
            return super()._load_or_defer(name, version, spec, observer)

    def _load_part(self, name: str, version: ModelVersion, spec: DeploymentSpec,
                   observer: BatchObserver | None) -> Deployment:
        """``load: lazy`` goes to the model pool of its resource shape (many models per
        replica under a memory budget); anything else gets its own application."""
        if spec.load != "lazy":
            return self.load(version, spec, observer)
        self.registry.check_signed(version)
        shape = PoolShape.of(spec)
        app = self.pools.get(shape)
        if app is None:
            app = self.cluster.app_name(shape.label)
            self.cluster.deploy_pool(app, shape, self.pool, self.artifacts)
            self.pools[shape] = app
            log.info("Ray Serve application %s is the model pool for %s", app, shape)
        replicas = max(self.pool.replicas, self.pool.max_replicas)
        lanes = [PoolPredictor(app, version, spec) for _ in range(LANES_PER_REPLICA * replicas)]
        return PooledDeployment(version, lanes, spec, 0.0, observer, app_name=app)

    def _traffic_state(self, endpoint: Endpoint, versions: dict[str, ModelVersion],
                       current: EndpointState | None) -> EndpointState:
        with self._for_endpoint(endpoint.name):
            return super()._traffic_state(endpoint, versions, current)

    @contextlib.contextmanager
    def _for_endpoint(self, name: str) -> Iterator[None]:
        self._loading_for.name = name
        try:
            yield
        finally:
            self._loading_for.name = ""

    def _deploy(self, version: ModelVersion, spec: DeploymentSpec,
                observer: BatchObserver | None) -> RayDeployment:
        self.registry.check_signed(version)  # the store is here; replicas only load
        name = self.cluster.app_name(f"{version.model}-{version.version}-"
                                     f"{uuid.uuid4().hex[:8]}")
        endpoint = getattr(self._loading_for, "name", "")
        direct = DirectConfig.of(endpoint, self.direct, self.direct_ports) \
            if endpoint and self.direct is not None else None
        warmup_ms = self.cluster.deploy(name, version, spec, self.artifacts, direct)
        replicas = int(spec.autoscaling["max_replicas"]) if spec.autoscaling \
            else spec.replicas
        log.info("Ray Serve application %s runs %s", name, version.ref)
        lanes = [ReplicaPredictor(name, version.ref)
                 for _ in range(LANES_PER_REPLICA * replicas)]
        return RayDeployment(version, lanes, spec, warmup_ms, observer, app_name=name,
                             direct=endpoint if direct is not None else "")

    @staticmethod
    def offload(fn: Any, args: tuple[Any, ...], resources: Any,
                check: Callable[[], None] | None = None) -> Any:
        """Where the server's job worker runs offloaded work (``ctx.offload``,
        ``ctx.elsewhere``): a Ray task."""
        return run_task(fn, args, resources, check)

    def close(self) -> None:
        """Delete every application, then stop Ray if this process started it."""
        units = {id(d): d for s in self._table.values() for d in _ray_units(s)}.values()
        self._table = {}
        for unit in units:
            Deployment.retire(unit)  # the front's batcher: queued requests finish first
            if not isinstance(unit, PooledDeployment):
                with_ignored(serve.delete, unit.app_name)
                RayCluster.forget_direct(unit.app_name)
        for app in self.pools.values():
            with_ignored(serve.delete, app)
            forget_pool(app)
        self.pools = {}
        self.cluster.shutdown()


def _ray_units(state: Any) -> list[RayDeployment]:
    deployment = state.deployment
    units = deployment.deployments() if hasattr(deployment, "deployments") else [deployment]
    return [d for d in units if isinstance(d, RayDeployment)]


def autoscaling_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Ray Serve's queue-length policy (replicas = ongoing requests / target per replica),
    with the direct listeners' load added to the handle requests Ray counts itself, both in
    full batches. Serve applies the deployment's bounds and delays around it."""
    replicas = ctx.current_num_replicas
    if replicas == 0:
        return ctx.target_num_replicas, {}
    direct = sum(dict(ctx.aggregated_metrics or {}).get(DIRECT_LOAD, {}).values())
    wanted = ctx.config.get_target_ongoing_requests() * replicas
    return replicas * (ctx.total_num_requests + direct) / wanted, {}


def run_task(fn: Any, args: tuple[Any, ...], resources: Any,
             check: Callable[[], None] | None = None) -> Any:
    """Run ``fn(*args)`` as a Ray task with ``resources`` and wait for its result (a job's
    offloaded work). Never retried by Ray: retries are the job queue's, whose step memo makes
    the task run once per job in effect. ``check`` is called every half second while the
    task runs; when it raises (the job was cancelled, its lease lost) the task is cancelled
    (its worker process killed: a training loop need not look for cancellation itself) and
    the error goes on."""
    options: dict[str, Any] = {"max_retries": 0}
    for key, value in dict(resources).items():
        options[key] = int(value) if key == "memory" else float(value)
    options.setdefault("num_cpus", 1.0)
    ref = ray.remote(fn).options(**options).remote(*args)
    while check is not None:
        ready, _ = ray.wait([ref], timeout=TASK_POLL_S)
        if ready:
            break
        try:
            check()
        except BaseException:
            with_ignored(partial(ray.cancel, ref, force=True))
            raise
    return ray.get(ref)


class RayTasks:
    """A ``modelyard worker`` process's way to Ray: offloaded job work (``ctx.offload``,
    ``ctx.elsewhere``, a retraining cycle's training) runs as Ray tasks on the cluster at
    ``address`` (``auto``, ``ray://host:port``, a GCS address). No Serve, no applications."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.owned = not ray.is_initialized()
        if self.owned:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     namespace="modelyard")

    def __repr__(self) -> str:
        return f"RayTasks({self.address!r})"

    @staticmethod
    def offload(fn: Any, args: tuple[Any, ...], resources: Any,
                check: Callable[[], None] | None = None) -> Any:
        return run_task(fn, args, resources, check)

    def close(self) -> None:
        if self.owned:
            ray.shutdown()


def from_settings(settings: Any, db: Database, registry: RegistryService,
                  artifacts: ArtifactStore, metrics: ServingMetrics | None,
                  on_reconcile: Any = None) -> RayBackend:
    """The backend ``modelyard serve --backend ray`` runs (address from ``ray_address``)."""
    direct = settings if settings.ray_direct_ingress else None
    ports = port_range(os.environ)  # refused here, before Ray starts, if malformed
    pool = PoolConfig.of(settings)
    if pool.replicas < 1 or pool.max_replicas < 0:
        raise ValidationFailed("ray_pool_replicas must be at least 1 and ray_pool_max_replicas "
                               "at least 0", field="ray_pool_replicas")
    cluster = RayCluster(settings.ray_address)
    try:
        cluster.collect_orphans()
    except Exception:  # housekeeping: the server starts without it (the sweep runs again)
        log.warning("could not look for applications of servers that are gone", exc_info=True)
    return RayBackend(db, registry, artifacts, cluster, settings.reconcile_interval_s,
                      metrics, on_reconcile=on_reconcile, direct=direct, direct_ports=ports,
                      pool=pool)
