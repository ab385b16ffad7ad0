"""The hook's decisions as tables, in memory: `hook.run` with a binding context and a parsed
configuration, no subprocess, no file and no registry.

Where a signature would be verified, a fake verifier stands in for the registries: it returns the
verdict a table row names and records what it was asked. The real verification, through real
registries and the hook's subprocess contract, is tested in tests/integration.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signgate import hook
from signgate.config import Config, build_config
from signgate.reference import ImageReference
from signgate.settings import Rule
from signgate.verdict import ImageVerdict

DIGEST = "sha256:" + "ab" * 32
SIGNED = ImageVerdict(True, "verified", "", digest=DIGEST, verified_keys=("default",))
UNSIGNED = ImageVerdict(False, "no-signature", "no signature found", digest=DIGEST)


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = Path(tmp_path_factory.mktemp("keys")) / "cosign.pub"
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


def make_config(key_path: str, policy: list[dict[str, Any]], **top: Any) -> Config:
    return build_config({"keys": {"default": key_path}, "policy": policy, **top}, "test.yaml", {})


class FakeVerifier:
    """(rule, reference) -> the verdict for the image's repository; records every call."""

    def __init__(self, verdicts: dict[str, ImageVerdict] | None = None, default: ImageVerdict = SIGNED) -> None:
        self.verdicts = verdicts or {}
        self.default = default
        self.calls: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __call__(self, rule: Rule, ref: ImageReference) -> ImageVerdict:
        with self._lock:
            self.calls.append((rule.index, str(ref)))
        return self.verdicts.get(ref.name, self.default)


def pod(images: list[str], *, operation: str = "CREATE", kind: str = "Pod", namespace: str = "team",
        init: list[str] = (), context: str = "Validating") -> list[dict[str, Any]]:
    spec = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}
    if init:
        spec["initContainers"] = [{"name": f"i{i}", "image": image} for i, image in enumerate(init)]
    if kind == "Pod":
        obj: dict[str, Any] = {"kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    else:
        obj = {"kind": kind, "metadata": {"name": "w"}, "spec": {"template": {"spec": spec}}}
    request = {"uid": "u-1", "operation": operation, "kind": {"kind": kind}, "namespace": namespace, "object": obj}
    return [{"type": context, "binding": "image-signatures.signgate.dev", "review": {"request": request}}]


def logged(result: hook.HookResult) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.log_lines]


def decision_log(result: hook.HookResult) -> dict[str, Any]:
    (entry,) = [e for e in logged(result) if e["msg"] == "signgate decision"]
    return entry


# ---- static rules: no verifier is asked -----------------------------------------------------------

REGISTRY = "registry.example.com"

STATIC = [
    pytest.param([{"images": f"{REGISTRY}/**", "action": "allow"}], {}, f"{REGISTRY}/app:v1",
                 True, "allowed-by-rule", None, id="allow-rule"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "deny", "message": "not here"}], {}, f"{REGISTRY}/app:v1",
                 False, "denied-by-rule", "not here", id="deny-rule-with-its-message"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "deny"}], {}, f"{REGISTRY}/app:v1",
                 False, "denied-by-rule", f"denied by policy[0] ({REGISTRY}/**)", id="deny-rule-names-itself"),
    pytest.param([{"images": "other.io/**"}], {}, f"{REGISTRY}/app:v1",
                 False, "untrusted-registry", f"registry or repository {REGISTRY}/app is not trusted: no policy rule matches it",
                 id="unmatched-denied-by-default"),
    pytest.param([{"images": "other.io/**"}], {"unmatchedImages": "allow"}, f"{REGISTRY}/app:v1",
                 True, "unmatched-allowed", None, id="unmatched-allowed"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "allow"}], {"denyLatest": True}, f"{REGISTRY}/app",
                 False, "latest-denied", "the image has no tag, which means :latest; use a fixed version tag or a digest "
                 f"(policy[0] ({REGISTRY}/**))", id="deny-latest-implied"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "allow"}], {"denyLatest": True}, f"{REGISTRY}/app:latest",
                 False, "latest-denied", "the image uses the tag :latest; use a fixed version tag or a digest "
                 f"(policy[0] ({REGISTRY}/**))", id="deny-latest-written"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "allow", "denyLatest": True}], {}, f"{REGISTRY}/app:v1",
                 True, "allowed-by-rule", None, id="deny-latest-lets-a-version-tag-pass"),
    pytest.param([{"images": "other.io/**"}], {"unmatchedImages": "allow", "denyLatest": True}, f"{REGISTRY}/app:latest",
                 False, "latest-denied", "the image uses the tag :latest; use a fixed version tag or a digest "
                 "(global tag rules)", id="deny-latest-applies-to-allowed-unmatched-images"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "allow"}], {"requireDigest": True}, f"{REGISTRY}/app:v1",
                 False, "digest-required", "the image must be pinned by digest (name@sha256:...), not by tag 'v1' "
                 f"(policy[0] ({REGISTRY}/**) require a digest)", id="require-digest"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "allow"}], {"requireDigest": True}, f"{REGISTRY}/app@{DIGEST}",
                 True, "allowed-by-rule", None, id="require-digest-satisfied"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "deny", "message": "no"}], {"requireDigest": True},
                 f"{REGISTRY}/app:v1", False, "denied-by-rule", "no", id="deny-comes-before-tag-rules"),
    pytest.param([{"images": f"{REGISTRY}/**", "action": "allow"}, {"images": f"{REGISTRY}/secret/*", "action": "deny"}],
                 {}, f"{REGISTRY}/secret/app:v1", False, "denied-by-rule", f"denied by policy[1] ({REGISTRY}/secret/*)",
                 id="most-specific-rule-wins"),
]


@pytest.mark.parametrize(("policy", "top", "image", "allowed", "reason", "message"), STATIC)
def test_static_rules(key_path: str, policy, top, image, allowed, reason, message) -> None:
    verifier = FakeVerifier()
    result = hook.run(pod([image]), make_config(key_path, policy, **top), verifier=verifier)
    assert verifier.calls == []
    if allowed:
        assert result.response == {"allowed": True}
    else:
        assert result.response == {"allowed": False, "message": f'signgate: container "c0" image "{image}": {message}'}
    entry = decision_log(result)
    assert [image_log["reason"] for image_log in entry["images"]] == [reason]
    assert entry["verdict"] == ("allowed" if allowed else "denied")


# ---- verification: the fake verifier's verdict decides --------------------------------------------

VERIFY = [{"images": f"{REGISTRY}/**"}]


@pytest.mark.parametrize(
    ("verdicts", "images", "allowed", "denied_lines"),
    [
        pytest.param({}, ["app:v1"], True, [], id="signed"),
        pytest.param({"app": UNSIGNED}, ["app:v1"], False, ['container "c0" image "{r}/app:v1": no signature found'],
                     id="unsigned"),
        pytest.param({"b": UNSIGNED}, ["a:v1", "b:v1", "c:v1"], False,
                     ['container "c1" image "{r}/b:v1": no signature found'], id="one-of-three-unsigned"),
        pytest.param({"a": UNSIGNED, "c": UNSIGNED}, ["a:v1", "b:v1", "c:v1"], False,
                     ['container "c0" image "{r}/a:v1": no signature found',
                      'container "c2" image "{r}/c:v1": no signature found'], id="every-failure-is-named-in-order"),
    ],
)
def test_verified_images(key_path: str, verdicts, images, allowed, denied_lines) -> None:
    verifier = FakeVerifier({f"{REGISTRY}/{name}": verdict for name, verdict in verdicts.items()})
    refs = [f"{REGISTRY}/{image}" for image in images]
    result = hook.run(pod(refs), make_config(key_path, VERIFY), verifier=verifier)
    assert sorted(ref for _, ref in verifier.calls) == sorted(refs)
    if allowed:
        assert result.response == {"allowed": True}
    else:
        lines = [line.format(r=REGISTRY) for line in denied_lines]
        assert result.response == {"allowed": False, "message": "signgate: " + "; ".join(lines)}


def test_an_image_used_twice_is_verified_once(key_path: str) -> None:
    verifier = FakeVerifier()
    image = f"{REGISTRY}/app:v1"
    result = hook.run(pod([image, image], init=[image]), make_config(key_path, VERIFY), verifier=verifier)
    assert result.response == {"allowed": True}
    assert verifier.calls == [(0, image)]
    assert [entry["container"] for entry in decision_log(result)["images"]] == ["i0", "c0", "c1"]


def test_a_verifier_that_raises_is_a_named_denial(key_path: str) -> None:
    def broken(rule: Rule, ref: ImageReference) -> ImageVerdict:
        raise RuntimeError("boom")

    result = hook.run(pod([f"{REGISTRY}/app:v1"]), make_config(key_path, VERIFY), verifier=broken)
    assert result.response == {
        "allowed": False,
        "message": f'signgate: container "c0" image "{REGISTRY}/app:v1": internal error while verifying: RuntimeError: boom',
    }


# ---- warn mode: a failure under a warn rule warns, and never denies --------------------------------


@pytest.mark.parametrize(
    ("policy", "top", "allowed", "warned", "denied"),
    [
        pytest.param(VERIFY, {"mode": "warn"}, True, ["a", "b"], [], id="global-warn"),
        pytest.param([{"images": f"{REGISTRY}/a", "mode": "warn"}, {"images": f"{REGISTRY}/b"}], {},
                     False, ["a"], ["b"], id="enforce-failure-denies-and-warn-failure-still-warns"),
        pytest.param([{"images": f"{REGISTRY}/a", "mode": "enforce"}, {"images": f"{REGISTRY}/b"}], {"mode": "warn"},
                     False, ["b"], ["a"], id="rule-mode-overrides-global-mode"),
    ],
)
def test_warn_mode(key_path: str, policy, top, allowed, warned, denied) -> None:
    verifier = FakeVerifier(default=UNSIGNED)
    images = [f"{REGISTRY}/a:v1", f"{REGISTRY}/b:v1"]
    result = hook.run(pod(images), make_config(key_path, policy, **top), verifier=verifier)
    assert result.response is not None
    assert result.response["allowed"] is allowed
    position = {"a": 0, "b": 1}
    line = 'container "c{i}" image "{r}/{n}:v1": no signature found'
    assert result.response.get("warnings", []) == [
        "signgate (warn mode) would deny: " + line.format(i=position[n], r=REGISTRY, n=n) for n in warned
    ]
    if denied:
        assert result.response["message"] == "signgate: " + "; ".join(
            line.format(i=position[n], r=REGISTRY, n=n) for n in denied)


def test_warn_mode_turns_an_error_into_a_warning(key_path: str) -> None:
    contexts = pod([f"{REGISTRY}/a:v1"])
    del contexts[0]["review"]["request"]["object"]
    result = hook.run(contexts, make_config(key_path, VERIFY, mode="warn"), verifier=FakeVerifier())
    assert result.response == {
        "allowed": True,
        "warnings": ["signgate (warn mode) would deny: the CREATE request for a Pod carries no object"],
    }
    assert result.reason == "invalid-input"


def test_an_ambiguous_registry_is_denied_even_in_warn_mode(key_path: str) -> None:
    result = hook.run(pod(["127.1:5000/app:v1"]), make_config(key_path, [{"images": "**"}], mode="warn"),
                      verifier=FakeVerifier())
    assert result.response is not None and result.response["allowed"] is False
    assert result.response["message"].startswith('signgate: container "c0" image "127.1:5000/app:v1": ')


# ---- operations and kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "kind", "checked"),
    [
        pytest.param("CREATE", "Pod", True, id="create-pod"),
        pytest.param("UPDATE", "Pod", True, id="update-pod"),
        pytest.param("CREATE", "Deployment", True, id="create-deployment"),
        pytest.param("UPDATE", "CronJob", True, id="update-cronjob"),
        pytest.param("DELETE", "Pod", False, id="delete"),
        pytest.param("CONNECT", "Pod", False, id="connect"),
        pytest.param("CREATE", "ConfigMap", False, id="kind-without-pod-spec"),
    ],
)
def test_operations_and_kinds(key_path: str, operation: str, kind: str, checked: bool) -> None:
    verifier = FakeVerifier(default=UNSIGNED)
    contexts = pod([f"{REGISTRY}/a:v1"], operation=operation, kind=kind if kind != "ConfigMap" else "Deployment")
    if kind == "ConfigMap":
        request = contexts[0]["review"]["request"]
        request["kind"] = {"kind": "ConfigMap"}
        request["object"]["kind"] = "ConfigMap"
    if kind == "CronJob":
        request = contexts[0]["review"]["request"]
        request["object"]["spec"] = {"jobTemplate": {"spec": request["object"]["spec"]}}
    result = hook.run(contexts, make_config(key_path, VERIFY), verifier=verifier)
    if checked:
        assert verifier.calls == [(0, f"{REGISTRY}/a:v1")]
        assert result.response is not None and result.response["allowed"] is False
    else:
        assert verifier.calls == []
        assert result.response == {"allowed": True}
        summary = f"operation {operation} not checked" if operation not in ("CREATE", "UPDATE") else "no pod spec"
        assert decision_log(result)["reasons"] == [summary]


def test_an_unchecked_operation_is_admitted_whatever_its_object(key_path: str) -> None:
    contexts = pod([f"{REGISTRY}/a:v1"], operation="DELETE")
    contexts[0]["review"]["request"]["object"] = "not an object"
    assert hook.run(contexts, make_config(key_path, VERIFY), verifier=FakeVerifier()).response == {"allowed": True}


# ---- the request and the binding context: every malformed input is a named denial ------------------


def _request(contexts: list[dict[str, Any]]) -> dict[str, Any]:
    return contexts[0]["review"]["request"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: b"{not json", "the binding context is not valid JSON", id="not-json"),
        pytest.param(lambda: b'"text"', "the binding context is not a JSON array", id="not-an-array"),
        pytest.param(lambda: [{"type": "Validating", "review": {}}], "the binding context has no review.request object",
                     id="no-request"),
        pytest.param(lambda: [{"type": "Validating", "review": {"request": {"operation": "CREATE", "kind": {"kind": "Pod"}}}}],
                     "the CREATE request for a Pod carries no object", id="no-object"),
        pytest.param(lambda: [dict(pod(["a.io/b:v1"])[0], review={"request": dict(_request(pod(["a.io/b:v1"])), object=[])})],
                     "the Pod object is not a JSON object", id="object-is-a-list"),
        pytest.param(lambda: [dict(pod([])[0], review={"request": dict(_request(pod([])), object={"spec": {"containers": {}}})})],
                     "/spec/containers: is not a list of containers", id="containers-is-not-a-list"),
    ],
)
def test_malformed_input_is_denied_with_its_cause(key_path: str, make, message: str) -> None:
    result = hook.run(make(), make_config(key_path, VERIFY), verifier=FakeVerifier())
    assert result.response == {"allowed": False, "message": f"signgate: {message}"}
    assert result.reason == "invalid-input"
    assert decision_log(result)["error"] == message
    counts, _, _ = result.metrics
    assert counts == [("signgate_decisions_total", {"result": "denied", "reason": "invalid-input"}, 1)]


def test_a_binding_context_over_the_limit_is_denied(key_path: str) -> None:
    config = make_config(key_path, VERIFY, limits={"maxBindingContextBytes": 1024})
    raw = json.dumps(pod([f"{REGISTRY}/a:v1"] * 20)).encode()
    assert len(raw) > 1024
    result = hook.run(raw, config, verifier=FakeVerifier())
    assert result.response == {"allowed": False,
                               "message": "signgate: the binding context is larger than the limit of 1024 bytes"}


def test_too_many_images_is_one_denial_before_any_verification(key_path: str) -> None:
    verifier = FakeVerifier()
    config = make_config(key_path, VERIFY, limits={"maxImagesPerRequest": 2})
    result = hook.run(pod([f"{REGISTRY}/a:v1"] * 3), config, verifier=verifier)
    assert verifier.calls == []
    assert result.response == {"allowed": False, "message": "signgate: the Pod has 3 containers, more than the limit "
                                                            "of 2 images per request"}


def test_a_context_without_admission_is_not_answered(key_path: str) -> None:
    result = hook.run([{"type": "Synchronization", "objects": []}, {"type": "Schedule"}], make_config(key_path, VERIFY))
    assert result.response is None
    assert logged(result) == [{"level": "info", "msg": "no admission context; nothing to do",
                               "types": ["Schedule", "Synchronization"]}]


def test_bytes_and_parsed_contexts_answer_alike(key_path: str) -> None:
    config = make_config(key_path, VERIFY)
    contexts = pod([f"{REGISTRY}/a:v1"])
    from_bytes = hook.run(json.dumps(contexts).encode(), config, verifier=FakeVerifier(default=UNSIGNED))
    parsed = hook.run(contexts, config, verifier=FakeVerifier(default=UNSIGNED))
    single = hook.run(contexts[0], config, verifier=FakeVerifier(default=UNSIGNED))
    assert from_bytes.response == parsed.response == single.response
    assert from_bytes.response is not None and from_bytes.response["allowed"] is False


# ---- the log line and the metrics ------------------------------------------------------------------


def test_the_decision_log_names_the_request_and_each_image(key_path: str) -> None:
    verifier = FakeVerifier({f"{REGISTRY}/b": UNSIGNED})
    result = hook.run(pod([f"{REGISTRY}/a:v1", f"{REGISTRY}/b:v1"], namespace="shop"), make_config(key_path, VERIFY),
                      verifier=verifier)
    entry = decision_log(result)
    assert {k: entry[k] for k in ("level", "uid", "namespace", "kind", "name", "operation", "verdict", "reasons")} == {
        "level": "warn", "uid": "u-1", "namespace": "shop", "kind": "Pod", "name": "p", "operation": "CREATE",
        "verdict": "denied", "reasons": ["no-signature"],
    }
    assert [(i["container"], i["verdict"], i["reason"], i["keys"]) for i in entry["images"]] == [
        ("c0", "pass", "verified", ["default"]), ("c1", "fail", "no-signature", []),
    ]
    assert entry["images"][1]["message"] == "no signature found"


def test_metrics_count_the_decision_and_each_image(key_path: str) -> None:
    verifier = FakeVerifier({f"{REGISTRY}/b": UNSIGNED})
    result = hook.run(pod([f"{REGISTRY}/a:v1", f"{REGISTRY}/b:v1"]), make_config(key_path, VERIFY), verifier=verifier)
    counts, observations, gauges = result.metrics
    assert counts == [
        ("signgate_decisions_total", {"result": "denied", "reason": "no-signature"}, 1),
        ("signgate_images_total", {"result": "fail", "reason": "no-signature", "mode": "enforce"}, 1),
        ("signgate_images_total", {"result": "pass", "reason": "verified", "mode": "enforce"}, 1),
    ]
    assert [(name, labels) for name, labels, _ in observations] == [("signgate_verification_seconds", {"result": "denied"})]
    assert gauges == []  # key rules only: no trust material whose expiry a gauge would follow


# ---- namespaces: the webhook never sees the namespaces that could repair it ------------------------


@pytest.mark.parametrize(
    ("webhook", "excluded"),
    [
        pytest.param({}, ["kube-system"], id="default"),
        pytest.param({"excludeNamespaces": ["monitoring"]}, ["kube-system", "monitoring"], id="extra-exclusions"),
        pytest.param({"namespaceSelector": {"matchLabels": {"signed": "required"},
                                            "matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                                                  "operator": "In", "values": ["kube-system", "a"]}]}},
                     ["kube-system"], id="a-selector-that-names-kube-system-still-excludes-it"),
    ],
)
def test_namespace_selector_always_excludes_protected_namespaces(key_path: str, webhook, excluded) -> None:
    config = make_config(key_path, VERIFY, webhook=webhook)
    selector = hook.namespace_selector(config)
    exclusion = selector["matchExpressions"][-1]
    assert exclusion["key"] == "kubernetes.io/metadata.name" and exclusion["operator"] == "NotIn"
    assert set(excluded) <= set(exclusion["values"])
    # The user's selector (or the default one) is kept as written, the exclusion ANDed to it.
    user = config.webhook.namespace_selector
    assert selector["matchExpressions"][:-1] == user.get("matchExpressions", [])
    assert selector.get("matchLabels") == user.get("matchLabels")
    if "namespaceSelector" in webhook:
        assert user == webhook["namespaceSelector"]
    for binding in hook.binding_config(config)["kubernetesValidating"]:
        assert binding["namespace"]["labelSelector"] == selector


# ---- the mutating binding --------------------------------------------------------------------------


def test_mutating_call_pins_a_verified_tag_to_its_digest(key_path: str) -> None:
    config = make_config(key_path, [{"images": f"{REGISTRY}/**", "pinDigest": True}])
    result = hook.run(pod([f"{REGISTRY}/a:v1"], context="Mutating"), config, verifier=FakeVerifier())
    assert result.response is not None and result.response["allowed"] is True
    import base64

    patch = json.loads(base64.b64decode(result.response["patch"]))
    assert patch == [{"op": "replace", "path": "/spec/containers/0/image", "value": f"{REGISTRY}/a:v1@{DIGEST}"}]


def test_mutating_call_without_pinning_has_nothing_to_pin(key_path: str) -> None:
    verifier = FakeVerifier()
    result = hook.run(pod([f"{REGISTRY}/a:v1"], context="Mutating"), make_config(key_path, VERIFY), verifier=verifier)
    assert result.response == {"allowed": True}
    assert verifier.calls == []
    assert logged(result)[-1]["msg"] == "signgate: nothing to pin"
