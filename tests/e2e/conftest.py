"""Fixtures of the e2e harness: one control plane and one signgate pod per test run, shared by
every e2e test (each test works in namespaces of its own).

Start order: machine lock, PKI, etcd, kube-apiserver, the webhook Service, the forwarder on 443,
the verifier service, shell-operator (ready once it serves /healthz and has registered its webhook
configuration). Teardown stops them in reverse and removes the temp directory.
"""

from __future__ import annotations

import base64
import itertools
import os
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from e2e import cluster
from support import tools
from support.oci import RegistryHTTP
from support.registry import Registry
from support.signer import TestKey, generate_key

BINDING = "image-signatures.signgate.dev"
# With a pinDigest rule, Pods also pass the mutating binding, which the API server calls first and
# which verifies exactly as the validating one does: a Pod is denied under this name.
MUTATING_BINDING = "image-digests.signgate.dev"
SELECTOR_LABEL = ("signed", "required")


@pytest.fixture(scope="session")
def e2e_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: the sandbox user must traverse it, and it is removed at the end.
    directory = Path(tempfile.mkdtemp(prefix="signgate-e2e-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def unavailable(reason: str) -> None:
    """Outside CI a missing prerequisite skips with its reason; under CI=true it fails."""
    if tools.in_ci():
        pytest.fail(reason + " (CI=true: a missing prerequisite is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_host() -> None:
    """What the image's sandbox and the Service's port need from this machine."""
    if os.geteuid() != 0:
        unavailable("the e2e harness runs as root: it binds 127.0.0.1:443 (the Service) and runs "
                    "shell-operator as uid 65532")
    if cluster.bwrap_available() is None:
        unavailable("bubblewrap is not installed (apt-get install bubblewrap): shell-operator and the hook "
                    "run in it as the image runs them (uid 65532, read-only root)")
    if shutil.which("setpriv") is None:
        unavailable("setpriv (util-linux) is missing: it drops to uid 65532 before bwrap")


@pytest.fixture(scope="session")
def control_plane(e2e_dir: Path) -> Iterator[ControlPlane]:
    binaries = {name: tools.require(name) for name in ("etcd", "kube-apiserver", "kubectl")}
    lock = cluster.MachineLock()
    lock.acquire()
    started: list = []
    try:
        pki = cluster.Pki(e2e_dir / "pki")
        etcd = cluster.Etcd(binaries["etcd"], e2e_dir / "etcd")
        (e2e_dir / "etcd").mkdir()
        started.append(etcd.start())
        (e2e_dir / "apiserver").mkdir()
        apiserver = cluster.ApiServer(binaries["kube-apiserver"], e2e_dir / "apiserver", pki, etcd)
        started.append(apiserver.start())
        kubeconfig = cluster.write_kubeconfig(e2e_dir / "kubeconfig", apiserver.url, pki)
        kubectl = cluster.Kubectl(binaries["kubectl"], kubeconfig)
        yield ControlPlane(pki, etcd, apiserver, kubectl)
    finally:
        for component in reversed(started):
            component.stop()
        lock.release()


class ControlPlane:
    def __init__(self, pki: cluster.Pki, etcd: cluster.Etcd, apiserver: cluster.ApiServer,
                 kubectl: cluster.Kubectl) -> None:
        self.pki, self.etcd, self.apiserver, self.kubectl = pki, etcd, apiserver, kubectl


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> cluster.Kubectl:
    return control_plane.kubectl


@pytest.fixture(scope="session")
def plain_http(registry: Registry) -> Iterator[RegistryHTTP]:
    client = RegistryHTTP(registry)
    yield client
    client.close()


@pytest.fixture(scope="session")
def tls_http(tls_registry: Registry) -> Iterator[RegistryHTTP]:
    client = RegistryHTTP(tls_registry)
    yield client
    client.close()


@pytest.fixture(scope="session")
def stalling_registry() -> Iterator[cluster.StallingServer]:
    server = cluster.StallingServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def signing_key(e2e_dir: Path) -> TestKey:
    """The key signgate trusts (`default`)."""
    return generate_key("ecdsa-p256", e2e_dir / "keys", "trusted")


@pytest.fixture(scope="session")
def other_key(e2e_dir: Path) -> TestKey:
    return generate_key("ecdsa-p256", e2e_dir / "keys", "other")


def signgate_config(plain: str, stall: str, tls: str) -> dict:
    """What the chart renders into config.json (chart/values.yaml defaults, registry credentials and
    CA from existing objects), with extra rules: a warn-mode path and a pinDigest path on the
    plain registry, and the TLS registry named by a rule (a loopback endpoint is contacted only when
    the configuration names it). test_e2e_harness.py renders the chart and compares."""
    return {
        "webhook": {"name": BINDING, "namespaceSelector": {"matchLabels": dict([SELECTOR_LABEL])},
                    "timeoutSeconds": 10, "failurePolicy": "Fail", "excludeNamespaces": [],
                    "signgateNamespace": cluster.RELEASE_NAMESPACE},
        "registries": {"insecure": [plain, stall], "allowNetworks": [], "pullSecrets": "none",
                       "auth": cluster.REGISTRY_AUTH_FILE, "caBundle": cluster.REGISTRY_CA_FILE},
        "limits": {}, "cache": {}, "mode": "enforce", "denyLatest": False, "requireDigest": False,
        "unmatchedImages": "deny",
        "keys": {"default": f"{cluster.KEYS_DIR}/default.pub"},
        "identities": {},  # the chart's default: no certificate signers
        "policy": [
            {"images": "**", "keys": ["default"]},
            {"images": f"{tls}/**", "keys": ["default"]},
            {"images": f"{plain}/warn/**", "keys": ["default"], "mode": "warn"},
            {"images": f"{plain}/pin/**", "keys": ["default"], "pinDigest": True},
        ],
    }


@pytest.fixture(scope="session")
def signgate(control_plane: ControlPlane, e2e_dir: Path, registry: Registry, tls_registry: Registry,
             stalling_registry: cluster.StallingServer, signing_key: TestKey) -> Iterator[cluster.SigngatePod]:
    shell_operator = tools.require("shell-operator")
    require_host()
    venv = cluster.ensure_venv(cluster.cache_root())
    auth = e2e_dir / "dockerconfig.json"
    token = base64.b64encode(f"{tls_registry.username}:{tls_registry.password}".encode()).decode()
    auth.write_text(json.dumps({"auths": {tls_registry.host: {"auth": token}}}))
    assert tls_registry.ca_path is not None
    pod = cluster.SigngatePod(
        e2e_dir / "signgate", shell_operator=shell_operator, venv=venv, kubectl=control_plane.kubectl,
        apiserver=control_plane.apiserver, config=signgate_config(registry.host, stalling_registry.host, tls_registry.host),
        keys={"default": signing_key.pub_path}, registry_auth=auth, registry_ca=tls_registry.ca_path)
    try:
        pod.create_service()
        pod.start_forwarder()
        pod.start()
        yield pod
    finally:
        pod.stop()


@pytest.fixture
def operator(signgate: cluster.SigngatePod) -> cluster.SigngatePod:
    """The signgate pod with shell-operator running (a test that stopped it leaves it stopped;
    the next test that needs it starts it again, as the Deployment would)."""
    if signgate.operator is None or not signgate.operator.running:
        signgate.start_operator()
    return signgate


_namespace_counter = itertools.count()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl: cluster.Kubectl) -> Callable[..., str]:
    """namespace(labelled=True) -> a new namespace for this test, opted in to signgate or not."""

    def make(labelled: bool = True) -> str:
        stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
        name = f"{stem}-{next(_namespace_counter)}"
        kubectl.run("create", "namespace", name, check=True)
        if labelled:
            kubectl.run("label", "namespace", name, "=".join(SELECTOR_LABEL), check=True)
        return name

    return make


# -- cosign ------------------------------------------------------------------------------------------


class Cosign:
    """A real cosign binary holding the trusted key (imported with `cosign import-key-pair`)."""

    def __init__(self, binary: Path, directory: Path, key: TestKey) -> None:
        self.binary, self.directory = binary, directory
        directory.mkdir(parents=True, exist_ok=True)
        self.env = cluster.clean_environment(COSIGN_PASSWORD="e2e", HOME=str(directory),
                                             DOCKER_CONFIG=str(directory / "docker"))
        done = self.run("import-key-pair", "--key", str(key.key_path), "--output-key-prefix",
                        str(directory / "import"), "--yes")
        if done.returncode != 0 or not (directory / "import.key").exists():
            raise cluster.HarnessError(f"cosign import-key-pair failed: {done.stdout}{done.stderr}")
        self.key = directory / "import.key"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=self.env,
                              timeout=120, cwd=self.directory)

    def sign(self, reference: str, *extra: str) -> subprocess.CompletedProcess[str]:
        done = self.run("sign", "--key", str(self.key), "--tlog-upload=false", "--allow-http-registry",
                        "--allow-insecure-registry", "--yes", *extra, reference)
        if done.returncode != 0:
            raise AssertionError(f"cosign sign {reference} failed: {done.stdout}{done.stderr}")
        return done


@pytest.fixture(scope="session")
def cosign_v3(e2e_dir: Path, signing_key: TestKey) -> Cosign:
    return Cosign(tools.require("cosign-v3"), e2e_dir / "cosign-v3", signing_key)


@pytest.fixture(scope="session")
def cosign_v2(e2e_dir: Path, signing_key: TestKey) -> Cosign:
    return Cosign(tools.require("cosign-v2"), e2e_dir / "cosign-v2", signing_key)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failing e2e case shows what shell-operator and the verifier logged last."""
    outcome = yield
    report = outcome.get_result()
    pod = getattr(item, "funcargs", {}).get("operator")
    if report.when == "call" and report.failed and isinstance(pod, cluster.SigngatePod):
        for process in (pod.operator, pod.verifier):
            if process is not None:
                report.sections.append((f"{process.name} log (last lines)", process.log_tail(30)))
