"""Dashboard sessions: a random opaque token in an HttpOnly cookie, its sha256 in the store.

The principal is not cached in the session: a key session is resolved through its key on
every request (a revoked key, or one whose roles changed, takes effect at once), and an OIDC
session carries the roles its ID token granted until the session or the token expires,
whichever comes first. CSRF tokens are derived from the session token (HMAC), so a page
needs no extra state and a forged form cannot know one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from modelyard.domain.errors import ValidationFailed
from modelyard.governance import audit
from modelyard.governance.auth import key_principal
from modelyard.governance.policy import Principal
from modelyard.store import keys
from modelyard.store.db import Database
from modelyard.store.tables import ApiKeyRow, UiSessionRow, utcnow

COOKIE = "modelyard_session"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The per-session token every dashboard form carries in a hidden field."""
    return hmac.new(session_token.encode(), b"modelyard-ui-csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_token: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(session_token), str(sent))


@dataclass(frozen=True)
class UiSession:
    token: str
    principal: Principal
    expires_at: datetime

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


class SessionStore:
    def __init__(self, db: Database, ttl_s: float) -> None:
        if not 60 <= ttl_s <= 30 * 86_400:
            raise ValidationFailed("ui_session_ttl_s must be from 60 s to 30 days",
                                   field="ui_session_ttl_s")
        self.db = db
        self.ttl = timedelta(seconds=ttl_s)

    def open(self, principal: Principal, *, key_prefix: str | None = None,
             not_after: datetime | None = None) -> UiSession:
        """A new session for ``principal`` (audited as ``ui.login``); the token is returned
        once, for the cookie, and only its hash is stored."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + self.ttl
        if not_after is not None:
            expires = min(expires, not_after)
        with self.db.transaction() as session:
            # Expired rows go on each login: the table never holds more than live sessions
            # plus those that ended since the last login.
            session.execute(delete(UiSessionRow).where(UiSessionRow.expires_at <= now))
            session.add(UiSessionRow(
                token_hash=_hash(token), kind="key" if key_prefix else "oidc",
                key_prefix=key_prefix, subject=principal.subject, name=principal.name,
                roles=sorted(principal.roles), created_at=now, expires_at=expires))
            audit.append(session, principal.name, "ui.login", "ui",
                         after={"via": "key" if key_prefix else "oidc",
                                "expires_at": expires.isoformat()})
        return UiSession(token, principal, expires)

    def resolve(self, token: str | None) -> UiSession | None:
        """The live session behind a cookie, with its principal as of now; None when the
        token is unknown, expired, or its key was revoked."""
        if not token or len(token) > 128:
            return None
        with self.db.transaction() as session:
            row = session.scalars(select(UiSessionRow).where(
                UiSessionRow.token_hash == _hash(token))).one_or_none()
            if row is None:
                return None
            if row.expires_at <= utcnow():
                session.delete(row)
                return None
            if row.kind == "key":
                key = session.scalars(select(ApiKeyRow).where(
                    ApiKeyRow.prefix == row.key_prefix)).one_or_none()
                if key is None or key.revoked_at is not None:
                    session.delete(row)
                    return None
                principal = key_principal(keys.to_record(key))
            else:
                principal = Principal(row.name, frozenset(row.roles), subject=row.subject)
            return UiSession(token, principal, row.expires_at)

    def close(self, ui_session: UiSession) -> None:
        """Log out: the row goes, so the cookie is worthless even if it was copied."""
        with self.db.transaction() as session:
            session.execute(delete(UiSessionRow).where(
                UiSessionRow.token_hash == _hash(ui_session.token)))
            audit.append(session, ui_session.principal.name, "ui.logout", "ui")
