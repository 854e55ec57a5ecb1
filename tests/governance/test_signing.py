"""Ed25519 signing of model versions: the payload, the keys, and what verifies."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.domain.errors import ValidationFailed
from modelyard.governance import signing

DIGEST = hashlib.sha256(b"model bytes").hexdigest()
MODEL = "fraud-detector"
PRIVATE, PUBLIC = signing.generate_keypair()
OTHER_PRIVATE, OTHER_PUBLIC = signing.generate_keypair()


def pems(key: Any) -> tuple[bytes, bytes]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def rsa_pems() -> tuple[bytes, bytes]:
    return pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_pems() -> tuple[bytes, bytes]:
    return pems(ec.generate_private_key(ec.SECP256R1()))


# -- payload and keys ---------------------------------------------------------------------


def test_payload_is_canonical_json_binding_digest_and_model() -> None:
    assert signing.payload(MODEL, DIGEST) == (
        b'{"artifact_sha256":"' + DIGEST.encode() + b'","model":"fraud-detector",'
        b'"purpose":"modelyard-model-artifact/v1"}')
    assert json.loads(signing.payload("modèle", DIGEST))["model"] == "modèle"
    assert "modèle".encode() in signing.payload("modèle", DIGEST)  # UTF-8, not \\u escapes


@pytest.mark.parametrize("digest", ["", DIGEST.upper(), DIGEST[:-1], "sha256:" + DIGEST, 42])
def test_payload_refuses_a_digest_not_in_registry_form(digest: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        signing.payload(MODEL, digest)
    assert info.value.field == "artifact_sha256"


def test_generated_keys_are_pem_and_key_id_is_stable() -> None:
    assert PRIVATE.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert PUBLIC.startswith(b"-----BEGIN PUBLIC KEY-----")
    kid = signing.key_id(PUBLIC)
    assert len(kid) == 16 and int(kid, 16) >= 0
    raw = signing.load_public_key(PUBLIC).public_bytes(serialization.Encoding.Raw,
                                                       serialization.PublicFormat.Raw)
    assert kid == hashlib.sha256(raw).hexdigest()[:16]
    assert signing.key_id(PUBLIC.replace(b"\n", b"\r\n")) == kid  # from the key, not the text
    assert signing.key_id(OTHER_PUBLIC) != kid


def test_loaders_refuse_rsa_and_ec_keys(rsa_pems: tuple[bytes, bytes],
                                        ec_pems: tuple[bytes, bytes]) -> None:
    for (private, public), kind in ((rsa_pems, "RSA"), (ec_pems, "EC")):
        with pytest.raises(ValidationFailed, match=f"is {kind}; .*Ed25519") as info:
            signing.load_private_key(private)
        assert info.value.field == "private_key"
        with pytest.raises(ValidationFailed, match=f"is {kind}; .*Ed25519") as info:
            signing.load_public_key(public, field="policy.trusted_keys")
        assert info.value.field == "policy.trusted_keys"
        with pytest.raises(ValidationFailed):
            signing.sign(private, MODEL, DIGEST)


def test_loaders_refuse_garbage_encrypted_and_swapped_keys() -> None:
    for junk in (b"", b"not a key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"):
        with pytest.raises(ValidationFailed, match="not a PEM"):
            signing.load_public_key(junk)
        with pytest.raises(ValidationFailed, match="not a PEM"):
            signing.load_private_key(junk)
    with pytest.raises(ValidationFailed, match="private key") as info:
        signing.load_public_key(PRIVATE)
    assert "BEGIN" not in info.value.detail  # the secret is never echoed
    with pytest.raises(ValidationFailed, match="not a PEM"):
        signing.load_private_key(PUBLIC)
    encrypted = signing.load_private_key(PRIVATE).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2"))
    with pytest.raises(ValidationFailed, match="encrypted"):
        signing.load_private_key(encrypted)


# -- sign and verify ----------------------------------------------------------------------


def test_round_trip() -> None:
    signature = signing.sign(PRIVATE, MODEL, DIGEST)
    assert set(signature) == {"key_id", "algorithm", "signature"}
    assert signature["algorithm"] == "ed25519"
    assert signature["key_id"] == signing.key_id(PUBLIC)
    assert len(base64.b64decode(signature["signature"], validate=True)) == 64
    assert signing.verify(signature, [PUBLIC], MODEL, DIGEST) == signature["key_id"]
    # Among several trusted keys, the one that signed is named.
    assert signing.verify(signature, [OTHER_PUBLIC, PUBLIC], MODEL, DIGEST) == \
        signature["key_id"]
    # Extra fields (as stored: who added it, when) do not matter.
    stored = {**signature, "added_by": "alice", "added_at": "2024-01-01T00:00:00+00:00"}
    assert signing.verify(stored, iter([PUBLIC]), MODEL, DIGEST) == signature["key_id"]


def test_tampered_digest_or_model_fails() -> None:
    signature = signing.sign(PRIVATE, MODEL, DIGEST)
    other_digest = hashlib.sha256(b"other bytes").hexdigest()
    assert signing.verify(signature, [PUBLIC], MODEL, other_digest) is None
    assert signing.verify(signature, [PUBLIC], "fraud-detector2", DIGEST) is None
    assert signing.verify(signature, [PUBLIC], MODEL.upper(), DIGEST) is None


def test_a_signature_by_an_untrusted_key_fails() -> None:
    signature = signing.sign(OTHER_PRIVATE, MODEL, DIGEST)
    assert signing.verify(signature, [PUBLIC], MODEL, DIGEST) is None
    assert signing.verify(signature, [], MODEL, DIGEST) is None
    # Claiming a trusted key's id does not help: the bytes still have to verify with it.
    forged = {**signature, "key_id": signing.key_id(PUBLIC)}
    assert signing.verify(forged, [PUBLIC], MODEL, DIGEST) is None


def garbage_signatures() -> Iterator[Any]:
    good = signing.sign(PRIVATE, MODEL, DIGEST)
    raw = base64.b64decode(good["signature"])
    yield None
    yield "a string"
    yield [good]
    yield {}
    yield {**good, "algorithm": "rsa-pss"}
    yield {**good, "algorithm": None}
    yield {k: v for k, v in good.items() if k != "algorithm"}
    yield {k: v for k, v in good.items() if k != "key_id"}
    yield {k: v for k, v in good.items() if k != "signature"}
    yield {**good, "key_id": "0123456789abcdef"}
    yield {**good, "key_id": 7}
    yield {**good, "signature": "%%% not base64 %%%"}
    yield {**good, "signature": good["signature"] + "AAAA"}  # 67 bytes
    yield {**good, "signature": base64.b64encode(raw[:63]).decode()}
    yield {**good, "signature": base64.b64encode(bytes(64)).decode()}
    yield {**good, "signature": base64.urlsafe_b64encode(b"\xff" * 64).decode()}
    yield {**good, "signature": raw}  # bytes, not text
    yield {**good, "signature": ""}


@pytest.mark.parametrize("signature", list(garbage_signatures()))
def test_garbage_signatures_never_verify_and_never_raise(signature: Any) -> None:
    assert signing.verify(signature, [PUBLIC], MODEL, DIGEST) is None
    assert signing.verify_any([signature], [PUBLIC], MODEL, DIGEST) is None


def test_garbage_inputs_around_a_good_signature_never_raise(rsa_pems: tuple[bytes, bytes]
                                                             ) -> None:
    good = signing.sign(PRIVATE, MODEL, DIGEST)
    kid = good["key_id"]
    # A bad entry in the trust list does not stop the good one.
    trusted = [b"junk", rsa_pems[1], PRIVATE, PUBLIC]
    assert signing.verify(good, trusted, MODEL, DIGEST) == kid
    assert signing.verify(good, [PUBLIC], MODEL, "not a digest") is None
    assert signing.verify(good, [PUBLIC], "", DIGEST) is None
    assert signing.verify(good, [PUBLIC], "\udcff", DIGEST) is None  # cannot be UTF-8


def test_verify_any_finds_the_first_good_signature() -> None:
    good = signing.sign(PRIVATE, MODEL, DIGEST)
    untrusted = signing.sign(OTHER_PRIVATE, MODEL, DIGEST)
    signatures: list[Any] = [{"garbage": True}, untrusted, good]
    assert signing.verify_any(signatures, [PUBLIC], MODEL, DIGEST) == good["key_id"]
    # A one-shot iterable of trusted keys is read once and still checked for each signature.
    assert signing.verify_any(iter(signatures), iter([OTHER_PUBLIC]), MODEL, DIGEST) == \
        untrusted["key_id"]
    assert signing.verify_any([], [PUBLIC], MODEL, DIGEST) is None
    assert signing.verify_any([untrusted], [PUBLIC], MODEL, DIGEST) is None


SIGNED = signing.sign(PRIVATE, MODEL, DIGEST)


@settings(max_examples=100, deadline=None)
@given(digest=st.one_of(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
                        st.text()))
def test_verify_fails_for_any_other_digest(digest: str) -> None:
    expected = SIGNED["key_id"] if digest == DIGEST else None
    assert signing.verify(SIGNED, [PUBLIC], MODEL, digest) == expected


@settings(max_examples=100, deadline=None)
@given(model=st.text(min_size=1))
def test_verify_fails_for_any_other_model(model: str) -> None:
    expected = SIGNED["key_id"] if model == MODEL else None
    assert signing.verify(SIGNED, [PUBLIC], model, DIGEST) == expected
