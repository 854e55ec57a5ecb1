"""OIDC/JWT bearer tokens against the real server: keys from a JWKS file made here, RS256 and
ES256 accepted, everything else refused with 401 and recorded in the audit chain."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings

ISS, AUD = "https://login.example.test", "modelyard"


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, Any]:
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1())}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str, signing_keys: dict[str, Any]) -> Settings:
    jwks = {"keys": []}
    for kid, key in signing_keys.items():
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()) if kid == "rsa"
                         else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwks["keys"].append({**jwk, "kid": kid, "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    return Settings.load(tmp_path / "yard", env={}, database_url=database_url,
                         jwt_jwks=str(path), jwt_issuer=ISS, jwt_audience=AUD,
                         jwt_role_map=json.dumps({"ml-platform-admins": "admin"}))


@pytest.fixture
def http(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def token(signing_keys: dict[str, Any], *, alg: str = "RS256", kid: str = "rsa",
          **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "sub": "ana", "iat": now, "exp": now + 300,
            "roles": ["viewer"], **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, signing_keys[kid], algorithm=alg, headers={"kid": kid})


def get_models(http: httpx.Client, bearer: str) -> httpx.Response:
    return http.get("/api/v1/models", headers={"authorization": f"Bearer {bearer}"})


def test_rs256_and_es256_tokens_are_accepted_with_mapped_roles(
        http: httpx.Client, signing_keys: dict[str, Any]) -> None:
    assert get_models(http, token(signing_keys)).status_code == 200
    es = token(signing_keys, alg="ES256", kid="ec")
    assert get_models(http, es).status_code == 200
    viewer = token(signing_keys)
    r = http.post("/api/v1/keys", json={"owner": "x", "roles": ["viewer"]},
                  headers={"authorization": f"Bearer {viewer}"})
    assert r.status_code == 403
    admin = token(signing_keys, roles="ml-platform-admins")
    r = http.post("/api/v1/keys", json={"owner": "x", "roles": ["viewer"]},
                  headers={"authorization": f"Bearer {admin}"})
    assert r.status_code == 201, r.text


def test_a_token_without_known_roles_is_authenticated_but_refused(
        http: httpx.Client, signing_keys: dict[str, Any]) -> None:
    assert get_models(http, token(signing_keys, roles=["cook"])).status_code == 403


@pytest.mark.parametrize("case", ["expired", "not_yet", "wrong_aud", "wrong_iss", "no_exp",
                                  "unknown_kid", "garbage"])
def test_bad_tokens_are_401(case: str, http: httpx.Client, yard: Yard,
                            signing_keys: dict[str, Any]) -> None:
    now = int(time.time())
    bearer = {
        "expired": lambda: token(signing_keys, exp=now - 3600),
        "not_yet": lambda: token(signing_keys, nbf=now + 3600),
        "wrong_aud": lambda: token(signing_keys, aud="someone-else"),
        "wrong_iss": lambda: token(signing_keys, iss="https://evil.example.test"),
        "no_exp": lambda: token(signing_keys, exp=None),
        "unknown_kid": lambda: jwt.encode({"iss": ISS, "aud": AUD, "sub": "x",
                                           "exp": now + 60}, signing_keys["rsa"],
                                          algorithm="RS256", headers={"kid": "other"}),
        "garbage": lambda: "eyJhbGciOi.not.a-token",
    }[case]()
    r = get_models(http, bearer)
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "unauthenticated"
    assert yard.audit_records()[-1]["action"] == "auth.failed"


def test_alg_none_and_hmac_with_the_public_key_are_refused(
        http: httpx.Client, signing_keys: dict[str, Any]) -> None:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": "mallory", "exp": now + 60, "roles": ["admin"]}
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert get_models(http, unsigned).status_code == 401
    public_pem = signing_keys["rsa"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # The classic confusion attack: HS256 keyed with the server's public key.
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert get_models(http, f"{head}.{body}.{sig}").status_code == 401


def test_api_keys_still_work_next_to_tokens(http: httpx.Client, admin_key: str) -> None:
    assert get_models(http, admin_key).status_code == 200


def test_jwt_endpoints_take_tokens_with_a_predicting_role(
        http: httpx.Client, yard: Yard, signing_keys: dict[str, Any]) -> None:
    import numpy as np

    x = np.zeros((1, 3), dtype=np.float32)
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=x)
    yard.create_endpoint("scored", "echo", auth="jwt")
    body = {"inputs": x.tolist()}
    deadline = time.monotonic() + 30
    while http.get("/v2/models/scored/ready",
                   headers={"authorization": f"Bearer {token(signing_keys)}"}
                   ).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    predictor = token(signing_keys, roles=["predictor"])
    ok = http.post("/endpoints/scored/predict", json=body,
                   headers={"authorization": f"Bearer {predictor}"})
    assert ok.status_code == 200, ok.text
    nobody = token(signing_keys, roles=["cook"])
    assert http.post("/endpoints/scored/predict", json=body,
                     headers={"authorization": f"Bearer {nobody}"}).status_code == 403
    assert http.post("/endpoints/scored/predict", json=body).status_code == 401
