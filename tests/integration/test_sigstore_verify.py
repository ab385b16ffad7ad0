"""Unit tests of the offline sigstore pieces: trust_root.py, transparency.py and the key path of
sigstore_verify.py, with real signers: a test signing key, a test Rekor-style log (an RFC 6962 Merkle
tree built here independently, from the RFC's recursive definitions) whose key signs signed entry
timestamps and checkpoints, and a trust root naming that log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from signgate.keys import public_key_from_pem
from signgate.verifiers.cosign.conformance import (
    Artifact,
    BundleVerificationError,
    KeyPolicy,
    Reason,
    parse_bundle,
    verify_bundle,
)
from signgate.verifiers.cosign.transparency import (
    ProofError,
    parse_checkpoint,
    root_from_inclusion_proof,
    verify_inclusion_proof,
)
from signgate.verifiers.cosign.trust_root import Expiry, TrustRootError, Validity, parse_time, parse_trust_root

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- an independent RFC 6962 tree (section 2.1: MTH and PATH, recursively) ------------------------


def mth(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33])
def test_inclusion_proofs_agree_with_rfc6962(size: int) -> None:
    leaves = [b"entry %d" % i for i in range(size)]
    root = mth(leaves)
    for index in range(size):
        leaf = hashlib.sha256(b"\x00" + leaves[index]).digest()
        proof = path(index, leaves)
        assert root_from_inclusion_proof(index, size, leaf, proof) == root
        # The same proof, claimed for a neighbour's position or another leaf, leads elsewhere.
        if size > 1:
            other = (index + 1) % size
            try:
                assert root_from_inclusion_proof(other, size, leaf, proof) != root
            except ProofError:
                pass
        wrong_leaf = hashlib.sha256(b"\x00" + b"forged").digest()
        assert root_from_inclusion_proof(index, size, wrong_leaf, proof) != root


@pytest.mark.parametrize(
    "index,size,hashes,message",
    [
        (5, 5, 3, "index 5 of a tree of 5"),
        (0, 0, 0, "tree of 0"),
        (0, 4, 3, "more hashes than the tree needs"),
        (0, 4, 1, "fewer hashes than the tree needs"),
    ],
)
def test_inclusion_proof_shape_errors(index: int, size: int, hashes: int, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        root_from_inclusion_proof(index, size, b"\x00" * 32, [b"\x11" * 32] * hashes)


# ---- a test log ---------------------------------------------------------------------------------


@dataclass
class Log:
    private: Any
    origin: str
    spki: bytes
    log_id: bytes
    key_details: str
    leaves: list[bytes]

    @classmethod
    def ecdsa(cls, origin: str = "rekor.test - 1234") -> "Log":
        private = ec.generate_private_key(ec.SECP256R1())
        spki = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(private, origin, spki, hashlib.sha256(spki).digest(), "PKIX_ECDSA_P256_SHA_256",
                   [b"earlier entry %d" % i for i in range(6)])

    @classmethod
    def ed25519(cls, origin: str = "log.rekor-v2.test") -> "Log":
        private = ed25519.Ed25519PrivateKey.generate()
        spki = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        # The note key id of an Ed25519 signed-note key: SHA-256(name || 0x0A || 0x01 || key).
        return cls(private, origin, spki, hashlib.sha256(origin.encode() + b"\n\x01" + raw).digest(), "PKIX_ED25519",
                   [b"earlier entry %d" % i for i in range(6)])

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(data)
        return self.private.sign(data, ec.ECDSA(hashes.SHA256()))

    def checkpoint(self, size: int, root: bytes, signer: "Log | None" = None, extra: str = "") -> str:
        note = f"{self.origin}\n{size}\n{b64(root)}\n{extra}"
        signer = signer or self
        line = f"\u2014 {signer.origin.split(' ')[0]} {b64(signer.log_id[:4] + signer.sign(note.encode()))}\n"
        return note + "\n" + line

    def add(self, body: bytes, integrated: int, *, set_: bool = True, proof: bool = True) -> dict[str, Any]:
        self.leaves.append(body)
        index = len(self.leaves) - 1
        entry: dict[str, Any] = {
            "logIndex": str(index),
            "logId": {"keyId": b64(self.log_id)},
            "canonicalizedBody": b64(body),
        }
        document = json.loads(body)
        entry["kindVersion"] = {"kind": document["kind"], "version": document["apiVersion"]}
        if set_:
            entry["integratedTime"] = str(integrated)
            canonical = json.dumps(
                {"body": b64(body), "integratedTime": integrated, "logID": self.log_id.hex(), "logIndex": index},
                sort_keys=True, separators=(",", ":"),
            ).encode()
            entry["inclusionPromise"] = {"signedEntryTimestamp": b64(self.sign(canonical))}
        if proof:
            root = mth(self.leaves)
            entry["inclusionProof"] = {
                "logIndex": str(index),
                "treeSize": str(len(self.leaves)),
                "rootHash": b64(root),
                "hashes": [b64(h) for h in path(index, self.leaves)],
                "checkpoint": {"envelope": self.checkpoint(len(self.leaves), root)},
            }
        return entry

    def trust_entry(self, start: str = "2020-01-01T00:00:00Z", end: str | None = None) -> dict[str, Any]:
        valid_for = {"start": start, **({"end": end} if end else {})}
        return {
            "baseUrl": f"https://{self.origin.split(' ')[0]}",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(self.spki), "keyDetails": self.key_details, "validFor": valid_for},
            "logId": {"keyId": b64(self.log_id)},
        }


def trust_root(*logs: Log, **validity: str) -> Any:
    document = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log.trust_entry(**validity) for log in logs],
        "certificateAuthorities": [],
        "ctlogs": [],
        "timestampAuthorities": [],
    }
    return parse_trust_root(json.dumps(document).encode(), "test root")


class Signer:
    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.pem = self.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key = public_key_from_pem("release", "release.pub", self.pem)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data, ec.ECDSA(hashes.SHA256()))

    def hashedrekord(self, digest: bytes, signature: bytes) -> bytes:
        return json.dumps({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                     "signature": {"content": b64(signature), "publicKey": {"content": b64(self.pem)}}},
        }, separators=(",", ":"), sort_keys=True).encode()

    def hashedrekord_v2(self, digest: bytes, signature: bytes) -> bytes:
        spki = self.private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return json.dumps({
            "apiVersion": "0.0.2", "kind": "hashedrekord",
            "spec": {"hashedRekordV002": {
                "data": {"algorithm": "SHA2_256", "digest": b64(digest)},
                "signature": {"content": b64(signature),
                              "verifier": {"publicKey": {"rawBytes": b64(spki)}, "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}}},
        }, separators=(",", ":")).encode()


ARTIFACT = b"the artifact\n"
ARTIFACT_SHA = hashlib.sha256(ARTIFACT).digest()
INTEGRATED = int((NOW - timedelta(days=1)).timestamp())


def message_bundle(signer: Signer, entries: list[dict[str, Any]], signature: bytes, media_type: str = "application/vnd.dev.sigstore.bundle.v0.3+json") -> bytes:
    return json.dumps({
        "mediaType": media_type,
        "verificationMaterial": {"publicKey": {"hint": "release"}, "tlogEntries": entries},
        "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(ARTIFACT_SHA)}, "signature": b64(signature)},
    }).encode()


def verify(raw: bytes, signer: Signer, root: Any, artifact: Artifact | None = None, **kwargs: Any) -> Any:
    return verify_bundle(parse_bundle(raw), artifact or Artifact(ARTIFACT_SHA, ARTIFACT), root, KeyPolicy(signer.key), now=NOW, **kwargs)


def refused(raw: bytes, signer: Signer, root: Any, artifact: Artifact | None = None, **kwargs: Any) -> BundleVerificationError:
    with pytest.raises(BundleVerificationError) as info:
        verify(raw, signer, root, artifact, **kwargs)
    return info.value


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def log() -> Log:
    return Log.ecdsa()


def test_key_bundle_with_promise_and_proof_verifies(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    verified = verify(message_bundle(signer, [entry], signature), signer, trust_root(log))
    assert verified.signer == "release"
    assert verified.times == (("tlog", datetime.fromtimestamp(INTEGRATED, tz=timezone.utc)),)
    # By digest alone (`sha256:HEX`, or an image digest), as by content.
    assert verify(message_bundle(signer, [entry], signature), signer, trust_root(log), Artifact(ARTIFACT_SHA)).signer == "release"


def test_a_cosigned_checkpoint_verifies(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    witness = Log.ed25519("witness.test")
    proof = entry["inclusionProof"]
    envelope = proof["checkpoint"]["envelope"]
    note = envelope[: envelope.rindex("\n\n") + 1]
    proof["checkpoint"]["envelope"] = envelope + f"\u2014 witness.test {b64(witness.log_id[:4] + witness.sign(note.encode()))}\n"
    verify(message_bundle(signer, [entry], signature), signer, trust_root(log))


@pytest.mark.parametrize("media_type", [
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
])
def test_known_media_types_are_accepted(signer: Signer, log: Log, media_type: str) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    verify(message_bundle(signer, [entry], signature, media_type), signer, trust_root(log))


@pytest.mark.parametrize("media_type", [
    "application/vnd.dev.sigstore.bundle+json;version=99.9",
    "application/vnd.dev.sigstore.bundle+json;version=0.4",
    "application/vnd.dev.sigstore.bundle.v0.4+json",
    "application/vnd.dev.sigstore.bundle+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3 ",
])
def test_unknown_media_types_are_refused(signer: Signer, log: Log, media_type: str) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    error = refused(message_bundle(signer, [entry], signature, media_type), signer, trust_root(log))
    assert error.reason is Reason.MEDIA_TYPE


def test_v01_bundle_needs_a_promise_and_later_ones_a_proof(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    body = signer.hashedrekord(ARTIFACT_SHA, signature)
    only_set = log.add(body, INTEGRATED, proof=False)
    verify(message_bundle(signer, [only_set], signature, "application/vnd.dev.sigstore.bundle+json;version=0.1"), signer, trust_root(log))
    error = refused(message_bundle(signer, [only_set], signature), signer, trust_root(log))
    assert error.reason is Reason.TLOG_MISSING and "no inclusion proof" in error.message


def test_v01_proof_without_checkpoint_is_still_checked(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    del entry["inclusionProof"]["checkpoint"]
    v01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
    verify(message_bundle(signer, [entry], signature, v01), signer, trust_root(log))
    # Later versions need the checkpoint.
    assert "no checkpoint" in refused(message_bundle(signer, [entry], signature), signer, trust_root(log)).message
    # Without one, the path must still lead to the root it names.
    entry["inclusionProof"]["hashes"][0] = b64(bytes(32))
    assert refused(message_bundle(signer, [entry], signature, v01), signer, trust_root(log)).reason is Reason.TLOG_PROOF


def test_a_proof_for_another_entry_is_refused(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    other = log.add(signer.hashedrekord(hashlib.sha256(b"other").digest(), signer.sign(b"other")), INTEGRATED)
    entry["inclusionProof"] = other["inclusionProof"]  # a valid proof, for the next leaf
    error = refused(message_bundle(signer, [entry], signature), signer, trust_root(log))
    assert error.reason is Reason.TLOG_PROOF and "inclusion proof does not lead" in error.message


def test_a_broken_proof_is_refused_even_with_a_valid_promise(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    hashes_ = entry["inclusionProof"]["hashes"]
    hashes_[0] = b64(bytes(32))
    error = refused(message_bundle(signer, [entry], signature), signer, trust_root(log))
    assert error.reason is Reason.TLOG_PROOF


def test_a_checkpoint_signed_by_an_unknown_key_is_refused(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    impostor = Log.ecdsa()
    impostor.log_id = log.log_id  # even with the right key hint
    proof = entry["inclusionProof"]
    proof["checkpoint"]["envelope"] = log.checkpoint(int(proof["treeSize"]), base64.b64decode(proof["rootHash"]), signer=impostor)
    error = refused(message_bundle(signer, [entry], signature), signer, trust_root(log))
    assert error.reason is Reason.TLOG_PROOF and "checkpoint's signature does not verify" in error.message
    stranger = Log.ecdsa()
    proof["checkpoint"]["envelope"] = log.checkpoint(int(proof["treeSize"]), base64.b64decode(proof["rootHash"]), signer=stranger)
    error = refused(message_bundle(signer, [entry], signature), signer, trust_root(log))
    assert "not signed by the log's key" in error.message


def test_a_checkpoint_for_another_tree_is_refused(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    proof = entry["inclusionProof"]
    proof["checkpoint"]["envelope"] = log.checkpoint(int(proof["treeSize"]) + 1, base64.b64decode(proof["rootHash"]))
    error = refused(message_bundle(signer, [entry], signature), signer, trust_root(log))
    assert "checkpoint is for another tree" in error.message


def test_an_invalid_promise_is_refused_even_with_a_valid_proof(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    entry["integratedTime"] = str(INTEGRATED - 3600)  # the promise was for another time
    error = refused(message_bundle(signer, [entry], signature), signer, trust_root(log))
    assert error.reason is Reason.TLOG_PROOF and "signed entry timestamp" in error.message


def test_an_entry_about_another_signature_is_refused(signer: Signer, log: Log) -> None:
    # CVE-2022-36056's shape: a genuine, fully proven entry, but for another signature and artifact.
    signature = signer.sign(ARTIFACT)
    other = log.add(signer.hashedrekord(hashlib.sha256(b"other").digest(), signer.sign(b"other")), INTEGRATED)
    error = refused(message_bundle(signer, [other], signature), signer, trust_root(log))
    assert error.reason is Reason.TLOG_MISMATCH
    # The same artifact and key, but another signature (ECDSA signs differently each time): the
    # logged entry must be about this very signature.
    logged = log.add(signer.hashedrekord(ARTIFACT_SHA, signer.sign(ARTIFACT)), INTEGRATED)
    assert refused(message_bundle(signer, [logged], signature), signer, trust_root(log)).reason is Reason.TLOG_MISMATCH
    # The same artifact, signed by another key that the log saw.
    intruder = Signer()
    foreign = log.add(intruder.hashedrekord(ARTIFACT_SHA, intruder.sign(ARTIFACT)), INTEGRATED)
    assert refused(message_bundle(signer, [foreign], signature), signer, trust_root(log)).reason is Reason.TLOG_MISMATCH


def test_an_entry_from_an_untrusted_log_is_refused(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    error = refused(message_bundle(signer, [entry], signature), signer, trust_root(Log.ecdsa()))
    assert error.reason is Reason.TLOG_UNTRUSTED


def test_the_log_key_must_be_valid_at_the_integrated_time(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    raw = message_bundle(signer, [entry], signature)
    expired = trust_root(log, end=(NOW - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert refused(raw, signer, expired).reason is Reason.TLOG_UNTRUSTED
    # The end is inclusive: a log key that ends at the integrated time still covers it.
    at_end = trust_root(log, end=datetime.fromtimestamp(INTEGRATED, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    verify(raw, signer, at_end)


def test_an_integrated_time_in_the_future_is_refused(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), int((NOW + timedelta(hours=1)).timestamp()))
    error = refused(message_bundle(signer, [entry], signature), signer, trust_root(log))
    assert "in the future" in error.message


def test_wrong_key_and_wrong_artifact(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    raw = message_bundle(signer, [entry], signature)
    assert refused(raw, Signer(), trust_root(log)).reason is Reason.SIGNATURE
    other = b"another artifact"
    assert refused(raw, signer, trust_root(log), Artifact(hashlib.sha256(other).digest(), other)).reason is Reason.ARTIFACT


def test_a_tlog_entry_is_required_by_default(signer: Signer, log: Log) -> None:
    signature = signer.sign(ARTIFACT)
    raw = message_bundle(signer, [], signature)
    assert refused(raw, signer, trust_root(log)).reason is Reason.TLOG_MISSING
    assert verify(raw, signer, trust_root(log), require_tlog=False).times == ()


def test_rekor_v2_entry_is_proven_by_its_ed25519_checkpoint(signer: Signer) -> None:
    log = Log.ed25519()
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord_v2(ARTIFACT_SHA, signature), 0, set_=False)
    raw = message_bundle(signer, [entry], signature)
    # No promise, so no verified time: refused when a time is needed (a TSA would give it) ...
    assert refused(raw, signer, trust_root(log)).reason is Reason.NO_TIME
    # ... but the proof itself verifies, and a broken one never passes.
    assert verify(raw, signer, trust_root(log), require_tlog=False).times == ()
    entry["inclusionProof"]["hashes"][0] = b64(bytes(32))
    assert refused(message_bundle(signer, [entry], signature), signer, trust_root(log), require_tlog=False).reason is Reason.TLOG_PROOF


def test_dsse_key_bundle_with_dsse_entry(signer: Signer, log: Log) -> None:
    from signgate.verifiers.cosign.bundle import pae

    statement = json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://example.test/p",
                            "subject": [{"name": "x", "digest": {"sha256": ARTIFACT_SHA.hex()}}], "predicate": {}}).encode()
    payload_type = "application/vnd.in-toto+json"
    signature = signer.sign(pae(payload_type, statement))
    body = json.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(statement).hexdigest()},
        "envelopeHash": {"algorithm": "sha256", "value": "00" * 32},
        "signatures": [{"signature": b64(signature), "verifier": b64(signer.pem)}]}}).encode()
    entry = log.add(body, INTEGRATED)
    raw = json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "release"}, "tlogEntries": [entry]},
        "dsseEnvelope": {"payloadType": payload_type, "payload": b64(statement), "signatures": [{"sig": b64(signature)}]},
    }).encode()
    verified = verify(raw, signer, trust_root(log), Artifact(ARTIFACT_SHA))
    assert verified.payload == statement
    assert refused(raw, signer, trust_root(log), Artifact(bytes(32))).reason is Reason.ARTIFACT


# ---- checkpoints and trust roots ----------------------------------------------------------------


@pytest.mark.parametrize(
    "envelope,message",
    [
        ("", "no checkpoint"),
        ("origin\n1\n" + b64(bytes(32)) + "\n", "not a signed note"),
        ("origin\n1\n" + b64(bytes(32)) + "\n\n", "not signed"),
        ("\n1\n" + b64(bytes(32)) + "\n\n\u2014 o AAAAAAA=\n", "lacks an origin"),
        ("origin\n" + b64(bytes(32)) + "\n\n\u2014 o AAAAAAA=\n", "lacks an origin"),
        ("origin\nx\n" + b64(bytes(32)) + "\n\n\u2014 o AAAAAAA=\n", "tree size"),
        ("origin\n1\nnot-base64\n\n\u2014 o AAAAAAA=\n", "root hash"),
        ("origin\n1\n" + b64(bytes(32)) + "\n\nsomething else\n", "malformed signature line"),
        ("origin\n1\n" + b64(bytes(32)) + "\n\n\u2014 o AAA=\n", "malformed signature"),
    ],
)
def test_malformed_checkpoints(envelope: str, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        parse_checkpoint(envelope)


def test_checkpoint_keeps_extra_lines_in_the_signed_text() -> None:
    text = "origin - 1\n2\n" + b64(bytes(32)) + "\nTimestamp: 1\n\n\u2014 origin AAAAAAA=\n\u2014 witness BBBBBBB=\n"
    checkpoint = parse_checkpoint(text)
    assert checkpoint.note == ("origin - 1\n2\n" + b64(bytes(32)) + "\nTimestamp: 1\n").encode()
    assert [name for name, _, _ in checkpoint.signatures] == ["origin", "witness"]


def test_proof_errors_name_the_check() -> None:
    log = trust_root(Log.ecdsa()).tlogs[0]
    with pytest.raises(ProofError, match="malformed"):
        verify_inclusion_proof({"logIndex": "-1", "treeSize": "1", "rootHash": b64(bytes(32))}, b"x", log)


def _root_document(**tlog_changes: Any) -> dict[str, Any]:
    entry = Log.ecdsa().trust_entry()
    entry["publicKey"].update(tlog_changes)
    return {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "tlogs": [entry]}


@pytest.mark.parametrize(
    "document,message",
    [
        (_root_document(validFor={}), "validFor.start is missing"),
        (_root_document(validFor={"start": "yesterday"}), "validFor.start is missing"),
        (_root_document(keyDetails="PKIX_DSA"), "not supported"),
        (_root_document(rawBytes="%%%"), "not base64"),
        ({**_root_document(), "mediaType": "application/json"}, "unsupported trusted root media type"),
        ({**_root_document(), "tlogs": {}}, "tlogs is not a list"),
        ({**_root_document(), "timestampAuthorities": [{"certChain": {"certificates": []}, "validFor": {"start": "2020-01-01T00:00:00Z"}}]}, "certChain"),
    ],
)
def test_malformed_trust_roots_are_configuration_errors(document: dict[str, Any], message: str) -> None:
    with pytest.raises(TrustRootError, match=message):
        parse_trust_root(json.dumps(document).encode(), "root.json")


def test_validity_is_inclusive_and_times_parse_as_protobuf_writes_them() -> None:
    start, end = parse_time("2025-01-01T00:00:00Z"), parse_time("2025-12-31T23:59:59.999999999Z")
    assert start == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert end == datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    validity = Validity(start, end)  # type: ignore[arg-type]
    assert validity.contains(start) and validity.contains(end)  # type: ignore[arg-type]
    assert not validity.contains(end + timedelta(microseconds=1))  # type: ignore[operator]
    assert parse_time("2025-01-01T00:00:00+01:00") is None and parse_time(12) is None


def test_expiring_names_kinds_whose_keys_all_end() -> None:
    """A kind is reported when none of its keys stays valid past the window (its newest key is
    named); an ending key beside a current one is a rotation, not a stale root."""
    log = Log.ecdsa()
    document = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log.trust_entry(end="2026-01-10T00:00:00Z"), Log.ecdsa("other.test").trust_entry()],
        "ctlogs": [Log.ecdsa("ct.test").trust_entry(end="2025-01-01T00:00:00Z")],
    }
    root = parse_trust_root(json.dumps(document).encode())
    ct_end = datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert root.expiring(NOW, timedelta(days=30)) == [Expiry("ctlog", "https://ct.test", ct_end)]
    document["tlogs"] = document["tlogs"][:1]  # without its successor, the ending log key is reported
    found = parse_trust_root(json.dumps(document).encode()).expiring(NOW, timedelta(days=3650))
    assert found == [Expiry("tlog", "https://rekor.test", datetime(2026, 1, 10, tzinfo=timezone.utc)),
                     Expiry("ctlog", "https://ct.test", ct_end)]
    assert "no longer valid since 2025-01-01T00:00:00Z" in found[1].describe(NOW)


# ---- RFC 3161 timestamps from a test TSA (OpenSSL's `openssl ts -reply`) -------------------------


class OpenSSLTSA:
    """A root CA and a TSA certificate (timeStamping EKU, critical), made here; OpenSSL's TSA signs."""

    def __init__(self, directory: Any) -> None:
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        assert shutil.which("openssl"), "the test TSA is OpenSSL's `openssl ts -reply`: install openssl"
        self.directory = directory
        now = datetime.now(timezone.utc)

        def name(common_name: str) -> Any:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

        root_key, tsa_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        self.root = (
            x509.CertificateBuilder().subject_name(name("signgate test TSA root")).issuer_name(name("signgate test TSA root"))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        self.leaf = (
            x509.CertificateBuilder().subject_name(name("signgate test TSA")).issuer_name(self.root.subject)
            .public_key(tsa_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        (directory / "tsa.pem").write_bytes(self.leaf.public_bytes(serialization.Encoding.PEM))
        (directory / "tsa.key").write_bytes(
            tsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        (directory / "ts.cnf").write_text(
            "[ tsa ]\ndefault_tsa = tsa_config\n[ tsa_config ]\n"
            f"serial = {directory}/serial\ncrypto_device = builtin\nsigner_digest = sha256\n"
            "default_policy = 1.2.3.4.1\ndigests = sha256\naccuracy = secs:1\nordering = yes\ntsa_name = no\n"
            "ess_cert_id_chain = no\ness_cert_id_alg = sha256\n"
        )

    def stamp(self, message: bytes) -> bytes:
        (self.directory / "message").write_bytes(message)
        run = {"check": True, "capture_output": True, "timeout": 60, "cwd": self.directory}
        subprocess.run(["openssl", "ts", "-query", "-data", "message", "-sha256", "-cert", "-out", "q.tsq"], **run)
        subprocess.run(["openssl", "ts", "-reply", "-config", "ts.cnf", "-queryfile", "q.tsq", "-signer", "tsa.pem",
                        "-inkey", "tsa.key", "-out", "r.tsr"], **run)
        return (self.directory / "r.tsr").read_bytes()

    def authority(self, start: str = "2020-01-01T00:00:00Z", end: str | None = None) -> dict[str, Any]:
        chain = [self.leaf, self.root]
        return {
            "subject": {"commonName": "signgate test TSA"},
            "certChain": {"certificates": [{"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))} for c in chain]},
            "validFor": {"start": start, **({"end": end} if end else {})},
        }


def tsa_root(log: Log, *authorities: dict[str, Any], log_start: str = "2020-01-01T00:00:00Z") -> Any:
    document = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log.trust_entry(start=log_start)],
        "timestampAuthorities": list(authorities),
    }
    return parse_trust_root(json.dumps(document).encode(), "test root")


def stamped_bundle(signer: Signer, entry: dict[str, Any], signature: bytes, stamps: list[bytes]) -> bytes:
    document = json.loads(message_bundle(signer, [entry], signature))
    document["verificationMaterial"]["timestampVerificationData"] = {"rfc3161Timestamps": [{"signedTimestamp": b64(s)} for s in stamps]}
    return json.dumps(document).encode()


@pytest.fixture
def tsa(tmp_path: Any) -> OpenSSLTSA:
    return OpenSSLTSA(tmp_path)


def _v2_entry(signer: Signer) -> tuple[Log, dict[str, Any], bytes]:
    log = Log.ed25519()
    signature = signer.sign(ARTIFACT)
    return log, log.add(signer.hashedrekord_v2(ARTIFACT_SHA, signature), 0, set_=False), signature


def _verify_now(raw: bytes, signer: Signer, root: Any) -> Any:
    return verify_bundle(parse_bundle(raw), Artifact(ARTIFACT_SHA, ARTIFACT), root, KeyPolicy(signer.key))


def _refused_now(raw: bytes, signer: Signer, root: Any) -> BundleVerificationError:
    with pytest.raises(BundleVerificationError) as info:
        _verify_now(raw, signer, root)
    return info.value


def test_rekor_v2_bundle_gets_its_time_from_a_trusted_timestamp(signer: Signer, tsa: OpenSSLTSA) -> None:
    log, entry, signature = _v2_entry(signer)
    raw = stamped_bundle(signer, entry, signature, [tsa.stamp(signature)])
    verified = _verify_now(raw, signer, tsa_root(log, tsa.authority()))
    assert [source for source, _ in verified.times] == ["tsa"]
    assert abs(verified.times[0][1] - datetime.now(timezone.utc)) < timedelta(minutes=10)


def test_a_timestamp_over_another_signature_gives_no_time(signer: Signer, tsa: OpenSSLTSA) -> None:
    log, entry, signature = _v2_entry(signer)
    raw = stamped_bundle(signer, entry, signature, [tsa.stamp(b"another signature")])
    assert _refused_now(raw, signer, tsa_root(log, tsa.authority())).reason is Reason.NO_TIME


def test_a_timestamp_from_an_untrusted_tsa_gives_no_time(signer: Signer, tmp_path: Any) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trusted, stranger = OpenSSLTSA(tmp_path / "a"), OpenSSLTSA(tmp_path / "b")
    log, entry, signature = _v2_entry(signer)
    raw = stamped_bundle(signer, entry, signature, [stranger.stamp(signature)])
    assert _refused_now(raw, signer, tsa_root(log, trusted.authority())).reason is Reason.NO_TIME
    assert _refused_now(raw, signer, tsa_root(log)).reason is Reason.NO_TIME  # a root with no TSA at all


def test_the_tsa_must_be_valid_at_the_stamped_time(signer: Signer, tsa: OpenSSLTSA) -> None:
    log, entry, signature = _v2_entry(signer)
    raw = stamped_bundle(signer, entry, signature, [tsa.stamp(signature)])
    ended = tsa.authority(end="2021-01-01T00:00:00Z")
    assert _refused_now(raw, signer, tsa_root(log, ended)).reason is Reason.NO_TIME


def test_the_log_key_must_be_valid_at_the_stamped_time(signer: Signer, tsa: OpenSSLTSA) -> None:
    log, entry, signature = _v2_entry(signer)
    raw = stamped_bundle(signer, entry, signature, [tsa.stamp(signature)])
    later = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    error = _refused_now(raw, signer, tsa_root(log, tsa.authority(), log_start=later))
    assert error.reason is Reason.TLOG_UNTRUSTED and "not valid at the signing time" in error.message


def test_duplicate_and_garbage_timestamps_are_refused(signer: Signer, tsa: OpenSSLTSA) -> None:
    log, entry, signature = _v2_entry(signer)
    stamp = tsa.stamp(signature)
    root = tsa_root(log, tsa.authority())
    assert _refused_now(stamped_bundle(signer, entry, signature, [stamp, stamp]), signer, root).reason is Reason.MALFORMED
    garbage = _refused_now(stamped_bundle(signer, entry, signature, [b"\x30\x03\x02\x01\x00"]), signer, root)
    assert garbage.reason is Reason.TIMESTAMP and "not an RFC 3161 response" in garbage.message


# ---- the command line's exit codes --------------------------------------------------------------


def run_main(*args: str) -> tuple[int, str, str]:
    import io

    from signgate.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(["sigstore", "verify-bundle", *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli_case(tmp_path: Any, signer: Signer, log: Log) -> dict[str, str]:
    signature = signer.sign(ARTIFACT)
    entry = log.add(signer.hashedrekord(ARTIFACT_SHA, signature), INTEGRATED)
    files = {
        "bundle": message_bundle(signer, [entry], signature),
        "key": signer.pem,
        "root": json.dumps({"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                            "tlogs": [log.trust_entry()]}).encode(),
        "artifact": ARTIFACT,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: str(tmp_path / name) for name in files}


def test_cli_verifies_by_file_and_by_digest(cli_case: dict[str, str]) -> None:
    common = ["--bundle", cli_case["bundle"], "--key", cli_case["key"], "--trusted-root", cli_case["root"]]
    code, out, err = run_main(*common, cli_case["artifact"])
    assert (code, err) == (0, "") and out.startswith("OK: verified for key (signed at: tlog ")
    assert run_main(*common, "sha256:" + ARTIFACT_SHA.hex())[0] == 0
    code, _, err = run_main(*common, "sha256:" + "ab" * 32)
    assert code == 1 and err.startswith("FAIL (artifact-mismatch): ") and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--key", "{key}", "--certificate-identity", "i", "--certificate-oidc-issuer", "o", "--trusted-root", "{root}", "{artifact}"], "not both"),
        (["--certificate-identity", "i", "--trusted-root", "{root}", "{artifact}"], "give --key, or both"),
        (["--key", "{key}", "{artifact}"], "give --trusted-root"),
        (["--key", "{key}", "--trusted-root", "{root}", "sha256:abc"], "64 hex digits"),
        (["--key", "{key}", "--trusted-root", "{root}", "{artifact}.missing"], "cannot read"),
    ],
)
def test_cli_usage_errors_exit_2(cli_case: dict[str, str], arguments: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNGATE_TRUSTED_ROOT", raising=False)
    code, out, err = run_main("--bundle", cli_case["bundle"], *(a.format(**cli_case) for a in arguments))
    assert code == 2 and out == "" and message in err


def test_cli_bad_key_or_trust_root_is_a_refusal(cli_case: dict[str, str], tmp_path: Any) -> None:
    (tmp_path / "not-a-key").write_text("-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n")
    code, _, err = run_main("--bundle", cli_case["bundle"], "--key", str(tmp_path / "not-a-key"), "--trusted-root", cli_case["root"], cli_case["artifact"])
    assert code == 1 and err.startswith("FAIL (wrong-verification-material): ")
    (tmp_path / "bad-root").write_text("{}")
    code, _, err = run_main("--bundle", cli_case["bundle"], "--key", cli_case["key"], "--trusted-root", str(tmp_path / "bad-root"), cli_case["artifact"])
    assert code == 1 and err.startswith("FAIL (trust-root): ")


# ---- any mangled bundle is a refusal, never a crash ---------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**64) | st.text(max_size=12)
    | st.sampled_from(["", "AAAA", "-1", "0", "MEUCIQ==", b64(bytes(32)), "hashedrekord", "0.0.2", "SHA2_256"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, prefix + (index,))
    return found


_SIGNER, _LOG = Signer(), Log.ecdsa()
_SIGNATURE = _SIGNER.sign(ARTIFACT)
_ENTRY = _LOG.add(_SIGNER.hashedrekord(ARTIFACT_SHA, _SIGNATURE), INTEGRATED)
_GOOD = json.loads(message_bundle(_SIGNER, [_ENTRY], _SIGNATURE))
# The entry body is itself JSON inside base64: mangle it decoded, too.
_GOOD["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"] = json.loads(base64.b64decode(_ENTRY["canonicalizedBody"]))
_PATHS = _paths(_GOOD)[1:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_PATHS), _JSON_VALUES)
def test_a_mangled_bundle_is_refused_not_crashed(where: tuple[Any, ...], value: Any) -> None:
    document = json.loads(json.dumps(_GOOD))
    target = document
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    material = document.get("verificationMaterial")
    entry = material.get("tlogEntries") if isinstance(material, dict) else None
    if isinstance(entry, list) and entry and isinstance(entry[0], dict) and isinstance(entry[0].get("canonicalizedBody"), (dict, list)):
        entry[0]["canonicalizedBody"] = b64(json.dumps(entry[0]["canonicalizedBody"], separators=(",", ":"), sort_keys=True).encode())
    try:
        verify(json.dumps(document).encode(), _SIGNER, trust_root(_LOG))
    except BundleVerificationError as error:
        assert error.message and len(error.message.splitlines()) == 1
