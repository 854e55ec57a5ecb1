"""Leader election through the store, on SQLite and PostgreSQL: one leader at a time, a
hand-over on stop, a takeover when the leader stops renewing, and on PostgreSQL the loss of
leadership when the lock's session dies."""

from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from modelyard.control.leadership import Leadership
from modelyard.store.db import Database


def _pair(db: Database, kind: str, lease_s: float = 1.0) -> tuple[Leadership, Leadership]:
    return (Leadership(db, owner="a", lease_s=lease_s, kind=kind),
            Leadership(db, owner="b", lease_s=lease_s, kind=kind))


def test_auto_picks_advisory_locks_on_postgresql_and_a_lease_row_on_sqlite(
        db: Database) -> None:
    expected = "advisory_lock" if db.engine.dialect.name == "postgresql" else "lease"
    assert Leadership(db).election.kind == expected


@pytest.mark.parametrize("kind", ["auto", "lease"])
def test_one_leader_at_a_time_and_a_hand_over_on_stop(db: Database, kind: str) -> None:
    a, b = _pair(db, kind)
    try:
        assert a.tick() is True
        assert b.tick() is False
        for _ in range(3):  # renewals keep it where it is
            assert a.tick() is True and b.tick() is False
        a.stop()  # hands over: no need to wait for the lease to run out
        assert not a.is_leader
        assert b.tick() is True
        assert a.tick() is False  # and the old leader does not come back
    finally:
        a.stop()
        b.stop()


def test_a_leader_that_stops_renewing_is_replaced_after_its_lease(db: Database) -> None:
    a, b = _pair(db, "lease", lease_s=0.6)
    try:
        assert a.tick() is True
        assert b.tick() is False
        started = time.monotonic()
        while not b.tick():  # a is "frozen": it does not renew
            assert time.monotonic() - started < 5, "no takeover"
            time.sleep(0.05)
        took = time.monotonic() - started
        assert 0.4 < took < 1.5, took  # not before the lease ran out, soon after
        # a no longer trusts itself (its lease ran out on its own clock too) and its next
        # renewal finds the term changed.
        assert not a.is_leader
        assert a.tick() is False and b.tick() is True
    finally:
        a.stop()
        b.stop()


def test_the_background_loop_keeps_leadership_and_counts_leader_only_runs(
        db: Database) -> None:
    a, b = _pair(db, "auto", lease_s=0.6)
    a.start()
    b.start()
    try:
        time.sleep(1.5)  # several renewals: leadership must not flap
        assert a.is_leader and not b.is_leader
        assert a.changes == 1 and b.changes == 0
        runs_a, runs_b = a.checker("rollouts"), b.checker("rollouts")
        assert [runs_a(), runs_b(), runs_a()] == [True, False, True]
        registry = CollectorRegistry()
        registry.register(a.collector())
        text = generate_latest(registry).decode()
        assert "modelyard_leader 1.0" in text
        assert 'modelyard_leader_task_runs_total{task="rollouts"} 2.0' in text
        a.stop()
        deadline = time.monotonic() + 0.6 / 3 + 1.0
        while not b.is_leader:
            assert time.monotonic() < deadline, "b did not take over"
            time.sleep(0.02)
        registry_b = CollectorRegistry()
        registry_b.register(b.collector())
        assert "modelyard_leader 1.0" in generate_latest(registry_b).decode()
    finally:
        a.stop()
        b.stop()


def test_postgresql_leadership_is_lost_with_the_lock_session(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    a, b = _pair(db, "advisory_lock")
    try:
        assert a.tick() is True and b.tick() is False
        # Another client ends the leader's session (as PostgreSQL does when the leader's
        # process dies or its network goes): the lock goes with it.
        pid = a.election._conn.info.backend_pid  # type: ignore[attr-defined]
        with db.engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            conn.commit()
        # pg_terminate_backend only signals: the session (and its lock) ends moments later.
        deadline = time.monotonic() + 10
        while not b.tick() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.is_leader
        assert a.tick() is False and not a.is_leader
        assert a.tick() is False  # b holds it now
    finally:
        a.stop()
        b.stop()


def test_yards_in_other_schemas_do_not_share_the_lock(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with db.engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.commit()
    base = db.engine.url.render_as_string(hide_password=False).split("?")[0]
    other = Database(f"{base}?options=-csearch_path%3D{schema}")
    a = Leadership(db, owner="a", kind="advisory_lock")
    c = Leadership(other, owner="c", kind="advisory_lock")
    try:
        assert a.tick() is True and c.tick() is True
    finally:
        a.stop()
        c.stop()
        other.dispose()
        with db.engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            conn.commit()
