"""Failed authentication is audited, but bounded: a flood from outside cannot grow the chain
a record per call (the first ones of a minute alone, the rest counted)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from modelyard import Yard
from modelyard.domain.errors import Unauthenticated
from modelyard.governance.auth import AuthFailures
from modelyard.serving.server import BackgroundServer
from modelyard.store.db import Database


class Clock:
    now = 600.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(yard: Yard) -> Iterator[Database]:
    yield yard.db


def failures(yard: Yard) -> list[dict]:  # type: ignore[type-arg]
    return [r for r in yard.audit_records() if r["action"] == "auth.failed"]


def test_the_first_of_a_minute_alone_the_rest_counted(yard: Yard, db: Database) -> None:
    clock = Clock()
    bound = AuthFailures(per_minute=3, clock=clock)
    bad = Unauthenticated("the API key is unknown or revoked", field="authorization")
    for _ in range(10):
        bound.record(db, "POST /api/v1/keys", bad)
    bound.record(db, "GET /api/v1/models", bad)
    assert len(failures(yard)) == 3
    clock.now += 60  # the next minute: what was counted is written with the next failure
    bound.record(db, "GET /api/v1/models", bad)
    written = failures(yard)
    counted = {r["target"]: r["after"]["calls"] for r in written if "calls" in r["after"]}
    assert counted == {"POST /api/v1/keys": 7, "GET /api/v1/models": 1}
    assert len(written) == 3 + 2 + 1
    for _ in range(5):
        bound.record(db, "GET /api/v1/models", bad)
    with db.transaction() as session:  # what the server's reconcile does
        bound.flush(session)
    assert failures(yard)[-1]["after"]["calls"] == 3
    assert yard.audit_verify()["ok"]


def test_a_flood_of_bad_keys_writes_a_bounded_number_of_records(yard: Yard) -> None:
    with BackgroundServer(yard) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        for i in range(120):
            r = http.get("/api/v1/models", headers={"authorization": f"Bearer my_bogus{i}"})
            assert r.status_code == 401
    records = failures(yard)  # the rest were written by a reconcile or at shutdown
    alone = [r for r in records if "calls" not in r["after"]]
    counted = sum(r["after"]["calls"] for r in records if "calls" in r["after"])
    assert len(alone) <= 40  # at most two minutes' worth, whatever the clock did
    assert len(alone) + counted == 120  # every failed call accounted for
    assert len(records) < 60
