"""entries.check_entry_body: a log entry counts only when it is about this signature, signer and content."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signgate.keys import public_key_from_pem
from signgate.verifiers.cosign.dsse import INTOTO_PAYLOAD_TYPE, pae
from signgate.verifiers.cosign.entries import check_entry_body

STATEMENT = b'{"_type":"https://in-toto.io/Statement/v1"}'
PAE = pae(INTOTO_PAYLOAD_TYPE, STATEMENT)
DSSE = (INTOTO_PAYLOAD_TYPE, STATEMENT)
SIGNATURE = b"\x30\x06\x02\x01\x01\x02\x01\x02"  # never verified here: the entry names it or not


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _key() -> tuple[Any, Any]:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public_key_from_pem("release", "release.pub", pem)


def _certificate(private: Any, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1))
            .sign(private, hashes.SHA256()))


PRIVATE, KEY = _key()
CERTIFICATE = _certificate(PRIVATE, "signer")
CERT_DER = CERTIFICATE.public_bytes(serialization.Encoding.DER)
CERT_KEY = replace(KEY, certificate_der=CERT_DER)  # the key as a certificate carried it
KEY_PEM = PRIVATE.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def body(kind: str, version: str, spec: dict[str, Any]) -> bytes:
    return json.dumps({"kind": kind, "apiVersion": version, "spec": spec}).encode()


def hashedrekord_v1(digest: bytes, verifier_pem: bytes, signature: bytes = SIGNATURE) -> bytes:
    return body("hashedrekord", "0.0.1", {"data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                                         "signature": {"content": b64(signature), "publicKey": {"content": b64(verifier_pem)}}})


def hashedrekord_v2(digest: bytes, verifier: dict[str, Any]) -> bytes:
    return body("hashedrekord", "0.0.2", {"hashedRekordV002": {"data": {"algorithm": "SHA2_256", "digest": b64(digest)},
                                                               "signature": {"content": b64(SIGNATURE), "verifier": verifier}}})


def dsse_v1(payload: bytes, verifier_pem: bytes) -> bytes:
    return body("dsse", "0.0.1", {"payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                                  "signatures": [{"signature": b64(SIGNATURE), "verifier": b64(verifier_pem)}]})


def dsse_v2(payload: bytes, verifier: dict[str, Any]) -> bytes:
    return body("dsse", "0.0.2", {"dsseV002": {"payloadHash": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(payload).digest())},
                                               "signatures": [{"content": b64(SIGNATURE), "verifier": verifier}]}})


def intoto_v2(payload: bytes, verifier_pem: bytes, payload_type: str = INTOTO_PAYLOAD_TYPE) -> bytes:
    # intoto 0.0.2 stores the signature base64-encoded twice.
    return body("intoto", "0.0.2", {"content": {
        "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
        "envelope": {"payloadType": payload_type, "signatures": [{"sig": b64(b64(SIGNATURE).encode()), "publicKey": b64(verifier_pem)}]},
    }})


PAE_DIGEST = (hashlib.sha256(PAE).digest(),)
KEY_V2 = {"publicKey": {"rawBytes": b64(KEY.spki_der)}}
CERT_V2 = {"x509Certificate": {"rawBytes": b64(CERT_DER)}}
CERT_PEM = CERTIFICATE.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "logged, key",
    [
        pytest.param(hashedrekord_v1(PAE_DIGEST[0], KEY_PEM), KEY, id="hashedrekord-0.0.1-key"),
        pytest.param(hashedrekord_v1(PAE_DIGEST[0], CERT_PEM), CERT_KEY, id="hashedrekord-0.0.1-certificate"),
        pytest.param(hashedrekord_v1(PAE_DIGEST[0], CERT_PEM), KEY, id="hashedrekord-0.0.1-certificate-of-this-key"),
        pytest.param(hashedrekord_v2(PAE_DIGEST[0], KEY_V2), KEY, id="hashedrekord-0.0.2-key"),
        pytest.param(hashedrekord_v2(PAE_DIGEST[0], CERT_V2), CERT_KEY, id="hashedrekord-0.0.2-certificate"),
        pytest.param(dsse_v1(STATEMENT, KEY_PEM), KEY, id="dsse-0.0.1"),
        pytest.param(dsse_v2(STATEMENT, CERT_V2), CERT_KEY, id="dsse-0.0.2"),
        pytest.param(intoto_v2(STATEMENT, CERT_PEM), CERT_KEY, id="intoto-0.0.2"),
    ],
)
def test_an_entry_about_this_signature_signer_and_content_binds(logged: bytes, key: Any) -> None:
    assert check_entry_body(logged, SIGNATURE, key, PAE_DIGEST, DSSE) is None


def test_an_entry_for_other_content_is_for_another_payload() -> None:
    other = (hashlib.sha256(b"other").digest(),)
    assert check_entry_body(hashedrekord_v1(PAE_DIGEST[0], KEY_PEM), SIGNATURE, KEY, other).message == "the transparency-log entry is for another payload"
    assert check_entry_body(dsse_v1(b"other statement", KEY_PEM), SIGNATURE, KEY, PAE_DIGEST, DSSE).message == "the transparency-log entry is for another payload"
    # A DSSE entry cannot be about a message signature (no envelope was verified).
    assert check_entry_body(dsse_v1(STATEMENT, KEY_PEM), SIGNATURE, KEY, PAE_DIGEST, None).message == "the transparency-log entry is for another payload"
    assert check_entry_body(intoto_v2(STATEMENT, KEY_PEM, "text/plain"), SIGNATURE, KEY, PAE_DIGEST, DSSE).message == "the transparency-log entry is for another payload"


def test_an_entry_for_another_signature_or_signer_is_refused() -> None:
    _, other_key = _key()
    other_pem = other_key.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert check_entry_body(hashedrekord_v1(PAE_DIGEST[0], other_pem), SIGNATURE, KEY, PAE_DIGEST).message == (
        "the transparency-log entry is for another signature or key")
    assert check_entry_body(hashedrekord_v1(PAE_DIGEST[0], KEY_PEM, b"\x30\x00"), SIGNATURE, KEY, PAE_DIGEST) is not None


def test_a_certificate_signer_is_bound_by_its_certificate_not_its_key() -> None:
    # Another certificate for the same key (another identity) does not speak for this one.
    other = _certificate(PRIVATE, "someone else")
    other_pem, other_der = other.public_bytes(serialization.Encoding.PEM), other.public_bytes(serialization.Encoding.DER)
    for logged in (hashedrekord_v1(PAE_DIGEST[0], other_pem), hashedrekord_v2(PAE_DIGEST[0], {"x509Certificate": {"rawBytes": b64(other_der)}}),
                   hashedrekord_v1(PAE_DIGEST[0], KEY_PEM), hashedrekord_v2(PAE_DIGEST[0], KEY_V2)):
        assert check_entry_body(logged, SIGNATURE, CERT_KEY, PAE_DIGEST) is not None
    # A key signer is not bound by a Rekor v2 certificate verifier either.
    assert check_entry_body(hashedrekord_v2(PAE_DIGEST[0], CERT_V2), SIGNATURE, KEY, PAE_DIGEST) is not None


def test_the_kind_label_must_be_the_bodys_own() -> None:
    logged = dsse_v1(STATEMENT, KEY_PEM)
    assert check_entry_body(logged, SIGNATURE, KEY, PAE_DIGEST, DSSE, ("dsse", "0.0.1")) is None
    problem = check_entry_body(logged, SIGNATURE, KEY, PAE_DIGEST, DSSE, ("intoto", "0.0.2"))
    assert problem is not None and problem.message == "its transparency-log entry's kindVersion does not match its body" and not problem.malformed


@pytest.mark.parametrize(
    "logged, message, malformed",
    [
        (None, "its transparency-log entry body is not base64", True),
        (b"not json", "its transparency-log entry body is malformed", True),
        (b"[]", "its transparency-log entry body is malformed", True),
        (body("hashedrekord", "0.0.1", {"data": {}}), "its transparency-log entry body is malformed", True),
        (body("hashedrekord", "0.0.1", {"data": {"hash": {"algorithm": "sha1", "value": "00"}}}), "its transparency-log entry uses an unsupported hash", False),
        (body("rekord", "0.0.1", {}), "its transparency-log entry kind 'rekord' 0.0.1 is not supported", False),
    ],
)
def test_unreadable_and_unsupported_entries_are_named(logged: bytes | None, message: str, malformed: bool) -> None:
    problem = check_entry_body(logged, SIGNATURE, KEY, PAE_DIGEST, DSSE)
    assert problem is not None and (problem.message, problem.malformed) == (message, malformed)


def test_a_logged_key_of_an_unknown_algorithm_is_another_signer_not_a_crash() -> None:
    # cryptography raises UnsupportedAlgorithm (neither ValueError nor TypeError) for such a key,
    # and the body is checked before any log signature: anyone could write this entry.
    spki = bytes.fromhex("300b" "3005" "06032a0304" "03020000")  # algorithm 1.2.3.4, empty key
    pem = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(spki) + b"-----END PUBLIC KEY-----\n"
    problem = check_entry_body(hashedrekord_v1(PAE_DIGEST[0], pem), SIGNATURE, KEY, PAE_DIGEST)
    assert problem is not None and problem.message == "the transparency-log entry is for another signature or key"
