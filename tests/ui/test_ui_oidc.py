"""OIDC login (authorization code + PKCE) against a tiny identity provider served here on
127.0.0.1: discovery document, JWKS, an authorize endpoint that approves at once, and a
token endpoint that checks the PKCE verifier before it signs an ID token."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from modelyard import Yard
from modelyard.serving.server import BackgroundServer, free_port
from modelyard.settings import Settings

CLIENT = "modelyard-dashboard"


class TinyIdP:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict[str, str]] = {}
        self.wrong_nonce = False
        self.token_requests: list[dict[str, str]] = []
        app = Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery),
            Route("/jwks", self.jwks), Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def discovery(self, request: Request) -> Response:
        return JSONResponse({"issuer": self.url, "authorization_endpoint":
                             f"{self.url}/authorize", "token_endpoint": f"{self.url}/token",
                             "jwks_uri": f"{self.url}/jwks"})

    async def jwks(self, request: Request) -> Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return JSONResponse({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        assert q["client_id"] == CLIENT and q["response_type"] == "code"
        assert q["code_challenge_method"] == "S256" and "openid" in q["scope"]
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"],
                            "redirect_uri": q["redirect_uri"]}
        return RedirectResponse(f"{q['redirect_uri']}?"
                                + urlencode({"code": code, "state": q["state"]}), 302)

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        self.token_requests.append({k: str(v) for k, v in form.items()})
        grant = self.codes.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or grant["challenge"] != challenge or \
                grant["redirect_uri"] != form.get("redirect_uri"):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {"iss": self.url, "aud": CLIENT, "sub": "Olga", "iat": now,
                  "exp": now + 300, "roles": ["ops-approvers", "viewer"],
                  "nonce": "other" if self.wrong_nonce else grant["nonce"]}
        id_token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})
        return JSONResponse({"access_token": "opaque", "token_type": "Bearer",
                             "id_token": id_token})

    def __enter__(self) -> TinyIdP:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def idp() -> Iterator[TinyIdP]:
    with TinyIdP() as provider:
        yield provider


@pytest.fixture(scope="module")
def oidc_server(idp: TinyIdP, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[BackgroundServer]:
    home: Path = tmp_path_factory.mktemp("oidc") / "yard"
    settings = Settings.load(home, env={}, jwt_issuer=idp.url, oidc_client_id=CLIENT,
                             jwt_role_map=json.dumps({"ops-approvers": "approver"}))
    yard, _ = Yard.init(settings=settings)
    try:
        with BackgroundServer(yard) as server:
            yield server
    finally:
        yard.close()


def test_single_sign_on_in_the_browser(browser: Any, idp: TinyIdP,
                                       oidc_server: BackgroundServer) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{oidc_server.url}/ui/audit")
        page.get_by_role("link", name="Log in with single sign-on (OIDC)").click()
        page.wait_for_url(f"{oidc_server.url}/ui/audit")
        assert page.get_by_role("heading", name="Audit log").is_visible()
        # Roles from the ID token, mapped: ops-approvers -> approver (may read the audit).
        assert "olga (approver, viewer)" in page.locator(".who").inner_text()
        (sent,) = idp.token_requests[-1:]
        assert len(sent["code_verifier"]) >= 43 and "client_secret" not in sent
        page.get_by_role("button", name="Verify the chain").click()
        assert page.locator("[data-verdict]").get_attribute("data-verdict") == "ok"
        assert page.get_by_text("ui.login").count() >= 1
    finally:
        context.close()


def test_a_callback_that_did_not_start_here_is_refused(oidc_server: BackgroundServer
                                                       ) -> None:
    with httpx.Client(base_url=oidc_server.url) as http:
        answer = http.get("/ui/login/callback", params={"code": "x", "state": "forged"})
        assert answer.status_code == 400 and "did not start here" in answer.text
        assert "modelyard_session" not in answer.cookies


def test_an_id_token_for_another_login_is_refused(idp: TinyIdP,
                                                  oidc_server: BackgroundServer) -> None:
    idp.wrong_nonce = True
    try:
        with httpx.Client(base_url=oidc_server.url, follow_redirects=True) as http:
            answer = http.get("/ui/login/oidc")
            assert answer.status_code == 401 and "nonce" in answer.text
            assert "modelyard_session" not in http.cookies
    finally:
        idp.wrong_nonce = False
