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
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from .dsse import INTOTO_PAYLOAD_TYPE, pae
from .models import TlogEntry
from ...encoding import b64_strict
from ...keys import PublicKey
from .transparency import ProofError, checkpoint_signers, note_key_id, verify_inclusion_proof
from .trust_root import LogKey, Validity

MAX_TLOG_ENTRIES = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class RekorKeys:
    by_log_id: Mapping[str, PublicKey]  # hex log id -> key

    @classmethod
    def of(cls, keys: list[PublicKey]) -> "RekorKeys":
        return cls({key.fingerprint: key for key in keys})

    def log_for(self, log_id: bytes, checkpoint_names: Sequence[str] = ()) -> LogKey | None:
        """The configured log whose ID is `log_id`: a Rekor v1 ID (SHA-256 of the key's DER), or a
        Rekor v2 checkpoint key ID, which binds the key to the name its checkpoints are signed under."""
        key = self.by_log_id.get(log_id.hex())
        if key is None:
            key = next(
                (k for name in checkpoint_names for k in self.by_log_id.values() if note_key_id(name, k) == log_id), None
            )
        if key is None:
            return None
        # rekorKeys carry no validity window: a mounted key is trusted until it is removed.
        return LogKey(key.name, log_id, key, Validity(_EPOCH, None))


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


def check_bundle_tlog(
    entries: Sequence[TlogEntry],
    payload: bytes,
    signature: bytes,
    key: PublicKey,
    rekor: RekorKeys | None,
    required: bool = True,
) -> str | None:
    """Problem with a sigstore bundle's (typed) tlog entries, or None.

    With `required`, None means one entry proves this signature: a signed entry timestamp, or an
    inclusion proof up to a checkpoint signed by the log's key (Rekor v2 entries carry no SET).
    Whatever `required` says, every inclusion proof the bundle carries is verified: a broken
    proof, a proof of another entry or a checkpoint the log did not sign fails the signature
    even next to a valid SET (issue 16). Without `required`, an entry from a log whose key is
    not configured is checked as far as it can be (path, root, body) and otherwise ignored.
    """
    if not entries:
        return "it carries no transparency-log entry, but the rule requires one" if required else None
    problem = "its transparency-log entry has no inclusion promise"
    proven = False
    pae_payload = pae(INTOTO_PAYLOAD_TYPE, payload)
    for entry in entries[:MAX_TLOG_ENTRIES]:
        if entry.proof is not None:
            fatal, proves, note = _check_proof(entry, payload, pae_payload, signature, key, rekor)
            if fatal:
                return fatal
            if proves:
                proven = True
            elif note:
                problem = note
        if entry.signed_entry_timestamp is None or entry.integrated_time is None or rekor is None:
            continue
        problem = _check_set(
            rekor, entry.log_id.hex(), entry.body_b64, entry.integrated_time, entry.log_index, entry.signed_entry_timestamp
        ) or _check_body(entry.body, payload, signature, key, pae_payload=pae_payload)
        if problem is None:
            proven = True
    if proven or not required:
        return None
    return problem


def proven_integrated_times(entries: Sequence[TlogEntry], payload: bytes, signature: bytes, key: PublicKey, rekor: RekorKeys) -> list[datetime]:
    """Integrated times of the entries whose SET a configured log signed and whose body is this
    signature's: verified times, for checking a certificate chain."""
    times = []
    pae_payload = pae(INTOTO_PAYLOAD_TYPE, payload)
    for entry in entries[:MAX_TLOG_ENTRIES]:
        if entry.signed_entry_timestamp is None or entry.integrated_time is None:
            continue
        if _check_set(rekor, entry.log_id.hex(), entry.body_b64, entry.integrated_time, entry.log_index, entry.signed_entry_timestamp):
            continue
        if _check_body(entry.body, payload, signature, key, pae_payload=pae_payload) is None:
            times.append(_time(entry.integrated_time))
    return [t for t in times if t is not None]


def legacy_integrated_time(annotation: str) -> datetime | None:
    """The integrated time of a legacy Rekor bundle that check_legacy_tlog has accepted."""
    try:
        return _time(int(json.loads(annotation)["Payload"]["integratedTime"]))
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def _time(seconds: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _check_proof(
    entry: TlogEntry, payload: bytes, pae_payload: bytes, signature: bytes, key: PublicKey, rekor: RekorKeys | None
) -> tuple[str | None, bool, str | None]:
    """(fatal problem, whether the proof proves inclusion in a trusted log, a non-fatal note)."""
    assert entry.proof is not None
    # The proof's leaf is this body, so the body must be about this signature: otherwise it is a
    # genuine proof of another entry.
    problem = _check_body(entry.body, payload, signature, key, pae_payload=pae_payload)
    if problem:
        return problem, False, None
    log = rekor.log_for(entry.log_id, checkpoint_signers(entry.proof.raw)) if rekor is not None else None
    try:
        checkpoint = verify_inclusion_proof(entry.proof.raw, entry.body, log, require_checkpoint=False)
    except ProofError as exc:
        return f"its transparency-log inclusion proof does not verify: {exc}", False, None
    if log is None:
        return None, False, f"its transparency-log entry is from log {entry.log_id.hex()[:16]}…, whose key is not trusted"
    if checkpoint is None:
        return None, False, "its inclusion proof has no signed checkpoint, and no inclusion promise proves it"
    return None, True, None


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
    if not rekor_key.signature_is_valid(set_bytes, canonical):
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
    version = entry.get("apiVersion") if isinstance(entry, dict) else None
    try:
        if kind == "hashedrekord" and version == "0.0.2":
            # Rekor v2: the digest and the key's DER in base64, the key never as PEM.
            v2 = spec["hashedRekordV002"]
            if v2["data"]["algorithm"] != "SHA2_256":
                return "its transparency-log entry uses an unsupported hash"
            expected = {hashlib.sha256(payload).digest()}
            if pae_payload is not None:
                expected.add(hashlib.sha256(pae_payload).digest())
            if b64_strict(v2["data"]["digest"]) not in expected:
                return "the transparency-log entry is for another payload"
            pairs = [(v2["signature"]["content"], _verifier_der(v2["signature"]["verifier"]))]
        elif kind == "dsse" and version == "0.0.2":
            v2 = spec["dsseV002"]
            if v2["payloadHash"]["algorithm"] != "SHA2_256" or b64_strict(v2["payloadHash"]["digest"]) != hashlib.sha256(payload).digest():
                return "the transparency-log entry is for another payload"
            pairs = [(s["content"], _verifier_der(s["verifier"])) for s in v2["signatures"][:16]]
        elif kind == "hashedrekord":
            logged_hash = spec["data"]["hash"]
            if logged_hash.get("algorithm") != "sha256":
                return "its transparency-log entry uses an unsupported hash"
            expected_hex = {hashlib.sha256(payload).hexdigest()}
            if pae_payload is not None:
                expected_hex.add(hashlib.sha256(pae_payload).hexdigest())
            if logged_hash.get("value") not in expected_hex:
                return "the transparency-log entry is for another payload"
            pairs = [(spec["signature"]["content"], _key_der(spec["signature"]["publicKey"]["content"]))]
        elif kind == "dsse":
            payload_hash = spec.get("payloadHash", {})
            if payload_hash.get("algorithm") != "sha256" or payload_hash.get("value") != hashlib.sha256(payload).hexdigest():
                return "the transparency-log entry is for another payload"
            pairs = [(s["signature"], _key_der(s["verifier"])) for s in spec["signatures"]]
        else:
            return f"its transparency-log entry kind {str(kind)[:40]!r} is not supported"
    except (KeyError, TypeError, AttributeError):
        return "its transparency-log entry body is malformed"
    for logged_signature, logged_key in pairs:
        if b64_strict(logged_signature) == signature and logged_key == key.spki_der:
            return None
    return "the transparency-log entry is for another signature or key"


def _verifier_der(verifier: Any) -> bytes | None:
    """DER SubjectPublicKeyInfo of a Rekor v2 verifier: a public key's rawBytes, or a certificate's key."""
    if "publicKey" in verifier:
        return b64_strict(verifier["publicKey"]["rawBytes"])
    der = b64_strict(verifier["x509Certificate"]["rawBytes"])
    if der is None:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        public = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


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
