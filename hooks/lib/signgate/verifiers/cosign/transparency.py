"""Offline transparency-log proofs for sigstore bundles: RFC 6962 inclusion proofs, signed-note
checkpoints and Rekor v1 signed entry timestamps, against a trust root's log keys.

sigstore-python has these pieces only as private functions of its own Verifier (which accepts
certificate-bearing bundles only), and importing it costs ~0.5 s, so key-based bundles, the hook's
common case, are checked here with `cryptography` alone.

- **Inclusion proof** (RFC 6962 / RFC 9162 section 2.1.3.2): the leaf hash of the entry's
  canonicalized body, hashed up the audit path, must give the proof's root hash.
- **Checkpoint** (a "signed note", transparency-dev formats): `origin\\nsize\\nbase64(root)\\n[extra
  lines]\\n\\n— name base64(keyhint[4] || signature)\\n...`. Its size and root must be the proof's, and
  one signature whose key hint is the first four bytes of the log's `logId` must verify over the note
  text with that log's key (ECDSA for Rekor v1, Ed25519 for Rekor v2). Cosignatures by witnesses are
  allowed and ignored.
- **Signed entry timestamp** (Rekor v1 only): ECDSA over the canonical JSON of body, integrated time,
  log id and index; it makes the integrated time a verified time.

Every failure is a `ProofError` whose message says which check failed, for the kubectl reader.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from ...encoding import b64_strict, protobuf_uint as _uint
from ...keys import PublicKey
from .trust_root import LogKey

MAX_PROOF_HASHES = 64  # a tree of 2**64 leaves needs no more
MAX_CHECKPOINT_BYTES = 16 * 1024
MAX_NOTE_SIGNATURES = 32
_NOTE_SIGNATURE = re.compile(r"\u2014 (\S+) ([A-Za-z0-9+/=]+)\n")


class ProofError(Exception):
    """A transparency proof that does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    note: bytes  # the signed text, up to and including its last newline
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (name, key hint, signature)


def leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root hash that `path` proves for leaf `index` of a tree of `size` leaves (RFC 9162 2.1.3.2)."""
    if size < 1 or not 0 <= index < size:
        raise ProofError(f"its inclusion proof is for index {index} of a tree of {size} entries")
    if len(path) > MAX_PROOF_HASHES:
        raise ProofError("its inclusion proof is too long")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if len(p) != 32:
            raise ProofError("its inclusion proof holds a hash that is not 32 bytes")
        if sn == 0:
            raise ProofError("its inclusion proof has more hashes than the tree needs")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("its inclusion proof has fewer hashes than the tree needs")
    return r


def parse_checkpoint(envelope: Any) -> Checkpoint:
    if not isinstance(envelope, str) or not envelope:
        raise ProofError("its inclusion proof has no checkpoint")
    if len(envelope) > MAX_CHECKPOINT_BYTES:
        raise ProofError("its checkpoint is too large")
    split = envelope.rfind("\n\n")
    if split < 0:
        raise ProofError("its checkpoint is not a signed note (no blank line before the signatures)")
    text, block = envelope[: split + 1], envelope[split + 2 :]
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[0]:
        raise ProofError("its checkpoint lacks an origin, a tree size or a root hash")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (len(size_text) > 1 and size_text[0] == "0") or len(size_text) > 20:
        raise ProofError("its checkpoint's tree size is not a decimal number")
    root = b64_strict(root_text)
    if root is None or len(root) != 32:
        raise ProofError("its checkpoint's root hash is not a base64 SHA-256 hash")
    signatures: list[tuple[str, bytes, bytes]] = []
    position = 0
    while position < len(block):
        match = _NOTE_SIGNATURE.match(block, position)
        if match is None:
            raise ProofError("its checkpoint has a malformed signature line")
        raw = b64_strict(match.group(2))
        if raw is None or len(raw) < 5:
            raise ProofError("its checkpoint has a malformed signature")
        signatures.append((match.group(1), raw[:4], raw[4:]))
        position = match.end()
        if len(signatures) > MAX_NOTE_SIGNATURES:
            raise ProofError("its checkpoint has too many signatures")
    if not signatures:
        raise ProofError("its checkpoint is not signed")
    return Checkpoint(origin, int(size_text), root, text.encode("utf-8"), tuple(signatures))


def verify_checkpoint(checkpoint: Checkpoint, log: LogKey) -> None:
    hint = log.log_id[:4]
    candidates = [signature for _, key_hint, signature in checkpoint.signatures if key_hint == hint]
    if not candidates:
        raise ProofError(f"its checkpoint is not signed by the log's key (no signature with key hint {hint.hex()})")
    if not any(log.key.signature_is_valid(signature, checkpoint.note) for signature in candidates):
        raise ProofError("its checkpoint's signature does not verify with the log's key")


def verify_inclusion_proof(proof: Any, body: bytes, log: LogKey | None, require_checkpoint: bool = True) -> Checkpoint | None:
    """Verify a bundle's `inclusionProof` for the canonicalized `body`, up to its signed checkpoint.

    `require_checkpoint=False` is for v0.1 bundles, whose proofs may predate checkpoints: the path
    is still checked against the root it names (a corrupted proof is refused), but an unsigned root
    proves nothing, so such an entry rests on its inclusion promise.

    `log=None` is for a log whose key is not known (the hook with `tlog: ignore`): the path, the
    root and the checkpoint's tree are still checked, so a broken proof is refused, but the
    checkpoint's signature cannot be, and the caller must not count it as a proof.
    """
    if not isinstance(proof, dict):
        raise ProofError("its inclusion proof is malformed")
    index, size = _uint(proof.get("logIndex")), _uint(proof.get("treeSize"))
    root = b64_strict(proof.get("rootHash"))
    hashes = proof.get("hashes", [])
    if index is None or size is None or root is None or not isinstance(hashes, list):
        raise ProofError("its inclusion proof is malformed")
    path = [b64_strict(h) if isinstance(h, str) else None for h in hashes[: MAX_PROOF_HASHES + 1]]
    if any(h is None for h in path):
        raise ProofError("its inclusion proof holds a hash that is not base64")
    computed = root_from_inclusion_proof(index, size, leaf_hash(body), path)  # type: ignore[arg-type]
    if computed != root:
        raise ProofError("its inclusion proof does not lead to the root hash it names")
    checkpoint_field = proof.get("checkpoint")
    if checkpoint_field is None and not require_checkpoint:
        return None
    checkpoint = parse_checkpoint(checkpoint_field.get("envelope") if isinstance(checkpoint_field, dict) else None)
    if checkpoint.root_hash != root or checkpoint.size != size:
        raise ProofError("its checkpoint is for another tree than its inclusion proof")
    if log is not None:
        verify_checkpoint(checkpoint, log)
    return checkpoint


def checkpoint_signers(proof: Any) -> tuple[str, ...]:
    """The names a proof's checkpoint claims (its origin, then its signatures' key names), for
    finding a Rekor v2 log by its key ID; the checkpoint's signature is what then decides.

    Parsing errors are left to verify_inclusion_proof, which reports them.
    """
    checkpoint_field = proof.get("checkpoint") if isinstance(proof, dict) else None
    envelope = checkpoint_field.get("envelope") if isinstance(checkpoint_field, dict) else None
    try:
        checkpoint = parse_checkpoint(envelope)
    except ProofError:
        return ()
    return tuple(dict.fromkeys([checkpoint.origin, *(name for name, _, _ in checkpoint.signatures)]))


def note_key_id(name: str, key: Any) -> bytes | None:
    """The C2SP signed-note key ID of `key` under `name`: what Rekor v2 uses as its log ID, and
    whose first four bytes are the checkpoint signature's key hint.

    SHA-256(name || 0x0A || signature type || public key): type 0x01 with the raw 32-byte key for
    Ed25519, 0x02 with the DER SubjectPublicKeyInfo for ECDSA (the C2SP signed-note spec, and
    rekor-tiles' CLIENTS.md). Other key types have no note key ID here (None).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    public = getattr(key, "key", key)
    if isinstance(public, ed25519.Ed25519PublicKey):
        material = b"\x01" + public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        material = b"\x02" + public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        return None
    return hashlib.sha256(name.encode("utf-8") + b"\n" + material).digest()


def signed_entry_timestamp_is_valid(key: PublicKey, log_id_hex: str, body_b64: str, integrated: int, index: int, signature: bytes) -> bool:
    """Whether `signature` is the log's SET over this entry: ECDSA over the canonical JSON (keys
    sorted, no white space) of {body, integratedTime, logID, logIndex}, as Rekor v1 signs it."""
    canonical = json.dumps(
        {"body": body_b64, "integratedTime": integrated, "logID": log_id_hex.lower(), "logIndex": index},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return key.signature_is_valid(signature, canonical)


def verify_signed_entry_timestamp(entry: dict[str, Any], log: LogKey) -> datetime:
    """Verify a Rekor v1 inclusion promise; returns the integrated time it makes trustworthy."""
    promise = entry.get("inclusionPromise")
    signature = b64_strict(promise.get("signedEntryTimestamp")) if isinstance(promise, dict) else None
    integrated, index, body = _uint(entry.get("integratedTime")), _uint(entry.get("logIndex")), entry.get("canonicalizedBody")
    if signature is None or integrated is None or index is None or not isinstance(body, str):
        raise ProofError("its inclusion promise is malformed")
    if not signed_entry_timestamp_is_valid(log.key, log.log_id.hex(), body, integrated, index, signature):
        raise ProofError("its signed entry timestamp does not verify with the log's key")
    try:
        return datetime.fromtimestamp(integrated, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ProofError("its integrated time is out of range") from None
