"""Retry budgets and circuit breakers, driven by a fake clock."""

from __future__ import annotations

import random

import pytest

from modelyard.serving.resilience import CircuitBreaker, CircuitOpen, RetryBudget, backoff_s


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker("upstream", failures=3, reset_s=5, clock=clock)
    for _ in range(2):
        breaker.before()
        breaker.failure()
    breaker.before()
    breaker.success()  # a success resets the count
    for _ in range(3):
        breaker.before()
        breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        breaker.before()
    clock.now = 5.1
    breaker.before()  # the probe
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpen):
        breaker.before()  # one probe at a time
    breaker.failure()
    assert breaker.state == "open"
    clock.now = 10.3
    breaker.before()
    breaker.success()
    assert breaker.state == "closed"
    breaker.before()


def test_retry_budget_bounds_retries_to_a_share_of_attempts() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_per_s=0.1, window_s=10, clock=clock)
    for _ in range(100):
        budget.record_attempt()
    granted = sum(budget.try_retry() for _ in range(100))
    assert granted == 11  # 10% of 100 attempts + 1 (the floor over the window)
    clock.now = 10.5  # the window moved on: attempts and retries expired
    assert budget.try_retry()


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    values = [backoff_s(a, base_s=0.1, cap_s=1.0, rng=rng) for a in range(1, 20)]
    assert all(0 <= v <= 1.0 for v in values)
    assert len(set(values)) == len(values)
