"""The Helm chart, rendered by Helm's real engine (helm-python-sdk bundles Helm's Go SDK).

Each option is rendered once (module-scoped fixtures) and checked for what a cluster would do
with it: strict OpenAPI validation for Kubernetes 1.30 and the newest bundled version; selectors,
ports, env, probes, security context, PDB and RBAC; the rendered signgate configuration loaded by
signgate's own loader with the pod's volumes laid out on disk, and the real hook's `--config`
output; the generated certificate parsed with cryptography, and kept on upgrade when `lookup` finds
it (against a stub API server on 127.0.0.1 that answers the two requests Helm's lookup makes);
schema and template failures; the verifier service's sidecar (the same env, mounts and user as
the hook container, derived from the render); and a checkov scan with every skip carrying its reason.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (requirements-chart.txt) is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (requirements-chart.txt) is not installed"
)

from support.contract import admission_request, pod_spec, run_config, run_contexts, workload  # noqa: E402
from signgate.config import parse_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
RELEASE = "signgate"
NAMESPACE = "signgate-system"
IMAGE = "registry.example.com/platform/signgate"
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
KUBE_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
SERVICE_DNS_NAMES = [
    RELEASE,
    f"{RELEASE}.{NAMESPACE}",
    f"{RELEASE}.{NAMESPACE}.svc",
    f"{RELEASE}.{NAMESPACE}.svc.cluster.local",
]


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


KEY_PEM = _pem()
SECOND_PEM = _pem()
def _registry_ca() -> str:
    # A real CA certificate: signgate's loader checks that a CA bundle is a usable PEM bundle.
    import tempfile

    from support.certs import make_ca

    return Path(make_ca(Path(tempfile.mkdtemp(prefix="signgate-chart-ca-")), "chart test registry CA").cert_path).read_text()


REGISTRY_CA = _registry_ca()


def _trusted_root() -> str:
    # A real trusted_root.json (a test Fulcio, CT log and Rekor log): the hook's --config loads it.
    import tempfile

    from support.fulcio import new_ct_log, new_fulcio, trusted_root
    from support.tlog import new_log

    directory = Path(tempfile.mkdtemp(prefix="signgate-chart-root-"))
    log = new_log(directory, "rekor.chart.test")
    return trusted_root(directory / "trusted_root.json", new_fulcio("chart-fulcio"), [new_ct_log()], [log]).read_text()


TRUSTED_ROOT = _trusted_root()
RELEASE_IDENTITY = {
    "subjectRegExp": r"^https://github\.com/example/app/\.github/workflows/release\.yml@refs/tags/v.*$",
    "issuer": "https://token.actions.githubusercontent.com",
    "githubWorkflowRepository": "example/app",
    "githubWorkflowTrigger": "push",
}
DOCKER_CONFIG = json.dumps({"auths": {"registry.example.com": {"auth": base64.b64encode(b"u:p").decode()}}})

# Objects the user creates before installing, for the options that refer to existing ones.
EXISTING: dict[tuple[str, str], dict[str, str]] = {
    ("Secret", "cosign-keys"): {"release.pub": KEY_PEM, "ci.pub": SECOND_PEM},
    ("ConfigMap", "cosign-keys"): {"default.pub": KEY_PEM},
    ("Secret", "regcred"): {".dockerconfigjson": DOCKER_CONFIG},
    ("ConfigMap", "registry-ca"): {"ca.crt": REGISTRY_CA},
    ("Secret", "registry-ca"): {"bundle.pem": REGISTRY_CA},
    ("Secret", "webhook-tls"): {"tls.crt": "x", "tls.key": "x", "ca.crt": "x"},
    ("ConfigMap", "sigstore-trust"): {"public-good.json": TRUSTED_ROOT, "corp-ca.pem": REGISTRY_CA},
}

BASE_VALUES: dict[str, Any] = {"image": {"repository": IMAGE}, "keys": {"inline": {"default": KEY_PEM}}}

OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "cert-manager": {"tls": {"source": "certManager"}},
    "cert-manager-issuer": {
        "tls": {"source": "certManager", "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}
    },
    "tls-existing-secret": {"tls": {"source": "existingSecret", "existingSecret": "webhook-tls"}},
    "existing-key-secret": {
        "keys": {"inline": None, "existingSecret": "cosign-keys", "names": ["release", "ci"],
                 "hashAlgorithms": {"ci": "sha256"}},
        "config": {"policy": [{"images": "registry.example.com/**", "keys": ["release", "ci"], "threshold": 2,
                               "required": ["ci"]}]},
    },
    "existing-key-configmap": {"keys": {"inline": None, "existingConfigMap": "cosign-keys", "names": ["default"]}},
    "registry-auth": {"registryAuth": {"existingSecret": "regcred"}},
    "ca-bundle-configmap": {"registryCA": {"existingConfigMap": "registry-ca"}},
    "ca-bundle-secret": {"registryCA": {"existingSecret": "registry-ca", "key": "bundle.pem"}},
    "one-replica": {"replicaCount": 1},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "mutation": {"mutation": {"enabled": True}},
    # A rule that pins digests makes the hook register a mutating binding, so the chart must
    # grant (and clean up) the mutating configuration even with mutation.enabled left false.
    "pin-digest": {"config": {"policy": [{"images": "**", "keys": ["default"], "pinDigest": True}]}},
    "verifier-disabled": {"verifier": {"enabled": False}},
    # extraEnv and extraVolumeMounts reach both containers: a worker reads HTTPS_PROXY from its own
    # environment (only SIGNGATE_* variables are forwarded over the socket).
    "verifier-tuned": {
        "verifier": {"maxWorkers": 8, "resources": {"limits": {"memory": "384Mi"}}},
        "registryAuth": {"existingSecret": "regcred"},
        "registryCA": {"existingConfigMap": "registry-ca"},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"},
                     {"name": "SIGNGATE_EXTRA_SETTING", "value": "1"}],
        "extraVolumes": [{"name": "proxy-ca", "configMap": {"name": "registry-ca"}}],
        "extraVolumeMounts": [{"name": "proxy-ca", "mountPath": "/etc/ssl/proxy-ca", "readOnly": True}],
    },
    # Certificate signers only: no public key at all, a trust root and a CA bundle inline.
    "keyless": {
        "keys": {"inline": None},
        "trustedRoots": {"inline": {"public-good": TRUSTED_ROOT}},
        "certificateAuthorities": {"inline": {"corp-ca": REGISTRY_CA}},
        "config": {
            "identities": {"release": RELEASE_IDENTITY,
                           "corp-build": {"issuer": "https://login.corp.example", "subject": "build@corp.example"}},
            "policy": [
                {"images": "ghcr.io/example/**", "identities": ["release"], "trustedRoot": "public-good", "tlog": "required"},
                {"images": "registry.corp.example/**", "identities": ["corp-build"], "certificateAuthority": "corp-ca",
                 "ignoreSct": True},
            ],
        },
    },
    # Keys and identities side by side, the trust material from an existing ConfigMap.
    "trust-existing-configmap": {
        "trustedRoots": {"existingConfigMap": "sigstore-trust", "names": ["public-good"]},
        "certificateAuthorities": {"existingConfigMap": "sigstore-trust", "names": ["corp-ca"]},
        "config": {
            "identities": {"release": RELEASE_IDENTITY},
            "policy": [{"images": "**", "keys": ["default"], "identities": ["release"], "trustedRoot": "public-good",
                        "threshold": 2}],
        },
    },
    "full-config": {
        "image": {"digest": "sha256:" + "a" * 64},
        "podAntiAffinity": "hard",
        "webhookConfigurationName": "image-policy",
        "config": {
            # matchLabels: null drops the default opt-in label (Helm merges maps with the defaults).
            "webhook": {"namespaceSelector": {"matchLabels": None,
                                              "matchExpressions": [{"key": "team", "operator": "Exists"}]},
                        "timeoutSeconds": 15, "deadlineSeconds": 12, "failurePolicy": "Ignore",
                        "excludeNamespaces": ["monitoring"]},
            "registries": {"insecure": ["registry.internal:5000"], "allowNetworks": ["10.96.0.0/12"]},
            "limits": {"maxManifestBytes": 2097152, "connectTimeoutSeconds": 2.5},
            "cache": {"ttlSeconds": 300, "negativeTtlSeconds": 30, "tagTtlSeconds": 0, "maxEntries": 500},
            "mode": "warn",
            "denyLatest": True,
            "requireDigest": False,
            "unmatchedImages": "allow",
            "policy": [
                {"images": "registry.k8s.io/**", "action": "allow"},
                {"images": "quay.io/untrusted/**", "action": "deny", "message": "mirror it first"},
                {"images": "registry.example.com/**", "keys": ["default"], "annotations": {"env": "prod"},
                 "checkIdentity": True, "signatureRepository": "registry.example.com/signatures",
                 "mode": "enforce", "denyLatest": None},
            ],
        },
        "rekorKeys": {"inline": {"rekor": SECOND_PEM}},
        "cache": {"enabled": False},
        "networkPolicy": {"webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                          "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}]},
    },
}


class Replace(dict):
    """In `merge`: this mapping replaces the base's instead of being merged into it."""


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Replace):
            result[key] = copy.deepcopy(dict(value))
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# ---- rendering ----------------------------------------------------------------------------------


@dataclass
class Rendered:
    values: dict[str, Any]
    files: dict[str, str]
    docs: list[dict[str, Any]]

    @property
    def notes(self) -> str:
        return next(text for name, text in self.files.items() if name.endswith("NOTES.txt"))

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [doc for doc in self.all(kind) if name is None or doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
        return found[0]

    def maybe(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [doc for doc in self.all(kind) if doc["metadata"]["name"] == name]
        return found[0] if found else None

    @property
    def deployment(self) -> dict[str, Any]:
        return self.get("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]

    @property
    def containers(self) -> dict[str, dict[str, Any]]:
        containers = {c["name"]: c for c in self.pod["spec"]["containers"]}
        assert len(containers) == len(self.pod["spec"]["containers"]), "two containers share a name"
        return containers

    @property
    def container(self) -> dict[str, Any]:
        """The hook container: shell-operator, which runs the hooks."""
        return self.containers["shell-operator"]

    @property
    def verifier(self) -> dict[str, Any] | None:
        return self.containers.get("verifier")

    @property
    def verifier_enabled(self) -> bool:
        return bool(merge(DEFAULTS, self.values)["verifier"]["enabled"])

    @property
    def env(self) -> dict[str, Any]:
        return container_env(self.container)

    def env_value(self, name: str, container: dict[str, Any] | None = None) -> str:
        entry = container_env(container or self.container)[name]
        if "value" in entry:
            return entry["value"]
        field = entry["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.namespace", entry
        return NAMESPACE

    @property
    def config_text(self) -> str:
        return self.get("ConfigMap", f"{RELEASE}-config")["data"]["config.json"]

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_text)

    @property
    def hook_objects(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    names = [entry["name"] for entry in container["env"]]
    assert len(names) == len(set(names)), f"{container['name']}: a variable is set twice: {names}"
    return {entry["name"]: entry for entry in container["env"]}


DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())


def split(files: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for name, text in sorted(files.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    loaded = helm.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def render(chart: Any, values: dict[str, Any], **kwargs: Any) -> Rendered:
    files = chart.render(values, name=kwargs.pop("name", RELEASE), namespace=kwargs.pop("namespace", NAMESPACE),
                         is_install=kwargs.pop("is_install", True), **kwargs)
    return Rendered(values, files, split(files))


@pytest.fixture(scope="module")
def renders(chart: Any) -> dict[str, Rendered]:
    """Every option, rendered once for the whole module."""
    return {name: render(chart, merge(BASE_VALUES, override)) for name, override in OPTIONS.items()}


@pytest.fixture(params=list(OPTIONS))
def rendered(request: pytest.FixtureRequest, renders: dict[str, Rendered]) -> Rendered:
    return renders[request.param]


# ---- the pod's filesystem ------------------------------------------------------------------------


def object_data(r: Rendered, kind: str, name: str) -> dict[str, str]:
    found = r.maybe(kind, name)
    if found is None and kind == "Secret":
        issued = [c for c in r.all("Certificate") if c["spec"]["secretName"] == name]
        if issued:  # cert-manager writes it
            return {"tls.crt": "issued", "tls.key": "issued", "ca.crt": "issued"}
    if found is None:
        assert (kind, name) in EXISTING, f"the pod mounts {kind} {name}, which is neither rendered nor an existing object"
        return EXISTING[(kind, name)]
    if kind == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}
    return dict(found.get("data") or {})


def lay_out_volumes(r: Rendered, root: Path, container: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the files the kubelet would mount into the container (default: the hook's) under `root`.

    Returns mountPath -> local directory. Named items must exist in their source, as the
    kubelet requires."""
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in (container or r.container)["volumeMounts"]:
        assert "subPath" not in mount, "subPath mounts never see ConfigMap/Secret updates"
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = target
        if "emptyDir" in volume:
            continue
        if "configMap" in volume:
            source, data = volume["configMap"], object_data(r, "ConfigMap", volume["configMap"]["name"])
        elif "secret" in volume:
            source, data = volume["secret"], object_data(r, "Secret", volume["secret"]["secretName"])
        else:
            raise AssertionError(f"unexpected volume {volume}")
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            assert item["key"] in data, f"volume {volume['name']}: no entry {item['key']!r} in its source"
            (target / item["path"]).write_text(data[item["key"]])
    return mounts


def relocate(value: Any, mounts: dict[str, Path]) -> Any:
    """Point every absolute path under a mount at its local copy."""
    if isinstance(value, dict):
        return {k: relocate(v, mounts) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, mounts) for v in value]
    if isinstance(value, str):
        for mount_path, local in sorted(mounts.items(), key=lambda item: -len(item[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(local) + value[len(mount_path):]
    return value


@dataclass
class Pod:
    root: Path
    mounts: dict[str, Path]
    env: dict[str, str]
    config_path: Path


def as_pod(r: Rendered, root: Path, container: dict[str, Any] | None = None) -> Pod:
    container = container or r.container
    mounts = lay_out_volumes(r, root, container)
    env = {name: relocate(r.env_value(name, container), mounts) for name in container_env(container)}
    config_path = Path(env["SIGNGATE_CONFIG"])
    assert config_path.is_file(), "SIGNGATE_CONFIG does not point at the mounted configuration"
    # The configuration's own paths are pod paths: relocate them as the mounts are.
    config_path.write_text(json.dumps(relocate(json.loads(config_path.read_text()), mounts)))
    return Pod(root, mounts, env, config_path)


# ---- manifests: schema validation -----------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_validate_strictly(rendered: Rendered, version: str) -> None:
    for doc in rendered.docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue  # no OpenAPI schema for CRDs here; their structure is checked below
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_catches_a_misplaced_field(renders: dict[str, Rendered]) -> None:
    """Negative control: the validator used above does reject what a cluster would reject."""
    deployment = copy.deepcopy(renders["default"].deployment)
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_only_known_custom_resources(rendered: Rendered) -> None:
    for doc in rendered.docs:
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if "." in group and not group.endswith("k8s.io"):
            assert (doc["apiVersion"], doc["kind"]) in CRD_KINDS, doc["kind"]
        assert doc["metadata"]["name"]
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_helm_lint_is_clean() -> None:
    report = helm.lint(str(CHART), BASE_VALUES, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


# ---- workload, service, probes, security ------------------------------------------------------------


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_service_selects_the_webhook_pods_on_443_to_9680(rendered: Rendered) -> None:
    service = rendered.get("Service", RELEASE)
    labels = rendered.pod["metadata"]["labels"]
    assert matches(service["spec"]["selector"], labels)
    assert matches(rendered.deployment["spec"]["selector"]["matchLabels"], labels)
    [port] = service["spec"]["ports"]
    assert port["port"] == 443
    target = {p["name"]: p["containerPort"] for p in rendered.container["ports"]}[port["targetPort"]]
    assert target == 9680
    # shell-operator's webhook clientConfig names this Service.
    assert rendered.env_value("VALIDATING_WEBHOOK_SERVICE_NAME") == service["metadata"]["name"]
    # The uninstall Job's pod is not a webhook endpoint.
    for job in rendered.all("Job"):
        assert not matches(service["spec"]["selector"], job["spec"]["template"]["metadata"]["labels"])


def test_metrics_port_and_service_monitor(renders: dict[str, Rendered]) -> None:
    default = renders["default"]
    assert {"name": "metrics", "containerPort": 9115, "protocol": "TCP"} in default.container["ports"]
    assert not default.all("ServiceMonitor") and default.maybe("Service", f"{RELEASE}-metrics") is None

    r = renders["service-monitor"]
    service = r.get("Service", f"{RELEASE}-metrics")
    assert matches(service["spec"]["selector"], r.pod["metadata"]["labels"])
    [port] = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (9115, "metrics")
    monitor = r.get("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert not matches(monitor["spec"]["selector"]["matchLabels"], r.get("Service", RELEASE)["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics", "/metrics/hooks"}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {port["name"]}


def test_replicas_rollout_and_spreading(renders: dict[str, Rendered]) -> None:
    r = renders["default"]
    spec = r.deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    [term] = r.pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert matches(term["podAffinityTerm"]["labelSelector"]["matchLabels"], r.pod["metadata"]["labels"])
    [hard] = renders["full-config"].pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert matches(hard["labelSelector"]["matchLabels"], r.pod["metadata"]["labels"])
    assert renders["one-replica"].deployment["spec"]["replicas"] == 1


@pytest.mark.parametrize("option", ["default", "one-replica"])
def test_pdb_allows_one_disruption(renders: dict[str, Rendered], option: str) -> None:
    r = renders[option]
    pdb = r.get("PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
    assert matches(pdb["spec"]["selector"]["matchLabels"], r.pod["metadata"]["labels"])
    replicas = r.deployment["spec"]["replicas"]
    assert replicas - pdb["spec"]["maxUnavailable"] < replicas  # an eviction is always possible


def test_probes_use_https_healthz_on_the_webhook_port(rendered: Rendered) -> None:
    for probe in ("livenessProbe", "readinessProbe"):
        check = rendered.container[probe]["httpGet"]
        assert check == {"path": "/healthz", "port": "webhook", "scheme": "HTTPS"}
    assert {p["name"]: p["containerPort"] for p in rendered.container["ports"]}["webhook"] == 9680


def test_security_context(rendered: Rendered) -> None:
    pods = [rendered.pod["spec"]] + [job["spec"]["template"]["spec"] for job in rendered.all("Job")]
    for spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 10000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert context.get("privileged") is False
            assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]


def test_writable_paths_are_empty_dirs_and_everything_else_is_read_only(rendered: Rendered) -> None:
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    writable = {}
    for mount in rendered.container["volumeMounts"]:
        if "emptyDir" in volumes[mount["name"]]:
            writable[mount["mountPath"]] = volumes[mount["name"]]["emptyDir"]
            assert not mount.get("readOnly")
        else:
            assert mount["readOnly"] is True, mount
    expected = {"/tmp", "/var/run/shell-operator"}
    if rendered.verifier_enabled:
        expected.add(os.path.dirname(rendered.env_value("SIGNGATE_VERIFIER_SOCKET")))
    if rendered.values.get("cache", {}).get("enabled", True):
        expected.add(rendered.env_value("SIGNGATE_CACHE_DIR"))
    else:
        assert "SIGNGATE_CACHE_DIR" not in rendered.env
    # The cache directory is named by the environment only (cache.settings_from).
    assert "directory" not in rendered.config.get("cache", {})
    assert set(writable) == expected
    assert all(limit.get("sizeLimit") for limit in writable.values())


def test_environment(rendered: Rendered) -> None:
    env = rendered.env
    for name in ("SHELL_OPERATOR_NAMESPACE", "SIGNGATE_NAMESPACE"):
        assert env[name]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert rendered.env_value("LOG_TYPE") == "json"
    expected_vwc = rendered.values.get("webhookConfigurationName") or RELEASE
    assert rendered.env_value("VALIDATING_WEBHOOK_CONFIGURATION_NAME") == expected_vwc
    assert rendered.env_value("SIGNGATE_CONFIG") == "/etc/signgate/config/config.json"


def test_image_reference(renders: dict[str, Rendered]) -> None:
    assert renders["default"].container["image"] == f"{IMAGE}:0.1.0"
    assert renders["full-config"].container["image"] == f"{IMAGE}@sha256:{'a' * 64}"
    for r in renders.values():
        [job] = r.all("Job")
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == r.container["image"]


def test_network_policy_admits_the_webhook_and_metrics_ports(renders: dict[str, Rendered]) -> None:
    r = renders["default"]
    policy = r.get("NetworkPolicy", RELEASE)
    assert matches(policy["spec"]["podSelector"]["matchLabels"], r.pod["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {"webhook", "metrics"}
    assert all("from" not in rule for rule in policy["spec"]["ingress"])  # the API server's address is unknown
    full = renders["full-config"].get("NetworkPolicy", RELEASE)
    assert full["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert full["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]


# ---- the verifier service ---------------------------------------------------------------------------

SOCKET_VARIABLE = "SIGNGATE_VERIFIER_SOCKET"
VERIFIER_OPTIONS = [name for name, override in OPTIONS.items()
                    if merge(DEFAULTS, merge(BASE_VALUES, override))["verifier"]["enabled"]]
DOCKERFILE = (REPO / "image" / "Dockerfile").read_text()
# Where the image puts the venv's Python and signgate's library (the chart must name the same).
IMAGE_PYTHON = re.search(r"-m venv (/\S+)", DOCKERFILE).group(1) + "/bin/python"
IMAGE_HOOKS_LIB = re.search(r"^COPY hooks/ (/\S+?)/?$", DOCKERFILE, re.M).group(1) + "/lib"


def mounts_by_path(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    assert len(mounts) == len(container.get("volumeMounts", [])), f"{container['name']}: a path is mounted twice"
    return mounts


def mount_for(path: str, container: dict[str, Any]) -> dict[str, Any] | None:
    """The mount that `path` lies under (the longest mountPath that is a prefix of it)."""
    under = [m for p, m in mounts_by_path(container).items() if path == p or path.startswith(p.rstrip("/") + "/")]
    return max(under, key=lambda m: len(m["mountPath"]), default=None)


def absolute_paths(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for child in value.values():
            yield from absolute_paths(child)
    elif isinstance(value, list):
        for child in value:
            yield from absolute_paths(child)
    elif isinstance(value, str) and value.startswith("/"):
        yield value


def signgate_paths(r: Rendered) -> set[str]:
    """Every file or directory signgate reads in the hook container, as the render names them: the
    values of its SIGNGATE_* variables and the paths in its configuration (keys, credentials, CA)."""
    paths = {r.env_value(name) for name in r.env if name.startswith("SIGNGATE_")}
    paths.update(absolute_paths(r.config))
    return {path for path in paths if path.startswith("/")}


def signgate_mounts(r: Rendered) -> list[dict[str, Any]]:
    """The hook container's mounts that signgate depends on: those its paths lie under, and the
    user's extraVolumeMounts (whatever they hold is part of the hook's environment)."""
    needed: dict[str, dict[str, Any]] = {}
    for path in sorted(signgate_paths(r)):
        mount = mount_for(path, r.container)
        assert mount is not None, f"signgate reads {path}, which is not mounted in the hook container"
        needed[mount["mountPath"]] = mount
    for extra in r.values.get("extraVolumeMounts") or []:
        needed[extra["mountPath"]] = mounts_by_path(r.container)[extra["mountPath"]]
    return list(needed.values())


def serve_flags(command: list[str]) -> dict[str, str]:
    python = command.index(IMAGE_PYTHON)
    assert command[python + 1:python + 4] == ["-m", "signgate", "serve"], command
    args = command[python + 4:]
    assert len(args) % 2 == 0 and all(flag.startswith("--") for flag in args[::2]), args
    return dict(zip(args[::2], args[1::2]))


def quantity_mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([KMG]i)?", str(quantity)).groups()
    return float(number) * {None: 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[unit]


def test_verifier_is_a_sidecar_by_default(renders: dict[str, Rendered]) -> None:
    assert DEFAULTS["verifier"]["enabled"] is True
    r = renders["default"]
    # The hook container first: `kubectl logs`, `kubectl exec` and the checks above expect it there,
    # and the annotation makes kubectl pick it (the decisions are logged there) without asking.
    assert [c["name"] for c in r.pod["spec"]["containers"]] == ["shell-operator", "verifier"]
    assert r.pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "shell-operator"
    assert "webhook" in {p["name"] for p in r.container["ports"]}
    verifier = r.verifier
    assert (verifier["image"], verifier["imagePullPolicy"]) == (r.container["image"], r.container["imagePullPolicy"])
    assert "ports" not in verifier  # reached over its Unix socket only; the NetworkPolicy is unchanged
    # The image's entrypoint is tini -- shell-operator: the command must replace it, with tini as PID 1.
    assert verifier["command"][:2] == ["/sbin/tini", "--"]
    assert "args" not in verifier


def test_a_disabled_verifier_renders_nothing_of_it(renders: dict[str, Rendered]) -> None:
    on, off = renders["default"], renders["verifier-disabled"]
    assert off.verifier is None and [c["name"] for c in off.pod["spec"]["containers"]] == ["shell-operator"]
    assert SOCKET_VARIABLE not in off.env
    assert "kubectl.kubernetes.io/default-container" not in off.pod["metadata"]["annotations"]

    # Default minus the verifier's parts is exactly the disabled render (the TLS material differs:
    # every offline render generates a new certificate).
    expected = copy.deepcopy(on.deployment)
    pod = expected["spec"]["template"]
    socket_volume = mount_for(on.env_value(SOCKET_VARIABLE), on.container)["name"]
    pod["spec"]["containers"] = [c for c in pod["spec"]["containers"] if c["name"] != "verifier"]
    [hook] = pod["spec"]["containers"]
    hook["env"] = [e for e in hook["env"] if e["name"] != SOCKET_VARIABLE]
    hook["volumeMounts"] = [m for m in hook["volumeMounts"] if m["name"] != socket_volume]
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != socket_volume]
    del pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
    del expected["metadata"]["annotations"]["checkov.io/skip4"]  # the verifier's missing readiness probe
    actual = copy.deepcopy(off.deployment)
    for deployment in (expected, actual):
        del deployment["spec"]["template"]["metadata"]["annotations"]["checksum/tls"]
    assert actual == expected
    # Nothing else of the release changes.
    def others(r: Rendered) -> list[dict[str, Any]]:
        return [d for d in r.docs if d["kind"] != "Deployment" and d["metadata"]["name"] != f"{RELEASE}-tls"]
    assert others(off) == others(on)


@pytest.mark.parametrize("option", VERIFIER_OPTIONS)
def test_verifier_mounts_what_signgate_reads_at_the_same_paths(renders: dict[str, Rendered], option: str) -> None:
    r = renders[option]
    verifier_mounts = mounts_by_path(r.verifier)
    needed = signgate_mounts(r)
    assert r.env_value("SIGNGATE_CONFIG").startswith(tuple(m["mountPath"] for m in needed))
    for mount in needed:
        # Same volume, same path, same read-only flag: the worker opens the paths the hook's
        # environment and configuration name.
        assert verifier_mounts.get(mount["mountPath"]) == mount, f"{mount} is not mounted in the verifier"
    # And nothing else: not the webhook's TLS key, not shell-operator's binding contexts.
    assert set(verifier_mounts) == {m["mountPath"] for m in needed}
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    for mount in verifier_mounts.values():
        volume = volumes[mount["name"]]
        assert "tls.key" not in {i["key"] for i in (volume.get("secret") or {}).get("items", [])}
        assert bool(mount.get("readOnly")) != ("emptyDir" in volume), mount  # writable: emptyDirs only


@pytest.mark.parametrize("option", VERIFIER_OPTIONS)
def test_the_configuration_loads_in_the_verifier_container(
    renders: dict[str, Rendered], option: str, tmp_path: Path
) -> None:
    from signgate.hook import verify_key_files

    r = renders[option]
    pod = as_pod(r, tmp_path, r.verifier)
    config = parse_config(pod.config_path.read_bytes(), "config.json", pod.env)
    verify_key_files(config)  # what the hook's --config call checks at start-up: keys, credentials
    for path in [spec.path for spec in list(config.keys.values()) + list(config.rekor_keys.values())] + [
        config.registries.auth, config.registries.ca_bundle
    ]:
        if path:
            assert Path(path).is_file() and str(path).startswith(str(tmp_path)), path
    if "SIGNGATE_CACHE_DIR" in r.env:
        assert Path(pod.env["SIGNGATE_CACHE_DIR"]).is_dir()


@pytest.mark.parametrize("option", VERIFIER_OPTIONS)
def test_verifier_has_the_hooks_signgate_environment(renders: dict[str, Rendered], option: str) -> None:
    r = renders[option]
    verifier_env = container_env(r.verifier)
    hook_signgate = [e for e in r.container["env"] if e["name"].startswith("SIGNGATE_") and e["name"] != SOCKET_VARIABLE]
    verifier_signgate = [e for e in r.verifier["env"] if e["name"].startswith("SIGNGATE_")]
    assert verifier_signgate == hook_signgate
    assert SOCKET_VARIABLE not in verifier_env
    # extraEnv reaches both, last (so it can override): proxies are read from the worker's own env.
    for entry in r.values.get("extraEnv") or []:
        assert r.container["env"][-len(r.values["extraEnv"]):] == r.verifier["env"][-len(r.values["extraEnv"]):]
        assert entry in r.verifier["env"] and entry in r.container["env"]
    assert verifier_env["PYTHONPATH"] == {"name": "PYTHONPATH", "value": IMAGE_HOOKS_LIB}


@pytest.mark.parametrize("option", VERIFIER_OPTIONS)
def test_verifier_runs_as_the_hook_user_with_the_same_hardening(renders: dict[str, Rendered], option: str) -> None:
    r = renders[option]
    pod_context = r.pod["spec"]["securityContext"]

    def effective(container: dict[str, Any], key: str) -> Any:
        return container.get("securityContext", {}).get(key, pod_context.get(key))

    for key in ("runAsUser", "runAsGroup", "runAsNonRoot"):
        assert effective(r.verifier, key) == effective(r.container, key) is not None, key
    assert r.verifier["securityContext"] == r.container["securityContext"]


@pytest.mark.parametrize("option", VERIFIER_OPTIONS)
def test_verifier_serves_and_is_probed_on_the_socket_the_hook_uses(renders: dict[str, Rendered], option: str) -> None:
    r = renders[option]
    socket = r.env_value(SOCKET_VARIABLE)
    assert serve_flags(r.verifier["command"])["--socket"] == socket
    ping = [IMAGE_PYTHON, "-m", "signgate", "ping", "--socket", socket]
    liveness = r.verifier["livenessProbe"]
    assert liveness["exec"] == {"command": ping}
    assert liveness["timeoutSeconds"] >= 2 and liveness["periodSeconds"] >= 5
    # Generous: a busy service is not restarted for a slow answer or two.
    assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 60
    # An accelerator must not decide whether the pod serves the webhook: the hook verifies
    # in-process without it, so the verifier has no readiness probe.
    assert "readinessProbe" not in r.verifier
    # The socket's directory: one in-memory emptyDir, mounted in both containers at the same path.
    hook_mount, verifier_mount = mount_for(socket, r.container), mount_for(socket, r.verifier)
    assert hook_mount == verifier_mount and hook_mount["mountPath"] == os.path.dirname(socket)
    [volume] = [v for v in r.pod["spec"]["volumes"] if v["name"] == hook_mount["name"]]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}


def test_max_workers_and_resources_reach_the_verifier(renders: dict[str, Rendered]) -> None:
    default, tuned = renders["default"], renders["verifier-tuned"]
    workers = DEFAULTS["verifier"]["maxWorkers"]
    assert serve_flags(default.verifier["command"])["--max-workers"] == str(workers)
    assert serve_flags(tuned.verifier["command"])["--max-workers"] == "8"
    assert default.verifier["resources"] == DEFAULTS["verifier"]["resources"]
    assert tuned.verifier["resources"]["limits"] == {**DEFAULTS["verifier"]["resources"]["limits"], "memory": "384Mi"}
    # The default limit holds the service (~40 MiB idle) and every worker busy (roughly 10 MiB each).
    assert quantity_mib(default.verifier["resources"]["limits"]["memory"]) >= 40 + 10 * workers


def test_install_guide_describes_the_verifier(renders: dict[str, Rendered]) -> None:
    guide = (REPO / "docs" / "install.md").read_text()
    r = renders["default"]
    assert "--set verifier.enabled=false" in guide
    assert os.path.dirname(r.env_value(SOCKET_VARIABLE)) in guide
    assert "verifier.maxWorkers" in guide and "verifier.resources" in guide


def test_the_real_service_answers_the_charts_probe(renders: dict[str, Rendered]) -> None:
    """The rendered serve and ping commands against signgate's own service, with the verifier
    container's environment and files laid out locally: the service starts, creates its socket
    0600, answers the probe, and stops cleanly on SIGTERM (the kubelet's stop signal)."""
    if not (REPO / "hooks" / "lib" / "signgate" / "service.py").is_file():
        pytest.skip("signgate.service (the verifier service) is not in this tree yet")
    r = renders["default"]
    # Short: an AF_UNIX path has at most 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="sg-", dir="/tmp"))
    server: subprocess.Popen[bytes] | None = None
    try:
        pod = as_pod(r, root, r.verifier)
        env = {**os.environ, **pod.env, "PYTHONPATH": str(REPO / "hooks" / "lib")}

        def local(command: list[str]) -> list[str]:
            command = command[2:] if command[:2] == ["/sbin/tini", "--"] else command
            return [sys.executable if arg == IMAGE_PYTHON else relocate(arg, pod.mounts) for arg in command]

        serve = local(r.verifier["command"])
        ping = local(r.verifier["livenessProbe"]["exec"]["command"])
        socket = Path(serve_flags([IMAGE_PYTHON] + serve[1:])["--socket"])
        assert str(socket).startswith(str(root))

        def probe() -> int:
            return subprocess.run(ping, env=env, capture_output=True, timeout=30).returncode

        assert probe() == 1  # nothing listens yet
        server = subprocess.Popen(serve, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while probe() != 0:
            assert server.poll() is None, server.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "the service did not answer the probe within 20 s"
            time.sleep(0.2)
        assert socket.stat().st_mode & 0o777 == 0o600
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=15)[0].decode(errors="replace")
        assert server.returncode == 0, output
        assert probe() == 1
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


# ---- RBAC and uninstall -----------------------------------------------------------------------------


def rules_by_resource(role: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["admissionregistration.k8s.io"]
        for resource in rule["resources"]:
            assert resource not in result
            result[resource] = rule
    return result


@pytest.mark.parametrize("option", ["default", "mutation", "pin-digest"])
def test_cluster_role_grants_exactly_what_shell_operator_uses(renders: dict[str, Rendered], option: str) -> None:
    r = renders[option]
    role = r.get("ClusterRole", RELEASE)
    rules = rules_by_resource(role)
    expected = {"validatingwebhookconfigurations"}
    if option in ("mutation", "pin-digest"):
        expected.add("mutatingwebhookconfigurations")
    assert set(rules) == expected
    for rule in rules.values():
        assert sorted(rule["verbs"]) == ["create", "list", "update"]
        assert "resourceNames" not in rule
    binding = r.get("ClusterRoleBinding", RELEASE)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RELEASE}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": r.pod["spec"]["serviceAccountName"], "namespace": NAMESPACE}
    ]
    r.get("ServiceAccount", r.pod["spec"]["serviceAccountName"])
    # Nothing else: no Role, no access to Secrets.
    assert sorted(d["metadata"]["name"] for d in r.all("ClusterRole")) == [RELEASE, f"{RELEASE}-cleanup"]
    assert not r.all("Role")


@pytest.mark.parametrize("option", ["default", "mutation", "pin-digest", "full-config"])
def test_pre_delete_job_removes_the_webhook_configuration(renders: dict[str, Rendered], option: str) -> None:
    r = renders[option]
    object_name = r.env_value("VALIDATING_WEBHOOK_CONFIGURATION_NAME") + "-hooks"
    hook_objects = r.hook_objects
    assert {d["kind"] for d in hook_objects} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "NetworkPolicy", "Job"}
    for obj in hook_objects:
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hook_objects}
    assert weights["Job"] > max(w for kind, w in weights.items() if kind != "Job")

    role = r.get("ClusterRole", f"{RELEASE}-cleanup")
    rules = rules_by_resource(role)
    kinds = ["validatingwebhookconfiguration"] + (
        ["mutatingwebhookconfiguration"] if option in ("mutation", "pin-digest") else []
    )
    assert set(rules) == {kind + "s" for kind in kinds}
    for rule in rules.values():
        assert rule["resourceNames"] == [object_name]
        assert sorted(rule["verbs"]) == ["delete", "get"]

    job = r.get("Job", f"{RELEASE}-cleanup")
    spec = job["spec"]["template"]["spec"]
    [container] = spec["containers"]
    command = container["command"]
    assert command[:2] == ["kubectl", "delete"] and "--ignore-not-found" in command
    assert [arg for arg in command if "/" in arg] == [f"{kind}/{object_name}" for kind in kinds]
    assert spec["restartPolicy"] == "Never"
    binding = r.get("ClusterRoleBinding", f"{RELEASE}-cleanup")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == spec["serviceAccountName"]
    r.get("ServiceAccount", spec["serviceAccountName"])
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    # The break-glass command is documented where an operator looks first.
    assert f"kubectl delete validatingwebhookconfiguration {object_name}" in r.notes


def test_cleanup_can_be_turned_off(chart: Any) -> None:
    r = render(chart, merge(BASE_VALUES, {"cleanup": {"enabled": False}}))
    assert not r.hook_objects


# ---- configuration: rendered JSON, signgate's loader, the hook's --config -----------------------------


def test_config_is_json_and_loads_with_signgates_loader(rendered: Rendered, tmp_path: Path) -> None:
    text = rendered.config_text
    assert text.lstrip().startswith("{")
    json.loads(text)  # the hook's JSON fast path, not YAML
    pod = as_pod(rendered, tmp_path)
    config = parse_config(pod.config_path.read_bytes(), "config.json", pod.env)
    for spec in list(config.keys.values()) + list(config.rekor_keys.values()):
        assert Path(spec.path).is_file(), f"key {spec.name}: {spec.path} is not mounted"
        assert str(Path(spec.path)).startswith(str(tmp_path))
    assert config.webhook.signgate_namespace == NAMESPACE


def test_config_paths_follow_the_mounts(renders: dict[str, Rendered]) -> None:
    default = renders["default"].config
    assert default["keys"] == {"default": "/etc/signgate/keys/default.pub"}
    assert "auth" not in default["registries"] and "caBundle" not in default["registries"]
    assert renders["existing-key-secret"].config["keys"] == {
        "release": "/etc/signgate/keys/release.pub",
        "ci": {"path": "/etc/signgate/keys/ci.pub", "hashAlgorithm": "sha256"},
    }
    assert renders["registry-auth"].config["registries"]["auth"] == "/etc/signgate/registry-auth/.dockerconfigjson"
    for option in ("ca-bundle-configmap", "ca-bundle-secret"):
        assert renders[option].config["registries"]["caBundle"] == "/etc/signgate/registry-ca/ca.crt"
    assert renders["full-config"].config["rekorKeys"] == {"rekor": "/etc/signgate/rekor-keys/rekor.pub"}


def test_every_config_value_reaches_signgate(renders: dict[str, Rendered], tmp_path: Path) -> None:
    r = renders["full-config"]
    config = parse_config(as_pod(r, tmp_path).config_path.read_bytes(), "config.json", {"SIGNGATE_NAMESPACE": NAMESPACE})
    assert config.webhook.timeout_seconds == 15 and config.webhook.deadline_seconds == 12
    assert config.webhook.failure_policy == "Ignore"
    assert config.webhook.exclude_namespaces == ("monitoring",)
    assert config.registries.insecure == frozenset({"registry.internal:5000"})
    assert config.registries.allow_networks == ("10.96.0.0/12",)
    assert config.limits.max_manifest_bytes == 2097152 and config.limits.connect_timeout_seconds == 2.5
    assert (config.cache.ttl_seconds, config.cache.negative_ttl_seconds, config.cache.max_entries) == (300, 30, 500)
    assert (config.mode, config.deny_latest, config.unmatched_images) == ("warn", True, "allow")
    assert [rule.action for rule in config.policy] == ["allow", "deny", "verify"]
    verify = config.policy[2]
    assert verify.check_identity and verify.annotations == (("env", "prod"),) and verify.mode == "enforce"
    assert verify.signature_repository == "registry.example.com/signatures"
    assert verify.deny_latest is None


@pytest.mark.parametrize("option", ["default", "full-config", "existing-key-secret", "ca-bundle-secret"])
def test_hook_config_output_excludes_kube_system_and_the_release_namespace(
    renders: dict[str, Rendered], option: str, tmp_path: Path
) -> None:
    r = renders[option]
    pod = as_pod(r, tmp_path)
    completed = run_config(pod.config_path, pod.env)
    assert completed.returncode == 0, completed.stderr
    [binding] = yaml.safe_load(completed.stdout)["kubernetesValidating"]
    selector = binding["namespace"]["labelSelector"]
    exclusion = [e for e in selector["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"]
    assert exclusion and exclusion[-1]["operator"] == "NotIn"
    assert {"kube-system", NAMESPACE} <= set(exclusion[-1]["values"])
    configured = r.config["webhook"]["namespaceSelector"]
    if option != "full-config":
        assert selector["matchLabels"] == configured["matchLabels"] == {"signed": "required"}
    assert binding["name"] == r.config["webhook"]["name"]
    assert binding["timeoutSeconds"] == r.config["webhook"]["timeoutSeconds"]
    if option == "full-config":
        assert "matchLabels" not in selector
        assert "monitoring" in exclusion[-1]["values"]
        assert {"key": "team", "operator": "Exists"} in selector["matchExpressions"]


def test_the_release_namespace_comes_from_the_pod_not_from_values(renders: dict[str, Rendered], tmp_path: Path) -> None:
    """Installed elsewhere, the downward API names the real namespace, and that one is excluded."""
    r = renders["default"]
    pod = as_pod(r, tmp_path)
    completed = run_config(pod.config_path, {**pod.env, "SIGNGATE_NAMESPACE": "elsewhere"})
    assert completed.returncode == 0, completed.stderr
    [binding] = yaml.safe_load(completed.stdout)["kubernetesValidating"]
    values = binding["namespace"]["labelSelector"]["matchExpressions"][-1]["values"]
    assert "elsewhere" in values and "kube-system" in values


def test_the_rendered_configuration_denies_an_unverifiable_image(renders: dict[str, Rendered], tmp_path: Path) -> None:
    """An admission call through the real hook, under the chart's configuration and environment.

    The registry is 127.0.0.1:9 (nothing listens), so the denial comes without any real network."""
    pod = as_pod(renders["default"], tmp_path)
    request = admission_request(workload("Pod", pod_spec(["127.0.0.1:9/team/app:v1"])))
    context = [{"binding": renders["default"].config["webhook"]["name"], "type": "Validating",
                "review": {"request": request}}]
    run = run_contexts(pod.config_path, context, env=pod.env)
    assert run.returncode == 0, run.stderr
    assert run.allowed is False
    assert "127.0.0.1:9/team/app:v1" in run.message


def test_pods_roll_when_config_or_keys_change(chart: Any, renders: dict[str, Rendered]) -> None:
    base = renders["default"].pod["metadata"]["annotations"]
    changed_config = render(chart, merge(BASE_VALUES, {"config": {"webhook": {"timeoutSeconds": 12}}}))
    changed_key = render(chart, merge(BASE_VALUES, {"keys": {"inline": {"default": SECOND_PEM}}}))
    assert changed_config.pod["metadata"]["annotations"]["checksum/config"] != base["checksum/config"]
    assert changed_key.pod["metadata"]["annotations"]["checksum/keys"] != base["checksum/keys"]
    # Same values, same config checksum: a plain upgrade does not roll the pods.
    again = render(chart, merge(BASE_VALUES, {}))
    assert again.pod["metadata"]["annotations"]["checksum/config"] == base["checksum/config"]
    rendered_json = renders["default"].config_text
    assert base["checksum/config"] == hashlib.sha256(rendered_json.rstrip("\n").encode()).hexdigest()


def test_inline_keys_are_a_config_map(renders: dict[str, Rendered]) -> None:
    keys = renders["default"].get("ConfigMap", f"{RELEASE}-keys")
    assert keys["data"]["default.pub"].strip() == KEY_PEM.strip()
    assert not [s for s in renders["default"].all("Secret") if s["metadata"]["name"] != f"{RELEASE}-tls"]
    existing = renders["existing-key-secret"]
    assert existing.maybe("ConfigMap", f"{RELEASE}-keys") is None
    [volume] = [v for v in existing.pod["spec"]["volumes"] if v["name"] == "keys"]
    assert volume["secret"]["secretName"] == "cosign-keys"
    assert [i["key"] for i in volume["secret"]["items"]] == ["release.pub", "ci.pub"]


def test_trust_material_is_mounted_read_only_from_a_config_map(renders: dict[str, Rendered]) -> None:
    r = renders["keyless"]
    assert r.config["trustedRoots"] == {"public-good": "/etc/signgate/trusted-roots/public-good.json"}
    assert r.config["certificateAuthorities"] == {"corp-ca": "/etc/signgate/certificate-authorities/corp-ca.pem"}
    assert r.config["keys"] == {} and "keys" not in {v["name"] for v in r.pod["spec"]["volumes"]}
    assert r.config["identities"]["release"] == RELEASE_IDENTITY
    roots = r.get("ConfigMap", f"{RELEASE}-trusted-roots")["data"]
    assert json.loads(roots["public-good.json"]) == json.loads(TRUSTED_ROOT)
    assert r.get("ConfigMap", f"{RELEASE}-certificate-authorities")["data"]["corp-ca.pem"].strip() == REGISTRY_CA.strip()
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    for volume, config_map, item, directory in (
        ("trusted-roots", f"{RELEASE}-trusted-roots", "public-good.json", "/etc/signgate/trusted-roots"),
        ("certificate-authorities", f"{RELEASE}-certificate-authorities", "corp-ca.pem", "/etc/signgate/certificate-authorities"),
    ):
        assert volumes[volume]["configMap"]["name"] == config_map
        assert volumes[volume]["configMap"]["items"] == [{"key": item, "path": item}]
        for container in (r.container, r.verifier):
            assert mounts_by_path(container)[directory] == {"name": volume, "mountPath": directory, "readOnly": True}
    # From an existing ConfigMap: nothing rendered, the named entries mounted.
    existing = renders["trust-existing-configmap"]
    assert existing.maybe("ConfigMap", f"{RELEASE}-trusted-roots") is None
    volumes = {v["name"]: v for v in existing.pod["spec"]["volumes"]}
    assert volumes["trusted-roots"]["configMap"]["name"] == "sigstore-trust"
    assert volumes["certificate-authorities"]["configMap"]["items"] == [{"key": "corp-ca.pem", "path": "corp-ca.pem"}]
    # Without trust material, no trust volume at all.
    assert not {"trusted-roots", "certificate-authorities"} & {v["name"] for v in renders["default"].pod["spec"]["volumes"]}


@pytest.mark.parametrize("option", ["keyless", "trust-existing-configmap"])
def test_the_keyless_configuration_passes_the_hooks_config_check(
    renders: dict[str, Rendered], option: str, tmp_path: Path
) -> None:
    """The hook's own --config call (what shell-operator runs at start-up) accepts the rendered
    configuration with the mounted trust material, and refuses it once that material is broken."""
    r = renders[option]
    pod = as_pod(r, tmp_path)
    completed = run_config(pod.config_path, pod.env)
    assert completed.returncode == 0, completed.stderr
    root = pod.mounts["/etc/signgate/trusted-roots"] / "public-good.json"
    assert json.loads(root.read_text()) == json.loads(TRUSTED_ROOT)
    root.write_text('{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=9"}')
    completed = run_config(pod.config_path, pod.env)
    assert completed.returncode != 0
    assert "trustedRoots.public-good" in completed.stderr and "media type" in completed.stderr


def test_trust_material_rolls_the_pods(chart: Any, renders: dict[str, Rendered]) -> None:
    base = renders["keyless"].pod["metadata"]["annotations"]
    assert "checksum/trust" not in renders["default"].pod["metadata"]["annotations"]
    changed = render(chart, merge(BASE_VALUES, merge(OPTIONS["keyless"], {
        "trustedRoots": {"inline": {"public-good": json.dumps(json.loads(TRUSTED_ROOT))}}})))
    assert changed.pod["metadata"]["annotations"]["checksum/trust"] != base["checksum/trust"]


# ---- TLS ---------------------------------------------------------------------------------------------


def tls_material(r: Rendered) -> tuple[x509.Certificate, Any, x509.Certificate, dict[str, Any]]:
    secret = r.get("Secret", f"{RELEASE}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    key = serialization.load_pem_private_key(data["tls.key"], password=None)
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    return cert, key, ca, secret


def test_generated_certificate_serves_the_service_names(renders: dict[str, Rendered]) -> None:
    r = renders["default"]
    cert, key, ca, secret = tls_material(r)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sorted(names) == sorted(SERVICE_DNS_NAMES)
    service = r.get("Service", RELEASE)["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in names  # what the API server connects to
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    not_after = int(secret["metadata"]["annotations"]["signgate.dev/tls-not-after"])
    assert abs(not_after - cert.not_valid_after_utc.timestamp()) < 120
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) > datetime.timedelta(days=3000)
    # Mounted where shell-operator reads it, and the pods roll when it changes.
    [volume] = [v for v in r.pod["spec"]["volumes"] if v["name"] == "validating-certs"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert sorted(i["path"] for i in volume["secret"]["items"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert {"name": "validating-certs", "mountPath": "/validating-certs", "readOnly": True} in r.container["volumeMounts"]
    assert r.pod["metadata"]["annotations"]["checksum/tls"] == hashlib.sha256(secret["data"]["tls.crt"].encode()).hexdigest()


def test_each_offline_render_generates_a_new_certificate(chart: Any, renders: dict[str, Rendered]) -> None:
    """Without a cluster, `lookup` finds nothing (as in `helm template`)."""
    again = render(chart, merge(BASE_VALUES, {}))
    assert tls_material(again)[0] != tls_material(renders["default"])[0]


class StubAPIServer:
    """Answers the two requests Helm's `lookup "v1" "Secret" ns name` makes: the discovery of the
    core group (/api/v1) and the GET of the Secret. Everything else is a 404 Status."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                stub.requests.append(path)
                parts = path.strip("/").split("/")
                body: Any = None
                if path == "/api/v1":
                    body = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
                        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                         "verbs": ["get", "list"]}]}
                elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
                    body = stub.secrets.get((parts[3], parts[5]))
                if body is None:
                    self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404})
                else:
                    self._send(200, body)

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def kubeconfig(self) -> str:
        host, port = self.server.server_address[:2]
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": f"http://{host}:{port}"}}],
            "users": [{"name": "stub", "user": {"token": "stub"}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": NAMESPACE}}],
        })

    def __enter__(self) -> "StubAPIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def api_server() -> Iterator[StubAPIServer]:
    with StubAPIServer() as server:
        yield server


def upgrade_render(chart: Any, server: StubAPIServer, stored: dict[str, Any] | None) -> Rendered:
    server.secrets.clear()
    if stored is not None:
        server.secrets[(NAMESPACE, stored["metadata"]["name"])] = stored
    config = helm.Config(kubeconfig_content=server.kubeconfig, namespace=NAMESPACE)
    try:
        files = config.render(chart, merge(BASE_VALUES, {}), name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
    finally:
        config.close()
    return Rendered(merge(BASE_VALUES, {}), files, split(files))


def test_upgrade_keeps_the_certificate_that_lookup_finds(
    chart: Any, renders: dict[str, Rendered], api_server: StubAPIServer
) -> None:
    installed = renders["default"]
    stored = installed.get("Secret", f"{RELEASE}-tls")
    upgraded = upgrade_render(chart, api_server, stored)
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-tls" in api_server.requests
    assert upgraded.get("Secret", f"{RELEASE}-tls")["data"] == stored["data"]
    assert upgraded.get("Secret", f"{RELEASE}-tls")["metadata"]["annotations"] == stored["metadata"]["annotations"]
    assert (upgraded.pod["metadata"]["annotations"]["checksum/tls"]
            == installed.pod["metadata"]["annotations"]["checksum/tls"])  # no roll


def test_upgrade_renews_an_expiring_or_incomplete_certificate(
    chart: Any, renders: dict[str, Rendered], api_server: StubAPIServer
) -> None:
    stored = copy.deepcopy(renders["default"].get("Secret", f"{RELEASE}-tls"))
    expiring = copy.deepcopy(stored)
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10)
    expiring["metadata"]["annotations"]["signgate.dev/tls-not-after"] = str(int(soon.timestamp()))
    incomplete = copy.deepcopy(stored)
    del incomplete["data"]["ca.crt"]
    for case in (expiring, incomplete, None):
        upgraded = upgrade_render(chart, api_server, case)
        secret = upgraded.get("Secret", f"{RELEASE}-tls")
        assert secret["data"]["tls.crt"] != stored["data"]["tls.crt"]
        assert (upgraded.pod["metadata"]["annotations"]["checksum/tls"]
                == hashlib.sha256(secret["data"]["tls.crt"].encode()).hexdigest())
        tls_material(upgraded)[0].verify_directly_issued_by(tls_material(upgraded)[2])


def test_cert_manager_issues_the_service_names(renders: dict[str, Rendered]) -> None:
    r = renders["cert-manager"]
    assert r.maybe("Secret", f"{RELEASE}-tls") is None
    serving = r.get("Certificate", f"{RELEASE}-tls")
    assert sorted(serving["spec"]["dnsNames"]) == sorted(SERVICE_DNS_NAMES)
    [volume] = [v for v in r.pod["spec"]["volumes"] if v["name"] == "validating-certs"]
    assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
    # The chain: self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
    ca_issuer = r.get("Issuer", serving["spec"]["issuerRef"]["name"])
    ca_cert = r.get("Certificate", f"{RELEASE}-ca")
    assert ca_cert["spec"]["isCA"] is True
    assert ca_issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"]
    assert r.get("Issuer", ca_cert["spec"]["issuerRef"]["name"])["spec"] == {"selfSigned": {}}
    assert "server auth" in serving["spec"]["usages"]
    assert "checksum/tls" not in r.pod["metadata"]["annotations"]
    assert r.deployment["metadata"]["annotations"]["secret.reloader.stakater.com/reload"] == serving["spec"]["secretName"]
    assert "restart the pods" in r.notes

    external = renders["cert-manager-issuer"]
    assert not external.all("Issuer")
    [certificate] = external.all("Certificate")
    assert certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_existing_tls_secret(renders: dict[str, Rendered]) -> None:
    r = renders["tls-existing-secret"]
    assert not r.all("Certificate") and r.maybe("Secret", f"{RELEASE}-tls") is None
    [volume] = [v for v in r.pod["spec"]["volumes"] if v["name"] == "validating-certs"]
    assert volume["secret"]["secretName"] == "webhook-tls"


# ---- failures at install time ---------------------------------------------------------------------------


SCHEMA_VIOLATIONS = {
    "unknown top-level value": {"replicas": 3},
    "typo in config": {"config": {"webhook": {"timeoutSecond": 5}}},
    "timeout above 30": {"config": {"webhook": {"timeoutSeconds": 31}}},
    "unknown mode": {"config": {"mode": "audit"}},
    "allowNetworks as a string": {"config": {"registries": {"allowNetworks": "10.0.0.0/8"}}},
    "unknown rule field": {"config": {"policy": [{"images": "**", "key": ["default"]}]}},
    "empty policy": {"config": {"policy": []}},
    "bad action": {"config": {"policy": [{"images": "**", "action": "permit"}]}},
    "zero replicas": {"replicaCount": 0},
    "string replicas": {"replicaCount": "2"},
    "bad tls source": {"tls": {"source": "letsencrypt"}},
    "not a PEM key": {"keys": {"inline": {"default": "ssh-ed25519 AAAA"}}},
    "bad hash algorithm": {"keys": {"hashAlgorithms": {"default": "md5"}}},
    "bad digest": {"image": {"digest": "latest"}},
    "two-part binding name": {"config": {"webhook": {"name": "signgate.dev"}}},
    "bad anti-affinity": {"podAntiAffinity": "always"},
    "zero verifier workers": {"verifier": {"maxWorkers": 0}},
    "too many verifier workers": {"verifier": {"maxWorkers": 257}},
    "string verifier workers": {"verifier": {"maxWorkers": "8"}},
    "fractional verifier workers": {"verifier": {"maxWorkers": 2.5}},
    "unknown verifier value": {"verifier": {"socket": "/run/other.sock"}},
    "verifier typo": {"verifier": {"enable": False}},
    "unknown verifier resources value": {"verifier": {"resources": {"request": {"cpu": "1"}}}},
    "string verifier switch": {"verifier": {"enabled": "false"}},
    "unknown identity field": {"config": {"identities": {"ci": {"issuer": "https://i", "subject": "s", "subjct": "x"}}}},
    "identity with issuer and issuerRegExp": {
        "config": {"identities": {"ci": {"issuer": "https://i", "issuerRegExp": "^https://", "subject": "s"}}}},
    "identity without a subject": {"config": {"identities": {"ci": {"issuer": "https://i"}}}},
    "identity field not a string": {"config": {"identities": {"ci": {"issuer": "https://i", "subject": "s",
                                                                      "githubWorkflowTrigger": ["push"]}}}},
    "unknown trustedRoots value": {"trustedRoots": {"existingSecret": "roots"}},
    "trusted root not JSON": {"trustedRoots": {"inline": {"public-good": "-----BEGIN CERTIFICATE-----"}}},
    "CA bundle not PEM": {"certificateAuthorities": {"inline": {"corp": "{}"}}},
    "relative trust root path in config": {"config": {"trustedRoots": {"public-good": "trusted_root.json"}}},
    "unknown certificateAuthorities value": {"certificateAuthorities": {"inline": {}, "existingSecret": "ca"}},
}


@pytest.mark.parametrize("case", list(SCHEMA_VIOLATIONS))
def test_schema_rejects_bad_values(chart: Any, case: str) -> None:
    values = merge(BASE_VALUES, SCHEMA_VIOLATIONS[case])
    with pytest.raises(helm.HelmError) as info:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert "schema" in str(info.value).lower(), str(info.value)


def test_the_defaults_and_base_values_pass_the_schema(chart: Any) -> None:
    chart.validate_schema(merge(BASE_VALUES, {}))
    for override in OPTIONS.values():
        chart.validate_schema(merge(BASE_VALUES, override))


TEMPLATE_FAILURES = {
    "no key": ({"keys": {"inline": None}}, "no public key configured"),
    "no image": ({"image": {"repository": ""}}, "image.repository is required"),
    "two key sources": ({"keys": {"existingSecret": "cosign-keys", "names": ["default"]}}, "use one source of keys"),
    "names without an existing object": ({"keys": {"inline": None, "names": ["default"]}}, "keys.names is set"),
    "existing object without names": ({"keys": {"inline": None, "existingSecret": "cosign-keys"}}, "keys.names is required"),
    "rule names an unknown key": (
        {"config": {"policy": [{"images": "**", "keys": ["release"]}]}}, 'names key "release", which is not configured'),
    "default key missing": (
        {"keys": {"inline": Replace({"ci": KEY_PEM})}}, 'names key "default"'),
    "hash algorithm for an unknown key": ({"keys": {"hashAlgorithms": {"ci": "sha256"}}}, "hashAlgorithms.ci"),
    "two CA sources": ({"registryCA": {"existingConfigMap": "a", "existingSecret": "b"}}, "not both"),
    "existing TLS secret unnamed": ({"tls": {"source": "existingSecret"}}, "tls.existingSecret is required"),
    "rule names an unknown identity": (
        {"config": {"policy": [{"images": "**", "identities": ["release"], "trustedRoot": "public-good"}]},
         "trustedRoots": {"inline": {"public-good": TRUSTED_ROOT}}}, 'names identity "release", which is not in config.identities'),
    "rule names an unknown trusted root": (
        {"config": {"identities": {"release": RELEASE_IDENTITY},
                    "policy": [{"images": "**", "identities": ["release"], "trustedRoot": "public-good"}]}},
        'names trustedRoot "public-good", which is neither in trustedRoots'),
    "rule names an unknown CA bundle": (
        {"config": {"identities": {"release": RELEASE_IDENTITY},
                    "policy": [{"images": "**", "identities": ["release"], "certificateAuthority": "corp", "ignoreSct": True}]}},
        'names certificateAuthority "corp"'),
    "trust root named twice": (
        {"trustedRoots": {"inline": {"public-good": TRUSTED_ROOT}},
         "config": {"trustedRoots": {"public-good": "/etc/extra/trusted_root.json"}}}, "name it once"),
    "two trust root sources": (
        {"trustedRoots": {"inline": {"public-good": TRUSTED_ROOT}, "existingConfigMap": "sigstore-trust",
                          "names": ["public-good"]}}, "trustedRoots: use one source"),
    "trust ConfigMap without names": (
        {"certificateAuthorities": {"existingConfigMap": "sigstore-trust"}}, "certificateAuthorities.names is required"),
    "keyless rule beside a key rule, no key": (
        {"keys": {"inline": None}, "trustedRoots": {"inline": {"public-good": TRUSTED_ROOT}},
         "config": {"identities": {"release": RELEASE_IDENTITY},
                    "policy": [{"images": "ghcr.io/**", "identities": ["release"], "trustedRoot": "public-good"},
                               {"images": "**"}]}}, "config.policy[1] (**) needs one"),
}


@pytest.mark.parametrize("case", list(TEMPLATE_FAILURES))
def test_inconsistent_values_fail_with_a_clear_message(chart: Any, case: str) -> None:
    override, message = TEMPLATE_FAILURES[case]
    with pytest.raises(helm.HelmError) as info:
        chart.render(merge(BASE_VALUES, override), name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert message in str(info.value)


def test_chart_defaults_alone_ask_for_the_image_and_a_key(chart: Any) -> None:
    with pytest.raises(helm.HelmError) as info:
        chart.render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert "image.repository is required" in str(info.value) or "no public key configured" in str(info.value)


def test_schema_covers_every_value(chart: Any) -> None:
    """Every key in values.yaml is described by values.schema.json (and nothing else is allowed)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'top level'}: additionalProperties is not false"
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(child, node["properties"][key], f"{path}.{key}" if path else key)

    walk(defaults, schema, "")


def test_notes_explain_opt_in_and_a_test_with_an_unsigned_image(renders: dict[str, Rendered]) -> None:
    notes = renders["default"].notes
    assert "kubectl label namespace signgate-demo signed=required" in notes
    assert "unsigned" in notes and "denied the request" in notes
    assert f"{RELEASE}-hooks" in notes
    assert "trustedRoots" not in notes
    keyless = renders["keyless"].notes
    assert f"trustedRoots (public-good) are mounted from the ConfigMap {RELEASE}-trusted-roots" in keyless
    assert f"certificateAuthorities (corp-ca) are mounted from the ConfigMap {RELEASE}-certificate-authorities" in keyless


# ---- checkov ----------------------------------------------------------------------------------------


CHECKOV_VENV = REPO / ".venv" / "checkov"
# Every skip, and why. Each is also written next to the resource as a checkov.io/skip annotation.
EXPECTED_SKIPS = {
    "CKV_K8S_15",  # pull policy IfNotPresent: tags are immutable releases, or the image is pinned by digest
    "CKV_K8S_38",  # service account token: shell-operator and the cleanup Job call the API server
    "CKV_K8S_43",  # digest: optional (image.digest); the default is the appVersion tag
    "CKV_K8S_155",  # webhook configurations: shell-operator registers its own; the Job deletes it
    "CKV_K8S_9",  # readiness: the verifier only accelerates and must not take the pod out of the endpoints
}


def checkov_binary() -> Path:
    for candidate in (os.environ.get("SIGNGATE_CHECKOV"), CHECKOV_VENV / "bin" / "checkov", shutil.which("checkov")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    # checkov cannot share the test venv (it pins packaging<24; pytest needs >=24): give it its own.
    subprocess.run([sys.executable, "-m", "venv", str(CHECKOV_VENV)], check=True)
    subprocess.run(
        [str(CHECKOV_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REPO / "requirements-checkov.txt")],
        check=True,
    )
    return CHECKOV_VENV / "bin" / "checkov"


@pytest.fixture(scope="module")
def checkov_report(renders: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("checkov")
    args = [str(checkov_binary())]
    for name, r in renders.items():
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(r.docs, sort_keys=False))
        args += ["-f", str(path)]
    # Without --quiet: the JSON report then lists the skipped checks with their reasons too.
    args += ["--framework", "kubernetes", "--compact", "--skip-download", "--output", "json"]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=directory)
    assert completed.stdout.strip(), completed.stderr
    report = json.loads(completed.stdout)
    return report if isinstance(report, list) else [report]


def test_checkov_finds_nothing_unexplained(checkov_report: list[dict[str, Any]]) -> None:
    results = [r for r in checkov_report if r.get("check_type") == "kubernetes"]
    assert results, checkov_report
    failed = [c for r in results for c in r["results"]["failed_checks"]]
    assert not failed, "\n".join(f"{c['check_id']} {c['check_name']} {c['resource']} ({c['file_path']})" for c in failed)
    passed = sum(r["summary"]["passed"] for r in results)
    assert passed > 100
    skipped = [c for r in results for c in r["results"]["skipped_checks"]]
    assert {c["check_id"] for c in skipped} == EXPECTED_SKIPS
    for check in skipped:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason.strip()) > 20, f"{check['check_id']} is skipped without a reason"


def test_install_guide_matches_the_chart(renders: dict[str, Rendered]) -> None:
    """docs/install.md names the objects a release called `signgate` really creates."""
    guide = (REPO / "docs" / "install.md").read_text()
    r = renders["default"]
    object_name = r.env_value("VALIDATING_WEBHOOK_CONFIGURATION_NAME") + "-hooks"
    assert f"kubectl delete validatingwebhookconfiguration {object_name}" in guide
    assert f"kubectl get validatingwebhookconfiguration {object_name}" in guide
    assert "--set-file keys.inline.default=cosign.pub" in guide
    assert f"deployment/{r.deployment['metadata']['name']}" in guide
    for value in ("tls.source", "tls.certManager.issuerRef", "tls.existingSecret", "keys.existingSecret",
                  "registryAuth.existingSecret", "registryCA.existingConfigMap", "metrics.serviceMonitor.enabled",
                  "verifier.enabled", "verifier.maxWorkers", "verifier.resources"):
        section = yaml.safe_load((CHART / "values.yaml").read_text())
        for part in value.split("."):
            assert part in section, f"{value} is documented but is not a value"
            section = section[part]
    dockerfile = (REPO / "image" / "Dockerfile").read_text()
    assert re.search(r"ARG SHELL_OPERATOR_TAG=(\S+)", dockerfile).group(1) in guide


# ---- pull secrets (registries.pullSecrets: pod) ----------------------------------------------------


def test_pull_secret_rbac_only_when_turned_on(chart: Any, renders: dict[str, Rendered]) -> None:
    for name, r in renders.items():
        assert r.maybe("ClusterRole", f"{RELEASE}-pull-secrets") is None, name
        assert "Pull secrets" not in r.notes, name
    r = render(chart, merge(BASE_VALUES, {"config": {"registries": {"pullSecrets": "pod"}}}))
    role = r.get("ClusterRole", f"{RELEASE}-pull-secrets")
    # Only what shell-operator's informers use: list and watch, no get, no write.
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces", "secrets", "serviceaccounts"], "verbs": ["list", "watch"]}
    ]
    binding = r.get("ClusterRoleBinding", f"{RELEASE}-pull-secrets")
    assert binding["roleRef"]["name"] == f"{RELEASE}-pull-secrets"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": r.pod["spec"]["serviceAccountName"], "namespace": NAMESPACE}
    ]
    # The webhook's own role is unchanged.
    assert set(rules_by_resource(r.get("ClusterRole", RELEASE))) == {"validatingwebhookconfigurations"}
    assert r.config["registries"]["pullSecrets"] == "pod"
    assert "Pull secrets (config.registries.pullSecrets: pod)" in r.notes
    assert f"{RELEASE}-pull-secrets" in r.notes
    for version in KUBE_VERSIONS:
        for doc in (role, binding):
            kubernetes_validate.validate(doc, version, strict=True)


def test_pull_secrets_value_is_checked_by_the_schema(chart: Any) -> None:
    with pytest.raises(Exception) as caught:
        render(chart, merge(BASE_VALUES, {"config": {"registries": {"pullSecrets": "namespace"}}}))
    assert "pullSecrets" in str(caught.value)


def test_pull_secret_bindings_from_the_rendered_configuration(chart: Any, tmp_path: Path) -> None:
    r = render(chart, merge(BASE_VALUES, {"config": {"registries": {"pullSecrets": "pod"}}}))
    path = tmp_path / "config.json"
    path.write_text(r.config_text)
    config = parse_config(path.read_bytes(), str(path), {"SIGNGATE_NAMESPACE": NAMESPACE})
    from signgate.hook import binding_config

    output = binding_config(config)
    kinds = sorted(b["kind"] for b in output["kubernetes"])
    assert kinds == ["Secret", "Secret", "ServiceAccount"]
    selector = output["kubernetesValidating"][0]["namespace"]
    assert all(b["namespace"] == selector for b in output["kubernetes"])
    assert selector["labelSelector"]["matchLabels"] == {"signed": "required"}
