"""Specification of multi-arch images (cosign-format.md §7) and the rule setting `multiArch`.

cosign signs what a tag resolves to, which for a multi-arch image is the index, unless `-r` also
signs every platform manifest; other tools sign per platform. A pod names either the tag (so the
index) or, pinned, a platform digest. What signgate admits:

- `multiArch: exact` (default, as `cosign verify`): the signature must be on the very digest the
  reference resolves to;
- `multiArch: index-or-platforms`: an index also passes when EVERY runnable platform it lists is
  signed (the node picks one, so each must be), and `name:tag@sha256:<platform>` also passes when
  the tag resolves to a signed index that lists that platform.

Every test runs against a real docker-registry; most go through the real hook.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.oci import PushedIndex, RegistryHTTP, push_index
from support.signer import TestKey, sign_bundle, sign_legacy
from integration.test_bundles import admit, config_data, verify

ATTESTATION_PLATFORM = ("unknown", "unknown")


@pytest.fixture
def trusted(keys: dict[str, TestKey]) -> TestKey:
    return keys["ecdsa-p256"]


@pytest.fixture
def index(http: RegistryHTTP, repo: str) -> PushedIndex:
    return push_index(http, repo, "v1")


def rule(http: RegistryHTTP, key: TestKey, multi_arch: str | None, **fields: Any) -> dict[str, Any]:
    settings = {"multiArch": multi_arch} if multi_arch else {}
    return config_data([http.host], {"release": key}, {**settings, **fields})


def pinned(index: PushedIndex, digest: str) -> str:
    """`name:tag@sha256:<digest>`, as tools that pin a tag write it."""
    return f"{index.host}/{index.repo}:{index.tag}@{digest}"


def sign(http: RegistryHTTP, index: PushedIndex, digest: str, key: TestKey) -> None:
    sign_legacy(http, index.repo, digest, key)


def sign_platforms(http: RegistryHTTP, index: PushedIndex, key: TestKey, *, skip: str | None = None) -> None:
    for child in index.children:
        if child.platform and child.platform[1] != skip and child.platform[:2] != ATTESTATION_PLATFORM:
            sign(http, index, child.digest, key)


# ---- index signed only (cosign sign IMAGE:tag) ------------------------------------------------------


@pytest.mark.parametrize("multi_arch", [None, "exact", "index-or-platforms"])
def test_index_signed_admits_the_tag_under_every_setting(tmp_path, http, index, trusted, multi_arch) -> None:
    sign(http, index, index.digest, trusted)
    run = admit(tmp_path, rule(http, trusted, multi_arch), index.reference)
    assert run.allowed, run.message
    assert run.decision_log["images"][0]["digest"] == index.digest


def test_index_signed_admits_the_index_digest(tmp_path, http, index, trusted) -> None:
    sign(http, index, index.digest, trusted)
    run = admit(tmp_path, rule(http, trusted, "exact"), index.by_digest)
    assert run.allowed, run.message


@pytest.mark.parametrize("reference", ["by-digest", "tag-and-digest"])
def test_exact_denies_a_platform_digest_when_only_the_index_is_signed(tmp_path, http, index, trusted, reference) -> None:
    sign(http, index, index.digest, trusted)
    arm64 = index.child("arm64")
    image = arm64.by_digest if reference == "by-digest" else pinned(index, arm64.digest)
    run = admit(tmp_path, rule(http, trusted, "exact"), image)
    assert not run.allowed
    assert f"no signature found in {http.host}/{index.repo} for {arm64.digest[:19]}…" in run.message


def test_index_or_platforms_admits_a_pinned_platform_through_its_signed_index(tmp_path, http, index, trusted) -> None:
    sign(http, index, index.digest, trusted)
    arm64 = index.child("arm64")
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), pinned(index, arm64.digest))
    assert run.allowed, run.message
    logged = run.decision_log["images"][0]
    assert logged["digest"] == arm64.digest and logged["reason"] == "verified-index"


def test_a_platform_signed_through_its_index_says_so_in_the_details(http, index, trusted) -> None:
    sign(http, index, index.digest, trusted)
    verdict = verify(rule(http, trusted, "index-or-platforms"), pinned(index, index.child("amd64").digest))
    assert verdict.passed and verdict.verified_keys == ("release",)
    assert f"signed through index {index.digest}" in verdict.details


def test_index_or_platforms_needs_the_tag_to_find_the_index(tmp_path, http, index, trusted) -> None:
    # A bare digest names no index: nothing tells which index the platform came from.
    sign(http, index, index.digest, trusted)
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), index.child("arm64").by_digest)
    assert not run.allowed
    assert "no signature found" in run.message


def test_the_tagged_index_must_list_the_pinned_platform(tmp_path, http, repo, index, trusted) -> None:
    sign(http, index, index.digest, trusted)
    stranger = push_index(http, repo, "other")  # unsigned, not listed by v1
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), pinned(index, stranger.child("amd64").digest))
    assert not run.allowed
    assert "no signature found" in run.message


def test_a_pinned_platform_is_denied_when_its_index_is_unsigned_too(tmp_path, http, index, trusted, keys) -> None:
    sign(http, index, index.digest, keys["other-ecdsa-p256"])
    arm64 = index.child("arm64")
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), pinned(index, arm64.digest))
    assert not run.allowed
    assert f"nor is its index {index.digest} ({http.host}/{index.repo}:v1) signed: 1 legacy signature found; none verifies with key(s) release" in run.message


# ---- platform manifests signed only (per-platform signing tools) ------------------------------------


@pytest.mark.parametrize("reference", ["tag", "index-digest"])
def test_exact_denies_an_index_whose_platforms_alone_are_signed(tmp_path, http, index, trusted, reference) -> None:
    sign_platforms(http, index, trusted)
    run = admit(tmp_path, rule(http, trusted, "exact"), index.reference if reference == "tag" else index.by_digest)
    assert not run.allowed
    assert f"for {index.digest[:19]}…" in run.message


@pytest.mark.parametrize("media_type", ["oci", "docker"])
def test_index_or_platforms_admits_an_index_whose_every_platform_is_signed(tmp_path, http, repo, trusted, media_type) -> None:
    index = push_index(http, repo, "v1", media_type=media_type)
    sign_platforms(http, index, trusted)
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), index.reference)
    assert run.allowed, run.message
    logged = run.decision_log["images"][0]
    assert logged["digest"] == index.digest and logged["reason"] == "verified-platforms"


def test_index_or_platforms_denies_when_one_platform_is_unsigned_and_names_it(tmp_path, http, index, trusted) -> None:
    sign_platforms(http, index, trusted, skip="arm64")
    arm64 = index.child("arm64")
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), index.reference)
    assert not run.allowed
    assert f"nor is every platform signed: platform linux/arm64 ({arm64.digest}): no signature found" in run.message


def test_a_platform_signed_by_an_untrusted_key_counts_as_unsigned(tmp_path, http, index, trusted, keys) -> None:
    sign_platforms(http, index, trusted, skip="arm64")
    sign(http, index, index.child("arm64").digest, keys["other-ecdsa-p256"])
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), index.reference)
    assert not run.allowed
    assert "platform linux/arm64" in run.message and "none verifies with key(s) release" in run.message


def test_every_platform_must_meet_the_threshold_on_its_own(tmp_path, http, index, keys) -> None:
    release, ci = keys["ecdsa-p256"], keys["ecdsa-p384"]
    sign_platforms(http, index, release)
    sign(http, index, index.child("amd64").digest, ci)  # arm64 has release only
    data = config_data([http.host], {"release": release, "ci": ci}, {"multiArch": "index-or-platforms", "threshold": 2})
    run = admit(tmp_path, data, index.reference)
    assert not run.allowed
    assert "platform linux/arm64" in run.message and "signed by 1 of the 2 required keys" in run.message


def test_attestation_manifests_of_an_index_need_no_signature(tmp_path, http, repo, trusted) -> None:
    index = push_index(http, repo, "v1", platforms=[("linux", "amd64"), ("linux", "arm64"), ATTESTATION_PLATFORM])
    sign_platforms(http, index, trusted)  # skips unknown/unknown, as buildx's attestations are
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), index.reference)
    assert run.allowed, run.message


def test_a_platform_digest_signed_itself_passes_under_both_settings(tmp_path, http, index, trusted) -> None:
    sign_platforms(http, index, trusted)
    for multi_arch in ("exact", "index-or-platforms"):
        run = admit(tmp_path, rule(http, trusted, multi_arch), index.child("arm64").by_digest)
        assert run.allowed, (multi_arch, run.message)


def test_platforms_may_be_signed_with_bundles(tmp_path, http, index, trusted) -> None:
    for child in index.children:
        sign_bundle(http, index.repo, child.digest, child.media_type, child.size, trusted)
    run = admit(tmp_path, rule(http, trusted, "index-or-platforms"), index.reference)
    assert run.allowed, run.message


# ---- recursive signing (cosign sign -r) -------------------------------------------------------------


@pytest.mark.parametrize("layout", ["legacy", "bundle"])
@pytest.mark.parametrize("reference", ["tag", "platform-digest", "pinned-platform"])
def test_recursive_signing_admits_tag_and_platforms_under_exact(tmp_path, http, index, trusted, layout, reference) -> None:
    if layout == "legacy":
        sign(http, index, index.digest, trusted)
        sign_platforms(http, index, trusted)
    else:
        sign_bundle(http, index.repo, index.digest, index.media_type, index.size, trusted)
        for child in index.children:
            sign_bundle(http, index.repo, child.digest, child.media_type, child.size, trusted)
    arm64 = index.child("arm64")
    image = {"tag": index.reference, "platform-digest": arm64.by_digest, "pinned-platform": pinned(index, arm64.digest)}[reference]
    run = admit(tmp_path, rule(http, trusted, "exact"), image)
    assert run.allowed, run.message
    assert run.decision_log["images"][0]["reason"] == "verified"


def test_multi_arch_must_be_one_of_the_two_settings(tmp_path, http, trusted) -> None:
    from support.contract import run_config
    from integration.test_bundles import write_config

    completed = run_config(write_config(tmp_path, rule(http, trusted, "any-platform")))
    assert completed.returncode != 0 and "policy[0].multiArch" in completed.stderr
