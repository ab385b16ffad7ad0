"""Signed metadata: the envelope, expiry, and the length and hashes one file lists for another."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from signgate.verifiers.notaryv1.canonical_json import canonical_json
from signgate.verifiers.notaryv1.errors import HashMismatch, InvalidMetadata, MetadataExpired
from signgate.verifiers.notaryv1.metadata import (
    MAX_SIGNATURES,
    format_time,
    parse_metadata,
    parse_time,
    verify_expiry,
    verify_file,
)

from .tuf import FAR, NOW, b64, ecdsa_key, file_meta, sign_file

TARGETS = {"_type": "Targets", "expires": FAR, "version": 3, "targets": {}}


def test_parse_time_takes_go_nanoseconds_and_offsets() -> None:
    assert parse_time("2036-11-20T09:43:14.251537882Z") == datetime(2036, 11, 20, 9, 43, 14, 251537, tzinfo=timezone.utc)
    assert parse_time("2030-01-01T02:00:00+02:00") == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert parse_time("2030-01-01t00:00:00z") == datetime(2030, 1, 1, tzinfo=timezone.utc)
    for bad in ("2030-01-01 00:00:00", "2030-01-01T00:00:00", 20300101, None, "2030-01-01T00:00:00Z trailing"):
        with pytest.raises(ValueError, match="not an RFC 3339 time"):
            parse_time(bad)
    assert format_time(parse_time("2030-01-01T02:00:00+02:00")) == "2030-01-01 00:00:00 UTC"


def test_parse_metadata_reads_the_envelope_and_signs_over_canonical_json() -> None:
    signer = ecdsa_key()
    raw = sign_file(TARGETS, [signer])
    meta = parse_metadata(raw, "targets", "g")
    assert (meta.role, meta.gun, meta.version, meta.label) == ("targets", "g", 3, "targets.json of g")
    assert meta.expires == parse_time(FAR) and meta.raw == raw
    assert meta.message == canonical_json(TARGETS)  # not the bytes as served (json.dumps added spaces)
    [signature] = meta.signatures
    assert signature.key_id == signer.key_id and signature.method == "ecdsa"
    # A delegation is a Targets file too.
    assert parse_metadata(raw, "targets/releases", "g").label == "targets/releases.json of g"


def _envelope(signed: object = TARGETS, signatures: object = ()) -> bytes:
    return json.dumps({"signed": signed, "signatures": list(signatures) if isinstance(signatures, tuple) else signatures}).encode()


@pytest.mark.parametrize(
    ("raw", "role", "message"),
    [
        (b"[]", "targets", "^targets.json of g is not signed TUF metadata$"),
        (json.dumps({"signed": TARGETS}).encode(), "targets", "^targets.json of g has no signatures list$"),
        (_envelope(signatures=[{"keyid": "k"}]), "targets", "^targets.json of g has a malformed signature$"),
        (_envelope(signatures=[{"keyid": "k", "method": "ecdsa", "sig": "%%"}]), "targets", "^targets.json of g: signature: invalid base64$"),
        (_envelope(signatures=[{"keyid": "k", "method": "ecdsa", "sig": ""}] * (MAX_SIGNATURES + 1)), "targets",
         f"^targets.json of g has more than {MAX_SIGNATURES} signatures$"),
        (_envelope(), "snapshot", "^snapshot.json of g has type 'Targets', not 'Snapshot'$"),
        (_envelope({**TARGETS, "version": -1}), "targets", "^targets.json of g has no valid version$"),
        (_envelope({**TARGETS, "version": True}), "targets", "^targets.json of g has no valid version$"),
        (_envelope({**TARGETS, "expires": "tomorrow"}), "targets", "^targets.json of g: not an RFC 3339 time: 'tomorrow'$"),
        (_envelope(TARGETS).replace(b'"version": 3', b'"version": 3.0'), "targets", "not an integer"),
        (_envelope(TARGETS).replace(b'"version": 3', b'"version": 3, "version": 4'), "targets", "duplicate key 'version'"),
    ],
)
def test_parse_metadata_refuses_malformed_files(raw: bytes, role: str, message: str) -> None:
    with pytest.raises(InvalidMetadata, match=message):
        parse_metadata(raw, role, "g")


def test_the_signature_method_is_read_case_insensitively() -> None:
    raw = _envelope(signatures=[{"keyid": "k", "method": "ECDSA", "sig": b64(b"s")}])
    assert parse_metadata(raw, "targets", "g").signatures[0].method == "ecdsa"


def test_verify_expiry_raises_only_after_the_expiry() -> None:
    meta = parse_metadata(_envelope({**TARGETS, "expires": "2030-01-01T00:00:00Z"}), "targets", "g")
    verify_expiry(meta, NOW)  # expiring now is still current
    with pytest.raises(MetadataExpired, match="^metadata expired: targets.json of g expired at 2030-01-01 00:00:00 UTC$"):
        verify_expiry(meta, NOW + timedelta(microseconds=1))


def test_verify_file_checks_length_and_every_listed_hash() -> None:
    data = b"snapshot bytes"
    entry = file_meta(data)
    verify_file(data, entry, "snapshot.json", "timestamp.json")
    verify_file(data, {**entry, "hashes": {"sha512": entry["hashes"]["sha512"], "md5": "x"}}, "snapshot.json", "timestamp.json")
    with pytest.raises(HashMismatch, match="^snapshot.json is 15 bytes, but timestamp.json lists 14$"):
        verify_file(data + b"!", entry, "snapshot.json", "timestamp.json")
    for algorithm in ("sha256", "sha512"):
        wrong = {**entry, "hashes": {**entry["hashes"], algorithm: b64(bytes(hashlib.new(algorithm).digest_size))}}
        with pytest.raises(HashMismatch, match=f"^snapshot.json does not match the {algorithm} that timestamp.json lists for it$"):
            verify_file(data, wrong, "snapshot.json", "timestamp.json")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([], "^timestamp.json has a malformed entry for snapshot.json$"),
        ({"length": 14}, "^timestamp.json lists no length or hashes for snapshot.json$"),
        ({"length": True, "hashes": {}}, "^timestamp.json lists no length or hashes for snapshot.json$"),
        ({"length": 14, "hashes": {"md5": "AAAA"}}, "^timestamp.json lists no sha256 or sha512 for snapshot.json$"),
        ({"length": 14, "hashes": {"sha256": 5}}, "^timestamp.json lists a malformed sha256 for snapshot.json$"),
        ({"length": 14, "hashes": {"sha256": "!!"}}, "^timestamp.json: sha256 of snapshot.json: invalid base64$"),
    ],
)
def test_verify_file_refuses_malformed_entries(entry: object, message: str) -> None:
    with pytest.raises(InvalidMetadata, match=message):
        verify_file(b"snapshot bytes", entry, "snapshot.json", "timestamp.json")
