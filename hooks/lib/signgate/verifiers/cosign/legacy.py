"""cosign signatures in the legacy layout: the `sha256-<hex>.sig` manifest.

Pure code: it works on manifests and payload bytes that the registry client has already fetched
and checked against their digests. What one signature layer must satisfy to count:

1. its mediaType is the simple-signing type (other attachments are ignored);
2. the `dev.cosignproject.cosign/signature` annotation verifies over the exact payload bytes with
   one of the rule's keys (the payload is never re-serialised);
3. only then is the payload trusted and parsed: `critical.image.docker-manifest-digest` must equal
   the digest the image resolves to, and `critical.type` must be the cosign signature type;
4. the rule's annotation requirements must equal the string values in `optional`;
5. with `checkIdentity`, `critical.identity.docker-reference` must name the image's repository;
6. with `tlog: required`, its `dev.sigstore.cosign/bundle` must prove this signature (rekor.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from ...encoding import b64_strict
from ...errors import InvalidReference
from ...keys import PublicKey
from ...media_types import DOCKER_MANIFEST, OCI_MANIFEST
from ...reference import parse_reference
from .certificates import (
    CertificateProblem,
    CertificateRule,
    check_signer,
    describe_problem,
    identity_of,
    identity_signer,
    leaf_public_key,
    load_pem_chain,
)
from .rekor import RekorKeys, check_legacy_tlog, legacy_integrated_time

SIMPLE_SIGNING_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
TIMESTAMP_ANNOTATION = "dev.sigstore.cosign/rfc3161timestamp"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
SIG_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)


def signature_tag(digest: str, suffix: str = "sig") -> str:
    """`sha256:abc` -> `sha256-abc.sig`: where cosign stores signatures for a digest."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}-{hex_part}.{suffix}" if suffix else f"{algorithm}-{hex_part}"


@dataclass(frozen=True)
class Requirements:
    """What a rule asks of a signature beyond a valid key signature over the right digest."""

    annotations: tuple[tuple[str, str], ...] = ()
    identity: str | None = None  # registry/repository that docker-reference must name
    insecure: frozenset[str] = frozenset()  # registries.insecure, to read docker-reference canonically


@dataclass(frozen=True)
class LayerDescriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str]


class DigestMismatch(str):
    """A claims problem that means the signature is for another digest than the image's.

    A str, so it reads as any other problem; its type is what flow.py classifies by.
    """


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome for one signature (a legacy layer or a bundle)."""

    layout: str  # "legacy" or "bundle"
    source: str  # where it came from, for messages
    keys: tuple[PublicKey, ...]  # keys whose check passed completely; empty when it does not count
    problem: str | None  # why it does not count (None when it counts)
    signed_by: tuple[str, ...] = ()  # key names whose signature verified, even if claims failed
    # The reason token of the error when the signature could not be fetched at all (a blob that
    # 404s, a referrer manifest that fails its digest check, ...); `problem` holds its message.
    error: str | None = None
    # "certificate" when the signer is a certificate: `signed_by` then holds what it says about its
    # holder, and `problem` is a whole sentence about it.
    signer_kind: str = "key"

    @property
    def counts(self) -> bool:
        return bool(self.keys)


def merge_checks(by_key: SignatureCheck, by_certificate: SignatureCheck) -> SignatureCheck:
    """One signature checked both ways (a rule with keys and identities): the signers of both count."""
    signers = by_key.keys + by_certificate.keys
    if signers:
        return replace(by_key, keys=signers, problem=None, signed_by=by_key.signed_by or by_certificate.signed_by)
    # Neither counts: report the check that got further (a key that verified, else the certificate).
    return by_key if by_key.signed_by else by_certificate


def check_legacy_certificate(
    source: str,
    payload: bytes,
    annotations: Mapping[str, str],
    image_digest: str,
    requirements: Requirements,
    certs: CertificateRule,
) -> SignatureCheck:
    """A legacy layer signed with a certificate (`dev.sigstore.cosign/certificate` and `/chain`,
    the SET in `dev.sigstore.cosign/bundle`), checked against the rule's identities."""

    def fail(problem: str, signed_by: tuple[str, ...] = ()) -> SignatureCheck:
        return SignatureCheck("legacy", source, (), problem, signed_by, signer_kind="certificate")

    signature = decode_signature(annotations.get(SIGNATURE_ANNOTATION))
    if signature is None:
        return fail("its signature annotation is missing or not base64")
    try:
        leaves = load_pem_chain(annotations.get(CERTIFICATE_ANNOTATION), "certificate annotation")
        if len(leaves) != 1:
            raise CertificateProblem("its certificate annotation must hold exactly one PEM certificate")
        leaf = leaves[0]
        chain = load_pem_chain(annotations.get(CHAIN_ANNOTATION), "certificate chain annotation")
        key = leaf_public_key(leaf)
        found = identity_of(leaf).describe()
    except CertificateProblem as exc:
        return fail(str(exc))
    if not key.signature_is_valid(signature, payload):
        return fail(f"its signature does not verify with its certificate's key (certificate of {found})")
    problem = check_simple_signing_claims(payload, image_digest, requirements)
    if problem:
        return fail(f"signed by {found}, but {problem}", (found,))
    set_times = []
    rekor_bundle = annotations.get(REKOR_BUNDLE_ANNOTATION)
    tlog_problem = check_legacy_tlog(rekor_bundle, payload, signature, key, certs.rekor)
    if tlog_problem is None and rekor_bundle:
        when = legacy_integrated_time(rekor_bundle)
        if when is not None:
            set_times.append(when)
    elif certs.require_tlog:
        return fail(f"signed by {found}, but {tlog_problem}", (found,))
    stamps = []
    stamp_annotation = annotations.get(TIMESTAMP_ANNOTATION)
    if stamp_annotation:
        try:
            stamp = b64_strict(json.loads(stamp_annotation)["SignedRFC3161Timestamp"])
        except (ValueError, KeyError, TypeError, RecursionError):
            stamp = None
        if stamp is None:
            return fail(f"signed by {found}, but its RFC 3161 timestamp annotation is malformed", (found,))
        stamps.append(stamp)
    try:
        names = check_signer(leaf, chain, signature, certs, set_times, stamps)
    except CertificateProblem as exc:
        return fail(describe_problem(exc, found), (found,))
    return SignatureCheck("legacy", source, tuple(identity_signer(n) for n in names), None, (found,), signer_kind="certificate")


def signature_layers(manifest: Any, max_layers: int) -> tuple[list[LayerDescriptor], int]:
    """The simple-signing layers of a `.sig` manifest, and how many other layers were skipped.

    Raises ValueError with a readable message when the manifest is not shaped like one.
    """
    if not isinstance(manifest, dict):
        raise ValueError("the signature manifest is not a JSON object")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ValueError("the signature manifest has no layers list")
    if len(layers) > max_layers:
        raise ValueError(f"the signature manifest has {len(layers)} layers, more than the limit of {max_layers}")
    found, skipped = [], 0
    for layer in layers:
        descriptor = _descriptor(layer)
        if descriptor is None or descriptor.media_type != SIMPLE_SIGNING_TYPE:
            skipped += 1
            continue
        found.append(descriptor)
    return found, skipped


def _descriptor(layer: Any) -> LayerDescriptor | None:
    if not isinstance(layer, dict):
        return None
    media_type, digest, size = layer.get("mediaType"), layer.get("digest"), layer.get("size")
    annotations = layer.get("annotations") or {}
    if not (isinstance(media_type, str) and isinstance(digest, str) and isinstance(size, int) and size >= 0):
        return None
    if not isinstance(annotations, dict):
        return None
    clean = {k: v for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str)}
    return LayerDescriptor(media_type, digest, size, clean)


def decode_signature(text: str | None) -> bytes | None:
    if not text:
        return None
    # Go's base64 decoder, which cosign uses, skips CR and LF: signatures wrapped at 76 columns
    # (as in the pki-rsa interop fixture) verify there, so they must here. Other stray
    # characters are still refused.
    compact = text.strip().replace("\r", "").replace("\n", "")
    return b64_strict(compact, allow_empty=True)


def check_legacy_signature(
    source: str,
    payload: bytes,
    signature_b64: str | None,
    keys: Sequence[PublicKey],
    image_digest: str,
    requirements: Requirements,
    rekor: RekorKeys | None = None,
    rekor_bundle: str | None = None,
) -> SignatureCheck:
    """Check one legacy signature layer. With `rekor`, its Rekor bundle must prove this signature."""
    signature = decode_signature(signature_b64)
    if signature is None:
        return SignatureCheck("legacy", source, (), "its signature annotation is missing or not base64")
    signers = tuple(key for key in keys if key.signature_is_valid(signature, payload))
    if not signers:
        return SignatureCheck("legacy", source, (), "it does not verify with the configured key(s)")
    names = tuple(key.name for key in signers)
    problem = check_simple_signing_claims(payload, image_digest, requirements)
    if problem:
        return SignatureCheck("legacy", source, (), problem, names)
    if rekor is not None:
        proven = tuple(k for k in signers if check_legacy_tlog(rekor_bundle, payload, signature, k, rekor) is None)
        if not proven:
            problem = check_legacy_tlog(rekor_bundle, payload, signature, signers[0], rekor)
            return SignatureCheck("legacy", source, (), problem, names)
        signers = proven
    return SignatureCheck("legacy", source, signers, None, names)


class PayloadError(ValueError):
    """A simple-signing payload that is not shaped as the format says; the message reads after "it"."""


@dataclass(frozen=True)
class SimpleSigningPayload:
    """A verified simple-signing payload, parsed once. Built only through `parse`, which checks
    the shape, so the claims checks work on typed fields.

    `type` and `docker_reference` are kept as written (any JSON value, or None when absent): the
    claims check compares them, and names a wrong value in its message.
    """

    manifest_digest: str  # critical.image.docker-manifest-digest
    type: Any  # critical.type
    docker_reference: Any  # critical.identity.docker-reference; None when there is no identity
    optional: Mapping[str, Any]  # the `optional` section; empty when absent or null

    @classmethod
    def parse(cls, payload: bytes) -> "SimpleSigningPayload":
        try:
            document = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
            raise PayloadError("its payload is not valid JSON") from None
        if not isinstance(document, dict):
            raise PayloadError("its payload is not a JSON object")
        critical = document.get("critical")
        if not isinstance(critical, dict):
            raise PayloadError("its payload has no 'critical' section")
        image = critical.get("image")
        if not isinstance(image, dict) or not isinstance(image.get("docker-manifest-digest"), str):
            raise PayloadError("its payload has no critical.image.docker-manifest-digest")
        identity = critical.get("identity", {})
        if identity is not None and not isinstance(identity, dict):
            raise PayloadError("its payload's critical.identity is not an object")
        optional = document.get("optional")
        if optional is not None and not isinstance(optional, dict):
            raise PayloadError("its payload's 'optional' section is not an object")
        return cls(
            manifest_digest=image["docker-manifest-digest"],
            type=critical.get("type"),
            docker_reference=(identity or {}).get("docker-reference"),  # `"identity": null` is accepted
            optional=optional or {},
        )


def check_simple_signing_claims(payload: bytes, image_digest: str, requirements: Requirements) -> str | None:
    """Check a verified payload's claims. Returns a problem, or None when they hold."""
    try:
        claims = SimpleSigningPayload.parse(payload)
    except PayloadError as exc:
        return str(exc)
    if claims.manifest_digest != image_digest:
        return DigestMismatch(f"the signature is for digest {claims.manifest_digest}, but the image resolves to {image_digest}")
    if claims.type != COSIGN_SIGNATURE_TYPE:
        return f"its payload type is {_short(claims.type)}, not {COSIGN_SIGNATURE_TYPE!r}"
    problem = check_annotations(claims.optional, requirements.annotations)
    if problem:
        return problem
    if requirements.identity is not None:
        problem = check_identity(claims.docker_reference, requirements.identity, requirements.insecure)
        if problem:
            return problem
    return None


def check_annotations(signed: Any, required: Iterable[tuple[str, str]]) -> str | None:
    if not isinstance(signed, dict):
        signed = {}
    for key, value in required:
        if key not in signed:
            return f"it lacks the required annotation {key}={value}"
        if signed[key] != value:  # cosign matches strings only: 1 != "1"
            return f"its annotation {key} is {_short(signed[key])}, but {value!r} is required"
    return None


def check_identity(reference: Any, expected_name: str, insecure: frozenset[str] = frozenset()) -> str | None:
    if not isinstance(reference, str):
        return "its payload names no docker-reference, but the rule checks the identity"
    try:
        # Canonical, as the image's own name is: `registry.example.com:443/app` names `registry.example.com/app`.
        signed = parse_reference(reference, insecure)
    except InvalidReference:
        return f"its docker-reference {_short(reference)} is not a valid image name"
    if signed.name != expected_name:
        return f"it was signed for {signed.name}, not for {expected_name}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
