"""cosign v3 signatures: sigstore bundles (v0.3) holding a DSSE envelope over an in-toto statement.

Pure code over bundle bytes already fetched and digest-checked. What one bundle must satisfy:

1. it is a sigstore bundle with a DSSE envelope (`messageSignature` bundles are what
   `cosign sign-blob` makes; cosign itself refuses them for images) whose payloadType is in-toto;
2. a DSSE signature verifies over the pre-authentication encoding (PAE) with one of the keys;
3. only then is the statement trusted and parsed: its predicateType must be cosign's signature
   type `https://sigstore.dev/cosign/sign/v1` (an attestation by the same key is not a signature,
   a check cosign itself does not make), and a subject must carry the image's sha256 digest;
4. the rule's annotations must equal string values in that subject's annotations;
5. every inclusion proof it carries must verify (path, root, checkpoint) and be about this very
   signature and key; with `tlog: required`, an inclusion promise (signed entry timestamp) or an
   inclusion proof up to a checkpoint signed by a configured Rekor key (Rekor v2) must prove it
   offline (see rekor.py).

Bundle media types are accepted for the known versions only (v0.1 to v0.3, both v0.3 spellings).

`checkIdentity` cannot be met by a bundle: the statement names no repository. A rule that sets it
therefore accepts only legacy signatures, and says so.
"""

from __future__ import annotations

from typing import Any, Sequence

from .models import (  # noqa: F401  (BUNDLE_MEDIA_TYPES, is_bundle_media_type re-exported)
    BUNDLE_MEDIA_TYPE_PREFIX,
    BUNDLE_MEDIA_TYPES,
    MAX_DSSE_SIGNATURES,
    STATEMENT_TYPES,
    BundleFormatError,
    DsseEnvelope,
    InTotoStatement,
    is_bundle_media_type,
    load_document,
    parse_bundle,
)
from .models import Bundle
from .certificates import (
    CertificateProblem,
    CertificateRule,
    check_signer,
    describe_problem,
    identity_of,
    identity_signer,
    leaf_public_key,
    load_leaf,
    timestamp_times,
    verify_bundle_chain,
)
from .legacy import DigestMismatch, Requirements, SignatureCheck, check_annotations, merge_checks
from .dsse import INTOTO_PAYLOAD_TYPE, pae  # noqa: F401  (re-exported)
from ...keys import PublicKey
from .rekor import RekorKeys, check_bundle_tlog, proven_integrated_times

COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


def check_bundle(
    source: str,
    data: bytes,
    keys: Sequence[PublicKey],
    image_digest: str,
    requirements: Requirements,
    rekor: RekorKeys | None = None,
    require_tlog: bool | None = None,
    certs: CertificateRule | None = None,
) -> SignatureCheck:
    """Check one bundle. `rekor`: the configured log keys; `require_tlog` (default: whether keys
    were given, as before) whether a transparency proof must count; `certs`: the rule's
    identities, for bundles signed with a certificate. Inclusion proofs are verified whenever the
    bundle carries them."""
    if require_tlog is None:
        require_tlog = rekor is not None
    format_problem: BundleFormatError | None = None
    try:
        bundle = parse_bundle(data)
        envelope = bundle.dsse
    except BundleFormatError as exc:
        if exc.part in ("document", "envelope") and not exc.version_unknown:
            return _fail(source, exc.message)
        if certs is not None and exc.part == "material":
            # A rule with identities: a broken chain or certificate is worth naming even though
            # no key can have signed it.
            return SignatureCheck("bundle", source, (), exc.message, signer_kind="certificate")
        # Only the media type version or the verification material is wrong: the envelope is
        # whole, so its signature is still checked, and the reader learns who signed it.
        format_problem = exc
        try:
            envelope = DsseEnvelope.parse(load_document(data).get("dsseEnvelope"))
        except BundleFormatError as envelope_problem:  # a message-signature bundle
            return _fail(source, envelope_problem.message)
    if envelope is None:
        return _fail(source, "the bundle does not contain a DSSE envelope")
    if format_problem is None and certs is not None and bundle.material.kind != "publicKey":
        by_certificate = _check_certificate_bundle(source, bundle, envelope, image_digest, requirements, certs)
        if not keys:
            return by_certificate
        return merge_checks(_check_with_keys(source, bundle, envelope, keys, image_digest, requirements, rekor, require_tlog), by_certificate)
    return _check_with_keys(source, bundle if format_problem is None else None, envelope, keys, image_digest, requirements, rekor, require_tlog, format_problem)


def _check_with_keys(
    source: str,
    bundle: Bundle | None,
    envelope: DsseEnvelope,
    keys: Sequence[PublicKey],
    image_digest: str,
    requirements: Requirements,
    rekor: RekorKeys | None,
    require_tlog: bool,
    format_problem: BundleFormatError | None = None,
) -> SignatureCheck:
    """The key path: a DSSE signature by one of `keys` (`bundle` is None only with a format problem)."""
    signed = pae(envelope.payload_type, envelope.payload)
    matches: list[tuple[PublicKey, bytes]] = []
    for signature in envelope.signatures:
        for key in keys:
            if key.signature_is_valid(signature, signed) and all(key is not k for k, _ in matches):
                matches.append((key, signature))
    if not matches:
        return _fail(source, "it does not verify with the configured key(s)")
    names = tuple(key.name for key, _ in matches)
    if format_problem is not None:
        return SignatureCheck("bundle", source, (), format_problem.message, names)
    # The type is checked after the signature: the PAE binds it, so a key that verifies really
    # signed this payload as this type, and the reader learns that rather than "wrong key".
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        problem = f"its DSSE payloadType is {_short(envelope.payload_type)}, not {INTOTO_PAYLOAD_TYPE}"
        return SignatureCheck("bundle", source, (), problem, names)

    problem = check_statement(envelope.payload, image_digest, requirements)
    if problem:
        return SignatureCheck("bundle", source, (), problem, names)
    assert bundle is not None
    valid = []
    last_problem = "it carries no transparency-log entry, but the rule requires one"
    for key, signature in matches:
        tlog_problem = check_bundle_tlog(bundle.material.tlog_entries, envelope.payload, signature, key, rekor, required=require_tlog)
        if tlog_problem is None:
            valid.append(key)
        else:
            last_problem = tlog_problem
    if not valid:
        return SignatureCheck("bundle", source, (), last_problem, names)
    return SignatureCheck("bundle", source, tuple(valid), None, names)


def _check_certificate_bundle(
    source: str, bundle: Bundle, envelope: DsseEnvelope, image_digest: str, requirements: Requirements, certs: CertificateRule
) -> SignatureCheck:
    """A bundle whose verificationMaterial is a certificate or chain, against the rule's identities."""

    def fail(problem: str, signed_by: tuple[str, ...] = ()) -> SignatureCheck:
        return SignatureCheck("bundle", source, (), problem, signed_by, signer_kind="certificate")

    try:
        leaf = load_leaf(bundle.material.certificates[0])
        chain = [load_leaf(der) for der in bundle.material.certificates[1:]]
        verify_bundle_chain(chain)
        key = leaf_public_key(leaf)
        found = identity_of(leaf).describe()
    except CertificateProblem as exc:
        return fail(str(exc))
    signed = pae(envelope.payload_type, envelope.payload)
    signature = next((s for s in envelope.signatures if key.signature_is_valid(s, signed)), None)
    if signature is None:
        return fail(f"its signature does not verify with its certificate's key (certificate of {found})")
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        return fail(f"signed by {found}, but its DSSE payloadType is {_short(envelope.payload_type)}, not {INTOTO_PAYLOAD_TYPE}", (found,))
    problem = check_statement(envelope.payload, image_digest, requirements)
    if problem:
        return fail(f"signed by {found}, but {problem}", (found,))
    entries = bundle.material.tlog_entries
    try:
        # Before the log entries: a Rekor v2 entry has no integrated time, so its checkpoint's key
        # must have been valid at the verified timestamps (rekor.py).
        stamp_times = timestamp_times(bundle.material.timestamps, signature, certs.trust)
    except CertificateProblem as exc:
        return fail(describe_problem(exc, found), (found,))
    tlog_problem = check_bundle_tlog(
        entries, envelope.payload, signature, key, certs.rekor, required=certs.require_tlog, signing_times=stamp_times
    )
    if tlog_problem:
        return fail(f"signed by {found}, but {tlog_problem}", (found,))
    set_times = proven_integrated_times(entries, envelope.payload, signature, key, certs.rekor)
    try:
        names = check_signer(leaf, chain, signature, certs, set_times, bundle.material.timestamps, stamp_times)
    except CertificateProblem as exc:
        return fail(describe_problem(exc, found), (found,))
    return SignatureCheck("bundle", source, tuple(identity_signer(n) for n in names), None, (found,), signer_kind="certificate")


def check_statement(payload: bytes, image_digest: str, requirements: Requirements) -> str | None:
    """Check a verified in-toto statement. Returns a problem, or None."""
    try:
        statement = InTotoStatement.parse(payload)
    except BundleFormatError as exc:
        return exc.message
    if statement.predicate_type != COSIGN_SIGN_PREDICATE:
        return f"it is an attestation (predicateType {_short(statement.predicate_type)}), not a signature"
    if not statement.has_subject_list:
        return "its statement has no subject list"
    algorithm, _, hex_digest = image_digest.partition(":")
    subject = next((s for s in statement.subjects if s.digests.get(algorithm) == hex_digest), None)
    if subject is None:
        named = [f"{algorithm}:{s.digests[algorithm]}" for s in statement.subjects if algorithm in s.digests]
        if named:
            return DigestMismatch(f"the signature is for digest {named[0]}, but the image resolves to {image_digest}")
        return f"its statement has no subject with the image digest {image_digest}"
    problem = check_annotations(subject.annotations, requirements.annotations)
    if problem:
        return problem
    if requirements.identity is not None:
        return "bundles name no repository, and the rule sets checkIdentity (only legacy signatures can meet it)"
    return None


def _fail(source: str, problem: str) -> SignatureCheck:
    return SignatureCheck("bundle", source, (), problem)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
