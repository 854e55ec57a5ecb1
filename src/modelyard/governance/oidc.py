"""OIDC / JWT bearer tokens: signature checked against a JWKS (file or URL), ``iss``,
``aud``, ``exp`` and ``nbf`` checked, RS256 and ES256 only, claims mapped to roles.

``alg: none`` and HMAC algorithms are refused outright (the algorithm list is fixed here,
never taken from the token), so an HS256 token "signed" with the public key cannot pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from modelyard.domain.errors import Unauthenticated, ValidationFailed
from modelyard.governance.policy import Principal, parse_grant

ALGORITHMS = ["RS256", "ES256"]
LEEWAY_S = 30


@dataclass
class JwtVerifier:
    jwks: str  # a file path or an https URL
    issuer: str
    audience: str
    roles_claim: str = "roles"
    role_map: Mapping[str, str] = field(default_factory=dict)  # claim value -> role

    def __post_init__(self) -> None:
        if not (self.jwks and self.issuer and self.audience):
            raise ValidationFailed("JWT needs jwt_jwks, jwt_issuer and jwt_audience",
                                   field="jwt")
        self._client: Any = None
        self._keys: dict[str, Any] | None = None
        if self.jwks.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(self.jwks, cache_keys=True, lifespan=300)
        else:
            self._keys = self._load_file(Path(self.jwks))

    @staticmethod
    def _load_file(path: Path) -> dict[str, Any]:
        try:
            keyset = jwt.PyJWKSet.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ValidationFailed(f"cannot read the JWKS file {path}: {exc}",
                                   field="jwt_jwks") from exc
        return {k.key_id or "": k for k in keyset.keys}

    def _key(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}", field="authorization") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated(f"token algorithm {header.get('alg')!r} is not accepted; "
                                  f"use {' or '.join(ALGORITHMS)}", field="authorization")
        if self._client is not None:
            try:
                return self._client.get_signing_key_from_jwt(token).key
            except jwt.PyJWTError as exc:
                raise Unauthenticated(f"no key for this token: {exc}",
                                      field="authorization") from None
        keys = self._keys or {}
        kid = header.get("kid") or ""
        if kid not in keys:
            if len(keys) == 1 and not kid:
                return next(iter(keys.values())).key
            raise Unauthenticated("no key in the JWKS matches the token's kid",
                                  field="authorization")
        return keys[kid].key

    def principal(self, token: str) -> Principal:
        key = self._key(token)
        try:
            claims = jwt.decode(token, key, algorithms=ALGORITHMS, audience=self.audience,
                                issuer=self.issuer, leeway=LEEWAY_S,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token refused: {exc}", field="authorization") from None
        return Principal(f"jwt:{claims['sub']}", frozenset(self.roles(claims)),
                         subject=str(claims["sub"]).lower())

    def roles(self, claims: Mapping[str, Any]) -> set[str]:
        raw = claims.get(self.roles_claim, [])
        values = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles = set()
        for value in values:
            # A mapped value may be scoped: {"fraud-team": "developer@fraud"}.
            grant = self.role_map.get(str(value), str(value))
            try:
                parse_grant(grant)
            except ValidationFailed:
                continue  # claims name other systems' groups too
            roles.add(grant)
        return roles


def from_settings(settings: Any) -> JwtVerifier | None:
    if not settings.jwt_jwks:
        return None
    try:
        role_map = json.loads(settings.jwt_role_map) if settings.jwt_role_map else {}
    except ValueError as exc:
        raise ValidationFailed(f"jwt_role_map must be a JSON object: {exc}",
                               field="jwt_role_map") from exc
    return JwtVerifier(settings.jwt_jwks, settings.jwt_issuer, settings.jwt_audience,
                       settings.jwt_roles_claim, role_map)
