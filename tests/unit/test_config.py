"""Specification of configuration validation (signgate.config).

Validation is strict and every error names the file and the field path, so that the person
reading the hook's log (or `signgate config`) can go straight to the line to fix.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signgate.config import (
    DEFAULT_BINDING_NAME,
    ConfigError,
    build_config,
    config_path_from_env,
    load_config,
    parse_config,
)

SOURCE = "test.yaml"
KEY = "{key}"  # placeholder, replaced by the path of a real PEM public key


@pytest.fixture
def key_path(tmp_path: Path) -> str:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "cosign.pub"
    path.write_bytes(pem)
    return str(path)


def _fill(value: Any, key_path: str) -> Any:
    if value == KEY:
        return key_path
    if isinstance(value, dict):
        return {k: _fill(v, key_path) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, key_path) for v in value]
    return value


def config(**top: Any) -> dict[str, Any]:
    """A valid configuration with the given top-level fields replaced (None removes one)."""
    data: dict[str, Any] = {
        "keys": {"default": KEY},
        "policy": [{"images": "registry.example.com/**"}],
    }
    for name, value in top.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def rule(**fields: Any) -> dict[str, Any]:
    """A valid configuration whose only rule has the given fields added to `images`."""
    return config(policy=[{"images": "registry.example.com/**", **fields}])


def build(data: Any, key_path: str, environ: dict[str, str] | None = None):
    return build_config(_fill(copy.deepcopy(data), key_path), SOURCE, environ or {})


INVALID = [
    # unknown fields, at every level
    pytest.param(config(polcy=[]), "test.yaml: top level: unknown field 'polcy'", id="unknown-top-level-field"),
    pytest.param(config(webhook={"timeout": 5}), "test.yaml: webhook: unknown field 'timeout'",
                 id="unknown-webhook-field"),
    pytest.param(config(webhook={"namespaceSelector": {"matchLabel": {"a": "b"}}}),
                 "test.yaml: webhook.namespaceSelector: unknown field(s) matchLabel", id="unknown-selector-field"),
    pytest.param(config(webhook={"namespaceSelector": {"matchExpressions": [
        {"key": "a", "operator": "Exists", "value": ["x"]}]}}),
                 "test.yaml: webhook.namespaceSelector.matchExpressions[0]: must have key, operator",
                 id="unknown-selector-expression-field"),
    pytest.param(config(keys={"default": {"path": KEY, "hash": "sha256"}}),
                 "test.yaml: keys.default: unknown field 'hash'", id="unknown-key-entry-field"),
    pytest.param(config(rekorKeys={"rekor": {"path": KEY, "url": "x"}}),
                 "test.yaml: rekorKeys.rekor: unknown field 'url'", id="unknown-rekor-key-entry-field"),
    pytest.param(config(registries={"insecureHosts": []}), "test.yaml: registries: unknown field 'insecureHosts'",
                 id="unknown-registries-field"),
    pytest.param(config(limits={"maxBytes": 2048}), "test.yaml: limits: unknown field 'maxBytes'",
                 id="unknown-limits-field"),
    pytest.param(rule(key=["default"]), "test.yaml: policy[0]: unknown field 'key'", id="unknown-rule-field"),
    pytest.param({1: "x", "keys": {"default": KEY}, "policy": [{"images": "a.io/b"}]},
                 "test.yaml: top level: field names must be strings", id="non-string-field-name"),
    # wrong shapes and types
    pytest.param(["policy"], "test.yaml: top level: must be a mapping, got a list", id="top-level-is-a-list"),
    pytest.param(config(webhook="fast"), "test.yaml: webhook: must be a mapping, got a string",
                 id="webhook-is-a-string"),
    pytest.param(config(webhook={"timeoutSeconds": "10"}),
                 "test.yaml: webhook.timeoutSeconds: must be an integer between 1 and 30, got a string '10'",
                 id="timeout-is-a-string"),
    pytest.param(config(webhook={"timeoutSeconds": True}),
                 "test.yaml: webhook.timeoutSeconds: must be an integer between 1 and 30, got a boolean", id="timeout-is-a-boolean"),
    pytest.param(config(webhook={"timeoutSeconds": 10.5}),
                 "test.yaml: webhook.timeoutSeconds: must be an integer between 1 and 30, got a number 10.5", id="timeout-is-fractional"),
    pytest.param(config(webhook={"deadlineSeconds": "8"}),
                 "test.yaml: webhook.deadlineSeconds: must be a finite number between 0.1 and 30, got a string '8'", id="deadline-is-a-string"),
    pytest.param(config(webhook={"failurePolicy": "Retry"}),
                 "test.yaml: webhook.failurePolicy: must be one of Fail, Ignore, got 'Retry'",
                 id="unknown-failure-policy"),
    pytest.param(config(webhook={"excludeNamespaces": "ci"}),
                 "test.yaml: webhook.excludeNamespaces: must be a list of non-empty strings",
                 id="exclude-namespaces-is-a-string"),
    pytest.param(config(webhook={"excludeNamespaces": [""]}),
                 "test.yaml: webhook.excludeNamespaces: must be a list of non-empty strings",
                 id="exclude-namespaces-holds-an-empty-name"),
    pytest.param(config(webhook={"signgateNamespace": 5}),
                 "test.yaml: webhook.signgateNamespace: must be a string, got an integer",
                 id="signgate-namespace-is-a-number"),
    pytest.param(config(keys=["default"]), "test.yaml: keys: must be a mapping, got a list", id="keys-is-a-list"),
    pytest.param(config(keys={"default": 5}), "test.yaml: keys.default: must be the path of a PEM public key file",
                 id="key-is-a-number"),
    pytest.param(config(keys={"default": ""}), "test.yaml: keys.default: the key file path is empty",
                 id="key-path-is-empty"),
    pytest.param(config(keys={"default": {"hashAlgorithm": "sha256"}}), "test.yaml: keys.default.path: is required",
                 id="key-mapping-without-path"),
    pytest.param(config(keys={"default": {"path": KEY, "hashAlgorithm": "md5"}}),
                 "test.yaml: keys.default.hashAlgorithm: must be one of sha256, sha384, sha512, got 'md5'",
                 id="unknown-hash-algorithm"),
    pytest.param(config(registries={"insecure": "localhost:5000"}),
                 "test.yaml: registries.insecure: must be a list of non-empty strings", id="insecure-is-a-string"),
    pytest.param(config(registries={"caBundle": "/nonexistent/ca.crt"}),
                 "test.yaml: registries.caBundle: cannot read /nonexistent/ca.crt", id="unreadable-ca-bundle"),
    pytest.param(config(registries={"auth": "/nonexistent/.dockerconfigjson"}),
                 "test.yaml: registries.auth: cannot read /nonexistent/.dockerconfigjson", id="unreadable-auth-file"),
    pytest.param(config(limits={"maxBlobBytes": 10}), "test.yaml: limits.maxBlobBytes: must be an integer between 1024 and 67108864, got 10",
                 id="blob-limit-below-minimum"),
    pytest.param(config(limits={"maxSignatureLayers": 0}),
                 "test.yaml: limits.maxSignatureLayers: must be an integer between 1 and 1000, got 0", id="layer-limit-zero"),
    pytest.param(config(limits={"connectTimeoutSeconds": 0}),
                 "test.yaml: limits.connectTimeoutSeconds: must be a finite number between 0.1 and 60, got 0", id="connect-timeout-zero"),
    pytest.param(config(mode="audit"), "test.yaml: mode: must be one of enforce, warn, got 'audit'",
                 id="unknown-global-mode"),
    pytest.param(config(denyLatest="yes"), "test.yaml: denyLatest: must be true or false, got a string 'yes'",
                 id="deny-latest-is-a-string"),
    pytest.param(config(requireDigest=1), "test.yaml: requireDigest: must be true or false, got an integer 1",
                 id="require-digest-is-a-number"),
    pytest.param(config(unmatchedImages="warn"), "test.yaml: unmatchedImages: must be one of deny, allow",
                 id="unknown-unmatched-images-choice"),
    # webhook semantics
    pytest.param(config(webhook={"timeoutSeconds": 0}), "test.yaml: webhook.timeoutSeconds: must be an integer between 1 and 30, got 0",
                 id="timeout-zero"),
    pytest.param(config(webhook={"timeoutSeconds": 31}),
                 "test.yaml: webhook.timeoutSeconds: must be an integer between 1 and 30, got 31", id="timeout-above-30"),
    pytest.param(config(webhook={"timeoutSeconds": 10, "deadlineSeconds": 10}),
                 "test.yaml: webhook.deadlineSeconds: must be shorter than timeoutSeconds (10)",
                 id="deadline-equal-to-timeout"),
    pytest.param(config(webhook={"deadlineSeconds": 12}),
                 "test.yaml: webhook.deadlineSeconds: must be shorter than timeoutSeconds (10)",
                 id="deadline-beyond-default-timeout"),
    pytest.param(config(webhook={"deadlineSeconds": 0.05}),
                 "test.yaml: webhook.deadlineSeconds: must be a finite number between 0.1 and 30, got 0.05", id="deadline-too-small"),
    pytest.param(config(webhook={"name": "signgate.dev"}),
                 "test.yaml: webhook.name: must be a fully-qualified name with at least three dot-separated parts, "
                 "got 'signgate.dev'", id="webhook-name-with-two-parts"),
    pytest.param(config(webhook={"name": "images..signgate"}), "test.yaml: webhook.name: must be a fully-qualified",
                 id="webhook-name-with-an-empty-part"),
    pytest.param(config(webhook={"name": " images.signgate.dev"}), "test.yaml: webhook.name: must be a fully-qualified",
                 id="webhook-name-with-white-space"),
    pytest.param(config(webhook={"namespaceSelector": "signed=required"}),
                 "test.yaml: webhook.namespaceSelector: must be a label selector mapping", id="selector-is-a-string"),
    pytest.param(config(webhook={"namespaceSelector": {"matchLabels": {"signed": True}}}),
                 "test.yaml: webhook.namespaceSelector.matchLabels: must map label names to string values",
                 id="selector-label-value-is-a-boolean"),
    pytest.param(config(webhook={"namespaceSelector": {"matchExpressions": {"key": "a"}}}),
                 "test.yaml: webhook.namespaceSelector.matchExpressions: must be a list",
                 id="selector-expressions-not-a-list"),
    pytest.param(config(webhook={"namespaceSelector": {"matchExpressions": [{"operator": "Exists"}]}}),
                 "test.yaml: webhook.namespaceSelector.matchExpressions[0]: must have key, operator",
                 id="selector-expression-without-key"),
    pytest.param(config(webhook={"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}}),
                 "test.yaml: webhook.namespaceSelector.matchExpressions[0].operator: must be one of In, NotIn",
                 id="selector-expression-unknown-operator"),
    pytest.param(config(webhook={"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
                 "test.yaml: webhook.namespaceSelector.matchExpressions[0].values: must not be empty for operator In",
                 id="selector-in-without-values"),
    pytest.param(config(webhook={"namespaceSelector": {"matchExpressions": [
        {"key": "a", "operator": "NotIn", "values": [1]}]}}),
                 "test.yaml: webhook.namespaceSelector.matchExpressions[0].values: must be a list of strings",
                 id="selector-values-not-strings"),
    # the policy list
    pytest.param(config(policy=None), "test.yaml: policy: is required", id="policy-missing"),
    pytest.param(config(policy=[]), "test.yaml: policy: must be a non-empty list of rules", id="policy-empty"),
    pytest.param(config(policy={"images": "a.io/b"}), "test.yaml: policy: must be a non-empty list of rules",
                 id="policy-is-a-mapping"),
    pytest.param(config(policy=["registry.example.com/**"]), "test.yaml: policy[0]: must be a mapping, got a string",
                 id="rule-is-a-string"),
    pytest.param(config(policy=[{"action": "allow"}]), "test.yaml: policy[0].images: is required",
                 id="rule-without-images"),
    pytest.param(config(policy=[{"images": 5}]), "test.yaml: policy[0].images: must be a string, got an integer",
                 id="rule-images-is-a-number"),
    pytest.param(config(policy=[{"images": "a.io/**", "action": "allow"}, {"images": "nginx", "action": "allow"}]),
                 "test.yaml: policy[1].images: 'nginx' has no '/'", id="second-rule-pattern-without-slash"),
    pytest.param(rule(images="docker.io/library/nginx:1.25"),
                 "test.yaml: policy[0].images: 'docker.io/library/nginx:1.25': patterns match registry/repository; "
                 "leave out tags and digests", id="rule-pattern-with-tag"),
    pytest.param(rule(action="permit"), "test.yaml: policy[0].action: must be one of verify, allow, deny, got 'permit'",
                 id="unknown-action"),
    pytest.param(rule(threshold=2), "test.yaml: policy[0].threshold: is 2, but the rule lists only 1 key(s)",
                 id="threshold-above-number-of-keys"),
    pytest.param(rule(threshold=0), "test.yaml: policy[0].threshold: must be an integer between 1 and 1000, got 0", id="threshold-zero"),
    pytest.param(rule(threshold="1"), "test.yaml: policy[0].threshold: must be an integer between 1 and 1000, got a string",
                 id="threshold-is-a-string"),
    pytest.param(config(keys={"a": KEY, "b": KEY}, policy=[{"images": "a.io/**", "keys": ["a"], "required": ["b"]}]),
                 "test.yaml: policy[0].required: b must also be listed in keys", id="required-key-not-in-keys"),
    pytest.param(rule(keys=["nope"]), "test.yaml: policy[0].keys: names unknown key 'nope' (keys: default)",
                 id="rule-names-unknown-key"),
    pytest.param(rule(required=["nope"]), "test.yaml: policy[0].required: names unknown key 'nope' (keys: default)",
                 id="rule-requires-unknown-key"),
    pytest.param(config(keys={}, policy=[{"images": "a.io/**", "keys": ["x"]}]),
                 "test.yaml: policy[0].keys: names unknown key 'x' (keys: none)", id="rule-key-with-no-keys-defined"),
    pytest.param(rule(keys=["default", "default"]), "test.yaml: policy[0].keys: lists a key twice",
                 id="rule-lists-a-key-twice"),
    pytest.param(config(keys={"team": KEY}), "test.yaml: policy[0].keys: is required for a verify rule",
                 id="verify-rule-without-keys-and-no-default-key"),
    pytest.param(rule(keys="default"), "test.yaml: policy[0].keys: must be a list of non-empty strings",
                 id="rule-keys-is-a-string"),
    pytest.param(rule(action="allow", keys=["default"]),
                 "test.yaml: policy[0].keys: has no meaning for a static 'allow' rule", id="allow-rule-with-keys"),
    pytest.param(rule(action="deny", annotations={"team": "a"}),
                 "test.yaml: policy[0].annotations: has no meaning for a static 'deny' rule",
                 id="deny-rule-with-annotations"),
    pytest.param(rule(message="no"), "test.yaml: policy[0].message: is only used by deny rules",
                 id="message-on-a-verify-rule"),
    pytest.param(rule(annotations={"build": 42}),
                 "test.yaml: policy[0].annotations: must be a mapping of strings to strings (quote numbers",
                 id="annotation-value-is-a-number"),
    pytest.param(rule(checkIdentity="true"), "test.yaml: policy[0].checkIdentity: must be true or false",
                 id="check-identity-is-a-string"),
    pytest.param(rule(signatureRepository="registry.example.com/sigs:v1"),
                 "test.yaml: policy[0].signatureRepository: must be a repository name without tag or digest",
                 id="signature-repository-with-tag"),
    pytest.param(rule(signatureRepository="registry.example.com/Sigs"),
                 "test.yaml: policy[0].signatureRepository: invalid image reference", id="invalid-signature-repository"),
    pytest.param(rule(mode="audit"), "test.yaml: policy[0].mode: must be one of enforce, warn, got 'audit'",
                 id="unknown-rule-mode"),
    pytest.param(rule(denyLatest="no"), "test.yaml: policy[0].denyLatest: must be true or false",
                 id="rule-deny-latest-is-a-string"),
    pytest.param(rule(tlog="maybe"), "test.yaml: policy[0].tlog: must be one of ignore, required, got 'maybe'",
                 id="unknown-tlog-choice"),
    pytest.param(rule(tlog="required"), "test.yaml: policy[0].tlog: is 'required', but no rekorKeys are configured",
                 id="tlog-required-without-rekor-keys"),
    pytest.param(rule(multiArch="any"), "test.yaml: policy[0].multiArch: must be one of exact, index-or-platforms",
                 id="unknown-multi-arch-choice"),
]


@pytest.mark.parametrize("data, expected", INVALID)
def test_invalid_configuration_names_file_and_field(data, expected, key_path):
    with pytest.raises(ConfigError) as info:
        build(data, key_path)
    assert expected in str(info.value)
    assert str(info.value).startswith("test.yaml: ")
    assert info.value.reason == "invalid-config"


def test_minimal_configuration_gets_the_documented_defaults(key_path):
    cfg = build(config(), key_path)
    assert cfg.source == SOURCE
    assert cfg.webhook.name == DEFAULT_BINDING_NAME == "image-signatures.signgate.dev"
    assert dict(cfg.webhook.namespace_selector) == {"matchLabels": {"signed": "required"}}
    assert cfg.webhook.timeout_seconds == 10
    assert cfg.webhook.deadline_seconds == 8.0
    assert cfg.webhook.failure_policy == "Fail"
    assert cfg.webhook.signgate_namespace is None
    assert (cfg.mode, cfg.deny_latest, cfg.require_digest, cfg.unmatched_images) == ("enforce", False, False, "deny")
    (only,) = cfg.policy
    assert (only.index, only.images, only.action, only.keys, only.threshold) == (
        0, "registry.example.com/**", "verify", ("default",), 1
    )
    assert cfg.keys["default"].path == key_path
    assert cfg.keys["default"].hash_algorithm is None


@pytest.mark.parametrize(
    "timeout, deadline",
    [
        pytest.param(30, 28.0, id="timeout-30-deadline-28"),
        pytest.param(10, 8.0, id="timeout-10-deadline-8"),
        pytest.param(4, 2.0, id="timeout-4-deadline-2"),
        pytest.param(3, 1.5, id="short-timeout-deadline-is-at-least-half"),
        pytest.param(1, 0.5, id="one-second-timeout-deadline-half-a-second"),
    ],
)
def test_default_deadline_is_two_seconds_before_the_timeout(timeout, deadline, key_path):
    cfg = build(config(webhook={"timeoutSeconds": timeout}), key_path)
    assert cfg.webhook.deadline_seconds == deadline
    assert cfg.webhook.deadline_seconds < cfg.webhook.timeout_seconds


def test_explicit_deadline_and_selector_are_kept(key_path):
    selector = {"matchExpressions": [{"key": "signgate.dev/enforce", "operator": "NotIn", "values": ["off"]}]}
    cfg = build(config(webhook={"timeoutSeconds": 5, "deadlineSeconds": 4.5, "namespaceSelector": selector}), key_path)
    assert cfg.webhook.deadline_seconds == 4.5
    assert cfg.webhook.namespace_selector == selector


def test_key_entry_as_mapping_carries_its_hash_algorithm(key_path):
    cfg = build(config(keys={"default": {"path": KEY, "hashAlgorithm": "sha512"}}), key_path)
    assert (cfg.keys["default"].path, cfg.keys["default"].hash_algorithm) == (key_path, "sha512")


def test_insecure_registries_are_lower_cased(key_path):
    cfg = build(config(registries={"insecure": ["Registry.Local:5000"]}), key_path)
    assert cfg.registries.insecure == frozenset({"registry.local:5000"})


@pytest.mark.parametrize(
    "environ, configured, expected",
    [
        pytest.param({}, None, None, id="neither-set-means-unknown"),
        pytest.param({"SIGNGATE_NAMESPACE": "from-env"}, None, "from-env", id="env-alone"),
        pytest.param({}, "from-config", "from-config", id="config-alone"),
        pytest.param({"SIGNGATE_NAMESPACE": ""}, "from-config", "from-config", id="empty-env-falls-back-to-config"),
        pytest.param(
            {"SIGNGATE_NAMESPACE": "from-env"},
            "from-config",
            "from-env",
            id="env-wins-over-config",
        ),
    ],
)
def test_signgate_namespace_from_env_or_config(environ, configured, expected, key_path):
    webhook = {} if configured is None else {"signgateNamespace": configured}
    cfg = build(config(webhook=webhook), key_path, environ)
    assert cfg.webhook.signgate_namespace == expected


@pytest.mark.parametrize(
    "environ, webhook, expected",
    [
        pytest.param({}, {}, ("kube-system",), id="kube-system-by-default"),
        pytest.param({}, {"signgateNamespace": "signgate"}, ("kube-system", "signgate"), id="own-namespace-added"),
        pytest.param({"SIGNGATE_NAMESPACE": "sg"}, {}, ("kube-system", "sg"), id="own-namespace-from-env"),
        pytest.param({}, {"signgateNamespace": "signgate", "excludeNamespaces": ["ci", "kube-system"]},
                     ("kube-system", "signgate", "ci"), id="configured-exclusions-added-without-duplicates"),
        pytest.param({}, {"excludeNamespaces": ["default"]}, ("kube-system", "default"),
                     id="configured-exclusions-cannot-remove-kube-system"),
    ],
)
def test_excluded_namespaces_always_hold_kube_system(environ, webhook, expected, key_path):
    cfg = build(config(webhook=webhook), key_path, environ)
    assert cfg.excluded_namespaces() == expected


def test_explicit_null_means_default_as_in_the_readme(key_path):
    cfg = build(rule(signatureRepository=None, mode=None, denyLatest=None, requireDigest=None), key_path)
    assert cfg.policy[0].deny_latest is None and cfg.policy[0].mode is None


# --- files: parse_config and load_config ------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param(b"policy:\n  - images: [unclosed\n", "test.yaml: invalid YAML at line 3, column 1",
                     id="unclosed-flow-sequence"),
        pytest.param(b"webhook:\n\ttimeoutSeconds: 5\n", "test.yaml: invalid YAML at line 2, column 1: found character",
                     id="tab-indentation"),
        pytest.param(b"mode: enforce\n mode: warn\n", "test.yaml: invalid YAML at line 2",
                     id="mis-indented-mapping"),
        pytest.param(b"- a\n- b\n", "test.yaml: top level: must be a mapping, got a list", id="yaml-list"),
        pytest.param(b"", "test.yaml: policy: is required", id="empty-file-needs-a-policy"),
    ],
)
def test_parse_config_reports_yaml_problems_with_file_and_line(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, SOURCE, {})
    assert expected in str(info.value)


def test_parse_config_refuses_duplicate_keys(key_path):
    raw = f"keys: {{default: {key_path}}}\npolicy:\n  - {{images: 'a.io/**', action: deny}}\npolicy:\n  - {{images: '**'}}\n"
    with pytest.raises(ConfigError, match="policy"):
        parse_config(raw, SOURCE, {})


def test_parse_config_accepts_json(key_path):
    raw = '{"keys": {"default": "%s"}, "mode": "warn", "policy": [{"images": "**"}]}' % key_path
    cfg = parse_config(raw, SOURCE, {})
    assert cfg.mode == "warn" and cfg.policy[0].images == "**"


def test_load_config_reads_the_file_and_names_it(tmp_path, key_path):
    path = tmp_path / "signgate.yaml"
    path.write_text(f"keys:\n  default: {key_path}\npolicy:\n  - images: 'a.io/**'\n    threshold: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert str(info.value).startswith(f"{path}: policy[0].threshold: is 2")


def test_load_config_missing_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing), {})
    assert str(info.value) == f"{missing}: configuration file not found (set SIGNGATE_CONFIG)"


def test_load_config_directory_is_unreadable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), {})
    assert str(info.value).startswith(f"{tmp_path}: cannot read the configuration file")


def test_load_config_refuses_files_over_one_mebibyte(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert str(info.value) == f"{path}: configuration file is larger than 1 MiB"


@pytest.mark.parametrize(
    "environ, expected",
    [
        pytest.param({}, "/etc/signgate/config.yaml", id="default-path"),
        pytest.param({"SIGNGATE_CONFIG": "/tmp/x.yaml"}, "/tmp/x.yaml", id="env-path"),
        pytest.param({"SIGNGATE_CONFIG": ""}, "/etc/signgate/config.yaml", id="empty-env-means-default"),
    ],
)
def test_config_path_from_env(environ, expected):
    assert config_path_from_env(environ) == expected


# ---- registries are read in the canonical form image names are matched in -------------------------


@pytest.mark.parametrize(
    "written, canonical",
    [
        pytest.param("registry.example.com:443/team/**", "registry.example.com/team/**", id="default-port-dropped"),
        pytest.param("localhost:5000/**", "127.0.0.1:5000/**", id="localhost-is-127.0.0.1"),
        pytest.param("registry.localhost/**", "127.0.0.1/**", id="localhost-subdomain-is-127.0.0.1"),
        pytest.param("registry.example.com./**", "registry.example.com/**", id="trailing-dot-dropped"),
        pytest.param("index.docker.io:443/library/*", "docker.io/library/*", id="docker-hub-alias"),
        pytest.param("[0:0::1]:5000/**", "[::1]:5000/**", id="ipv6-compressed"),
        pytest.param("insecure.local:80/**", "insecure.local/**", id="port-80-of-an-insecure-host-dropped"),
        pytest.param("*.example.com/**", "*.example.com/**", id="wildcard-host-kept"),
        pytest.param("**", "**", id="catch-all-kept"),
    ],
)
def test_rule_patterns_are_canonicalised(key_path, written, canonical):
    cfg = build(config(registries={"insecure": ["insecure.local"]}, policy=[{"images": written}]), key_path)
    assert cfg.policy[0].images == canonical


@pytest.mark.parametrize(
    "pattern, expected",
    [
        pytest.param("127.1:5000/**", "registry host '127.1' is not an IPv4 address", id="short-ipv4"),
        pytest.param("2130706433:5000/**", "registry host '2130706433' is not an IPv4 address", id="decimal-ipv4"),
        pytest.param("[::ffff:7f00:1]:5000/**", "IPv6 spelling of the IPv4 address 127.0.0.1", id="ipv4-mapped"),
        pytest.param("registry.example.com:0443/**", "invalid port '0443'", id="leading-zero-port"),
        pytest.param("*.example.com:443/**", "leave out :443", id="wildcard-host-with-default-port"),
        pytest.param("*.example.com:0443/**", "invalid port '0443'", id="wildcard-host-with-leading-zero-port"),
        pytest.param("*.localhost/**", "can never match", id="wildcard-localhost"),
    ],
)
def test_rule_patterns_without_canonical_form_are_refused_naming_the_field(key_path, pattern, expected):
    with pytest.raises(ConfigError) as raised:
        build(config(policy=[{"images": pattern}]), key_path)
    assert str(raised.value).startswith("test.yaml: policy[0].images: ")
    assert expected in str(raised.value)


def test_insecure_entries_and_signature_repository_are_canonicalised(key_path):
    cfg = build(
        config(
            registries={"insecure": ["LocalHost:5000", "Plain.Local:80", "plain.local:8080", "tls.local:443"]},
            policy=[{"images": "registry.example.com/**", "signatureRepository": "Registry.Example.com:443/sigs"}],
        ),
        key_path,
    )
    assert cfg.registries.insecure == frozenset({"127.0.0.1:5000", "plain.local", "plain.local:8080", "tls.local:443"})
    assert cfg.policy[0].signature_repository == "registry.example.com/sigs"


@pytest.mark.parametrize(
    "registries, field, expected",
    [
        pytest.param({"insecure": ["127.1:5000"]}, "registries.insecure[0]", "'127.1' is not an IPv4 address",
                     id="insecure-short-ipv4"),
        pytest.param({"insecure": ["ok.local", "reg.local:00080"]}, "registries.insecure[1]", "invalid port '00080'",
                     id="insecure-leading-zero-port"),
        pytest.param({"allowNetworks": ["10.0.0.0/8", "10.1.2.3/8"]}, "registries.allowNetworks[1]", "host bits set",
                     id="network-with-host-bits"),
        pytest.param({"allowNetworks": ["10.0/8"]}, "registries.allowNetworks[0]", "not a network in CIDR form",
                     id="short-form-network"),
        pytest.param({"allowNetworks": ["010.0.0.0/8"]}, "registries.allowNetworks[0]", "not a network in CIDR form",
                     id="leading-zero-network"),
        pytest.param({"allowNetworks": ["registry.internal"]}, "registries.allowNetworks[0]", "not a network in CIDR form",
                     id="host-name-is-not-a-network"),
        pytest.param({"allowNetworks": ["0.0.0.0/0"]}, "registries.allowNetworks[0]", "overlaps 0.0.0.0/8",
                     id="everything-overlaps-unspecified-and-loopback"),
        pytest.param({"allowNetworks": ["127.0.0.0/8"]}, "registries.allowNetworks[0]", "overlaps 127.0.0.0/8",
                     id="loopback-is-never-opened-by-network"),
        pytest.param({"allowNetworks": ["169.254.0.0/16"]}, "registries.allowNetworks[0]", "overlaps 169.254.0.0/16",
                     id="link-local-and-metadata-are-never-opened-by-network"),
        pytest.param({"allowNetworks": ["::ffff:10.0.0.0/104"]}, "registries.allowNetworks[0]", "spells IPv4 addresses in IPv6",
                     id="ipv4-mapped-network"),
        pytest.param({"allowNetworks": ["FD00:0::/8"]}, "registries.allowNetworks[0]", "write the network as 'fd00::/8'",
                     id="non-canonical-ipv6-network"),
        pytest.param({"allowNetworks": "10.0.0.0/8"}, "registries.allowNetworks", "must be a list of non-empty strings",
                     id="network-list-as-a-string"),
    ],
)
def test_registry_settings_without_canonical_form_are_refused_naming_the_field(key_path, registries, field, expected):
    with pytest.raises(ConfigError) as raised:
        build(config(registries=registries), key_path)
    assert str(raised.value).startswith(f"test.yaml: {field}: "), str(raised.value)
    assert expected in str(raised.value)


def test_allow_networks_are_kept_in_canonical_form(key_path):
    cfg = build(config(registries={"allowNetworks": ["10.0.0.0/8", "fd00::/8", "100.64.0.0/10", "10.96.0.10"]}), key_path)
    assert cfg.registries.allow_networks == ("10.0.0.0/8", "fd00::/8", "100.64.0.0/10", "10.96.0.10/32")


# --- numbers: finite and in range (issue 13, finding 4) -----------------------------------------

from signgate.config import RANGES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _yaml_with(field_path: str, value: str, key_path: str) -> str:
    """A valid YAML configuration with one numeric field set to `value` (YAML text)."""
    section, _, name = field_path.partition(".")
    if section == "policy[]":
        return f"keys: {{default: {key_path}}}\npolicy:\n  - images: 'a.io/**'\n    {name}: {value}\n"
    return f"keys: {{default: {key_path}}}\npolicy: [{{images: 'a.io/**'}}]\n{section}:\n  {name}: {value}\n"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _shown_path(field_path: str) -> str:
    return field_path.replace("policy[]", "policy[0]")


NOT_FINITE = [
    pytest.param(".nan", ".nan", id="nan"),
    pytest.param(".NaN", ".nan", id="NaN"),
    pytest.param(".inf", ".inf", id="inf"),
    pytest.param("-.inf", "-.inf", id="minus-inf"),
    pytest.param("1.0e+400", ".inf", id="float-overflowing-to-inf"),
    pytest.param("1" + "0" * 30, "an integer of", id="large-integer"),
    pytest.param("9" * 5000, "an integer of 5000 digits", id="integer-too-long-to-convert"),
]


@pytest.mark.parametrize("field_path", sorted(RANGES))
@pytest.mark.parametrize("value, shown", NOT_FINITE)
def test_every_number_must_be_finite_and_in_range_and_the_error_names_the_field(field_path, value, shown, key_path):
    with pytest.raises(ConfigError) as info:
        parse_config(_yaml_with(field_path, value, key_path), "config.yaml", {})
    minimum, maximum = RANGES[field_path]
    text = str(info.value)
    assert text.startswith(f"config.yaml: {_shown_path(field_path)}: must be ")
    assert f"between {_number(minimum)} and {_number(maximum)}, got " in text
    assert shown in text
    assert len(text) < 300


def test_the_error_for_a_nan_lifetime_reads_as_documented(key_path):
    with pytest.raises(ConfigError) as info:
        parse_config(_yaml_with("cache.ttlSeconds", ".nan", key_path), "config.yaml", {})
    assert str(info.value) == "config.yaml: cache.ttlSeconds: must be a finite number between 0 and 86400, got .nan"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1" + "0" * 400], ids=["nan", "inf", "minus-inf", "huge-integer"])
def test_json_configurations_get_the_same_checks(value, key_path):
    # Python's JSON reader accepts NaN and Infinity, and the chart renders the configuration as JSON.
    raw = '{"keys": {"default": "%s"}, "cache": {"tagTtlSeconds": %s}, "policy": [{"images": "**"}]}' % (key_path, value)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "config.json", {})
    assert str(info.value).startswith("config.json: cache.tagTtlSeconds: must be a finite number between 0 and 86400, got ")


@pytest.mark.parametrize("field_path", sorted(RANGES))
def test_each_range_admits_its_ends_and_refuses_beyond_them(field_path, key_path):
    minimum, maximum = RANGES[field_path]
    context = {  # what the other fields must say for the ends to be valid
        "webhook.deadlineSeconds": "  timeoutSeconds: 30\n",
        "cache.negativeTtlSeconds": "  ttlSeconds: 86400\n",
    }.get(field_path, "")
    accepted = {
        "policy[].threshold": [minimum],  # a threshold above 1 needs as many keys (see INVALID)
        "webhook.deadlineSeconds": [minimum, 29.9],  # and it must stay below timeoutSeconds, at most 30
    }.get(field_path, [minimum, maximum])
    for value in accepted:
        parse_config(_yaml_with(field_path, repr(value), key_path) + context, "config.yaml", {})
    below = minimum - 1 if isinstance(minimum, int) else minimum / 2
    for value in (below, maximum + 1):
        with pytest.raises(ConfigError) as info:
            parse_config(_yaml_with(field_path, repr(value), key_path) + context, "config.yaml", {})
        assert str(info.value).startswith(f"config.yaml: {_shown_path(field_path)}: must be "), value


def test_the_chart_schema_states_every_range():
    # helm refuses out-of-range values before they reach a pod; the hook refuses them anyway.
    config_schema = json.loads((REPO / "chart" / "values.schema.json").read_text())["properties"]["config"]["properties"]
    for field_path, (minimum, maximum) in RANGES.items():
        section, _, name = field_path.partition(".")
        node = config_schema["policy"]["items"] if section == "policy[]" else config_schema[section]
        entry = node["properties"][name]
        assert (entry["minimum"], entry["maximum"]) == (minimum, maximum), field_path


def test_the_readme_states_every_range():
    readme = (REPO / "README.md").read_text()
    for field_path, (minimum, maximum) in RANGES.items():
        assert f"| `{field_path}` | {_number(minimum)} to {_number(maximum)}" in readme, field_path


# --- YAML bombs and other shapes the loader refuses (issue 13, finding 6) ----------------------------


def billion_laughs(field: str = "mode", depth: int = 10) -> str:
    """Nested aliases: a few hundred bytes of YAML standing for 9**depth values."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{field}: *l{depth - 1}\n"


def test_aliases_are_refused_while_loading(key_path):
    with pytest.raises(ConfigError) as info:
        parse_config(billion_laughs(), "config.yaml", {})
    assert str(info.value) == (
        "config.yaml: invalid YAML at line 2, column 10: aliases are not accepted in the configuration "
        "(found *l0); write the value out instead"
    )


def test_a_single_harmless_alias_is_refused_too(key_path):
    raw = f"keys: {{default: &k {key_path}}}\nrekorKeys: {{r: *k}}\npolicy: [{{images: 'a.io/**'}}]\n"
    with pytest.raises(ConfigError, match="aliases are not accepted"):
        parse_config(raw, "config.yaml", {})


def test_error_messages_never_build_the_whole_repr_of_a_value(key_path):
    # What aliases would have produced, built directly: 9**10 items in its repr(). Only a bounded
    # walk can describe it (a full repr() needs tens of gigabytes).
    value: Any = ["x"] * 9
    for _ in range(10):
        value = [value] * 9
    data = {"keys": {"default": key_path}, "policy": [{"images": "a.io/**"}], "mode": value}
    with pytest.raises(ConfigError) as info:
        build_config(data, SOURCE, {})  # not build(): its _fill would walk every item
    text = str(info.value)
    assert text.startswith("test.yaml: mode: must be a string, got a list [[[[")
    assert text.endswith("...") and len(text) < 120


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param("? [a, b]\n: 1\n", "config.yaml: invalid YAML at line 1, column 3: field names must be strings, "
                     "found a list as a field name", id="list-key"),
        pytest.param("policy:\n  - ? {a: 1}\n    : x\n", "config.yaml: invalid YAML at line 2, column 7: field names must "
                     "be strings, found a mapping as a field name", id="mapping-key-in-a-rule"),
        pytest.param('{"policy": [{"images": "**", "action": "allow"}], "%s": 1}' % ("x" * 100_000), "config.yaml: top level: unknown field 'xxxx",
                     id="long-unknown-field-name-is-cut"),
    ],
)
def test_keys_that_are_not_field_names_are_clear_errors(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "config.yaml", {})
    assert str(info.value).startswith(expected)
    assert len(str(info.value)) < 300


def test_a_configuration_file_that_is_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_config(str(fifo), {})
    assert str(info.value) == f"{fifo}: cannot read the configuration file: not a regular file (a named pipe)"
