"""Trusted public keys and the signature check for each key type.

Supported, as `cosign verify --key` reads them (PEM `PUBLIC KEY` or `RSA PUBLIC KEY`):

- ECDSA P-256, P-384, P-521. Signatures are ASN.1 DER (cosign) or raw r||s (IEEE P1363, which
  sigstore's verifier also accepts). Hash: the key's `hashAlgorithm` when configured; otherwise
  the curve's default (what cosign >= 2.6 signs with: P-256 SHA-256, P-384 SHA-384, P-521
  SHA-512), then SHA-256 (what older cosign and `cosign verify` use for every curve).
- RSA: PKCS#1 v1.5, SHA-256 unless `hashAlgorithm` says otherwise.
- Ed25519: pure Ed25519. Ed25519ph (what cosign >= 2.6 uses when signing images) is not
  supported by the `cryptography` library and is not accepted.

`cryptography` is imported only when a key is loaded, so that requests decided without
signature checks do not pay for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .settings import KeySpec
from .errors import KeyLoadError
from .files import read_regular

MAX_KEY_FILE_BYTES = 64 * 1024
_CURVE_DEFAULT_HASH = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}


@dataclass(frozen=True)
class PublicKey:
    name: str
    path: str
    kind: str  # "ecdsa-p256", "rsa-4096", "ed25519", ...
    fingerprint: str  # hex sha256 of the DER SubjectPublicKeyInfo
    hash_algorithms: tuple[str, ...]  # tried in this order
    key: Any = field(repr=False, compare=False)
    spki_der: bytes = field(repr=False, compare=False, default=b"")
    # The DER certificate that carried this key (certificate signers): a transparency-log entry
    # about its signature must name this very certificate, not merely its key (entries.py).
    certificate_der: bytes | None = field(repr=False, compare=False, default=None)

    def signature_is_valid(self, signature: bytes, data: bytes) -> bool:
        """True when `signature` over `data` verifies with this key. Never raises on bad input."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

        if not signature or len(signature) > 16 * 1024:
            return False
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, data)
                return True
            for name in self.hash_algorithms:
                algorithm = _hash(hashes, name)
                if isinstance(self.key, ec.EllipticCurvePublicKey):
                    for encoded in ecdsa_encodings(self.key, signature):
                        try:
                            self.key.verify(encoded, data, ec.ECDSA(algorithm))
                            return True
                        except InvalidSignature:
                            continue
                elif isinstance(self.key, rsa.RSAPublicKey):
                    try:
                        self.key.verify(signature, data, padding.PKCS1v15(), algorithm)
                        return True
                    except InvalidSignature:
                        continue
        except (InvalidSignature, ValueError, TypeError):
            return False
        return False


def _hash(hashes: Any, name: str) -> Any:
    return {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}[name]()


def ecdsa_encodings(key: Any, signature: bytes) -> list[bytes]:
    """DER as given, plus a DER re-encoding when the bytes look like raw r||s (IEEE P1363).

    Shared with Notary's TUF keys (verifiers/notaryv1/keys.py), which accept both encodings too.
    """
    from cryptography.hazmat.primitives.asymmetric import utils

    encodings = [signature]
    size = (key.curve.key_size + 7) // 8
    if len(signature) == 2 * size:
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        encodings.append(utils.encode_dss_signature(r, s))
    return encodings


def load_public_key(spec: KeySpec) -> PublicKey:
    try:
        pem = read_regular(spec.path, MAX_KEY_FILE_BYTES)  # a FIFO is refused, not waited on
    except FileNotFoundError:
        raise KeyLoadError(f"key {spec.name!r}: file {spec.path} not found") from None
    except OSError as exc:
        raise KeyLoadError(f"key {spec.name!r}: cannot read {spec.path}: {exc.strerror}") from None
    if len(pem) > MAX_KEY_FILE_BYTES:
        raise KeyLoadError(f"key {spec.name!r}: {spec.path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    return public_key_from_pem(spec.name, spec.path, pem, spec.hash_algorithm)


def public_key_from_pem(name: str, path: str, pem: bytes, hash_algorithm: str | None = None) -> PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if b"PRIVATE KEY" in pem:
        raise KeyLoadError(f"key {name!r}: {path} holds a private key; mount only the public key")
    if b"CERTIFICATE" in pem and b"PUBLIC KEY" not in pem:
        raise KeyLoadError(f"key {name!r}: {path} holds a certificate; signgate needs a PEM PUBLIC KEY")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"key {name!r}: {path} is not a PEM public key ({_first_line(exc)})") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic key types
        raise KeyLoadError(f"key {name!r}: {path}: unsupported public key ({_first_line(exc)})") from None

    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = key.curve.name
        default = _CURVE_DEFAULT_HASH.get(curve)
        if default is None:
            raise KeyLoadError(f"key {name!r}: {path}: ECDSA curve {curve} is not supported (use P-256, P-384 or P-521)")
        kind = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}[curve]
        hashes = (hash_algorithm,) if hash_algorithm else tuple(dict.fromkeys((default, "sha256")))
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise KeyLoadError(f"key {name!r}: {path}: RSA keys shorter than 2048 bits are refused")
        kind = f"rsa-{key.key_size}"
        hashes = (hash_algorithm or "sha256",)
    elif isinstance(key, ed25519.Ed25519PublicKey):
        if hash_algorithm:
            raise KeyLoadError(f"key {name!r}: hashAlgorithm does not apply to Ed25519 keys")
        kind, hashes = "ed25519", ()
    else:
        raise KeyLoadError(f"key {name!r}: {path}: key type {type(key).__name__} is not supported")

    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKey(
        name=name,
        path=path,
        kind=kind,
        fingerprint=hashlib.sha256(der).hexdigest(),
        hash_algorithms=hashes,
        key=key,
        spki_der=der,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
