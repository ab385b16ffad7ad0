"""TUF keys as Notary metadata lists them: key IDs, certificate-wrapped root keys, signatures.

**Key IDs.** A TUF key ID is the hex sha256 of the canonical JSON of
`{"keytype": ..., "keyval": {"private": null, "public": <base64>}}`. For certificate keys that is
the ID of the certificate; `notary key list` shows the *canonical* ID, the ID of the plain public
key inside it (`ecdsa` + DER SubjectPublicKeyInfo). Messages show both where it helps.

Keys here are DER, raw or x509 PEM as TUF carries them, and signatures are checked as Notary's
verifiers check them (SHA-256 whatever the curve, RSA-PSS too), which is not how a configured
cosign key (signgate.keys) is read or checked; the raw-or-DER ECDSA rule is shared with it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from ...encoding import b64_strict
from ...keys import ecdsa_encodings
from .canonical_json import canonical_json
from .errors import InvalidMetadata

X509_KEY_TYPES = {"ecdsa-x509": "ecdsa", "rsa-x509": "rsa"}  # certificate key type -> plain key type
MIN_RSA_BITS = 2048
MAX_KEYS = 256  # keys one file may list: bounds the work one (possibly hostile) server can cause
MAX_SIGNATURE_BYTES = 16 * 1024


def tuf_key_id(keytype: str, public: bytes) -> str:
    """The TUF key ID: sha256 of the canonical JSON of the public key object, private set to null."""
    obj = {"keytype": keytype, "keyval": {"private": None, "public": base64.b64encode(public).decode()}}
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def short_id(key_id: str) -> str:
    return key_id[:12] + "…" if len(key_id) > 12 else key_id


@dataclass(frozen=True)
class TufKey:
    """A public key as TUF metadata lists it. `key` is None when it cannot be used (unknown type,
    unparseable, too weak): such a key exists for ID purposes but verifies nothing."""

    key_id: str
    keytype: str
    public: bytes = field(repr=False)
    key: Any = field(default=None, repr=False, compare=False)
    certificate: Any = field(default=None, repr=False, compare=False)
    problem: str | None = None

    @property
    def spki_der(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        if self.key is None:
            return b""
        return self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def fingerprint(self) -> str:
        """sha256 of the DER SubjectPublicKeyInfo: the same value keys.PublicKey.fingerprint has."""
        der = self.spki_der
        return hashlib.sha256(der).hexdigest() if der else ""

    @property
    def canonical_id(self) -> str:
        """For a certificate key, the ID of the public key inside (what `notary key list` shows)."""
        plain = X509_KEY_TYPES.get(self.keytype)
        if plain is None or self.key is None:
            return self.key_id
        return tuf_key_id(plain, self.spki_der)

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def parse_key(claimed_id: str, obj: Any, where: str) -> TufKey:
    """Parse one entry of a `keys` map and check that its ID is the ID of its content.

    A key ID that is not the hash of its key would let one key count as several (or pose as
    another), so a mismatch makes the whole file invalid, as in Notary.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("keytype"), str) or not isinstance(obj.get("keyval"), dict):
        raise InvalidMetadata(f"{where}: key {short_id(claimed_id)} is malformed")
    keytype = obj["keytype"]
    encoded = obj["keyval"].get("public")
    if not isinstance(encoded, str):
        raise InvalidMetadata(f"{where}: key {short_id(claimed_id)} has no public part")
    public = b64_strict(encoded, allow_empty=True)
    if public is None:
        raise InvalidMetadata(f"{where}: key {short_id(claimed_id)}: invalid base64")
    if tuf_key_id(keytype, public) != claimed_id:
        raise InvalidMetadata(f"{where}: key ID {short_id(claimed_id)} is not the ID of the key it names")
    key, certificate, problem = _load_key(keytype, public)
    return TufKey(claimed_id, keytype, public, key, certificate, problem)


def parse_keys(value: Any, label: str) -> dict[str, TufKey]:
    """A `keys` map (root.json's, or a delegation's), every ID checked; absent means none."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMetadata(f"{label}: keys is not a mapping")
    if len(value) > MAX_KEYS:
        raise InvalidMetadata(f"{label} lists more than {MAX_KEYS} keys")
    return {key_id: parse_key(key_id, obj, label) for key_id, obj in value.items()}


def _load_key(keytype: str, public: bytes) -> tuple[Any, Any, str | None]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        if keytype in X509_KEY_TYPES:
            certificate = x509.load_pem_x509_certificate(public)
            key = certificate.public_key()
        elif keytype in ("ecdsa", "rsa"):
            certificate, key = None, serialization.load_der_public_key(public)
        elif keytype == "ed25519":
            if len(public) != 32:
                return None, None, "an ed25519 key must be 32 bytes"
            certificate, key = None, ed25519.Ed25519PublicKey.from_public_bytes(public)
        else:
            return None, None, f"key type {keytype!r} is not supported"
    except Exception as exc:  # cryptography raises ValueError or UnsupportedAlgorithm
        return None, None, f"unreadable {keytype} key ({type(exc).__name__})"
    expected = ec.EllipticCurvePublicKey if keytype.startswith("ecdsa") else rsa.RSAPublicKey
    if keytype != "ed25519" and not isinstance(key, expected):
        return None, None, f"a {keytype} key holds a {type(key).__name__}"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return None, None, f"RSA keys shorter than {MIN_RSA_BITS} bits are refused"
    return key, certificate, None


def signature_is_valid(key: TufKey, method: str, signature: bytes, message: bytes) -> bool:
    """One signature, as Notary's verifiers check it: SHA-256 for ECDSA and RSA whatever the curve
    or size; ECDSA as ASN.1 DER or raw r||s; RSA-PSS with a 32-byte salt. Never raises."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    public = key.key
    if public is None or not signature or len(signature) > MAX_SIGNATURE_BYTES:
        return False
    try:
        if method == "ecdsa" and isinstance(public, ec.EllipticCurvePublicKey):
            for candidate in ecdsa_encodings(public, signature):
                try:
                    public.verify(candidate, message, ec.ECDSA(hashes.SHA256()))
                    return True
                except (InvalidSignature, ValueError):
                    continue
            return False
        if method == "eddsa" and isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
            return True
        if method in ("rsapss", "rsapkcs1v15") and isinstance(public, rsa.RSAPublicKey):
            pad: Any = (
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                if method == "rsapss"
                else padding.PKCS1v15()
            )
            public.verify(signature, message, pad, hashes.SHA256())
            return True
    except (InvalidSignature, ValueError, TypeError):
        return False
    return False
