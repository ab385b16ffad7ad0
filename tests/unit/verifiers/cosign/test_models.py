"""The typed sigstore bundle (verifiers/cosign/models.py): invariants checked once, when the model is built,
with one error type (issue 15 item 3), and the bundle media types of issue 16."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from signgate.verifiers.cosign.models import (
    MAX_CHAIN,
    BundleFormatError,
    InTotoStatement,
    parse_bundle,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ENVELOPE = {"payloadType": "application/vnd.in-toto+json", "payload": b64(b"{}"), "signatures": [{"sig": b64(b"sig")}]}


def bundle(**fields: Any) -> bytes:
    document: dict[str, Any] = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "aGludA=="}},
        "dsseEnvelope": ENVELOPE,
    }
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def entry(**fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "logIndex": "12",
        "logId": {"keyId": b64(b"\x01" * 32)},
        "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
        "canonicalizedBody": b64(b'{"kind":"hashedrekord"}'),
        "inclusionProof": {
            "logIndex": "12",
            "rootHash": b64(b"\x02" * 32),
            "treeSize": "13",
            "hashes": [b64(b"\x03" * 32)],
            "checkpoint": {"envelope": "log\n13\nroot\n\n\u2014 log sig\n"},
        },
    }
    value.update(fields)
    return value


@pytest.mark.parametrize(
    "media_type, version",
    [
        ("application/vnd.dev.sigstore.bundle+json;version=0.1", (0, 1)),
        ("application/vnd.dev.sigstore.bundle+json;version=0.2", (0, 2)),
        ("application/vnd.dev.sigstore.bundle+json;version=0.3", (0, 3)),
        ("application/vnd.dev.sigstore.bundle.v0.3+json", (0, 3)),
    ],
)
def test_known_media_types_give_their_version(media_type, version) -> None:
    assert parse_bundle(bundle(mediaType=media_type)).version == version


@pytest.mark.parametrize(
    "media_type",
    ["application/vnd.dev.sigstore.bundle+json;version=99.9", "application/vnd.dev.sigstore.bundle.v0.4+json", "application/vnd.dev.sigstore.bundle+json"],
)
def test_unknown_versions_are_refused_and_named(media_type) -> None:
    with pytest.raises(BundleFormatError) as caught:
        parse_bundle(bundle(mediaType=media_type))
    assert caught.value.version_unknown
    assert caught.value.message == f"its bundle media type {media_type!r} is not a known sigstore bundle version (0.1 to 0.3)"


def test_a_key_bundle_is_typed() -> None:
    parsed = parse_bundle(bundle(verificationMaterial={"publicKey": {"hint": "aGludA=="}, "tlogEntries": [entry()]}))
    assert parsed.material.kind == "publicKey" and parsed.material.public_key_hint == "aGludA=="
    assert parsed.dsse is not None and parsed.dsse.payload == b"{}" and parsed.dsse.signatures == (b"sig",)
    (logged,) = parsed.material.tlog_entries
    assert (logged.log_index, logged.log_id, logged.kind, logged.version) == (12, b"\x01" * 32, "hashedrekord", "0.0.2")
    assert logged.integrated_time is None and logged.signed_entry_timestamp is None  # a Rekor v2 entry
    assert logged.proof is not None and logged.proof.tree_size == 13 and logged.proof.hashes == (b"\x03" * 32,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.version = (0, 1)  # type: ignore[misc]


def test_a_certificate_chain_is_typed_leaf_first() -> None:
    material = {"x509CertificateChain": {"certificates": [{"rawBytes": b64(b"leaf")}, {"rawBytes": b64(b"ca")}]}}
    parsed = parse_bundle(bundle(verificationMaterial=material))
    assert parsed.material.kind == "x509CertificateChain" and parsed.material.leaf == b"leaf"
    assert parsed.material.certificates == (b"leaf", b"ca")


@pytest.mark.parametrize(
    "fields, message, part",
    [
        pytest.param({"messageSignature": {"signature": b64(b"s")}}, "the bundle must hold exactly one of messageSignature and dsseEnvelope", "document", id="both-contents"),
        pytest.param({"dsseEnvelope": None}, "the bundle does not contain a DSSE envelope", "envelope", id="no-content"),
        pytest.param({"verificationMaterial": None}, "the bundle has no verificationMaterial", "material", id="no-material"),
        pytest.param(
            {"verificationMaterial": {"publicKey": {"hint": "x"}, "certificate": {"rawBytes": b64(b"c")}}},
            "its verificationMaterial must hold exactly one of publicKey, certificate and x509CertificateChain",
            "material",
            id="two-materials",
        ),
        pytest.param({"verificationMaterial": {"certificate": {"rawBytes": "%%"}}}, "its certificate is missing or not base64", "material", id="certificate-not-base64"),
        pytest.param(
            {"verificationMaterial": {"x509CertificateChain": {"certificates": [{"rawBytes": b64(b"c")}] * (MAX_CHAIN + 1)}}},
            f"its certificate chain has {MAX_CHAIN + 1} certificates, more than the limit of {MAX_CHAIN}",
            "material",
            id="oversized-chain-refused",
        ),
        pytest.param({"verificationMaterial": {"x509CertificateChain": {"certificates": []}}}, "its x509CertificateChain holds no certificates", "material", id="empty-chain"),
        pytest.param(
            {"verificationMaterial": {"publicKey": {}, "tlogEntries": [entry(logIndex="-1")]}},
            "its transparency-log entry is malformed",
            "material",
            id="negative-log-index",
        ),
        pytest.param(
            {"verificationMaterial": {"publicKey": {}, "tlogEntries": [entry(inclusionPromise={"signedEntryTimestamp": b64(b"s")})]}},
            "its signed entry timestamp is missing or not base64, or has no integrated time",
            "material",
            id="promise-without-integrated-time",
        ),
        pytest.param(
            {"verificationMaterial": {"publicKey": {}, "tlogEntries": [entry(inclusionProof={"logIndex": "1", "treeSize": "2", "rootHash": "!", "hashes": []})]}},
            "its transparency-log inclusion proof is malformed",
            "material",
            id="proof-root-not-base64",
        ),
        pytest.param(
            {"verificationMaterial": {"publicKey": {}, "timestampVerificationData": {"rfc3161Timestamps": [{"signedTimestamp": 5}]}}},
            "a timestamp in the bundle is not base64",
            "material",
            id="timestamp-not-base64",
        ),
        pytest.param(
            {"verificationMaterial": {"publicKey": {}, "timestampVerificationData": {"rfc3161Timestamps": [{"signedTimestamp": "AAAA"}, {"signedTimestamp": "AAAA"}]}}},
            "the bundle carries the same timestamp twice",
            "material",
            id="timestamp-twice",
        ),
        pytest.param({"dsseEnvelope": {**ENVELOPE, "signatures": []}}, "its DSSE envelope has no signatures", "envelope", id="no-signatures"),
    ],
)
def test_broken_invariants_are_one_error_type_naming_the_part(fields, message, part) -> None:
    with pytest.raises(BundleFormatError) as caught:
        parse_bundle(bundle(**fields))
    assert (caught.value.message, caught.value.part) == (message, part)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"[", "its in-toto statement is not valid JSON"),
        (b"[]", "its in-toto statement is not a JSON object"),
        (b'{"_type": "x"}', "its statement type 'x' is not in-toto"),
    ],
)
def test_statements_refuse_what_is_not_in_toto(payload, message) -> None:
    with pytest.raises(BundleFormatError, match=message):
        InTotoStatement.parse(payload)


def test_a_statement_keeps_only_string_digests() -> None:
    statement = InTotoStatement.parse(
        json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "p", "subject": [{"digest": {"sha256": "ab", "n": 1}}, "x"]}).encode()
    )
    assert statement.has_subject_list and [s.digests for s in statement.subjects] == [{"sha256": "ab"}]
