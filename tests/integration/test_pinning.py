"""Digest pinning (issue 9): the `kubernetesMutating` binding rewrites `name:tag` to `name:tag@<digest>`.

Everything runs through the real hook executable (contract.py) against a real registry on
127.0.0.1. Every patch the hook returns is applied with `jsonpatch` (RFC 6902) to the object of the
request, and the result is checked against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict) of 1.30 and of the newest release the package ships.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from support.contract import BINDING, HookRun, admission_request, pod_spec, run_config, run_contexts, run_request, workload
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.signer import TestKey, sign_legacy

MUTATING_BINDING = "image-digests.signgate.dev"  # the default `webhook.mutatingName`
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# Where each kind keeps its pod spec, written out here rather than taken from the library: the
# pointers in the patches are checked against this table.
POD_SPEC_POINTERS = {
    "Pod": "/spec",
    "Deployment": "/spec/template/spec",
    "ReplicaSet": "/spec/template/spec",
    "StatefulSet": "/spec/template/spec",
    "DaemonSet": "/spec/template/spec",
    "Job": "/spec/template/spec",
    "CronJob": "/spec/jobTemplate/spec/template/spec",
    "ReplicationController": "/spec/template/spec",
}
ALL_KINDS = list(POD_SPEC_POINTERS)
WORKLOAD_KINDS = [kind for kind in ALL_KINDS if kind != "Pod"]


# ---- helpers -------------------------------------------------------------------------------------


def complete(obj: dict[str, Any]) -> dict[str, Any]:
    """Fill in what contract.workload leaves out but the schemas require (StatefulSet.serviceName
    is required up to 1.31), so the unpatched object validates and any failure is the patch's."""
    if obj["kind"] == "StatefulSet":
        obj["spec"].setdefault("serviceName", obj["metadata"]["name"])
    return obj


def kube_request(kind: str, containers: list[str], init: list[str] = (), ephemeral: list[str] = ()) -> dict[str, Any]:
    return admission_request(complete(workload(kind, pod_spec(list(containers), list(init), list(ephemeral)))))


def assert_valid_kubernetes_object(obj: dict[str, Any]) -> None:
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} is not a valid Kubernetes {version} object: {exc.message} at {list(exc.path)}")


def mutate(config: Path, request: dict[str, Any], **kwargs: Any) -> HookRun:
    """One call of the mutating binding, as shell-operator makes it."""
    return run_contexts(config, [{"binding": MUTATING_BINDING, "type": "Mutating", "review": {"request": request}}], **kwargs)


def decoded_patch(run: HookRun) -> list[dict[str, Any]] | None:
    """The JSON Patch of a response (None when it has none), after checking its encoding:
    a JSON string holding single-line, strict base64 of a JSON array of operations."""
    assert run.returncode == 0, run.stderr
    assert run.response is not None, f"no response written; stderr: {run.stderr}"
    if "patch" not in run.response:
        return None
    encoded = run.response["patch"]
    assert isinstance(encoded, str) and encoded, f"patch must be a non-empty base64 string, got {encoded!r}"
    assert "\n" not in encoded and "\r" not in encoded and " " not in encoded, "the base64 must be on one line"
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        pytest.fail(f"patch is not strict base64: {exc}")
    operations = json.loads(raw)
    assert isinstance(operations, list) and operations, "the patch must be a non-empty JSON array"
    for operation in operations:
        assert set(operation) == {"op", "path", "value"} and operation["op"] == "replace", operation
    return operations


def patched_object(request: dict[str, Any], operations: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The object the API server would store: the request's object with the patch applied (RFC
    6902, by jsonpatch), checked against the Kubernetes schemas."""
    original = copy.deepcopy(request["object"])
    result = jsonpatch.apply_patch(request["object"], operations or [], in_place=False)
    assert request["object"] == original, "applying the patch must not touch the request"
    assert_valid_kubernetes_object(result)
    return result


def pinned(image: PushedImage) -> str:
    return f"{image.reference}@{image.digest}"


def image_entry(run: HookRun, image: str) -> dict[str, Any]:
    [entry] = [e for e in run.decision_log["images"] if e["image"] == image]
    return entry


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def write_config(tmp_path: Path, registry: Registry, keys: dict[str, TestKey]) -> Callable[..., Path]:
    """A config trusting keys["ecdsa-p256"] as `default`; by default one rule, `**`, that pins."""
    counter = iter(range(1000))

    def write(policy: list[dict[str, Any]] | None = None, **top: Any) -> Path:
        data: dict[str, Any] = {
            "keys": {"default": str(keys["ecdsa-p256"].pub_path)},
            "registries": {"insecure": [registry.host]},
            "policy": policy if policy is not None else [{"images": "**", "pinDigest": True}],
        }
        data.update(top)
        path = tmp_path / f"config-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture(scope="module")
def signed(registry: Registry, keys: dict[str, TestKey]) -> Iterator[dict[str, PushedImage]]:
    """Signed images shared by the read-only cases, each with its own digest:
    `app`, `sidecar`, `init`, `debug` (tags of one repository) and `latest` (another one's :latest)."""
    client = RegistryHTTP(registry)
    stamp = time.monotonic_ns()
    repo, latest_repo = f"t/pinning-shared-{stamp}", f"t/pinning-latest-{stamp}"
    images = {tag: push_image(client, repo, tag) for tag in ("app", "sidecar", "init", "debug")}
    images["latest"] = push_image(client, latest_repo, "latest")
    for image in images.values():
        sign_legacy(client, image.repo, image.digest, keys["ecdsa-p256"])
    assert len({image.digest for image in images.values()}) == len(images)
    yield images
    client.close()


# ---- every kind, every container list ------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS, ids=[f"{kind}-pinned-at-its-pod-spec-pointers" for kind in ALL_KINDS])
def test_every_kind_gets_one_replace_per_image_at_the_right_pointer(write_config, signed, kind) -> None:
    app, sidecar, init, debug = signed["app"], signed["sidecar"], signed["init"], signed["debug"]
    request = kube_request(kind, [app.reference, sidecar.reference], [init.reference], [debug.reference])
    assert_valid_kubernetes_object(request["object"])

    run = mutate(write_config(pinScope="workloads"), request)

    assert run.allowed, run.message
    operations = decoded_patch(run)
    spec = POD_SPEC_POINTERS[kind]
    assert sorted(operations, key=lambda op: op["path"]) == sorted(
        [
            {"op": "replace", "path": f"{spec}/containers/0/image", "value": pinned(app)},
            {"op": "replace", "path": f"{spec}/containers/1/image", "value": pinned(sidecar)},
            {"op": "replace", "path": f"{spec}/initContainers/0/image", "value": pinned(init)},
            {"op": "replace", "path": f"{spec}/ephemeralContainers/0/image", "value": pinned(debug)},
        ],
        key=lambda op: op["path"],
    )
    # Applied, the patch changes exactly the four images and nothing else.
    expected = complete(workload(kind, pod_spec([pinned(app), pinned(sidecar)], [pinned(init)], [pinned(debug)])))
    patched = patched_object(request, operations)
    assert patched == expected

    # Pinning is idempotent: a later UPDATE of the pinned object gets no patch.
    update = admission_request(patched, operation="UPDATE")
    update["oldObject"] = patched
    again = mutate(write_config(pinScope="workloads"), update)
    assert again.response == {"allowed": True}, again.response


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [("Pod", "denied")] + [(kind, "allowed-unverified") for kind in WORKLOAD_KINDS],
    ids=["Pod-still-verified-and-denied"] + [f"{kind}-not-pinned-nor-verified" for kind in WORKLOAD_KINDS],
)
def test_pin_scope_pods_leaves_workloads_alone(registry, http, repo, write_config, kind, outcome) -> None:
    unsigned = push_image(http, repo, "v1")
    config = write_config()  # pinScope defaults to pods
    mark = registry.mark()

    run = mutate(config, kube_request(kind, [unsigned.reference]))

    contacted = [r for r in registry.requests_since(mark) if repo in r.path]
    if outcome == "denied":
        assert run.allowed is False and "no signature found" in run.message
        assert contacted, "the Pod's image must have been verified"
    else:
        assert run.response == {"allowed": True}  # no patch, no warning, no verification
        assert contacted == []
        assert any(entry.get("msg") == "signgate: nothing to pin" for entry in run.logs), run.logs


@pytest.mark.parametrize("kind", ["Pod", "Deployment"], ids=["Pod-pinned", "Deployment-pinned"])
def test_pin_scope_workloads_pins_templates_as_well_as_pods(write_config, signed, kind) -> None:
    request = kube_request(kind, [signed["app"].reference])
    run = mutate(write_config(pinScope="workloads"), request)
    operations = decoded_patch(run)
    assert operations == [
        {"op": "replace", "path": f"{POD_SPEC_POINTERS[kind]}/containers/0/image", "value": pinned(signed["app"])}
    ]
    patched_object(request, operations)


# ---- what gets pinned ------------------------------------------------------------------------------


def _image(case: str, signed: dict[str, PushedImage]) -> tuple[str, str | None]:
    """(image as written, the value the patch must give it, or None for no patch)."""
    app, latest = signed["app"], signed["latest"]
    return {
        "tag": (app.reference, pinned(app)),
        "implicit-latest": (latest.repository, f"{latest.repository}:latest@{latest.digest}"),
        "explicit-latest": (latest.reference, f"{latest.repository}:latest@{latest.digest}"),
        "digest-only": (app.by_digest, None),
        # The tag names another (signed) image; the digest is what runs and must be kept as is.
        "tag-and-digest": (f"{app.repository}:init@{app.digest}", None),
    }[case]


@pytest.mark.parametrize(
    "case",
    ["tag", "implicit-latest", "explicit-latest", "digest-only", "tag-and-digest"],
    ids=[
        "tag-gets-its-verified-digest-appended-keeping-the-tag",
        "implicit-latest-becomes-explicit-latest-plus-digest",
        "explicit-latest-gets-its-digest",
        "digest-only-reference-is-left-alone",
        "tag-plus-digest-is-left-alone-keeping-its-digest",
    ],
)
def test_patch_content(write_config, signed, case) -> None:
    image, expected = _image(case, signed)
    request = kube_request("Pod", [image])
    run = mutate(write_config(), request)
    assert run.allowed, run.message
    assert run.warnings == []
    operations = decoded_patch(run)
    if expected is None:
        assert operations is None, f"{image} must not be patched, got {operations}"
        assert run.response == {"allowed": True}
        # ... and it was verified, not skipped: the log names its digest.
        assert image_entry(run, image)["verdict"] == "pass"
    else:
        assert operations == [{"op": "replace", "path": "/spec/containers/0/image", "value": expected}]
    result = patched_object(request, operations)
    assert result["spec"]["containers"][0]["image"] == (expected or image)


def test_only_images_whose_rule_pins_are_patched(registry, http, repo, keys, write_config, signed) -> None:
    not_pinned = push_image(http, f"{repo}/unpinned", "v1")
    sign_legacy(http, not_pinned.repo, not_pinned.digest, keys["ecdsa-p256"])
    config = write_config(
        [
            {"images": f"{registry.host}/{repo}/unpinned"},  # verify, pinDigest defaults to false
            {"images": "**", "pinDigest": True},
        ]
    )
    request = kube_request("Pod", [not_pinned.reference, signed["app"].reference])

    run = mutate(config, request)

    assert run.allowed, run.message
    assert decoded_patch(run) == [{"op": "replace", "path": "/spec/containers/1/image", "value": pinned(signed["app"])}]
    assert image_entry(run, not_pinned.reference)["verdict"] == "pass"  # verified all the same


@pytest.mark.parametrize("kind", ["Pod", "Deployment"], ids=["Pod-allowed-unpatched", "Deployment-allowed-unpatched"])
def test_a_configuration_without_pinDigest_never_patches(registry, http, repo, write_config, kind) -> None:
    # shell-operator would not even call (no kubernetesMutating binding); if it did, nothing happens.
    unsigned = push_image(http, repo, "v1")
    mark = registry.mark()
    run = mutate(write_config([{"images": "**"}], pinScope="workloads"), kube_request(kind, [unsigned.reference]))
    assert run.response == {"allowed": True}
    assert [r for r in registry.requests_since(mark) if repo in r.path] == []


def test_the_same_image_in_several_containers_is_pinned_everywhere(write_config, signed) -> None:
    app = signed["app"]
    request = kube_request("Pod", [app.reference, app.reference], [app.reference])
    operations = decoded_patch(mutate(write_config(), request))
    assert sorted(op["path"] for op in operations) == [
        "/spec/containers/0/image", "/spec/containers/1/image", "/spec/initContainers/0/image"
    ]
    assert {op["value"] for op in operations} == {pinned(app)}
    patched_object(request, operations)


def test_an_update_pins_the_image_it_changes(write_config, signed) -> None:
    app, sidecar, init = signed["app"], signed["sidecar"], signed["init"]
    before = complete(workload("Pod", pod_spec([pinned(app), pinned(sidecar)])))
    after = complete(workload("Pod", pod_spec([pinned(app), init.reference])))  # kubectl set image c1=...:init
    request = admission_request(after, operation="UPDATE")
    request["oldObject"] = before

    run = mutate(write_config(), request)

    operations = decoded_patch(run)
    assert operations == [{"op": "replace", "path": "/spec/containers/1/image", "value": pinned(init)}]
    assert patched_object(request, operations) == complete(workload("Pod", pod_spec([pinned(app), pinned(init)])))


@pytest.mark.parametrize("kind", ["Pod", "Job"])
def test_an_update_that_leaves_a_tag_unchanged_does_not_pin_it(write_config, signed, kind) -> None:
    # An object admitted before pinning was enabled: a label change must not rewrite its images
    # (that would restart containers, and a Job's pod template is immutable).
    app, sidecar = signed["app"], signed["sidecar"]
    before = complete(workload(kind, pod_spec([app.reference, sidecar.reference])))
    after = complete(workload(kind, pod_spec([app.reference, sidecar.reference])))
    after["metadata"]["labels"] = {"touched": "yes"}
    request = admission_request(after, operation="UPDATE")
    request["oldObject"] = before

    run = mutate(write_config(pinScope="workloads"), request)

    assert run.allowed is True
    assert decoded_patch(run) is None


def test_the_cache_keeps_the_patch_and_the_fast_path_never_answers_a_mutating_call(tmp_path, write_config, signed) -> None:
    cache = {"SIGNGATE_CACHE_DIR": str(tmp_path / "cache")}
    config = write_config()
    request = kube_request("Pod", [signed["app"].reference])
    expected = [{"op": "replace", "path": "/spec/containers/0/image", "value": pinned(signed["app"])}]

    cold = mutate(config, request, env=cache)
    assert decoded_patch(cold) == expected
    # The fast path now holds the image: a validating call is answered from it ...
    validating = run_request(config, request, env=cache)
    assert validating.response == {"allowed": True}
    assert validating.decision_log["cache"].get("fast") is True, validating.decision_log
    # ... but a mutating call must not be (its bare "allowed" would drop the patch): the full
    # path answers it, from the verdict cache, with the same patch.
    warm = mutate(config, request, env=cache)
    assert decoded_patch(warm) == expected
    assert warm.decision_log["cache"]["hits"] >= 1 and "fast" not in warm.decision_log["cache"], warm.decision_log


# ---- failures: the mutating call answers as the validating call does --------------------------------


@pytest.mark.parametrize(
    ("kind", "where"),
    [("Pod", "containers"), ("Pod", "initContainers"), ("CronJob", "containers")],
    ids=["Pod-container-denied-same-message", "Pod-init-container-denied-same-message", "CronJob-denied-same-message"],
)
def test_an_image_failing_verification_is_denied_with_the_validating_message(
    http, repo, write_config, signed, kind, where
) -> None:
    unsigned = push_image(http, repo, "v1")
    images = {"containers": [signed["app"].reference], "init": []}
    if where == "containers":
        images["containers"].append(unsigned.reference)
    else:
        images["init"].append(unsigned.reference)
    request = kube_request(kind, images["containers"], images["init"])
    config = write_config(pinScope="workloads")

    mutating = mutate(config, request)
    validating = run_request(config, request)

    assert validating.allowed is False
    assert mutating.allowed is False
    assert mutating.message == validating.message
    assert "no signature found" in mutating.message and unsigned.reference in mutating.message
    assert "patch" not in mutating.response, "a denial carries no patch, not even for the signed image"


@pytest.mark.parametrize(
    "warn_where",
    ["global-mode", "rule-mode"],
    ids=["global-warn-mode-allowed-with-warning-failing-image-unpatched", "rule-warn-mode-allowed-with-warning-failing-image-unpatched"],
)
def test_warn_mode_failure_is_allowed_with_a_warning_and_only_verified_images_are_pinned(
    registry, http, repo, write_config, signed, warn_where
) -> None:
    unsigned = push_image(http, repo, "v1")
    if warn_where == "global-mode":
        config = write_config(mode="warn")
    else:
        config = write_config([{"images": f"{registry.host}/{repo}", "pinDigest": True, "mode": "warn"},
                               {"images": "**", "pinDigest": True}])
    request = kube_request("Pod", [unsigned.reference, signed["app"].reference])

    mutating = mutate(config, request)
    validating = run_request(config, request)

    assert mutating.allowed is True and "message" not in mutating.response
    [warning] = mutating.warnings
    assert warning.startswith("signgate (warn mode) would deny: ") and unsigned.reference in warning
    assert mutating.warnings == validating.warnings
    operations = decoded_patch(mutating)
    assert operations == [{"op": "replace", "path": "/spec/containers/1/image", "value": pinned(signed["app"])}]
    result = patched_object(request, operations)
    assert result["spec"]["containers"][0]["image"] == unsigned.reference


# ---- mutating then validating, through the real contract, with a tag moved in between ---------------


@pytest.mark.parametrize(
    ("kind", "scope"),
    [("Pod", "pods"), ("CronJob", "workloads")],
    ids=["Pod-pinned-digest-survives-tag-move", "CronJob-pinned-digest-survives-tag-move"],
)
def test_pinned_object_verifies_the_pinned_digest_after_the_tag_moves(
    http, repo, keys, write_config, kind, scope
) -> None:
    signed_image = push_image(http, repo, "v1")
    sign_legacy(http, repo, signed_image.digest, keys["ecdsa-p256"])
    config = write_config(pinScope=scope)
    request = kube_request(kind, [signed_image.reference])

    # 1. The mutating call pins the digest the tag names now (A).
    operations = decoded_patch(mutate(config, request))
    assert [op["value"] for op in operations] == [pinned(signed_image)]
    patched = patched_object(request, operations)
    patched_request = admission_request(patched)

    # 2. The tag moves to an unsigned image (B).
    moved = push_image(http, repo, "v1")
    assert moved.digest != signed_image.digest

    # 3. The validating call on the patched object verifies A, not the moved tag: allowed.
    after = run_request(config, patched_request)
    assert after.response == {"allowed": True}, after.message
    assert image_entry(after, pinned(signed_image))["digest"] == signed_image.digest

    # 4. The same object without the patch now resolves the tag to B: denied.
    unpatched = run_request(config, request)
    assert unpatched.allowed is False
    assert "no signature found" in unpatched.message and moved.digest[:19] in unpatched.message

    # 5. And a new mutating call on the unpatched object denies too (it would have pinned B).
    again = mutate(config, request)
    assert again.allowed is False and again.message == unpatched.message
    assert "patch" not in again.response


# ---- --config ----------------------------------------------------------------------------------------


def _bindings(config: Path) -> dict[str, Any]:
    completed = run_config(config, {"SIGNGATE_NAMESPACE": "signgate-system"})
    assert completed.returncode == 0, completed.stderr
    assert "&" not in completed.stdout and "*id" not in completed.stdout, "plain YAML: no anchors or aliases"
    return yaml.safe_load(completed.stdout)


def _resources(binding: dict[str, Any]) -> set[tuple[str, str]]:
    return {(group, resource) for rule in binding["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}


WORKLOAD_RESOURCES = {
    ("", "pods"), ("", "replicationcontrollers"),
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"),
    ("batch", "jobs"), ("batch", "cronjobs"),
}


@pytest.mark.parametrize(
    ("policy", "top", "mutating_resources"),
    [
        ([{"images": "**"}], {}, None),
        ([{"images": "**"}], {"pinScope": "workloads"}, None),
        ([{"images": "**", "pinDigest": False}], {}, None),
        ([{"images": "registry.example.com/app", "pinDigest": True}, {"images": "**"}], {}, {("", "pods")}),
        ([{"images": "**", "pinDigest": True}], {"pinScope": "pods"}, {("", "pods")}),
        ([{"images": "**", "pinDigest": True}], {"pinScope": "workloads"}, WORKLOAD_RESOURCES),
    ],
    ids=[
        "no-pinDigest-no-mutating-binding",
        "pinScope-alone-adds-no-mutating-binding",
        "pinDigest-false-no-mutating-binding",
        "one-pinning-rule-adds-a-pods-only-binding",
        "pinScope-pods-binds-pods-only",
        "pinScope-workloads-binds-every-workload-without-subresources",
    ],
)
def test_config_mutating_binding_present_only_when_a_rule_pins(write_config, policy, top, mutating_resources) -> None:
    output = _bindings(write_config(policy, **top))
    [validating] = output["kubernetesValidating"]
    assert validating["name"] == BINDING
    if mutating_resources is None:
        assert "kubernetesMutating" not in output
        return
    [mutating] = output["kubernetesMutating"]
    assert _resources(mutating) == mutating_resources
    for rule in mutating["rules"]:
        assert rule["operations"] == ["CREATE", "UPDATE"] and rule["apiVersions"] == ["v1"]
        assert rule["scope"] == "Namespaced"
    # The validating binding is untouched and still sees everything, subresources included.
    assert _resources(validating) == WORKLOAD_RESOURCES | {("", "pods/ephemeralcontainers")}


@pytest.mark.parametrize(
    "webhook",
    [
        {},
        {
            "name": "verify.images.example.com",
            "mutatingName": "pin.images.example.com",
            "namespaceSelector": {"matchLabels": {"team": "payments"}},
            "failurePolicy": "Ignore",
            "timeoutSeconds": 5,
            "excludeNamespaces": ["tools"],
        },
    ],
    ids=["defaults-shared-by-both-bindings", "custom-settings-shared-by-both-bindings"],
)
def test_config_mutating_binding_shares_the_validating_settings(write_config, webhook) -> None:
    output = _bindings(write_config(webhook=webhook, pinScope="workloads", policy=[{"images": "**", "pinDigest": True}]))
    [validating], [mutating] = output["kubernetesValidating"], output["kubernetesMutating"]
    assert mutating["name"] == webhook.get("mutatingName", MUTATING_BINDING)
    assert validating["name"] == webhook.get("name", BINDING)
    assert mutating["name"] != validating["name"]
    assert len([part for part in mutating["name"].split(".") if part]) >= 3
    for field in ("namespace", "failurePolicy", "sideEffects", "timeoutSeconds"):
        assert mutating[field] == validating[field], field
    assert mutating["failurePolicy"] == webhook.get("failurePolicy", "Fail")
    assert mutating["timeoutSeconds"] == webhook.get("timeoutSeconds", 10)
    exclusion = mutating["namespace"]["labelSelector"]["matchExpressions"][-1]
    assert (exclusion["key"], exclusion["operator"]) == ("kubernetes.io/metadata.name", "NotIn")
    assert set(exclusion["values"]) == {"kube-system", "signgate-system", *webhook.get("excludeNamespaces", ())}
    # The same fields exactly (shell-operator rejects unknown ones).
    assert set(mutating) == set(validating)
    # What shell-operator turns the bindings into must be valid webhook configurations.
    for kind, binding in (("MutatingWebhookConfiguration", mutating), ("ValidatingWebhookConfiguration", validating)):
        assert_valid_kubernetes_object(_webhook_configuration(kind, binding))


def _webhook_configuration(kind: str, binding: dict[str, Any]) -> dict[str, Any]:
    """The object shell-operator creates from a binding (see the contract, §3)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "shell-operator-hooks"},
        "webhooks": [
            {
                "name": binding["name"],
                "namespaceSelector": binding["namespace"]["labelSelector"],
                "rules": binding["rules"],
                "failurePolicy": binding["failurePolicy"],
                "sideEffects": binding["sideEffects"],
                "timeoutSeconds": binding["timeoutSeconds"],
                "matchPolicy": "Equivalent",
                "admissionReviewVersions": ["v1", "v1beta1"],
                "clientConfig": {
                    "service": {"namespace": "signgate-system", "name": "signgate", "path": "/hooks/x"},
                    "caBundle": base64.b64encode(b"ca").decode(),
                },
            }
        ],
    }


@pytest.mark.parametrize(
    ("webhook", "expected"),
    [
        ({"mutatingName": "image-digests"}, "webhook.mutatingName: must be a fully-qualified name"),
        ({"mutatingName": "digests.signgate"}, "webhook.mutatingName: must be a fully-qualified name"),
        ({"mutatingName": BINDING}, "webhook.mutatingName: must differ from name"),
        ({"name": "pin.example.com", "mutatingName": "pin.example.com"}, "webhook.mutatingName: must differ from name"),
    ],
    ids=["one-part-mutating-name-refused", "two-part-mutating-name-refused",
         "mutating-name-equal-to-default-name-refused", "mutating-name-equal-to-custom-name-refused"],
)
def test_config_refuses_a_mutating_name_shell_operator_would_reject(write_config, webhook, expected) -> None:
    config = write_config(webhook=webhook, policy=[{"images": "**", "pinDigest": True}])
    completed = run_config(config)
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert expected in completed.stderr, completed.stderr
