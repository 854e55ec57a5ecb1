"""Who may call an endpoint's data plane, decided without touching the database.

``public`` endpoints answer anyone. ``key`` endpoints need an API key whose roles allow
``predict``: keys are checked against an in-memory snapshot of the active keys (hashes only),
refreshed by the reconciler and after every key change made through this process, so a
revocation elsewhere takes effect within one reconcile interval. ``jwt`` endpoints need an
OIDC token (verified tokens are cached until they expire).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from cachetools import TTLCache
from sqlalchemy import select

from modelyard.domain.errors import (
    Forbidden,
    ModelyardError,
    QuotaExceeded,
    TooManyRequests,
    Unauthenticated,
)
from modelyard.domain.registry import Endpoint
from modelyard.governance import audit
from modelyard.governance.auth import auth_failures
from modelyard.governance.oidc import JwtVerifier
from modelyard.governance.policy import Principal
from modelyard.store.db import Database
from modelyard.store.keys import KEY_PREFIX, add_usage, usage_on
from modelyard.store.tables import ApiKeyRow

_MAX_REFUSAL_KINDS = 1000


class _Key(NamedTuple):
    key_hash: str
    roles: frozenset[str]
    rate_per_s: float | None
    daily_quota: int | None
    owner: str


class DataPlaneAccess:
    def __init__(self, db: Database, tokens: JwtVerifier | None) -> None:
        self.db = db
        self.tokens = tokens
        self._keys: dict[str, _Key] = {}
        self._verified: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=60)
        self._lock = threading.Lock()
        # Rate limits: a token bucket per key (capacity = one second of its rate, at least 1).
        self._buckets: dict[str, list[float]] = {}
        # Daily quotas: calls today per key (stored + not yet flushed), flushed on refresh.
        self._day = _today()
        self._used: dict[str, int] = {}
        self._unflushed: dict[tuple[str, str], int] = {}
        # Refused calls since the last flush: (actor, endpoint, code) -> (count, detail).
        self._refusals: dict[tuple[str, str, str], tuple[int, str]] = {}

    def refresh(self) -> None:
        """Flush usage counts, then reload the active keys (hashes, roles, limits) and
        today's usage from the store."""
        with self._lock:
            pending, self._unflushed = self._unflushed, {}
        today = _today()
        with self.db.transaction() as session:
            if pending:
                add_usage(session, pending)
            self._flush_refusals(session)
            auth_failures(self.db).flush(session)  # the control plane's, past their bound
            rows = session.execute(select(ApiKeyRow.prefix, ApiKeyRow.key_hash,
                                          ApiKeyRow.roles, ApiKeyRow.rate_per_s,
                                          ApiKeyRow.daily_quota, ApiKeyRow.owner)
                                   .where(ApiKeyRow.revoked_at.is_(None))).all()
            stored = usage_on(session, today)
        with self._lock:
            self._keys = {p: _Key(h, frozenset(r), rate, quota, owner)
                          for p, h, r, rate, quota, owner in rows}
            # Stored counts include the flush; calls counted since then go on top.
            used = dict(stored)
            for (prefix, day), calls in self._unflushed.items():
                if day == today:
                    used[prefix] = used.get(prefix, 0) + calls
            self._day, self._used = today, used

    def check(self, endpoint: Endpoint, authorization: bytes | None) -> Principal | None:
        """Allow a call to ``endpoint`` under its auth mode, or raise 401/403 (429 beyond
        the key's rate or quota); the caller (None on a public endpoint). Refusals are
        audited, in batches (see ``_refused``)."""
        if endpoint.auth == "public":
            return None
        actor = "anonymous"
        try:
            token = _bearer(authorization)
            principal = self._by_key(token) if endpoint.auth == "key" else \
                self._by_token(token)
            actor = principal.name
            if not principal.may("predict", endpoint.project):
                raise Forbidden(f"{principal.name} may not call endpoints of project "
                                f"{endpoint.project!r}")
            if endpoint.auth == "key":
                self._count(token.partition(".")[0])
            return principal
        except (Unauthenticated, Forbidden, TooManyRequests) as refused:
            self._refused(actor, endpoint.name, refused)
            raise

    def identify(self, authorization: bytes | None) -> Principal | None:
        """Who sent a request to a public endpoint, if they said (no refusal: a public
        endpoint answers anyone; this only decides extras such as choosing a version)."""
        try:
            token = _bearer(authorization)
            return self._by_key(token) if token.startswith(KEY_PREFIX) or \
                self.tokens is None else self._by_token(token)
        except (Unauthenticated, Forbidden):
            return None

    def check_action(self, authorization: bytes | None, action: str, target: str
                     ) -> Principal:
        """A key or token (whichever it is) allowed ``action`` in some project."""
        actor = "anonymous"
        try:
            token = _bearer(authorization)
            principal = self._by_key(token) if token.startswith(KEY_PREFIX) or \
                self.tokens is None else self._by_token(token)
            actor = principal.name
            if not principal.may_somewhere(action):
                raise Forbidden(f"{principal.name} may not {action}")
            return principal
        except (Unauthenticated, Forbidden) as refused:
            self._refused(actor, target, refused)
            raise

    def _refused(self, actor: str, endpoint: str, error: ModelyardError) -> None:
        """Count a refusal for the audit chain. Writing a record per refused call would let
        anyone flood the chain (and the database) from outside; instead each reconcile
        writes one record per (actor, endpoint, reason) with how many calls it stands for."""
        key = (actor, endpoint, error.code)
        with self._lock:
            if key not in self._refusals and len(self._refusals) >= _MAX_REFUSAL_KINDS:
                key = ("(many)", endpoint, error.code)
            count, _ = self._refusals.get(key, (0, ""))
            self._refusals[key] = (count + 1, error.detail)

    def _flush_refusals(self, session: Any) -> None:
        with self._lock:
            refusals, self._refusals = self._refusals, {}
        for (actor, endpoint, code), (count, detail) in sorted(refusals.items()):
            target = endpoint if endpoint == "metrics" else f"endpoint:{endpoint}"
            audit.append(session, actor, "predict" if target != "metrics" else "metrics:read",
                         target, outcome="denied",
                         after={"reason": detail, "code": code, "calls": count})

    def _count(self, prefix: str) -> None:
        """Spend one call of the key's rate and quota, or refuse with 429."""
        limits = self._keys[prefix]
        rate, quota = limits.rate_per_s, limits.daily_quota
        if rate is None and quota is None:
            return
        now = time.monotonic()
        today = _today()
        with self._lock:
            if today != self._day:
                self._day, self._used = today, {}
            if quota is not None and self._used.get(prefix, 0) >= quota:
                raise QuotaExceeded(f"key {prefix} used its {quota} calls for today (UTC)",
                                    retry_after_s=_seconds_to_midnight())
            if rate is not None:
                capacity = max(1.0, rate)
                tokens, last = self._buckets.get(prefix, [capacity, now])
                tokens = min(capacity, tokens + (now - last) * rate)
                if tokens < 1:
                    raise TooManyRequests(f"key {prefix} is limited to {rate:g} calls/s",
                                          retry_after_s=math.ceil((1 - tokens) / rate))
                self._buckets[prefix] = [tokens - 1, now]
            self._used[prefix] = self._used.get(prefix, 0) + 1
            key = (prefix, today)
            self._unflushed[key] = self._unflushed.get(key, 0) + 1

    def _by_key(self, token: str) -> Principal:
        prefix, dot, _ = token.partition(".")
        known = self._keys.get(prefix) if dot and prefix.startswith(KEY_PREFIX) else None
        if known is None or not hmac.compare_digest(
                known.key_hash, hashlib.sha256(token.encode()).hexdigest()):
            raise Unauthenticated("this endpoint needs a valid API key", field="authorization")
        return Principal(f"key:{known.owner}:{prefix}", known.roles,
                         subject=known.owner.strip().lower())

    def _by_token(self, token: str) -> Principal:
        if self.tokens is None:
            raise Unauthenticated("this endpoint needs a JWT, but the server has no JWKS "
                                  "configured", field="authorization")
        with self._lock:
            cached = self._verified.get(token)
        if cached is not None:
            return cached
        principal = self.tokens.principal(token)  # raises Unauthenticated
        with self._lock:
            self._verified[token] = principal
        return principal


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _seconds_to_midnight() -> int:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((midnight - now).total_seconds()) + 1


def _bearer(authorization: bytes | None) -> str:
    if not authorization:
        raise Unauthenticated("this endpoint needs 'Authorization: Bearer <key or token>'",
                              field="authorization")
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 8192:
        raise Unauthenticated("use 'Authorization: Bearer <key or token>'",
                              field="authorization")
    return token.strip()

