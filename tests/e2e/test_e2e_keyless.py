"""A keyless-style signature through a real control plane (issue 16): kube-apiserver calls the
webhook shell-operator registered, and the hook (or the verifier container) checks a certificate
from a Fulcio-shaped test CA, its embedded SCT from a test CT log and the Rekor SET from a test log,
against a trusted_root.json mounted where the chart mounts trust roots.

The signgate pod here runs with its own configuration: identities and a trusted root instead of
keys. Its trust root is a read-only volume both containers see, as the chart's ConfigMap is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from e2e import cluster
from e2e.conftest import BINDING, SELECTOR_LABEL
from integration.test_keyless import GITHUB_ISSUER, IDENTITY, WORKFLOW, sign_legacy_keyless
from support import tools
from support.fulcio import new_ct_log, new_fulcio, trusted_root
from support.oci import PushedImage, RegistryHTTP, push_image
from support.signer import TestKey, generate_key
from support.tlog import new_log

pytestmark = pytest.mark.e2e

# The chart's mount path for trustedRoots (chart/templates/_helpers.tpl, signgate.paths).
TRUSTED_ROOTS_DIR = "/etc/signgate/trusted-roots"
# Another release workflow: the identity the strict rule requires and the signature does not have.
OTHER_IDENTITY = {"issuer": GITHUB_ISSUER,
                  "subjectRegExp": r"^https://github\.com/org/other/\.github/workflows/release\.yml@refs/tags/"}


class KeylessPod(cluster.SigngatePod):
    """The signgate pod with one more ConfigMap volume: the trusted roots, mounted read-only in
    both containers (the verifier service's workers read the same paths as the hook)."""

    def __init__(self, directory: Path, *, trusted_roots: dict[str, Path], **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.trust_dir = directory / "volumes" / "trusted-roots"
        self.trust_dir.mkdir()
        for name, path in trusted_roots.items():
            target = self.trust_dir / f"{name}.json"
            shutil.copy(path, target)
            target.chmod(0o444)
        for path in (self.trust_dir, *self.trust_dir.iterdir()):
            os.chown(path, cluster.SANDBOX_UID, cluster.SANDBOX_UID)

    def _shared_mounts(self) -> list[tuple[str, str, bool]]:
        return [*super()._shared_mounts(), (str(self.trust_dir), TRUSTED_ROOTS_DIR, False)]


@pytest.fixture(scope="module")
def pki(e2e_dir: Path) -> dict[str, Any]:
    directory = e2e_dir / "keyless-pki"
    fulcio, ct, log = new_fulcio(), new_ct_log(), new_log(directory, "rekor.test", "v1")
    root = trusted_root(directory / "trusted_root.json", fulcio, [ct], [log])
    return {"fulcio": fulcio, "ct": ct, "log": log, "root": root, "dir": directory}


@pytest.fixture(scope="module")
def ephemeral_key(e2e_dir: Path) -> TestKey:
    """The key a keyless signer would hold for one signing: only its certificate names it."""
    return generate_key("ecdsa-p256", e2e_dir / "keyless-pki", "ephemeral")


def keyless_config(plain: str) -> dict[str, Any]:
    return {
        "webhook": {"name": BINDING, "namespaceSelector": {"matchLabels": dict([SELECTOR_LABEL])},
                    "timeoutSeconds": 10, "failurePolicy": "Fail", "signgateNamespace": cluster.RELEASE_NAMESPACE},
        "registries": {"insecure": [plain]},
        # A key is configured but no rule names it: an identity rule must not fall back to it.
        "keys": {"default": f"{cluster.KEYS_DIR}/default.pub"},
        "identities": {"release": dict(IDENTITY), "other-release": dict(OTHER_IDENTITY)},
        "trustedRoots": {"test-good": f"{TRUSTED_ROOTS_DIR}/test-good.json"},
        "policy": [
            {"images": f"{plain}/keyless/**", "identities": ["release"], "trustedRoot": "test-good", "tlog": "required"},
            {"images": f"{plain}/keyless-strict/**", "identities": ["other-release"], "trustedRoot": "test-good",
             "tlog": "required"},
        ],
        "unmatchedImages": "deny",
    }


@pytest.fixture(scope="module")
def keyless_pod(signgate: cluster.SigngatePod, control_plane: Any, e2e_dir: Path, registry: Any,
                signing_key: TestKey, pki: dict[str, Any]) -> Iterator[cluster.SigngatePod]:
    # One webhook behind the one Service: the session's shell-operator makes way for this one
    # (the `operator` fixture starts it again for the cases that need it).
    signgate.stop_operator()
    pod = KeylessPod(
        e2e_dir / "signgate-keyless", trusted_roots={"test-good": pki["root"]},
        shell_operator=tools.require("shell-operator"), venv=cluster.ensure_venv(cluster.cache_root()),
        kubectl=control_plane.kubectl, apiserver=control_plane.apiserver, config=keyless_config(registry.host),
        keys={"default": signing_key.pub_path})
    pod.webhook_port = signgate.webhook_port  # where the forwarder (the Service) sends calls
    try:
        pod.start()
        yield pod
    finally:
        pod.stop()
        if pod.operator is not None:
            cluster.wait_ports_free([pod.webhook_port, pod.metrics_port], "the keyless shell-operator")


@pytest.fixture
def keyless_image(plain_http: RegistryHTTP, ephemeral_key: TestKey, pki: dict[str, Any]) -> Callable[..., PushedImage]:
    """keyless_image(repo, content) -> an image signed in cosign's legacy keyless layout: the
    certificate and chain annotations, the SCT inside the certificate, the SET in the bundle."""

    def make(repo: str, content: str) -> PushedImage:
        image = push_image(plain_http, repo, "v1", content=content)
        certificate = pki["fulcio"].issue(ephemeral_key.public_key, ct_log=pki["ct"])
        sign_legacy_keyless(plain_http, repo, image, ephemeral_key, certificate,
                            pki["fulcio"].chain_pem.decode(), pki["log"])
        return image

    return make


def pod_manifest(namespace: str, name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "app", "image": image}]}}


def deployment_manifest(namespace: str, name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


def create(kubectl: cluster.Kubectl, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl.run("create", "-f", "-", input=json.dumps(obj))


def assert_denied(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0, f"expected a denial, but kubectl succeeded: {done.stdout}{done.stderr}"
    assert f'admission webhook "{BINDING}" denied the request: signgate:' in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, f"{fragment!r} missing from the denial: {done.stderr}"


# ---- the cases -------------------------------------------------------------------------------------


def test_keyless_signed_deployment_and_pod_are_admitted(keyless_pod, namespace, kubectl, keyless_image) -> None:
    image = keyless_image("keyless/app", "keyless-admitted")
    ns = namespace()
    done = create(kubectl, deployment_manifest(ns, "app", image.reference))
    assert done.returncode == 0 and "deployment.apps/app created" in done.stdout, f"{done.stdout}{done.stderr}"
    done = create(kubectl, pod_manifest(ns, "app", image.reference))
    assert done.returncode == 0 and "pod/app created" in done.stdout, f"{done.stdout}{done.stderr}"
    # The first call verified on the full path under the identity rule; the second may be
    # answered by the fast path (a cached pass, logged without the rule).
    images = [item for entry in keyless_pod.operator_log_entries()
              if entry.get("msg") == "signgate decision" and entry.get("hook_namespace") == ns
              for item in entry.get("hook_images") or []]
    assert images and {item["verdict"] for item in images} == {"pass"}, images
    verified = [item for item in images if "rule" in item]
    assert verified and {item["rule"] for item in verified} == {f"{image.host}/keyless/**"}, images
    # It counted for the identity `release`, not for the configured key `default`.
    assert all(item["keys"] == ["release"] for item in verified), images


def test_same_image_under_a_rule_requiring_another_identity_is_denied(
    keyless_pod, namespace, kubectl, keyless_image
) -> None:
    # The same image content (one digest) in two repositories: one under the `release` rule, one
    # under the rule that requires `other-release`. Each repository carries its own signature.
    admitted = keyless_image("keyless/same", "keyless-same-image")
    strict = keyless_image("keyless-strict/same", "keyless-same-image")
    assert admitted.digest == strict.digest
    ns = namespace()
    done = create(kubectl, pod_manifest(ns, "released", admitted.reference))
    assert done.returncode == 0 and "pod/released created" in done.stdout, f"{done.stdout}{done.stderr}"
    denied = create(kubectl, pod_manifest(ns, "strict", strict.reference))
    assert_denied(denied, f'container "app" image "{strict.reference}"',
                  f"signed by {WORKFLOW} (issuer {GITHUB_ISSUER}), but the rule requires subject matching "
                  f"{OTHER_IDENTITY['subjectRegExp']}")
    assert kubectl.run("get", "pod", "strict", "-n", ns).returncode != 0  # nothing was stored
