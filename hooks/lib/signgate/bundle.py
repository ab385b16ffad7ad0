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

import json
from typing import Any, Sequence

from .cosign import DigestMismatch, Requirements, SignatureCheck, check_annotations
from .dsse import INTOTO_PAYLOAD_TYPE, pae  # noqa: F401  (re-exported)
from .encoding import b64_protobuf
from .keys import PublicKey
from .rekor import RekorKeys, check_bundle_tlog

BUNDLE_MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
# The versions sigstore's clients accept, both spellings of v0.3; sigstore_verify.py uses the same.
BUNDLE_MEDIA_TYPES = {
    "application/vnd.dev.sigstore.bundle+json;version=0.1": (0, 1),
    "application/vnd.dev.sigstore.bundle+json;version=0.2": (0, 2),
    "application/vnd.dev.sigstore.bundle+json;version=0.3": (0, 3),
    "application/vnd.dev.sigstore.bundle.v0.3+json": (0, 3),
}
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
MAX_DSSE_SIGNATURES = 16


def is_bundle_media_type(media_type: Any) -> bool:
    return isinstance(media_type, str) and media_type.startswith(BUNDLE_MEDIA_TYPE_PREFIX)


def check_bundle(
    source: str,
    data: bytes,
    keys: Sequence[PublicKey],
    image_digest: str,
    requirements: Requirements,
    rekor: RekorKeys | None = None,
    require_tlog: bool | None = None,
) -> SignatureCheck:
    """Check one bundle. `rekor`: the configured log keys; `require_tlog` (default: whether keys
    were given, as before) whether a transparency proof must count. Inclusion proofs are verified
    whenever the bundle carries them."""
    if require_tlog is None:
        require_tlog = rekor is not None
    try:
        bundle = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        return _fail(source, "it is not valid JSON")
    if not isinstance(bundle, dict) or not is_bundle_media_type(bundle.get("mediaType")):
        return _fail(source, "it is not a sigstore bundle")
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        return _fail(source, "the bundle does not contain a DSSE envelope")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        return _fail(source, f"its DSSE payloadType is {_short(payload_type)}, not {INTOTO_PAYLOAD_TYPE}")
    payload = b64_protobuf(envelope.get("payload"))
    if payload is None:
        return _fail(source, "its DSSE payload is missing or not base64")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        return _fail(source, "its DSSE envelope has no signatures")

    signed = pae(payload_type, payload)
    matches: list[tuple[PublicKey, bytes]] = []
    for entry in signatures[:MAX_DSSE_SIGNATURES]:
        signature = b64_protobuf(entry.get("sig")) if isinstance(entry, dict) else None
        if signature is None:
            continue
        for key in keys:
            if key.verify(signature, signed) and all(key is not k for k, _ in matches):
                matches.append((key, signature))
    if not matches:
        return _fail(source, "it does not verify with the configured key(s)")
    names = tuple(key.name for key, _ in matches)
    if bundle["mediaType"] not in BUNDLE_MEDIA_TYPES:
        # Refused as sigstore's clients refuse it: an unknown version may carry material this
        # code would ignore. Checked after the signature, so the reader learns who signed it.
        problem = f"its bundle media type {_short(bundle['mediaType'])} is not a known sigstore bundle version (0.1 to 0.3)"
        return SignatureCheck("bundle", source, (), problem, names)
    # The type is checked after the signature: the PAE binds it, so a key that verifies really
    # signed this payload as this type, and the reader learns that rather than "wrong key".
    if payload_type != INTOTO_PAYLOAD_TYPE:
        problem = f"its DSSE payloadType is {_short(payload_type)}, not {INTOTO_PAYLOAD_TYPE}"
        return SignatureCheck("bundle", source, (), problem, names)

    problem = check_statement(payload, image_digest, requirements)
    if problem:
        return SignatureCheck("bundle", source, (), problem, names)
    valid = []
    last_problem = "it carries no transparency-log entry, but the rule requires one"
    for key, signature in matches:
        tlog_problem = check_bundle_tlog(bundle, payload, signature, key, rekor, required=require_tlog)
        if tlog_problem is None:
            valid.append(key)
        else:
            last_problem = tlog_problem
    if not valid:
        return SignatureCheck("bundle", source, (), last_problem, names)
    return SignatureCheck("bundle", source, tuple(valid), None, names)


def check_statement(payload: bytes, image_digest: str, requirements: Requirements) -> str | None:
    """Check a verified in-toto statement. Returns a problem, or None."""
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        return "its in-toto statement is not valid JSON"
    if not isinstance(statement, dict):
        return "its in-toto statement is not a JSON object"
    if statement.get("_type") not in STATEMENT_TYPES:
        return f"its statement type {_short(statement.get('_type'))} is not in-toto"
    predicate_type = statement.get("predicateType")
    if predicate_type != COSIGN_SIGN_PREDICATE:
        return f"it is an attestation (predicateType {_short(predicate_type)}), not a signature"
    algorithm, _, hex_digest = image_digest.partition(":")
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        return "its statement has no subject list"
    subject = next(
        (
            s
            for s in subjects
            if isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"].get(algorithm) == hex_digest
        ),
        None,
    )
    if subject is None:
        named = [
            f"{algorithm}:{s['digest'].get(algorithm)}"
            for s in subjects
            if isinstance(s, dict) and isinstance(s.get("digest"), dict) and isinstance(s["digest"].get(algorithm), str)
        ]
        if named:
            return DigestMismatch(f"the signature is for digest {named[0]}, but the image resolves to {image_digest}")
        return f"its statement has no subject with the image digest {image_digest}"
    problem = check_annotations(subject.get("annotations") or {}, requirements.annotations)
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
