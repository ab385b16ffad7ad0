"""A test transparency log: a key that signs Rekor v1 SETs and signed-note checkpoints over a real
RFC 6962 Merkle tree, so tests can give bundles genuine inclusion proofs (and break them on purpose).

- `kind="v1"`: an ECDSA P-256 log like Rekor v1. Log ID = SHA-256 of its DER key; checkpoint key
  hint = the first four bytes of that ID; it signs SETs.
- `kind="v2"`: an Ed25519 log like Rekor v2. Log ID = the C2SP signed-note key ID,
  SHA-256(name || 0x0A || 0x01 || raw key); no SETs, only checkpoints.

Written from RFC 6962 section 2.1 and the C2SP signed-note format, independently of
hooks/lib/signgate/transparency.py, which it is used to test.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 over leaf *hashes*."""
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def audit_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962, leaf level first."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return audit_path(index, leaves[:k]) + [merkle_root(leaves[k:])]
    return audit_path(index - k, leaves[k:]) + [merkle_root(leaves[:k])]


@dataclass
class TestLog:
    __test__ = False

    kind: str  # "v1" or "v2"
    name: str  # the checkpoint origin and signature name
    private: Any
    pub_path: Path
    bodies: list[bytes] = field(default_factory=list)

    @property
    def spki(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def log_id(self) -> bytes:
        if self.kind == "v1":
            return hashlib.sha256(self.spki).digest()
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(self.name.encode() + b"\n" + b"\x01" + raw).digest()

    def _sign(self, data: bytes) -> bytes:
        if self.kind == "v1":
            return self.private.sign(data, ec.ECDSA(hashes.SHA256()))
        return self.private.sign(data)

    def checkpoint(self, size: int, root: bytes, *, signer: "TestLog | None" = None) -> str:
        """A signed note over (origin, size, root); `signer` signs it instead of this log."""
        text = f"{self.name}\n{size}\n{b64(root)}\n"
        by = signer or self
        return text + "\n" + f"\u2014 {by.name} {b64(by.log_id[:4] + by._sign(text.encode()))}\n"

    def append(self, body: bytes, filler: int = 4) -> int:
        """Log `body` after `filler` other entries (so proofs have a few hashes); returns its index."""
        for number in range(filler):
            self.bodies.append(b'{"filler":%d,"of":"%s"}' % (number + len(self.bodies), self.name.encode()))
        self.bodies.append(body)
        for number in range(filler):
            self.bodies.append(b'{"after":%d}' % (number + len(self.bodies)))
        return len(self.bodies) - 1 - filler

    def proof(self, index: int, *, checkpoint_signer: "TestLog | None" = None) -> dict[str, Any]:
        leaves = [_leaf(b) for b in self.bodies]
        root = merkle_root(leaves)
        return {
            "logIndex": str(index),
            "rootHash": b64(root),
            "treeSize": str(len(leaves)),
            "hashes": [b64(h) for h in audit_path(index, leaves)],
            "checkpoint": {"envelope": self.checkpoint(len(leaves), root, signer=checkpoint_signer)},
        }

    def set_over(self, body_b64: str, integrated: int, index: int) -> bytes:
        canonical = json.dumps(
            {"body": body_b64, "integratedTime": integrated, "logID": self.log_id.hex(), "logIndex": index},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        return self._sign(canonical)

    def entry(
        self,
        body: bytes,
        kind_version: tuple[str, str] = ("dsse", "0.0.1"),
        *,
        promise: bool | None = None,
        proof: bool = True,
        checkpoint_signer: "TestLog | None" = None,
        integrated: int = 1700000000,
    ) -> dict[str, Any]:
        """A bundle `tlogEntries[]` item for `body`, logged now. v1 logs add a SET unless
        `promise=False`; v2 logs never do (and leave integratedTime out, as Rekor v2)."""
        index = self.append(body)
        body_b64 = b64(body)
        entry: dict[str, Any] = {
            "logIndex": str(index),
            "logId": {"keyId": b64(self.log_id)},
            "kindVersion": {"kind": kind_version[0], "version": kind_version[1]},
            "canonicalizedBody": body_b64,
        }
        if promise is None:
            promise = self.kind == "v1"
        if promise:
            entry["integratedTime"] = str(integrated)
            entry["inclusionPromise"] = {"signedEntryTimestamp": b64(self.set_over(body_b64, integrated, index))}
        if proof:
            entry["inclusionProof"] = self.proof(index, checkpoint_signer=checkpoint_signer)
        return entry


def new_log(directory: Path, name: str, kind: str = "v1") -> TestLog:
    directory.mkdir(parents=True, exist_ok=True)
    private: Any = ec.generate_private_key(ec.SECP256R1()) if kind == "v1" else ed25519.Ed25519PrivateKey.generate()
    path = directory / f"{name.replace('/', '_')}.pub"
    path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return TestLog(kind, name, private, path)


# ---- entry bodies, as Rekor canonicalizes them ------------------------------------------------------


def dsse_v001_body(statement: bytes, signature: bytes, public_pem: bytes) -> bytes:
    return json.dumps({
        "apiVersion": "0.0.1", "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": "00" * 32},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(statement).hexdigest()},
            "signatures": [{"signature": b64(signature), "verifier": b64(public_pem)}],
        },
    }, sort_keys=True, separators=(",", ":")).encode()


def hashedrekord_v002_body(signed_bytes: bytes, signature: bytes, public_der: bytes) -> bytes:
    """Rekor v2's hashedrekord: the digest of what was signed, the key as DER."""
    return json.dumps({
        "apiVersion": "0.0.2", "kind": "hashedrekord",
        "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(signed_bytes).digest())},
            "signature": {"content": b64(signature), "verifier": {"publicKey": {"rawBytes": b64(public_der)}, "keyDetails": "PKIX_ECDSA_P256_SHA_256"}},
        }},
    }, sort_keys=True, separators=(",", ":")).encode()


def dsse_v002_body(statement: bytes, signature: bytes, public_der: bytes) -> bytes:
    return json.dumps({
        "apiVersion": "0.0.2", "kind": "dsse",
        "spec": {"dsseV002": {
            "payloadHash": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(statement).digest())},
            "signatures": [{"content": b64(signature), "verifier": {"publicKey": {"rawBytes": b64(public_der)}, "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}],
        }},
    }, sort_keys=True, separators=(",", ":")).encode()
