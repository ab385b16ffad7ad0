"""Certificate signers (issue 16): Fulcio (keyless) and private-PKI certificates, checked offline.

A certificate-bearing signature counts for a rule's identity when, in this order:

1. the signature verifies with the leaf certificate's public key (the caller checks that, and the
   payload's claims, exactly as for keys);
2. the chain leads to a trusted CA (a `trustedRoots` entry's certificate authorities, or a
   `certificateAuthorities` PEM bundle) and every certificate is valid at the signing time.
   The signing time comes from a verified transparency-log integrated time (a SET from a trusted
   log) or a verified RFC 3161 timestamp, never from the signature itself; with neither, the
   chain is checked at the current time, as cosign does (so an expired leaf then fails);
3. an embedded SCT verifies with a CT log key of the trusted root, unless the rule waives it
   (`ignoreSct`, cosign's --insecure-ignore-sct, required for a PEM CA bundle: it has no CT logs);
4. the leaf has the codeSigning extended key usage;
5. its subject (SAN) and OIDC issuer (Fulcio's extension) match one of the rule's identities,
   and so do the GitHub Actions extensions an identity names.

The chain is built and checked by `cryptography`'s X.509 verifier (the one sigstore-python uses),
with the WebPKI profile's EKU rule relaxed to allow codeSigning, which is then required here.
The SCT's signed structure (RFC 6962 section 3.2) is rebuilt here from what `cryptography` exposes.
`signgate sigstore verify-bundle` (conformance.py) judges certificate bundles with these same
functions, so the sigstore conformance suite checks this code; sigstore-python serves only as an
independent oracle in the tests. Its Verifier is not used here: it accepts only certificate
*bundles* with a log entry and an exact identity, while the hook also checks legacy `.sig` layers,
PEM CA bundles, regular expressions and the GitHub extensions; and importing it costs ~0.5 s per
cold admission (docs/sigstore-evaluation.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Mapping, Sequence

from ...keys import PublicKey
from ...settings import IdentitySpec
from .timestamps import TimestampError, verify_timestamp
from .trust_root import Authority, TrustRoot

# Deferred imports: cryptography's x509 modules load when a certificate is checked, so rules with
# keys only never pay for them.

MAX_CHAIN = 10
_OID_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"  # DER UTF8String
_OID_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"  # raw bytes (deprecated, still in older certificates)
# (deprecated raw-string extension, its DER UTF8String successor), as cosign reads them.
_OID_GITHUB_TRIGGER = ("1.3.6.1.4.1.57264.1.2", "1.3.6.1.4.1.57264.1.20")
_OID_GITHUB_REPOSITORY = ("1.3.6.1.4.1.57264.1.5", None)
_OID_GITHUB_REF = ("1.3.6.1.4.1.57264.1.6", "1.3.6.1.4.1.57264.1.14")
_OID_OTHERNAME_SAN = "1.3.6.1.4.1.57264.1.7"


class CertificateProblem(Exception):
    """A certificate that does not make its signature count; the message is for the kubectl reader."""


class IdentityMismatch(CertificateProblem):
    """A valid certificate for someone else: the message already says who signed and who is required."""


@dataclass(frozen=True)
class CertificateTrust:
    """What a rule's certificates are checked against."""

    source: str  # "trusted root public-good", "certificate authority corp-ca"
    authorities: tuple[Authority, ...]  # CA chains (leaf-most first) with validity windows
    ct_logs: Mapping[bytes, PublicKey]  # CT log id -> key
    timestamp_authorities: tuple[Authority, ...]
    ignore_sct: bool


def trust_from_root(name: str, root: TrustRoot, ignore_sct: bool) -> CertificateTrust:
    return CertificateTrust(
        f"trusted root {name}",
        root.certificate_authorities,
        {log.log_id: log.key for log in root.ctlogs},
        root.timestamp_authorities,
        ignore_sct,
    )


def trust_from_pem(name: str, path: str, pem: bytes, ignore_sct: bool) -> CertificateTrust:
    """A PEM CA bundle: every certificate in it may anchor or complete a chain."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from .trust_root import Validity

    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateProblem(f"certificate authority {name} ({path}) is not a PEM certificate bundle: {exc}") from None
    if not certificates or len(certificates) > 64:
        raise CertificateProblem(f"certificate authority {name} ({path}) must hold 1 to 64 certificates")
    # Self-signed certificates anchor; the others only complete chains (as cosign's
    # --certificate-chain, whose last certificate is the root). A bundle without a self-signed
    # certificate pins what it holds: each of its certificates anchors.
    roots = [c for c in certificates if c.issuer == c.subject]
    others = tuple(c.public_bytes(Encoding.DER) for c in certificates if c.issuer != c.subject)
    if roots:
        authorities = tuple(
            Authority(path, others + (r.public_bytes(Encoding.DER),), Validity(r.not_valid_before_utc, r.not_valid_after_utc))
            for r in roots
        )
    else:
        authorities = tuple(
            Authority(path, (c.public_bytes(Encoding.DER),), Validity(c.not_valid_before_utc, c.not_valid_after_utc))
            for c in certificates
        )
    return CertificateTrust(f"certificate authority {name}", authorities, {}, (), ignore_sct)


@dataclass(frozen=True)
class Found:
    """What a certificate says about its holder, for matching and for messages."""

    subject: str
    issuer: str | None
    github: Mapping[str, str]

    def describe(self) -> str:
        return f"{self.subject} (issuer {self.issuer or 'none'})"


def load_leaf(der: bytes) -> Any:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise CertificateProblem("its certificate is malformed (not a DER X.509 certificate)") from None


def load_pem_chain(text: str | None, what: str) -> list[Any]:
    """Certificates of a PEM annotation (legacy layout); CertificateProblem when malformed or too long."""
    from cryptography import x509

    if not text:
        return []
    if text.count("BEGIN CERTIFICATE") > MAX_CHAIN:
        raise CertificateProblem(f"its {what} holds more than {MAX_CHAIN} certificates")
    try:
        return x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise CertificateProblem(f"its {what} is malformed (not PEM certificates)") from None


def leaf_public_key(leaf: Any) -> PublicKey:
    """The leaf's key as a signgate PublicKey, to verify the signature and match log entries."""
    from cryptography.hazmat.primitives import serialization

    from ...errors import SigngateError
    from ...keys import public_key_from_pem

    try:
        pem = leaf.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        key = public_key_from_pem("certificate", "certificate", pem)
        return replace(key, certificate_der=leaf.public_bytes(serialization.Encoding.DER))
    except SigngateError as exc:
        raise CertificateProblem(f"its certificate's key cannot verify signatures: {exc}") from None
    except Exception as exc:  # an unsupported or malformed key (cryptography's UnsupportedAlgorithm, ValueError)
        raise CertificateProblem(f"its certificate's key cannot be read ({type(exc).__name__})") from None


def identity_of(leaf: Any) -> Found:
    from cryptography import x509

    subject = ""
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        values = (
            names.get_values_for_type(x509.UniformResourceIdentifier)
            + names.get_values_for_type(x509.RFC822Name)
            + [_utf8(o.value) for o in names.get_values_for_type(x509.OtherName) if o.type_id.dotted_string == _OID_OTHERNAME_SAN]
        )
        subject = next((v for v in values if v), "")
    except (x509.ExtensionNotFound, ValueError):
        pass
    issuer = _extension_text(leaf, _OID_ISSUER_V2, der=True) or _extension_text(leaf, _OID_ISSUER_V1, der=False)
    github = {}
    for key, (legacy, current) in (("trigger", _OID_GITHUB_TRIGGER), ("repository", _OID_GITHUB_REPOSITORY), ("ref", _OID_GITHUB_REF)):
        value = _extension_text(leaf, legacy, der=False) or (_extension_text(leaf, current, der=True) if current else None)
        if value is not None:
            github[key] = value
    return Found(subject or "(no subject alternative name)", issuer, github)


def match_identities(found: Found, identities: Sequence[IdentitySpec]) -> tuple[list[str], str | None]:
    """(names of the identities that match, a message saying what was found against what was required)."""
    matched, required = [], []
    for identity in identities:
        problems = _mismatches(found, identity)
        if not problems:
            matched.append(identity.name)
        else:
            required.append(f"{identity.name}: {'; '.join(problems)}" if len(identities) > 1 else "; ".join(problems))
    if matched:
        return matched, None
    return [], f"signed by {found.describe()}, but the rule requires " + (required[0] if len(required) == 1 else " or ".join(required))


def _mismatches(found: Found, identity: IdentitySpec) -> list[str]:
    problems = []
    if identity.subject is not None and found.subject != identity.subject:
        problems.append(f"subject {identity.subject}")
    if identity.subject_regexp is not None and not re.search(identity.subject_regexp, found.subject):
        problems.append(f"subject matching {identity.subject_regexp}")
    issuer = found.issuer or ""
    if identity.issuer is not None and issuer != identity.issuer:
        problems.append(f"issuer {identity.issuer}")
    if identity.issuer_regexp is not None and not re.search(identity.issuer_regexp, issuer):
        problems.append(f"issuer matching {identity.issuer_regexp}")
    for key, wanted in (
        ("repository", identity.github_workflow_repository),
        ("ref", identity.github_workflow_ref),
        ("trigger", identity.github_workflow_trigger),
    ):
        if wanted is not None and found.github.get(key) != wanted:
            problems.append(f"GitHub workflow {key} {wanted} (the certificate has {found.github.get(key) or 'none'})")
    return problems


def verify_bundle_chain(chain: Sequence[Any]) -> None:
    """A sigstore bundle's x509CertificateChain holds the leaf and intermediates only: the trust
    anchor comes from the trust root, never from the signature (protobuf-specs' rule; sigstore's
    clients refuse such bundles). A self-signed certificate in it is refused rather than ignored."""
    for certificate in chain:
        try:
            self_signed = certificate.issuer == certificate.subject
        except Exception as exc:  # cryptography parses names lazily: a hostile certificate fails here
            raise CertificateProblem(f"its certificate chain holds a certificate whose names cannot be read ({type(exc).__name__})") from None
        if self_signed:
            raise CertificateProblem(
                f"its certificate chain carries a root certificate ({_text(certificate.subject.rfc4514_string().encode())}); "
                "a bundle must take its root from the trust root"
            )


def verify_certificate(leaf: Any, chain: Sequence[Any], trust: CertificateTrust, when: datetime, time_source: str) -> None:
    """Chain, validity at `when`, SCT and codeSigning usage; CertificateProblem naming what failed."""
    from cryptography import x509
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

    anchors, intermediates = [], list(chain)
    for authority in trust.authorities:
        if not authority.validity.contains(when):
            continue  # a CA outside its validity window in the trust root anchors nothing at that time
        try:
            certificates = [x509.load_der_x509_certificate(der) for der in authority.chain_der]
        except ValueError:
            continue
        anchors.append(certificates[-1])
        intermediates.extend(certificates[:-1])
    if not anchors:
        raise CertificateProblem(f"no certificate authority of {trust.source} is valid at the signing time {when.isoformat()} ({time_source})")
    # Client verifiers require the clientAuth EKU by default; signing certificates carry
    # codeSigning instead, which is required below, so only the EKU rule is relaxed.
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    verifier = (
        PolicyBuilder()
        .store(Store(anchors))
        .time(when)
        .max_chain_depth(MAX_CHAIN)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        built = verifier.verify(leaf, intermediates).chain
    except (VerificationError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        expired = leaf.not_valid_after_utc < when
        detail = f"the certificate expired {leaf.not_valid_after_utc.isoformat()}" if expired else reason
        raise CertificateProblem(
            f"its certificate does not chain to {trust.source} at the signing time {when.isoformat()} ({time_source}): {detail}"
        ) from None
    except Exception as exc:  # cryptography's UnsupportedGeneralNameType and other parser errors
        raise CertificateProblem(f"its certificate cannot be checked: {type(exc).__name__}") from None
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = []
    if x509.oid.ExtendedKeyUsageOID.CODE_SIGNING not in usages:
        raise CertificateProblem("its certificate lacks the codeSigning extended key usage")
    if not trust.ignore_sct:
        _verify_sct(leaf, built[1] if len(built) > 1 else None, trust)


def _verify_sct(leaf: Any, issuer: Any, trust: CertificateTrust) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    try:
        scts = list(leaf.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value)
    except x509.ExtensionNotFound:
        scts = []
    except ValueError:
        raise CertificateProblem("its certificate's SCT extension is malformed") from None
    if not scts:
        raise CertificateProblem("its certificate carries no SCT (certificate-transparency proof), and the rule does not waive it (ignoreSct)")
    if issuer is None:
        raise CertificateProblem("its certificate's SCT cannot be checked: the chain has no issuer")
    issuer_hash = hashlib.sha256(
        issuer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).digest()
    try:
        tbs = leaf.tbs_precertificate_bytes
    except ValueError:
        raise CertificateProblem("its certificate's SCT cannot be checked (no precertificate form)") from None
    for sct in scts:
        key = trust.ct_logs.get(sct.log_id)
        if key is None or not isinstance(sct.signature_hash_algorithm, hashes.SHA256):
            continue
        # RFC 6962 3.2 digitally-signed struct: version v1, certificate_timestamp, timestamp,
        # precert_entry, issuer_key_hash, the TBS without the SCT list, extensions.
        timestamp = int(sct.timestamp.timestamp() * 1000)
        extensions = sct.extension_bytes
        signed = (
            b"\x00\x00"
            + timestamp.to_bytes(8, "big")
            + b"\x00\x01"
            + issuer_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + len(extensions).to_bytes(2, "big")
            + extensions
        )
        if key.signature_is_valid(sct.signature, signed):
            return
    raise CertificateProblem(f"its certificate's SCT does not verify with a CT log key of {trust.source}")


def _extension_text(leaf: Any, oid: str | None, der: bool) -> str | None:
    from cryptography import x509

    if oid is None:
        return None
    try:
        value = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value
    except (x509.ExtensionNotFound, ValueError, AttributeError):
        return None
    return _utf8(value) if der else _text(value)


def _utf8(value: bytes) -> str:
    """A DER UTF8String's text (Fulcio's newer extensions and otherName SANs)."""
    if len(value) >= 2 and value[0] == 0x0C:
        length, offset = value[1], 2
        if length & 0x80:
            count = length & 0x7F
            length, offset = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
        return _text(value[offset : offset + length])
    return _text(value)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")[:300]


# ---- what a certificate rule carries into the layouts' checks ----------------------------------------


@dataclass(frozen=True)
class CertificateRule:
    identities: tuple[IdentitySpec, ...]
    trust: CertificateTrust
    rekor: Any  # rekor.RekorKeys: rekorKeys and the trusted root's logs, for SETs and proofs
    require_tlog: bool


def identity_signer(name: str) -> PublicKey:
    """An identity as a signer: counted once by name, however many certificates match it."""
    return PublicKey(name=name, path="identities", kind="identity", fingerprint=f"identity:{name}", hash_algorithms=(), key=None)


def timestamp_times(stamps: Sequence[bytes], signature: bytes, trust: CertificateTrust) -> list[datetime]:
    """The times of the RFC 3161 timestamps over `signature` that a TSA of the trust verified;
    CertificateProblem for a timestamp that cannot even be read. Verified before the log entries:
    a Rekor v2 entry has no integrated time, so its checkpoint's key must be valid at these."""
    times = []
    for raw in stamps:
        try:
            when = verify_timestamp(raw, signature, trust.timestamp_authorities)
        except TimestampError as exc:
            raise CertificateProblem(f"a timestamp it carries {exc.detail}") from None
        if when is not None:
            times.append(when)
    return times


def signing_times(set_times: Sequence[datetime], stamps: Sequence[bytes], signature: bytes, trust: CertificateTrust,
                  stamp_times: Sequence[datetime] | None = None) -> list[tuple[datetime, str]]:
    """The verified times to check the chain at: integrated times from verified SETs and verified
    RFC 3161 timestamps over the signature (`stamp_times` when the caller has verified them
    already); with none, the current time (as cosign)."""
    from datetime import timezone

    if stamp_times is None:
        stamp_times = timestamp_times(stamps, signature, trust)
    times = [(when, "transparency-log integrated time") for when in set_times]
    times.extend((when, "RFC 3161 timestamp") for when in stamp_times)
    if not times:
        # Say why a timestamp the signature carries did not count: that is what the reader will look for.
        if not stamps:
            unverified = ""
        elif not trust.timestamp_authorities:
            unverified = f"its RFC 3161 timestamp cannot be checked ({trust.source} names no timestamp authority), "
        else:
            unverified = f"its RFC 3161 timestamp did not verify with a TSA of {trust.source}, "
        times.append((datetime.now(timezone.utc), f"{unverified}no verified time, so the current time"))
    return times


def describe_problem(exc: CertificateProblem, found: str) -> str:
    """The denial text for a certificate signer's problem: who signed, then what failed."""
    return str(exc) if isinstance(exc, IdentityMismatch) else f"signed by {found}, but {exc}"


def check_signer(leaf: Any, chain: Sequence[Any], signature: bytes, rule: CertificateRule, set_times: Sequence[datetime], stamps: Sequence[bytes],
                 stamp_times: Sequence[datetime] | None = None) -> list[str]:
    """Steps 2 to 5 for a leaf whose signature verified; the matching identity names, or CertificateProblem."""
    try:
        for when, source in signing_times(set_times, stamps, signature, rule.trust, stamp_times):
            verify_certificate(leaf, chain, rule.trust, when, source)
    except CertificateProblem:
        raise
    except Exception as exc:  # cryptography parses extensions lazily: a hostile certificate fails here, never the hook
        raise CertificateProblem(f"its certificate cannot be checked ({type(exc).__name__})") from None
    names, mismatch = match_identities(identity_of(leaf), rule.identities)
    if mismatch:
        raise IdentityMismatch(mismatch)
    return names
