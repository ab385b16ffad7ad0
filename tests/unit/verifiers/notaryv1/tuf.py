"""Fabricated Notary trust data, signed by keys the tests make: the unit tests' stand-in for a
notary-server (tests/test_notary.py checks the same code against the real one).

`Collection` builds root, timestamp, snapshot, targets and delegation files the way Notary lays
them out: a certificate-wrapped root key whose certificate names the GUN, one key per top-level
role, the snapshot listing every targets file, the timestamp listing the snapshot.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from signgate.keys import PublicKey, public_key_from_pem
from signgate.verifiers.notaryv1.canonical_json import canonical_json
from signgate.verifiers.notaryv1.keys import tuf_key_id

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)  # the tests' clock: nothing here reads the real one
FAR = "2099-01-01T00:00:00Z"
GUN = "registry.example/team/app"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Signer:
    """A private key and the TUF key object that names its public half."""

    private: Any
    keytype: str
    public: bytes  # what keyval.public carries (DER, raw ed25519, or a certificate's PEM)
    certificate: Any = None

    @property
    def key_id(self) -> str:
        return tuf_key_id(self.keytype, self.public)

    @property
    def obj(self) -> dict[str, Any]:
        return {"keytype": self.keytype, "keyval": {"private": None, "public": b64(self.public)}}

    def pinned(self, name: str = "root") -> PublicKey:
        """The public key as an operator pins it: a PEM file read by signgate.keys."""
        pem = self.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return public_key_from_pem(name, f"{name}.pub", pem)

    def sign(self, message: bytes, *, raw_ecdsa: bool = False, method: str | None = None) -> tuple[str, bytes]:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return method or "eddsa", self.private.sign(message)
        if isinstance(self.private, rsa.RSAPrivateKey):
            if method == "rsapkcs1v15":
                return method, self.private.sign(message, padding.PKCS1v15(), hashes.SHA256())
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            return method or "rsapss", self.private.sign(message, pss, hashes.SHA256())
        der = self.private.sign(message, ec.ECDSA(hashes.SHA256()))
        if not raw_ecdsa:
            return method or "ecdsa", der
        size = (self.private.curve.key_size + 7) // 8
        r, s = decode_dss_signature(der)
        return method or "ecdsa", r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_key(curve: Any = None) -> Signer:
    private = ec.generate_private_key(curve or ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Signer(private, "ecdsa", der)


def ed25519_key() -> Signer:
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Signer(private, "ed25519", raw)


def rsa_key(bits: int = 2048) -> Signer:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Signer(private, "rsa", der)


def root_key(
    gun: str = GUN,
    not_before: datetime = NOW - timedelta(days=365),
    not_after: datetime = NOW + timedelta(days=3650),
    private: Any = None,
) -> Signer:
    """A root key as `notary init` makes it: ECDSA P-256 in a self-signed certificate for the GUN."""
    private = private or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gun)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(private, hashes.SHA256())
    )
    return Signer(private, "ecdsa-x509", certificate.public_bytes(serialization.Encoding.PEM), certificate)


def sign_file(signed: dict[str, Any], signers: list[Signer], *, corrupt: bool = False, raw_ecdsa: bool = False) -> bytes:
    """A `{"signed": ..., "signatures": [...]}` file, signed over the canonical JSON."""
    message = canonical_json(signed)
    signatures = []
    for signer in signers:
        method, value = signer.sign(message, raw_ecdsa=raw_ecdsa)
        if corrupt:
            value = bytes([value[0] ^ 1]) + value[1:]
        signatures.append({"keyid": signer.key_id, "method": method, "sig": b64(value)})
    return json.dumps({"signed": signed, "signatures": signatures}).encode()


def file_meta(raw: bytes) -> dict[str, Any]:
    """How a signed file lists another: length and hashes."""
    return {"length": len(raw), "hashes": {"sha256": b64(hashlib.sha256(raw).digest()), "sha512": b64(hashlib.sha512(raw).digest())}}


def target(digest_hex: str, length: int) -> dict[str, Any]:
    return {"length": length, "hashes": {"sha256": b64(bytes.fromhex(digest_hex))}}


def role_entry(signers: list[Signer], threshold: int = 1) -> dict[str, Any]:
    return {"keyids": [s.key_id for s in signers], "threshold": threshold}


@dataclass
class Delegation:
    name: str
    signer: Signer
    paths: list[str] = field(default_factory=lambda: [""])
    targets: dict[str, Any] = field(default_factory=dict)
    children: list["Delegation"] = field(default_factory=list)


@dataclass
class Collection:
    """One GUN's trust data. Change the fields, then call files()."""

    gun: str = GUN
    root: Signer = field(default_factory=root_key)
    timestamp: Signer = field(default_factory=ecdsa_key)
    snapshot: Signer = field(default_factory=ecdsa_key)
    targets_key: Signer = field(default_factory=ecdsa_key)
    targets: dict[str, Any] = field(default_factory=dict)
    delegations: list[Delegation] = field(default_factory=list)
    expires: dict[str, str] = field(default_factory=dict)  # role -> expiry; default FAR
    tamper: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)  # role -> edit of `signed`

    def _signed(self, role: str, body: dict[str, Any]) -> dict[str, Any]:
        signed = {"_type": {"root": "Root", "timestamp": "Timestamp", "snapshot": "Snapshot"}.get(role, "Targets"),
                  "expires": self.expires.get(role, FAR), "version": 1, **body}
        if role in self.tamper:
            self.tamper[role](signed)
        return signed

    def _delegation_block(self, children: list[Delegation]) -> dict[str, Any]:
        return {
            "keys": {d.signer.key_id: d.signer.obj for d in children},
            "roles": [{"name": d.name, "paths": d.paths, **role_entry([d.signer])} for d in children],
        }

    def files(self) -> dict[str, bytes]:
        keys = {s.key_id: s.obj for s in (self.root, self.timestamp, self.snapshot, self.targets_key)}
        roles = {
            "root": role_entry([self.root]),
            "timestamp": role_entry([self.timestamp]),
            "snapshot": role_entry([self.snapshot]),
            "targets": role_entry([self.targets_key]),
        }
        files = {"root": sign_file(self._signed("root", {"keys": keys, "roles": roles, "consistent_snapshot": False}), [self.root])}
        files["targets"] = sign_file(
            self._signed("targets", {"targets": self.targets, "delegations": self._delegation_block(self.delegations)}),
            [self.targets_key],
        )
        pending = list(self.delegations)
        while pending:
            delegation = pending.pop(0)
            body = {"targets": delegation.targets, "delegations": self._delegation_block(delegation.children)}
            files[delegation.name] = sign_file(self._signed(delegation.name, body), [delegation.signer])
            pending.extend(delegation.children)
        listed = {role: file_meta(raw) for role, raw in files.items()}
        files["snapshot"] = sign_file(self._signed("snapshot", {"meta": listed}), [self.snapshot])
        files["timestamp"] = sign_file(
            self._signed("timestamp", {"meta": {"snapshot": file_meta(files["snapshot"])}}), [self.timestamp]
        )
        return files


def serve(files: dict[str, bytes], asked: list[tuple[str, int]] | None = None) -> Callable[[str, int], bytes | None]:
    """A `Fetch` over a dict, capped as NotaryFetcher is; records what was asked for in `asked`."""
    from signgate.verifiers.notaryv1.errors import NotaryTooLarge

    def fetch(role: str, max_bytes: int) -> bytes | None:
        if asked is not None:
            asked.append((role, max_bytes))
        data = files.get(role)
        if data is not None and len(data) > max_bytes:
            raise NotaryTooLarge(f"{role}.json is larger than the limit of {max_bytes} bytes")
        return data

    return fetch
