"""Sigstore trust material from a mounted `trusted_root.json` (protobuf-specs `TrustedRoot`), never fetched.

What it holds, each entry with its validity window (`validFor`, start required, end optional and
inclusive, as sigstore-go and the conformance suite read it):

- `tlogs`: transparency logs (Rekor v1 ECDSA keys, Rekor v2 Ed25519 keys), found by `logId.keyId`;
- `ctlogs`: certificate-transparency logs, for the SCTs of Fulcio certificates;
- `certificateAuthorities`: Fulcio (or a private CA) chains, leaf-most first;
- `timestampAuthorities`: RFC 3161 TSA chains, TSA certificate first.

The file is parsed here with the standard library and `cryptography` only; the hook and
`signgate sigstore verify-bundle` (conformance.py) read it through this one parser. A malformed root
is a `TrustRootError`: a configuration error, found when the root is loaded, not a denial of one image.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from ...encoding import b64_strict
from ...errors import SigngateError
from ...keys import PublicKey, public_key_from_pem

MAX_TRUST_ROOT_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 64  # per list: the public-good root has fewer than ten of each
# How long before the end of a trust root's or CA bundle's validity signgate warns, and sets the
# signgate_trust_material_expiring gauge: time enough to fetch a fresh root on a connected machine,
# review it and roll it out through the ConfigMap (README, "Trust roots"), and a window Sigstore's
# announced key rotations fall into.
EXPIRY_WARNING = timedelta(days=30)

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

    def deciding_entries(self) -> "dict[str, LogKey | Authority | None]":
        """For each kind of trust the root holds, the entry whose end decides when the kind needs
        refreshing: the newest (the one valid longest) when every entry of the kind has an end;
        None when one never ends. A kind with one key still valid is fine: Sigstore keeps a
        rotated-out key with an end date beside its successor, so that old signatures still
        verify, and the public-good root always holds such ended entries."""
        found: dict[str, LogKey | Authority | None] = {}
        for kind, entries in (("tlog", self.tlogs), ("ctlog", self.ctlogs),
                              ("ca", self.certificate_authorities), ("tsa", self.timestamp_authorities)):
            if not entries:
                continue
            if any(e.validity.end is None for e in entries):
                found[kind] = None
            else:
                found[kind] = max(entries, key=lambda e: e.validity.end)
        return found

    def expiring(self, now: datetime, within: timedelta = EXPIRY_WARNING) -> "list[Expiry]":
        """The kinds of trust whose keys all stop being valid by `now + within`: for each, the
        newest entry (see deciding_entries)."""
        found = []
        for kind, newest in self.deciding_entries().items():
            if newest is not None and needs_refresh(newest.validity.end, now, within):
                name = getattr(newest, "base_url", None) or getattr(newest, "uri", "") or "(unnamed)"
                found.append(Expiry(kind, name, newest.validity.end))
        return found


KIND_NAMES = {
    "tlog": "transparency log key", "ctlog": "CT log key", "ca": "certificate authority",
    "tsa": "timestamp authority", "certificate": "certificate",
}


@dataclass(frozen=True)
class Expiry:
    """Trust that ends (or ended) within the warning window."""

    kind: str  # tlog, ctlog, ca, tsa (a trusted root's entry), certificate (a CA bundle's)
    name: str  # the entry's URL or URI, or the certificate's subject
    end: datetime

    def describe(self, now: datetime) -> str:
        when = self.end.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.end <= now:
            return f"{KIND_NAMES[self.kind]} {self.name} is no longer valid since {when}"
        days = (self.end - now) / timedelta(days=1)
        return f"{KIND_NAMES[self.kind]} {self.name} is valid only until {when} ({days:.0f} days)"


def refresh_moment(end: datetime | None, within: timedelta = EXPIRY_WARNING) -> datetime | None:
    """When trust that ends at `end` starts needing refreshing: `within` before its end. None:
    trust without an end never does."""
    if end is None:
        return None
    try:
        return end - within
    except OverflowError:  # an end in the first days of year 1: long past
        return datetime.min.replace(tzinfo=timezone.utc)


def needs_refresh(end: datetime | None, now: datetime, within: timedelta = EXPIRY_WARNING) -> bool:
    """The one definition of "expiring" (the `--config` warning and the gauge): `now` is at or
    past refresh_moment(end). The fast path compares recorded moments with its clock the same way
    (material_refresh, fastpath.py)."""
    moment = refresh_moment(end, within)
    return moment is not None and now >= moment


def _bundle_certificates(pem: bytes) -> list[Any]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []  # not a bundle: --config and the rule's own check say so


def bundle_expiring(pem: bytes, now: datetime, within: timedelta = EXPIRY_WARNING) -> list[Expiry]:
    """The certificates of a PEM CA bundle that expired or expire within `within`. Each one
    counts: a chain needs every certificate in it valid."""
    return [
        Expiry("certificate", c.subject.rfc4514_string() or "(no subject)", c.not_valid_after_utc)
        for c in _bundle_certificates(pem)
        if needs_refresh(c.not_valid_after_utc, now, within)
    ]


def _load_material(trusted_roots: Mapping[str, str], certificate_authorities: Mapping[str, str]
                   ) -> "list[tuple[str, str, TrustRoot | bytes]]":
    """(section, name, parsed root or bundle PEM) for each readable trusted root and CA bundle.
    Unreadable material is left out: the configuration check and the rules report it."""
    loaded: list[tuple[str, str, TrustRoot | bytes]] = []
    for name, path in sorted(trusted_roots.items()):
        try:
            loaded.append(("trustedRoots", name, load_trust_root(path)))
        except TrustRootError:
            continue
    for name, path in sorted(certificate_authorities.items()):
        try:
            with open(path, "rb") as handle:
                loaded.append(("certificateAuthorities", name, handle.read(MAX_TRUST_ROOT_BYTES)))
        except OSError:
            continue
    return loaded


def material_expiry(
    trusted_roots: Mapping[str, str], certificate_authorities: Mapping[str, str], now: datetime | None = None
) -> list[tuple[str, str, list[Expiry], list[str]]]:
    """For each trusted root and CA bundle (name -> path): (section, name, what expires, kinds it
    holds). Unreadable material is left out: the configuration check and the rules report it."""
    now = now or datetime.now(timezone.utc)
    report = []
    for section, name, material in _load_material(trusted_roots, certificate_authorities):
        if isinstance(material, TrustRoot):
            report.append((section, name, material.expiring(now), list(material.deciding_entries())))
        else:
            report.append((section, name, bundle_expiring(material, now), ["certificate"]))
    return report


def material_refresh(
    trusted_roots: Mapping[str, str], certificate_authorities: Mapping[str, str], within: timedelta = EXPIRY_WARNING
) -> list[tuple[str, str, dict[str, datetime | None]]]:
    """For each trusted root and CA bundle (name -> path): (section, name, {kind it holds: the
    moment it starts needing refreshing, None for never}); the kind needs refreshing at `now`
    when now >= that moment (needs_refresh), so a moment already past means "already".

    The same kinds, in the same order, and the same verdicts as material_expiry, as moments
    rather than verdicts at one instant: the fast path keeps them with its cache entries and sets
    the gauge from its clock without parsing any trust file. A CA bundle needs refreshing from
    the first of its certificates' moments; one without certificates never does."""
    report = []
    for section, name, material in _load_material(trusted_roots, certificate_authorities):
        if isinstance(material, TrustRoot):
            moments = {kind: None if newest is None else refresh_moment(newest.validity.end, within)
                       for kind, newest in material.deciding_entries().items()}
        else:
            ends = [c.not_valid_after_utc for c in _bundle_certificates(material)]
            moments = {"certificate": refresh_moment(min(ends), within) if ends else None}
        report.append((section, name, moments))
    return report


def expiry_warnings(trusted_roots: Mapping[str, str], certificate_authorities: Mapping[str, str],
                    now: datetime | None = None) -> list[str]:
    """One line per trusted root or CA bundle that needs refreshing, naming it, what ends and when."""
    now = now or datetime.now(timezone.utc)
    lines = []
    for section, name, found, _ in material_expiry(trusted_roots, certificate_authorities, now):
        if found:
            what = "trusted root" if section == "trustedRoots" else "certificate authority bundle"
            lines.append(
                f"signgate: {section}.{name}: {what} needs refreshing: " + "; ".join(e.describe(now) for e in found)
                + " (README, \"Trust roots\")"
            )
    return lines


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
