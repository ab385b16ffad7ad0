"""`verify_bundle` on certificate bundles made here: the hook's certificate checks behind the command.

The conformance suite's certificate cases are fixed files; these tests make their own CA (shaped
like Fulcio, with an embedded SCT from a test CT log), transparency log and bundles, so that each
check of the certificate path (conformance.py handing the certificate to certificates.py) can be
broken on its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signgate.verifiers.cosign.conformance import (
    Artifact,
    BundleVerificationError,
    IdentityPolicy,
    Reason,
    parse_bundle,
    verify_bundle,
)
from signgate.verifiers.cosign.trust_root import load_trust_root
from support.fulcio import NOW, TestCTLog, TestFulcio, new_ct_log, new_fulcio, trusted_root
from support.tlog import TestLog, new_log

SUBJECT = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1"
ISSUER = "https://token.actions.githubusercontent.com"
ARTIFACT = b"release tarball\n"
ARTIFACT_SHA = hashlib.sha256(ARTIFACT).digest()
INTEGRATED = int(NOW.timestamp())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class World:
    """A CA, a CT log, a transparency log and the trusted_root.json that names them."""

    def __init__(self, tmp_path: Path) -> None:
        self.fulcio: TestFulcio = new_fulcio()
        self.ct: TestCTLog = new_ct_log()
        self.log: TestLog = new_log(tmp_path / "logs", "rekor.test")
        self.root = load_trust_root(str(trusted_root(tmp_path / "trusted_root.json", self.fulcio, [self.ct], [self.log])))

    def signer(self, **issue: Any) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        private = ec.generate_private_key(ec.SECP256R1())
        certificate = self.fulcio.issue(private.public_key(), ct_log=issue.pop("ct_log", self.ct), **issue)
        return private, certificate.public_bytes(serialization.Encoding.DER)

    def bundle(self, private: Any, leaf_der: bytes, *, logged_der: bytes | None = None, chain: list[bytes] | None = None,
               entry: dict[str, Any] | None = None) -> bytes:
        """A v0.3 message-signature bundle over ARTIFACT, logged as hashedrekord 0.0.1 naming
        `logged_der` (default: the leaf) with a SET and an inclusion proof."""
        signature = private.sign(ARTIFACT, ec.ECDSA(hashes.SHA256()))
        logged_pem = _pem(logged_der or leaf_der)
        body = json.dumps({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256", "value": ARTIFACT_SHA.hex()}},
                     "signature": {"content": b64(signature), "publicKey": {"content": b64(logged_pem)}}},
        }, sort_keys=True, separators=(",", ":")).encode()
        material: dict[str, Any] = {"tlogEntries": [entry or self.log.entry(body, ("hashedrekord", "0.0.1"), integrated=INTEGRATED)]}
        if chain is None:
            material["certificate"] = {"rawBytes": b64(leaf_der)}
        else:
            material["x509CertificateChain"] = {"certificates": [{"rawBytes": b64(der)} for der in [leaf_der, *chain]]}
        return json.dumps({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": material,
            "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(ARTIFACT_SHA)}, "signature": b64(signature)},
        }).encode()

    def verify(self, raw: bytes, subject: str = SUBJECT, issuer: str = ISSUER) -> Any:
        return verify_bundle(parse_bundle(raw), Artifact(ARTIFACT_SHA, ARTIFACT), self.root, IdentityPolicy(subject, issuer),
                             now=NOW + timedelta(minutes=1))

    def refused(self, raw: bytes, **policy: str) -> BundleVerificationError:
        with pytest.raises(BundleVerificationError) as info:
            self.verify(raw, **policy)
        return info.value


def _pem(der: bytes) -> bytes:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_keyless_bundle_verifies_with_its_verified_time(world: World) -> None:
    private, leaf = world.signer()
    verified = world.verify(world.bundle(private, leaf))
    assert verified.signer == SUBJECT
    assert verified.times == (("tlog", datetime.fromtimestamp(INTEGRATED, tz=timezone.utc)),)


def test_the_identity_is_matched_and_the_message_says_what_was_found(world: World) -> None:
    private, leaf = world.signer()
    refused = world.refused(world.bundle(private, leaf), subject="https://github.com/org/other/.github/workflows/x.yml@refs/heads/main")
    assert refused.reason is Reason.IDENTITY
    assert refused.message.startswith(f"signed by {SUBJECT} (issuer {ISSUER}), but the rule requires subject https://github.com/org/other/")
    refused = world.refused(world.bundle(private, leaf), issuer="https://accounts.google.com")
    assert refused.reason is Reason.IDENTITY and "issuer https://accounts.google.com" in refused.message


def test_a_log_entry_naming_another_certificate_of_the_same_key_is_refused(world: World) -> None:
    # The entry must be about this certificate, not merely its key: a second certificate for the
    # same key (another identity, say) logged with this signature proves nothing about this one.
    private, leaf = world.signer()
    other = world.fulcio.issue(private.public_key(), subject="someone@example.com", ct_log=world.ct).public_bytes(serialization.Encoding.DER)
    refused = world.refused(world.bundle(private, leaf, logged_der=other))
    assert refused.reason is Reason.TLOG_MISMATCH


def test_a_log_entry_naming_only_the_key_is_refused(world: World) -> None:
    private, leaf = world.signer()
    signature = private.sign(ARTIFACT, ec.ECDSA(hashes.SHA256()))
    key_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = json.dumps({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {"data": {"hash": {"algorithm": "sha256", "value": ARTIFACT_SHA.hex()}},
                 "signature": {"content": b64(signature), "publicKey": {"content": b64(key_pem)}}},
    }, sort_keys=True, separators=(",", ":")).encode()
    entry = world.log.entry(body, ("hashedrekord", "0.0.1"), integrated=INTEGRATED)
    assert world.refused(world.bundle(private, leaf, entry=entry)).reason is Reason.TLOG_MISMATCH


def test_a_chain_to_another_root_is_refused(world: World, tmp_path: Path) -> None:
    stranger = new_fulcio("stranger")
    private = ec.generate_private_key(ec.SECP256R1())
    leaf = stranger.issue(private.public_key(), ct_log=world.ct).public_bytes(serialization.Encoding.DER)
    refused = world.refused(world.bundle(private, leaf))
    assert refused.reason is Reason.CERTIFICATE
    assert f"does not chain to trusted root {world.root.source}" in refused.message


def test_a_leaf_expired_before_its_integrated_time_is_refused(world: World) -> None:
    private, leaf = world.signer(not_before=NOW - timedelta(hours=2), not_after=NOW - timedelta(hours=1))
    refused = world.refused(world.bundle(private, leaf))
    assert refused.reason is Reason.CERTIFICATE and "the certificate expired" in refused.message


def test_the_sct_is_required_and_must_verify(world: World) -> None:
    private, leaf = world.signer(ct_log=None)
    refused = world.refused(world.bundle(private, leaf))
    assert refused.reason is Reason.CERTIFICATE and "carries no SCT" in refused.message
    forged = new_ct_log()  # an SCT from a CT log the trust root does not hold
    private, leaf = world.signer(ct_log=forged)
    refused = world.refused(world.bundle(private, leaf))
    assert refused.reason is Reason.CERTIFICATE and "SCT does not verify" in refused.message


def test_a_certificate_without_code_signing_is_refused(world: World) -> None:
    private, leaf = world.signer(code_signing=False)
    refused = world.refused(world.bundle(private, leaf))
    assert refused.reason is Reason.CERTIFICATE


def test_a_chain_carrying_its_own_root_is_refused(world: World) -> None:
    private, leaf = world.signer()
    intermediate, root = (c.public_bytes(serialization.Encoding.DER) for c in (world.fulcio.intermediate, world.fulcio.root))
    assert world.verify(world.bundle(private, leaf, chain=[intermediate])).signer == SUBJECT
    refused = world.refused(world.bundle(private, leaf, chain=[intermediate, root]))
    assert refused.reason is Reason.CERTIFICATE and "carries a root certificate" in refused.message


def test_a_malformed_certificate_is_a_refusal_not_a_crash(world: World) -> None:
    private, leaf = world.signer()
    raw = json.loads(world.bundle(private, leaf))
    raw["verificationMaterial"]["certificate"]["rawBytes"] = b64(b"\x30\x03\x02\x01\x00")
    refused = world.refused(json.dumps(raw).encode())
    assert refused.reason is Reason.CERTIFICATE and "malformed" in refused.message


def test_a_certificate_bundle_must_be_logged(world: World) -> None:
    private, leaf = world.signer()
    raw = json.loads(world.bundle(private, leaf))
    raw["verificationMaterial"]["tlogEntries"] = []
    assert world.refused(json.dumps(raw).encode()).reason is Reason.TLOG_MISSING
