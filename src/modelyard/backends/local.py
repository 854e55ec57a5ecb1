"""The local backend: every endpoint runs in this process.

A reconciler reads the desired endpoints from the store, resolves each reference (an alias
may have moved), loads and warms any version not yet running, swaps it in atomically, and
drops what was deleted. A version that fails to load leaves the previous one serving and the
error on the endpoint's status. The request path only reads ``self._table``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable

import numpy as np

from modelyard.backends.base import EndpointState
from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ModelyardError, SignatureRequired
from modelyard.domain.names import ModelRef
from modelyard.domain.registry import Endpoint, ModelVersion
from modelyard.domain.tensors import decode_many
from modelyard.serving.batcher import BatchObserver
from modelyard.serving.deployment import Deployment
from modelyard.serving.metrics import ServingMetrics
from modelyard.serving.problems import loggable
from modelyard.store import endpoints as endpoint_repo
from modelyard.store import registry as registry_repo
from modelyard.store.db import Database

log = logging.getLogger("modelyard.backend")

Loader = Callable[[ModelVersion, DeploymentSpec, BatchObserver | None], Deployment]


class LocalBackend:
    def __init__(self, db: Database, load: Loader, interval_s: float = 2.0,
                 metrics: ServingMetrics | None = None,
                 on_reconcile: Callable[[], None] | None = None) -> None:
        self.db = db
        self.on_reconcile = on_reconcile  # e.g. refresh the data plane's key snapshot
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
            for endpoint in endpoint_repo.all_endpoints(session):
                try:
                    model, row = registry_repo.resolve(session, ModelRef.parse(endpoint.model_ref))
                    desired.append((endpoint, registry_repo.to_version(model, row), None))
                except ModelyardError as exc:
                    desired.append((endpoint, None, exc.detail))
        table: dict[str, EndpointState] = {}
        for endpoint, version, problem in desired:
            current = self._table.get(endpoint.name)
            running = current.deployment if current else None
            if version is None:
                table[endpoint.name] = EndpointState(endpoint, "failed", running, problem)
                continue
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
                deployment = self.load(version, endpoint.deployment, observer)
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
                    retry=isinstance(exc, SignatureRequired))
        retired = [s.deployment for s in self._table.values() if s.deployment is not None and
                   all(t.deployment is not s.deployment for t in table.values())]
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


def example_inputs(version: ModelVersion) -> dict[str, np.ndarray] | None:
    if not version.input_example:
        return None
    try:
        return version.signature.validate(decode_many(version.input_example))
    except ModelyardError:
        return None
