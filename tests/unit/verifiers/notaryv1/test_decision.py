"""verify_target: whether verified trust data vouches for the manifest the registry serves."""

from __future__ import annotations

import pytest

from signgate.verifiers.notaryv1.decision import RELEASES_ROLE, short_digest, verify_target
from signgate.verifiers.notaryv1.errors import DelegationMissing, NoTrustData, TargetMismatch
from signgate.verifiers.notaryv1.trust_data import TrustCollection

from .tuf import GUN, NOW, Collection, Delegation, ecdsa_key, serve, target

SIGNED = "11" * 32
NEWER = "22" * 32
OTHER = "33" * 32


def sha(hex_digest: str) -> str:
    return f"sha256:{hex_digest}"


def trust(collection: Collection) -> TrustCollection:
    return TrustCollection(GUN, serve(collection.files()), [collection.root.pinned()], NOW, max_bytes=1 << 20)


def releases(targets: dict, name: str = RELEASES_ROLE) -> Delegation:
    return Delegation(name, ecdsa_key(), [""], targets)


def test_a_signed_tag_is_accepted_when_digest_and_length_match() -> None:
    collection = trust(Collection(targets={"v1": target(SIGNED, 100)}))
    accepted = verify_target(collection, tag="v1", digest=None, served_digest=sha(SIGNED), served_size=100)
    assert accepted.digest == sha(SIGNED) and accepted.signers == (("targets", "v1"),)
    assert accepted.describe() == "'v1' signed by targets"


@pytest.mark.parametrize(("digest", "size"), [(NEWER, 100), (SIGNED, 101)])
def test_a_tag_serving_other_bytes_is_a_mismatch(digest: str, size: int) -> None:
    collection = trust(Collection(targets={"v1": target(SIGNED, 100)}))
    with pytest.raises(TargetMismatch, match=(
        f"^the digest differs from the signed one: tag 'v1' is signed by targets as {sha(SIGNED)[:19]}… "
        f"\\(100 bytes\\), but the registry serves {sha(digest)[:19]}… \\({size} bytes\\)$"
    )):
        verify_target(collection, tag="v1", digest=None, served_digest=sha(digest), served_size=size)


def test_an_unsigned_tag_lists_the_signed_ones() -> None:
    collection = trust(Collection(targets={f"t{i:02}": target(SIGNED, 1) for i in range(12)}))
    with pytest.raises(NoTrustData, match=(
        f"^no trust data for the tag 'v9' in {GUN} \\(signed tags: t00, t01, t02, t03, t04, t05, t06, t07, t08, t09, …\\)$"
    )):
        verify_target(collection, tag="v9", digest=None, served_digest=sha(SIGNED), served_size=1)
    with pytest.raises(NoTrustData, match=r"\(signed tags: none\)$"):
        verify_target(trust(Collection()), tag="v9", digest=None, served_digest=sha(SIGNED), served_size=1)


def test_releases_is_read_before_targets_as_the_docker_client_does() -> None:
    collection = trust(Collection(targets={"v1": target(SIGNED, 100)}, delegations=[releases({"v1": target(NEWER, 100)})]))
    accepted = verify_target(collection, tag="v1", digest=None, served_digest=sha(NEWER), served_size=100)
    assert accepted.signers == ((RELEASES_ROLE, "v1"),)
    # The first target found decides: targets' older signature is not a second chance.
    with pytest.raises(TargetMismatch, match=f"signed by {RELEASES_ROLE} as"):
        verify_target(collection, tag="v1", digest=None, served_digest=sha(SIGNED), served_size=100)


def test_a_delegation_signs_only_within_its_paths() -> None:
    narrow = Delegation("targets/team", ecdsa_key(), ["team-"], {"v1": target(SIGNED, 1), "team-v1": target(SIGNED, 1)})
    collection = trust(Collection(delegations=[narrow]))
    with pytest.raises(NoTrustData, match=r"\(signed tags: team-v1\)$"):
        verify_target(collection, tag="v1", digest=None, served_digest=sha(SIGNED), served_size=1)
    assert verify_target(collection, tag="team-v1", digest=None, served_digest=sha(SIGNED), served_size=1).signers == (("targets/team", "team-v1"),)


def test_required_delegations_must_each_have_signed_the_tag() -> None:
    collection = trust(Collection(targets={"v1": target(SIGNED, 1)}))
    with pytest.raises(DelegationMissing, match=(
        f"^the required delegation {RELEASES_ROLE} did not sign tag 'v1': targets delegates no role {RELEASES_ROLE}$"
    )):
        verify_target(collection, tag="v1", digest=None, served_digest=sha(SIGNED), served_size=1, required=(RELEASES_ROLE,))

    collection = trust(Collection(targets={"v1": target(SIGNED, 1)}, delegations=[releases({"other": target(SIGNED, 1)})]))
    with pytest.raises(DelegationMissing, match=(
        f"^the required delegation {RELEASES_ROLE} did not sign tag 'v1' in {GUN} \\(it is signed by targets\\)$"
    )):
        verify_target(collection, tag="v1", digest=None, served_digest=sha(SIGNED), served_size=1, required=(RELEASES_ROLE,))

    both = [releases({"v1": target(SIGNED, 1)}), releases({"v1": target(SIGNED, 1)}, "targets/qa")]
    collection = trust(Collection(delegations=both))
    accepted = verify_target(collection, tag="v1", digest=None, served_digest=sha(SIGNED), served_size=1,
                             required=(RELEASES_ROLE, "targets/qa"))
    assert accepted.signers == ((RELEASES_ROLE, "v1"), ("targets/qa", "v1"))
    assert accepted.describe() == f"'v1' signed by {RELEASES_ROLE}; 'v1' signed by targets/qa"


def test_a_required_delegation_that_signed_other_bytes_is_a_mismatch_even_if_targets_agrees() -> None:
    collection = trust(Collection(targets={"v1": target(NEWER, 1)}, delegations=[releases({"v1": target(SIGNED, 1)})]))
    with pytest.raises(TargetMismatch, match=f"signed by {RELEASES_ROLE} as"):
        verify_target(collection, tag="v1", digest=None, served_digest=sha(NEWER), served_size=1, required=(RELEASES_ROLE,))


def test_a_digest_reference_needs_some_signed_target_carrying_it() -> None:
    collection = trust(Collection(targets={"v1": target(SIGNED, 5)}, delegations=[releases({"r1": target(NEWER, 6)})]))
    assert verify_target(collection, tag=None, digest=sha(SIGNED), served_digest=sha(SIGNED), served_size=5).signers == (("targets", "v1"),)
    assert verify_target(collection, tag=None, digest=sha(NEWER), served_digest=sha(NEWER), served_size=6).signers == ((RELEASES_ROLE, "r1"),)
    with pytest.raises(NoTrustData, match=f"^no trust data for digest {short_digest(sha(OTHER))} in {GUN}: no signed target carries it$"):
        verify_target(collection, tag=None, digest=sha(OTHER), served_digest=sha(OTHER), served_size=5)
    with pytest.raises(NoTrustData):  # the right digest with another length is another target
        verify_target(collection, tag=None, digest=sha(SIGNED), served_digest=sha(SIGNED), served_size=6)


def test_a_digest_reference_with_required_delegations() -> None:
    collection = trust(Collection(targets={"v1": target(SIGNED, 5)}, delegations=[releases({"r1": target(NEWER, 6)})]))
    accepted = verify_target(collection, tag=None, digest=sha(NEWER), served_digest=sha(NEWER), served_size=6, required=(RELEASES_ROLE,))
    assert accepted.signers == ((RELEASES_ROLE, "r1"),)
    with pytest.raises(DelegationMissing, match=f"^the required delegation {RELEASES_ROLE} did not sign digest {short_digest(sha(SIGNED))} in {GUN}$"):
        verify_target(collection, tag=None, digest=sha(SIGNED), served_digest=sha(SIGNED), served_size=5, required=(RELEASES_ROLE,))
    with pytest.raises(DelegationMissing, match=f"did not sign digest {short_digest(sha(SIGNED))}: targets delegates no role targets/qa$"):
        verify_target(collection, tag=None, digest=sha(SIGNED), served_digest=sha(SIGNED), served_size=5, required=("targets/qa",))


def test_short_digest() -> None:
    assert short_digest("sha256:" + "a" * 64) == "sha256:aaaaaaaaaaaa…"
    assert short_digest("sha256:abc") == "sha256:abc"
