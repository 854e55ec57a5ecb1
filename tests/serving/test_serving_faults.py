"""Faults under load over real HTTP: a replica killed (retried, ejected, replaced), and
scale-down plus redeploy (every request answered exactly once, no errors)."""

from __future__ import annotations

import collections
import itertools
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.testing.models import Faulty, Weighted

MAX_BATCH = 4
FIRST_ID = 1001
CONSECUTIVE = 5  # failures in a row that eject a replica (serving/replicas.py)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


class Load:
    """``clients`` threads posting one row each, with a unique id (from 1001: warm-up rows
    are ones) as its first value, until stopped (at most ``limit`` requests in all): a
    bounded, steady load."""

    def __init__(self, url: str, endpoint: str, clients: int = 4, limit: int = 3000) -> None:
        self.url, self.endpoint, self.clients, self.limit = url, endpoint, clients, limit
        self.answers: dict[int, list[tuple[int, str, list[float] | str]]] = \
            collections.defaultdict(list)
        self.sent = 0
        self._ids = itertools.count(FIRST_ID)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_for(self, answered: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.answered < answered:
            assert time.monotonic() < deadline, f"only {self.answered} answers"
            time.sleep(0.01)

    @property
    def answered(self) -> int:
        return sum(len(a) for a in self.answers.values())

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                with self._lock:
                    if self.sent >= self.limit:
                        return
                    self.sent += 1
                    rid = next(self._ids)
                response = http.post(f"/endpoints/{self.endpoint}/predict",
                                     json={"inputs": [[float(rid), 1.0, 2.0, 3.0]]},
                                     headers={"x-request-id": f"r{rid}"})
                assert response.headers["x-request-id"] == f"r{rid}"
                body = response.json()["outputs"]["output"] if response.status_code == 200 \
                    else response.text
                with self._lock:
                    self.answers[rid].append((response.status_code,
                                              response.headers.get("modelyard-model-version",
                                                                   ""), body))

    def failures(self) -> list[tuple[int, int, str]]:
        return [(rid, code, str(body)) for rid, got in self.answers.items()
                for code, _, body in got if code != 200]


def test_a_killed_replica_is_retried_around_ejected_and_replaced(yard: Yard,
                                                                 admin_key: str) -> None:
    yard.register("faulty", "modelyard.testing.models:Faulty", flavor="python", trusted=True,
                  sample=np.ones((1, 4), dtype=np.float32))
    yard.create_endpoint("faulty", "faulty:1", auth="public",
                         deployment={"replicas": 3, "max_batch_size": MAX_BATCH})
    Faulty.instances.clear()
    with BackgroundServer(yard) as srv:
        replicas = list(Faulty.instances)
        assert len(replicas) == 3
        with Load(srv.url, "faulty", clients=4, limit=1200) as load:
            load.wait_for(200)
            Faulty.kill(0)
            load.wait_for(1200)
        # The replacement loads in the background: wait for it (bounded), then use it.
        deadline = time.monotonic() + 30
        while len(Faulty.instances) < 4:
            assert time.monotonic() < deadline, "the dead replica was not replaced"
            time.sleep(0.05)
        fresh = Faulty.instances[3]
        with Load(srv.url, "faulty", clients=4, limit=300) as after:
            after.wait_for(300)
        with httpx.Client(base_url=srv.url, timeout=30,
                          headers={"authorization": f"Bearer {admin_key}"}) as http:
            text = http.get("/metrics").text
    failed = load.failures()
    retries = metric(text, "modelyard_retries_total")
    exhausted = metric(text, "modelyard_retry_budget_exhausted_total")
    ejections = metric(text, "modelyard_replica_ejections_total")
    replaced = metric(text, 'modelyard_replica_replacements_total{endpoint="faulty",'
                            'result="ok",version="faulty:1"}')
    print(f"\n1200 requests, replica 0 killed after 200: {len(failed)} failed, "
          f"{retries:.0f} retries, {exhausted:.0f} refused by the budget, "
          f"{ejections:.0f} ejections, replacement calls {fresh.calls}")
    # Every request got exactly one answer, and the right one when it succeeded.
    assert all(len(got) == 1 for got in load.answers.values()) and len(load.answers) == 1200
    assert all(body == [rid + 6.0] for rid, got in load.answers.items()
               for code, _, body in got if code == 200)
    # The dead replica runs at most CONSECUTIVE batches before it is ejected; only their
    # requests can fail, and only those the retry budget refused.
    assert len(failed) <= CONSECUTIVE * MAX_BATCH, failed[:3]
    assert len(failed) == exhausted
    # Retries: at most 20% of the requests plus the floor (1/s over a 10 s window).
    assert 1 <= retries <= 0.2 * 1500 + 10
    assert ejections >= 1 and replaced >= 1
    assert replicas[0].dead and not fresh.dead and fresh.calls > 0
    assert not after.failures()


def test_scale_down_and_redeploy_under_load_answer_every_request_once(
        yard: Yard, tmp_path: Path) -> None:
    for version, scale in ((1, 1.0), (2, 2.0)):
        yard.register("steady", path=Weighted.save(tmp_path / f"v{version}", scale=scale),
                      flavor="python", trusted=True, sample=np.ones((1, 4), dtype=np.float32))
    yard.create_endpoint("steady", "steady:1", auth="public",
                         deployment={"replicas": 3, "max_batch_size": 8})
    Weighted.computed.clear()
    Weighted.record = True
    try:
        with BackgroundServer(yard) as srv, Load(srv.url, "steady", clients=4,
                                                 limit=4000) as load:
            load.wait_for(300)
            yard.update_endpoint("steady", deployment={"replicas": 1})  # scale down
            load.wait_for(load.answered + 300)
            yard.update_endpoint("steady", model="steady:2")  # redeploy
            deadline = time.monotonic() + 30
            while not any(v == "steady:2" for got in list(load.answers.values())
                          for _, v, _ in got):
                assert time.monotonic() < deadline, "steady:2 never answered"
                time.sleep(0.01)
            load.wait_for(load.answered + 300)
    finally:
        Weighted.record = False
    answers = load.answers
    versions = collections.Counter(v for got in answers.values() for _, v, _ in got)
    print(f"\n{len(answers)} requests across scale-down and redeploy: {dict(versions)}")
    assert load.failures() == []
    assert sorted(answers) == list(range(FIRST_ID, FIRST_ID + len(answers)))  # none lost
    assert all(len(got) == 1 for got in answers.values())  # each answered once
    for rid, [(_, version, body)] in answers.items():  # by the version that says it did
        assert body == [(rid + 6.0) * (2.0 if version == "steady:2" else 1.0)], (rid, version)
    assert versions["steady:1"] > 0 and versions["steady:2"] > 0
    # Computed exactly once each: nothing ran twice (no retries, no replays on the swap).
    computed = {int(k): n for k, n in Weighted.computed.items() if k >= FIRST_ID}
    assert computed == dict.fromkeys(answers, 1)
