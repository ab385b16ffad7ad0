"""Specification of policy matching and static decisions (signgate.policy).

Patterns are globs over the normalised `registry/repository`; the most specific matching rule
wins; tag rules and static allow/deny rules decide without any network I/O.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from signgate.config import Config, build_config
from signgate.policy import match_rule, matches, ordered_rules, specificity, static_decision, check_pattern
from signgate.reference import parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = Path(tmp_path_factory.mktemp("keys")) / "cosign.pub"
    path.write_bytes(pem)
    return str(path)


def make_config(key_path: str, rules: list[dict[str, Any]], **top: Any) -> Config:
    return build_config({"keys": {"default": key_path}, "policy": rules, **top}, "test.yaml", {})


def allow_rules(*patterns: str) -> list[dict[str, Any]]:
    return [{"images": pattern, "action": "allow"} for pattern in patterns]


# --- glob matching ----------------------------------------------------------------------------

GLOBS = [
    pytest.param("docker.io/library/nginx", "docker.io/library/nginx", True, id="literal-matches-itself"),
    pytest.param("docker.io/library/nginx", "docker.io/library/nginx-evil", False,
                 id="literal-is-anchored-at-the-end"),
    pytest.param("docker.io/library/nginx", "evil.io/docker.io/library/nginx", False,
                 id="literal-is-anchored-at-the-start"),
    pytest.param("docker.io/library/nginx", "docker.io/library/nginx/sub", False, id="literal-does-not-match-children"),
    pytest.param("docker.io/library/ngin.", "docker.io/library/nginx", False, id="dot-is-literal-not-any-character"),
    pytest.param("registry.example.com/*", "registry.example.com/app", True, id="star-matches-one-segment"),
    pytest.param("registry.example.com/*", "registry.example.com/a/b", False, id="star-does-not-cross-slash"),
    pytest.param("registry.example.com/team/*", "registry.example.com/team/app", True, id="star-after-literal-path"),
    pytest.param("registry.example.com/team/*", "registry.example.com/other/app", False,
                 id="star-needs-the-literal-segments"),
    pytest.param("registry.example.com/app-*", "registry.example.com/app-1", True, id="star-inside-a-segment"),
    pytest.param("registry.example.com/app-*", "registry.example.com/app-1/x", False,
                 id="star-inside-a-segment-does-not-cross-slash"),
    pytest.param("registry.example.com/*/app", "registry.example.com/team/app", True, id="star-in-the-middle"),
    pytest.param("registry.example.com/*/app", "registry.example.com/a/b/app", False,
                 id="star-in-the-middle-is-one-segment"),
    pytest.param("registry.example.com/**", "registry.example.com/a/b/c", True, id="double-star-crosses-segments"),
    pytest.param("registry.example.com/**", "registry.example.com.evil.io/x", False,
                 id="double-star-after-host-does-not-extend-the-host"),
    pytest.param("registry.example.com/**", "evil.io/registry.example.com/x", False,
                 id="double-star-pattern-is-anchored-at-the-start"),
    pytest.param("registry.example.com/**/app", "registry.example.com/a/b/app", True,
                 id="double-star-between-segments"),
    pytest.param("registry.example.com/**/app", "registry.example.com/app", False,
                 id="double-star-between-slashes-needs-a-segment"),
    pytest.param("*.example.com/app", "registry.example.com/app", True, id="star-in-host"),
    pytest.param("*.example.com/app", "example.com/app", False, id="star-in-host-keeps-the-literal-dot"),
    pytest.param("localhost:5000/*", "localhost:5000/app", True, id="host-with-port"),
    pytest.param("localhost:5000/*", "localhost:5001/app", False, id="port-is-literal"),
    pytest.param("[::1]:5000/app", "[::1]:5000/app", True, id="ipv6-brackets-are-literal"),
    pytest.param("**", "docker.io/library/nginx", True, id="double-star-alone-matches-everything"),
    pytest.param("docker.io/library/*", "docker.io/someone/nginx", False, id="official-images-only"),
]


@pytest.mark.parametrize("pattern, name, expected", GLOBS)
def test_glob_matching(pattern, name, expected):
    assert check_pattern(pattern) is None
    assert matches(pattern, name) is expected


@pytest.mark.parametrize(
    "image",
    [
        pytest.param("EVIL.EXAMPLE.COM/app:1", id="all-capitals"),
        pytest.param("Evil.Example.com/app:1", id="mixed-case"),
        pytest.param("evil.example.com/app:1", id="lower-case"),
    ],
)
def test_host_patterns_cannot_be_dodged_by_case(image, key_path):
    cfg = make_config(key_path, [{"images": "evil.example.com/**", "action": "deny"}], unmatchedImages="allow")
    ref = parse_reference(image)
    rule = match_rule(cfg, ref)
    assert rule is not None and rule.images == "evil.example.com/**"
    assert static_decision(cfg, ref, rule).passed is False


# --- precedence -------------------------------------------------------------------------------

PRECEDENCE = [
    pytest.param(["docker.io/**", "docker.io/library/*"], "docker.io/library/nginx", 1,
                 id="more-literal-segments-win"),
    pytest.param(["docker.io/library/*", "docker.io/**"], "docker.io/library/nginx", 0,
                 id="more-literal-segments-win-whatever-the-file-order"),
    pytest.param(["docker.io/library/*", "docker.io/library/nginx"], "docker.io/library/nginx", 1,
                 id="exact-name-beats-glob"),
    pytest.param(["r.io/teamlongname*/*", "r.io/*/app"], "r.io/teamlongname1/app", 1,
                 id="literal-segments-count-before-prefix-length"),
    pytest.param(["r.io/*/app", "r.io/team*/app"], "r.io/team1/app", 1, id="then-longer-literal-prefix-wins"),
    pytest.param(["r.io/team*/app", "r.io/*/app"], "r.io/team1/app", 0,
                 id="longer-literal-prefix-wins-whatever-the-file-order"),
    pytest.param(["r.io/t/**", "r.io/t/*x*"], "r.io/t/axb", 1, id="then-fewer-double-stars-win"),
    pytest.param(["r.io/t/a*b*", "r.io/t/a*b"], "r.io/t/axb", 1, id="then-fewer-stars-win"),
    pytest.param(["r.io/t/a*z", "r.io/t/a*"], "r.io/t/abz", 0, id="then-the-first-in-the-file-wins"),
    pytest.param(["r.io/t/a*", "r.io/t/a*z"], "r.io/t/abz", 0, id="first-in-file-wins-either-way"),
    pytest.param(["r.io/t/a*", "r.io/t/a*"], "r.io/t/abz", 0, id="duplicate-patterns-first-wins"),
    pytest.param(["**", "r.io/other/*"], "r.io/t/app", 0, id="only-matching-rules-compete"),
    pytest.param(["r.io/other/*"], "r.io/t/app", None, id="no-matching-rule"),
]


@pytest.mark.parametrize("patterns, name, winner", PRECEDENCE)
def test_most_specific_rule_wins(patterns, name, winner, key_path):
    cfg = make_config(key_path, allow_rules(*patterns))
    ref = parse_reference(name + ":1")
    rule = match_rule(cfg, ref)
    if winner is None:
        assert rule is None
    else:
        assert rule is not None and rule.index == winner


def test_ordered_rules_lists_the_rules_most_specific_first(key_path):
    cfg = make_config(key_path, allow_rules("**", "r.io/**", "r.io/t/*", "r.io/t/app", "r.io/*/app"))
    assert [rule.images for rule in ordered_rules(cfg)] == [
        "r.io/t/app",  # 3 literal segments
        "r.io/t/*",  # 2, prefix 7
        "r.io/*/app",  # 2, prefix 5
        "r.io/**",  # 1
        "**",  # 0
    ]


_PATTERN_POOL = ["**", "r.io/**", "r.io/*", "r.io/t/*", "r.io/t/app", "r.io/*/app", "r.io/t*/a*", "*.io/t/app",
                 "r.io/t/a*", "r.io/**/app", "q.io/**"]


@settings(max_examples=150, deadline=None)
@given(
    patterns=st.lists(st.sampled_from(_PATTERN_POOL), min_size=1, max_size=6, unique=True),
    name=st.sampled_from(["r.io/t/app", "r.io/x/app", "r.io/t/abc", "q.io/a/b", "z.io/t/app", "r.io/a/b/app"]),
)
def test_match_rule_is_the_first_matching_rule_in_ordered_rules(patterns, name, key_path):
    cfg = make_config(key_path, allow_rules(*patterns))
    ref = parse_reference(name + ":1")
    expected = next((rule for rule in ordered_rules(cfg) if matches(rule.images, ref.name)), None)
    assert match_rule(cfg, ref) == expected
    # No two matching patterns of the pool tie on everything but file order, so the winner does
    # not depend on the order in which the rules are written.
    matching = [rule for rule in cfg.policy if matches(rule.images, ref.name)]
    assert len({specificity(rule)[:-1] for rule in matching}) == len(matching)
    for permutation in itertools.islice(itertools.permutations(patterns), 6):
        shuffled = match_rule(make_config(key_path, allow_rules(*permutation)), ref)
        assert (shuffled.images if shuffled else None) == (expected.images if expected else None)


# --- check_pattern -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, problem",
    [
        pytest.param("", "must not be empty", id="empty"),
        pytest.param("docker.io/library/nginx:1.25", "leave out tags and digests", id="tag"),
        pytest.param("docker.io/library/nginx:latest", "leave out tags and digests", id="latest-tag"),
        pytest.param("docker.io/library/nginx@" + DIGEST, "leave out tags and digests", id="digest"),
        pytest.param("registry.example.com/**:v1", "leave out tags and digests", id="tag-after-double-star"),
        pytest.param("nginx:latest", "leave out tags and digests", id="docker-style-name-with-tag"),
        pytest.param("nginx", "has no '/'", id="no-slash"),
        pytest.param("*", "has no '/'", id="single-star-alone"),
        pytest.param("/registry.example.com/app", "has an empty path segment", id="leading-slash"),
        pytest.param("registry.example.com//app", "has an empty path segment", id="double-slash"),
        pytest.param("registry.example.com/app/", "has an empty path segment", id="trailing-slash"),
        pytest.param("registry.example.com/***", "use '*' or '**', not '***'", id="triple-star"),
        pytest.param("registry.example.com/app ", "may only hold registry and repository characters",
                     id="white-space"),
        pytest.param("registry.example.com/app?", "may only hold registry and repository characters",
                     id="question-mark-is-not-a-glob"),
        pytest.param("Registry.Example.com/app", "must be lower-case", id="capitals-in-host-could-never-match"),
        pytest.param("registry.example.com/App", "must be lower-case", id="capitals-in-path-could-never-match"),
    ],
)
def test_check_pattern_explains_the_problem(pattern, problem):
    result = check_pattern(pattern)
    assert result is not None and problem in result


@pytest.mark.parametrize(
    "pattern",
    ["**", "docker.io/library/nginx", "registry.example.com:5000/team/*", "[::1]:5000/app", "*/library/*",
     "registry.example.com/**/app", "r.io/a_b-c.d/e__f"],
)
def test_check_pattern_accepts_usable_patterns(pattern):
    assert check_pattern(pattern) is None


# --- static decisions -------------------------------------------------------------------------

VERIFY = {"images": "registry.example.com/**"}

STATIC = [
    pytest.param({}, [VERIFY], "docker.io/library/nginx:1.25", (False, "untrusted-registry"),
                 "registry or repository docker.io/library/nginx is not trusted: no policy rule matches it",
                 id="unmatched-image-is-denied-by-default"),
    pytest.param({"unmatchedImages": "allow"}, [VERIFY], "docker.io/library/nginx:1.25", (True, "unmatched-allowed"),
                 "unmatched images are allowed", id="unmatched-image-allowed-when-configured"),
    pytest.param({"unmatchedImages": "allow", "denyLatest": True}, [VERIFY], "docker.io/library/nginx:latest",
                 (False, "latest-denied"), "the image uses the tag :latest; use a fixed version tag or a digest (global tag rules)",
                 id="global-deny-latest-still-applies-to-allowed-unmatched-images"),
    pytest.param({"unmatchedImages": "allow", "requireDigest": True}, [VERIFY], "docker.io/library/nginx:1.25",
                 (False, "digest-required"), "must be pinned by digest", id="global-require-digest-applies-to-unmatched-images"),
    pytest.param({}, [VERIFY], "registry.example.com/app:1.0", (None, "verify"), "",
                 id="verify-rule-needs-signatures"),
    pytest.param({"denyLatest": True}, [VERIFY], "registry.example.com/app:latest", (False, "latest-denied"),
                 "the image uses the tag :latest; use a fixed version tag or a digest (policy[0]",
                 id="deny-latest-refuses-explicit-latest"),
    pytest.param({"denyLatest": True}, [VERIFY], "registry.example.com/app", (False, "latest-denied"),
                 "the image has no tag, which means :latest", id="deny-latest-refuses-missing-tag"),
    pytest.param({"denyLatest": True}, [VERIFY], f"registry.example.com/app:latest@{DIGEST}", (None, "verify"), "",
                 id="deny-latest-accepts-latest-pinned-by-digest"),
    pytest.param({"denyLatest": True}, [VERIFY], "registry.example.com/app:1.0", (None, "verify"), "",
                 id="deny-latest-accepts-a-fixed-tag"),
    pytest.param({}, [VERIFY], "registry.example.com/app:latest", (None, "verify"), "",
                 id="latest-is-fine-without-deny-latest"),
    pytest.param({"requireDigest": True}, [VERIFY], "registry.example.com/app:1.0", (False, "digest-required"),
                 "the image must be pinned by digest (name@sha256:...), not by tag '1.0' (policy[0]",
                 id="require-digest-refuses-a-tag"),
    pytest.param({"requireDigest": True}, [VERIFY], "registry.example.com/app", (False, "digest-required"),
                 "not by tag 'latest'", id="require-digest-refuses-a-missing-tag"),
    pytest.param({"requireDigest": True}, [VERIFY], f"registry.example.com/app:1.0@{DIGEST}", (None, "verify"), "",
                 id="require-digest-accepts-tag-and-digest"),
    pytest.param({}, [{"images": "registry.k8s.io/**", "action": "allow"}], "registry.k8s.io/pause:3.9",
                 (True, "allowed-by-rule"), "allowed without signature by policy[0] (registry.k8s.io/**)",
                 id="allow-rule-admits-without-signature"),
    pytest.param({"denyLatest": True}, [{"images": "registry.k8s.io/**", "action": "allow"}], "registry.k8s.io/pause",
                 (False, "latest-denied"), "has no tag", id="allow-rule-does-not-bypass-global-tag-rules"),
    pytest.param({}, [{"images": "quay.io/untrusted/**", "action": "deny",
                       "message": "mirror it to registry.example.com first"}], "quay.io/untrusted/tool:1",
                 (False, "denied-by-rule"), "mirror it to registry.example.com first",
                 id="deny-rule-with-custom-message"),
    pytest.param({}, [{"images": "quay.io/untrusted/**", "action": "deny"}], "quay.io/untrusted/tool:1",
                 (False, "denied-by-rule"), "denied by policy[0] (quay.io/untrusted/**)",
                 id="deny-rule-default-message-names-the-rule"),
    pytest.param({"requireDigest": True, "denyLatest": True},
                 [{"images": "quay.io/untrusted/**", "action": "deny", "message": "never"}], "quay.io/untrusted/tool",
                 (False, "denied-by-rule"), "never", id="deny-rule-wins-over-tag-rules-whose-advice-would-not-help"),
    pytest.param({"denyLatest": True}, [{**VERIFY, "denyLatest": False}], "registry.example.com/app:latest",
                 (None, "verify"), "", id="rule-can-switch-off-global-deny-latest"),
    pytest.param({}, [{**VERIFY, "denyLatest": True}], "registry.example.com/app:latest", (False, "latest-denied"),
                 "uses the tag :latest", id="rule-can-switch-on-deny-latest"),
    pytest.param({"requireDigest": True}, [{**VERIFY, "requireDigest": False}], "registry.example.com/app:1.0",
                 (None, "verify"), "", id="rule-can-switch-off-global-require-digest"),
    pytest.param({}, [{**VERIFY, "requireDigest": True}], "registry.example.com/app:1.0", (False, "digest-required"),
                 "pinned by digest", id="rule-can-switch-on-require-digest"),
    pytest.param({"denyLatest": True}, [{**VERIFY, "denyLatest": False}, {"images": "docker.io/**"}],
                 "docker.io/library/nginx", (False, "latest-denied"), "policy[1] (docker.io/**)",
                 id="rule-override-applies-only-to-its-own-images"),
]


@pytest.mark.parametrize("top, rules, image, outcome, message", STATIC)
def test_static_decision(top, rules, image, outcome, message, key_path):
    cfg = make_config(key_path, rules, **top)
    ref = parse_reference(image)
    decision = static_decision(cfg, ref, match_rule(cfg, ref))
    assert (decision.passed, decision.reason) == outcome
    assert message in decision.message


@pytest.mark.parametrize(
    "global_mode, rule_mode, expected",
    [
        pytest.param("enforce", None, "enforce", id="global-enforce"),
        pytest.param("warn", None, "warn", id="global-warn"),
        pytest.param("warn", "enforce", "enforce", id="rule-enforce-overrides-global-warn"),
        pytest.param("enforce", "warn", "warn", id="rule-warn-overrides-global-enforce"),
    ],
)
def test_rule_mode_overrides_global_mode(global_mode, rule_mode, expected, key_path):
    rule = dict(VERIFY, **({"mode": rule_mode} if rule_mode else {}))
    cfg = make_config(key_path, [rule], mode=global_mode)
    assert cfg.rule_mode(cfg.policy[0]) == expected
    assert cfg.rule_mode(None) == global_mode
