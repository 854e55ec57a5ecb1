"""An endpoint whose traffic is split across loaded versions, with shadows on the side.

``TrafficDeployment`` picks one of its loaded deployments per request (sticky by a routing
key; a version the caller names is chosen in ``serving.pinning``) and answers like that
deployment.
Shadows get a sampled copy of the request after the primary has answered, on their own
batchers, and their answers are only compared and recorded, never returned.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from modelyard.domain.errors import ModelyardError
from modelyard.domain.signature import Signature
from modelyard.domain.traffic import TrafficPolicy
from modelyard.serving.deployment import Deployment

# (primary ref, shadow ref, agreed, primary value, shadow value, shadow latency, shadow ok)
ShadowRecorder = Callable[[str, str, bool, float | None, float | None, float, bool], None]

SHADOW_PRIORITY = 2  # low: a shadow never takes a batch slot before real traffic


class TrafficDeployment:
    def __init__(self, name: str, policy: TrafficPolicy, targets: Sequence[Deployment],
                 shadows: Sequence[tuple[Deployment, float]],
                 on_shadow: ShadowRecorder | None = None,
                 rng: random.Random | None = None) -> None:
        self.name = name
        self.policy = policy
        self.targets = list(targets)
        self.shadows = list(shadows)
        self.on_shadow = on_shadow
        self._rng = rng or random.Random()
        self._pending: set[asyncio.Task[None]] = set()
        # Metadata answers for the target with the most weight (the stable version).
        heaviest = max(range(len(policy.split)), key=lambda i: policy.split[i].weight)
        self.primary = self.targets[heaviest]
        self.observer = None
        self.warmup_ms = sum(d.warmup_ms for d in self.deployments())

    @property
    def version(self) -> Any:
        return self.primary.version

    @property
    def signature(self) -> Signature:
        return self.primary.signature

    @property
    def spec(self) -> Any:
        return self.primary.spec

    @property
    def predictors(self) -> Sequence[Any]:
        """The stable version's (OpenAI-compatible routes answer with it)."""
        return self.primary.predictors

    def deployments(self) -> list[Deployment]:
        seen: dict[int, Deployment] = {}
        for d in [*self.targets, *(s for s, _ in self.shadows)]:
            seen.setdefault(id(d), d)
        return list(seen.values())

    def key_of(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
        wanted = self.policy.sticky_header
        if not wanted:
            return None
        name = wanted.encode()
        for header, value in headers:
            if header == name:
                return value
        return None

    def pick(self, key: bytes | None) -> Deployment:
        """The deployment for one request, by the split (sticky by ``key`` when given). A
        version the caller names is chosen in ``serving.pinning`` instead."""
        return self.targets[self.policy.choose(key, self._rng)]

    async def predict(self, inputs: Mapping[str, np.ndarray], timeout_s: float,
                      priority: int = 1) -> dict[str, np.ndarray]:
        """Without a routing key (other protocols): a weighted random target."""
        chosen = self.pick(None)
        outputs = await chosen.predict(inputs, timeout_s, priority)
        self.mirror(chosen, inputs, outputs, timeout_s)
        return outputs

    def mirror(self, primary: Deployment, inputs: Mapping[str, np.ndarray],
               outputs: Mapping[str, np.ndarray], timeout_s: float) -> None:
        """Copy a request to the shadows (sampled), off the request's path."""
        for shadow, sample in self.shadows:
            if shadow is primary or self._rng.random() >= sample:
                continue
            task = asyncio.get_running_loop().create_task(
                self._shadow(primary, shadow, dict(inputs), dict(outputs), timeout_s))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _shadow(self, primary: Deployment, shadow: Deployment,
                      inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                      timeout_s: float) -> None:
        started = time.perf_counter()
        try:
            got = await shadow.predict(inputs, timeout_s, SHADOW_PRIORITY)
            ok = True
        except ModelyardError:
            got, ok = {}, False
        latency = time.perf_counter() - started
        if self.on_shadow is not None:
            self.on_shadow(f"{self.name}/{primary.version.ref}",
                           f"{self.name}/{shadow.version.ref}",
                           ok and agree(expected, got), summary(expected), summary(got),
                           latency, ok)

    def retire(self) -> None:
        for deployment in self.deployments():
            deployment.retire()


def agree(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Whether two answers match: on their decisions (integer, boolean or text outputs, a
    classifier's label) when they have any, else on every shared output within 1e-3."""
    shared = set(a) & set(b)
    if not shared:
        return False
    decisions = {n for n in shared if np.asarray(a[n]).dtype.kind in "iubOUS"}
    if decisions:
        shared = decisions
    for name in shared:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape:
            return False
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            if not np.allclose(x.astype(np.float64), y.astype(np.float64), atol=1e-3):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def summary(outputs: Mapping[str, np.ndarray]) -> float | None:
    """One number per answer for distribution checks: the mean of the first numeric output's
    last column (a classifier's positive-class probability, a regressor's value)."""
    for name in sorted(outputs):
        value = np.asarray(outputs[name])
        if value.dtype.kind in "fiub" and value.size:
            column = value.reshape(len(value), -1)[:, -1] if value.ndim else value.reshape(1)
            return float(np.mean(column.astype(np.float64)))
    return None
