"""Typed models of a sigstore bundle (protobuf-specs `Bundle`, JSON form), its DSSE envelope and the
in-toto statement inside: parsed once, with their invariants checked when they are built.

Every refusal is a `BundleFormatError` whose message is written for the kubectl reader ("its DSSE
payload is missing or not base64"), and whose `part` says which model refused, so the cosign
verifier can still verify the envelope's signature when only the verification material is wrong
and tell the reader who signed it.

Invariants (as sigstore-python's `models.Bundle` and sigstore-go check them):
- `mediaType` is a known bundle version: v0.1, v0.2, v0.3 (`…bundle+json;version=0.N`) or the
  `…bundle.v0.3+json` form; an unknown version may carry material this code would silently ignore;
- exactly one of `messageSignature` and `dsseEnvelope`;
- `verificationMaterial` holds exactly one of `publicKey` (a hint), `certificate` and
  `x509CertificateChain` (1 to MAX_CHAIN certificates: a longer chain is refused, not truncated);
- `tlogEntries` are typed: log index, log id, kind and version, canonicalized body, and an optional
  inclusion promise (SET) and inclusion proof (path, root, size, checkpoint);
- `timestampVerificationData.rfc3161Timestamps` are base64 DER responses, at most MAX_TIMESTAMPS.

Byte fields are read with `encoding.b64_protobuf` (standard or URL-safe base64, as protobuf JSON
allows). Pure: no signature is checked here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .dsse import INTOTO_PAYLOAD_TYPE
from ...encoding import b64_protobuf as b64_strict  # protobuf JSON: standard or URL-safe base64
from ...encoding import protobuf_uint as _uint

BUNDLE_MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
BUNDLE_MEDIA_TYPES = {
    "application/vnd.dev.sigstore.bundle+json;version=0.1": (0, 1),
    "application/vnd.dev.sigstore.bundle+json;version=0.2": (0, 2),
    "application/vnd.dev.sigstore.bundle+json;version=0.3": (0, 3),
    "application/vnd.dev.sigstore.bundle.v0.3+json": (0, 3),
}
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
MAX_TLOG_ENTRIES = 8
MAX_TIMESTAMPS = 32  # sigstore-go's and sigstore-python's cap
MAX_DSSE_SIGNATURES = 16
MAX_CHAIN = 10  # Fulcio's chains are 2 or 3 certificates; a longer one is refused, never walked
MAX_PROOF_HASHES = 64

Part = Literal["document", "envelope", "material", "statement"]


class BundleFormatError(ValueError):
    """A bundle, envelope or statement that breaks an invariant of its format."""

    def __init__(self, message: str, part: Part = "document", version_unknown: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.part = part
        self.version_unknown = version_unknown


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---- DSSE envelope and in-toto statement ---------------------------------------------------------


@dataclass(frozen=True)
class DsseEnvelope:
    payload_type: str
    payload: bytes
    # Signatures whose `sig` decodes; entries that do not are skipped, as before (they cannot
    # verify), and the envelope must name at least one entry.
    signatures: tuple[bytes, ...]

    @classmethod
    def parse(cls, value: Any) -> "DsseEnvelope":
        if not isinstance(value, dict):
            raise BundleFormatError("the bundle does not contain a DSSE envelope", "envelope")
        payload_type = value.get("payloadType")
        if not isinstance(payload_type, str):
            raise BundleFormatError(f"its DSSE payloadType is {_short(payload_type)}, not {INTOTO_PAYLOAD_TYPE}", "envelope")
        payload = b64_strict(value.get("payload"))
        if payload is None:
            raise BundleFormatError("its DSSE payload is missing or not base64", "envelope")
        entries = value.get("signatures")
        if not isinstance(entries, list) or not entries:
            raise BundleFormatError("its DSSE envelope has no signatures", "envelope")
        signatures = []
        for entry in entries[:MAX_DSSE_SIGNATURES]:
            signature = b64_strict(entry.get("sig")) if isinstance(entry, dict) else None
            if signature is not None:
                signatures.append(signature)
        return cls(payload_type, payload, tuple(signatures))


@dataclass(frozen=True)
class Subject:
    digests: dict[str, str] = field(hash=False)  # algorithm -> hex, string values only
    annotations: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class InTotoStatement:
    statement_type: str
    predicate_type: Any  # checked by the verifier, which names what it found
    subjects: tuple[Subject, ...]  # those with a digest object; others cannot match anything
    has_subject_list: bool  # checked by the verifier after the predicate type (its order of messages)

    @classmethod
    def parse(cls, payload: bytes) -> "InTotoStatement":
        try:
            document = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
            raise BundleFormatError("its in-toto statement is not valid JSON", "statement") from None
        if not isinstance(document, dict):
            raise BundleFormatError("its in-toto statement is not a JSON object", "statement")
        if document.get("_type") not in STATEMENT_TYPES:
            raise BundleFormatError(f"its statement type {_short(document.get('_type'))} is not in-toto", "statement")
        subjects = document.get("subject")
        parsed = []
        if isinstance(subjects, list):
            for subject in subjects:
                if not isinstance(subject, dict) or not isinstance(subject.get("digest"), dict):
                    continue
                digests = {k: v for k, v in subject["digest"].items() if isinstance(k, str) and isinstance(v, str)}
                annotations = subject.get("annotations")
                parsed.append(Subject(digests, annotations if isinstance(annotations, dict) else {}))
        return cls(document["_type"], document.get("predicateType"), tuple(parsed), isinstance(subjects, list))


# ---- transparency-log entries --------------------------------------------------------------------


@dataclass(frozen=True)
class InclusionProof:
    log_index: int
    root_hash: bytes
    tree_size: int
    hashes: tuple[bytes, ...]
    checkpoint: str | None  # the signed note's text; None for v0.1 proofs that predate checkpoints
    raw: dict[str, Any] = field(repr=False, hash=False, compare=False)  # for transparency.py


@dataclass(frozen=True)
class TlogEntry:
    log_index: int
    log_id: bytes
    kind: str
    version: str
    integrated_time: int | None  # None: Rekor v2 entries carry none
    body: bytes  # the canonicalized body
    body_b64: str  # as carried: the SET signs this text
    signed_entry_timestamp: bytes | None  # the inclusion promise
    proof: InclusionProof | None

    @classmethod
    def parse(cls, value: Any) -> "TlogEntry":
        malformed = BundleFormatError("its transparency-log entry is malformed", "material")
        if not isinstance(value, dict):
            raise malformed
        log_id_field, kind_version = value.get("logId"), value.get("kindVersion")
        log_id = b64_strict(log_id_field.get("keyId")) if isinstance(log_id_field, dict) else None
        body_b64 = value.get("canonicalizedBody")
        body = b64_strict(body_b64)
        index = _uint(value.get("logIndex"))
        if log_id is None or body is None or index is None or not isinstance(kind_version, dict):
            raise malformed
        kind, version = kind_version.get("kind"), kind_version.get("version")
        if not isinstance(kind, str) or not isinstance(version, str):
            raise malformed
        integrated = None
        if value.get("integratedTime") is not None:
            integrated = _uint(value["integratedTime"])
            if integrated is None:
                raise malformed
        promise, set_bytes = value.get("inclusionPromise"), None
        if promise is not None:
            set_bytes = b64_strict(promise.get("signedEntryTimestamp")) if isinstance(promise, dict) else None
            if set_bytes is None or integrated is None:
                raise BundleFormatError("its signed entry timestamp is missing or not base64, or has no integrated time", "material")
        proof = None
        if value.get("inclusionProof") is not None:
            proof = _proof(value["inclusionProof"])
        return cls(index, log_id, kind, version, integrated, body, body_b64, set_bytes, proof)  # type: ignore[arg-type]


def _proof(value: Any) -> InclusionProof:
    malformed = BundleFormatError("its transparency-log inclusion proof is malformed", "material")
    if not isinstance(value, dict):
        raise malformed
    index, size, root = _uint(value.get("logIndex")), _uint(value.get("treeSize")), b64_strict(value.get("rootHash"))
    hashes = value.get("hashes", [])
    if index is None or size is None or root is None or not isinstance(hashes, list) or len(hashes) > MAX_PROOF_HASHES:
        raise malformed
    path = [b64_strict(h) if isinstance(h, str) else None for h in hashes]
    checkpoint_field = value.get("checkpoint")
    checkpoint = checkpoint_field.get("envelope") if isinstance(checkpoint_field, dict) else None
    if any(h is None for h in path) or (checkpoint_field is not None and not isinstance(checkpoint, str)):
        raise malformed
    return InclusionProof(index, root, size, tuple(path), checkpoint, value)  # type: ignore[arg-type]


# ---- verification material -----------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationMaterial:
    kind: Literal["publicKey", "certificate", "x509CertificateChain"]
    public_key_hint: str | None
    certificates: tuple[bytes, ...]  # DER, leaf first (one for `certificate`); empty for a key
    tlog_entries: tuple[TlogEntry, ...]
    timestamps: tuple[bytes, ...]  # DER RFC 3161 responses

    @property
    def leaf(self) -> bytes | None:
        return self.certificates[0] if self.certificates else None

    @classmethod
    def parse(cls, value: Any) -> "VerificationMaterial":
        if not isinstance(value, dict):
            raise BundleFormatError("the bundle has no verificationMaterial", "material")
        present = [name for name in ("publicKey", "certificate", "x509CertificateChain") if value.get(name) is not None]
        if len(present) != 1:
            raise BundleFormatError(
                "its verificationMaterial must hold exactly one of publicKey, certificate and x509CertificateChain", "material"
            )
        kind = present[0]
        hint, certificates = None, ()
        if kind == "publicKey":
            hint_value = value["publicKey"].get("hint") if isinstance(value["publicKey"], dict) else None
            hint = hint_value if isinstance(hint_value, str) else None
        elif kind == "certificate":
            der = b64_strict(value["certificate"].get("rawBytes")) if isinstance(value["certificate"], dict) else None
            if der is None:
                raise BundleFormatError("its certificate is missing or not base64", "material")
            certificates = (der,)
        else:
            chain = value["x509CertificateChain"]
            listed = chain.get("certificates") if isinstance(chain, dict) else None
            if not isinstance(listed, list) or not listed:
                raise BundleFormatError("its x509CertificateChain holds no certificates", "material")
            if len(listed) > MAX_CHAIN:
                raise BundleFormatError(f"its certificate chain has {len(listed)} certificates, more than the limit of {MAX_CHAIN}", "material")
            ders = [b64_strict(c.get("rawBytes")) if isinstance(c, dict) else None for c in listed]
            if any(der is None for der in ders):
                raise BundleFormatError("a certificate of its chain is not base64", "material")
            certificates = tuple(ders)  # type: ignore[arg-type]
        entries = value.get("tlogEntries") or []
        if not isinstance(entries, list):
            raise BundleFormatError("its transparency-log entry is malformed", "material")
        if len(entries) > MAX_TLOG_ENTRIES:
            raise BundleFormatError(f"it carries more than {MAX_TLOG_ENTRIES} transparency-log entries", "material")
        tlog_entries = tuple(TlogEntry.parse(entry) for entry in entries)
        return cls(kind, hint, certificates, tlog_entries, _timestamps(value.get("timestampVerificationData")))  # type: ignore[arg-type]


def _timestamps(value: Any) -> tuple[bytes, ...]:
    if value is None:
        return ()
    stamps = value.get("rfc3161Timestamps", []) if isinstance(value, dict) else None
    if not isinstance(stamps, list) or len(stamps) > MAX_TIMESTAMPS:
        raise BundleFormatError(f"its timestampVerificationData is malformed or holds more than {MAX_TIMESTAMPS} timestamps", "material")
    raws = [b64_strict(s.get("signedTimestamp")) if isinstance(s, dict) else None for s in stamps]
    if any(raw is None for raw in raws):
        raise BundleFormatError("a timestamp in the bundle is not base64", "material")
    if len(set(raws)) != len(raws):
        # One timestamp counted twice would pass for two independent witnesses (sigstore's clients refuse it too).
        raise BundleFormatError("the bundle carries the same timestamp twice", "material")
    return tuple(raws)  # type: ignore[arg-type]


# ---- the bundle ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageSignature:
    signature: bytes
    digest_algorithm: str | None
    digest: bytes | None


@dataclass(frozen=True)
class Bundle:
    media_type: str
    version: tuple[int, int]
    material: VerificationMaterial
    dsse: DsseEnvelope | None
    message: MessageSignature | None
    raw: bytes = field(repr=False)
    document: dict[str, Any] = field(repr=False, hash=False, compare=False)


def is_bundle_media_type(media_type: Any) -> bool:
    """Whether a layer or document claims to be a sigstore bundle (of any version)."""
    return isinstance(media_type, str) and media_type.startswith(BUNDLE_MEDIA_TYPE_PREFIX)


def load_document(raw: bytes) -> dict[str, Any]:
    """The bundle's JSON object, after the checks that make it a sigstore bundle at all."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        raise BundleFormatError("it is not valid JSON") from None
    if not isinstance(document, dict) or not is_bundle_media_type(document.get("mediaType")):
        raise BundleFormatError("it is not a sigstore bundle")
    return document


def parse_bundle(raw: bytes) -> Bundle:
    """The typed bundle; BundleFormatError naming the first broken invariant.

    Checked in the order the cosign verifier reports problems: the document, the DSSE envelope,
    then the media type version and the verification material.
    """
    document = load_document(raw)
    has_dsse, has_message = document.get("dsseEnvelope") is not None, document.get("messageSignature") is not None
    if has_dsse and has_message:
        raise BundleFormatError("the bundle must hold exactly one of messageSignature and dsseEnvelope")
    dsse = message = None
    if has_message:
        message = _message(document["messageSignature"])
    else:
        dsse = DsseEnvelope.parse(document.get("dsseEnvelope"))
    version = BUNDLE_MEDIA_TYPES.get(document["mediaType"])
    if version is None:
        raise BundleFormatError(
            f"its bundle media type {_short(document['mediaType'])} is not a known sigstore bundle version (0.1 to 0.3)",
            version_unknown=True,
        )
    material = VerificationMaterial.parse(document.get("verificationMaterial"))
    return Bundle(document["mediaType"], version, material, dsse, message, raw, document)


def _message(value: Any) -> MessageSignature:
    if not isinstance(value, dict):
        raise BundleFormatError("its messageSignature is malformed")
    signature = b64_strict(value.get("signature"))
    if signature is None:
        raise BundleFormatError("its message signature is missing or not base64")
    digest = value.get("messageDigest")
    if digest is None:
        return MessageSignature(signature, None, None)
    raw_digest = b64_strict(digest.get("digest")) if isinstance(digest, dict) else None
    if raw_digest is None or not isinstance(digest.get("algorithm"), str):
        raise BundleFormatError("its messageDigest is malformed")
    return MessageSignature(signature, digest["algorithm"], raw_digest)
