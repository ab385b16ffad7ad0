"""Offline Rekor proofs: a signed entry timestamp (SET) checked with a mounted Rekor public key.

signgate never contacts Rekor. A rule with `tlog: required` accepts a signature only when it
carries a promise of inclusion signed by a trusted Rekor key, and that promise is about this very
signature: the logged entry's signature, public key and payload hash must be the ones just
verified. Otherwise a valid SET for some other entry could be pasted next to any signature.

Two carriers:
- legacy layout: the `dev.sigstore.cosign/bundle` layer annotation,
  `{"SignedEntryTimestamp": b64, "Payload": {"body", "integratedTime", "logIndex", "logID"}}`;
- sigstore bundle: `verificationMaterial.tlogEntries[]` with `inclusionPromise.signedEntryTimestamp`
  and `canonicalizedBody` (int64 fields as JSON strings, `logId.keyId` in base64).

The SET signs the canonical JSON (keys sorted, no white space) of
`{"body", "integratedTime", "logID", "logIndex"}` with ECDSA-SHA256; the Rekor key is chosen by
logID = hex sha256 of its DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from .dsse import INTOTO_PAYLOAD_TYPE, pae
from .encoding import b64_strict
from .keys import PublicKey

MAX_TLOG_ENTRIES = 8


@dataclass(frozen=True)
class RekorKeys:
    by_log_id: Mapping[str, PublicKey]  # hex log id -> key

    @classmethod
    def of(cls, keys: list[PublicKey]) -> "RekorKeys":
        return cls({key.fingerprint: key for key in keys})


def check_legacy_tlog(annotation: str | None, payload: bytes, signature: bytes, key: PublicKey, rekor: RekorKeys) -> str | None:
    """Problem with the legacy layer's Rekor bundle, or None when it proves this signature."""
    if not annotation:
        return "it carries no Rekor bundle (dev.sigstore.cosign/bundle), but the rule requires a transparency-log proof"
    try:
        document = json.loads(annotation)
        set_bytes = b64_strict(document["SignedEntryTimestamp"])
        entry = document["Payload"]
        body_b64, integrated, index, log_id = entry["body"], entry["integratedTime"], entry["logIndex"], entry["logID"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return "its Rekor bundle is malformed"
    if not (isinstance(body_b64, str) and _is_int(integrated) and _is_int(index) and isinstance(log_id, str)):
        return "its Rekor bundle is malformed"
    problem = _check_set(rekor, log_id, body_b64, integrated, index, set_bytes)
    if problem:
        return problem
    return _check_body(b64_strict(body_b64), payload, signature, key, pae_payload=None)


def check_bundle_tlog(bundle: Mapping[str, Any], payload: bytes, signature: bytes, key: PublicKey, rekor: RekorKeys) -> str | None:
    """Problem with a sigstore bundle's tlog entries, or None when one proves this signature."""
    material = bundle.get("verificationMaterial")
    entries = material.get("tlogEntries") if isinstance(material, dict) else None
    if not isinstance(entries, list) or not entries:
        return "it carries no transparency-log entry, but the rule requires one"
    problem = "its transparency-log entry has no inclusion promise"
    for entry in entries[:MAX_TLOG_ENTRIES]:
        if not isinstance(entry, dict):
            continue
        promise = entry.get("inclusionPromise")
        body_b64 = entry.get("canonicalizedBody")
        log_id = entry.get("logId", {}).get("keyId") if isinstance(entry.get("logId"), dict) else None
        integrated, index = entry.get("integratedTime"), entry.get("logIndex")
        if not isinstance(promise, dict) or not isinstance(body_b64, str) or not isinstance(log_id, str):
            continue
        log_id_bytes = b64_strict(log_id)
        if log_id_bytes is None or not _is_int(integrated) or not _is_int(index):
            problem = "its transparency-log entry is malformed"
            continue
        problem = _check_set(
            rekor, log_id_bytes.hex(), body_b64, int(integrated), int(index), b64_strict(promise.get("signedEntryTimestamp"))
        ) or _check_body(b64_strict(body_b64), payload, signature, key, pae_payload=pae(INTOTO_PAYLOAD_TYPE, payload))
        if problem is None:
            return None
    return problem


def _check_set(rekor: RekorKeys, log_id: str, body_b64: str, integrated: Any, index: Any, set_bytes: bytes | None) -> str | None:
    rekor_key = rekor.by_log_id.get(log_id.lower())
    if rekor_key is None:
        return f"its transparency-log entry is from log {log_id[:16]}…, whose key is not trusted"
    if set_bytes is None:
        return "its signed entry timestamp is missing or not base64"
    canonical = json.dumps(
        {"body": body_b64, "integratedTime": int(integrated), "logID": log_id.lower(), "logIndex": int(index)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if not rekor_key.verify(set_bytes, canonical):
        return "its signed entry timestamp does not verify with the Rekor key"
    return None


def _check_body(body: bytes | None, payload: bytes, signature: bytes, key: PublicKey, pae_payload: bytes | None) -> str | None:
    """The logged entry must be about this signature, this key and this payload."""
    if body is None:
        return "its transparency-log entry body is not base64"
    try:
        entry = json.loads(body)
        kind, spec = entry["kind"], entry["spec"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        return "its transparency-log entry body is malformed"
    try:
        if kind == "hashedrekord":
            logged_hash = spec["data"]["hash"]
            if logged_hash.get("algorithm") != "sha256":
                return "its transparency-log entry uses an unsupported hash"
            expected = {hashlib.sha256(payload).hexdigest()}
            if pae_payload is not None:
                expected.add(hashlib.sha256(pae_payload).hexdigest())
            if logged_hash.get("value") not in expected:
                return "the transparency-log entry is for another payload"
            pairs = [(spec["signature"]["content"], spec["signature"]["publicKey"]["content"])]
        elif kind == "dsse":
            payload_hash = spec.get("payloadHash", {})
            if payload_hash.get("algorithm") != "sha256" or payload_hash.get("value") != hashlib.sha256(payload).hexdigest():
                return "the transparency-log entry is for another payload"
            pairs = [(s["signature"], s["verifier"]) for s in spec["signatures"]]
        else:
            return f"its transparency-log entry kind {str(kind)[:40]!r} is not supported"
    except (KeyError, TypeError, AttributeError):
        return "its transparency-log entry body is malformed"
    for logged_signature, logged_key in pairs:
        if b64_strict(logged_signature) == signature and _key_der(logged_key) == key.spki_der:
            return None
    return "the transparency-log entry is for another signature or key"


def _key_der(pem_b64: Any) -> bytes | None:
    """DER of the public key (or certificate's key) in a base64-encoded PEM, ignoring PEM headers."""
    pem = b64_strict(pem_b64)
    if pem is None:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        if b"CERTIFICATE" in pem:
            public = x509.load_pem_x509_certificate(pem).public_key()
        else:
            public = serialization.load_pem_public_key(pem)
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, TypeError):
        return None


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.isdigit()
