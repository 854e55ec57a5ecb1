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
import threading

from cachetools import TTLCache
from sqlalchemy import select

from modelyard.domain.errors import Forbidden, Unauthenticated
from modelyard.governance.oidc import JwtVerifier
from modelyard.governance.policy import ACTIONS, Principal
from modelyard.store.db import Database
from modelyard.store.keys import KEY_PREFIX
from modelyard.store.tables import ApiKeyRow

_PREDICT = ACTIONS["predict"]


class DataPlaneAccess:
    def __init__(self, db: Database, tokens: JwtVerifier | None) -> None:
        self.db = db
        self.tokens = tokens
        self._keys: dict[str, tuple[str, frozenset[str]]] = {}
        self._verified: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=60)
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Reload the active keys (hash and roles only) from the store."""
        with self.db.transaction() as session:
            rows = session.execute(select(ApiKeyRow.prefix, ApiKeyRow.key_hash,
                                          ApiKeyRow.roles)
                                   .where(ApiKeyRow.revoked_at.is_(None))).all()
        self._keys = {prefix: (key_hash, frozenset(roles)) for prefix, key_hash, roles in rows}

    def check(self, mode: str, authorization: bytes | None) -> None:
        if mode == "public":
            return
        token = _bearer(authorization)
        principal = self._by_key(token) if mode == "key" else self._by_token(token)
        if not principal.roles & _PREDICT:
            raise Forbidden(f"{principal.name} may not call this endpoint")

    def _by_key(self, token: str) -> Principal:
        prefix, dot, _ = token.partition(".")
        known = self._keys.get(prefix) if dot and prefix.startswith(KEY_PREFIX) else None
        if known is None or not hmac.compare_digest(
                known[0], hashlib.sha256(token.encode()).hexdigest()):
            raise Unauthenticated("this endpoint needs a valid API key", field="authorization")
        return Principal(f"key:{prefix}", known[1])

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


def _bearer(authorization: bytes | None) -> str:
    if not authorization:
        raise Unauthenticated("this endpoint needs 'Authorization: Bearer <key or token>'",
                              field="authorization")
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 8192:
        raise Unauthenticated("use 'Authorization: Bearer <key or token>'",
                              field="authorization")
    return token.strip()

