"""Logging in to the dashboard (an API key, or OIDC authorization code with PKCE) and out.

The key is checked exactly as the API checks a bearer key (``store.keys.verify``, failures
audited by ``governance.auth``). The login form has no session yet, so its CSRF token is a
double-submit cookie; the browser guard refuses cross-site posts before either is read.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from modelyard.domain.errors import Unauthenticated, ValidationFailed
from modelyard.governance.auth import key_principal, record_auth_failure
from modelyard.governance.oidc import JwtVerifier
from modelyard.settings import Settings
from modelyard.store import keys
from modelyard.store.tables import utcnow
from modelyard.ui.sessions import COOKIE, UiSession
from modelyard.ui.web import PREFIX, form, read_form, render, session_of, store
from modelyard.ui.web import query as query_param

LOGIN_CSRF = "modelyard_login_csrf"
OIDC_COOKIE = "modelyard_oidc"
OIDC_COOKIE_S = 600


def safe_next(target: str | None) -> str:
    """Only a dashboard path: never another site (an open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") \
            and "\\" not in target and len(target) <= 500:
        return target
    return PREFIX + "/"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, ui_session: UiSession) -> None:
    max_age = max(1, int((ui_session.expires_at - utcnow()).total_seconds()))
    response.set_cookie(COOKIE, ui_session.token, max_age=max_age, path=PREFIX,
                        httponly=True, samesite="strict", secure=_secure(request))


@dataclass
class OidcClient:
    """Authorization code + PKCE (S256) against ``issuer``'s discovery document; the ID
    token is verified like any bearer JWT (``governance.oidc``) with the client as audience."""

    issuer: str
    client_id: str
    client_secret: str
    roles_claim: str
    role_map: str
    _meta: dict[str, Any] = field(default_factory=dict)
    _verifier: JwtVerifier | None = None

    def metadata(self) -> dict[str, Any]:
        if not self._meta:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                answer = httpx.get(url, timeout=10)
                answer.raise_for_status()
                meta = answer.json()
                for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(meta.get(name), str):
                        raise ValueError(f"no {name}")
            except (httpx.HTTPError, ValueError) as exc:
                raise Unauthenticated(f"the OIDC issuer cannot be used: {exc}",
                                      field="oidc") from None
            self._meta = meta
        return self._meta

    def verifier(self) -> JwtVerifier:
        if self._verifier is None:
            import json

            role_map = json.loads(self.role_map) if self.role_map else {}
            self._verifier = JwtVerifier(self.metadata()["jwks_uri"], self.issuer,
                                         self.client_id, self.roles_claim, role_map)
        return self._verifier

    def start(self, redirect_uri: str) -> tuple[str, dict[str, str]]:
        """The IdP URL to send the browser to, and what the callback must find again."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        params = {"response_type": "code", "client_id": self.client_id,
                  "redirect_uri": redirect_uri, "scope": "openid profile", "state": state,
                  "nonce": nonce, "code_challenge": challenge,
                  "code_challenge_method": "S256"}
        url = self.metadata()["authorization_endpoint"] + "?" + urlencode(params)
        return url, {"state": state, "nonce": nonce, "verifier": verifier}

    def finish(self, code: str, redirect_uri: str, pending: dict[str, str]) -> Any:
        """Exchange the code, verify the ID token (signature, issuer, audience, expiry,
        nonce); the principal it names."""
        data = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "client_id": self.client_id,
                "code_verifier": pending["verifier"]}
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        try:
            answer = httpx.post(self.metadata()["token_endpoint"], data=data, auth=auth,
                                timeout=10)
            answer.raise_for_status()
            id_token = answer.json()["id_token"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise Unauthenticated(f"the OIDC issuer refused the login: {exc}",
                                  field="oidc") from None
        principal = self.verifier().principal(id_token)  # raises on any bad claim
        claims = jwt.decode(id_token, options={"verify_signature": False})  # verified above
        if not secrets.compare_digest(str(claims.get("nonce", "")), pending["nonce"]):
            raise Unauthenticated("the ID token's nonce does not match this login",
                                  field="oidc")
        return principal


def oidc_client(settings: Settings) -> OidcClient | None:
    if not settings.oidc_client_id:
        return None
    if not settings.jwt_issuer:
        raise ValidationFailed("oidc_client_id needs jwt_issuer (the OIDC issuer URL)",
                               field="jwt_issuer")
    return OidcClient(settings.jwt_issuer, settings.oidc_client_id,
                      settings.oidc_client_secret, settings.jwt_roles_claim,
                      settings.jwt_role_map)


def _callback_uri(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}{PREFIX}/login/callback"


def add_routes(router: APIRouter, dashboard: Any) -> None:
    db = dashboard.yard.db

    def login_page(request: Request, status: int = 200, error: str | None = None
                   ) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        page = render(request, "login.html", None, status_code=status, login_csrf=token,
                      next=safe_next(query_param(request, "next", limit=500)),
                      error_text=error)
        page.set_cookie(LOGIN_CSRF, token, max_age=3600, path=PREFIX, httponly=True,
                        samesite="strict", secure=_secure(request))
        return page

    @router.get("/login")
    def login_form(request: Request) -> HTMLResponse:
        return login_page(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        fields = await read_form(request)
        expected = request.cookies.get(LOGIN_CSRF)
        if not expected or not secrets.compare_digest(expected, fields.get("csrf", "")):
            return login_page(request, 403, "The login form expired: try again.")
        secret = fields.get("key", "").strip()
        with db.transaction() as session:
            record = keys.verify(session, secret) if secret else None
        if record is None:
            record_auth_failure(db, request, Unauthenticated(
                "the API key is unknown or revoked", field="key"))
            request.scope["query_string"] = urlencode(
                {"next": fields.get("next", "")}).encode()
            return login_page(request, 401, "That API key is unknown or revoked.")
        ui_session = store(request).open(key_principal(record), key_prefix=record.prefix)
        response = RedirectResponse(safe_next(fields.get("next")), status_code=303)
        set_session_cookie(response, request, ui_session)
        response.delete_cookie(LOGIN_CSRF, path=PREFIX)
        return response

    @router.get("/login/oidc")
    def oidc_start(request: Request) -> Response:
        client: OidcClient | None = request.app.state.ui_oidc
        if client is None:
            return login_page(request, 404, "OIDC login is not configured on this server.")
        url, pending = client.start(_callback_uri(request))
        pending["next"] = safe_next(query_param(request, "next", limit=500))
        response = RedirectResponse(url, status_code=303)
        # Lax, not Strict: the IdP's redirect back is a cross-site navigation.
        response.set_cookie(OIDC_COOKIE, urlencode(pending), max_age=OIDC_COOKIE_S,
                            path=PREFIX + "/login", httponly=True, samesite="lax",
                            secure=_secure(request))
        return response

    @router.get("/login/callback")
    def oidc_callback(request: Request) -> Response:
        from urllib.parse import parse_qsl

        client: OidcClient | None = request.app.state.ui_oidc
        pending = dict(parse_qsl(request.cookies.get(OIDC_COOKIE, "")))
        state = query_param(request, "state")
        if client is None or not pending.get("state") or \
                not secrets.compare_digest(pending["state"], state):
            return login_page(request, 400, "That login did not start here or took too "
                                            "long: try again.")
        if request.query_params.get("error"):
            return login_page(request, 401, "The identity provider refused the login: "
                              + query_param(request, "error", limit=100))
        try:
            principal = client.finish(query_param(request, "code", limit=2000),
                                      _callback_uri(request), pending)
        except Unauthenticated as refused:
            record_auth_failure(db, request, refused)
            return login_page(request, 401, refused.detail)
        ui_session = store(request).open(principal)
        # A page, not a redirect: a SameSite=Strict cookie set during a cross-site redirect
        # chain would not be sent on the next hop.
        target = safe_next(pending.get("next"))
        response = render(request, "continue.html", ui_session, target=target)
        set_session_cookie(response, request, ui_session)
        response.delete_cookie(OIDC_COOKIE, path=PREFIX + "/login")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        ui_session = session_of(request)
        await form(request, ui_session)
        store(request).close(ui_session)
        response = RedirectResponse(PREFIX + "/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response
