"""Many models per Ray replica: the model pool of the ray backend (``load: lazy``).

On the ray backend, a model deployment deployed with ``load: lazy`` (an endpoint's, a graph
node's or a split version's) gets no Ray Serve application of its own. It is served by a
*pool*: one application per resource shape (CPUs, GPUs) whose replicas each hold many
versions, like ModelMesh or ``@serve.multiplexed``. A replica loads a version on its first
request (from the node-local artifact cache, sha256-verified, so a second replica on a node
never downloads it again) and unloads the least recently used idle ones when the next would
not fit its memory budget: the same ``ModelResidency`` as the local backend's
(serving/residency.py), measuring the replica's own process, with
``model_memory_budget_mb`` per replica.

Routing is Ray Serve's multiplexed routing: the server calls the pool with
``multiplexed_model_id`` set to the version's key, and each replica reports the keys it holds
(or is loading), so Ray's router sends a model's requests to a replica that has it and a new
model to the replica with the fewest. A replica reports through the controller call that
``@serve.multiplexed`` uses; the decorator itself caps models by count, not memory, and keeps
its own LRU, which would disagree with the budget's (docs/decisions/0027).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray.experimental import internal_kv
from ray.serve._private.common import RequestRoutingInfo
from ray.serve.context import _get_global_client, _get_internal_replica_context

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ModelyardError
from modelyard.domain.registry import ModelVersion
from modelyard.serving.deployment import Deployment
from modelyard.serving.residency import LazyDeployment, MiB, ModelResidency
from modelyard.store.artifacts import ArtifactStore

log = logging.getLogger("modelyard.backend")

POOL_PREFIX = "pool"
# Where pool replicas publish what they hold (Ray's key-value store, APP/REPLICA -> JSON).
POOL_NAMESPACE = "modelyard-pool"


@dataclass(frozen=True)
class PoolShape:
    """The resources each replica of a pool has; lazy deployments with the same share it."""

    num_cpus: float
    num_gpus: float

    @classmethod
    def of(cls, spec: DeploymentSpec) -> PoolShape:
        return cls(float(spec.num_cpus), float(spec.num_gpus))

    @property
    def label(self) -> str:
        return f"{POOL_PREFIX}-c{self.num_cpus:g}-g{self.num_gpus:g}"


@dataclass(frozen=True)
class PoolConfig:
    """How a pool's replicas are run: how many (``max_replicas`` above ``replicas``:
    autoscaled between the two on ongoing requests) and each one's model memory budget."""

    replicas: int = 1
    max_replicas: int = 0
    budget_mb: float = 0.0
    memory_factor: float = 2.0

    @classmethod
    def of(cls, settings: Any) -> PoolConfig:
        return cls(int(settings.ray_pool_replicas), int(settings.ray_pool_max_replicas),
                   float(settings.model_memory_budget_mb),
                   float(settings.model_memory_factor))


def pool_key(version: ModelVersion, spec: DeploymentSpec) -> str:
    """What a pool replica holds one deployment under: the version (its artifact) and the
    settings its replica-side deployment is built with. Readable in Ray's own metrics."""
    settings = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True, default=str)
                              .encode()).hexdigest()[:8]
    return f"{version.model}:{version.version}:{version.artifact_digest[:12]}:{settings}"


class _Counts:
    """The residency's load and unload events, counted per replica (``stats``)."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.loads = 0
        self.unloads = 0
        self._changed = changed

    def model_loaded(self, endpoint: str, version: str) -> None:
        self.loads += 1
        self._changed()

    def model_unloaded(self, endpoint: str, version: str) -> None:
        self.unloads += 1
        self._changed()


class ModelPool:
    """One Ray Serve replica of a pool: many model versions under one memory budget.

    Every call names the version (its key, the version and its settings), so a replica needs
    no store: the first call for a key creates its ``LazyDeployment`` here, and the residency
    loads it within the call. Failures come back as values (``ModelyardError``), as from
    ``ModelReplica``."""

    def __init__(self, artifacts_url: str, cache_dir: str, config: PoolConfig) -> None:
        self.artifacts = ArtifactStore(artifacts_url, Path(cache_dir))
        self.counts = _Counts(self._report)
        self.residency = ModelResidency(int(config.budget_mb * MiB), config.memory_factor,
                                        self.counts)
        self.models: dict[str, LazyDeployment] = {}
        context = _get_internal_replica_context()
        self._replica_id = context.replica_id if context is not None else None
        self._published = f"{context.app_name}/{context.replica_id.unique_id}" \
            if context is not None else ""
        self._reported: frozenset[str] = frozenset()
        self._publish()

    def __del__(self) -> None:
        """Ray Serve calls this when it stops the replica: its holdings go with it."""
        published, self._published = getattr(self, "_published", ""), ""
        if published:
            try:
                internal_kv._internal_kv_del(published, namespace=POOL_NAMESPACE)
            except Exception:  # the cluster may be going away
                log.debug("could not unpublish %s", published, exc_info=True)

    def _load(self, version: ModelVersion, spec: DeploymentSpec) -> Deployment:
        """On the residency's worker thread: fetch (once per node), verify, load, warm up."""
        from modelyard import flavors
        from modelyard.backends.local import example_inputs

        folder = self.artifacts.materialize(version.artifact_digest)  # verifies the sha256
        predictor = flavors.get(version.flavor).load(folder, version.flavor_options,
                                                     trusted=version.lineage.trusted)
        # One model thread per version: the pool's replicas are the replication, and the
        # server's front keeps the response cache.
        deployment = Deployment(version, [predictor],
                                spec.merged({"replicas": 1, "cache_max_entries": 0}))
        deployment.warm_up(example_inputs(version))
        return deployment

    def _lazy(self, key: str, version: ModelVersion, spec: DeploymentSpec) -> LazyDeployment:
        lazy = self.models.get(key)
        if lazy is None or lazy.retired:
            lazy = LazyDeployment(version, spec, None, lambda: self._load(version, spec),
                                  self.residency, key)
            self.models[key] = lazy
        return lazy

    async def predict(self, key: str, version: ModelVersion, spec: DeploymentSpec,
                      inputs: dict[str, np.ndarray], timeout_s: float, priority: int
                      ) -> dict[str, np.ndarray] | ModelyardError:
        lazy = self._lazy(key, version, spec)
        if lazy.loaded is None and lazy.loading is None:
            self._report(also=key)  # loading here: send the key's next requests here too
        try:
            return await lazy.predict(inputs, timeout_s, priority)
        except ModelyardError as exc:
            return exc
        finally:
            if lazy.loaded is None and lazy.loading is None:
                self._report()  # the load failed or was refused: no longer loading here

    def _held(self) -> frozenset[str]:
        return frozenset(key for key, lazy in self.models.items()
                         if lazy.loaded is not None or lazy.loading is not None)

    def _report(self, also: str = "") -> None:
        """Publish the replica's holdings; tell Ray's routers which keys it holds or loads,
        when that changed."""
        self._publish()
        held = self._held() | ({also} if also else set())
        if held == self._reported or self._replica_id is None:
            return
        self._reported = held
        try:
            client = _get_global_client()
            assert client is not None
            client.record_request_routing_info(RequestRoutingInfo(
                replica_id=self._replica_id, multiplexed_model_ids=sorted(held)))
        except Exception:  # routing loses its affinity, answers stay right
            log.warning("could not report this replica's models to Ray Serve", exc_info=True)

    def stats(self) -> dict[str, Any]:
        """What this replica holds: the loaded keys, the accounting and the load counts."""
        return {"replica": self._published.rpartition("/")[2],
                "loaded": sorted(key for key, lazy in self.models.items()
                                 if lazy.loaded is not None),
                "used_bytes": self.residency.used_bytes(),
                "peak_bytes": self.residency.peak_bytes,
                "budget_bytes": self.residency.budget_bytes,
                "loads": self.counts.loads, "unloads": self.counts.unloads}

    def _publish(self) -> None:
        """Put ``stats`` where the server reads every replica's (``pool_stats``): a call to
        the pool reaches one replica only. Only on loads and unloads, not per request."""
        if not self._published:
            return
        try:
            internal_kv._internal_kv_put(self._published, json.dumps(self.stats()),
                                         namespace=POOL_NAMESPACE)
        except Exception:  # stats only; serving goes on
            log.warning("could not publish this replica's holdings", exc_info=True)


def pool_stats(app: str) -> dict[str, dict[str, Any]]:
    """Each running replica of pool ``app``: what it holds (see ``ModelPool.stats``)."""
    keys = internal_kv._internal_kv_list(f"{app}/", namespace=POOL_NAMESPACE)
    found = {}
    for key in keys:
        raw = internal_kv._internal_kv_get(key, namespace=POOL_NAMESPACE)
        if raw:
            stats = json.loads(raw)
            found[stats["replica"]] = stats
    return found
