"""Ed25519 signatures over model versions: who vouches for this artifact under this name.

A signature covers a canonical payload that binds the artifact's sha256 *and* the model name,
so a signature for one model cannot be replayed onto another model with the same bytes. Keys
travel as PEM (private: PKCS#8, unencrypted; public: SubjectPublicKeyInfo) and are named by a
short key id derived from the raw public key, so a signature can say which key made it.

Pure: no IO. Loading a key refuses anything but Ed25519 (a ValidationFailed, for the edges to
report); verifying never raises on untrusted input, it only answers "which trusted key, if any".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from modelyard.domain.errors import ValidationFailed

ALGORITHM = "ed25519"
PURPOSE = "modelyard-model-artifact/v1"
"""Domain separation: these bytes can never be mistaken for another protocol's message."""
SIGNATURE_BYTES = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")


def payload(model: str, artifact_sha256: str) -> bytes:
    """The exact bytes signed: canonical JSON (sorted keys, no spaces, UTF-8).

    The digest must be 64 lowercase hex characters, the form the registry stores, so that one
    artifact has exactly one payload per model.
    """
    if not isinstance(model, str) or not model:
        raise ValidationFailed("model must be a non-empty string", field="model")
    if not isinstance(artifact_sha256, str) or not _SHA256.fullmatch(artifact_sha256):
        raise ValidationFailed("artifact_sha256 must be 64 lowercase hex characters",
                               field="artifact_sha256")
    body = {"artifact_sha256": artifact_sha256, "model": model, "purpose": PURPOSE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def generate_keypair() -> tuple[bytes, bytes]:
    """A new (private PEM, public PEM) pair; the private one is unencrypted, keep it safe."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return private_pem, _public_pem(private.public_key())


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def key_id(public_pem: bytes) -> str:
    """Short stable name of a public key: the first 16 hex of sha256 over its raw 32 bytes.

    Derived from the key, not the PEM text, so re-wrapping a PEM never changes it.
    """
    return _key_id(load_public_key(public_pem))


def _kind(key: object) -> str:
    """A short name for a key's algorithm, for the refusal message."""
    kinds: tuple[tuple[str, tuple[type, ...]], ...] = (
        ("RSA", (rsa.RSAPrivateKey, rsa.RSAPublicKey)),
        ("EC", (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)),
        ("DSA", (dsa.DSAPrivateKey, dsa.DSAPublicKey)),
        ("Ed448", (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)),
    )
    for name, types in kinds:
        if isinstance(key, types):
            return name
    return "not Ed25519"


def load_private_key(pem: bytes, *, field: str = "private_key") -> Ed25519PrivateKey:
    """Parse an unencrypted PKCS#8 PEM private key, refusing any algorithm but Ed25519."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:  # encrypted, and no password given
        raise ValidationFailed("the private key is encrypted; give an unencrypted PEM",
                               field=field) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValidationFailed("not a PEM private key", field=field) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationFailed(f"the private key is {_kind(key)}; modelyard signs with "
                               "Ed25519 keys only", field=field)
    return key


def load_public_key(pem: bytes, *, field: str = "public_key") -> Ed25519PublicKey:
    """Parse a SubjectPublicKeyInfo PEM public key, refusing any algorithm but Ed25519."""
    if isinstance(pem, bytes) and b"PRIVATE KEY" in pem:
        # Never echo it back; say what went wrong so it gets rotated, not pasted again.
        raise ValidationFailed("this is a private key; give the public key (and treat this "
                               "private key as exposed)", field=field)
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValidationFailed("not a PEM public key", field=field) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValidationFailed(f"the public key is {_kind(key)}; modelyard verifies "
                               "Ed25519 keys only", field=field)
    return key


def sign(private_pem: bytes, model: str, artifact_sha256: str) -> dict[str, str]:
    """Sign ``model``'s artifact: ``{"key_id", "algorithm", "signature" (standard base64)}``."""
    key = load_private_key(private_pem)
    signature = key.sign(payload(model, artifact_sha256))
    return {"key_id": _key_id(key.public_key()), "algorithm": ALGORITHM,
            "signature": base64.b64encode(signature).decode("ascii")}


def _trusted(public_pems: Iterable[bytes]) -> list[tuple[str, Ed25519PublicKey]]:
    """The usable trusted keys with their ids; a key that does not load is skipped, since one
    bad entry in a trust list must not stop the good ones from verifying."""
    keys = []
    for pem in public_pems:
        try:
            key = load_public_key(pem)
        except ValidationFailed:
            continue
        keys.append((_key_id(key), key))
    return keys


def _check(signature: Any, keys: list[tuple[str, Ed25519PublicKey]], message: bytes
           ) -> str | None:
    if not isinstance(signature, Mapping) or signature.get("algorithm") != ALGORITHM:
        return None
    wanted, encoded = signature.get("key_id"), signature.get("signature")
    if not isinstance(wanted, str) or not isinstance(encoded, str):
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != SIGNATURE_BYTES:
        return None
    for kid, key in keys:
        if kid != wanted:
            continue
        try:
            key.verify(raw, message)
        except InvalidSignature:
            continue
        return kid
    return None


def _message(model: str, artifact_sha256: str) -> bytes | None:
    try:
        return payload(model, artifact_sha256)
    except (ValidationFailed, UnicodeEncodeError):
        return None


def verify(signature: Mapping[str, Any], trusted_public_pems: Iterable[bytes], model: str,
           artifact_sha256: str) -> str | None:
    """The key id of the trusted key whose signature this is over (model, digest), or None.

    Never raises on what it is given: a malformed signature, an unknown key id, another
    algorithm or an unloadable trusted key all simply fail to verify.
    """
    message = _message(model, artifact_sha256)
    if message is None:
        return None
    return _check(signature, _trusted(trusted_public_pems), message)


def verify_any(signatures: Iterable[Mapping[str, Any]], trusted_public_pems: Iterable[bytes],
               model: str, artifact_sha256: str) -> str | None:
    """The key id of the first of ``signatures`` that verifies with a trusted key, or None."""
    message = _message(model, artifact_sha256)
    if message is None:
        return None
    keys = _trusted(trusted_public_pems)
    for signature in signatures:
        found = _check(signature, keys, message)
        if found is not None:
            return found
    return None
