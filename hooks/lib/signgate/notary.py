"""Docker Content Trust (Notary v1) verification against pinned root keys, without a notary binary.

A `notaryv1` rule trusts an image when the trust collection of its GUN (`<registry>/<repository>`,
e.g. `docker.io/library/nginx`) on a Notary server signs the digest that the registry serves.

**The chain.** TUF metadata is fetched from `GET /v2/<GUN>/_trust/tuf/<role>.json` and checked in
this order; the first failure is the answer:

1. `root.json` must carry a valid signature by a pinned root key. Notary root keys are x509
   certificates wrapped as TUF keys (`ecdsa-x509`, `rsa-x509`); the pinned PEM public key is
   compared with the key inside the certificate. The certificate must name the GUN (CN) and be
   within its validity, as Notary's own trust pinning requires. root.json must also satisfy its
   own root role (threshold), and not be expired.
2. `timestamp.json`, signed by the timestamp role's keys (named in root), not expired; it lists
   the hashes and length of snapshot.json.
3. `snapshot.json` must match those hashes and length, be signed by the snapshot role's keys and
   not be expired; it lists the hashes and lengths of root.json, targets.json and every
   delegation file.
4. `targets.json` (and every delegation file that is needed, e.g. `targets/releases.json`) must
   match the snapshot, be signed by the keys and threshold its parent role names, and not be
   expired. A delegation's path prefixes are restricted by its parent's, as in Notary.

**The decision.** For a tag: the target named after the tag, looked up as the Docker client does
(the `targets/releases` subtree first, then the whole `targets` tree, each in pre-order), must have
the sha256 and length of the manifest the registry serves for that tag. For a digest reference
(what the kubelet pulls when one is given): some signed target must carry that digest and length.
With `delegations` in the rule, every listed role must itself have signed the target, and only
those roles are consulted.

**Key IDs.** A TUF key ID is the hex sha256 of the canonical JSON of
`{"keytype": ..., "keyval": {"private": null, "public": <base64>}}`. For certificate keys that is
the ID of the certificate; `notary key list` shows the *canonical* ID, the ID of the plain public
key inside it (`ecdsa` + DER SubjectPublicKeyInfo). Messages show both where it helps.

**Canonical JSON** is what Notary signs: docker/go's canonical encoder, i.e. keys sorted, no
whitespace, only `"` and `\\` escaped (plus U+2028/U+2029), integers only.

The module is a pure core (parsing and verification over bytes, keys and a clock: `canonical_json`,
`verify_root`, ..., `TrustCollection`, `check_image`) plus a thin fetching layer (`NotaryFetcher`)
built on the registry client, so that auth, TLS, size caps and the deadline work as for registries.
No state is kept between runs: there is no rollback protection beyond what the pinned root and the
expiry dates give (each hook process starts fresh).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, TextIO

from .settings import Limits, RegistrySettings
from .deadline import Deadline
from .encoding import b64_strict, unique_keys
from .errors import (
    DeadlineExceeded,
    InvalidReference,
    KeyLoadError,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryUnreachable,
    SigngateError,
    TooLarge,
)
from .reference import canonical_endpoint, endpoint_netloc
from .registry import RegistryClient
from .verdict import ImageVerdict

if TYPE_CHECKING:
    from .settings import Config, Rule
    from .keys import PublicKey
    from .reference import ImageReference
    from .keyring import KeyRing

TUF_TYPES = {"root": "Root", "timestamp": "Timestamp", "snapshot": "Snapshot", "targets": "Targets"}
BASE_ROLES = ("root", "targets", "snapshot", "timestamp")
RELEASES_ROLE = "targets/releases"  # where `docker trust sign` puts tags; the Docker client reads it first
X509_KEY_TYPES = {"ecdsa-x509": "ecdsa", "rsa-x509": "rsa"}  # certificate key type -> plain key type
HASH_ALGORITHMS = ("sha256", "sha512")
MIN_RSA_BITS = 2048
# Caps that bound the work one (possibly hostile) server can cause.
MAX_TIMESTAMP_BYTES = 64 * 1024  # timestamp.json is the only file fetched with no length known from above
MAX_ROLES = 32  # delegation files fetched for one image
MAX_SIGNATURES = 64
MAX_KEYS = 256
MAX_TARGETS = 100_000
ACCEPT = "application/json"
# A freshly made root certificate is valid from the signer's "now"; allow that much clock skew.
CLOCK_SKEW = timedelta(minutes=5)


# ---- errors -------------------------------------------------------------------------------------


class NotaryError(SigngateError):
    """A trust-data check failed. The message says which step and which file."""

    reason = "notary-error"


class RootNotTrusted(NotaryError):
    reason = "notary-root-untrusted"


class MetadataExpired(NotaryError):
    reason = "notary-expired"


class NoTrustData(NotaryError):
    reason = "notary-no-trust-data"


class TargetMismatch(NotaryError):
    reason = "notary-digest-mismatch"


class DelegationMissing(NotaryError):
    reason = "notary-delegation-missing"


class InvalidMetadata(NotaryError):
    reason = "notary-invalid-metadata"


class ThresholdNotMet(NotaryError):
    reason = "notary-bad-signature"


class HashMismatch(NotaryError):
    reason = "notary-hash-mismatch"


class NotaryUnreachable(NotaryError):
    reason = "notary-unreachable"


# ---- canonical JSON -----------------------------------------------------------------------------


class CanonicalJSONError(ValueError):
    pass


def canonical_json(value: Any) -> bytes:
    """The bytes Notary signs for `value` (docker/go canonical JSON).

    Objects with keys sorted by their UTF-8 bytes, no whitespace, strings escaped only for `"`
    and `\\` (and U+2028/U+2029, which docker/go always escapes), integers in decimal. Floats are
    refused: Notary metadata holds none, and docker/go cannot encode fractional ones.
    """
    parts: list[str] = []
    _canonical(value, parts, 0)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError("a string holds a lone surrogate") from None


def _canonical(value: Any, out: list[str], depth: int) -> None:
    if depth > 64:
        raise CanonicalJSONError("nested too deeply")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_canonical_string(value))
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise CanonicalJSONError("object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(_canonical_string(key))
            out.append(":")
            _canonical(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _canonical(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, float):
        raise CanonicalJSONError(f"floating point number {value!r}")
    else:
        raise CanonicalJSONError(f"unsupported type {type(value).__name__}")


def _canonical_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + '"'


def parse_json(raw: bytes, what: str) -> Any:
    """Strict JSON: UTF-8 only, no duplicate keys, no floats, NaN or Infinity.

    Go keeps the last of duplicate keys and Python too, but refusing them removes any doubt about
    which value was signed.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMetadata(f"{what} is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_float)
    except CanonicalJSONError as exc:
        raise InvalidMetadata(f"{what} is not valid trust data: {exc}") from None
    except (ValueError, RecursionError):
        raise InvalidMetadata(f"{what} is not valid JSON") from None


_no_duplicates = unique_keys(lambda key: CanonicalJSONError(f"duplicate key {key!r}"))


def _no_float(text: str) -> Any:
    raise CanonicalJSONError(f"number {text} is not an integer")


# ---- keys ---------------------------------------------------------------------------------------


def tuf_key_id(keytype: str, public: bytes) -> str:
    """The TUF key ID: sha256 of the canonical JSON of the public key object, private set to null."""
    obj = {"keytype": keytype, "keyval": {"private": None, "public": base64.b64encode(public).decode()}}
    return hashlib.sha256(canonical_json(obj)).hexdigest()


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
        raise InvalidMetadata(f"{where}: key {_short_id(claimed_id)} is malformed")
    keytype = obj["keytype"]
    encoded = obj["keyval"].get("public")
    if not isinstance(encoded, str):
        raise InvalidMetadata(f"{where}: key {_short_id(claimed_id)} has no public part")
    public = _b64decode(encoded, f"{where}: key {_short_id(claimed_id)}")
    if tuf_key_id(keytype, public) != claimed_id:
        raise InvalidMetadata(f"{where}: key ID {_short_id(claimed_id)} is not the ID of the key it names")
    key, certificate, problem = _load_key(keytype, public)
    return TufKey(claimed_id, keytype, public, key, certificate, problem)


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


def verify_signature(key: TufKey, method: str, signature: bytes, message: bytes) -> bool:
    """One signature, as Notary's verifiers check it: SHA-256 for ECDSA and RSA whatever the curve
    or size; ECDSA as ASN.1 DER or raw r||s; RSA-PSS with a 32-byte salt. Never raises."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

    public = key.key
    if public is None or not signature or len(signature) > 16 * 1024:
        return False
    try:
        if method == "ecdsa" and isinstance(public, ec.EllipticCurvePublicKey):
            size = (public.curve.key_size + 7) // 8
            candidates = [signature]
            if len(signature) == 2 * size:
                r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
                candidates.append(utils.encode_dss_signature(r, s))
            for candidate in candidates:
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


def _b64decode(text: str, what: str) -> bytes:
    decoded = b64_strict(text, allow_empty=True)
    if decoded is None:
        raise InvalidMetadata(f"{what}: invalid base64")
    return decoded


def _short_id(key_id: str) -> str:
    return key_id[:12] + "…" if len(key_id) > 12 else key_id


def _short_digest(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 19 else digest


# ---- signed metadata ----------------------------------------------------------------------------


_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z")


def parse_time(text: Any) -> datetime:
    """An RFC 3339 time as Go writes it (nanoseconds allowed; truncated to microseconds)."""
    match = _TIME.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {str(text)[:40]!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    micro = int((match.group(7) or "0")[:6].ljust(6, "0"))
    zone = match.group(8)
    if zone in ("Z", "z"):
        offset = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        offset = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=offset).astimezone(timezone.utc)


def _format_time(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Signature:
    key_id: str
    method: str
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class Metadata:
    """One signed TUF file, parsed but not yet trusted."""

    role: str
    gun: str
    raw: bytes = field(repr=False)
    signed: Mapping[str, Any] = field(repr=False)
    signatures: tuple[Signature, ...]
    message: bytes = field(repr=False)  # the canonical bytes the signatures are over
    version: int
    expires: datetime

    @property
    def label(self) -> str:
        return f"{self.role}.json of {self.gun}"


def parse_metadata(raw: bytes, role: str, gun: str) -> Metadata:
    """Parse a `{"signed": ..., "signatures": [...]}` file and check its shape and `_type`."""
    label = f"{role}.json of {gun}"
    document = parse_json(raw, label)
    if not isinstance(document, dict) or not isinstance(document.get("signed"), dict):
        raise InvalidMetadata(f"{label} is not signed TUF metadata")
    signed = document["signed"]
    listed = document.get("signatures")
    if not isinstance(listed, list):
        raise InvalidMetadata(f"{label} has no signatures list")
    if len(listed) > MAX_SIGNATURES:
        raise InvalidMetadata(f"{label} has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for entry in listed:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("keyid", "method", "sig")):
            raise InvalidMetadata(f"{label} has a malformed signature")
        signatures.append(Signature(entry["keyid"], entry["method"].lower(), _b64decode(entry["sig"], f"{label}: signature")))
    expected_type = TUF_TYPES.get(role, "Targets")  # every delegation is a Targets file
    if signed.get("_type") != expected_type:
        raise InvalidMetadata(f"{label} has type {str(signed.get('_type'))[:20]!r}, not {expected_type!r}")
    version = signed.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise InvalidMetadata(f"{label} has no valid version")
    try:
        expires = parse_time(signed.get("expires"))
        message = canonical_json(signed)
    except (ValueError, OverflowError) as exc:
        raise InvalidMetadata(f"{label}: {exc}") from None
    return Metadata(role, gun, raw, signed, tuple(signatures), message, version, expires)


@dataclass(frozen=True)
class Role:
    """Who may sign a role: key IDs, their keys, a threshold, and (for delegations) the target
    path prefixes it may sign. `paths` None means every path (the top-level roles)."""

    name: str
    key_ids: tuple[str, ...]
    threshold: int
    keys: Mapping[str, TufKey] = field(repr=False)
    paths: tuple[str, ...] | None = None

    def allows(self, target: str) -> bool:
        return self.paths is None or any(target.startswith(prefix) for prefix in self.paths)


def check_signatures(meta: Metadata, role: Role) -> tuple[str, ...]:
    """Key IDs of the role whose signatures verify; raises unless there are `threshold` of them.

    Distinct key IDs count once, however many signatures a key made.
    """
    valid: list[str] = []
    for signature in meta.signatures:
        if signature.key_id in valid or signature.key_id not in role.key_ids:
            continue
        key = role.keys.get(signature.key_id)
        if key is not None and verify_signature(key, signature.method, signature.value, meta.message):
            valid.append(signature.key_id)
    if len(valid) < role.threshold:
        raise ThresholdNotMet(
            f"{meta.label} is not validly signed: {len(valid)} of the {role.threshold} required "
            f"signature(s) of role {role.name} verify"
        )
    return tuple(valid)


def check_expiry(meta: Metadata, now: datetime) -> None:
    if meta.expires < now:
        raise MetadataExpired(f"metadata expired: {meta.label} expired at {_format_time(meta.expires)}")


def check_file(raw: bytes, entry: Any, label: str, listed_in: str) -> None:
    """Length and hashes of a file against the entry that a signed file lists for it.

    Every listed hash of a supported algorithm must match, and at least one must be listed.
    """
    if not isinstance(entry, dict):
        raise InvalidMetadata(f"{listed_in} has a malformed entry for {label}")
    length, hashes = entry.get("length"), entry.get("hashes")
    if not isinstance(length, int) or isinstance(length, bool) or not isinstance(hashes, dict):
        raise InvalidMetadata(f"{listed_in} lists no length or hashes for {label}")
    if len(raw) != length:
        raise HashMismatch(f"{label} is {len(raw)} bytes, but {listed_in} lists {length}")
    checked = 0
    for algorithm in HASH_ALGORITHMS:
        encoded = hashes.get(algorithm)
        if encoded is None:
            continue
        if not isinstance(encoded, str):
            raise InvalidMetadata(f"{listed_in} lists a malformed {algorithm} for {label}")
        if hashlib.new(algorithm, raw).digest() != _b64decode(encoded, f"{listed_in}: {algorithm} of {label}"):
            raise HashMismatch(f"{label} does not match the {algorithm} that {listed_in} lists for it")
        checked += 1
    if not checked:
        raise InvalidMetadata(f"{listed_in} lists no sha256 or sha512 for {label}")


def _parse_keys(value: Any, label: str) -> dict[str, TufKey]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMetadata(f"{label}: keys is not a mapping")
    if len(value) > MAX_KEYS:
        raise InvalidMetadata(f"{label} lists more than {MAX_KEYS} keys")
    return {key_id: parse_key(key_id, obj, label) for key_id, obj in value.items()}


def _role_from(name: str, entry: Any, keys: Mapping[str, TufKey], label: str, paths: tuple[str, ...] | None) -> Role:
    if not isinstance(entry, dict):
        raise InvalidMetadata(f"{label}: role {name} is malformed")
    key_ids, threshold = entry.get("keyids"), entry.get("threshold")
    if not isinstance(key_ids, list) or not all(isinstance(k, str) for k in key_ids):
        raise InvalidMetadata(f"{label}: role {name} has no key ID list")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise InvalidMetadata(f"{label}: role {name} has no valid threshold")
    unique = tuple(dict.fromkeys(key_ids))
    return Role(name, unique, threshold, {k: keys[k] for k in unique if k in keys}, paths)


# ---- the top-level roles ------------------------------------------------------------------------


@dataclass(frozen=True)
class Root:
    meta: Metadata
    keys: Mapping[str, TufKey] = field(repr=False)
    roles: Mapping[str, Role]
    pinned_by: tuple[str, ...]  # names of the pinned keys whose signatures verified
    signing_keys: tuple[TufKey, ...] = ()  # the root.json keys those pinned keys are


def parse_root(raw: bytes, gun: str) -> tuple[Metadata, dict[str, TufKey], dict[str, Role]]:
    meta = parse_metadata(raw, "root", gun)
    keys = _parse_keys(meta.signed.get("keys"), meta.label)
    roles_data = meta.signed.get("roles")
    if not isinstance(roles_data, dict):
        raise InvalidMetadata(f"{meta.label} has no roles")
    roles = {}
    for name in BASE_ROLES:
        if name not in roles_data:
            raise InvalidMetadata(f"{meta.label} does not define the {name} role")
        roles[name] = _role_from(name, roles_data[name], keys, meta.label, None)
    return meta, keys, roles


def self_signed_root(raw: bytes, gun: str) -> tuple[Metadata, Role]:
    """root.json checked against its own root role only: what `root-key` can say before pinning."""
    meta, _keys, roles = parse_root(raw, gun)
    check_signatures(meta, roles["root"])
    return meta, roles["root"]


def verify_root(raw: bytes, gun: str, pinned: Sequence["PublicKey"], now: datetime) -> Root:
    """root.json must be signed by a pinned key, satisfy its own root role, and be current.

    A pinned key counts through a certificate key in root.json that wraps the same public key,
    whose certificate names the GUN and is valid now (Notary refuses others too: a root key may be
    shared between GUNs, and the CN keeps one GUN's root from being served for another).
    """
    meta, keys, roles = parse_root(raw, gun)
    by_fingerprint = {key.fingerprint: key for key in pinned}
    names = ", ".join(key.name for key in pinned) or "none"
    candidates = {
        key_id: key for key_id, key in keys.items()
        if key.certificate is not None and key.fingerprint in by_fingerprint
    }
    if not candidates:
        root_ids = [keys[k].canonical_id for k in roles["root"].key_ids if k in keys]
        listed = ", ".join(_short_id(k) for k in root_ids) or "none"
        raise RootNotTrusted(
            f"root.json of {gun} is not signed by a pinned key: its root key(s) {listed} "
            f"(canonical IDs) are not among the pinned key(s) {names}"
        )
    signers: list[TufKey] = []
    for signature in meta.signatures:
        key = candidates.get(signature.key_id)
        if key is not None and key not in signers and verify_signature(key, signature.method, signature.value, meta.message):
            signers.append(key)
    if not signers:
        pinned_names = ", ".join(sorted({by_fingerprint[k.fingerprint].name for k in candidates.values()}))
        raise RootNotTrusted(
            f"root.json of {gun} is not signed by a pinned key: no valid signature by pinned key(s) {pinned_names}"
        )
    usable = [key for key in signers if _certificate_problem(key, gun, now) is None]
    if not usable:
        error, problem = _certificate_problem(signers[0], gun, now) or (RootNotTrusted, "")
        raise error(f"root.json of {gun} is not signed by a pinned key with a usable certificate: {problem}")
    check_signatures(meta, roles["root"])
    check_expiry(meta, now)
    pinned_by = tuple(dict.fromkeys(by_fingerprint[key.fingerprint].name for key in usable))
    return Root(meta, keys, roles, pinned_by, tuple(usable))


def _common_names(certificate: Any) -> list[str]:
    import warnings

    from cryptography.x509.oid import NameOID

    with warnings.catch_warnings():
        # Notary puts the GUN in the CN, which may be longer than X.520's 64 characters.
        warnings.simplefilter("ignore")
        return [str(attr.value) for attr in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _certificate_problem(key: TufKey, gun: str, now: datetime) -> tuple[type[NotaryError], str] | None:
    """Why a root key's certificate is unusable, with the error that says so; None when usable."""
    certificate = key.certificate
    names = _common_names(certificate)
    if names != [gun]:
        shown = names[0] if names else "no common name"
        return RootNotTrusted, f"the certificate of root key {_short_id(key.canonical_id)} is for {shown!r}, not {gun!r}"
    if certificate.not_valid_after_utc < now:
        return MetadataExpired, (
            f"the certificate of root key {_short_id(key.canonical_id)} expired at "
            f"{_format_time(certificate.not_valid_after_utc)}"
        )
    if certificate.not_valid_before_utc > now + CLOCK_SKEW:  # `notary init` starts validity at "now"
        return RootNotTrusted, f"the certificate of root key {_short_id(key.canonical_id)} is not valid yet"
    return None


def verify_timestamp(raw: bytes, root: Root, now: datetime) -> Metadata:
    meta = parse_metadata(raw, "timestamp", root.meta.gun)
    check_signatures(meta, root.roles["timestamp"])
    check_expiry(meta, now)
    listed = meta.signed.get("meta")
    if not isinstance(listed, dict) or not isinstance(listed.get("snapshot"), dict):
        raise InvalidMetadata(f"{meta.label} lists no snapshot")
    return meta


def verify_snapshot(raw: bytes, root: Root, timestamp: Metadata, now: datetime) -> Metadata:
    gun = root.meta.gun
    check_file(raw, timestamp.signed["meta"]["snapshot"], f"snapshot.json of {gun}", "timestamp.json")
    meta = parse_metadata(raw, "snapshot", gun)
    check_signatures(meta, root.roles["snapshot"])
    check_expiry(meta, now)
    listed = meta.signed.get("meta")
    if not isinstance(listed, dict) or not isinstance(listed.get("targets"), dict):
        raise InvalidMetadata(f"{meta.label} lists no targets")
    if "root" in listed:  # Notary lists it; a root.json other than the one served is a split view
        check_file(root.meta.raw, listed["root"], f"root.json of {gun}", "snapshot.json")
    return meta


# ---- targets and delegations --------------------------------------------------------------------


@dataclass(frozen=True)
class TargetFile:
    name: str
    length: int
    hashes: Mapping[str, bytes] = field(repr=False)

    def digest(self, algorithm: str = "sha256") -> str | None:
        value = self.hashes.get(algorithm)
        return f"{algorithm}:{value.hex()}" if value is not None else None

    def matches(self, digest: str, size: int) -> bool:
        algorithm = digest.partition(":")[0]
        return self.digest(algorithm) == digest and self.length == size


@dataclass(frozen=True)
class Targets:
    role: Role
    meta: Metadata
    targets: Mapping[str, TargetFile] = field(repr=False)
    delegations: tuple[Role, ...] = ()

    def target(self, name: str) -> TargetFile | None:
        """The role's own target of that name, if the role may sign that path."""
        found = self.targets.get(name)
        return found if found is not None and self.role.allows(name) else None

    def signed_targets(self) -> Iterator[TargetFile]:
        return (t for t in self.targets.values() if self.role.allows(t.name))


def verify_targets(raw: bytes, role: Role, listed: Any, snapshot: Metadata, now: datetime) -> Targets:
    """A targets or delegation file: matches the snapshot, signed by its role, current."""
    gun = snapshot.gun
    check_file(raw, listed, f"{role.name}.json of {gun}", "snapshot.json")
    meta = parse_metadata(raw, role.name, gun)
    check_signatures(meta, role)
    check_expiry(meta, now)
    targets_data = meta.signed.get("targets")
    if not isinstance(targets_data, dict):
        raise InvalidMetadata(f"{meta.label} has no targets")
    if len(targets_data) > MAX_TARGETS:
        raise InvalidMetadata(f"{meta.label} lists more than {MAX_TARGETS} targets")
    targets: dict[str, TargetFile] = {}
    for name, entry in targets_data.items():
        length = entry.get("length") if isinstance(entry, dict) else None
        hashes = entry.get("hashes") if isinstance(entry, dict) else None
        if not isinstance(length, int) or isinstance(length, bool) or not isinstance(hashes, dict):
            raise InvalidMetadata(f"{meta.label}: target {name[:60]!r} is malformed")
        decoded = {
            alg: _b64decode(value, f"{meta.label}: target {name[:60]!r}")
            for alg, value in hashes.items()
            if alg in HASH_ALGORITHMS and isinstance(value, str)
        }
        targets[name] = TargetFile(name, length, decoded)
    return Targets(role, meta, targets, _delegations(meta, role))


def _delegations(meta: Metadata, parent: Role) -> tuple[Role, ...]:
    data = meta.signed.get("delegations")
    if data is None:
        return ()
    if not isinstance(data, dict) or not isinstance(data.get("roles", []), list):
        raise InvalidMetadata(f"{meta.label}: delegations are malformed")
    keys = _parse_keys(data.get("keys"), meta.label)
    roles = []
    for entry in data.get("roles", []):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name.rpartition("/")[0] != parent.name or not _valid_role_name(name):
            raise InvalidMetadata(f"{meta.label} delegates to {str(name)[:60]!r}, which is not a child role of {parent.name}")
        own = entry.get("paths") or []
        if not isinstance(own, list) or not all(isinstance(p, str) for p in own):
            raise InvalidMetadata(f"{meta.label}: paths of {name} are malformed")
        # A delegation may sign only paths its parent may sign (Notary's RestrictDelegationPathPrefixes).
        paths = tuple(p for p in own if parent.paths is None or any(p.startswith(q) for q in parent.paths))
        roles.append(_role_from(name, entry, keys, meta.label, paths))
    return tuple(roles)


_ROLE_NAME = re.compile(r"targets(/[-a-z0-9_]+)+\Z")


def _valid_role_name(name: str) -> bool:
    return len(name) < 256 and _ROLE_NAME.match(name) is not None


Fetch = Callable[[str, int], "bytes | None"]  # (role, max bytes) -> the file, None when the server has none


class TrustCollection:
    """The verified trust data of one GUN. Pure: all I/O goes through `fetch`.

    The top-level files are fetched and verified on creation, delegation files when first asked
    for. Every file is checked against the hashes and length a verified file lists for it before
    it is parsed, and fetched with that length as its cap.
    """

    def __init__(
        self,
        gun: str,
        fetch: Fetch,
        pinned: Sequence["PublicKey"],
        now: datetime,
        *,
        max_bytes: int,
        max_roles: int = MAX_ROLES,
    ) -> None:
        self.gun, self.fetch, self.now, self.max_bytes, self.max_roles = gun, fetch, now, max_bytes, max_roles
        raw_root = fetch("root", max_bytes)
        if raw_root is None:
            raise NoTrustData(f"the Notary server has no trust data for {gun}")
        self.root = verify_root(raw_root, gun, pinned, now)
        raw_timestamp = self._required("timestamp", MAX_TIMESTAMP_BYTES)
        self.timestamp = verify_timestamp(raw_timestamp, self.root, now)
        raw_snapshot = self._required("snapshot", self._listed_length(self.timestamp.signed["meta"]["snapshot"], "snapshot"))
        self.snapshot = verify_snapshot(raw_snapshot, self.root, self.timestamp, now)
        listed = self.snapshot.signed["meta"]["targets"]
        raw_targets = self._required("targets", self._listed_length(listed, "targets"))
        self.targets = verify_targets(raw_targets, self.root.roles["targets"], listed, self.snapshot, now)
        self._roles: dict[str, Targets] = {"targets": self.targets}
        self._absent: dict[str, str] = {}

    def _required(self, role: str, max_bytes: int) -> bytes:
        raw = self.fetch(role, max_bytes)
        if raw is None:
            raise InvalidMetadata(f"the Notary server has root.json but no {role}.json for {self.gun}")
        return raw

    def _listed_length(self, entry: Any, role: str) -> int:
        length = entry.get("length") if isinstance(entry, dict) else None
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise InvalidMetadata(f"no valid length is listed for {role}.json of {self.gun}")
        if length > self.max_bytes:
            raise InvalidMetadata(f"{role}.json of {self.gun} is listed as {length} bytes, over the limit of {self.max_bytes}")
        return length

    def role(self, name: str) -> Targets | None:
        """A verified targets role, or None (then `why_absent(name)` says why)."""
        if name in self._roles:
            return self._roles[name]
        if name in self._absent or not name.startswith("targets/"):
            self._absent.setdefault(name, f"{name} is not a delegation role")
            return None
        parent_name = name.rpartition("/")[0]
        parent = self.role(parent_name)
        if parent is None:
            self._absent[name] = self._absent[parent_name]
            return None
        role = next((r for r in parent.delegations if r.name == name), None)
        if role is None:
            self._absent[name] = f"{parent_name} delegates no role {name}"
            return None
        listed = self.snapshot.signed["meta"].get(name)
        if listed is None:  # delegated, but nothing was ever signed into it
            self._absent[name] = f"{name} has no trust data (the snapshot lists no {name}.json)"
            return None
        if len(self._roles) >= self.max_roles:
            raise InvalidMetadata(f"the trust data of {self.gun} needs more than {self.max_roles} delegation files")
        raw = self.fetch(name, self._listed_length(listed, name))
        if raw is None:
            raise InvalidMetadata(f"snapshot.json of {self.gun} lists {name}.json, but the Notary server has none")
        targets = verify_targets(raw, role, listed, self.snapshot, self.now)
        self._roles[name] = targets
        return targets

    def why_absent(self, name: str) -> str:
        return self._absent.get(name, f"{name} has no trust data")

    def walk(self, start: str, target: str | None = None) -> Iterator[Targets]:
        """`start` and its delegations, depth first in listed order (Notary's WalkTargets).

        With `target`, subtrees whose paths cannot hold that target are skipped.
        """
        top = self.role(start)
        if top is None or (target is not None and not top.role.allows(target)):
            return
        yield top
        for child in top.delegations:
            if target is None or child.allows(target):
                yield from self.walk(child.name, target)


# ---- the decision -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """Which signed targets vouch for the image."""

    digest: str
    signers: tuple[tuple[str, str], ...]  # (role, target name)

    def describe(self) -> str:
        return "; ".join(f"{name!r} signed by {role}" for role, name in self.signers)


def check_image(
    collection: TrustCollection,
    *,
    tag: str | None,
    digest: str | None,
    served_digest: str,
    served_size: int,
    required: Sequence[str] = (),
) -> Accepted:
    """Decide whether the trust data vouches for the manifest the registry serves.

    `digest` is the digest the reference pins (then any signed target with that digest counts),
    else `tag` names the target. `served_digest`/`served_size` describe the manifest fetched from
    the registry for that reference (for a digest reference they hash to `digest`).
    """
    gun = collection.gun
    if digest is not None:
        return _check_digest(collection, digest, served_size, required)
    assert tag is not None
    if required:
        signers = []
        for role_name in required:
            role = collection.role(role_name)
            if role is None:
                raise DelegationMissing(
                    f"the required delegation {role_name} did not sign tag {tag!r}: {collection.why_absent(role_name)}"
                )
            target = role.target(tag)
            if target is None:
                others = _quietly(lambda: [t.role.name for t in collection.walk("targets", tag) if t.target(tag) is not None])
                elsewhere = f" (it is signed by {', '.join(others)})" if others else ""
                raise DelegationMissing(f"the required delegation {role_name} did not sign tag {tag!r} in {gun}{elsewhere}")
            _compare(target, role_name, tag, served_digest, served_size)
            signers.append((role_name, tag))
        return Accepted(served_digest, tuple(signers))
    found = _first_target(collection, tag)
    if found is None:
        signed = sorted(_quietly(lambda: {t.name for role in collection.walk("targets") for t in role.signed_targets()}))
        shown = ", ".join(signed[:10]) + (", …" if len(signed) > 10 else "") if signed else "none"
        raise NoTrustData(f"no trust data for the tag {tag!r} in {gun} (signed tags: {shown})")
    role_name, target = found
    _compare(target, role_name, tag, served_digest, served_size)
    return Accepted(served_digest, ((role_name, tag),))


def _quietly(collect: Callable[[], Any]) -> Any:
    """Extra detail for a message: a broken delegation elsewhere must not replace the real answer."""
    try:
        return collect()
    except NotaryError:
        return []


def _first_target(collection: TrustCollection, tag: str) -> tuple[str, TargetFile] | None:
    """As the Docker client looks a tag up: targets/releases (and below) first, then the whole tree."""
    for start in (RELEASES_ROLE, "targets"):
        for role in collection.walk(start, tag):
            target = role.target(tag)
            if target is not None:
                return role.role.name, target
    return None


def _compare(target: TargetFile, role: str, tag: str, served_digest: str, served_size: int) -> None:
    if target.matches(served_digest, served_size):
        return
    signed = target.digest("sha256") or "a digest of another algorithm"
    raise TargetMismatch(
        f"the digest differs from the signed one: tag {tag!r} is signed by {role} as "
        f"{_short_digest(signed)} ({target.length} bytes), but the registry serves "
        f"{_short_digest(served_digest)} ({served_size} bytes)"
    )


def _check_digest(collection: TrustCollection, digest: str, size: int, required: Sequence[str]) -> Accepted:
    gun = collection.gun

    def carrying(role: Targets) -> list[TargetFile]:
        return [t for t in role.signed_targets() if t.matches(digest, size)]

    if required:
        signers = []
        for role_name in required:
            role = collection.role(role_name)
            if role is None:
                raise DelegationMissing(
                    f"the required delegation {role_name} did not sign digest {_short_digest(digest)}: "
                    f"{collection.why_absent(role_name)}"
                )
            matches = carrying(role)
            if not matches:
                raise DelegationMissing(
                    f"the required delegation {role_name} did not sign digest {_short_digest(digest)} in {gun}"
                )
            signers.append((role_name, matches[0].name))
        return Accepted(digest, tuple(signers))
    for start in (RELEASES_ROLE, "targets"):
        for role in collection.walk(start):
            matches = carrying(role)
            if matches:
                return Accepted(digest, ((role.role.name, matches[0].name),))
    raise NoTrustData(f"no trust data for digest {_short_digest(digest)} in {gun}: no signed target carries it")


# ---- fetching -----------------------------------------------------------------------------------


class NotaryFetcher:
    """`Fetch` for one GUN on one Notary server. Turns transport errors into Notary messages."""

    def __init__(
        self,
        server: str,
        gun: str,
        *,
        deadline: Deadline,
        limits: Limits,
        ca_bundle: str | None = None,
        client: RegistryClient | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise NotaryError(f"Notary server {server!r} is not an http(s) URL")
        self.server = server.rstrip("/")
        try:
            # Canonical, as registry hosts are (reference.canonical_endpoint).
            self.host = endpoint_netloc(*canonical_endpoint(parts.netloc, parts.scheme), parts.scheme)
        except InvalidReference as exc:
            raise NotaryError(f"Notary server {server!r}: {exc}") from None
        self.gun = gun
        insecure = frozenset({self.host}) if parts.scheme == "http" else frozenset()
        settings = RegistrySettings(ca_bundle=ca_bundle, insecure=insecure)
        if client is not None:
            # Same credentials (a pull secret may carry the Notary host), host policy and request log.
            self.http = RegistryClient(settings, limits, deadline, client.credentials, client.host_allowed, client.host_named)
            self.http.records = client.records
        else:
            self.http = RegistryClient(settings, limits, deadline)

    def __call__(self, role: str, max_bytes: int) -> bytes | None:
        what = f"{role}.json of {self.gun} from Notary server {self.server}"
        path = f"/v2/{urllib.parse.quote(self.gun, safe='/:')}/_trust/tuf/{role}.json"
        try:
            return self.http.get_bytes(self.host, self.gun, path, accept=ACCEPT, what=what, max_bytes=max_bytes)
        except NotFound:
            return None
        except DeadlineExceeded:
            raise
        except RegistryError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: RegistryError) -> NotaryError:
        text = str(exc).replace(f"registry {self.host}", f"Notary server {self.server}")
        text = text.replace("registries.caBundle", "the rule's notary.caBundle")
        text = text.replace("the registry", "the Notary server")
        if isinstance(exc, RegistryUnreachable):
            return NotaryUnreachable(text)
        error = NotaryError(text)
        if isinstance(exc, RegistryAuthError):
            error.reason = "notary-auth"
        elif isinstance(exc, TooLarge):
            error.reason = "notary-too-large"
        return error

    def close(self) -> None:
        self.http.close()


# ---- the rule -----------------------------------------------------------------------------------


def verify_notary(
    config: "Config",
    rule: "Rule",
    ref: "ImageReference",
    client: RegistryClient,
    keyring: "KeyRing",
    now: datetime | None = None,
) -> ImageVerdict:
    """Verify one image under a notaryv1 rule. Failures raise SigngateError (verify_image turns
    them into verdicts); a passed check returns a verdict naming the pinned keys and signers."""
    settings = rule.notary
    if settings is None:
        raise NotaryError(f"{rule.label} has type notaryv1 but no notary settings")
    try:
        pinned = keyring.get(settings.root_keys)
    except KeyLoadError as exc:
        return ImageVerdict(False, exc.reason, f"cannot check trust data: {exc}")
    gun = ref.name
    when = now or datetime.now(timezone.utc)
    subject = f"digest {_short_digest(ref.digest)}" if ref.digest else f"the tag {ref.tag or 'latest'!r}"
    fetch = NotaryFetcher(settings.server, gun, deadline=client.deadline, limits=config.limits,
                          ca_bundle=settings.ca_bundle, client=client)
    try:
        try:
            collection = TrustCollection(gun, fetch, pinned, when, max_bytes=config.limits.max_manifest_bytes)
        except NoTrustData as exc:
            raise NoTrustData(f"no trust data for {subject}: {exc}") from None
        try:
            manifest = client.get_manifest(ref.api_host, ref.repository, ref.digest or ref.tag or "latest")
        except NotFound:
            what = f"digest {ref.digest}" if ref.digest else f"tag {ref.tag!r}"
            return ImageVerdict(False, "image-not-found", f"the registry has no image {ref.name} with {what}")
        accepted = check_image(
            collection,
            tag=ref.tag or "latest",
            digest=ref.digest,
            served_digest=manifest.digest,
            served_size=manifest.size,
            required=settings.delegations,
        )
    finally:
        fetch.close()
    root = collection.root
    details = (
        f"trust data of {gun} on {settings.server}: root.json v{root.meta.version} signed by pinned key(s) "
        f"{', '.join(root.pinned_by)} ({', '.join(_short_id(k.canonical_id) for k in root.signing_keys)})",
        f"timestamp v{collection.timestamp.version} expires {_format_time(collection.timestamp.expires)}",
        accepted.describe(),
    )
    return ImageVerdict(True, "verified", "", manifest.digest, root.pinned_by, details)


# ---- `signgate notary root-key` -----------------------------------------------------------------


def root_key_main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`signgate notary root-key GUN --server URL [--ca FILE]`: print the root public key(s) of a
    trust collection, as PEM to pin, each preceded by `#` lines with its key IDs.

    The `#` lines are ignored by PEM readers, so the output can be saved as the key file. The key
    is read from the server without any trust (that is what pinning ends): compare the canonical
    ID with `notary key list` on the signer's machine before pinning it.

    `argv` holds the arguments after `notary root-key`. Exit 0 on success, 2 on any error.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(
        prog="signgate notary root-key",
        description="Print the root public key of a Notary trust collection in PEM, to pin in a notaryv1 rule.",
    )
    parser.add_argument("gun", metavar="GUN", help="the trust collection, <registry>/<repository>, e.g. docker.io/library/nginx")
    parser.add_argument("--server", required=True, help="the Notary server URL, e.g. https://notary.docker.io")
    parser.add_argument("--ca", help="CA bundle for the Notary server's TLS (default: the system CAs)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        fetch = NotaryFetcher(args.server, args.gun, deadline=Deadline(args.timeout), limits=Limits(), ca_bundle=args.ca)
        try:
            raw = fetch("root", Limits().max_manifest_bytes)
        finally:
            fetch.close()
        if raw is None:
            raise NoTrustData(f"the Notary server {args.server} has no trust data for {args.gun}")
        meta, role = self_signed_root(raw, args.gun)
        now = datetime.now(timezone.utc)
        printed = 0
        for key_id in role.key_ids:
            key = role.keys.get(key_id)
            if key is None or key.key is None:
                continue
            out.write(_describe_root_key(key, meta, args.gun, now))
            out.write(key.public_pem().decode())
            printed += 1
        if not printed:
            raise InvalidMetadata(f"root.json of {args.gun} names no usable root key")
        if printed > 1:
            err.write(f"signgate: {args.gun} has {printed} root keys; save each PEM block to its own file to pin it\n")
        return 0
    except SigngateError as exc:
        err.write(f"signgate: {exc}\n")
        return 2


def _describe_root_key(key: TufKey, meta: Metadata, gun: str, now: datetime) -> str:
    lines = [
        f"# root key of {gun} (root.json version {meta.version}, expires {_format_time(meta.expires)})",
        f"# key ID {key.key_id} ({key.keytype})",
    ]
    if key.certificate is not None:
        lines.append(f"# canonical key ID {key.canonical_id} (as `notary key list` shows it)")
        names = _common_names(key.certificate)
        lines.append(
            f"# certificate for {names[0] if names else '(no common name)'}, valid until "
            f"{_format_time(key.certificate.not_valid_after_utc)}"
        )
        unusable = _certificate_problem(key, gun, now)
        if unusable:
            lines.append(f"# WARNING: {unusable[1]}; signgate will not accept this root")
    else:
        lines.append("# WARNING: not a certificate key; signgate accepts only certificate-wrapped root keys")
    return "\n".join(lines) + "\n"
