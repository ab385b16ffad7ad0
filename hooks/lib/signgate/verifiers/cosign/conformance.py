"""Verify one sigstore bundle for one artifact, offline, against a mounted trust root.

    verify_bundle(bundle, artifact, trust_root, policy) -> Verified   or raises BundleVerificationError

This is the function the cosign verifier can call for bundles once rules name identities and trust
roots (issue 16); `signgate sigstore verify-bundle` (the sigstore-conformance client protocol, see
`main`) is its command line, so the conformance suite checks the same code that would judge images.

Two policies, chosen by the bundle's verification material; one path of checks for both, all of
it signgate's own code on `cryptography` (plus `rfc3161-client` when the bundle carries a timestamp):

- **Key** (`KeyPolicy`, a bundle with `publicKey`): the signature must verify with the key.
- **Certificate** (`IdentityPolicy`, a bundle with a certificate or chain): the signature must verify
  with the leaf certificate's key, and the certificate is then judged by the cosign verifier's own
  certificate checks (certificates.py, the code that judges keyless image signatures in the hook):
  chain to a CA of the trust root at every verified signing time, SCT against its CT logs,
  codeSigning usage, subject and issuer. A certificate bundle must be logged, and needs at least
  one verified time (a signed entry timestamp, or an RFC 3161 timestamp for Rekor v2 entries).

For both: the signature (message signature or DSSE envelope) must be over this artifact; every
transparency-log entry the bundle carries must be from a log of the trust root, valid at the time,
and about this very signature and key or certificate; each inclusion proof (with its checkpoint)
and inclusion promise it carries is verified (transparency.py); RFC 3161 timestamps count when they
verify against the trust root's TSAs (timestamps.py).

Bundle media types are accepted only for known versions (v0.1-v0.3, both spellings of v0.3), as
sigstore's clients do: an unknown version may carry material this code would silently ignore.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence, TextIO

from .models import BUNDLE_MEDIA_TYPES, BundleFormatError
from .models import Bundle as TypedBundle
from .models import parse_bundle as parse_typed_bundle
from .dsse import INTOTO_PAYLOAD_TYPE, pae
from ...encoding import b64_strict
from ...errors import SigngateError
from ...keys import PublicKey, public_key_from_pem
from ...settings import IdentitySpec
from .certificates import (
    CertificateProblem,
    describe_problem,
    identity_of,
    leaf_public_key,
    load_leaf,
    match_identities,
    trust_from_root,
    verify_bundle_chain,
    verify_certificate,
)
from .entries import check_entry_body
from .rekor import CLOCK_SKEW  # how far ahead an integrated time may lie: one value for the hook and the command
from .timestamps import TimestampError, verify_timestamp
from .transparency import ProofError, verify_inclusion_proof, verify_signed_entry_timestamp
from .trust_root import TrustRoot, TrustRootError, load_trust_root

MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_TLOG_ENTRIES = 8
MAX_DSSE_SIGNATURES = 16


class Reason(enum.Enum):
    """Why a bundle was refused: stable names for metrics and for the cosign verifier's messages."""

    MALFORMED = "malformed-bundle"
    MEDIA_TYPE = "unknown-media-type"
    MATERIAL = "wrong-verification-material"
    SIGNATURE = "signature-invalid"
    ARTIFACT = "artifact-mismatch"
    TLOG_MISSING = "tlog-entry-missing"
    TLOG_UNTRUSTED = "tlog-untrusted"
    TLOG_MISMATCH = "tlog-entry-mismatch"
    TLOG_PROOF = "tlog-proof-invalid"
    TIMESTAMP = "timestamp-invalid"
    NO_TIME = "no-verified-time"
    CERTIFICATE = "certificate-invalid"
    IDENTITY = "identity-mismatch"
    TRUST_ROOT = "trust-root"


class BundleVerificationError(Exception):
    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Artifact:
    sha256: bytes | None
    data: bytes | None = None  # None when only the digest is known (`sha256:HEX`, an image digest)
    # In-toto subjects may name only a SHA-512 digest (npm attestations): `sha512:HEX` matches
    # those, and can never satisfy a message signature, which is over the SHA-256.
    sha512: bytes | None = None

    def describe(self) -> str:
        return f"sha256:{self.sha256.hex()}" if self.sha256 is not None else f"sha512:{(self.sha512 or b'').hex()}"


@dataclass(frozen=True)
class KeyPolicy:
    key: PublicKey


@dataclass(frozen=True)
class IdentityPolicy:
    """cosign's --certificate-identity and --certificate-oidc-issuer, matched exactly."""

    subject: str
    issuer: str


@dataclass(frozen=True)
class Bundle:
    document: dict[str, Any] = field(repr=False)
    raw: bytes = field(repr=False)
    version: tuple[int, int] = (0, 3)
    typed: TypedBundle | None = field(default=None, repr=False)  # bundle_model's view, checked when parsed


@dataclass(frozen=True)
class Verified:
    signer: str  # the key's name, or the certificate's subject
    times: tuple[tuple[str, datetime], ...]  # (source, verified time): "tlog" or "tsa"
    payload_type: str | None = None  # DSSE bundles: the verified payload type
    payload: bytes | None = None  # DSSE bundles: the verified payload


def _fail(reason: Reason, message: str) -> BundleVerificationError:
    return BundleVerificationError(reason, message)


# ---- parsing ------------------------------------------------------------------------------------


def parse_bundle(raw: bytes) -> Bundle:
    if len(raw) > MAX_BUNDLE_BYTES:
        raise _fail(Reason.MALFORMED, f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _fail(Reason.MALFORMED, "the bundle is not valid JSON") from None
    if not isinstance(document, dict):
        raise _fail(Reason.MALFORMED, "the bundle is not a JSON object")
    media_type = document.get("mediaType")
    version = BUNDLE_MEDIA_TYPES.get(media_type) if isinstance(media_type, str) else None
    if version is None:
        raise _fail(Reason.MEDIA_TYPE, f"the bundle's media type {_short(media_type)} is not a known sigstore bundle version (0.1 to 0.3)")
    if not isinstance(document.get("verificationMaterial"), dict):
        raise _fail(Reason.MALFORMED, "the bundle has no verificationMaterial")
    if (document.get("messageSignature") is None) == (document.get("dsseEnvelope") is None):
        raise _fail(Reason.MALFORMED, "the bundle must hold exactly one of messageSignature and dsseEnvelope")
    # The typed model's invariants (bundle_model.py, shared with the cosign verifier) hold too.
    try:
        typed = parse_typed_bundle(raw)
    except BundleFormatError as exc:
        raise _fail(Reason.MEDIA_TYPE if exc.version_unknown else Reason.MALFORMED, f"the bundle is malformed: {exc.message}") from None
    return Bundle(document, raw, version, typed)


def material_kind(bundle: Bundle) -> str:
    """"key" or "certificate": what the bundle says verifies it."""
    material = bundle.document["verificationMaterial"]
    present = [name for name in ("publicKey", "certificate", "x509CertificateChain") if material.get(name) is not None]
    if len(present) != 1:
        raise _fail(Reason.MALFORMED, "the bundle's verificationMaterial must hold exactly one of publicKey, certificate and x509CertificateChain")
    return "key" if present[0] == "publicKey" else "certificate"


# ---- verification -------------------------------------------------------------------------------


def verify_bundle(
    bundle: Bundle,
    artifact: Artifact,
    trust: TrustRoot,
    policy: KeyPolicy | IdentityPolicy,
    *,
    now: datetime | None = None,
    require_tlog: bool = True,
) -> Verified:
    """Verify `bundle` for `artifact`; raises BundleVerificationError naming the first failed check.

    `require_tlog` applies to key-signed bundles; a certificate bundle is always required to be
    logged (a short-lived certificate proves nothing without a verified time)."""
    kind = material_kind(bundle)
    now = now or datetime.now(timezone.utc)
    if isinstance(policy, KeyPolicy):
        if kind != "key":
            raise _fail(Reason.MATERIAL, "the bundle is signed with a certificate, but verification is by key")
        signer = _Signer(policy.key, f"key {policy.key.name}")
        content = _verify_content(bundle, artifact, signer)
        times = _verify_times(bundle, trust, content, signer, artifact, now, require_tlog)
        return Verified(policy.key.name, tuple(times), content.payload_type, content.payload)
    if kind != "certificate":
        raise _fail(Reason.MATERIAL, "the bundle is signed with a key, but a certificate identity is required")
    return _verify_certificate_bundle(bundle, artifact, trust, policy, now)


@dataclass(frozen=True)
class _Signer:
    """Who must have made the signature and be named in its log entries."""

    key: PublicKey  # a certificate's key carries the certificate: log entries must name it (entries.py)
    label: str  # "key NAME", "the certificate's key": for messages


@dataclass(frozen=True)
class _Content:
    signature: bytes
    payload_type: str | None = None  # DSSE bundles: the verified payload type and payload
    payload: bytes | None = None

    @property
    def signed_dsse(self) -> tuple[str, bytes] | None:
        return (self.payload_type, self.payload) if self.payload_type is not None and self.payload is not None else None


def _verify_content(bundle: Bundle, artifact: Artifact, signer: _Signer) -> _Content:
    """The signature verifies with the signer's key and is over this artifact."""
    document = bundle.document
    if document.get("messageSignature") is not None:
        return _Content(_verify_message_signature(document["messageSignature"], artifact, signer))
    payload_type, payload, signature = _verify_dsse(document["dsseEnvelope"], signer)
    _verify_statement(payload_type, payload, artifact)
    return _Content(signature, payload_type, payload)


def _verify_times(
    bundle: Bundle, trust: TrustRoot, content: _Content, signer: _Signer, artifact: Artifact, now: datetime, require_tlog: bool
) -> list[tuple[str, datetime]]:
    """Timestamps and log entries: the verified signing times, ("tsa" | "tlog", time)."""
    material = bundle.document["verificationMaterial"]
    times: list[tuple[str, datetime]] = [("tsa", when) for when in _verify_timestamps(bundle, content.signature, trust)]
    entries = material.get("tlogEntries") or []
    if not isinstance(entries, list):
        raise _fail(Reason.MALFORMED, "the bundle's tlogEntries is not a list")
    if len(entries) > MAX_TLOG_ENTRIES:
        raise _fail(Reason.MALFORMED, f"the bundle carries more than {MAX_TLOG_ENTRIES} transparency-log entries")
    if require_tlog and not entries:
        raise _fail(Reason.TLOG_MISSING, "the bundle carries no transparency-log entry")
    tsa_times = [when for _, when in times]
    for entry in entries:
        logged_at = _verify_tlog_entry(bundle, entry, trust, content, signer, artifact, tsa_times, now)
        if logged_at is not None:
            times.append(("tlog", logged_at))
    if require_tlog and not times:
        raise _fail(Reason.NO_TIME, "the bundle has neither a signed entry timestamp nor an RFC 3161 timestamp, so no verified signing time")
    return times


def _verify_certificate_bundle(bundle: Bundle, artifact: Artifact, trust: TrustRoot, policy: IdentityPolicy, now: datetime) -> Verified:
    """The hook's certificate checks (certificates.py) on a certificate-bearing bundle."""
    assert bundle.typed is not None  # parse_bundle always builds the typed view
    ders = bundle.typed.material.certificates
    try:
        leaf = load_leaf(ders[0])
        chain = [load_leaf(der) for der in ders[1:]]
        verify_bundle_chain(chain)
        found = identity_of(leaf)
        key = leaf_public_key(leaf)
    except CertificateProblem as exc:
        raise _fail(Reason.CERTIFICATE, f"the bundle's signature does not count: {exc}") from None
    except Exception as exc:  # cryptography parses extensions lazily: a hostile certificate fails here
        raise _fail(Reason.CERTIFICATE, f"the bundle's certificate cannot be read ({type(exc).__name__})") from None
    signer = _Signer(key, "the certificate's key")
    content = _verify_content(bundle, artifact, signer)
    times = _verify_times(bundle, trust, content, signer, artifact, now, require_tlog=True)
    certificate_trust = trust_from_root(trust.source, trust, ignore_sct=False)
    for source, when in times:
        label = "transparency-log integrated time" if source == "tlog" else "RFC 3161 timestamp"
        try:
            verify_certificate(leaf, chain, certificate_trust, when, label)
        except CertificateProblem as exc:
            raise _fail(Reason.CERTIFICATE, describe_problem(exc, found.describe())) from None
        except Exception as exc:  # as above: lazily parsed extensions of a hostile certificate
            raise _fail(Reason.CERTIFICATE, f"the bundle's certificate cannot be checked ({type(exc).__name__})") from None
    _, mismatch = match_identities(found, (IdentitySpec("identity", issuer=policy.issuer, subject=policy.subject),))
    if mismatch:
        raise _fail(Reason.IDENTITY, mismatch)
    return Verified(found.subject, tuple(times), content.payload_type, content.payload)


def _verify_message_signature(message: Any, artifact: Artifact, signer: _Signer) -> bytes:
    if not isinstance(message, dict):
        raise _fail(Reason.MALFORMED, "the bundle's messageSignature is malformed")
    signature = b64_strict(message.get("signature"))
    if signature is None:
        raise _fail(Reason.MALFORMED, "the bundle's signature is missing or not base64")
    digest = message.get("messageDigest")
    if digest is not None:
        if not isinstance(digest, dict) or digest.get("algorithm") != "SHA2_256" or b64_strict(digest.get("digest")) is None:
            raise _fail(Reason.MALFORMED, "the bundle's messageDigest is not a SHA2_256 digest")
        if b64_strict(digest["digest"]) != artifact.sha256:
            raise _fail(Reason.ARTIFACT, f"the bundle is for digest sha256:{b64_strict(digest['digest']).hex()}, not the artifact's {artifact.describe()}")  # type: ignore[union-attr]
    if artifact.sha256 is None:
        raise _fail(Reason.ARTIFACT, "a message signature is over the artifact's SHA-256, which was not given")
    if artifact.data is not None:
        valid = signer.key.signature_is_valid(signature, artifact.data)
    else:
        valid = _prehashed_signature_is_valid(signer.key, signature, artifact.sha256)
    if not valid:
        raise _fail(Reason.SIGNATURE, f"the signature does not verify for the artifact with {signer.label}")
    return signature


def _prehashed_signature_is_valid(key: PublicKey, signature: bytes, digest: bytes) -> bool:
    """A signature over SHA-256(artifact) checked from the digest alone (ECDSA and RSA; Ed25519 cannot)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    if "sha256" not in key.hash_algorithms:
        return False
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(key.key, ec.EllipticCurvePublicKey):
            key.key.verify(signature, digest, ec.ECDSA(prehashed))
            return True
        if isinstance(key.key, rsa.RSAPublicKey):
            key.key.verify(signature, digest, padding.PKCS1v15(), prehashed)
            return True
    except (InvalidSignature, ValueError, TypeError):
        return False
    return False


def _verify_dsse(envelope: Any, signer: _Signer) -> tuple[str, bytes, bytes]:
    if not isinstance(envelope, dict):
        raise _fail(Reason.MALFORMED, "the bundle's DSSE envelope is malformed")
    payload_type, payload, signatures = envelope.get("payloadType"), b64_strict(envelope.get("payload")), envelope.get("signatures")
    if not isinstance(payload_type, str) or payload is None:
        raise _fail(Reason.MALFORMED, "the bundle's DSSE envelope lacks a payloadType or a base64 payload")
    if not isinstance(signatures, list) or not signatures or len(signatures) > MAX_DSSE_SIGNATURES:
        raise _fail(Reason.MALFORMED, "the bundle's DSSE envelope has no signatures, or too many")
    signed = pae(payload_type, payload)
    for entry in signatures:
        signature = b64_strict(entry.get("sig")) if isinstance(entry, dict) else None
        if signature is not None and signer.key.signature_is_valid(signature, signed):
            return payload_type, payload, signature
    raise _fail(Reason.SIGNATURE, f"the DSSE signature does not verify with {signer.label}")


def _verify_statement(payload_type: str, payload: bytes, artifact: Artifact) -> None:
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise _fail(Reason.ARTIFACT, f"the DSSE payload type is {_short(payload_type)}, not {INTOTO_PAYLOAD_TYPE}")
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _fail(Reason.MALFORMED, "the DSSE payload is not a JSON in-toto statement") from None
    subjects = statement.get("subject") if isinstance(statement, dict) else None
    if not isinstance(subjects, list):
        raise _fail(Reason.MALFORMED, "the in-toto statement has no subject list")
    wanted = {name: digest.hex() for name, digest in (("sha256", artifact.sha256), ("sha512", artifact.sha512)) if digest is not None}
    for subject in subjects:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if isinstance(digests, dict) and any(
            isinstance(digests.get(name), str) and digests[name].lower() == value for name, value in wanted.items()
        ):
            return
    raise _fail(Reason.ARTIFACT, f"no subject of the in-toto statement has the artifact's digest {artifact.describe()}")


def _verify_tlog_entry(
    bundle: Bundle,
    entry: Any,
    trust: TrustRoot,
    content: _Content,
    signer: _Signer,
    artifact: Artifact,
    tsa_times: Sequence[datetime],
    now: datetime,
) -> datetime | None:
    """Verify one log entry fully; returns the integrated time its promise proves, if any."""
    if not isinstance(entry, dict):
        raise _fail(Reason.MALFORMED, "a transparency-log entry is malformed")
    log_id = b64_strict(entry["logId"].get("keyId")) if isinstance(entry.get("logId"), dict) else None
    body = b64_strict(entry.get("canonicalizedBody"))
    kind_version = entry.get("kindVersion")
    if log_id is None or body is None or not isinstance(kind_version, dict):
        raise _fail(Reason.MALFORMED, "a transparency-log entry lacks its logId, canonicalizedBody or kindVersion")
    log = trust.tlog(log_id)
    if log is None:
        raise _fail(Reason.TLOG_UNTRUSTED, f"the transparency-log entry is from log {log_id.hex()[:16]}…, which the trust root does not hold")
    _verify_entry_body(body, kind_version, content, signer, artifact)

    # protobuf JSON writes an absent message as null (sigstore-go's bundles do).
    has_promise, has_proof = entry.get("inclusionPromise") is not None, entry.get("inclusionProof") is not None
    # As sigstore's clients: v0.1 bundles predate inclusion proofs and must carry a promise;
    # later versions must carry a proof with a checkpoint (Rekor v2 entries have no promise at all).
    if bundle.version == (0, 1) and not has_promise:
        raise _fail(Reason.TLOG_MISSING, "the v0.1 bundle's transparency-log entry has no inclusion promise")
    if bundle.version >= (0, 2) and not has_proof:
        raise _fail(Reason.TLOG_MISSING, "the transparency-log entry has no inclusion proof")
    logged_at = None
    try:
        if has_promise:
            logged_at = verify_signed_entry_timestamp(entry, log)
        if has_proof:
            verify_inclusion_proof(entry["inclusionProof"], body, log, require_checkpoint=bundle.version >= (0, 2))
    except ProofError as exc:
        raise _fail(Reason.TLOG_PROOF, f"the transparency-log entry does not verify: {exc}") from None
    if logged_at is not None:
        if logged_at > now + CLOCK_SKEW:
            raise _fail(Reason.TLOG_PROOF, f"the transparency-log entry's integrated time {logged_at.isoformat()} is in the future")
        if not log.validity.contains(logged_at):
            raise _fail(Reason.TLOG_UNTRUSTED, f"the log's key was not valid at the entry's integrated time {logged_at.isoformat()}")
    else:
        # No promise (Rekor v2): the log key must have been valid at the verified timestamps.
        for when in tsa_times:
            if not log.validity.contains(when):
                raise _fail(Reason.TLOG_UNTRUSTED, f"the log's key was not valid at the signing time {when.isoformat()}")
    return logged_at


def _verify_entry_body(body: bytes, kind_version: dict[str, Any], content: _Content, signer: _Signer, artifact: Artifact) -> None:
    """The logged entry must be about this signature, made by this signer, over this artifact
    (entries.py, the hook's own check): a DSSE envelope is logged by its PAE or its payload, a
    message signature by the artifact's digest."""
    signed_dsse = content.signed_dsse
    digests = (hashlib.sha256(pae(*signed_dsse)).digest(),) if signed_dsse is not None else (artifact.sha256 or b"",)
    problem = check_entry_body(body, content.signature, signer.key, digests, signed_dsse,
                               (kind_version.get("kind"), kind_version.get("version")))
    if problem is not None:
        raise _fail(Reason.MALFORMED if problem.malformed else Reason.TLOG_MISMATCH, problem.message)


def _verify_timestamps(bundle: Bundle, signature: bytes, trust: TrustRoot) -> list[datetime]:
    """The times of the bundle's RFC 3161 timestamps that verify over the signature with a trusted TSA.

    The typed model has already refused malformed, excess and repeated timestamps. As sigstore-go
    and sigstore-python do, a timestamp that does not verify is not counted rather than refused: it
    proves nothing, and a time is required only when something depends on it (the caller asks for
    at least one verified time). A bundle stamped by a TSA the trust root lacks (the public-good
    snapshot in the tests has GitHub's TSA, not Sigstore's) still verifies by its signed entry
    timestamp.
    """
    assert bundle.typed is not None  # parse_bundle always builds the typed view
    times = []
    for raw in bundle.typed.material.timestamps:
        try:
            when = verify_timestamp(raw, signature, trust.timestamp_authorities)
        except TimestampError as exc:
            raise _fail(Reason.TIMESTAMP, f"a timestamp in the bundle {exc.detail}") from None
        if when is not None:
            times.append(when)
    return times


# ---- command line: the sigstore-conformance client protocol -------------------------------------

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`signgate sigstore verify-bundle --bundle B (--key K | --certificate-identity I
    --certificate-oidc-issuer O) [--trusted-root T] (FILE | sha256:HEX)`.

    Exit 0 exactly when the bundle verifies for the artifact; 1 with a one-line reason on stderr
    when it does not; 2 for usage errors and unreadable files. `argv` starts after `sigstore`.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(prog="signgate sigstore", description="Verify sigstore bundles offline.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify-bundle", help="verify a bundle for an artifact (the sigstore-conformance protocol)")
    verify.add_argument("--bundle", required=True, help="the sigstore bundle (JSON)")
    verify.add_argument("--key", help="PEM public key, for key-signed bundles")
    verify.add_argument("--certificate-identity", help="the certificate's expected subject (SAN)")
    verify.add_argument("--certificate-oidc-issuer", help="the certificate's expected OIDC issuer")
    verify.add_argument("--trusted-root", help="trusted_root.json (default: $SIGNGATE_TRUSTED_ROOT)")
    verify.add_argument("artifact", metavar="FILE|sha256:HEX", help="the artifact, or its digest (sha512:HEX matches in-toto subjects only)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE

    def usage(message: str) -> int:
        err.write(f"signgate sigstore verify-bundle: {message}\n")
        return EXIT_USAGE

    identity = args.certificate_identity, args.certificate_oidc_issuer
    if args.key and any(identity):
        return usage("give either --key or --certificate-identity with --certificate-oidc-issuer, not both")
    if not args.key and not all(identity):
        return usage("give --key, or both --certificate-identity and --certificate-oidc-issuer")
    import os

    root_path = args.trusted_root or os.environ.get("SIGNGATE_TRUSTED_ROOT")
    if not root_path:
        return usage("give --trusted-root (signgate never fetches a trust root)")
    try:
        raw_bundle = _read(args.bundle)
        algorithm, _, hex_digest = args.artifact.partition(":")
        if algorithm in ("sha256", "sha512") and hex_digest:
            size = 64 if algorithm == "sha256" else 128
            if len(hex_digest) != size or any(c not in "0123456789abcdefABCDEF" for c in hex_digest):
                return usage(f"{args.artifact[:80]} is not {algorithm}: and {size} hex digits")
            digest = bytes.fromhex(hex_digest)
            artifact = Artifact(digest) if algorithm == "sha256" else Artifact(None, sha512=digest)
        else:
            data = _read(args.artifact, limit=None)
            artifact = Artifact(hashlib.sha256(data).digest(), data, hashlib.sha512(data).digest())
        policy: KeyPolicy | IdentityPolicy
        if args.key:
            policy = KeyPolicy(public_key_from_pem("key", args.key, _read(args.key)))
        else:
            policy = IdentityPolicy(args.certificate_identity, args.certificate_oidc_issuer)
    except OSError as exc:
        return usage(f"cannot read {exc.filename}: {exc.strerror}")
    except SigngateError as exc:  # a key file that is not a usable public key: verification material
        err.write(f"FAIL ({Reason.MATERIAL.value}): {exc}\n")
        return EXIT_FAILED
    try:
        trust = load_trust_root(root_path)
        verified = verify_bundle(parse_bundle(raw_bundle), artifact, trust, policy)
    except TrustRootError as exc:
        err.write(f"FAIL ({Reason.TRUST_ROOT.value}): {exc}\n")
        return EXIT_FAILED
    except BundleVerificationError as exc:
        err.write(f"FAIL ({exc.reason.value}): {exc.message}\n")
        return EXIT_FAILED
    when = ", ".join(f"{source} {moment.isoformat()}" for source, moment in verified.times)
    out.write(f"OK: verified for {verified.signer}" + (f" (signed at: {when})" if when else "") + "\n")
    return EXIT_OK


def _read(path: str, limit: int | None = MAX_BUNDLE_BYTES) -> bytes:
    with open(path, "rb") as handle:
        return handle.read() if limit is None else handle.read(limit + 1)


# ---- helpers ------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
