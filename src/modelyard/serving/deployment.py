"""A deployment: one model version loaded (once per replica), warmed up, and fronted by a
batcher and an optional response cache.

Inference runs off the event loop, on one thread per replica (see ``serving.batcher``).
A replica that fails too often in a row is replaced by a freshly loaded predictor, loaded
and warmed up in the background (``reload``); until then the others answer (and, when the
model is idempotent, retry its failed requests).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ModelFailed, ModelyardError
from modelyard.domain.registry import ModelVersion
from modelyard.domain.signature import Signature
from modelyard.flavors.base import Arrays, Predictor
from modelyard.serving.batcher import Batcher, BatchObserver, rows_of
from modelyard.serving.resilience import RetryBudget

log = logging.getLogger("modelyard.backend")


def guarded(predictor: Predictor, ref: str) -> Callable[[Arrays], dict[str, np.ndarray]]:
    """The predictor's ``predict`` with its failures turned into ModelFailed (a 500)."""

    def run(inputs: Arrays) -> dict[str, np.ndarray]:
        try:
            outputs = predictor.predict(inputs)
        except ModelyardError:
            raise
        except Exception as exc:  # the model's own failure: a server-side error
            raise ModelFailed(f"{ref} failed: {type(exc).__name__}: {exc}") from exc
        return {name: np.asarray(value) for name, value in outputs.items()}

    return run


def cache_key(inputs: Arrays) -> bytes:
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(inputs):
        value = inputs[name]
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        if value.dtype.kind == "O":
            digest.update(repr(value.tolist()).encode())
        else:
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.digest()


@dataclass
class Deployment:
    version: ModelVersion
    predictors: Sequence[Predictor]
    spec: DeploymentSpec = field(default_factory=DeploymentSpec)
    warmup_ms: float = 0.0
    observer: BatchObserver | None = None
    _batcher: Batcher | None = None
    _cache: Any = None  # cachetools.TTLCache when enabled
    # Loads one more predictor of this version: replaces a replica that keeps failing.
    reload: Callable[[], Predictor] | None = None
    # Its model lives in this process (counted in the model memory budget).
    in_process: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.predictors = list(self.predictors)
        self._runners = [guarded(p, self.version.ref) for p in self.predictors]
        self._example: Arrays | None = None
        self._replacing: set[int] = set()
        self._replacing_lock = threading.Lock()
        if self.spec.cache_max_entries:
            from cachetools import TTLCache

            self._cache = TTLCache(self.spec.cache_max_entries, self.spec.cache_ttl_s)

    @property
    def signature(self) -> Signature:
        return self.version.signature

    def warm_up(self, example: Arrays | None) -> None:
        """Run every replica once on the registered example (or zeros), then on a full batch,
        before the deployment reports ready."""
        single = dict(example) if example else self.signature.example()
        self._example = single  # a replacement replica warms up on it too
        rows = rows_of(single)
        reps = max(1, self.spec.max_batch_size // max(rows, 1))
        full = {k: np.concatenate([v] * reps, axis=0) if v.ndim else v for k, v in single.items()}
        start = time.perf_counter()
        for run in self._runners:
            run(single)
            if reps > 1:
                run(full)
        self.warmup_ms = (time.perf_counter() - start) * 1000

    def predict_sync(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """In-process prediction without batching (notebooks, the CLI)."""
        return self._runners[0](inputs)

    def batcher(self) -> Batcher:
        if self._batcher is None:
            # Retry on another replica only when there is one and predict may run twice.
            budget = RetryBudget() if self.spec.idempotent and len(self._runners) > 1 \
                else None
            self._batcher = Batcher(self._runners, self.spec, self.observer,
                                    name=self.version.ref, budget=budget,
                                    on_unhealthy=self._replace)
        return self._batcher

    def _replace(self, slot: int) -> None:
        """Replica ``slot`` failed too often: load a fresh predictor for it off the model
        threads (one replacement per slot at a time)."""
        if self.reload is None:
            return
        with self._replacing_lock:
            if slot in self._replacing:
                return
            self._replacing.add(slot)
        threading.Thread(target=self._load_replacement, args=(slot,), daemon=True,
                         name=f"replace-{self.version.ref}-{slot}").start()

    def _load_replacement(self, slot: int) -> None:
        assert self.reload is not None
        try:
            predictor = self.reload()
            run = guarded(predictor, self.version.ref)
            run(self._example or self.signature.example())  # warm, and proven to answer
            self.predictors = [*self.predictors[:slot], predictor, *self.predictors[slot + 1:]]
            self._runners[slot] = run
            self.batcher().replace(slot, run)
            log.warning("%s: replica %d replaced after repeated failures", self.version.ref,
                        slot)
            if self.observer is not None:
                self.observer.replaced(True)
        except Exception:  # the next run of failures tries again
            log.exception("%s: replacing replica %d failed", self.version.ref, slot)
            if self.observer is not None:
                self.observer.replaced(False)
        finally:
            with self._replacing_lock:
                self._replacing.discard(slot)

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
        outputs = await self.batcher().submit(inputs, rows_of(inputs), timeout_s, priority)
        if cache is not None:
            cache[key] = outputs
        return outputs

    def _observe_cache(self, hit: bool) -> None:
        if self.observer is not None:
            self.observer.cache(hit)

    def retire(self) -> None:
        """Let queued requests finish, then stop the workers (a newer version took over)."""
        if self._batcher is not None:
            self._batcher.close()
