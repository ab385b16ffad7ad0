"""RFC 3161 timestamps on certificate-bearing sigstore bundles, through the hook (issue 16, items 3-4).

test_keyless.py covers timestamps in the legacy layout (`dev.sigstore.cosign/rfc3161timestamp`);
this file covers cosign v3's bundle layout: a DSSE envelope over an in-toto statement, the leaf in
`verificationMaterial.certificate` or `x509CertificateChain`, and the timestamps in
`timestampVerificationData.rfc3161Timestamps[].signedTimestamp`, each over the DSSE signature.

What must hold, through the real hook against a real docker-registry:
- a timestamp that verifies with a TSA of the mounted trust root, valid (in the root) at the stamped
  time, gives the signing time: a leaf that has expired since is admitted when it was valid then;
- without a verified time (no timestamp, no SET) the leaf is checked at the current time, so an
  expired leaf is denied with a message naming the expiry; a Rekor v2 entry (proof and checkpoint,
  no SET) proves logging but gives no time, so it is the same without a timestamp;
- a timestamp from a TSA the root does not hold, over another signature, or outside the TSA's
  validity window in the root gives no verified time; one that verifies but falls after the leaf
  expired is a verified time the leaf fails;
- a timestamp is not a transparency proof: `tlog: required` still needs a SET or a Rekor v2 proof;
- malformed timestamps are clear denials naming container, image and cause, never a crash.

The TSA is OpenSSL's (tests/support/tsa.py); it stamps at the current time, so a leaf that is
valid at the stamp and expired at admission has to expire in between: the module fixture stamps
every such bundle first, then waits once for that leaf to expire (nothing is timed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from integration.test_keyless import GITHUB_ISSUER, WORKFLOW, admit, config
from support.fulcio import NOW, new_ct_log, new_fulcio, trusted_root
from support.oci import PushedImage, RegistryHTTP, push_image
from support.signer import BUNDLE_MEDIA_TYPE, INTOTO_PAYLOAD_TYPE, TestKey, attach_bundle, b64, dsse_envelope, in_toto_statement, pae
from support.tlog import TestLog, new_log
from support.tsa import TestTSA, new_tsa

pytestmark = pytest.mark.registry

SIGNED_BY = f"signed by {WORKFLOW} (issuer {GITHUB_ISSUER}), but "
NO_TIME = "(no verified time, so the current time)"
# A timestamp was there but proved nothing: the reader is told so, beside the fallback to now.
UNVERIFIED = "(its RFC 3161 timestamp did not verify with a TSA of trusted root test-good, no verified time, so the current time)"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The keys config() of test_keyless.py reads, with a trusted TSA, a TSA the root lacks, and
    copies of the root whose TSA entry is valid only before or only after the current time."""
    directory = tmp_path_factory.mktemp("tsa-pki")
    fulcio, ct = new_fulcio(), new_ct_log()
    log, log2 = new_log(directory, "rekor.test", "v1"), new_log(directory, "log2025-1.rekor.test", "v2")
    tsa = new_tsa(directory / "tsa")
    root_path = trusted_root(directory / "trusted_root.json", fulcio, [ct], [log, log2], [tsa])
    corp_chain, _ = new_fulcio("corp-ca").write(directory)
    document = json.loads(root_path.read_text())
    windows = {
        "retired": {"start": stamp_text(NOW - dt.timedelta(days=30)), "end": stamp_text(NOW - dt.timedelta(days=1))},
        "not-yet-valid": {"start": stamp_text(NOW + dt.timedelta(days=1))},
    }
    windowed = {}
    for name, window in windows.items():
        document["timestampAuthorities"][0]["validFor"] = window
        windowed[name] = directory / f"trusted_root-{name}.json"
        windowed[name].write_text(json.dumps(document, indent=1))
    return {
        "fulcio": fulcio, "ct": ct, "log": log, "log2": log2, "tsa": tsa, "stranger-tsa": new_tsa(directory / "stranger-tsa"),
        "root": root_path, "windowed": windowed, "corp-chain": corp_chain, "dir": directory,
    }


def stamp_text(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- bundles -------------------------------------------------------------------------------------


@dataclass
class Signed:
    """One image's cosign signature statement, signed once (ECDSA signatures are randomized, and a
    timestamp is over these very bytes) with a key certified by `leaf`."""

    image: PushedImage
    key: TestKey
    leaf: x509.Certificate
    intermediate: x509.Certificate
    statement: bytes
    signature: bytes

    @classmethod
    def of(cls, image: PushedImage, key: TestKey, leaf: x509.Certificate, pki: Mapping[str, Any]) -> "Signed":
        statement = in_toto_statement(image.digest)
        return cls(image, key, leaf, pki["fulcio"].intermediate, statement, key.sign(pae(INTOTO_PAYLOAD_TYPE, statement)))

    def rekor_v2_entry(self, log: TestLog) -> dict[str, Any]:
        """A Rekor v2 `dsse` 0.0.2 entry naming the leaf, as cosign v3 logs a keyless DSSE
        signature: an inclusion proof up to a signed checkpoint, no SET and no integrated time."""
        body = json.dumps({
            "apiVersion": "0.0.2", "kind": "dsse",
            "spec": {"dsseV002": {
                "payloadHash": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(self.statement).digest())},
                "signatures": [{"content": b64(self.signature), "verifier": {
                    "x509Certificate": {"rawBytes": b64(self.leaf.public_bytes(serialization.Encoding.DER))},
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}],
            }},
        }, sort_keys=True, separators=(",", ":")).encode()
        entry = log.entry(body, ("dsse", "0.0.2"))
        assert "inclusionPromise" not in entry and "integratedTime" not in entry and entry["inclusionProof"]["checkpoint"]
        return entry

    def rekor_v1_entry(self, log: TestLog, integrated: dt.datetime) -> dict[str, Any]:
        """A Rekor v1 `dsse` 0.0.1 entry with a SET over `integrated`."""
        leaf_pem = self.leaf.public_bytes(serialization.Encoding.PEM)
        body = json.dumps({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {"payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(self.statement).hexdigest()},
                     "signatures": [{"signature": b64(self.signature), "verifier": b64(leaf_pem)}]},
        }, sort_keys=True, separators=(",", ":")).encode()
        return log.entry(body, integrated=int(integrated.timestamp()))

    def bundle(self, stamps: list[Any] | None = None, entries: list[dict[str, Any]] | None = None, *, as_chain: bool = False,
               verification_data: Any = None) -> bytes:
        """The bundle as cosign v3 writes it; `stamps`: DER responses (bytes) or raw
        `signedTimestamp` values (str); `verification_data` replaces timestampVerificationData."""
        ders = [b64(c.public_bytes(serialization.Encoding.DER)) for c in (self.leaf, self.intermediate)]
        material: dict[str, Any] = (
            {"x509CertificateChain": {"certificates": [{"rawBytes": d} for d in ders]}} if as_chain else {"certificate": {"rawBytes": ders[0]}}
        )
        material["tlogEntries"] = entries or []
        if stamps is not None:
            material["timestampVerificationData"] = {
                "rfc3161Timestamps": [{"signedTimestamp": s if isinstance(s, str) else b64(s)} for s in stamps]
            }
        if verification_data is not None:
            material["timestampVerificationData"] = verification_data
        return json.dumps({
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": dsse_envelope(self.statement, INTOTO_PAYLOAD_TYPE, [self.signature]),
        }).encode()


def gen_time(response: bytes) -> dt.datetime:
    import rfc3161_client

    when = rfc3161_client.decode_timestamp_response(response).tst_info.gen_time
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def denial(image: PushedImage) -> str:
    """The start of the one denial line of a one-container Pod (see test_hook_registry.py)."""
    return f'container "c0" image "{image.reference}": 1 bundle found; none is valid: '


# ---- signatures stamped while their leaf was valid, admitted after it expired ---------------------


# One image per test that uses them: referrers accumulate, and each test judges its own bundle.
STAMPED = ("certificate", "chain", "rekor-v2", "rekor-v2-retired", "no-tlog", "retired", "not-yet-valid", "stranger-tsa", "other-signature")


@pytest.fixture(scope="module")
def stamped(registry: Any, keys: dict[str, TestKey], pki: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Signatures by one short-lived leaf, each stamped while it was valid: by a TSA the root lacks
    ("stranger-tsa"), by the trusted TSA over another signature of the same statement
    ("other-signature"), and by the trusted TSA over their own signature (the others). Returns
    {"leaf": the leaf, "key": its key, name: (Signed, stamp)} once the leaf has expired."""
    http = RegistryHTTP(registry)
    key = keys["ecdsa-p256"]
    images = {name: push_image(http, f"t/bundle-timestamps-{name}-{uuid.uuid4().hex[:8]}", "v1") for name in STAMPED}
    lifetime = dt.timedelta(seconds=3)
    while True:
        # The leaf must outlive the stamping; on a loaded machine the stamping may take longer
        # than its lifetime, and then it is issued again for twice as long.
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        leaf = pki["fulcio"].issue(key.public_key, ct_log=pki["ct"], not_before=now - dt.timedelta(minutes=1), not_after=now + lifetime)
        made = {}
        for name, image in images.items():
            signed = Signed.of(image, key, leaf, pki)
            if name == "stranger-tsa":
                stamp = pki["stranger-tsa"].stamp(signed.signature)
            elif name == "other-signature":
                # A genuine timestamp of the trusted TSA, but of another signature over the same statement.
                other = key.sign(pae(INTOTO_PAYLOAD_TYPE, signed.statement))
                assert other != signed.signature
                stamp = pki["tsa"].stamp(other)
            else:
                stamp = pki["tsa"].stamp(signed.signature)
            made[name] = (signed, stamp)
        if all(gen_time(stamp) <= leaf.not_valid_after_utc for _, stamp in made.values()):
            break
        lifetime *= 2
        assert lifetime <= dt.timedelta(minutes=2), "stamping eight signatures took more than a minute"
    while dt.datetime.now(dt.timezone.utc) <= leaf.not_valid_after_utc + dt.timedelta(seconds=1):
        time.sleep(0.25)
    yield {"leaf": leaf, "key": key, **made}
    http.close()


def expired(leaf: x509.Certificate) -> str:
    return f"the certificate expired {leaf.not_valid_after_utc.isoformat()}"


@pytest.mark.parametrize("name, as_chain", [("certificate", False), ("chain", True)], ids=["certificate", "x509CertificateChain"])
def test_a_verified_timestamp_within_the_leafs_validity_admits_a_bundle_whose_leaf_has_expired(
    tmp_path: Path, http: RegistryHTTP, pki: dict[str, Any], stamped: dict[str, Any], name: str, as_chain: bool
) -> None:
    signed, stamp = stamped[name]
    assert signed.leaf.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
    attach_bundle(http, signed.image.repo, signed.image, signed.bundle([stamp], as_chain=as_chain))
    run = admit(tmp_path, config(http, pki), signed.image)
    assert run.allowed, run.message


def test_the_same_expired_leaf_without_a_timestamp_or_set_is_checked_now_and_denied(
    tmp_path: Path, http: RegistryHTTP, repo: str, pki: dict[str, Any], stamped: dict[str, Any]
) -> None:
    signed = Signed.of(push_image(http, repo, "v1"), stamped["key"], stamped["leaf"], pki)
    attach_bundle(http, repo, signed.image, signed.bundle())
    run = admit(tmp_path, config(http, pki), signed.image)
    assert not run.allowed
    assert denial(signed.image) + SIGNED_BY + "its certificate does not chain to trusted root test-good at the signing time" in run.message
    assert NO_TIME + ": " + expired(stamped["leaf"]) in run.message


def test_a_rekor_v2_bundle_with_a_timestamp_is_admitted_under_tlog_required(
    tmp_path: Path, http: RegistryHTTP, pki: dict[str, Any], stamped: dict[str, Any]
) -> None:
    # Rekor v2 gives no integrated time: the proof satisfies `tlog: required`, the timestamp
    # gives the signing time at which the (since expired) leaf was valid.
    signed, stamp = stamped["rekor-v2"]
    attach_bundle(http, signed.image.repo, signed.image, signed.bundle([stamp], [signed.rekor_v2_entry(pki["log2"])], as_chain=True))
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), signed.image)
    assert run.allowed, run.message


def test_a_rekor_v2_proof_by_a_since_retired_log_key_counts_with_a_timestamp_inside_its_window(
    tmp_path: Path, http: RegistryHTTP, pki: dict[str, Any], stamped: dict[str, Any]
) -> None:
    # Sigstore retires a Rekor v2 shard's key by ending its window in the trust root; entries it
    # logged before then stay valid, and for a Rekor v2 entry only the RFC 3161 timestamp shows
    # when that was. Here the log key's window ends when the leaf expired, after the stamp.
    # Where rekor.py checks log keys' windows, this needs bundle.py to hand the bundle's verified
    # timestamps to check_bundle_tlog (its signing_times): without them the checkpoint is refused.
    signed, stamp = stamped["rekor-v2-retired"]
    document = json.loads(Path(pki["root"]).read_text())
    [v2_log] = [log for log in document["tlogs"] if log["logId"]["keyId"] == b64(pki["log2"].log_id)]
    v2_log["publicKey"]["validFor"] = {"start": stamp_text(NOW - dt.timedelta(days=30)), "end": stamp_text(stamped["leaf"].not_valid_after_utc)}
    retired = tmp_path / "trusted_root-v2-retired.json"
    retired.write_text(json.dumps(document))
    assert gen_time(stamp) <= stamped["leaf"].not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
    attach_bundle(http, signed.image.repo, signed.image, signed.bundle([stamp], [signed.rekor_v2_entry(pki["log2"])], as_chain=True))
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}, trustedRoots={"test-good": str(retired)}), signed.image)
    assert run.allowed, run.message


def test_a_rekor_v2_bundle_without_a_timestamp_checks_the_leaf_now(
    tmp_path: Path, http: RegistryHTTP, repo: str, pki: dict[str, Any], stamped: dict[str, Any]
) -> None:
    # The proof verifies (so `tlog: required` is met) but proves no time: the expired leaf is
    # checked at the current time and denied for its expiry, not for its log entry.
    signed = Signed.of(push_image(http, repo, "v1"), stamped["key"], stamped["leaf"], pki)
    attach_bundle(http, repo, signed.image, signed.bundle(None, [signed.rekor_v2_entry(pki["log2"])], as_chain=True))
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), signed.image)
    assert not run.allowed
    assert denial(signed.image) + SIGNED_BY + "its certificate does not chain" in run.message
    assert NO_TIME + ": " + expired(stamped["leaf"]) in run.message


def test_a_timestamp_is_not_a_transparency_proof(tmp_path: Path, http: RegistryHTTP, pki: dict[str, Any], stamped: dict[str, Any]) -> None:
    # `tlog: required` accepts a SET or a Rekor v2 proof; a verified timestamp alone is neither.
    signed, stamp = stamped["no-tlog"]
    attach_bundle(http, signed.image.repo, signed.image, signed.bundle([stamp], as_chain=True))
    assert admit(tmp_path, config(http, pki), signed.image).allowed
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), signed.image)
    assert not run.allowed
    assert denial(signed.image) + SIGNED_BY + "it carries no transparency-log entry, but the rule requires one" in run.message


@pytest.mark.parametrize("name", ["stranger-tsa", "other-signature"])
def test_a_forged_timestamp_gives_no_verified_time(
    tmp_path: Path, http: RegistryHTTP, pki: dict[str, Any], stamped: dict[str, Any], name: str
) -> None:
    # Stamped while the leaf was valid, but by a TSA the trust root does not hold, or (by the
    # trusted TSA) over another signature: it proves nothing about this one, so the expired leaf
    # is checked at the current time.
    signed, stamp = stamped[name]
    attach_bundle(http, signed.image.repo, signed.image, signed.bundle([stamp]))
    run = admit(tmp_path, config(http, pki), signed.image)
    assert not run.allowed
    assert denial(signed.image) + SIGNED_BY + "its certificate does not chain" in run.message
    assert UNVERIFIED + ": " + expired(stamped["leaf"]) in run.message


@pytest.mark.parametrize("window", ["retired", "not-yet-valid"])
def test_a_timestamp_outside_the_tsas_validity_in_the_trust_root_is_not_counted(
    tmp_path: Path, http: RegistryHTTP, pki: dict[str, Any], stamped: dict[str, Any], window: str
) -> None:
    # The same bundle the trusted root admits (first assertion), under a root whose entry for the
    # same TSA ended before the stamp, or starts after it.
    signed, stamp = stamped[window]
    attach_bundle(http, signed.image.repo, signed.image, signed.bundle([stamp]))
    assert admit(tmp_path, config(http, pki), signed.image).allowed
    run = admit(tmp_path, config(http, pki, trustedRoots={"test-good": str(pki["windowed"][window])}), signed.image)
    assert not run.allowed
    assert denial(signed.image) + SIGNED_BY + "its certificate does not chain" in run.message
    assert UNVERIFIED + ": " + expired(stamped["leaf"]) in run.message


# ---- verified times the leaf fails ------------------------------------------------------------------


def test_a_timestamp_after_the_leaf_expired_is_a_verified_time_it_fails_even_beside_a_set_within_it(
    tmp_path: Path, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], pki: dict[str, Any]
) -> None:
    # Every verified time must fall within the leaf's validity (as sigstore-go): a SET integrated
    # while the leaf was valid does not excuse a timestamp that proves the signature existed only
    # after the leaf expired.
    key = keys["ecdsa-p256"]
    start = NOW - dt.timedelta(days=2)
    leaf = pki["fulcio"].issue(key.public_key, ct_log=pki["ct"], not_before=start, not_after=start + dt.timedelta(minutes=10))
    set_only, both = (Signed.of(push_image(http, repo, tag), key, leaf, pki) for tag in ("v1", "v2"))
    integrated = start + dt.timedelta(minutes=3)
    attach_bundle(http, repo, set_only.image, set_only.bundle(None, [set_only.rekor_v1_entry(pki["log"], integrated)]))
    assert admit(tmp_path, config(http, pki), set_only.image).allowed
    attach_bundle(http, repo, both.image, both.bundle([pki["tsa"].stamp(both.signature)], [both.rekor_v1_entry(pki["log"], integrated)]))
    run = admit(tmp_path, config(http, pki), both.image)
    assert not run.allowed
    assert denial(both.image) + SIGNED_BY + "its certificate does not chain to trusted root test-good at the signing time" in run.message
    assert "(RFC 3161 timestamp): " + expired(leaf) in run.message


# ---- malformed timestamps ------------------------------------------------------------------------------


def _tsa_rejection(tsa: TestTSA, signature: bytes) -> bytes:
    """A TimeStampResp that OpenSSL's TSA returns for a request it refuses (a SHA-1 imprint its
    configuration does not accept): a status, no token."""
    import subprocess

    (tsa.directory / "data").write_bytes(signature)
    subprocess.run(["openssl", "ts", "-query", "-data", "data", "-sha1", "-no_nonce", "-out", "rejected.tsq"],
                   cwd=tsa.directory, check=True, capture_output=True)
    subprocess.run(["openssl", "ts", "-reply", "-config", "tsa.cnf", "-queryfile", "rejected.tsq", "-out", "rejected.tsr"],
                   cwd=tsa.directory, check=True, capture_output=True)
    return (tsa.directory / "rejected.tsr").read_bytes()


MALFORMED = {
    "not-der": (lambda signed, tsa: [b"not a DER TimeStampResp"], "a timestamp it carries is not an RFC 3161 response"),
    "truncated": (lambda signed, tsa: [tsa.stamp(signed.signature)[:-16]], "a timestamp it carries is not an RFC 3161 response"),
    "not-base64": (lambda signed, tsa: ["%%% not base64 %%%"], "a timestamp in the bundle is not base64"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_timestamp_is_a_clear_denial(
    tmp_path: Path, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], pki: dict[str, Any], case: str
) -> None:
    # A currently valid leaf: the timestamp is the only thing wrong with the bundle.
    key = keys["ecdsa-p256"]
    signed = Signed.of(push_image(http, repo, "v1"), key, pki["fulcio"].issue(key.public_key, ct_log=pki["ct"]), pki)
    stamps, expected = MALFORMED[case]
    attach_bundle(http, repo, signed.image, signed.bundle(stamps(signed, pki["tsa"])))
    run = admit(tmp_path, config(http, pki), signed.image)
    assert not run.allowed
    assert denial(signed.image) in run.message and expected in run.message, run.message


def test_a_tsa_refusal_in_place_of_a_timestamp_is_a_clear_denial(
    tmp_path: Path, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], pki: dict[str, Any]
) -> None:
    # A TimeStampResp whose status refuses the request carries no token and so no time: whether
    # it is refused as malformed or not counted (as sigstore-python, whose verifier requires the
    # GRANTED status), the leaf, expired two days ago, must be denied for the timestamp or for its
    # expiry, not blamed on its certificate.
    key = keys["ecdsa-p256"]
    start = NOW - dt.timedelta(days=2)
    leaf = pki["fulcio"].issue(key.public_key, ct_log=pki["ct"], not_before=start, not_after=start + dt.timedelta(minutes=10))
    signed = Signed.of(push_image(http, repo, "v1"), key, leaf, pki)
    attach_bundle(http, repo, signed.image, signed.bundle([_tsa_rejection(pki["tsa"], signed.signature)]))
    run = admit(tmp_path, config(http, pki), signed.image)
    assert not run.allowed
    assert denial(signed.image) + SIGNED_BY in run.message, run.message
    assert "a timestamp it carries is not an RFC 3161 response" in run.message, run.message


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"rfc3161Timestamps": {"signedTimestamp": "AAAA"}}, "its timestampVerificationData is malformed"),
        ({"rfc3161Timestamps": [{"signedTimestamp": "AAAA"}] * 33}, "holds more than 32 timestamps"),
        ("timestamps", "its timestampVerificationData is malformed"),
    ],
    ids=["not-a-list", "too-many", "not-an-object"],
)
def test_malformed_timestamp_verification_data_is_a_clear_denial(
    tmp_path: Path, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], pki: dict[str, Any], data: Any, expected: str
) -> None:
    key = keys["ecdsa-p256"]
    signed = Signed.of(push_image(http, repo, "v1"), key, pki["fulcio"].issue(key.public_key, ct_log=pki["ct"]), pki)
    attach_bundle(http, repo, signed.image, signed.bundle(verification_data=data))
    run = admit(tmp_path, config(http, pki), signed.image)
    assert not run.allowed
    assert denial(signed.image) in run.message and expected in run.message, run.message


def test_a_valid_leaf_with_a_verified_timestamp_is_admitted(
    tmp_path: Path, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], pki: dict[str, Any]
) -> None:
    # The counterpart of the malformed cases: the same bundle with a good timestamp passes.
    key = keys["ecdsa-p256"]
    signed = Signed.of(push_image(http, repo, "v1"), key, pki["fulcio"].issue(key.public_key, ct_log=pki["ct"]), pki)
    attach_bundle(http, repo, signed.image, signed.bundle([pki["tsa"].stamp(signed.signature)]))
    run = admit(tmp_path, config(http, pki), signed.image)
    assert run.allowed, run.message



def test_a_bundle_chain_carrying_its_own_root_is_denied(
    tmp_path: Path, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], pki: dict[str, Any]
) -> None:
    # A bundle's x509CertificateChain is the leaf and intermediates; the root comes from the trust
    # root. The same signature with the trusted root appended to its chain is refused, by name.
    key = keys["ecdsa-p256"]
    signed = Signed.of(push_image(http, repo, "v1"), key, pki["fulcio"].issue(key.public_key, ct_log=pki["ct"]), pki)
    document = json.loads(signed.bundle([pki["tsa"].stamp(signed.signature)], as_chain=True))
    root = b64(pki["fulcio"].root.public_bytes(serialization.Encoding.DER))
    document["verificationMaterial"]["x509CertificateChain"]["certificates"].append({"rawBytes": root})
    attach_bundle(http, repo, signed.image, json.dumps(document).encode())
    run = admit(tmp_path, config(http, pki), signed.image)
    assert not run.allowed
    assert denial(signed.image) + "its certificate chain carries a root certificate" in run.message, run.message
