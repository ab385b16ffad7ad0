"""Signed TUF metadata: the `{"signed": ..., "signatures": [...]}` envelope, its expiry, and the
length and hashes one signed file lists for another."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from ...encoding import b64_strict
from .canonical_json import canonical_json, parse_json
from .errors import HashMismatch, InvalidMetadata, MetadataExpired

TUF_TYPES = {"root": "Root", "timestamp": "Timestamp", "snapshot": "Snapshot", "targets": "Targets"}
HASH_ALGORITHMS = ("sha256", "sha512")
MAX_SIGNATURES = 64  # bounds the work one (possibly hostile) server can cause

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


def format_time(when: datetime) -> str:
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
        value = b64_strict(entry["sig"], allow_empty=True)
        if value is None:
            raise InvalidMetadata(f"{label}: signature: invalid base64")
        signatures.append(Signature(entry["keyid"], entry["method"].lower(), value))
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


def verify_expiry(meta: Metadata, now: datetime) -> None:
    """Raises MetadataExpired when `meta` expired before `now`."""
    if meta.expires < now:
        raise MetadataExpired(f"metadata expired: {meta.label} expired at {format_time(meta.expires)}")


def verify_file(raw: bytes, entry: Any, label: str, listed_in: str) -> None:
    """Length and hashes of a file against the entry that a signed file lists for it.

    Every listed hash of a supported algorithm must match, and at least one must be listed.
    Raises HashMismatch or InvalidMetadata.
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
        expected = b64_strict(encoded, allow_empty=True)
        if expected is None:
            raise InvalidMetadata(f"{listed_in}: {algorithm} of {label}: invalid base64")
        if hashlib.new(algorithm, raw).digest() != expected:
            raise HashMismatch(f"{label} does not match the {algorithm} that {listed_in} lists for it")
        checked += 1
    if not checked:
        raise InvalidMetadata(f"{listed_in} lists no sha256 or sha512 for {label}")
