"""signgate in a real control plane: kube-apiserver calls the webhook that shell-operator
registered, shell-operator runs the hook in the image's sandbox, and every assertion reads what
real kubectl printed. A denial counts only when it carries signgate's own message: an API server
that never reached the webhook denies too, with other words.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest

from e2e import cluster
from e2e.conftest import BINDING, MUTATING_BINDING, SELECTOR_LABEL, Cosign
from support.oci import PushedImage, RegistryHTTP, push_image
from support.signer import TestKey, fallback_tag, sig_tag, sign_legacy

pytestmark = pytest.mark.e2e

KINDS = {
    # kind: (apiVersion, what kubectl prints before "/<name> created")
    "Pod": ("v1", "pod"),
    "Deployment": ("apps/v1", "deployment.apps"),
    "ReplicaSet": ("apps/v1", "replicaset.apps"),
    "StatefulSet": ("apps/v1", "statefulset.apps"),
    "DaemonSet": ("apps/v1", "daemonset.apps"),
    "Job": ("batch/v1", "job.batch"),
    "CronJob": ("batch/v1", "cronjob.batch"),
    "ReplicationController": ("v1", "replicationcontroller"),
}


# -- manifests and kubectl --------------------------------------------------------------------------


def pod_spec(image: str, init_image: str | None = None, container: str = "app") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": container, "image": image}]}
    if init_image:
        spec["initContainers"] = [{"name": "setup", "image": init_image}]
    return spec


def manifest(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    api_version, _ = KINDS[kind]
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind,
                           "metadata": {"name": name, "namespace": namespace}}
    labels = {"app": name}
    if kind in ("Job", "CronJob"):
        spec = {**spec, "restartPolicy": "Never"}
    template = {"metadata": {"labels": labels}, "spec": spec}
    if kind == "Pod":
        obj["spec"] = spec
    elif kind == "CronJob":
        obj["spec"] = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "Job":
        obj["spec"] = {"template": template}
    elif kind == "ReplicationController":
        obj["spec"] = {"selector": labels, "template": template}
    else:
        obj["spec"] = {"selector": {"matchLabels": labels}, "template": template}
        if kind == "StatefulSet":
            obj["spec"]["serviceName"] = name
    return obj


def create(kubectl: cluster.Kubectl, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl.run("create", "-f", "-", input=json.dumps(obj))


def assert_created(done: subprocess.CompletedProcess[str], kind: str, name: str) -> None:
    expected = f"{KINDS[kind][1]}/{name} created"
    assert done.returncode == 0 and expected in done.stdout, (
        f"expected {expected!r}; kubectl exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}")


def denied_by(kind: str) -> str:
    """The binding whose denial kubectl shows on CREATE: the configuration pins digests
    (pinScope: pods), so Pods meet the mutating binding first, and it denies what it cannot verify
    with the validating call's message; every other kind meets only the validating binding."""
    return MUTATING_BINDING if kind == "Pod" else BINDING


def assert_denied(done: subprocess.CompletedProcess[str], *fragments: str, binding: str = BINDING) -> None:
    """Denied by signgate: the API server's prefix, signgate's own message, and every fragment."""
    assert done.returncode != 0, f"expected a denial, but kubectl succeeded: {done.stdout}{done.stderr}"
    prefix = f'admission webhook "{binding}" denied the request: signgate:'
    assert prefix in done.stderr, f"denied, but not by signgate's {binding} hook: {done.stderr}"
    for fragment in fragments:
        assert fragment in done.stderr, f"{fragment!r} missing from the denial: {done.stderr}"


def stored_image(kubectl: cluster.Kubectl, kind: str, name: str, namespace: str, path: str) -> str:
    done = kubectl.run("get", kind.lower(), name, "-n", namespace, "-o", f"jsonpath={{{path}}}", check=True)
    return done.stdout


# -- images ---------------------------------------------------------------------------------------


def push(http: RegistryHTTP, repo: str, tag: str = "v1") -> PushedImage:
    return push_image(http, repo, tag)


def signed(http: RegistryHTTP, repo: str, key: TestKey, tag: str = "v1") -> PushedImage:
    """An image signed by the project's own signer (legacy layout): for the cases that are not
    about cosign itself."""
    image = push(http, repo, tag)
    sign_legacy(http, repo, image.digest, key)
    return image


# -- the webhook as shell-operator registered it ----------------------------------------------------


def test_webhook_is_registered_by_shell_operator_through_the_service(operator: cluster.SigngatePod) -> None:
    vwc = operator.webhook_configuration()
    [webhook] = vwc["webhooks"]
    assert webhook["name"] == BINDING
    service = webhook["clientConfig"]["service"]
    # shell-operator's own registration: the Service, with no port (the API server dials 443).
    assert service["name"] == cluster.SERVICE_NAME and service["namespace"] == cluster.RELEASE_NAMESPACE
    assert service.get("port", 443) == 443 and "url" not in webhook["clientConfig"]
    assert service["path"] == "/hooks/image-signatures-signgate-dev"
    assert webhook["failurePolicy"] == "Fail" and webhook["timeoutSeconds"] == 10
    expressions = webhook["namespaceSelector"]["matchExpressions"]
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": ["kube-system", cluster.RELEASE_NAMESPACE]} in expressions


# -- labelled namespace -----------------------------------------------------------------------------


def test_cosign_v3_signed_deployment_is_created(operator, namespace, kubectl, plain_http, cosign_v3: Cosign) -> None:
    image = push(plain_http, "e2e/cosign-v3")
    cosign_v3.sign(f"{image.host}/{image.repo}@{image.digest}", "--use-signing-config=false")
    tags = plain_http.list_tags(image.repo)
    # cosign v3's default layout: a sigstore bundle behind the referrers fallback tag, no .sig.
    assert fallback_tag(image.digest) in tags and sig_tag(image.digest) not in tags, tags
    ns = namespace()
    assert_created(create(kubectl, manifest("Deployment", "app", ns, pod_spec(image.reference))), "Deployment", "app")


def test_cosign_v2_legacy_signed_deployment_is_created(operator, namespace, kubectl, plain_http, cosign_v2: Cosign) -> None:
    image = push(plain_http, "e2e/cosign-v2")
    cosign_v2.sign(f"{image.host}/{image.repo}@{image.digest}")
    assert sig_tag(image.digest) in plain_http.list_tags(image.repo)
    ns = namespace()
    assert_created(create(kubectl, manifest("Deployment", "app", ns, pod_spec(image.reference))), "Deployment", "app")


def test_unsigned_image_is_denied_with_signgates_message(operator, namespace, kubectl, plain_http) -> None:
    image = push(plain_http, "e2e/unsigned")
    ns = namespace()
    done = create(kubectl, manifest("Deployment", "app", ns, pod_spec(image.reference)))
    assert_denied(done, f'container "app" image "{image.reference}": no signature found')
    assert kubectl.run("get", "deployment", "app", "-n", ns).returncode != 0  # nothing was stored


def test_image_signed_by_another_key_is_denied(operator, namespace, kubectl, plain_http, other_key) -> None:
    image = signed(plain_http, "e2e/other-key", other_key)
    ns = namespace()
    done = create(kubectl, manifest("Pod", "app", ns, pod_spec(image.reference)))
    assert_denied(done, f'container "app" image "{image.reference}"', "none verifies with key(s) default",
                  binding=MUTATING_BINDING)


def test_tls_registry_with_credentials(operator, namespace, kubectl, tls_http, signing_key) -> None:
    good = signed(tls_http, "e2e/tls-signed", signing_key)
    bad = push(tls_http, "e2e/tls-unsigned")
    ns = namespace()
    assert_created(create(kubectl, manifest("Pod", "good", ns, pod_spec(good.reference))), "Pod", "good")
    assert_denied(create(kubectl, manifest("Pod", "bad", ns, pod_spec(bad.reference))),
                  f'container "app" image "{bad.reference}": no signature found', binding=MUTATING_BINDING)


# -- namespaces -------------------------------------------------------------------------------------


def test_unlabelled_namespace_is_not_checked(operator, namespace, kubectl, plain_http) -> None:
    image = push(plain_http, "e2e/unlabelled")
    ns = namespace(labelled=False)
    assert_created(create(kubectl, manifest("Pod", "app", ns, pod_spec(image.reference))), "Pod", "app")
    # The same object in a labelled namespace is denied: the webhook was there to deny it.
    assert_denied(create(kubectl, manifest("Pod", "app", namespace(), pod_spec(image.reference))),
                  "no signature found", binding=MUTATING_BINDING)


@pytest.mark.parametrize("protected", ["kube-system", cluster.RELEASE_NAMESPACE])
def test_kube_system_and_signgates_namespace_are_never_checked(operator, kubectl, plain_http, protected) -> None:
    image = push(plain_http, f"e2e/protected-{protected}")
    label = "=".join(SELECTOR_LABEL)
    kubectl.run("label", "namespace", protected, label, "--overwrite", check=True)
    try:
        name = f"unsigned-{int(time.time() * 1000)}"
        assert_created(create(kubectl, manifest("Pod", name, protected, pod_spec(image.reference))), "Pod", name)
    finally:
        kubectl.run("label", "namespace", protected, f"{SELECTOR_LABEL[0]}-", check=True)


# -- warn mode ----------------------------------------------------------------------------------------


def test_warn_mode_prints_a_warning_and_creates(operator, namespace, kubectl, plain_http) -> None:
    image = push(plain_http, "warn/unsigned")
    ns = namespace()
    done = create(kubectl, manifest("Deployment", "app", ns, pod_spec(image.reference)))
    assert_created(done, "Deployment", "app")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("Warning: ")]
    assert any(f'image "{image.reference}"' in line and "no signature found" in line for line in warnings), done.stderr


# -- every kind -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_checks_containers_and_init_containers(kind, operator, namespace, kubectl, plain_http, signing_key) -> None:
    good = signed(plain_http, f"e2e/kind-{kind.lower()}", signing_key)
    bad = push(plain_http, f"e2e/kind-{kind.lower()}-unsigned")
    ns = namespace()
    assert_denied(create(kubectl, manifest(kind, "bad-init", ns, pod_spec(good.reference, bad.reference))),
                  f'init container "setup" image "{bad.reference}": no signature found', binding=denied_by(kind))
    assert_denied(create(kubectl, manifest(kind, "bad-app", ns, pod_spec(bad.reference, good.reference))),
                  f'container "app" image "{bad.reference}": no signature found', binding=denied_by(kind))
    assert_created(create(kubectl, manifest(kind, "good", ns, pod_spec(good.reference, good.reference))), kind, "good")


def test_unsigned_ephemeral_container_is_denied(operator, namespace, kubectl, plain_http, signing_key) -> None:
    good = signed(plain_http, "e2e/ephemeral", signing_key)
    bad = push(plain_http, "e2e/ephemeral-unsigned")
    ns = namespace()
    assert_created(create(kubectl, manifest("Pod", "app", ns, pod_spec(good.reference))), "Pod", "app")
    # kubectl debug adds the container through the pods/ephemeralcontainers subresource.
    denied = kubectl.run("debug", "app", "-n", ns, f"--image={bad.reference}", "--container=debugger")
    assert_denied(denied, f'ephemeral container "debugger" image "{bad.reference}": no signature found')
    allowed = kubectl.run("debug", "app", "-n", ns, f"--image={good.reference}", "--container=signed-debugger")
    assert allowed.returncode == 0, allowed.stderr
    names = stored_image(kubectl, "Pod", "app", ns, ".spec.ephemeralContainers[*].name")
    assert names.split() == ["signed-debugger"]


# -- UPDATE and dry-run -----------------------------------------------------------------------------


def test_update_to_an_unsigned_image_is_denied_and_server_dry_run_agrees(operator, namespace, kubectl, plain_http, signing_key) -> None:
    good = signed(plain_http, "e2e/update", signing_key)
    bad = push(plain_http, "e2e/update", "v2-unsigned")
    ns = namespace()
    assert_created(create(kubectl, manifest("Deployment", "app", ns, pod_spec(good.reference))), "Deployment", "app")
    message = f'container "app" image "{bad.reference}": no signature found'
    assert_denied(kubectl.run("set", "image", "deployment/app", f"app={bad.reference}", "-n", ns), message)
    dry_run = kubectl.apply_json(manifest("Deployment", "app", ns, pod_spec(bad.reference)), "--dry-run=server")
    assert_denied(dry_run, message)
    assert stored_image(kubectl, "Deployment", "app", ns, ".spec.template.spec.containers[0].image") == good.reference
    # The dry run of a signed change passes and stores nothing.
    fine = kubectl.apply_json(manifest("Deployment", "app", ns, pod_spec(good.reference, good.reference)), "--dry-run=server")
    assert fine.returncode == 0 and "(server dry run)" in fine.stdout, fine.stderr


# -- pinDigest --------------------------------------------------------------------------------------


def test_pin_digest_stores_tag_and_digest(operator, namespace, kubectl, plain_http, signing_key) -> None:
    image = signed(plain_http, "pin/app", signing_key)
    ns = namespace()
    assert_created(create(kubectl, manifest("Pod", "app", ns, pod_spec(image.reference))), "Pod", "app")
    stored = stored_image(kubectl, "Pod", "app", ns, ".spec.containers[0].image")
    assert stored == f"{image.reference}@{image.digest}"
    assert re.fullmatch(r".+:v1@sha256:[0-9a-f]{64}", stored)


# -- deadline ---------------------------------------------------------------------------------------


def test_stalling_registry_gets_signgates_own_timeout(operator, namespace, kubectl, stalling_registry) -> None:
    reference = f"{stalling_registry.host}/e2e/stalls:v1"
    ns = namespace()
    done = create(kubectl, manifest("Deployment", "app", ns, pod_spec(reference)))
    # signgate gives up first: its read timeout (readTimeoutSeconds 5) or its deadline
    # (timeoutSeconds - 2 = 8 s), both before the API server's timeoutSeconds (10), which would
    # read "failed calling webhook ... context deadline exceeded" instead.
    assert_denied(done, f'container "app" image "{reference}": ')
    assert (f"registry {stalling_registry.host} did not answer in time" in done.stderr
            or "not verified within 8 s" in done.stderr), done.stderr
    assert "failed calling webhook" not in done.stderr
    assert stalling_registry.accepted >= 1


# -- observability ----------------------------------------------------------------------------------


def test_decisions_reach_shell_operators_log_and_metrics(operator, namespace, kubectl, plain_http, signing_key) -> None:
    good = signed(plain_http, "e2e/observed", signing_key)
    bad = push(plain_http, "e2e/observed-unsigned")
    ns = namespace()
    assert_created(create(kubectl, manifest("Pod", "good", ns, pod_spec(good.reference))), "Pod", "good")
    assert_denied(create(kubectl, manifest("Pod", "bad", ns, pod_spec(bad.reference))), "no signature found",
                  binding=MUTATING_BINDING)
    decisions = decision_lines(operator)
    verdicts = {(d.get("namespace"), d.get("name"), d.get("verdict")) for d in decisions}
    assert (ns, "good", "allowed") in verdicts and (ns, "bad", "denied") in verdicts, decisions[-5:]
    # A denial keeps its level through shell-operator's log (it knows "warn", not "warning").
    assert {d["level"] for d in decisions if d.get("namespace") == ns and d.get("verdict") == "denied"} == {"warn"}
    metrics = operator.metrics("/metrics/hooks")
    assert re.search(r'^signgate_decisions_total\{[^}]*\} \d', metrics, re.M), metrics[:2000]
    # The cold decisions went through the verifier container: the hook says so when it cannot.
    fallbacks = [e for e in operator.operator_log_entries() if "verifier service unavailable" in str(e.get("msg"))]
    assert operator.verifier is not None and operator.verifier.running and not fallbacks, fallbacks[:3]


def decision_lines(pod: cluster.SigngatePod) -> list[dict[str, Any]]:
    """signgate's decision lines as shell-operator logs them. shell-operator parses each JSON line
    the hook writes to stderr and re-logs it: the hook's `msg` stays the message, its other
    fields come back prefixed with `hook_` (pkg/executor/executor.go, mergeAndLogInputLog)."""
    found = []
    for entry in pod.operator_log_entries():
        if entry.get("msg") == "signgate decision":
            found.append({key.removeprefix("hook_"): value for key, value in entry.items()})
    return found


def series_value(text: str, name: str, **labels: str) -> float:
    """The value of the series `name` with at least these labels in an exposition, 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_decision_counters_accumulate_across_hook_runs(operator, namespace, kubectl, plain_http, signing_key) -> None:
    # shell-operator (since flant/shell-operator#777, v1.10) expires all of a hook's series before
    # it applies each run's operations: signgate keeps totals in its cache directory and sets them.
    image = signed(plain_http, "e2e/counted", signing_key)
    ns = namespace()
    assert_created(create(kubectl, manifest("Deployment", "first", ns, pod_spec(image.reference))), "Deployment", "first")
    text = operator.metrics("/metrics/hooks")
    before = series_value(text, "signgate_decisions_total", result="allowed", reason="verified")
    observed = series_value(text, "signgate_verification_seconds_count", result="allowed")
    assert before >= 1 and observed >= 1, text[:3000]
    # Whichever way they are answered (verifier service, fast path), every run adds to the totals.
    for name in ("second", "third"):
        assert_created(create(kubectl, manifest("Deployment", name, ns, pod_spec(image.reference))), "Deployment", name)
    text = operator.metrics("/metrics/hooks")
    assert series_value(text, "signgate_decisions_total", result="allowed", reason="verified") >= before + 2, text[:3000]
    assert series_value(text, "signgate_verification_seconds_count", result="allowed") >= observed + 2, text[:3000]
    # A classic histogram's series, from one scrape: the +Inf bucket is the count.
    assert series_value(text, "signgate_verification_seconds_bucket", result="allowed", le="+Inf") == series_value(
        text, "signgate_verification_seconds_count", result="allowed"
    ), text[:3000]
    assert re.search(r'^signgate_decisions_total\{[^}]*hook="[^"]+"', text, re.M), text[:2000]


# -- shell-operator down ----------------------------------------------------------------------------


def test_labelled_namespace_refuses_pods_while_shell_operator_is_down(operator, namespace, kubectl, plain_http, signing_key) -> None:
    image = signed(plain_http, "e2e/operator-down", signing_key)
    ns = namespace()
    operator.stop_operator()
    done = create(kubectl, manifest("Pod", "app", ns, pod_spec(image.reference)))
    # failurePolicy Fail: the API server refuses because it could not call the webhook at all.
    assert done.returncode != 0
    # The API server calls the mutating binding first for Pods; it is unreachable too.
    assert f'failed calling webhook "{MUTATING_BINDING}"' in done.stderr, done.stderr
    assert "denied the request" not in done.stderr
    # Unlabelled namespaces are not affected.
    other = namespace(labelled=False)
    assert_created(create(kubectl, manifest("Pod", "app", other, pod_spec(image.reference))), "Pod", "app")
