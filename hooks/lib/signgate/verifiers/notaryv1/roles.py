"""The TUF roles: who may sign each file, and the chain root -> timestamp -> snapshot -> targets
-> delegations, each step checked against the one before.

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from ...encoding import b64_strict
from .errors import InvalidMetadata, MetadataExpired, NotaryError, RootNotTrusted, ThresholdNotMet
from .keys import TufKey, parse_keys, short_id, signature_is_valid
from .metadata import HASH_ALGORITHMS, Metadata, format_time, parse_metadata, verify_expiry, verify_file

if TYPE_CHECKING:
    from ...keys import PublicKey

BASE_ROLES = ("root", "targets", "snapshot", "timestamp")
MAX_TARGETS = 100_000  # bounds the work one (possibly hostile) server can cause
# A freshly made root certificate is valid from the signer's "now"; allow that much clock skew.
CLOCK_SKEW = timedelta(minutes=5)


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


def verify_signatures(meta: Metadata, role: Role) -> tuple[str, ...]:
    """Key IDs of the role whose signatures verify; raises ThresholdNotMet unless there are
    `threshold` of them.

    Distinct key IDs count once, however many signatures a key made.
    """
    valid: list[str] = []
    for signature in meta.signatures:
        if signature.key_id in valid or signature.key_id not in role.key_ids:
            continue
        key = role.keys.get(signature.key_id)
        if key is not None and signature_is_valid(key, signature.method, signature.value, meta.message):
            valid.append(signature.key_id)
    if len(valid) < role.threshold:
        raise ThresholdNotMet(
            f"{meta.label} is not validly signed: {len(valid)} of the {role.threshold} required "
            f"signature(s) of role {role.name} verify"
        )
    return tuple(valid)


def role_from(name: str, entry: Any, keys: Mapping[str, TufKey], label: str, paths: tuple[str, ...] | None) -> Role:
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
    keys = parse_keys(meta.signed.get("keys"), meta.label)
    roles_data = meta.signed.get("roles")
    if not isinstance(roles_data, dict):
        raise InvalidMetadata(f"{meta.label} has no roles")
    roles = {}
    for name in BASE_ROLES:
        if name not in roles_data:
            raise InvalidMetadata(f"{meta.label} does not define the {name} role")
        roles[name] = role_from(name, roles_data[name], keys, meta.label, None)
    return meta, keys, roles


def self_signed_root(raw: bytes, gun: str) -> tuple[Metadata, Role]:
    """root.json checked against its own root role only: what `root-key` can say before pinning."""
    meta, _keys, roles = parse_root(raw, gun)
    verify_signatures(meta, roles["root"])
    return meta, roles["root"]


def verify_root(raw: bytes, gun: str, pinned: Sequence[PublicKey], now: datetime) -> Root:
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
        listed = ", ".join(short_id(k) for k in root_ids) or "none"
        raise RootNotTrusted(
            f"root.json of {gun} is not signed by a pinned key: its root key(s) {listed} "
            f"(canonical IDs) are not among the pinned key(s) {names}"
        )
    signers: list[TufKey] = []
    for signature in meta.signatures:
        key = candidates.get(signature.key_id)
        if key is not None and key not in signers and signature_is_valid(key, signature.method, signature.value, meta.message):
            signers.append(key)
    if not signers:
        pinned_names = ", ".join(sorted({by_fingerprint[k.fingerprint].name for k in candidates.values()}))
        raise RootNotTrusted(
            f"root.json of {gun} is not signed by a pinned key: no valid signature by pinned key(s) {pinned_names}"
        )
    usable = [key for key in signers if certificate_problem(key, gun, now) is None]
    if not usable:
        error, problem = certificate_problem(signers[0], gun, now) or (RootNotTrusted, "")
        raise error(f"root.json of {gun} is not signed by a pinned key with a usable certificate: {problem}")
    verify_signatures(meta, roles["root"])
    verify_expiry(meta, now)
    pinned_by = tuple(dict.fromkeys(by_fingerprint[key.fingerprint].name for key in usable))
    return Root(meta, keys, roles, pinned_by, tuple(usable))


def common_names(certificate: Any) -> list[str]:
    import warnings

    from cryptography.x509.oid import NameOID

    with warnings.catch_warnings():
        # Notary puts the GUN in the CN, which may be longer than X.520's 64 characters.
        warnings.simplefilter("ignore")
        return [str(attr.value) for attr in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def certificate_problem(key: TufKey, gun: str, now: datetime) -> tuple[type[NotaryError], str] | None:
    """Why a root key's certificate is unusable, with the error that says so; None when usable."""
    certificate = key.certificate
    names = common_names(certificate)
    if names != [gun]:
        shown = names[0] if names else "no common name"
        return RootNotTrusted, f"the certificate of root key {short_id(key.canonical_id)} is for {shown!r}, not {gun!r}"
    if certificate.not_valid_after_utc < now:
        return MetadataExpired, (
            f"the certificate of root key {short_id(key.canonical_id)} expired at "
            f"{format_time(certificate.not_valid_after_utc)}"
        )
    if certificate.not_valid_before_utc > now + CLOCK_SKEW:  # `notary init` starts validity at "now"
        return RootNotTrusted, f"the certificate of root key {short_id(key.canonical_id)} is not valid yet"
    return None


def verify_timestamp(raw: bytes, root: Root, now: datetime) -> Metadata:
    meta = parse_metadata(raw, "timestamp", root.meta.gun)
    verify_signatures(meta, root.roles["timestamp"])
    verify_expiry(meta, now)
    listed = meta.signed.get("meta")
    if not isinstance(listed, dict) or not isinstance(listed.get("snapshot"), dict):
        raise InvalidMetadata(f"{meta.label} lists no snapshot")
    return meta


def verify_snapshot(raw: bytes, root: Root, timestamp: Metadata, now: datetime) -> Metadata:
    gun = root.meta.gun
    verify_file(raw, timestamp.signed["meta"]["snapshot"], f"snapshot.json of {gun}", "timestamp.json")
    meta = parse_metadata(raw, "snapshot", gun)
    verify_signatures(meta, root.roles["snapshot"])
    verify_expiry(meta, now)
    listed = meta.signed.get("meta")
    if not isinstance(listed, dict) or not isinstance(listed.get("targets"), dict):
        raise InvalidMetadata(f"{meta.label} lists no targets")
    if "root" in listed:  # Notary lists it; a root.json other than the one served is a split view
        verify_file(root.meta.raw, listed["root"], f"root.json of {gun}", "snapshot.json")
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
    verify_file(raw, listed, f"{role.name}.json of {gun}", "snapshot.json")
    meta = parse_metadata(raw, role.name, gun)
    verify_signatures(meta, role)
    verify_expiry(meta, now)
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
        decoded = {}
        for algorithm, value in hashes.items():
            if algorithm in HASH_ALGORITHMS and isinstance(value, str):
                digest = b64_strict(value, allow_empty=True)
                if digest is None:
                    raise InvalidMetadata(f"{meta.label}: target {name[:60]!r}: invalid base64")
                decoded[algorithm] = digest
        targets[name] = TargetFile(name, length, decoded)
    return Targets(role, meta, targets, parse_delegations(meta, role))


def parse_delegations(meta: Metadata, parent: Role) -> tuple[Role, ...]:
    """The roles a targets file delegates to: direct children of `parent` only, each restricted
    to the path prefixes its parent may sign."""
    data = meta.signed.get("delegations")
    if data is None:
        return ()
    if not isinstance(data, dict) or not isinstance(data.get("roles", []), list):
        raise InvalidMetadata(f"{meta.label}: delegations are malformed")
    keys = parse_keys(data.get("keys"), meta.label)
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
        roles.append(role_from(name, entry, keys, meta.label, paths))
    return tuple(roles)


_ROLE_NAME = re.compile(r"targets(/[-a-z0-9_]+)+\Z")


def _valid_role_name(name: str) -> bool:
    return len(name) < 256 and _ROLE_NAME.match(name) is not None
