"""Specification of offline Rekor proofs (cosign-format.md §4): `tlog: required` and `rekorKeys`.

A rule with `tlog: required` counts a signature only when it carries a signed entry timestamp
(SET) from a trusted Rekor key, and the logged entry is about this very signature: same signature
bytes, same public key, same payload. A genuine SET for some other entry proves nothing.

Two sources of proofs:
- the real cosign fixture `key-rekor-valid` (a hashedrekord entry in the public-good log, whose SET
  verifies with `keys/rekor.pub`). docker-registry refuses to store its manifest (the image blobs
  it names are not part of the fixture: MANIFEST_BLOB_UNKNOWN), so the hook reads it from the
  in-memory registry of test_bundles.py, which serves exactly the fixture's bytes;
- a "Rekor" P-256 key generated here, signing SETs over entries built from the same formats
  (legacy `dev.sigstore.cosign/bundle` annotations; bundle `tlogEntries` with a `dsse` body).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.contract import run_config
from signgate.verifiers.cosign.bundle import check_bundle
from signgate.config import KeySpec
from signgate.verifiers.cosign.legacy import Requirements, check_legacy_signature
from signgate.errors import ConfigError
from signgate.keys import PublicKey, load_public_key
from signgate.verifiers.cosign.rekor import RekorKeys, check_bundle_tlog, check_legacy_tlog
from support.oci import OCI_MANIFEST, push_image, sha256_digest
from support.signer import (
    INTOTO_PAYLOAD_TYPE,
    SIMPLESIGNING,
    TestKey,
    attach_bundle,
    b64,
    dsse_envelope,
    in_toto_statement,
    pae,
    sign_legacy,
    sigstore_bundle,
    simple_signing_payload,
)
from integration.test_bundles import MemoryRegistry, admit, config_data, public_key, write_config

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "cosign-interop"
REKOR_CASE = FIXTURES / "key-rekor-valid"
PUBLIC_GOOD_LOG_ID = "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"

needs_fixtures = pytest.mark.skipif(
    not (REKOR_CASE / "signatures" / "1" / "annotations.json").is_file(),
    reason=f"cosign interop fixtures not found at {FIXTURES} (shared test data, not part of the project)",
)


# ---- a local "Rekor" ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalRekor:
    """A transparency log that exists only as a key: it signs entry timestamps like Rekor v1."""

    private: ec.EllipticCurvePrivateKey
    pub_path: Path

    @property
    def spki(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def log_id(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()

    def set_over(self, body_b64: str, integrated: int, index: int, log_id: str | None = None) -> bytes:
        """The SET: ECDSA-SHA256 over the canonical JSON of the four entry fields."""
        canonical = json.dumps(
            {"body": body_b64, "integratedTime": integrated, "logID": log_id or self.log_id, "logIndex": index},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        return self.private.sign(canonical, ec.ECDSA(hashes.SHA256()))

    def legacy_annotation(self, body: bytes, integrated: int = 1700000000, index: int = 7) -> str:
        """The `dev.sigstore.cosign/bundle` annotation cosign v2 writes."""
        body_b64 = b64(body)
        return json.dumps(
            {
                "SignedEntryTimestamp": b64(self.set_over(body_b64, integrated, index)),
                "Payload": {"body": body_b64, "integratedTime": integrated, "logIndex": index, "logID": self.log_id},
            }
        )

    def tlog_entry(self, body: bytes, kind: str = "dsse", integrated: int = 1700000000, index: int = 7) -> dict[str, Any]:
        """A bundle `tlogEntries[]` item as protojson writes it: int64 as strings, logId in base64."""
        body_b64 = b64(body)
        return {
            "logIndex": str(index),
            "logId": {"keyId": b64(bytes.fromhex(self.log_id))},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": b64(self.set_over(body_b64, integrated, index))},
            "canonicalizedBody": body_b64,
        }


def new_rekor(directory: Path, name: str) -> LocalRekor:
    private = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"{name}.pub"
    path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return LocalRekor(private, path)


@pytest.fixture(scope="module")
def rekor(tmp_path_factory: pytest.TempPathFactory) -> LocalRekor:
    return new_rekor(tmp_path_factory.mktemp("rekor"), "rekor")


@pytest.fixture(scope="module")
def other_rekor(tmp_path_factory: pytest.TempPathFactory) -> LocalRekor:
    return new_rekor(tmp_path_factory.mktemp("rekor-other"), "other-rekor")


def rekor_keys(*logs: LocalRekor) -> RekorKeys:
    return RekorKeys.of([load_public_key(KeySpec(f"rekor{i}", str(log.pub_path))) for i, log in enumerate(logs)])


def pem_b64(key: TestKey) -> str:
    return b64(key.public_pem)


def hashedrekord_body(digest_hex: str, signature: bytes, key: TestKey) -> bytes:
    return json.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": digest_hex}},
                "signature": {"content": b64(signature), "publicKey": {"content": pem_b64(key)}},
            },
        }
    ).encode()


def dsse_body(payload: bytes, signature: bytes, key: TestKey, envelope_hash: str = "00" * 32) -> bytes:
    """Rekor v1's `dsse` entry: payload hash and the envelope's signatures with their verifiers."""
    return json.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": envelope_hash},
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                "signatures": [{"signature": b64(signature), "verifier": pem_b64(key)}],
            },
        }
    ).encode()


# ---- the real cosign fixture (public-good Rekor) ------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    manifest: bytes
    payload: bytes
    annotations: dict[str, str]
    key: PublicKey
    rekor: RekorKeys

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def signature(self) -> bytes:
        return base64.b64decode(self.annotations[SIGNATURE_ANNOTATION])

    @property
    def bundle(self) -> str:
        return self.annotations[BUNDLE_ANNOTATION]


@pytest.fixture(scope="module")
def fixture() -> Fixture:
    if not (REKOR_CASE / "signatures" / "1" / "annotations.json").is_file():
        pytest.skip(f"cosign interop fixtures not found at {FIXTURES} (shared test data, not part of the project)")
    layer = REKOR_CASE / "signatures" / "1"
    return Fixture(
        manifest=(REKOR_CASE / "manifest.json").read_bytes(),
        payload=(layer / "payload").read_bytes(),
        annotations=json.loads((layer / "annotations.json").read_text()),
        key=load_public_key(KeySpec("cosign2", str(FIXTURES / "keys" / "cosign2.pub"))),
        rekor=RekorKeys.of([load_public_key(KeySpec("public-good", str(FIXTURES / "keys" / "rekor.pub")))]),
    )


def with_bundle_payload(annotation: str, **changes: Any) -> str:
    document = json.loads(annotation)
    document["Payload"].update(changes)
    return json.dumps(document)


@needs_fixtures
def test_the_public_good_key_has_the_documented_log_id(fixture) -> None:
    assert set(fixture.rekor.by_log_id) == {PUBLIC_GOOD_LOG_ID}


@needs_fixtures
def test_the_fixture_set_proves_its_own_signature(fixture) -> None:
    assert check_legacy_tlog(fixture.bundle, fixture.payload, fixture.signature, fixture.key, fixture.rekor) is None


@needs_fixtures
def test_the_fixture_counts_with_tlog_required(fixture) -> None:
    check = check_legacy_signature(
        "layer 0", fixture.payload, fixture.annotations[SIGNATURE_ANNOTATION], [fixture.key], fixture.digest,
        Requirements(), rekor=fixture.rekor, rekor_bundle=fixture.bundle,
    )
    assert check.counts, check.problem
    assert check.keys == (fixture.key,)


@needs_fixtures
def test_a_genuine_set_next_to_another_payload_is_rejected(fixture) -> None:
    # The `valid` case: a real cosign signature by another key over another payload, with the
    # key-rekor-valid SET pasted next to it. The SET verifies; it is about something else.
    valid = FIXTURES / "valid"
    payload = (valid / "signatures" / "1" / "payload").read_bytes()
    annotations = json.loads((valid / "signatures" / "1" / "annotations.json").read_text())
    key = load_public_key(KeySpec("cosign", str(FIXTURES / "keys" / "cosign.pub")))
    check = check_legacy_signature(
        "layer 0", payload, annotations[SIGNATURE_ANNOTATION], [key], sha256_digest((valid / "manifest.json").read_bytes()),
        Requirements(), rekor=fixture.rekor, rekor_bundle=fixture.bundle,
    )
    assert not check.counts
    assert check.problem == "the transparency-log entry is for another payload"
    assert check.signed_by == ("cosign",)


@needs_fixtures
def test_a_genuine_set_next_to_another_signature_over_the_same_payload_is_rejected(fixture, keys) -> None:
    signer = keys["ecdsa-p256"]
    signature = signer.sign(fixture.payload)
    problem = check_legacy_tlog(fixture.bundle, fixture.payload, signature, public_key(signer), fixture.rekor)
    assert problem == "the transparency-log entry is for another signature or key"


@needs_fixtures
def test_the_fixture_set_from_an_untrusted_log_is_rejected(fixture, rekor) -> None:
    problem = check_legacy_tlog(fixture.bundle, fixture.payload, fixture.signature, fixture.key, rekor_keys(rekor))
    assert problem == f"its transparency-log entry is from log {PUBLIC_GOOD_LOG_ID[:16]}…, whose key is not trusted"


@needs_fixtures
def test_a_key_configured_under_the_public_good_log_id_must_still_verify_the_set(fixture, rekor) -> None:
    impostor = RekorKeys({PUBLIC_GOOD_LOG_ID: load_public_key(KeySpec("impostor", str(rekor.pub_path)))})
    problem = check_legacy_tlog(fixture.bundle, fixture.payload, fixture.signature, fixture.key, impostor)
    assert problem == "its signed entry timestamp does not verify with the Rekor key"


@needs_fixtures
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"integratedTime": 1674251860}, id="integrated-time"),
        pytest.param({"logIndex": 11608801}, id="log-index"),
    ],
)
def test_changing_a_signed_entry_field_breaks_the_set(fixture, changes) -> None:
    altered = with_bundle_payload(fixture.bundle, **changes)
    problem = check_legacy_tlog(altered, fixture.payload, fixture.signature, fixture.key, fixture.rekor)
    assert problem == "its signed entry timestamp does not verify with the Rekor key"


@needs_fixtures
def test_a_forged_body_breaks_the_set(fixture, keys) -> None:
    # Rewriting the body to name another signature would make _check_body pass: the SET must not.
    signer = keys["ecdsa-p256"]
    signature = signer.sign(fixture.payload)
    body = hashedrekord_body(hashlib.sha256(fixture.payload).hexdigest(), signature, signer)
    altered = with_bundle_payload(fixture.bundle, body=b64(body))
    problem = check_legacy_tlog(altered, fixture.payload, signature, public_key(signer), fixture.rekor)
    assert problem == "its signed entry timestamp does not verify with the Rekor key"


@needs_fixtures
@pytest.mark.parametrize(
    "annotation, problem",
    [
        pytest.param(None, "it carries no Rekor bundle (dev.sigstore.cosign/bundle), but the rule requires a transparency-log proof", id="absent"),
        pytest.param("", "it carries no Rekor bundle (dev.sigstore.cosign/bundle), but the rule requires a transparency-log proof", id="empty"),
        pytest.param("{not json", "its Rekor bundle is malformed", id="not-json"),
        pytest.param('{"SignedEntryTimestamp": "AAAA"}', "its Rekor bundle is malformed", id="no-payload"),
        pytest.param("[]", "its Rekor bundle is malformed", id="a-list"),
    ],
)
def test_a_missing_or_malformed_rekor_bundle_is_no_proof(fixture, annotation, problem) -> None:
    assert check_legacy_tlog(annotation, fixture.payload, fixture.signature, fixture.key, fixture.rekor) == problem


@needs_fixtures
def test_a_legacy_log_index_may_be_a_digit_string_but_nothing_else(fixture) -> None:
    altered = with_bundle_payload(fixture.bundle, logIndex="11608800")  # same value as a string: same SET
    assert check_legacy_tlog(altered, fixture.payload, fixture.signature, fixture.key, fixture.rekor) is None
    altered = with_bundle_payload(fixture.bundle, logIndex="-1")
    assert check_legacy_tlog(altered, fixture.payload, fixture.signature, fixture.key, fixture.rekor) == "its Rekor bundle is malformed"


@pytest.fixture
def memory_registry() -> Iterator[MemoryRegistry]:
    server = MemoryRegistry()
    yield server
    server.close()


def serve_fixture(mem: MemoryRegistry, fixture: Fixture, repo: str, annotations: dict[str, str]) -> str:
    """Serve the fixture as a registry would: the image under tag v1, its `.sig` manifest, the payload."""
    media_type = json.loads(fixture.manifest)["mediaType"]
    digest = mem.put_manifest(repo, fixture.manifest, media_type, tag="v1")
    config = b"{}"
    mem.put_blob(config)
    payload_digest = mem.put_blob(fixture.payload)
    sig_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": sha256_digest(config)},
            "layers": [{"mediaType": SIMPLESIGNING, "size": len(fixture.payload), "digest": payload_digest, "annotations": annotations}],
        }
    ).encode()
    mem.put_manifest(repo, sig_manifest, OCI_MANIFEST, tag=digest.replace(":", "-") + ".sig")
    mem.referrers_api = False
    return f"{mem.host}/{repo}:v1"


def fixture_config(mem: MemoryRegistry, tlog: str) -> dict[str, Any]:
    return config_data(
        [mem.host], {"cosign2": FIXTURES / "keys" / "cosign2.pub"}, {"tlog": tlog},
        rekorKeys={"public-good": str(FIXTURES / "keys" / "rekor.pub")},
    )


@needs_fixtures
def test_the_hook_admits_the_fixture_with_tlog_required(tmp_path, memory_registry, fixture) -> None:
    image = serve_fixture(memory_registry, fixture, "cosign-signed/key-1", fixture.annotations)
    run = admit(tmp_path, fixture_config(memory_registry, "required"), image)
    assert run.allowed, run.message
    assert run.decision_log["images"][0]["digest"] == fixture.digest


@needs_fixtures
@pytest.mark.parametrize("tlog, allowed", [("required", False), ("ignore", True)])
def test_the_hook_needs_the_proof_only_when_the_rule_requires_it(tmp_path, memory_registry, fixture, tlog, allowed) -> None:
    stripped = {SIGNATURE_ANNOTATION: fixture.annotations[SIGNATURE_ANNOTATION]}
    image = serve_fixture(memory_registry, fixture, "cosign-signed/key-1", stripped)
    run = admit(tmp_path, fixture_config(memory_registry, tlog), image)
    assert run.allowed is allowed, run.message
    if not allowed:
        assert "signature by key cosign2: it carries no Rekor bundle (dev.sigstore.cosign/bundle)" in run.message


# ---- legacy signatures with a local Rekor, against the real registry ------------------------------


def legacy_with_proof(http, repo: str, digest: str, key: TestKey, log: LocalRekor, signature_for_body: bytes | None = None):
    """Sign like cosign v2 with tlog upload: the layer carries the Rekor bundle of its signature
    (or, with `signature_for_body`, of another signature)."""
    payload = simple_signing_payload(f"{http.host}/{repo}", digest)
    signature = key.sign(payload)
    body = hashedrekord_body(hashlib.sha256(payload).hexdigest(), signature_for_body or signature, key)
    return sign_legacy(
        http, repo, digest, key, payload=payload, signature_override=signature,
        extra_layer_annotations={BUNDLE_ANNOTATION: log.legacy_annotation(body)},
    )


def rekor_config(http, key: TestKey, *logs: LocalRekor, tlog: str = "required") -> dict[str, Any]:
    return config_data([http.host], {"release": key}, {"tlog": tlog}, rekorKeys={f"log{i}": str(log.pub_path) for i, log in enumerate(logs)})


def test_a_legacy_signature_proven_by_a_trusted_log_is_admitted(tmp_path, http, repo, keys, rekor) -> None:
    image = push_image(http, repo, "v1")
    legacy_with_proof(http, repo, image.digest, keys["ecdsa-p256"], rekor)
    run = admit(tmp_path, rekor_config(http, keys["ecdsa-p256"], rekor), image.reference)
    assert run.allowed, run.message


def test_any_configured_rekor_key_may_prove(tmp_path, http, repo, keys, rekor, other_rekor) -> None:
    image = push_image(http, repo, "v1")
    legacy_with_proof(http, repo, image.digest, keys["ecdsa-p256"], rekor)
    run = admit(tmp_path, rekor_config(http, keys["ecdsa-p256"], other_rekor, rekor), image.reference)
    assert run.allowed, run.message


def test_a_proof_from_an_untrusted_log_is_denied(tmp_path, http, repo, keys, rekor, other_rekor) -> None:
    image = push_image(http, repo, "v1")
    legacy_with_proof(http, repo, image.digest, keys["ecdsa-p256"], rekor)
    run = admit(tmp_path, rekor_config(http, keys["ecdsa-p256"], other_rekor), image.reference)
    assert not run.allowed
    assert f"its transparency-log entry is from log {rekor.log_id[:16]}…, whose key is not trusted" in run.message


def test_a_proof_of_another_signature_by_the_same_key_is_denied(tmp_path, http, repo, keys, rekor) -> None:
    key = keys["ecdsa-p256"]
    image = push_image(http, repo, "v1")
    logged = key.sign(b"something else entirely")
    legacy_with_proof(http, repo, image.digest, key, rekor, signature_for_body=logged)
    run = admit(tmp_path, rekor_config(http, key, rekor), image.reference)
    assert not run.allowed
    assert "the transparency-log entry is for another signature or key" in run.message


@pytest.mark.parametrize("tlog, allowed", [("required", False), ("ignore", True)])
def test_a_legacy_signature_without_a_proof(tmp_path, http, repo, keys, rekor, tlog, allowed) -> None:
    image = push_image(http, repo, "v1")
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    run = admit(tmp_path, rekor_config(http, keys["ecdsa-p256"], rekor, tlog=tlog), image.reference)
    assert run.allowed is allowed, run.message
    if not allowed:
        assert "1 legacy signature found; none is valid: signature by key release: it carries no Rekor bundle" in run.message


def test_an_unproven_signature_does_not_count_towards_the_threshold(tmp_path, http, repo, keys, rekor) -> None:
    image = push_image(http, repo, "v1")
    ci, release = keys["ecdsa-p384"], keys["ecdsa-p256"]
    legacy_with_proof(http, repo, image.digest, release, rekor)
    sign_legacy(http, repo, image.digest, ci)  # valid signature, no proof
    data = config_data([http.host], {"release": release, "ci": ci}, {"tlog": "required", "threshold": 2}, rekorKeys={"log": str(rekor.pub_path)})
    run = admit(tmp_path, data, image.reference)
    assert not run.allowed
    assert "signed by 1 of the 2 required keys (verified by: release" in run.message


# ---- configuration ---------------------------------------------------------------------------------


def test_tlog_required_without_rekor_keys_is_a_configuration_error(tmp_path, keys) -> None:
    data = config_data(["127.0.0.1:9"], {"release": keys["ecdsa-p256"]}, {"tlog": "required"})
    completed = run_config(write_config(tmp_path, data))
    assert completed.returncode != 0
    assert "policy[0].tlog: is 'required', but no rekorKeys are configured to check the proofs with" in completed.stderr


def test_tlog_required_without_rekor_keys_is_refused_by_the_parser(keys) -> None:
    from signgate.config import build_config

    with pytest.raises(ConfigError, match=r"policy\[0\]\.tlog"):
        build_config(config_data(["127.0.0.1:9"], {"release": keys["ecdsa-p256"]}, {"tlog": "required"}), "c.json")


def test_an_unreadable_rekor_key_stops_startup(tmp_path, keys) -> None:
    data = config_data(["127.0.0.1:9"], {"release": keys["ecdsa-p256"]}, {"tlog": "required"}, rekorKeys={"public-good": str(tmp_path / "missing.pub")})
    completed = run_config(write_config(tmp_path, data))
    assert completed.returncode != 0
    assert "rekorKeys.public-good" in completed.stderr


def test_tlog_must_be_ignore_or_required(tmp_path, keys) -> None:
    data = config_data(["127.0.0.1:9"], {"release": keys["ecdsa-p256"]}, {"tlog": "optional"})
    completed = run_config(write_config(tmp_path, data))
    assert completed.returncode != 0 and "policy[0].tlog" in completed.stderr


# ---- sigstore bundles with tlogEntries --------------------------------------------------------------

DIGEST = "sha256:" + "5e" * 32


@dataclass(frozen=True)
class Signed:
    statement: bytes
    signature: bytes
    envelope: dict[str, Any]


def sign_statement(key: TestKey, digest: str = DIGEST) -> Signed:
    statement = in_toto_statement(digest)
    signature = key.sign(pae(INTOTO_PAYLOAD_TYPE, statement))
    return Signed(statement, signature, dsse_envelope(statement, INTOTO_PAYLOAD_TYPE, [signature]))


def bundle_with(key: TestKey, signed: Signed, entries: list[dict[str, Any]] | None) -> bytes:
    bundle = json.loads(sigstore_bundle(signed.envelope, key.hint))
    if entries is not None:
        bundle["verificationMaterial"]["tlogEntries"] = entries
    return json.dumps(bundle).encode()


def check(key: TestKey, bundle: bytes, rekor: RekorKeys | None, digest: str = DIGEST):
    return check_bundle("bundle", bundle, [public_key(key)], digest, Requirements(), rekor)


def test_a_dsse_entry_promised_by_a_trusted_log_proves_the_bundle(keys, rekor) -> None:
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    bundle = bundle_with(key, signed, [rekor.tlog_entry(dsse_body(signed.statement, signed.signature, key))])
    result = check(key, bundle, rekor_keys(rekor))
    assert result.counts, result.problem


def test_a_hashedrekord_entry_over_the_pae_also_proves_the_bundle(keys, rekor) -> None:
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    body = hashedrekord_body(hashlib.sha256(pae(INTOTO_PAYLOAD_TYPE, signed.statement)).hexdigest(), signed.signature, key)
    result = check(key, bundle_with(key, signed, [rekor.tlog_entry(body, kind="hashedrekord")]), rekor_keys(rekor))
    assert result.counts, result.problem


def test_one_proving_entry_among_several_suffices(keys, rekor, other_rekor) -> None:
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    body = dsse_body(signed.statement, signed.signature, key)
    entries = [other_rekor.tlog_entry(body), rekor.tlog_entry(body)]
    assert check(key, bundle_with(key, signed, entries), rekor_keys(rekor)).counts


def _entry_without_promise(log: LocalRekor, body: bytes) -> dict[str, Any]:
    entry = log.tlog_entry(body)
    del entry["inclusionPromise"]
    return entry


def _entry_with(log: LocalRekor, body: bytes, **fields: Any) -> dict[str, Any]:
    entry = log.tlog_entry(body)
    entry.update(fields)
    return entry


@pytest.mark.parametrize(
    "make_entries, problem",
    [
        pytest.param(lambda log, s, k: None, "it carries no transparency-log entry, but the rule requires one", id="no-tlog-entries"),
        pytest.param(lambda log, s, k: [], "it carries no transparency-log entry, but the rule requires one", id="empty-tlog-entries"),
        pytest.param(
            lambda log, s, k: [_entry_without_promise(log, dsse_body(s.statement, s.signature, k))],
            "its transparency-log entry has no inclusion promise",
            id="no-inclusion-promise",
        ),
        pytest.param(
            lambda log, s, k: [log.tlog_entry(dsse_body(s.statement, k.sign(b"another"), k))],
            "the transparency-log entry is for another signature or key",
            id="body-for-another-signature",
        ),
        pytest.param(
            lambda log, s, k: [log.tlog_entry(dsse_body(s.statement + b" ", s.signature, k))],
            "the transparency-log entry is for another payload",
            id="body-for-another-payload",
        ),
        pytest.param(
            lambda log, s, k: [_entry_with(log, dsse_body(s.statement, s.signature, k), integratedTime="1700000001")],
            "its signed entry timestamp does not verify with the Rekor key",
            id="integrated-time-changed-after-signing",
        ),
        pytest.param(
            lambda log, s, k: [_entry_with(log, dsse_body(s.statement, s.signature, k), logIndex="x")],
            "its transparency-log entry is malformed",
            id="log-index-not-an-integer",
        ),
    ],
)
def test_bundle_tlog_entries_that_prove_nothing(keys, rekor, make_entries, problem) -> None:
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    result = check(key, bundle_with(key, signed, make_entries(rekor, signed, key)), rekor_keys(rekor))
    assert not result.counts
    assert result.problem == problem
    assert result.signed_by == ("release",)  # the key did sign: only the proof is missing


def test_a_kind_label_that_differs_from_the_signed_body_is_refused(keys, rekor) -> None:
    # kindVersion sits outside the SET, so the signed body's own kind decides how it is read; a
    # label that says otherwise is an inconsistent bundle, refused as sigstore's clients refuse it
    # (and as `signgate sigstore verify-bundle` does, through the same check).
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    entry = rekor.tlog_entry(dsse_body(signed.statement, signed.signature, key), kind="intoto")
    result = check(key, bundle_with(key, signed, [entry]), rekor_keys(rekor))
    assert not result.counts
    assert result.problem == "its transparency-log entry's kindVersion does not match its body"
    entry = rekor.tlog_entry(dsse_body(signed.statement, signed.signature, key), kind="dsse")
    assert check(key, bundle_with(key, signed, [entry]), rekor_keys(rekor)).counts


def test_a_bundle_entry_from_an_untrusted_log_is_rejected(keys, rekor, other_rekor) -> None:
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    bundle = bundle_with(key, signed, [other_rekor.tlog_entry(dsse_body(signed.statement, signed.signature, key))])
    result = check(key, bundle, rekor_keys(rekor))
    assert result.problem == f"its transparency-log entry is from log {other_rekor.log_id[:16]}…, whose key is not trusted"


def test_an_unsupported_entry_kind_is_named(keys, rekor) -> None:
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    body = json.dumps({"apiVersion": "0.0.1", "kind": "rekord", "spec": {}}).encode()
    result = check(key, bundle_with(key, signed, [rekor.tlog_entry(body, kind="rekord")]), rekor_keys(rekor))
    assert result.problem == "its transparency-log entry kind 'rekord' 0.0.1 is not supported"


def test_a_malformed_tlog_entry_is_refused_even_unless_required(keys) -> None:
    # The typed bundle model (issue 15) refuses a bundle that breaks the format, as sigstore's
    # clients do, whether or not the rule needs its entries; the signer is still named.
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    bundle = bundle_with(key, signed, [{"logIndex": "garbage"}])
    result = check(key, bundle, None)
    assert not result.counts
    assert result.problem == "its transparency-log entry is malformed" and result.signed_by == ("release",)


def test_check_bundle_tlog_directly_names_the_missing_material(keys, rekor) -> None:
    key = keys["ecdsa-p256"]
    signed = sign_statement(key)
    problem = check_bundle_tlog((), signed.statement, signed.signature, public_key(key), rekor_keys(rekor))
    assert problem == "it carries no transparency-log entry, but the rule requires one"


@pytest.mark.parametrize("with_proof, allowed", [(True, True), (False, False)])
def test_the_hook_admits_a_bundle_only_with_its_proof(tmp_path, http, repo, keys, rekor, with_proof, allowed) -> None:
    key = keys["ecdsa-p256"]
    image = push_image(http, repo, "v1")
    signed = sign_statement(key, image.digest)
    entries = [rekor.tlog_entry(dsse_body(signed.statement, signed.signature, key))] if with_proof else None
    attach_bundle(http, repo, image, bundle_with(key, signed, entries))
    run = admit(tmp_path, rekor_config(http, key, rekor), image.reference)
    assert run.allowed is allowed, run.message
    if not allowed:
        assert "1 bundle found; none is valid: signature by key release: it carries no transparency-log entry" in run.message
