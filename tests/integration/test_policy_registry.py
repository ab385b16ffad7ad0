"""Policy decisions against a real registry, through the hook's real contract.

Every case pushes images to the shared docker-registry on 127.0.0.1, signs them with the test
signer (cosign's legacy `.sig` layout), writes a configuration file, and runs the hook executable
as shell-operator would (contract.run_request). Nothing of signgate is imported.

Rule patterns are scoped to the test's own repository prefix, so cases never see each other's
images. Where a decision must need no network, the registry's access log proves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pytest
import yaml

from support.contract import HookRun, request_for, run_request
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.signer import TestKey, generate_key, sign_legacy

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestKey]:
    """Keys a, b, c (threshold cases) and old, new (rotation)."""
    directory = tmp_path_factory.mktemp("policy-keys")
    return {name: generate_key("ecdsa-p256", directory, name) for name in ("a", "b", "c", "old", "new")}


@dataclass
class World:
    """One test's corner of the registry: images under `host/prefix/...`, a config per case."""

    registry: Registry
    http: RegistryHTTP
    prefix: str  # the test's unique repository prefix, e.g. t/some-test-3
    signers: dict[str, TestKey]
    directory: Path

    @property
    def host(self) -> str:
        return self.http.host

    def name(self, path: str) -> str:
        """`app` -> `127.0.0.1:PORT/t/test-3/app`: the normalised name rules are matched against."""
        return f"{self.host}/{self.prefix}/{path}"

    def pattern(self, glob: str) -> str:
        """A rule pattern within this test's prefix: `**` -> `127.0.0.1:PORT/t/test-3/**`."""
        return f"{self.host}/{self.prefix}/{glob}"

    def push(self, path: str = "app", tag: str = "v1", signed_by: Iterable[str] = (), **sign: Any) -> PushedImage:
        """Push a new image as `path:tag` and sign its digest with each named key."""
        image = push_image(self.http, f"{self.prefix}/{path}", tag)
        for key in signed_by:
            self.sign(image, key, **sign)
        return image

    def sign(self, image: PushedImage, key: str, **kwargs: Any) -> None:
        if "sig_repo" in kwargs:
            kwargs["sig_repo"] = f"{self.prefix}/{kwargs['sig_repo']}"
        sign_legacy(self.http, image.repo, image.digest, self.signers[key], **kwargs)

    def tag(self, image: PushedImage, tag: str) -> str:
        """Give an already pushed image another tag; returns the new reference."""
        self.http.put_manifest(image.repo, tag, image.manifest, image.media_type)
        return f"{image.repository}:{tag}"

    def config(self, policy: list[dict[str, Any]], **top: Any) -> Path:
        keys = {name: str(key.pub_path) for name, key in self.signers.items()}
        keys["a-copy"] = str(self.signers["a"].pub_path)  # one key under a second name
        data = {"keys": keys, "registries": {"insecure": [self.host]}, "policy": policy, **top}
        path = self.directory / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def run(self, config: Path, images: Sequence[str], kind: str = "Pod") -> HookRun:
        run = run_request(config, request_for(kind, list(images)))
        assert run.returncode == 0 and run.response is not None, run.stderr
        return run

    def run_counting(self, config: Path, images: Sequence[str]) -> tuple[HookRun, int]:
        """Run the hook and count the registry requests it made (GET and HEAD under /v2/)."""
        mark = self.registry.mark()
        run = self.run(config, images)
        return run, self.registry.count_requests(mark)


@pytest.fixture
def world(registry: Registry, http: RegistryHTTP, repo: str, signers: dict[str, TestKey], tmp_path: Path) -> World:
    return World(registry, http, repo, signers, tmp_path)


def denial(image: str, reason: str, container: str = "c0") -> str:
    return f'container "{container}" image "{image}": {reason}'


# ---- counting keys: threshold, required signers, one key under two names, rotation ---------------

KEY_CASES = [
    pytest.param(["a", "b"], {"keys": ["a", "b", "c"], "threshold": 2}, None,
                 id="threshold-2-of-3-signed-by-a-and-b-is-allowed"),
    pytest.param(["a", "b", "c"], {"keys": ["a", "b", "c"], "threshold": 2}, None,
                 id="threshold-2-of-3-signed-by-all-three-is-allowed"),
    pytest.param(["a"], {"keys": ["a", "b", "c"], "threshold": 2},
                 "signed by 1 of the 2 required keys (verified by: a; trusted: a, b, c)",
                 id="threshold-2-of-3-signed-by-a-only-is-denied-naming-signers-and-trusted-keys"),
    pytest.param(["a", "a"], {"keys": ["a", "b", "c"], "threshold": 2},
                 "signed by 1 of the 2 required keys (verified by: a; trusted: a, b, c)",
                 id="two-signatures-by-the-same-key-count-once"),
    pytest.param(["a"], {"keys": ["a", "a-copy"], "threshold": 2},
                 "signed by 1 of the 2 required keys (verified by: a; trusted: a, a-copy)",
                 id="one-key-file-under-two-names-counts-once"),
    pytest.param(["b"], {"keys": ["a", "b"], "threshold": 1, "required": ["a"]},
                 "required key(s) a did not sign (verified by: b)",
                 id="required-key-a-missing-is-denied-even-though-the-threshold-is-met"),
    pytest.param(["a"], {"keys": ["a", "b"], "threshold": 1, "required": ["a"]}, None,
                 id="required-key-a-signing-is-allowed"),
    pytest.param(["b", "c"], {"keys": ["a", "b", "c"], "threshold": 2, "required": ["a"]},
                 "required key(s) a did not sign (verified by: b, c)",
                 id="threshold-met-by-others-but-required-key-missing-is-denied"),
    pytest.param(["c"], {"keys": ["a", "b"]},
                 "1 legacy signature found; none verifies with key(s) a, b",
                 id="signature-by-an-untrusted-key-is-denied"),
    pytest.param(["old"], {"keys": ["old", "new"], "threshold": 1}, None, id="rotation-signed-with-the-old-key-is-allowed"),
    pytest.param(["new"], {"keys": ["old", "new"], "threshold": 1}, None, id="rotation-signed-with-the-new-key-is-allowed"),
    pytest.param(["a"], {"keys": ["old", "new"], "threshold": 1},
                 "1 legacy signature found; none verifies with key(s) old, new",
                 id="rotation-signed-with-neither-key-is-denied"),
    pytest.param([], {"keys": ["old", "new"], "threshold": 1}, "no signature found in ",
                 id="rotation-unsigned-is-denied"),
]


@pytest.mark.parametrize(("signed_by", "rule", "expected"), KEY_CASES)
def test_keys_are_counted_by_distinct_signer(world: World, signed_by, rule, expected) -> None:
    image = world.push(signed_by=signed_by)
    config = world.config([{"images": world.pattern("**"), **rule}])
    run = world.run(config, [image.reference])
    if expected is None:
        assert run.response == {"allowed": True}
        [entry] = run.decision_log["images"]
        assert entry["digest"] == image.digest
        assert entry["keys"] == sorted(set(signed_by))
    else:
        assert run.allowed is False
        assert run.message.startswith("signgate: " + denial(image.reference, expected)), run.message


def test_verified_keys_are_logged_by_name(world: World) -> None:
    image = world.push(signed_by=["a", "c"])
    config = world.config([{"images": world.pattern("**"), "keys": ["a", "b", "c"], "threshold": 2}])
    entry = world.run(config, [image.reference]).decision_log["images"][0]
    assert entry["verdict"] == "pass" and entry["keys"] == ["a", "c"] and entry["reason"] == "verified"


# ---- claims in the signed payload: annotations and identity ---------------------------------------

NON_STRING = "non-string"

CLAIM_CASES = [
    pytest.param({"annotations": {"env": "prod"}}, {"annotations": {"env": "prod"}}, None,
                 id="required-annotation-present-is-allowed"),
    pytest.param({"annotations": {"env": "prod", "team": "payments"}}, {"annotations": {"env": "prod"}}, None,
                 id="extra-signed-annotations-are-ignored"),
    pytest.param({"annotations": {"env": "dev"}}, {"annotations": {"env": "prod"}},
                 "none is valid: signature by key a: its annotation env is 'dev', but 'prod' is required",
                 id="required-annotation-with-another-value-is-denied-naming-it"),
    pytest.param({}, {"annotations": {"env": "prod"}},
                 "none is valid: signature by key a: it lacks the required annotation env=prod",
                 id="no-signed-annotations-is-denied"),
    pytest.param({"annotations": {"team": "payments"}}, {"annotations": {"env": "prod"}},
                 "it lacks the required annotation env=prod",
                 id="other-annotations-only-is-denied"),
    pytest.param({"annotations": {"replicas": 1}}, {"annotations": {"replicas": "1"}},
                 "its annotation replicas is 1, but '1' is required",
                 id="non-string-number-in-the-payload-never-matches"),
    pytest.param({"annotations": {"prod": True}}, {"annotations": {"prod": "true"}},
                 "its annotation prod is true, but 'true' is required",
                 id="non-string-boolean-in-the-payload-never-matches"),
    pytest.param({"docker_reference": "{repository}"}, {"checkIdentity": True}, None,
                 id="identity-naming-the-image-repository-is-allowed"),
    pytest.param({"docker_reference": "{repository}:v1"}, {"checkIdentity": True}, None,
                 id="identity-with-a-tag-names-the-same-repository-and-is-allowed"),
    pytest.param({"docker_reference": "{host}/{prefix}/other"}, {"checkIdentity": True},
                 "none is valid: signature by key a: it was signed for {host}/{prefix}/other, not for {repository}",
                 id="identity-naming-another-repository-is-denied"),
    pytest.param({"docker_reference": "{host}/{prefix}/app-evil"}, {"checkIdentity": True},
                 "it was signed for {host}/{prefix}/app-evil, not for {repository}",
                 id="identity-naming-a-repository-with-the-same-prefix-is-denied"),
    pytest.param({"docker_reference": "{host}/{prefix}/other"}, {}, None,
                 id="identity-is-not-checked-by-default"),
]


@pytest.mark.parametrize(("sign", "rule", "expected"), CLAIM_CASES)
def test_signed_claims_must_satisfy_the_rule(world: World, sign, rule, expected) -> None:
    image = world.push(tag="v1")
    fill = {"host": world.host, "prefix": world.prefix, "repository": image.repository}
    if "docker_reference" in sign:
        sign = {"docker_reference": sign["docker_reference"].format(**fill)}
    world.sign(image, "a", **sign)
    config = world.config([{"images": world.pattern("**"), "keys": ["a"], **rule}])
    run = world.run(config, [image.reference])
    if expected is None:
        assert run.response == {"allowed": True}
    else:
        assert run.allowed is False
        assert denial(image.reference, "1 legacy signature found; ") in run.message
        assert expected.format(**fill) in run.message


def test_a_valid_signature_counts_even_when_another_fails_the_claims(world: World) -> None:
    image = world.push()
    world.sign(image, "a", annotations={"env": "dev"})
    world.sign(image, "b", annotations={"env": "prod"})
    config = world.config([{"images": world.pattern("**"), "keys": ["a", "b"], "annotations": {"env": "prod"}}])
    run = world.run(config, [image.reference])
    assert run.response == {"allowed": True}
    assert run.decision_log["images"][0]["keys"] == ["b"]


# ---- signatureRepository ----------------------------------------------------------------------------

SIGNATURE_REPOSITORY_CASES = [
    pytest.param("sigs", True, None, id="signatures-in-the-configured-signature-repository-are-found"),
    pytest.param("sigs", False, "no signature found in {image_repo} for {short_digest}… (searched the legacy tag",
                 id="signatures-elsewhere-are-not-found-without-signatureRepository"),
    pytest.param(None, True, "no signature found in {sig_repo} for {short_digest}… (searched the legacy tag",
                 id="with-signatureRepository-signatures-beside-the-image-are-not-used"),
    pytest.param(None, False, None, id="signatures-beside-the-image-are-found-by-default"),
]


@pytest.mark.parametrize(("stored_in", "configured", "expected"), SIGNATURE_REPOSITORY_CASES)
def test_signature_repository(world: World, stored_in, configured, expected) -> None:
    image = world.push()
    world.sign(image, "a", **({"sig_repo": stored_in} if stored_in else {}))
    rule: dict[str, Any] = {"images": world.pattern("**"), "keys": ["a"]}
    if configured:
        rule["signatureRepository"] = world.name("sigs")
    run = world.run(world.config([rule]), [image.reference])
    if expected is None:
        assert run.response == {"allowed": True}
    else:
        text = expected.format(image_repo=image.repository, sig_repo=world.name("sigs"), short_digest=image.digest[:19])
        assert run.allowed is False and denial(image.reference, text) in run.message


# ---- static decisions: allowlists, unlisted registries, deny rules need no registry request -----------

STATIC_CASES = [
    pytest.param("public/app:v1", True, None, id="allowlisted-repository-is-allowed-unsigned-with-no-request"),
    pytest.param("public/never-pushed:v1", True, None, id="allowlisted-image-is-not-even-looked-up"),
    pytest.param("private/app:v1", False, "registry or repository {name} is not trusted: no policy rule matches it",
                 id="unlisted-repository-on-the-same-registry-is-not-trusted"),
    pytest.param("quay.io/team/app:v1", False,
                 "registry or repository quay.io/team/app is not trusted: no policy rule matches it",
                 id="unlisted-registry-is-not-trusted"),
    pytest.param("banned/app:v1", False, "images from banned/ are not allowed; mirror them",
                 id="deny-rule-denies-with-its-own-message-and-no-request"),
]


@pytest.mark.parametrize(("image", "allowed", "expected"), STATIC_CASES)
def test_static_rules_decide_without_any_registry_request(world: World, image, allowed, expected) -> None:
    world.push("public/app")
    world.push("private/app", signed_by=["a"])
    world.push("banned/app", signed_by=["a"])
    config = world.config([
        {"images": world.pattern("public/*"), "action": "allow"},
        {"images": world.pattern("banned/**"), "action": "deny", "message": "images from banned/ are not allowed; mirror them"},
    ])
    reference = image if image.startswith("quay.io/") else world.name(image)
    run, requests = world.run_counting(config, [reference])
    assert requests == 0
    assert run.allowed is allowed
    if expected is not None:
        name = reference.rsplit(":", 1)[0]
        assert run.message == "signgate: " + denial(reference, expected.format(name=name))


def test_deny_rule_without_a_message_names_the_rule(world: World) -> None:
    config = world.config([{"images": world.pattern("banned/**"), "action": "deny"}])
    run, requests = world.run_counting(config, [world.name("banned/app:v1")])
    assert requests == 0
    assert run.message == "signgate: " + denial(world.name("banned/app:v1"), f"denied by policy[0] ({world.pattern('banned/**')})")


# ---- the most specific rule wins --------------------------------------------------------------------

SPECIFICITY_CASES = [
    pytest.param("public/app", [], True, False, id="public-image-is-allowed-unsigned-by-the-narrower-allow-rule"),
    pytest.param("private/app", [], False, True, id="other-image-falls-to-the-broad-rule-and-needs-a-signature"),
    pytest.param("private/app", ["a"], True, True, id="other-image-signed-by-a-is-allowed"),
    pytest.param("private/app", ["b"], False, True, id="other-image-signed-by-another-key-is-denied"),
    pytest.param("public/team/app", [], False, True, id="star-does-not-cover-nested-repositories-so-the-broad-rule-applies"),
]


@pytest.mark.parametrize("allow_first", [True, False], ids=["allow-rule-first-in-file", "allow-rule-last-in-file"])
@pytest.mark.parametrize(("path", "signed_by", "allowed", "contacts_registry"), SPECIFICITY_CASES)
def test_most_specific_rule_wins(world: World, path, signed_by, allowed, contacts_registry, allow_first) -> None:
    image = world.push(path, signed_by=signed_by)
    broad = {"images": f"{world.host}/**", "keys": ["a"]}
    narrow = {"images": world.pattern("public/*"), "action": "allow"}
    config = world.config([narrow, broad] if allow_first else [broad, narrow])
    run, requests = world.run_counting(config, [image.reference])
    assert run.allowed is allowed, run.message
    assert (requests > 0) is contacts_registry
    [entry] = run.decision_log["images"]
    assert entry["rule"] == (broad if contacts_registry else narrow)["images"]


# ---- tag rules: denyLatest and requireDigest --------------------------------------------------------

# `ref` is how the pod names the image: "latest", "untagged", "v1", "digest" or "latest@digest".
TAG_CASES = [
    pytest.param({"denyLatest": True}, {}, "latest", "the image uses the tag :latest; use a fixed version tag or a digest",
                 id="global-denyLatest-refuses-latest"),
    pytest.param({"denyLatest": True}, {}, "untagged", "the image has no tag, which means :latest",
                 id="global-denyLatest-refuses-a-reference-without-tag"),
    pytest.param({"denyLatest": True}, {}, "v1", None, id="global-denyLatest-allows-a-version-tag"),
    pytest.param({"denyLatest": True}, {}, "latest@digest", None,
                 id="global-denyLatest-never-refuses-a-digest-pinned-latest"),
    pytest.param({"denyLatest": True}, {"denyLatest": False}, "latest", None,
                 id="rule-denyLatest-false-overrides-the-global-setting"),
    pytest.param({"denyLatest": True}, {"denyLatest": False}, "untagged", None,
                 id="rule-denyLatest-false-allows-a-reference-without-tag"),
    pytest.param({}, {"denyLatest": True}, "latest", "the image uses the tag :latest",
                 id="rule-denyLatest-true-applies-without-the-global-setting"),
    pytest.param({}, {}, "latest", None, id="latest-is-allowed-by-default"),
    pytest.param({"requireDigest": True}, {}, "v1",
                 "the image must be pinned by digest (name@sha256:...), not by tag 'v1'",
                 id="global-requireDigest-refuses-a-tag"),
    pytest.param({"requireDigest": True}, {}, "untagged", "the image must be pinned by digest",
                 id="global-requireDigest-refuses-a-reference-without-tag"),
    pytest.param({"requireDigest": True}, {}, "digest", None, id="global-requireDigest-allows-a-digest"),
    pytest.param({"requireDigest": True}, {}, "latest@digest", None, id="global-requireDigest-allows-tag-and-digest"),
    pytest.param({"requireDigest": True}, {"requireDigest": False}, "v1", None,
                 id="rule-requireDigest-false-overrides-the-global-setting"),
    pytest.param({}, {"requireDigest": True}, "v1", "the image must be pinned by digest",
                 id="rule-requireDigest-true-applies-without-the-global-setting"),
    pytest.param({"requireDigest": True, "denyLatest": True}, {}, "latest", "the image must be pinned by digest",
                 id="requireDigest-is-reported-before-denyLatest"),
]


@pytest.mark.parametrize(("top", "rule", "ref", "expected"), TAG_CASES)
def test_tag_rules(world: World, top, rule, ref, expected) -> None:
    image = world.push(tag="latest", signed_by=["a"])
    world.tag(image, "v1")
    reference = {
        "latest": image.reference,
        "untagged": image.repository,
        "v1": f"{image.repository}:v1",
        "digest": image.by_digest,
        "latest@digest": f"{image.repository}:latest@{image.digest}",
    }[ref]
    config = world.config([{"images": world.pattern("**"), "keys": ["a"], **rule}], **top)
    run, requests = world.run_counting(config, [reference])
    if expected is None:
        assert run.response == {"allowed": True}, run.message
        assert requests > 0  # verified against the registry, not waved through
    else:
        assert run.allowed is False
        assert run.message.startswith("signgate: " + denial(reference, expected)), run.message
        assert requests == 0


def test_tag_rules_apply_to_allow_rules_too(world: World) -> None:
    config = world.config([{"images": world.pattern("public/*"), "action": "allow"}], denyLatest=True)
    run = world.run(config, [world.name("public/app:latest"), world.name("public/app:v2")])
    assert run.allowed is False
    assert run.message == "signgate: " + denial(
        world.name("public/app:latest"),
        f"the image uses the tag :latest; use a fixed version tag or a digest (policy[0] ({world.pattern('public/*')}))",
    )


# ---- modes: warn, enforce, and both in one request -----------------------------------------------------

WARN_PREFIX = "signgate (warn mode) would deny: "


@dataclass(frozen=True)
class ModeCase:
    top: dict[str, Any]
    rules: dict[str, dict[str, Any]]  # pattern (within the prefix) -> rule fields
    images: list[str]  # repositories within the prefix; all unsigned unless listed in `signed`
    denied: list[int]  # positions named in the denial message
    warned: list[int]  # positions named in warnings
    signed: tuple[int, ...] = ()


MODE_CASES = [
    pytest.param(ModeCase({}, {"warn/*": {"mode": "warn"}}, ["warn/app"], [], [0]),
                 id="warn-rule-failure-is-allowed-with-a-warning"),
    pytest.param(ModeCase({}, {"enforce/*": {}}, ["enforce/app"], [0], []),
                 id="enforce-rule-failure-is-denied-without-warnings"),
    pytest.param(ModeCase({}, {"warn/*": {"mode": "warn"}, "enforce/*": {"mode": "enforce"}},
                          ["warn/app", "enforce/app"], [1], [0]),
                 id="mixed-enforce-failure-denies-naming-only-the-enforce-image-and-warns-about-the-warn-image"),
    pytest.param(ModeCase({}, {"warn/*": {"mode": "warn"}, "enforce/*": {"mode": "enforce"}},
                          ["warn/app", "enforce/app"], [], [0], signed=(1,)),
                 id="mixed-with-the-enforce-image-signed-is-allowed-with-the-warning"),
    pytest.param(ModeCase({}, {"warn/*": {"mode": "warn"}, "enforce/*": {"mode": "enforce"}},
                          ["warn/app", "enforce/app"], [1], [], signed=(0,)),
                 id="mixed-with-the-warn-image-signed-is-denied-without-warnings"),
    pytest.param(ModeCase({}, {"warn/*": {"mode": "warn"}, "warn2/*": {"mode": "warn"}},
                          ["warn/app", "warn2/app"], [], [0, 1]),
                 id="two-failures-under-warn-rules-are-allowed-with-two-warnings"),
    pytest.param(ModeCase({"mode": "warn"}, {"strict/*": {"mode": "enforce"}, "lax/*": {}},
                          ["lax/app", "strict/app"], [1], [0]),
                 id="global-warn-with-a-rule-override-enforce-denies-that-rules-image"),
    pytest.param(ModeCase({"mode": "warn"}, {"lax/*": {}}, ["lax/app"], [], [0]),
                 id="global-warn-applies-to-rules-without-a-mode"),
    pytest.param(ModeCase({}, {"warn/*": {"mode": "warn"}}, ["warn/app"], [], [], signed=(0,)),
                 id="warn-rule-passing-is-allowed-without-warnings"),
]


@pytest.mark.parametrize("case", MODE_CASES)
def test_each_image_fails_under_its_own_rules_mode(world: World, case: ModeCase) -> None:
    pushed = [world.push(path, signed_by=["a"] if i in case.signed else []) for i, path in enumerate(case.images)]
    policy = [{"images": world.pattern(glob), "keys": ["a"], **fields} for glob, fields in case.rules.items()]
    run = world.run(world.config(policy, **case.top), [image.reference for image in pushed])
    assert run.allowed is (not case.denied), run.response
    named = [i for i, image in enumerate(pushed) if f'"{image.reference}"' in run.message]
    assert named == case.denied
    warned = [i for i, image in enumerate(pushed) if any(f'"{image.reference}"' in w for w in run.warnings)]
    assert warned == case.warned and len(run.warnings) == len(case.warned)
    for warning in run.warnings:
        assert warning.startswith(WARN_PREFIX + 'container "c') and "no signature found" in warning
    if case.denied:
        assert run.message.startswith("signgate: " + denial(pushed[case.denied[0]].reference, "no signature found",
                                                            container=f"c{case.denied[0]}"))


def test_one_request_verifies_each_image_against_its_own_rule(world: World) -> None:
    """Init and app containers under different rules and keys, in a Deployment."""
    app = world.push("apps/app", signed_by=["a"])
    tools = world.push("tools/setup", signed_by=["b"])
    config = world.config([
        {"images": world.pattern("apps/*"), "keys": ["a"]},
        {"images": world.pattern("tools/*"), "keys": ["b"]},
    ])
    assert world.run(config, [app.reference], kind="Deployment").allowed is True
    run = run_request(config, request_for("Deployment", [app.reference], init=[tools.reference]))
    assert run.response == {"allowed": True}
    swapped = world.config([
        {"images": world.pattern("apps/*"), "keys": ["b"]},
        {"images": world.pattern("tools/*"), "keys": ["a"]},
    ])
    run = run_request(swapped, request_for("Deployment", [app.reference], init=[tools.reference]))
    assert run.allowed is False
    assert 'init container "init0" image' in run.message and 'container "c0" image' in run.message
    assert run.message.count("none verifies with key(s)") == 2
