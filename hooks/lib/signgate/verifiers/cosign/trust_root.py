"""Sigstore trust material from a mounted `trusted_root.json` (protobuf-specs `TrustedRoot`), never fetched.

What it holds, each entry with its validity window (`validFor`, start required, end optional and
inclusive, as sigstore-go and the conformance suite read it):

- `tlogs`: transparency logs (Rekor v1 ECDSA keys, Rekor v2 Ed25519 keys), found by `logId.keyId`;
- `ctlogs`: certificate-transparency logs, for the SCTs of Fulcio certificates;
- `certificateAuthorities`: Fulcio (or a private CA) chains, leaf-most first;
- `timestampAuthorities`: RFC 3161 TSA chains, TSA certificate first.

The file is parsed here with the standard library and `cryptography` only, so that key-based
bundles (the hook's common case) never import sigstore-python; certificate-bearing bundles hand the
same file to sigstore-python (see conformance.py). A malformed root is a `TrustRootError`: a
configuration error, found when the root is loaded, not a denial of one image.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from ...encoding import b64_strict
from ...errors import SigngateError
from ...keys import PublicKey, public_key_from_pem

MAX_TRUST_ROOT_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 64  # per list: the public-good root has fewer than ten of each
TRUSTED_ROOT_MEDIA_TYPES = (
    "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "application/vnd.dev.sigstore.trustedroot.v0.1+json",
    "application/vnd.dev.sigstore.trustedroot.v0.2+json",
)
# keyDetails -> the hash the log signs with (Ed25519 signs the message itself).
_KEY_HASH = {
    "PKIX_ECDSA_P256_SHA_256": "sha256",
    "PKIX_ECDSA_P384_SHA_384": "sha384",
    "PKIX_ECDSA_P521_SHA_512": "sha512",
    "PKCS1_RSA_PKCS1V5": "sha256",
    "PKIX_RSA_PKCS1V15_2048_SHA256": "sha256",
    "PKIX_RSA_PKCS1V15_3072_SHA256": "sha256",
    "PKIX_RSA_PKCS1V15_4096_SHA256": "sha256",
    "PKIX_ED25519": None,
}


class TrustRootError(SigngateError):
    """The trust root file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class Validity:
    start: datetime
    end: datetime | None  # None: still valid

    def contains(self, when: datetime) -> bool:
        # Both ends inclusive: sigstore-go's and the conformance suite's reading of `validFor`.
        return self.start <= when and (self.end is None or when <= self.end)


@dataclass(frozen=True)
class LogKey:
    """A transparency or CT log's key, as the trust root names it."""

    base_url: str
    log_id: bytes  # logId.keyId: the checkpoint key hint is its first four bytes
    key: PublicKey
    validity: Validity


@dataclass(frozen=True)
class Authority:
    """A certificate authority or timestamp authority: a DER chain, leaf-most first."""

    uri: str
    chain_der: tuple[bytes, ...]
    validity: Validity


@dataclass(frozen=True)
class TrustRoot:
    source: str
    raw: bytes = field(repr=False)
    tlogs: tuple[LogKey, ...]
    ctlogs: tuple[LogKey, ...]
    certificate_authorities: tuple[Authority, ...]
    timestamp_authorities: tuple[Authority, ...]

    def tlog(self, log_id: bytes) -> LogKey | None:
        return next((log for log in self.tlogs if log.log_id == log_id), None)

    def expiring(self, now: datetime, within: timedelta) -> list[str]:
        """Entries whose validity ended, or ends within `within` of `now`: for a freshness warning."""
        found = []
        groups: list[tuple[str, Sequence[Any]]] = [
            ("transparency log", self.tlogs), ("CT log", self.ctlogs),
            ("certificate authority", self.certificate_authorities), ("timestamp authority", self.timestamp_authorities),
        ]
        for kind, entries in groups:
            for entry in entries:
                end = entry.validity.end
                if end is not None and end <= now + within:
                    name = getattr(entry, "base_url", None) or getattr(entry, "uri", "") or "(unnamed)"
                    state = "ended" if end <= now else "ends"
                    found.append(f"{kind} {name}: validity {state} {end.isoformat()}")
        return found


def load_trust_root(path: str) -> TrustRoot:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TRUST_ROOT_BYTES + 1)
    except FileNotFoundError:
        raise TrustRootError(f"trust root {path} not found") from None
    except OSError as exc:
        raise TrustRootError(f"cannot read trust root {path}: {exc.strerror}") from None
    if len(raw) > MAX_TRUST_ROOT_BYTES:
        raise TrustRootError(f"trust root {path} is larger than {MAX_TRUST_ROOT_BYTES} bytes")
    return parse_trust_root(raw, path)


def parse_trust_root(raw: bytes, source: str = "trust root") -> TrustRoot:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TrustRootError(f"{source} is not valid JSON") from None
    if not isinstance(document, dict):
        raise TrustRootError(f"{source} is not a JSON object")
    media_type = document.get("mediaType")
    if media_type not in TRUSTED_ROOT_MEDIA_TYPES:
        raise TrustRootError(f"{source}: unsupported trusted root media type {str(media_type)[:80]!r}")
    return TrustRoot(
        source=source,
        raw=raw,
        tlogs=tuple(_log(source, "tlogs", i, e) for i, e in enumerate(_list(source, document, "tlogs"))),
        ctlogs=tuple(_log(source, "ctlogs", i, e) for i, e in enumerate(_list(source, document, "ctlogs"))),
        certificate_authorities=tuple(
            _authority(source, "certificateAuthorities", i, e)
            for i, e in enumerate(_list(source, document, "certificateAuthorities"))
        ),
        timestamp_authorities=tuple(
            _authority(source, "timestampAuthorities", i, e)
            for i, e in enumerate(_list(source, document, "timestampAuthorities"))
        ),
    )


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as protobuf JSON writes it (`Z`, up to nanoseconds), or None."""
    if not isinstance(value, str) or not value.endswith("Z") or len(value) > 40:
        return None
    text = value[:-1]
    if "." in text:
        whole, fraction = text.split(".", 1)
        if not fraction.isdigit():
            return None
        text = f"{whole}.{fraction[:6].ljust(6, '0')}"  # datetime holds microseconds
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _list(source: str, document: Mapping[str, Any], name: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise TrustRootError(f"{source}: {name} is not a list")
    if len(value) > MAX_ENTRIES:
        raise TrustRootError(f"{source}: {name} has more than {MAX_ENTRIES} entries")
    return value


def _validity(where: str, value: Any) -> Validity:
    if not isinstance(value, dict):
        raise TrustRootError(f"{where}: validFor is missing")
    start = parse_time(value.get("start"))
    if start is None:
        # An entry with no start would be trusted for any past time: refuse it, as sigstore does.
        raise TrustRootError(f"{where}: validFor.start is missing or not an RFC 3339 time")
    end = None
    if value.get("end") is not None:
        end = parse_time(value["end"])
        if end is None:
            raise TrustRootError(f"{where}: validFor.end is not an RFC 3339 time")
    return Validity(start, end)


def _b64(where: str, value: Any) -> bytes:
    decoded = b64_strict(value)
    if decoded is None:
        raise TrustRootError(f"{where} is missing or not base64")
    return decoded


def _log(source: str, group: str, index: int, entry: Any) -> LogKey:
    where = f"{source}: {group}[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("publicKey"), dict):
        raise TrustRootError(f"{where}: publicKey is missing")
    public = entry["publicKey"]
    details = public.get("keyDetails")
    if details not in _KEY_HASH:
        raise TrustRootError(f"{where}: key type {str(details)[:60]!r} is not supported")
    der = _b64(f"{where}.publicKey.rawBytes", public.get("rawBytes"))
    log_id_field = entry.get("logId")
    log_id = _b64(f"{where}.logId.keyId", log_id_field.get("keyId") if isinstance(log_id_field, dict) else None)
    # rawBytes is a DER SubjectPublicKeyInfo, except that older roots give CT logs' RSA keys
    # (PKCS1_RSA_PKCS1V5) as a bare PKCS#1 RSAPublicKey.
    labels = [b"PUBLIC KEY", b"RSA PUBLIC KEY"] if details == "PKCS1_RSA_PKCS1V5" else [b"PUBLIC KEY"]
    for label in labels:
        pem = b"-----BEGIN " + label + b"-----\n" + base64.encodebytes(der) + b"-----END " + label + b"-----\n"
        try:
            key = public_key_from_pem(str(entry.get("baseUrl") or where), source, pem, _KEY_HASH[details])
            break
        except SigngateError as exc:
            problem = str(exc)
    else:
        raise TrustRootError(f"{where}: {problem}")
    return LogKey(str(entry.get("baseUrl") or ""), log_id, key, _validity(where, public.get("validFor")))


def _authority(source: str, group: str, index: int, entry: Any) -> Authority:
    where = f"{source}: {group}[{index}]"
    if not isinstance(entry, dict):
        raise TrustRootError(f"{where} is not an object")
    chain = entry.get("certChain")
    certificates = chain.get("certificates") if isinstance(chain, dict) else None
    if not isinstance(certificates, list) or not certificates or len(certificates) > 10:
        raise TrustRootError(f"{where}: certChain must hold 1 to 10 certificates")
    ders = tuple(
        _b64(f"{where}.certChain.certificates[{i}]", c.get("rawBytes") if isinstance(c, dict) else None)
        for i, c in enumerate(certificates)
    )
    return Authority(str(entry.get("uri") or ""), ders, _validity(where, entry.get("validFor")))
