"""`registries.pullSecrets: pod` in a real control plane, through real shell-operator snapshots.

shell-operator runs with a ServiceAccount token bound to the RBAC the chart renders for the
feature (not the admin certificate the other e2e cases use), so the grant itself is tested: with a
missing verb its informers could not list the secrets and no pod could be admitted. signgate has
no mounted registry credential here: every private image is fetched with the pod's own secrets.

The last case measures what 1,000 pull secrets cost: shell-operator's resident memory and the
binding context each admission call receives (docs/pullsecrets.md has the numbers).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from e2e import cluster
from e2e.conftest import BINDING, SELECTOR_LABEL
from support import tools
from support.oci import PushedImage, RegistryHTTP, push_image
from support.signer import TestKey, sign_legacy

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "chart"


# ---- the pod under test ---------------------------------------------------------------------------


def chart_rbac(service_account: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, ClusterRoles and bindings for pullSecrets: pod (no Helm hooks)."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (requirements-chart.txt) renders the chart's RBAC")
    chart = helm.Chart.load(str(CHART))
    try:
        files = chart.render(
            {"image": {"repository": "registry.example.com/signgate"},
             "keys": {"inline": {"default": "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"}},
             "serviceAccount": {"name": service_account},
             "config": {"registries": {"pullSecrets": "pod"}}},
            name="signgate", namespace=cluster.RELEASE_NAMESPACE, is_install=True)
    finally:
        chart.close()
    docs = [doc for name, text in files.items() if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]
    wanted = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    return [doc for doc in docs if doc.get("kind") in wanted
            and "helm.sh/hook" not in (doc.get("metadata", {}).get("annotations") or {})]


def pull_config(tls: str) -> dict[str, Any]:
    return {
        "webhook": {"name": BINDING, "namespaceSelector": {"matchLabels": dict([SELECTOR_LABEL])},
                    "timeoutSeconds": 10, "failurePolicy": "Fail", "signgateNamespace": cluster.RELEASE_NAMESPACE},
        "registries": {"caBundle": cluster.REGISTRY_CA_FILE, "pullSecrets": "pod"},
        "keys": {"default": f"{cluster.KEYS_DIR}/default.pub"},
        # A loopback registry is contacted only when a rule names it.
        "policy": [{"images": f"{tls}/**", "keys": ["default"]}],
        "unmatchedImages": "deny",
    }


@pytest.fixture(scope="module")
def pull_pod(signgate: cluster.SigngatePod, control_plane: Any, e2e_dir: Path, tls_registry: Any,
             signing_key: TestKey) -> Iterator[cluster.SigngatePod]:
    kubectl = control_plane.kubectl
    # One webhook behind the one Service: the session's shell-operator makes way for this one
    # (the `operator` fixture starts it again for the cases that need it).
    signgate.stop_operator()
    account = "signgate-pull-secrets-e2e"
    for doc in chart_rbac(account):
        kubectl.apply_json(doc).check_returncode()
    token = kubectl.run("create", "token", account, "-n", cluster.RELEASE_NAMESPACE, "--duration=2h", check=True).stdout.strip()
    assert tls_registry.ca_path is not None
    pod = cluster.SigngatePod(
        e2e_dir / "signgate-pullsecrets", shell_operator=tools.require("shell-operator"),
        venv=cluster.ensure_venv(cluster.cache_root()), kubectl=kubectl, apiserver=control_plane.apiserver,
        config=pull_config(tls_registry.host), keys={"default": signing_key.pub_path},
        registry_ca=tls_registry.ca_path, token=token)
    pod.webhook_port = signgate.webhook_port  # where the forwarder (the Service) sends calls
    try:
        pod.start()
        yield pod
    finally:
        pod.stop()
        if pod.operator is not None:
            wait_ports = [pod.webhook_port, pod.metrics_port]
            cluster.wait_ports_free(wait_ports, "the pull-secret shell-operator")


_counter = iter(range(10**6))


@pytest.fixture
def new_namespace(kubectl: cluster.Kubectl, request: pytest.FixtureRequest) -> Callable[[], str]:
    def make() -> str:
        stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:30]
        name = f"ps-{stem}-{next(_counter)}"
        kubectl.run("create", "namespace", name, check=True)
        kubectl.run("label", "namespace", name, "=".join(SELECTOR_LABEL), check=True)
        return name

    return make


@pytest.fixture
def private_image(tls_http: RegistryHTTP, signing_key: TestKey) -> Callable[[str], PushedImage]:
    def make(name: str) -> PushedImage:
        repo = f"tenant/{name}-{next(_counter)}"
        image = push_image(tls_http, repo, "v1")
        sign_legacy(tls_http, repo, image.digest, signing_key)
        return image

    return make


def docker_secret(namespace: str, name: str, host: str, password: str) -> dict[str, Any]:
    auth = base64.b64encode(f"tester:{password}".encode()).decode()
    config = base64.b64encode(json.dumps({"auths": {host: {"auth": auth}}}).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace}, "data": {".dockerconfigjson": config}}


def pod_manifest(namespace: str, name: str, image: str, *, pull: list[str] | None = None,
                 service_account: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
    if pull:
        spec["imagePullSecrets"] = [{"name": n} for n in pull]
    if service_account:
        spec["serviceAccountName"] = service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def create(kubectl: cluster.Kubectl, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl.run("create", "-f", "-", input=json.dumps(obj))


def until(kubectl: cluster.Kubectl, obj: dict[str, Any], admitted: bool, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Create `obj` until the answer is the expected one: shell-operator sees a new or changed
    secret a moment after the API server stores it (a watch event, then the next call's snapshot)."""
    deadline = time.monotonic() + timeout
    while True:
        done = create(kubectl, obj)
        if (done.returncode == 0) == admitted or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def assert_admitted(done: subprocess.CompletedProcess[str], name: str) -> None:
    assert done.returncode == 0 and f"pod/{name} created" in done.stdout, f"{done.stdout}{done.stderr}"


def assert_denied(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0, f"expected a denial: {done.stdout}"
    assert f'admission webhook "{BINDING}" denied the request: signgate:' in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, f"{fragment!r} missing: {done.stderr}"


# ---- the cases -------------------------------------------------------------------------------------


def test_namespace_secret_admits_and_another_namespace_gets_the_documented_decision(
    pull_pod, kubectl, new_namespace, private_image, tls_registry
) -> None:
    a, b = new_namespace(), new_namespace()
    kubectl.apply_json(docker_secret(a, "regcred", tls_registry.host, tls_registry.password)).check_returncode()
    verified, never = private_image("verified"), private_image("never")
    assert_admitted(until(kubectl, pod_manifest(a, "app", verified.reference, pull=["regcred"]), True), "app")
    # B has no secret: an image never verified is fetched with B's (no) credentials and denied.
    denied = create(kubectl, pod_manifest(b, "new", never.reference, pull=["regcred"]))
    assert_denied(denied, f'image "{never.reference}"', "requires a login", f"{b}/regcred")
    # The image already verified for A: a pass is about the image and is shared (README, "The
    # cache decision"); B's kubelet still could not pull it without a secret of its own.
    assert_admitted(create(kubectl, pod_manifest(b, "cached", verified.reference)), "cached")
    assert tls_registry.password not in pull_pod.operator.log()


def test_secret_through_the_service_account(pull_pod, kubectl, new_namespace, private_image, tls_registry) -> None:
    ns = new_namespace()
    kubectl.apply_json(docker_secret(ns, "builder-cred", tls_registry.host, tls_registry.password)).check_returncode()
    kubectl.apply_json({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder", "namespace": ns},
                        "imagePullSecrets": [{"name": "builder-cred"}]}).check_returncode()
    image = private_image("by-account")
    assert_admitted(until(kubectl, pod_manifest(ns, "app", image.reference, service_account="builder"), True), "app")


def test_rotated_secret_is_used_and_deleted_secret_is_not(
    pull_pod, kubectl, new_namespace, private_image, tls_registry
) -> None:
    ns = new_namespace()
    kubectl.apply_json(docker_secret(ns, "regcred", tls_registry.host, "old-password")).check_returncode()
    first = private_image("before-rotation")
    # Denied with the registry's refusal once shell-operator has the (wrong) secret.
    stale = until(kubectl, pod_manifest(ns, "stale", first.reference, pull=["regcred"]), False)
    assert_denied(stale, f'image "{first.reference}"')
    deadline = time.monotonic() + 30
    while "rejected the credentials (401)" not in stale.stderr and time.monotonic() < deadline:
        time.sleep(0.5)
        stale = create(kubectl, pod_manifest(ns, "stale", first.reference, pull=["regcred"]))
    assert_denied(stale, "rejected the credentials (401)")
    kubectl.apply_json(docker_secret(ns, "regcred", tls_registry.host, tls_registry.password)).check_returncode()
    second = private_image("after-rotation")  # not yet cached: fetched with the new password
    assert_admitted(until(kubectl, pod_manifest(ns, "rotated", second.reference, pull=["regcred"]), True), "rotated")
    kubectl.run("delete", "secret", "regcred", "-n", ns, check=True)
    third = private_image("after-delete")
    gone = until(kubectl, pod_manifest(ns, "gone", third.reference, pull=["regcred"]), False)
    assert_denied(gone, f'image "{third.reference}"')
    deadline = time.monotonic() + 30
    while "were not found" not in gone.stderr and time.monotonic() < deadline:
        time.sleep(0.5)
        gone = create(kubectl, pod_manifest(ns, "gone", third.reference, pull=["regcred"]))
    assert_denied(gone, f"{ns}/regcred named by the pod were not found")


# ---- what 1,000 secrets cost --------------------------------------------------------------------


def operator_rss_kib() -> int:
    """VmRSS of the shell-operator process this module started (the only one running now)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            if argv[:2] != [b"/shell-operator", b"start"]:
                continue
            with open(f"/proc/{entry}/status") as handle:
                found.extend(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
        except OSError:
            continue
    assert len(found) == 1, f"expected one shell-operator process, found {len(found)}"
    return found[0]


def last_context_bytes(pod: cluster.SigngatePod, name: str) -> int | None:
    sizes = [entry.get("hook_binding_context_bytes") for entry in pod.operator_log_entries()
             if entry.get("msg") == "signgate decision" and entry.get("hook_name") == name]
    sizes = [s for s in sizes if isinstance(s, int)]
    return sizes[-1] if sizes else None


def test_thousand_secrets_memory_and_context_size(
    pull_pod, kubectl, new_namespace, private_image, tls_registry, record_property
) -> None:
    probe_ns = new_namespace()
    kubectl.apply_json(docker_secret(probe_ns, "regcred", tls_registry.host, tls_registry.password)).check_returncode()
    probes = iter(range(1000))

    def probe() -> int:
        """One admission on the full path (a new image each time: the fast path logs no decision),
        and the size of the binding context it received."""
        name = f"probe-{next(probes)}"
        done = until(kubectl, pod_manifest(probe_ns, name, private_image("probe").reference, pull=["regcred"]), True)
        assert_admitted(done, name)
        size = last_context_bytes(pull_pod, name)
        assert size is not None, "no decision log line with binding_context_bytes"
        return size

    before_bytes = probe()
    before_rss = operator_rss_kib()
    namespaces = [new_namespace() for _ in range(10)]
    items = [docker_secret(ns, f"pull-{i:03d}", f"registry-{i:03d}.example.com", f"password-{ns}-{i}")
             for ns in namespaces for i in range(100)]
    kubectl.run("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                check=True, timeout=300)
    # shell-operator's per-binding gauge is overwritten by each namespace's informer, so the
    # contexts themselves tell when all 1,000 arrived: at least 150 bytes each, and no growth.
    deadline = time.monotonic() + 180
    sizes = [probe()]
    while not (sizes[-1] - before_bytes > 1000 * 150 and len(sizes) > 1 and sizes[-1] == sizes[-2]):
        assert time.monotonic() < deadline, f"the binding context never held the 1,000 secrets: {sizes}"
        time.sleep(1)
        sizes.append(probe())
    after_rss = operator_rss_kib()
    numbers = {"secrets": 1000, "rss_kib_before": before_rss, "rss_kib_after": after_rss,
               "context_bytes_before": before_bytes, "context_bytes_after": sizes[-1]}
    for key, value in numbers.items():
        record_property(key, value)
    print("pull-secret cost:", json.dumps(numbers))
    # Every call carries every selected namespace's pull secrets: about 200 bytes each.
    assert sizes[-1] - before_bytes < 1000 * 1000
