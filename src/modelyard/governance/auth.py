"""Who is calling: a bearer API key resolved to a principal (OIDC comes with governance)."""

from __future__ import annotations

import time

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


def record_auth_failure(db: Database, request: Request, failure: Unauthenticated) -> None:
    """Failed authentication goes to the audit chain (the key itself never does)."""
    with db.transaction() as session:
        audit.append(session, "anonymous", "auth.failed",
                     f"{request.method} {request.url.path}"[:512], outcome="denied",
                     after={"reason": failure.detail})


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
