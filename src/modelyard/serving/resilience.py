"""Retries that cannot amplify an outage, and circuit breakers that stop calling what fails.

Used by graph nodes and by remote models. Both are small state machines with an injectable
clock, so tests drive them without sleeping.

- ``RetryBudget``: retries may add at most ``ratio`` of the recent first attempts (plus a small
  floor), as in Finagle and gRPC: when everything fails, load grows by ``ratio``, not by the
  retry count.
- ``CircuitBreaker``: ``closed`` until ``failures`` consecutive failures, then ``open`` (calls
  refused at once) for ``reset_s``, then ``half_open``: one probe at a time; a success closes it,
  a failure opens it again.
- ``backoff_s``: exponential backoff with full jitter.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from modelyard.domain.errors import ModelyardError

Clock = Callable[[], float]


class CircuitOpen(ModelyardError):
    code, status, title = "circuit_open", 503, "Circuit open"


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_per_s: float = 1.0, window_s: float = 10.0,
                 clock: Clock = time.monotonic) -> None:
        self.ratio, self.min_per_s, self.window_s = ratio, min_per_s, window_s
        self._clock = clock
        # (time, count) entries: a batch of first attempts is one entry, not one per request.
        self._attempts: deque[tuple[float, int]] = deque()
        self._retries: deque[float] = deque()
        self._attempted = 0  # first attempts within the window
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        while self._attempts and self._attempts[0][0] <= horizon:
            self._attempted -= self._attempts.popleft()[1]
        while self._retries and self._retries[0] <= horizon:
            self._retries.popleft()

    def record_attempt(self, count: int = 1) -> None:
        """``count`` first attempts were made now (a batch records its requests at once)."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            self._attempts.append((now, count))
            self._attempted += count

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            if len(self._retries) + 1 > self.allowed():
                return False
            self._retries.append(now)
            return True

    def allowed(self) -> float:
        """Retries the window allows now: ``ratio`` of its first attempts plus the floor."""
        return self.ratio * self._attempted + self.min_per_s * self.window_s


@dataclass
class CircuitBreaker:
    name: str
    failures: int = 5  # consecutive failures that open the circuit
    reset_s: float = 10.0  # how long it stays open before a probe
    clock: Clock = time.monotonic
    state: str = "closed"
    _consecutive: int = 0
    _opened_at: float = 0.0
    _probing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def before(self) -> None:
        """Raise CircuitOpen if the call must not be made now."""
        with self._lock:
            if self.state == "open":
                if self.clock() - self._opened_at < self.reset_s:
                    raise CircuitOpen(f"{self.name} failed {self.failures} times in a row; "
                                      f"not calling it for {self.reset_s:g} s")
                self.state = "half_open"
                self._probing = False
            if self.state == "half_open":
                if self._probing:
                    raise CircuitOpen(f"{self.name} is being probed after failures")
                self._probing = True

    def success(self) -> None:
        with self._lock:
            self.state, self._consecutive, self._probing = "closed", 0, False

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self.state == "half_open" or self._consecutive >= self.failures:
                self.state, self._opened_at, self._probing = "open", self.clock(), False

    def snapshot(self) -> dict[str, object]:
        return {"state": self.state, "consecutive_failures": self._consecutive}


def backoff_s(attempt: int, base_s: float = 0.05, cap_s: float = 2.0,
              rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff for retry number ``attempt`` (1-based)."""
    return (rng or random).uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))
