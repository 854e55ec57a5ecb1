"""The recorder behind rollout analysis: windows, expiry, sampling, shadows, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.domain.errors import ValidationFailed
from modelyard.rollout.observations import Observations


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_counts_error_rate_and_percentiles_match_numpy() -> None:
    clock = FakeClock()
    obs = Observations(clock=clock, seed=1)
    rng = np.random.default_rng(0)
    latencies = rng.lognormal(-4, 0.5, 600)
    for i, latency in enumerate(latencies):
        clock.now = 1000 + i / 10  # 10 a second, below the per-second sample size
        obs.record("m:2", ok=i % 20 != 0, latency_s=float(latency), prediction=i / 600)
    stats = obs.stats("m:2", since_s=120)
    assert (stats.requests, stats.errors) == (600, 30)
    assert stats.error_rate == pytest.approx(0.05)
    assert stats.p50_s == pytest.approx(np.quantile(latencies, 0.5))
    assert stats.p99_s == pytest.approx(np.quantile(latencies, 0.99))
    assert stats.latency_weights is None
    assert sorted(stats.latencies_s) == pytest.approx(sorted(latencies))
    assert stats.predictions.size == 570  # failed answers have no prediction to compare


def test_empty_window_has_no_rates() -> None:
    stats = Observations(clock=FakeClock()).stats("nobody:1", since_s=60)
    assert (stats.requests, stats.error_rate, stats.p50_s, stats.p99_s) == (0, None, None, None)
    assert stats.agreement is None
    assert stats.to_dict()["requests"] == 0


def test_window_covers_whole_seconds_back_from_until() -> None:
    clock = FakeClock(0)
    obs = Observations(clock=clock)
    for second in range(100):
        obs.record("v", True, 0.01, at=second + 0.5)
    assert obs.stats("v", since_s=10, until=100.0).requests == 10  # 90..99 (100 is empty)
    assert obs.stats("v", since_s=10, until=99.9).requests == 11  # 89..99: second 89 overlaps
    assert obs.stats("v", since_s=10, until=95.0).requests == 11  # 85..95
    assert obs.stats("v", since_s=1_000, until=100.0).requests == 100
    clock.now = 150.0
    assert obs.stats("v", since_s=60).requests == 10  # 90..99 are within the last minute


def test_old_seconds_expire_after_the_horizon() -> None:
    clock = FakeClock(0)
    obs = Observations(horizon_s=60, clock=clock)
    obs.record("v", False, 0.01, at=5.0)
    obs.record("v", True, 0.02, at=30.0)
    assert obs.stats("v", since_s=60, until=59).requests == 2
    obs.record("v", True, 0.03, at=65.0)  # reuses second 5's slot
    stats = obs.stats("v", since_s=60, until=65.5)
    assert (stats.requests, stats.errors) == (2, 0)
    assert sorted(stats.latencies_s) == [0.02, 0.03]
    obs.record("v", False, 0.5, at=6.0)  # late but its slot is free: kept
    obs.record("v", False, 0.5, at=5.0)  # its slot holds second 65 already: dropped
    assert obs.stats("v", since_s=60, until=65.5).errors == 1
    assert obs.stats("v", since_s=600, until=200).requests == 0  # all of it expired


def test_busy_seconds_are_sampled_but_counted_exactly() -> None:
    obs = Observations(samples_per_second=64, clock=FakeClock(), seed=3)
    values = np.linspace(0.001, 1.0, 5_000)
    for value in values:
        obs.record("v", True, float(value), prediction=float(value), at=10.2)
    stats = obs.stats("v", since_s=5, until=11)
    assert stats.requests == 5_000
    assert stats.latencies_s.size == stats.predictions.size == 64
    assert stats.p50_s == pytest.approx(0.5, abs=0.15)  # a uniform sample of the second


def test_subsampled_seconds_weigh_by_the_requests_they_stand_for() -> None:
    obs = Observations(samples_per_second=16, clock=FakeClock(), seed=4)
    for _ in range(1_000):
        obs.record("v", True, 0.010, at=1.0)  # busy second: 16 samples for 1000 requests
    for _ in range(10):
        obs.record("v", True, 0.200, at=2.0)  # quiet second: all 10 kept
    stats = obs.stats("v", since_s=10, until=3)
    assert stats.latencies_s.size == 26
    assert stats.latency_weights is not None
    assert stats.latency_quantile_s(0.9) == pytest.approx(0.010)  # unweighted would say 0.2
    assert np.quantile(stats.latencies_s, 0.9) == pytest.approx(0.2)


def test_threads_recording_at_once_lose_nothing() -> None:
    obs = Observations(clock=FakeClock(), seed=5)
    per_thread, threads = 5_000, 8

    def work(n: int) -> None:
        for i in range(per_thread):
            obs.record(f"v{n % 2}", ok=i % 10 != 0, latency_s=0.001 * (i % 7),
                       prediction=0.5, at=1000 + (i % 30))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for version in ("v0", "v1"):
        stats = obs.stats(version, since_s=60, until=1030)
        assert stats.requests == per_thread * threads // 2
        assert stats.errors == stats.requests // 10
    assert obs.versions() == ["v0", "v1"]


def test_shadow_traffic_is_kept_apart_with_agreement_and_paired_answers() -> None:
    obs = Observations(clock=FakeClock(100.0))
    obs.record("m:1", True, 0.010, prediction=0.7)
    for i in range(10):
        obs.record_shadow("m:1", "m:2", agreed=i < 8, primary_value=0.7, shadow_value=0.6,
                          latency_s=0.050, ok=True)
    obs.record_shadow("m:1", "m:2", agreed=False, primary_value=0.7, shadow_value=None,
                      latency_s=1.0, ok=False)
    assert obs.stats("m:2", since_s=60).requests == 0  # m:2 served nothing itself
    shadow = obs.stats("m:2", since_s=60, shadow=True)
    assert (shadow.requests, shadow.errors) == (11, 1)
    assert (shadow.agreed, shadow.compared, shadow.agreement) == (8, 10, 0.8)
    assert shadow.predictions.tolist() == [0.6] * 10
    assert shadow.paired_predictions.tolist() == [0.7] * 10
    assert shadow.p99_s == pytest.approx(np.quantile([0.05] * 10 + [1.0], 0.99))
    assert obs.stats("m:1", since_s=60).requests == 1


def test_bad_numbers_are_not_sampled() -> None:
    obs = Observations(clock=FakeClock())
    obs.record("v", True, float("nan"), prediction=float("inf"))
    obs.record("v", True, -1.0, prediction=float("nan"))
    obs.record("v", False, 0.2, prediction=0.9)  # a failed answer's prediction is not kept
    stats = obs.stats("v", since_s=10)
    assert stats.requests == 3
    assert stats.latencies_s.tolist() == [0.2]
    assert stats.predictions.size == 0


def test_forget_drops_both_series() -> None:
    obs = Observations(clock=FakeClock())
    obs.record("a", True, 0.01)
    obs.record_shadow("a", "b", True, 1.0, 1.0, 0.01, True)
    obs.record("b", True, 0.01)
    assert obs.versions() == ["a", "b"]
    obs.forget("b")
    assert obs.versions() == ["a"]
    assert obs.stats("b", since_s=60, shadow=True).requests == 0


@pytest.mark.parametrize("kwargs", [{"horizon_s": 0}, {"horizon_s": 100_000},
                                    {"samples_per_second": 0}])
def test_settings_are_checked(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValidationFailed):
        Observations(**kwargs)  # type: ignore[arg-type]


def test_window_must_have_a_length() -> None:
    with pytest.raises(ValidationFailed):
        Observations(clock=FakeClock()).stats("v", since_s=0)


@settings(max_examples=60, deadline=None)
@given(events=st.lists(st.tuples(st.floats(0, 299.99), st.booleans()), max_size=200),
       until=st.floats(0, 300), since=st.floats(0.5, 400))
def test_window_counts_equal_a_brute_force_filter(events: list[tuple[float, bool]],
                                                  until: float, since: float) -> None:
    obs = Observations(horizon_s=300, clock=FakeClock(0))
    for at, ok in sorted(events):
        obs.record("v", ok, 0.01, at=at)
    stats = obs.stats("v", since_s=since, until=until)
    low = np.floor(until - min(since, 300))
    inside = [ok for at, ok in events if low <= np.floor(at) <= np.floor(until)]
    assert stats.requests == len(inside)
    assert stats.errors == inside.count(False)
