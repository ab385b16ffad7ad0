"""Roles and thresholds, and each link of the chain root -> timestamp -> snapshot -> targets."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from signgate.verifiers.notaryv1.errors import (
    HashMismatch,
    InvalidMetadata,
    MetadataExpired,
    RootNotTrusted,
    ThresholdNotMet,
)
from signgate.verifiers.notaryv1.keys import parse_key
from signgate.verifiers.notaryv1.metadata import parse_metadata
from signgate.verifiers.notaryv1.roles import (
    CLOCK_SKEW,
    Role,
    Root,
    parse_delegations,
    parse_root,
    role_from,
    self_signed_root,
    verify_root,
    verify_signatures,
    verify_snapshot,
    verify_targets,
    verify_timestamp,
)

from .tuf import FAR, GUN, NOW, Collection, Signer, ecdsa_key, ed25519_key, file_meta, role_entry, root_key, sign_file

TARGETS = {"_type": "Targets", "expires": FAR, "version": 1, "targets": {}}


@pytest.fixture(scope="module")
def three() -> list[Signer]:
    return [ecdsa_key(), ed25519_key(), ecdsa_key()]


def _role(signers: list[Signer], threshold: int, name: str = "targets") -> Role:
    keys = {s.key_id: parse_key(s.key_id, s.obj, "test") for s in signers}
    return Role(name, tuple(keys), threshold, keys)


# ---- signatures and thresholds ------------------------------------------------------------------


def test_threshold_counts_distinct_valid_keys_of_the_role(three: list[Signer]) -> None:
    role = _role(three, 2)
    both = parse_metadata(sign_file(TARGETS, three[:2]), "targets", "g")
    assert verify_signatures(both, role) == (three[0].key_id, three[1].key_id)

    twice = parse_metadata(sign_file(TARGETS, [three[0], three[0]]), "targets", "g")
    with pytest.raises(ThresholdNotMet, match=r"^targets.json of g is not validly signed: 1 of the 2 required signature\(s\) of role targets verify$"):
        verify_signatures(twice, role)

    outsider = ecdsa_key()  # valid signature, but not a key of the role
    with pytest.raises(ThresholdNotMet, match="1 of the 2"):
        verify_signatures(parse_metadata(sign_file(TARGETS, [three[0], outsider]), "targets", "g"), role)

    corrupt = parse_metadata(sign_file(TARGETS, three, corrupt=True), "targets", "g")
    with pytest.raises(ThresholdNotMet, match="0 of the 2"):
        verify_signatures(corrupt, role)

    raw = parse_metadata(sign_file(TARGETS, [three[2], three[0]], raw_ecdsa=True), "targets", "g")
    assert len(verify_signatures(raw, role)) == 2


def test_a_key_listed_by_the_role_but_not_in_the_keys_map_counts_nothing(three: list[Signer]) -> None:
    role = replace(_role(three, 1), keys={})
    with pytest.raises(ThresholdNotMet, match="0 of the 1"):
        verify_signatures(parse_metadata(sign_file(TARGETS, three[:1]), "targets", "g"), role)


def test_signature_over_other_content_does_not_count(three: list[Signer]) -> None:
    document = json.loads(sign_file(TARGETS, three[:1]))
    document["signed"]["version"] = 2
    with pytest.raises(ThresholdNotMet):
        verify_signatures(parse_metadata(json.dumps(document).encode(), "targets", "g"), _role(three, 1))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([], "^l: role r is malformed$"),
        ({"keyids": "k", "threshold": 1}, "^l: role r has no key ID list$"),
        ({"keyids": ["k"], "threshold": 0}, "^l: role r has no valid threshold$"),
        ({"keyids": ["k"], "threshold": True}, "^l: role r has no valid threshold$"),
    ],
)
def test_role_from_refuses_malformed_roles(entry: object, message: str) -> None:
    with pytest.raises(InvalidMetadata, match=message):
        role_from("r", entry, {}, "l", None)


def test_role_from_lists_each_key_id_once() -> None:
    role = role_from("r", {"keyids": ["a", "b", "a"], "threshold": 2}, {}, "l", None)
    assert role.key_ids == ("a", "b") and role.keys == {}


# ---- delegations --------------------------------------------------------------------------------


def test_delegation_paths_are_restricted_by_the_parent() -> None:
    signed = {**TARGETS, "delegations": {"keys": {}, "roles": [
        {"name": "targets/a/b", "keyids": [], "threshold": 1, "paths": ["ab", "abc/x", "zz"]},
    ]}}
    meta = replace(parse_metadata(sign_file(TARGETS, []), "targets/a", "g"), signed=signed)
    parent = Role("targets/a", (), 1, {}, paths=("abc",))
    [child] = parse_delegations(meta, parent)
    assert child.paths == ("abc/x",)  # "ab" is wider than the parent allows; "zz" lies outside it
    assert child.allows("abc/x/1") and not child.allows("abd")
    top = Role("targets", (), 1, {})
    assert parse_delegations(replace(meta, signed={**signed, "delegations": {"roles": [
        {"name": "targets/a", "keyids": [], "threshold": 1, "paths": ["ab"]}]}}), top)[0].paths == ("ab",)


@pytest.mark.parametrize(
    ("delegations", "message"),
    [
        ({"roles": {}}, "^targets.json of g: delegations are malformed$"),
        ({"roles": [{"name": "targets/x/y", "keyids": [], "threshold": 1}]}, "delegates to 'targets/x/y', which is not a child role of targets$"),
        ({"roles": [{"name": "targets/UPPER", "keyids": [], "threshold": 1}]}, "which is not a child role of targets$"),
        ({"roles": [{"name": "targets/", "keyids": [], "threshold": 1}]}, "which is not a child role of targets$"),
        ({"roles": [{"name": "targets/a", "keyids": [], "threshold": 1, "paths": "x"}]}, "^targets.json of g: paths of targets/a are malformed$"),
    ],
)
def test_parse_delegations_refuses_what_notary_refuses(delegations: object, message: str) -> None:
    meta = replace(parse_metadata(sign_file(TARGETS, []), "targets", "g"), signed={**TARGETS, "delegations": delegations})
    with pytest.raises(InvalidMetadata, match=message):
        parse_delegations(meta, Role("targets", (), 1, {}))


# ---- root ---------------------------------------------------------------------------------------


def test_root_signed_by_the_pinned_key_is_trusted() -> None:
    collection = Collection()
    root = verify_root(collection.files()["root"], GUN, [collection.root.pinned("ops-root")], NOW)
    assert root.pinned_by == ("ops-root",)
    assert [k.key_id for k in root.signing_keys] == [collection.root.key_id]
    assert set(root.roles) == {"root", "targets", "snapshot", "timestamp"}


def test_root_not_signed_by_a_pinned_key_names_both_sides() -> None:
    collection = Collection()
    other = ecdsa_key().pinned("other")
    canonical = parse_key(collection.root.key_id, collection.root.obj, "r").canonical_id
    with pytest.raises(RootNotTrusted, match=(
        rf"^root.json of {GUN} is not signed by a pinned key: its root key\(s\) {canonical[:12]}… "
        r"\(canonical IDs\) are not among the pinned key\(s\) other$"
    )):
        verify_root(collection.files()["root"], GUN, [other], NOW)


def test_a_pinned_plain_key_in_root_json_does_not_count() -> None:
    """Only certificate-wrapped root keys are accepted, as Notary's trust pinning does."""
    plain = ecdsa_key()
    collection = Collection(root=plain)
    with pytest.raises(RootNotTrusted, match="are not among the pinned key"):
        verify_root(collection.files()["root"], GUN, [plain.pinned()], NOW)


def test_root_whose_pinned_signature_is_broken_is_not_trusted() -> None:
    collection = Collection()
    document = json.loads(collection.files()["root"])
    document["signed"]["version"] = 2  # the signature was made over version 1
    with pytest.raises(RootNotTrusted, match="no valid signature by pinned key\\(s\\) root$"):
        verify_root(json.dumps(document).encode(), GUN, [collection.root.pinned()], NOW)


@pytest.mark.parametrize(
    ("certificate", "error", "problem"),
    [
        ({"gun": "registry.example/other"}, RootNotTrusted, "is for 'registry.example/other', not 'registry.example/team/app'"),
        ({"not_after": NOW - timedelta(seconds=1)}, MetadataExpired, "expired at 2029-12-31 23:59:59 UTC"),
        ({"not_before": NOW + CLOCK_SKEW + timedelta(seconds=1)}, RootNotTrusted, "is not valid yet"),
    ],
)
def test_the_root_certificate_must_name_the_gun_and_be_valid_now(certificate: dict, error: type, problem: str) -> None:
    signer = root_key(**certificate)
    collection = Collection(root=signer)
    with pytest.raises(error, match=f"^root.json of {GUN} is not signed by a pinned key with a usable certificate: the certificate of root key .*{problem}$"):
        verify_root(collection.files()["root"], GUN, [signer.pinned()], NOW)


def test_a_certificate_starting_within_the_clock_skew_is_accepted() -> None:
    signer = root_key(not_before=NOW + CLOCK_SKEW - timedelta(seconds=1))
    assert verify_root(Collection(root=signer).files()["root"], GUN, [signer.pinned()], NOW).pinned_by == ("root",)


def test_root_must_also_meet_its_own_threshold_and_expiry() -> None:
    collection = Collection(expires={"root": "2029-06-01T00:00:00Z"})
    with pytest.raises(MetadataExpired, match=f"^metadata expired: root.json of {GUN} expired at 2029-06-01 00:00:00 UTC$"):
        verify_root(collection.files()["root"], GUN, [collection.root.pinned()], NOW)

    second = ecdsa_key()
    collection = Collection(tamper={"root": lambda signed: signed["roles"]["root"].update(
        {"keyids": signed["roles"]["root"]["keyids"] + [second.key_id], "threshold": 2})})
    with pytest.raises(ThresholdNotMet, match=r"^root.json of .* 1 of the 2 required signature\(s\) of role root verify$"):
        verify_root(collection.files()["root"], GUN, [collection.root.pinned()], NOW)


def test_root_must_define_every_base_role() -> None:
    collection = Collection(tamper={"root": lambda signed: signed["roles"].pop("snapshot")})
    with pytest.raises(InvalidMetadata, match=f"^root.json of {GUN} does not define the snapshot role$"):
        parse_root(collection.files()["root"], GUN)


def test_self_signed_root_checks_the_root_role_without_a_pin() -> None:
    collection = Collection()
    meta, role = self_signed_root(collection.files()["root"], GUN)
    assert meta.version == 1 and role.key_ids == (collection.root.key_id,)
    with pytest.raises(ThresholdNotMet):
        self_signed_root(sign_file(json.loads(collection.files()["root"])["signed"], [ecdsa_key()]), GUN)


# ---- timestamp, snapshot, targets ---------------------------------------------------------------


def _root(collection: Collection, files: dict[str, bytes]) -> Root:
    # ECDSA signatures are randomised: each files() call makes new bytes, so pass the same files.
    return verify_root(files["root"], collection.gun, [collection.root.pinned()], NOW)


def test_the_chain_verifies_link_by_link() -> None:
    collection = Collection(targets={"v1": {"length": 3, "hashes": {"sha256": "AAAA"}}})
    files = collection.files()
    root = _root(collection, files)
    timestamp = verify_timestamp(files["timestamp"], root, NOW)
    snapshot = verify_snapshot(files["snapshot"], root, timestamp, NOW)
    targets = verify_targets(files["targets"], root.roles["targets"], snapshot.signed["meta"]["targets"], snapshot, NOW)
    assert targets.target("v1") is not None and targets.target("v2") is None
    assert targets.delegations == ()

    # Each file is signed by its own role: the snapshot key cannot sign a timestamp.
    forged = sign_file(json.loads(files["timestamp"])["signed"], [collection.snapshot])
    with pytest.raises(ThresholdNotMet, match="of role timestamp verify"):
        verify_timestamp(forged, root, NOW)


def test_timestamp_must_list_the_snapshot() -> None:
    collection = Collection(tamper={"timestamp": lambda signed: signed["meta"].pop("snapshot")})
    files = collection.files()
    with pytest.raises(InvalidMetadata, match=f"^timestamp.json of {GUN} lists no snapshot$"):
        verify_timestamp(files["timestamp"], _root(collection, files), NOW)


def test_snapshot_must_match_the_timestamp_and_the_root_served() -> None:
    collection = Collection()
    files = collection.files()
    root = _root(collection, files)
    timestamp = verify_timestamp(files["timestamp"], root, NOW)
    with pytest.raises(HashMismatch, match=f"^snapshot.json of {GUN} is"):
        verify_snapshot(files["snapshot"] + b" ", root, timestamp, NOW)

    # A snapshot listing another root.json than the one verified: a split view.
    other = Collection(root=collection.root, timestamp=collection.timestamp, snapshot=collection.snapshot,
                       targets_key=collection.targets_key,
                       tamper={"snapshot": lambda signed: signed["meta"].update(root=file_meta(b"another root"))})
    other_files = other.files()
    timestamp = verify_timestamp(other_files["timestamp"], root, NOW)
    with pytest.raises(HashMismatch, match=f"^root.json of {GUN} is \\d+ bytes, but snapshot.json lists 12$"):
        verify_snapshot(other_files["snapshot"], root, timestamp, NOW)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"v1": {"length": 1}}, "target 'v1' is malformed"),
        ({"v1": {"length": 1, "hashes": {"sha256": "!"}}}, "target 'v1': invalid base64"),
    ],
)
def test_targets_entries_are_checked(targets: dict, message: str) -> None:
    collection = Collection(targets=targets)
    files = collection.files()
    root = _root(collection, files)
    snapshot = verify_snapshot(files["snapshot"], root, verify_timestamp(files["timestamp"], root, NOW), NOW)
    with pytest.raises(InvalidMetadata, match=f"^targets.json of {GUN}: {message}$"):
        verify_targets(files["targets"], root.roles["targets"], snapshot.signed["meta"]["targets"], snapshot, NOW)


def test_role_entry_helper_matches_what_role_from_reads() -> None:
    signer = ecdsa_key()
    role = role_from("targets", role_entry([signer], 1), {signer.key_id: parse_key(signer.key_id, signer.obj, "l")}, "l", None)
    assert role.key_ids == (signer.key_id,) and role.threshold == 1 and role.paths is None
