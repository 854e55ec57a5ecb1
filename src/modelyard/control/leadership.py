"""Leader election through the metadata store: several control-plane processes share one
yard, and the work that must happen once per yard (rollout analysis, cron schedules, monitor
scheduling, inference-log retention) runs only in the leader.

- PostgreSQL: a session-level ``pg_try_advisory_lock`` held on a connection of its own. The
  lock lives exactly as long as that session: a leader that is killed, or whose connection
  breaks, loses it the moment the server notices (at once for a dead process: its socket is
  closed by the kernel; within the TCP keepalive settings below for a lost network). Every
  tick checks, in ``pg_locks``, that the session still holds it.
- SQLite (one node): a ``leader_lease`` row (owner, term, expires_at) taken when expired and
  renewed by its holder with a conditional UPDATE. A leader that stops renewing is replaced
  once its lease has run out.

Either way a leader trusts its leadership only until ``lease_s`` after its last successful
check (a monotonic clock): a renew loop stuck on a hung database stops acting by itself
instead of acting alongside its successor. Data-plane work (each server's reconciler) and
job workers (claims are exclusive already) run everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from modelyard.domain.errors import ValidationFailed
from modelyard.store.db import Database
from modelyard.store.tables import LeaderLeaseRow

log = logging.getLogger("modelyard.leadership")

DEFAULT_LEASE_S = 15.0
# Server-side keepalives for the lock's session: a leader cut off by the network is dropped
# by PostgreSQL (and its lock freed) after about idle + interval x count seconds.
_PG_KEEPALIVES = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 2,
                  "tcp_keepalives_count": 3}


class Election(Protocol):
    """One way to hold leadership: ``hold`` takes or keeps it (whether this process leads
    now), ``release`` gives it up so a successor need not wait."""

    kind: str

    def hold(self) -> bool: ...

    def release(self) -> None: ...


class AdvisoryLock:
    """PostgreSQL: a session-level advisory lock on a dedicated connection."""

    kind = "advisory_lock"

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self._conn: Any = None  # the psycopg connection holding the lock
        self.key: int | None = None

    def hold(self) -> bool:
        if self._conn is not None:
            try:
                if self._still_held():
                    return True
                log.warning("leadership %s: the advisory lock is no longer held", self.name)
            except Exception as exc:  # the session died, and the lock with it
                log.warning("leadership %s: lock connection lost (%s)", self.name, exc)
            self._close()
            return False
        try:
            conn = self._connect()
        except Exception as exc:
            log.warning("leadership %s: cannot reach PostgreSQL (%s)", self.name, exc)
            return False
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def _connect(self) -> Any:
        """A connection of its own (detached from the pool: closing it ends the session)."""
        proxied = self.db.engine.raw_connection()
        conn: Any = proxied.driver_connection
        proxied.detach()
        conn.autocommit = True
        for name, value in _PG_KEEPALIVES.items():
            conn.execute(f"SET {name} = {int(value)}")
        if self.key is None:
            # Advisory locks are per database, a yard per schema: both name the lock.
            schema = conn.execute("SELECT current_database() || '.' || current_schema()"
                                  ).fetchone()[0]
            self.key = lock_key(f"{schema}:{self.name}")
        return conn

    def _still_held(self) -> bool:
        assert self.key is not None
        unsigned = self.key & 0xFFFF_FFFF_FFFF_FFFF
        row = self._conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
        return bool(row[0])

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing the session frees it anyway
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()


class LeaseRow:
    """SQLite (and any database): a lease row renewed with a conditional UPDATE."""

    kind = "lease"

    def __init__(self, db: Database, name: str, owner: str, lease_s: float,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.name = name
        self.owner = owner
        self.lease_s = lease_s
        self.clock = clock or (lambda: datetime.now(UTC))
        self.term: int | None = None  # set while this process holds the lease

    def hold(self) -> bool:
        now = self.clock()
        until = now + timedelta(seconds=self.lease_s)
        mine = LeaderLeaseRow.name == self.name
        try:
            with self.db.transaction() as session:
                if self.term is not None:
                    renewed = session.execute(
                        update(LeaderLeaseRow)
                        .where(mine, LeaderLeaseRow.owner == self.owner,
                               LeaderLeaseRow.term == self.term,
                               LeaderLeaseRow.expires_at > now)
                        .values(expires_at=until)
                        .execution_options(synchronize_session=False))
                    if getattr(renewed, "rowcount", 0) == 1:
                        return True
                    log.warning("leadership %s: lease (term %d) lost", self.name, self.term)
                    self.term = None
                    return False  # a successor may hold it: look again next tick
                taken = session.execute(
                    update(LeaderLeaseRow)
                    .where(mine, LeaderLeaseRow.expires_at <= now)
                    .values(owner=self.owner, term=LeaderLeaseRow.term + 1,
                            acquired_at=now, expires_at=until)
                    .execution_options(synchronize_session=False))
                if getattr(taken, "rowcount", 0) == 1:
                    self.term = session.scalar(select(LeaderLeaseRow.term).where(mine))
                    return True
                if session.get(LeaderLeaseRow, self.name) is not None:
                    return False  # held by someone else, not expired
                session.add(LeaderLeaseRow(name=self.name, owner=self.owner, term=1,
                                           acquired_at=now, expires_at=until))
                session.flush()
                self.term = 1
                return True
        except IntegrityError:  # another process inserted the first row just now
            self.term = None
            return False

    def release(self) -> None:
        if self.term is None:
            return
        with self.db.transaction() as session:
            session.execute(
                update(LeaderLeaseRow)
                .where(LeaderLeaseRow.name == self.name, LeaderLeaseRow.owner == self.owner,
                       LeaderLeaseRow.term == self.term)
                .values(expires_at=self.clock())
                .execution_options(synchronize_session=False))
        self.term = None


class Leadership:
    """Whether this process leads the yard's control plane (``is_leader``), kept up to date
    by a background thread (``start`` / ``stop``) that checks every third of ``lease_s``.

    ``kind``: ``auto`` (advisory lock on PostgreSQL, lease row elsewhere), ``advisory_lock``
    or ``lease``. A successor takes over within one check interval of the old leader's
    session ending (PostgreSQL), or within ``lease_s`` plus one interval of its last renewal
    (lease row)."""

    def __init__(self, db: Database, name: str = "control", *, owner: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S, kind: str = "auto") -> None:
        if not 0.3 <= lease_s <= 3600:
            raise ValidationFailed("leader_lease_s must be from 0.3 to 3600 seconds",
                                   field="leader_lease_s")
        self.name = name
        self.owner = (owner or f"{socket.gethostname()}:{os.getpid()}")[:200]
        self.lease_s = float(lease_s)
        self.interval_s = self.lease_s / 3
        if kind == "auto":
            kind = "advisory_lock" if db.engine.dialect.name == "postgresql" else "lease"
        if kind == "advisory_lock":
            self.election: Election = AdvisoryLock(db, name)
        elif kind == "lease":
            self.election = LeaseRow(db, name, self.owner, self.lease_s)
        else:
            raise ValidationFailed(f"unknown election kind {kind!r}", field="kind")
        self.on_change: Callable[[bool], None] | None = None
        self.runs: Counter[str] = Counter()  # leader-only task runs, by task
        self.changes = 0
        self.since: datetime | None = None
        self._leader = False
        self._valid_until = 0.0  # monotonic: trusted until then without a new check
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        role = "leader" if self.is_leader else "follower"
        return f"Leadership({self.name!r}, {self.election.kind}, {self.owner!r}, {role})"

    @property
    def is_leader(self) -> bool:
        return self._leader and time.monotonic() < self._valid_until

    def tick(self) -> bool:
        """Take, keep or check leadership once; whether this process leads now."""
        with self._lock:
            started = time.monotonic()
            try:
                held = self.election.hold()
            except Exception:  # a database blip: not leader until a check succeeds
                log.exception("leadership %s: check failed", self.name)
                held = False
            if held:
                self._valid_until = started + self.lease_s
            if held != self._leader:
                self._leader = held
                self.changes += 1
                self.since = datetime.now(UTC)
                if held:
                    log.info("leadership %s: %s now leads (%s)", self.name, self.owner,
                             self.election.kind)
                else:
                    log.warning("leadership %s: %s no longer leads", self.name, self.owner)
                if self.on_change is not None:
                    self.on_change(held)
            return self.is_leader

    def start(self) -> Leadership:
        """Check once now (a lone server leads from its first moment), then keep checking
        on a background thread."""
        self.tick()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="modelyard-leadership",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop checking and hand leadership back, so a successor takes over at its next
        check instead of after the lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        with self._lock:
            try:
                self.election.release()
            except Exception:  # the lease then simply runs out
                log.warning("leadership %s: release failed", self.name, exc_info=True)
            self._leader = False

    def checker(self, task: str) -> Callable[[], bool]:
        """``is_leader`` for one leader-only task, counting the runs it allows (the
        ``modelyard_leader_task_runs_total`` counter says which process did the work)."""

        def leads() -> bool:
            if self.is_leader:
                self.runs[task] += 1
                return True
            return False

        return leads

    def status(self) -> dict[str, Any]:
        return {"leader": self.is_leader, "owner": self.owner, "kind": self.election.kind,
                "since": self.since.isoformat() if self.since else None,
                "lease_s": self.lease_s}

    def collector(self) -> Collector:
        return _LeaderMetrics(self)


class _LeaderMetrics(Collector):
    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        leader, changes, runs = self._families()
        leader.add_metric([], 1.0 if self.leadership.is_leader else 0.0)
        changes.add_metric([], float(self.leadership.changes))
        for task, count in sorted(self.leadership.runs.items()):
            runs.add_metric([task], float(count))
        yield from (leader, changes, runs)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (GaugeMetricFamily("modelyard_leader", "1 while this process leads the "
                                  "yard's control plane (rollouts, schedules, monitors)."),
                CounterMetricFamily("modelyard_leader_changes", "Times this process "
                                    "became or stopped being the leader."),
                CounterMetricFamily("modelyard_leader_task_runs", "Runs of leader-only "
                                    "tasks in this process.", labels=["task"]))


def lock_key(text: str) -> int:
    """A signed 64-bit advisory lock key for ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
