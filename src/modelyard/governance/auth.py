"""Who is calling: a bearer API key resolved to a principal (OIDC comes with governance)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.requests import Request

from modelyard.domain.errors import Unauthenticated
from modelyard.governance import audit
from modelyard.governance.oidc import JwtVerifier
from modelyard.governance.policy import Principal
from modelyard.store import keys
from modelyard.store.db import Database

_TOUCH_EVERY_S = 60.0
_last_touch: dict[str, float] = {}


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("use 'Authorization: Bearer <key>'", field="authorization")
    return token.strip()


class AuthFailures:
    """Failed authentication goes to the audit chain (the key itself never does), bounded:
    the first ``per_minute`` failures of a minute get a record each; the rest are counted by
    (method and path, reason) and written as one record each with how many calls it stands
    for (``calls``), by the next failure after the minute or by ``flush`` (the server calls it
    on every reconcile). A record per failed call would let anyone flood the chain and the
    database from outside."""

    def __init__(self, per_minute: int = 20, max_kinds: int = 200,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.max_kinds = max_kinds
        self.clock = clock
        self._lock = threading.Lock()
        self._minute = -1
        self._written = 0
        self._held: dict[tuple[str, str], tuple[int, str]] = {}

    def record(self, db: Database, target: str, failure: Unauthenticated) -> None:
        minute = int(self.clock() // 60)
        with self._lock:
            if minute != self._minute:
                self._minute, self._written = minute, 0
                held, self._held = self._held, {}
            else:
                held = {}
            alone = self._written < self.per_minute
            if alone:
                self._written += 1
            else:
                key = (target, failure.code)
                if key not in self._held and len(self._held) >= self.max_kinds:
                    key = ("(many)", failure.code)
                count, _ = self._held.get(key, (0, ""))
                self._held[key] = (count + 1, failure.detail)
        if held or alone:
            with db.transaction() as session:
                _write_held(session, held)
                if alone:
                    audit.append(session, "anonymous", "auth.failed", target[:512],
                                 outcome="denied", after={"reason": failure.detail})

    def flush(self, session: Session) -> None:
        """Write the counted failures (inside the caller's transaction)."""
        with self._lock:
            held, self._held = self._held, {}
        _write_held(session, held)


def _write_held(session: Session, held: dict[tuple[str, str], tuple[int, str]]) -> None:
    for (target, code), (count, detail) in sorted(held.items()):
        audit.append(session, "anonymous", "auth.failed", target[:512], outcome="denied",
                     after={"reason": detail, "code": code, "calls": count})


# One bound per store a process writes to: the control plane's and the dashboard's
# failures share it.
_bounds: weakref.WeakKeyDictionary[Database, AuthFailures] = weakref.WeakKeyDictionary()
_bounds_lock = threading.Lock()


def auth_failures(db: Database) -> AuthFailures:
    with _bounds_lock:
        found = _bounds.get(db)
        if found is None:
            found = _bounds[db] = AuthFailures()
        return found


def record_auth_failure(db: Database, request: Request, failure: Unauthenticated) -> None:
    """Failed authentication to the audit chain, bounded (``AuthFailures``)."""
    auth_failures(db).record(db, f"{request.method} {request.url.path}", failure)


def principal_from_request(request: Request, db: Database,
                           tokens: JwtVerifier | None = None) -> Principal | None:
    """The principal behind the request's key or token; ``None`` without one; 401 for a bad
    one. API keys start with ``my_``; anything else is a JWT when JWT is configured."""
    try:
        token = bearer(request)
    except Unauthenticated as malformed:
        record_auth_failure(db, request, malformed)
        raise
    if token is None:
        return None
    if tokens is not None and not token.startswith(keys.KEY_PREFIX):
        try:
            return tokens.principal(token)
        except Unauthenticated as refused:
            record_auth_failure(db, request, refused)
            raise
    with db.transaction() as session:
        record = keys.verify(session, token)
    if record is None:
        failure = Unauthenticated("the API key is unknown or revoked", field="authorization")
        record_auth_failure(db, request, failure)
        raise failure
    now = time.monotonic()
    # Last-used is informative; writing it on every request would make reads writes.
    if now - _last_touch.get(record.prefix, 0.0) > _TOUCH_EVERY_S:
        with db.transaction() as session:
            keys.touch(session, record.prefix)
        _last_touch[record.prefix] = now
    return key_principal(record)


def key_principal(record: keys.KeyRecord) -> Principal:
    """The principal an API key acts as (the API and the dashboard's sessions alike)."""
    return Principal(f"key:{record.owner}:{record.prefix}", frozenset(record.roles),
                     subject=record.owner.strip().lower())
