"""The local backend: every endpoint runs in this process.

A reconciler reads the desired endpoints from the store, resolves each reference (an alias
may have moved), loads and warms any version not yet running, swaps it in atomically, and
drops what was deleted. A version that fails to load leaves the previous one serving and the
error on the endpoint's status. The request path only reads ``self._table``.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from modelyard.backends.base import EndpointState
from modelyard.domain import graph
from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ModelyardError, SignatureRequired
from modelyard.domain.names import ModelRef
from modelyard.domain.registry import Endpoint, ModelVersion
from modelyard.domain.tensors import decode_many
from modelyard.domain.traffic import TrafficPolicy
from modelyard.graph.executor import GraphDeployment, NodeRuntime, load_function
from modelyard.rollout.routing import ShadowRecorder, TrafficDeployment
from modelyard.serving.batcher import BatchObserver
from modelyard.serving.deployment import Deployment
from modelyard.serving.metrics import ServingMetrics
from modelyard.serving.problems import loggable
from modelyard.serving.residency import LazyDeployment, MiB, ModelResidency
from modelyard.store import endpoints as endpoint_repo
from modelyard.store import registry as registry_repo
from modelyard.store.db import Database

log = logging.getLogger("modelyard.backend")

Loader = Callable[[ModelVersion, DeploymentSpec, BatchObserver | None], Deployment]


class LocalBackend:
    def __init__(self, db: Database, load: Loader, interval_s: float = 2.0,
                 metrics: ServingMetrics | None = None,
                 on_reconcile: Callable[[], None] | None = None,
                 memory_budget_mb: float = 0.0, memory_factor: float = 2.0) -> None:
        self.db = db
        # Endpoints deployed with load: lazy share this budget (docs/decisions/0021).
        self.residency = ModelResidency(int(memory_budget_mb * MiB), memory_factor, metrics,
                                        eager=self._model_deployments)
        if metrics is not None:
            metrics.watch_residency(self.residency)
        self.on_reconcile = on_reconcile  # e.g. refresh the data plane's key snapshot
        self.on_shadow: ShadowRecorder | None = None  # where shadow comparisons are recorded
        self.load = load
        self.metrics = metrics
        self.interval_s = interval_s
        self._table: dict[str, EndpointState] = {}
        self._lock = threading.Lock()  # one reconcile at a time
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def state(self, name: str) -> EndpointState | None:
        return self._table.get(name)

    def states(self) -> list[EndpointState]:
        return list(self._table.values())

    def ready(self) -> bool:
        return all(s.deployment is not None for s in self._table.values())

    def reconcile(self) -> None:
        with self._lock:
            if self.on_reconcile is not None:
                self.on_reconcile()
            self._reconcile()

    def _reconcile(self) -> None:
        with self.db.transaction() as session:
            desired: list[tuple[Endpoint, ModelVersion | None, str | None]] = []
            graphs: dict[str, dict[str, ModelVersion]] = {}
            splits: dict[str, dict[str, ModelVersion]] = {}
            for endpoint in endpoint_repo.all_endpoints(session):
                if endpoint.traffic is not None and endpoint.graph is None:
                    try:
                        splits[endpoint.name] = _traffic_versions(session, endpoint)
                        desired.append((endpoint, None, None))
                    except ModelyardError as exc:
                        desired.append((endpoint, None, exc.detail))
                    continue
                if endpoint.graph is not None:
                    try:
                        graphs[endpoint.name] = _graph_versions(session, endpoint)
                        desired.append((endpoint, None, None))
                    except ModelyardError as exc:
                        desired.append((endpoint, None, exc.detail))
                    continue
                try:
                    model, row = registry_repo.resolve(session, ModelRef.parse(endpoint.model_ref))
                    desired.append((endpoint, registry_repo.to_version(model, row), None))
                except ModelyardError as exc:
                    desired.append((endpoint, None, exc.detail))
        table: dict[str, EndpointState] = {}
        for endpoint, version, problem in desired:
            current = self._table.get(endpoint.name)
            running = current.deployment if current else None
            if endpoint.name in graphs:
                table[endpoint.name] = self._graph_state(endpoint, graphs[endpoint.name],
                                                         current)
                continue
            if endpoint.name in splits:
                table[endpoint.name] = self._traffic_state(endpoint, splits[endpoint.name],
                                                           current)
                continue
            if version is None:
                table[endpoint.name] = EndpointState(endpoint, "failed", running, problem)
                continue
            if isinstance(running, GraphDeployment | TrafficDeployment):
                # From a graph or a split back to one model: keep that model if it runs.
                running = next((d for d in _units(current) if d.version.ref == version.ref
                                and d.version.artifact_digest == version.artifact_digest
                                and d.spec == endpoint.deployment), None) \
                    if current is not None else None
            if running is not None and running.version.ref == version.ref and \
                    running.version.artifact_digest == version.artifact_digest and \
                    running.spec == endpoint.deployment:
                table[endpoint.name] = EndpointState(endpoint, "ready", running, None, version.ref)
                continue
            if current is not None and current.target == version.ref and current.error and \
                    current.endpoint.generation == endpoint.generation and not current.retry:
                table[endpoint.name] = current  # failed to load before; don't retry in a loop
                continue
            # Show "loading" while the new version loads; the old one keeps serving.
            self._table = {**self._table, endpoint.name: EndpointState(
                endpoint, "loading", running, None, version.ref)}
            try:
                observer = self.metrics.observer(endpoint.name, version.ref) \
                    if self.metrics else None
                deployment = self._load_or_defer(endpoint.name, version, endpoint.deployment,
                                                 observer)
                table[endpoint.name] = EndpointState(endpoint, "ready", deployment, None,
                                                     version.ref)
                log.info("endpoint %s now serves %s (warm-up %.1f ms)", endpoint.name,
                         version.ref, deployment.warmup_ms)
            except Exception as exc:  # any load failure is reported on the endpoint
                detail = exc.detail if isinstance(exc, ModelyardError) else repr(exc)
                if current is None or current.error != detail:  # retries log once
                    log.error("endpoint %s cannot load %s: %s", endpoint.name, version.ref,
                              loggable(detail))
                table[endpoint.name] = EndpointState(
                    endpoint, "failed", running, detail, version.ref,
                    retry=_heals_by_itself(exc))
        # A graph shares node deployments with its previous build: retire by model deployment.
        live = {id(d) for s in table.values() for d in _units(s)}
        retired = {id(d): d for s in self._table.values() for d in _units(s)
                   if id(d) not in live}.values()
        loaded = any(s.deployment is not None and s.deployment is not getattr(
            self._table.get(name), "deployment", None) for name, s in table.items())
        self._table = table
        if loaded:
            # A model lives as long as its deployment: keep it out of the collector's scans,
            # which would otherwise set the tail latency (see serving/app.py).
            gc.collect()
            gc.freeze()
        for deployment in retired:
            self._call_in_loop(deployment.retire)

    def _load_or_defer(self, name: str, version: ModelVersion, spec: DeploymentSpec,
                       observer: BatchObserver | None) -> Deployment:
        """An endpoint's model: loaded now, or (``load: lazy``) on its first request."""
        return self._load_part(name, version, spec, observer)

    def _load_part(self, name: str, version: ModelVersion, spec: DeploymentSpec,
                   observer: BatchObserver | None) -> Deployment:
        """A model deployment (an endpoint's, a graph node's, a split's version): loaded
        now, or (``load: lazy``) on its first request, under the memory budget."""
        if spec.load == "lazy":
            return LazyDeployment(version, spec, observer,
                                  lambda: self.load(version, spec, observer),
                                  self.residency, name)
        return self.load(version, spec, observer)

    def _model_deployments(self) -> list[Deployment]:
        """Every model deployment serving now (read on the event loop; the table is swapped
        whole by the reconciler)."""
        return [d for state in list(self._table.values()) for d in _units(state)]

    def _graph_state(self, endpoint: Endpoint, versions: dict[str, ModelVersion],
                     current: EndpointState | None) -> EndpointState:
        """Build (or keep) the endpoint's graph. Nodes whose version and settings did not
        change keep their running deployment, so moving one node's alias reloads one model."""
        assert endpoint.graph is not None
        running = current.deployment if current else None
        target = _graph_target(endpoint, versions)
        if isinstance(running, GraphDeployment) and running.version.artifact_digest == target:
            return EndpointState(endpoint, "ready", running, None, running.version.ref)
        if current is not None and current.error and current.target == target \
                and not current.retry:
            return current
        reuse = {}
        if isinstance(running, GraphDeployment):
            reuse = {(r.deployment.version.ref, r.deployment.version.artifact_digest,
                      _spec_key(r.deployment.spec)): r.deployment
                     for r in running.runtimes.values() if r.deployment is not None}
        try:
            spec = graph.parse(endpoint.graph)
            runtimes = {}
            for node in spec.nodes.values():
                if node.kind == "transform":
                    assert node.function is not None
                    runtimes[node.name] = NodeRuntime(node, function=load_function(
                        node.function))
                elif node.name in versions:
                    version = versions[node.name]
                    deploy_spec = DeploymentSpec.from_dict(node.deployment)
                    deployment = reuse.get((version.ref, version.artifact_digest,
                                            _spec_key(deploy_spec)))
                    if deployment is None:
                        observer = self.metrics.observer(f"{endpoint.name}.{node.name}",
                                                         version.ref) if self.metrics else None
                        deployment = self._load_part(f"{endpoint.name}.{node.name}",
                                                     version, deploy_spec, observer)
                    runtimes[node.name] = NodeRuntime(node, deployment=deployment)
            produced, problems = graph.validate(
                spec, lambda ref: next(v.signature for n, v in versions.items()
                                       if spec.nodes[n].model == ref))
            if problems:
                raise graph.invalid(problems)
            built = GraphDeployment(endpoint.name, endpoint.generation, spec,
                                    graph.signature(spec, produced), runtimes, target)
            if self.metrics:  # requests, in-flight and per-node metrics; spans per node
                built.observer = self.metrics.observer(endpoint.name, built.version.ref)
        except Exception as exc:  # any load failure is reported on the endpoint
            detail = exc.detail if isinstance(exc, ModelyardError) else repr(exc)
            if current is None or current.error != detail:
                log.error("endpoint %s cannot build its graph: %s", endpoint.name,
                          loggable(detail))
            return EndpointState(endpoint, "failed", running, detail, target,
                                 retry=_heals_by_itself(exc))
        log.info("endpoint %s now serves graph %s (%d nodes)", endpoint.name,
                 spec.name or endpoint.name, len(spec.nodes))
        return EndpointState(endpoint, "ready", built, None, built.version.ref)

    def _traffic_state(self, endpoint: Endpoint, versions: dict[str, ModelVersion],
                       current: EndpointState | None) -> EndpointState:
        """Load every version the split and shadows name (reusing what already runs), and
        route between them. Nothing gets traffic before it is loaded and warm."""
        assert endpoint.traffic is not None
        policy = TrafficPolicy.from_dict(endpoint.traffic)
        assert policy is not None
        running = current.deployment if current else None
        target = _traffic_target(endpoint, versions)
        if isinstance(running, TrafficDeployment) and current is not None and \
                current.target == target:
            return current
        if current is not None and current.error and current.target == target \
                and not current.retry:
            return current
        reuse = {(d.version.ref, d.version.artifact_digest, _spec_key(d.spec)): d
                 for d in (_units(current) if current is not None else [])}
        try:
            loaded: dict[str, Deployment] = {}
            for ref, version in versions.items():
                key = (version.ref, version.artifact_digest, _spec_key(endpoint.deployment))
                deployment = reuse.get(key)
                if deployment is None:
                    observer = self.metrics.observer(endpoint.name, version.ref) \
                        if self.metrics else None
                    deployment = self._load_part(endpoint.name, version,
                                                 endpoint.deployment, observer)
                loaded[ref] = deployment
            built = TrafficDeployment(
                endpoint.name, policy, [loaded[t.model] for t in policy.split],
                [(loaded[s.model], s.sample) for s in policy.shadows], self.on_shadow)
        except Exception as exc:  # any load failure is reported on the endpoint
            detail = exc.detail if isinstance(exc, ModelyardError) else repr(exc)
            if current is None or current.error != detail:
                log.error("endpoint %s cannot load its traffic split: %s", endpoint.name,
                          loggable(detail))
            return EndpointState(endpoint, "failed", running, detail, target,
                                 retry=_heals_by_itself(exc))
        log.info("endpoint %s now splits traffic: %s", endpoint.name,
                 ", ".join(f"{t.model} {t.weight:g}%" for t in policy.split))
        return EndpointState(endpoint, "ready", built, None, target)

    def close(self) -> None:
        """Stop every deployment's model threads once their queues are empty."""
        for state in self._table.values():
            if state.deployment is not None:
                state.deployment.retire()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop that owns the deployments' batchers."""
        self._loop = loop

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    def drop(self, name: str) -> None:
        """Stop answering for a deleted endpoint now, not at the next reconcile (which
        retires its deployments once their queued requests are done)."""
        with self._lock:  # after any reconcile in progress, so it cannot bring it back
            table = dict(self._table)
            gone = table.pop(name, None)
            self._table = table
        if gone is not None:
            for deployment in _units(gone):
                self._call_in_loop(deployment.retire)
        self.trigger()

    def trigger(self) -> None:
        """Ask the background loop to reconcile now (safe from any thread)."""
        if self._wake is not None:
            self._call_in_loop(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.reconcile)
            except Exception:  # keep reconciling: a database blip must not stop the loop
                log.exception("reconcile failed")
            waiter = asyncio.create_task(self._wake.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=self.interval_s,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            self._wake.clear()


# Load failures that can heal without a change to the endpoint: a signature added later, an
# upstream that comes back. They are retried every reconcile; other failures wait for a change.
_TRANSIENT = {"upstream_error", "upstream_timeout", "circuit_open"}


def _heals_by_itself(exc: Exception) -> bool:
    return isinstance(exc, SignatureRequired) or (
        isinstance(exc, ModelyardError) and exc.code in _TRANSIENT)


def _spec_key(spec: DeploymentSpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)


def _units(state: EndpointState) -> list[Deployment]:
    """The model deployments behind an endpoint's state (one, a graph's nodes, a split)."""
    if isinstance(state.deployment, GraphDeployment | TrafficDeployment):
        return state.deployment.deployments()
    return [state.deployment] if state.deployment is not None else []


def _traffic_versions(session: Any, endpoint: Endpoint) -> dict[str, ModelVersion]:
    policy = TrafficPolicy.from_dict(endpoint.traffic)
    assert policy is not None
    out = {}
    for reference in policy.refs():
        model, row = registry_repo.resolve(session, ModelRef.parse(reference))
        out[reference] = registry_repo.to_version(model, row)
    return out


def _traffic_target(endpoint: Endpoint, versions: dict[str, ModelVersion]) -> str:
    digest = hashlib.sha256(json.dumps(
        [endpoint.traffic, endpoint.deployment.to_dict(),
         sorted((r, v.ref, v.artifact_digest) for r, v in versions.items())],
        sort_keys=True, default=str).encode())
    return "split:" + digest.hexdigest()[:16]


def _graph_versions(session: Any, endpoint: Endpoint) -> dict[str, ModelVersion]:
    """Each model node's version, resolved now (aliases may have moved)."""
    assert endpoint.graph is not None
    spec = graph.parse(endpoint.graph)
    out = {}
    for node, reference in spec.model_refs().items():
        model, row = registry_repo.resolve(session, ModelRef.parse(reference))
        out[node] = registry_repo.to_version(model, row)
    return out


def _graph_target(endpoint: Endpoint, versions: dict[str, ModelVersion]) -> str:
    """A digest of what the graph should run: its document, settings and node versions."""
    digest = hashlib.sha256(json.dumps(
        [endpoint.graph, endpoint.generation,
         sorted((n, v.ref, v.artifact_digest) for n, v in versions.items())],
        sort_keys=True, default=str).encode())
    return digest.hexdigest()


def example_inputs(version: ModelVersion) -> dict[str, np.ndarray] | None:
    if not version.input_example:
        return None
    try:
        return version.signature.validate(decode_many(version.input_example))
    except ModelyardError:
        return None
