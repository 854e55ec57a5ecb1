"""Many models per process: lazy loading under a memory budget, least recently used unloaded.

An endpoint (or a graph node, or a split's version) deployed with ``load: lazy`` gets a
``LazyDeployment``: nothing is loaded until
its first request, which waits for the load within its deadline (504 past it). Loads go
through one ``ModelResidency`` per backend, one at a time, so that each load's growth of the
process's resident memory (RSS) is that model's own. Before a load, the least recently used
idle lazy models are unloaded until the new one is expected to fit the budget; one with
requests in flight (or still loading) is never unloaded. If nothing idle can make room, the
request is refused at once (503 with ``Retry-After``); a model expected to exceed the whole
budget is refused with a detail that says so. Models loaded for good (no ``load: lazy``) take
their expected size off the budget first.

Sizes (docs/decisions/0021): a model's size is the RSS growth its load caused (all its
replicas, warm-up included), at least its artifact's size (less growth means the load reused
memory the process had freed), unless the load imported modules (the first model of a flavor
pulls in its libraries, hundreds of MB that stay whatever is unloaded) or RSS is unreadable;
then it is the estimate: the last measured size of the same artifact, else the artifact's
size times ``factor``. A measured size larger than expected unloads more idle models right
after the load, so the accounted total is back within the budget once the load completes.

The residency's state changes on the event loop only (requests, loads completing, unloads);
loading and freeing run on a worker thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import DeadlineExceeded, NotReady, Overloaded
from modelyard.domain.registry import ModelVersion
from modelyard.flavors.base import Arrays
from modelyard.serving.batcher import Batcher, BatchObserver, Replaced
from modelyard.serving.deployment import Deployment

log = logging.getLogger("modelyard.backend")

MiB = 1 << 20


class OverMemoryBudget(Overloaded):
    """A lazy model cannot be loaded now: the budget is taken by models in use (retry), or
    the model alone is expected to exceed it."""

    code, title = "over_memory_budget", "Model memory budget exceeded"


def resident_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc``); None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _libc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``, where there is one; else nothing to do."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    return lambda: trim(0)


# Freed model memory would stay in the allocator: glibc raises its mmap threshold after large
# frees (so later arrays come from the heap) and each loading thread has its own arena.
# Trimming after an unload hands the free pages back (measured: 20 8-MiB models loaded in
# turn grew RSS by 154 MiB without it, under the budget's 44 MiB with it).
release_freed_memory = _libc_trim()


class LazyDeployment(Deployment):
    """A deployment loaded on first use and unloaded when idle under memory pressure.

    Answers like a ``Deployment``; the loaded one (``loaded``) does the batching. While
    unloaded, ``batcher()`` is an empty queue that refuses nothing (the load decides)."""

    def __init__(self, version: ModelVersion, spec: DeploymentSpec,
                 observer: BatchObserver | None, load: Callable[[], Deployment],
                 residency: ModelResidency, endpoint: str) -> None:
        super().__init__(version, [], spec, 0.0, observer)
        self.endpoint = endpoint
        self.load_deployment = load
        self.residency = residency
        self.loaded: Deployment | None = None
        self.in_flight = 0  # requests inside predict, waiting for the load included
        self.retired = False
        self.loading: asyncio.Future[Deployment] | None = None
        self._idle: Batcher | None = None

    @property
    def resident(self) -> bool:
        return self.loaded is not None

    def batcher(self) -> Batcher:
        if self.loaded is not None:
            return self.loaded.batcher()
        if self._idle is None:
            self._idle = Batcher([], self.spec, self.observer, name=self.version.ref)
        return self._idle

    def predict_sync(self, inputs: Arrays) -> dict[str, np.ndarray]:
        if self.loaded is None:
            raise NotReady(f"{self.version.ref} loads on its first request; not loaded now")
        return self.loaded.predict_sync(inputs)

    def warm_up(self, example: Arrays | None) -> None:
        """Nothing to warm until loaded (the load warms the loaded deployment up)."""

    async def predict(self, inputs: Arrays, timeout_s: float,
                      priority: int = 1) -> dict[str, np.ndarray]:
        if self.retired:
            raise Replaced(f"{self.version.ref} is being replaced; retry")
        started = time.monotonic()
        self.in_flight += 1
        try:
            deployment = self.loaded
            if deployment is None:
                deployment = await self.residency.ensure(self, timeout_s)
                timeout_s -= time.monotonic() - started
                if timeout_s <= 0:
                    raise DeadlineExceeded(f"{self.version.ref}: loaded, but past the deadline")
            else:
                self.residency.touch(self)
            return await deployment.predict(inputs, timeout_s, priority)
        finally:
            self.in_flight -= 1

    def retire(self) -> None:
        """A newer deployment took over: unload once queued requests are done."""
        self.retired = True
        self.residency.release(self)


class ModelResidency:
    """Which lazy models are loaded, their sizes, and the budget they share (0: no limit)."""

    def __init__(self, budget_bytes: int = 0, factor: float = 2.0,
                 metrics: Any = None,
                 eager: Callable[[], list[Deployment]] | None = None) -> None:
        self.budget_bytes = int(budget_bytes)
        self.factor = factor
        self.metrics = metrics  # ServingMetrics: loads and unloads counted per version
        # The models loaded for good (no ``load: lazy``): they take their share of the budget
        # first, and the lazy ones share what is left.
        self.eager = eager or (lambda: [])
        # Loaded (or loading: reserved) lazy models, least recently used first: id -> size.
        self._resident: OrderedDict[int, tuple[LazyDeployment, int]] = OrderedDict()
        self._sizes: dict[tuple[str, int], int] = {}  # (artifact, replicas) -> measured
        self._lock: asyncio.Lock | None = None
        self.peak_bytes = 0  # the most ever accounted once a load completed

    def __repr__(self) -> str:
        return (f"ModelResidency(loaded={self.loaded_count()}, used={self.used_bytes()}, "
                f"budget={self.budget_bytes})")

    def loaded_count(self) -> int:
        return sum(1 for lazy, _ in self._resident.values() if lazy.loaded is not None)

    def used_bytes(self) -> int:
        return sum(size for _, size in self._resident.values())

    def expected_bytes(self, deployment: Deployment) -> int:
        """A lazy model's size as last measured, else (and for eager models, which are not
        measured: they load concurrently) its artifact's size times ``factor``."""
        known = self._sizes.get(self._key(deployment))
        if known is not None:
            return known
        return int(deployment.version.artifact_size * deployment.spec.replicas * self.factor)

    def pinned_bytes(self) -> int:
        """What the eagerly loaded models are expected to take (each model once)."""
        seen = {id(d): d for d in self.eager()
                if d.in_process and not isinstance(d, LazyDeployment)}
        return sum(self.expected_bytes(d) for d in seen.values())

    def available_bytes(self) -> int:
        """The budget the lazy models share: the whole budget less the eager models."""
        return max(0, self.budget_bytes - self.pinned_bytes())

    @staticmethod
    def _key(deployment: Deployment) -> tuple[str, int]:
        return deployment.version.artifact_digest, deployment.spec.replicas

    def touch(self, lazy: LazyDeployment) -> None:
        """``lazy`` was just used: the last to be unloaded."""
        if id(lazy) in self._resident:
            self._resident.move_to_end(id(lazy))

    async def ensure(self, lazy: LazyDeployment, timeout_s: float) -> Deployment:
        """The loaded deployment of ``lazy``, loading it if needed, within ``timeout_s``."""
        if lazy.loaded is not None:
            self.touch(lazy)
            return lazy.loaded
        if lazy.loading is None:
            lazy.loading = asyncio.ensure_future(self._load(lazy))
            lazy.loading.add_done_callback(lambda done: _settled(lazy, done))
        try:
            return await asyncio.wait_for(asyncio.shield(lazy.loading), timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(f"{lazy.version.ref} is loading; no answer within the "
                                   "deadline") from None

    async def _load(self, lazy: LazyDeployment) -> Deployment:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one load at a time: its RSS growth is its own
            if lazy.retired:
                raise Replaced(f"{lazy.version.ref} is being replaced; retry")
            if lazy.loaded is not None:
                return lazy.loaded
            need = self.expected_bytes(lazy)
            if self.budget_bytes and need > self.available_bytes():
                pinned = self.pinned_bytes()
                raise OverMemoryBudget(
                    f"{lazy.version.ref} needs about {need / MiB:.0f} MiB, more than the "
                    f"whole model memory budget ({self.budget_bytes / MiB:.0f} MiB"
                    + (f", of which the eagerly loaded models take about {pinned / MiB:.0f}"
                       f" MiB" if pinned else "") + ")")
            victims = self._victims(need, lazy)
            if victims is None:
                raise OverMemoryBudget(
                    f"{lazy.version.ref} needs about {need / MiB:.0f} MiB and the model "
                    f"memory budget is taken by models in use; retry")
            freed = [self._unload(victim) for victim in victims]
            self._resident[id(lazy)] = (lazy, need)  # reserved while it loads
            try:
                deployment, size = await asyncio.to_thread(self._load_measured, lazy, freed,
                                                           need)
            except BaseException:
                self._resident.pop(id(lazy), None)
                raise
            if lazy.retired:  # retired while loading: nobody will use it
                self._resident.pop(id(lazy), None)
                deployment.retire()
                raise Replaced(f"{lazy.version.ref} is being replaced; retry")
            lazy.loaded, lazy.warmup_ms = deployment, deployment.warmup_ms
            self._resident[id(lazy)] = (lazy, size)
            self._resident.move_to_end(id(lazy))
            self._sizes[self._key(lazy)] = size
            if self.metrics is not None:
                self.metrics.model_loaded(lazy.endpoint, lazy.version.ref)
            # Bigger than expected: unload more idle models now (never ones in use).
            for victim in self._victims(0, lazy) or []:
                self._unload(victim)
            self.peak_bytes = max(self.peak_bytes, self.used_bytes())
            return deployment

    def _load_measured(self, lazy: LazyDeployment, freed: list[Deployment],
                       expected: int) -> tuple[Deployment, int]:
        """On a worker thread: let the unloaded models go, then load ``lazy`` and measure."""
        for deployment in freed:
            deployment.batcher().join(5.0)  # their model threads hold the predictors
        unloaded = bool(freed)
        freed.clear()
        gc.collect()
        if unloaded:
            release_freed_memory()
        modules, before = len(sys.modules), resident_bytes()
        started = time.perf_counter()
        deployment = lazy.load_deployment()
        after = resident_bytes()
        grown = after - before if after is not None and before is not None else 0
        # Less growth than the artifact's size means the load reused memory the process had
        # freed (RSS does not see it): the artifact's size is the floor then.
        floor = lazy.version.artifact_size * lazy.spec.replicas
        size = max(grown, floor) if grown > 0 and len(sys.modules) == modules else expected
        log.info("loaded %s for endpoint %s in %.0f ms: %.1f MiB (%s)", lazy.version.ref,
                 lazy.endpoint, (time.perf_counter() - started) * 1000, size / MiB,
                 "estimated" if size == expected else "measured")
        return deployment, size

    def _victims(self, need: int, keep: LazyDeployment) -> list[LazyDeployment] | None:
        """The least recently used idle models to unload so that ``need`` more bytes fit;
        None if the idle ones are not enough."""
        if not self.budget_bytes:
            return []
        excess = self.used_bytes() + need - self.available_bytes()
        chosen: list[LazyDeployment] = []
        for lazy, size in self._resident.values():
            if excess <= 0:
                break
            if lazy is keep or lazy.loaded is None or lazy.in_flight:
                continue  # the new one, one still loading, one in use
            chosen.append(lazy)
            excess -= size
        return chosen if excess <= 0 else None

    def _unload(self, lazy: LazyDeployment) -> Deployment:
        """Take ``lazy`` out (on the event loop); its model threads stop once idle."""
        deployment = lazy.loaded
        assert deployment is not None
        lazy.loaded, lazy.warmup_ms = None, 0.0
        self._resident.pop(id(lazy), None)
        deployment.retire()
        if self.metrics is not None:
            self.metrics.model_unloaded(lazy.endpoint, lazy.version.ref)
        log.info("unloaded %s (endpoint %s) for room under the model memory budget",
                 lazy.version.ref, lazy.endpoint)
        return deployment

    def release(self, lazy: LazyDeployment) -> None:
        """``lazy`` was retired: unload it (its queued requests finish first)."""
        if lazy.loaded is not None:
            self._unload(lazy)
        self._resident.pop(id(lazy), None)


def _settled(lazy: LazyDeployment, done: asyncio.Future[Deployment]) -> None:
    lazy.loading = None
    if not done.cancelled():
        done.exception()  # retrieved: every waiter got it already
