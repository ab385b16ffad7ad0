"""TrustCollection over fabricated files: what is fetched, with which cap, and in which order."""

from __future__ import annotations

import json

import pytest

from signgate.verifiers.notaryv1.errors import HashMismatch, InvalidMetadata, MetadataExpired, NoTrustData, NotaryTooLarge
from signgate.verifiers.notaryv1.trust_data import MAX_TIMESTAMP_BYTES, TrustCollection

from .tuf import GUN, NOW, Collection, Delegation, ecdsa_key, file_meta, serve, sign_file, target

DIGEST = "ab" * 32


def _collection(
    files: dict[str, bytes], collection: Collection, asked: list[tuple[str, int]] | None = None, **kwargs: int
) -> TrustCollection:
    return TrustCollection(GUN, serve(files, asked), [collection.root.pinned()], NOW, max_bytes=kwargs.pop("max_bytes", 1 << 20), **kwargs)


def test_top_level_files_are_fetched_in_chain_order_each_capped_by_what_lists_it() -> None:
    collection = Collection(targets={"v1": target(DIGEST, 10)})
    files = collection.files()
    asked: list[tuple[str, int]] = []
    trust = _collection(files, collection, asked)
    assert asked == [
        ("root", 1 << 20),  # nothing lists root.json: the configured cap
        ("timestamp", MAX_TIMESTAMP_BYTES),  # nor the timestamp: its own small cap
        ("snapshot", len(files["snapshot"])),  # the length timestamp.json lists
        ("targets", len(files["targets"])),  # the length snapshot.json lists
    ]
    assert trust.root.pinned_by == ("root",) and trust.targets.target("v1") is not None


def test_no_root_json_means_no_trust_data_and_a_missing_file_after_it_is_invalid() -> None:
    collection = Collection()
    files = collection.files()
    with pytest.raises(NoTrustData, match=f"^the Notary server has no trust data for {GUN}$"):
        _collection({}, collection)
    for missing in ("timestamp", "snapshot", "targets"):
        with pytest.raises(InvalidMetadata, match=f"^the Notary server has root.json but no {missing}.json for {GUN}$"):
            _collection({k: v for k, v in files.items() if k != missing}, collection)


def test_a_file_longer_than_listed_is_never_read_whole_and_a_shorter_one_fails_the_hash() -> None:
    collection = Collection()
    files = collection.files()
    with pytest.raises(NotaryTooLarge, match=r"^snapshot.json is larger than the limit of \d+ bytes$"):
        _collection({**files, "snapshot": files["snapshot"] + b" "}, collection)
    with pytest.raises(HashMismatch, match=f"^snapshot.json of {GUN} is \\d+ bytes, but timestamp.json lists \\d+$"):
        _collection({**files, "snapshot": files["snapshot"][:-1]}, collection)


def test_a_listed_length_over_the_limit_is_refused_before_fetching() -> None:
    collection = Collection(targets={f"t{i}": target(DIGEST, i) for i in range(50)})
    files = collection.files()
    asked: list[tuple[str, int]] = []
    limit = len(files["targets"]) - 1
    with pytest.raises(InvalidMetadata, match=f"^targets.json of {GUN} is listed as {len(files['targets'])} bytes, over the limit of {limit}$"):
        _collection(files, collection, asked, max_bytes=max(limit, len(files["snapshot"]), len(files["root"])))
    assert "targets" not in [role for role, _ in asked]


def test_expired_timestamp_is_refused() -> None:
    collection = Collection(expires={"timestamp": "2029-12-31T00:00:00Z"})
    with pytest.raises(MetadataExpired, match=f"^metadata expired: timestamp.json of {GUN} expired at 2029-12-31 00:00:00 UTC$"):
        _collection(collection.files(), collection)


def _tree() -> Collection:
    """targets -> releases (paths: all) -> releases/qa (paths: qa-) ; targets -> other (paths: x-)."""
    qa = Delegation("targets/releases/qa", ecdsa_key(), ["qa-"], {"qa-1": target(DIGEST, 1)})
    releases = Delegation("targets/releases", ecdsa_key(), [""], {"v1": target(DIGEST, 1)}, [qa])
    other = Delegation("targets/other", ecdsa_key(), ["x-"], {"x-1": target(DIGEST, 1)})
    return Collection(targets={"v1": target(DIGEST, 1)}, delegations=[releases, other])


def test_delegation_files_are_fetched_when_first_asked_for_and_once() -> None:
    collection = _tree()
    files = collection.files()
    asked: list[tuple[str, int]] = []
    trust = _collection(files, collection, asked)
    assert [role for role, _ in asked] == ["root", "timestamp", "snapshot", "targets"]
    qa = trust.role("targets/releases/qa")
    assert qa is not None and qa.target("qa-1") is not None
    assert [role for role, _ in asked][4:] == ["targets/releases", "targets/releases/qa"]
    assert asked[-1] == ("targets/releases/qa", len(files["targets/releases/qa"]))
    assert trust.role("targets/releases/qa") is qa and len(asked) == 6


def test_walk_is_pre_order_and_skips_subtrees_that_cannot_hold_the_target() -> None:
    collection = _tree()
    trust = _collection(collection.files(), collection)
    assert [t.role.name for t in trust.walk("targets")] == ["targets", "targets/releases", "targets/releases/qa", "targets/other"]
    assert [t.role.name for t in trust.walk("targets", "v1")] == ["targets", "targets/releases"]
    assert [t.role.name for t in trust.walk("targets", "qa-1")] == ["targets", "targets/releases", "targets/releases/qa"]
    assert list(trust.walk("targets/none")) == []


def test_why_a_role_is_absent() -> None:
    collection = _tree()
    trust = _collection(collection.files(), collection)
    assert trust.role("releases") is None and trust.why_absent("releases") == "releases is not a delegation role"
    assert trust.role("targets/nobody") is None and trust.why_absent("targets/nobody") == "targets delegates no role targets/nobody"
    assert trust.role("targets/nobody/child") is None
    assert trust.why_absent("targets/nobody/child") == "targets delegates no role targets/nobody"
    assert trust.why_absent("targets/never-asked") == "targets/never-asked has no trust data"


def test_a_delegation_listed_in_the_snapshot_but_missing_on_the_server_is_invalid() -> None:
    collection = _tree()
    files = collection.files()
    trust = _collection({k: v for k, v in files.items() if k != "targets/other"}, collection)
    with pytest.raises(InvalidMetadata, match=f"^snapshot.json of {GUN} lists targets/other.json, but the Notary server has none$"):
        trust.role("targets/other")


def test_a_delegation_not_in_the_snapshot_has_no_trust_data() -> None:
    collection = _tree()
    files = collection.files()
    # Delegated but never signed into: the snapshot, re-signed, does not list it.
    snapshot = json.loads(files["snapshot"])["signed"]
    del snapshot["meta"]["targets/other"]
    files["snapshot"] = sign_file(snapshot, [collection.snapshot])
    timestamp = json.loads(files["timestamp"])["signed"]
    timestamp["meta"]["snapshot"] = file_meta(files["snapshot"])
    files["timestamp"] = sign_file(timestamp, [collection.timestamp])
    trust = _collection(files, collection)
    assert trust.role("targets/other") is None
    assert trust.why_absent("targets/other") == "targets/other has no trust data (the snapshot lists no targets/other.json)"


def test_the_number_of_delegation_files_is_bounded() -> None:
    collection = _tree()
    trust = _collection(collection.files(), collection, max_roles=2)
    assert trust.role("targets/releases") is not None
    with pytest.raises(InvalidMetadata, match=f"^the trust data of {GUN} needs more than 2 delegation files$"):
        trust.role("targets/releases/qa")
