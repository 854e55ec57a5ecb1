"""Rollout evidence shared through the store (SQLite and PostgreSQL): what other processes
observed counts in this one's window stats, once, and only for endpoints under rollout."""

from __future__ import annotations

import pytest

from modelyard.rollout.evidence import SharedEvidence
from modelyard.rollout.observations import Observations
from modelyard.store.db import Database


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def recorder(clock: Clock, wall_offset: float) -> Observations:
    """Observations on a monotonic-like clock whose Unix time is clock + offset (processes
    disagree on their monotonic clocks, not on Unix time)."""
    return Observations(horizon_s=60, samples_per_second=4, clock=clock, seed=1,
                        wall=lambda: clock.now + wall_offset)


def test_the_leader_counts_every_process_once(db: Database) -> None:
    clock_a, clock_b = Clock(1000.2), Clock(50.2)  # one Unix time, different own clocks
    a = recorder(clock_a, 1_700_000_000 - 1000)
    b = recorder(clock_b, 1_700_000_000 - 50)
    leader, follower = SharedEvidence(db, "a", a), SharedEvidence(db, "b", b)
    for i in range(20):  # three seconds of traffic on each (7, 7, 6), a failure on b
        for obs, clock in ((a, clock_a), (b, clock_b)):
            obs.record("churn/churn:2", True, 0.010 + i / 1000, prediction=0.5,
                       at=clock.now + i % 3)
    b.record("churn/churn:2", False, 0.5, at=clock_b.now + 1)
    b.record("other/other:1", True, 0.01, at=clock_b.now)  # no rollout: not shared
    for clock in (clock_a, clock_b):
        clock.now += 4  # the three seconds are whole now
    assert follower.publish({"churn"}) == 3
    assert follower.publish({"churn"}) == 0  # each second once
    assert leader.publish({"churn"}) == 3

    alone = Observations(horizon_s=60, samples_per_second=4)
    stats = a.stats("churn/churn:2", 10)
    assert (stats.requests, stats.errors) == (41, 1)  # its own 20, b's 20 and b's failure
    # Reservoirs of 4 a second: the samples carry the weight of the requests they stand for.
    assert stats.latency_weights is not None
    assert stats.latency_weights.sum() == pytest.approx(41)
    assert b.stats("churn/churn:2", 10).requests == 41  # its own and a's, not its own twice
    assert a.stats("other/other:1", 10).requests == 0
    assert alone.stats("churn/churn:2", 10).requests == 0  # no peers: its own only
    assert a.stats("churn/churn:2", 10, shadow=True).requests == 0

    # Past the horizon the rows go.
    assert leader.expire(now=1_700_000_000 + 120) == 6
    assert a.stats("churn/churn:2", 10).requests == 20


def test_nothing_is_published_without_a_rollout(db: Database) -> None:
    clock = Clock(10.5)
    obs = recorder(clock, 0)
    shared = SharedEvidence(db, "a", obs)
    obs.record("churn/churn:1", True, 0.01)
    clock.now += 2
    assert shared.publish() == 0  # no rollout in the store
