"""Outlier detection over a deployment's replicas (Envoy's ``consecutive_5xx``).

A replica is one predictor instance and the model thread that runs it (see
``serving.batcher``). After ``consecutive`` model failures in a row it is *unhealthy*: it is
ejected (takes no batches) for ``base_ejection_s`` times 2 to the number of its earlier
ejections, capped at ``max_ejection_s``, unless that would eject more than
``max_ejection_percent`` of the replicas (at least one may always be ejected) or leave none
serving. Either way the deployment replaces it with a freshly loaded predictor, which
restores the slot. An ejection that ends without a replacement returns the replica to
service; its next failures eject it for longer.

Pure state with an injectable clock: the batcher calls it under its own lock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from modelyard.serving.resilience import Clock

# Envoy's outlier detection defaults (consecutive_5xx, base_ejection_time,
# max_ejection_time, max_ejection_percent).
CONSECUTIVE_FAILURES = 5
BASE_EJECTION_S = 30.0
MAX_EJECTION_S = 300.0
MAX_EJECTION_PERCENT = 10.0


@dataclass
class _Slot:
    consecutive: int = 0
    ejections: int = 0  # how often this slot was ejected (sets the next ejection's length)
    until: float = 0.0  # ejected until this time (clock); 0: in service


@dataclass
class ReplicaHealth:
    replicas: int
    consecutive: int = CONSECUTIVE_FAILURES
    base_ejection_s: float = BASE_EJECTION_S
    max_ejection_s: float = MAX_EJECTION_S
    max_ejection_percent: float = MAX_EJECTION_PERCENT
    clock: Clock = time.monotonic
    _slots: list[_Slot] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._slots = [_Slot() for _ in range(self.replicas)]

    def available(self, slot: int, now: float | None = None) -> bool:
        """Whether ``slot`` takes batches now (it is not ejected)."""
        until = self._slots[slot].until
        return until == 0.0 or until <= (self.clock() if now is None else now)

    def ejected_until(self, slot: int) -> float:
        return self._slots[slot].until

    def ejected(self, now: float | None = None) -> int:
        """Replicas out of service now."""
        now = self.clock() if now is None else now
        return sum(1 for s in self._slots if s.until > now)

    def success(self, slot: int) -> None:
        state = self._slots[slot]
        if state.consecutive:
            state.consecutive = 0

    def failure(self, slot: int) -> str:
        """Count a model failure; ``ok`` (below the threshold), ``ejected``, or ``unhealthy``
        (at the threshold, but the ejection cap keeps it serving)."""
        state = self._slots[slot]
        state.consecutive += 1
        if state.consecutive < self.consecutive:
            return "ok"
        now = self.clock()
        state.consecutive = 0  # the next verdict needs another run of failures
        if not self._may_eject(now):
            return "unhealthy"
        seconds = min(self.max_ejection_s, self.base_ejection_s * 2 ** state.ejections)
        state.ejections += 1
        state.until = now + seconds
        return "ejected"

    def _may_eject(self, now: float) -> bool:
        out = self.ejected(now)
        cap = max(1, math.floor(self.replicas * self.max_ejection_percent / 100))
        return out < cap and self.replicas - out > 1

    def restore(self, slot: int) -> None:
        """A fresh predictor took the slot: in service, no failures counted (the slot keeps
        its ejection count, so a slot that keeps failing is ejected for longer)."""
        state = self._slots[slot]
        state.consecutive, state.until = 0, 0.0

    def snapshot(self) -> list[dict[str, float | int]]:
        now = self.clock()
        return [{"consecutive_failures": s.consecutive, "ejections": s.ejections,
                 "ejected_for_s": round(max(0.0, s.until - now), 3)} for s in self._slots]
