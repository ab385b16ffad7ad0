"""`registries.pullSecrets: pod` through the hook's contract, against real registries.

The hook runs as shell-operator runs it (contract.py), with binding contexts that carry the
snapshots the `kubernetes` bindings of `--config` produce (pullsecrets.snapshot_bindings). The
private registry is Debian's docker-registry over TLS with htpasswd (tester/s3cret); a second,
open registry shows that other images of the same pod are unaffected.
"""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from support.contract import BINDING, HookRun, admission_request, run_contexts, workload
from support.oci import PushedImage, push_image
from support.signer import sign_legacy

from signgate.pullsecrets import DOCKERCFG_BINDING, DOCKERCONFIGJSON_BINDING, SERVICE_ACCOUNT_BINDING

pytestmark = pytest.mark.registry

_numbers = itertools.count()
PASSWORD = "s3cret"  # the tls_htpasswd registry's (tests/support/registry.py)


def dockerconfigjson(auths: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps({"auths": auths}).encode()).decode()


def basic(password: str, user: str = "tester") -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def secret_item(namespace: str, name: str, data: Any, binding: str = DOCKERCONFIGJSON_BINDING) -> tuple[str, dict[str, Any]]:
    return binding, {"filterResult": {"namespace": namespace, "name": name, "data": data}}


def account_item(namespace: str, name: str, secrets: list[str]) -> tuple[str, dict[str, Any]]:
    return SERVICE_ACCOUNT_BINDING, {"filterResult": {"namespace": namespace, "name": name, "imagePullSecrets": secrets}}


def request(namespace: str, images: list[str], *, pull: list[str] | None = None, kind: str = "Pod",
            service_account: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}
    if pull is not None:
        spec["imagePullSecrets"] = [{"name": name} for name in pull]
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    req = admission_request(workload(kind, spec))
    req["namespace"] = namespace
    req["object"]["metadata"]["namespace"] = namespace
    return req


def run(config: Path, req: dict[str, Any], *items: tuple[str, dict[str, Any]], env: dict[str, str] | None = None) -> HookRun:
    snapshots: dict[str, list[Any]] = {DOCKERCONFIGJSON_BINDING: [], DOCKERCFG_BINDING: [], SERVICE_ACCOUNT_BINDING: []}
    for binding, item in items:
        snapshots[binding].append(item)
    context = [{"binding": BINDING, "type": "Validating", "snapshots": snapshots, "review": {"request": req}}]
    return run_contexts(config, context, env=env)


@pytest.fixture
def write_config(tmp_path: Path, keys: Any, tls_registry: Any, registry: Any) -> Callable[..., Path]:
    def write(*, auth: Path | None = None, pull_secrets: str = "pod") -> Path:
        registries: dict[str, Any] = {
            "caBundle": str(tls_registry.ca_path),
            "insecure": [registry.host],
            "pullSecrets": pull_secrets,
        }
        if auth is not None:
            registries["auth"] = str(auth)
        data = {
            "keys": {"default": str(keys["ecdsa-p256"].pub_path)},
            "registries": registries,
            # Loopback registries are contacted only when a rule names them.
            "policy": [{"images": f"{tls_registry.host}/**"}, {"images": f"{registry.host}/**"}],
        }
        path = tmp_path / f"config-{next(_numbers)}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def private_image(tls_registry: Any, http_for: Any, keys: Any) -> Callable[[str], PushedImage]:
    client = http_for(tls_registry)

    def make(name: str) -> PushedImage:
        repo = f"tenant/{name}-{next(_numbers)}"
        image = push_image(client, repo, "v1")
        sign_legacy(client, repo, image.digest, keys["ecdsa-p256"])
        return image

    return make


@pytest.fixture
def open_image(registry: Any, http_for: Any, keys: Any, repo: str) -> PushedImage:
    client = http_for(registry)
    image = push_image(client, repo, "v1")
    sign_legacy(client, repo, image.digest, keys["ecdsa-p256"])
    return image


def outputs(run_: HookRun, *paths: Path) -> str:
    text = run_.raw_response + run_.stdout + run_.stderr
    for path in paths:
        for file in ([path] if path.is_file() else path.rglob("*")):
            if file.is_file():
                text += file.read_text(errors="replace")
    return text


def test_namespaces_use_their_own_secrets_and_the_cache_decision(
    tls_registry, write_config, private_image, tmp_path
) -> None:
    cache, metrics = tmp_path / "cache", tmp_path / "metrics"
    env = {"SIGNGATE_CACHE_DIR": str(cache), "METRICS_PATH": str(metrics)}
    config = write_config()
    verified, never_verified = private_image("verified"), private_image("never-verified")
    secret_a = secret_item("team-a", "regcred", dockerconfigjson({tls_registry.host: basic(PASSWORD)}))
    # B names a secret of the same name, but only A has one: B must not get A's.
    b_first = run(config, request("team-b", [verified.reference], pull=["regcred"]), secret_a, env=env)
    assert b_first.allowed is False
    assert f'container "c0" image "{verified.reference}"' in b_first.message
    assert "requires a login and no credentials are configured" in b_first.message
    assert "team-b/regcred named by the pod were not found" in b_first.message

    a = run(config, request("team-a", [verified.reference], pull=["regcred"]), secret_a, env=env)
    assert a.response == {"allowed": True}, a.message

    # The documented decision (README, "Pull secrets"): a verified signature is about the image,
    # so the pass serves B too; B's kubelet still cannot pull without credentials of its own.
    b_cached = run(config, request("team-b", [verified.reference]), secret_a, env=env)
    assert b_cached.response == {"allowed": True}, b_cached.message
    # An image never verified is fetched with B's (missing) credentials and denied.
    b_new = run(config, request("team-b", [never_verified.reference]), secret_a, env=env)
    assert b_new.allowed is False and "requires a login" in b_new.message
    # "unauthorized" was not cached: A, with its secret, is admitted for it at once.
    a_new = run(config, request("team-a", [never_verified.reference], pull=["regcred"]), secret_a, env=env)
    assert a_new.response == {"allowed": True}, a_new.message

    encoded = basic(PASSWORD)["auth"]
    for each in (b_first, a, b_cached, b_new, a_new):
        text = outputs(each, cache, metrics)
        assert PASSWORD not in text and encoded not in text


def test_secret_through_the_service_account(tls_registry, write_config, private_image) -> None:
    image = private_image("by-account")
    items = (
        secret_item("team", "builder-cred", dockerconfigjson({tls_registry.host: basic(PASSWORD)})),
        account_item("team", "builder", ["builder-cred"]),
    )
    config = write_config()
    allowed = run(config, request("team", [image.reference], kind="Deployment", service_account="builder"), *items)
    assert allowed.response == {"allowed": True}, allowed.message
    # The default ServiceAccount has no secret: the same template without the account is denied.
    denied = run(config, request("team", [image.reference], kind="Deployment"), *items)
    assert denied.allowed is False and "requires a login" in denied.message


def test_legacy_dockercfg_secret(tls_registry, write_config, private_image) -> None:
    image = private_image("legacy")
    data = base64.b64encode(json.dumps({f"https://{tls_registry.host}": basic(PASSWORD)}).encode()).decode()
    result = run(write_config(), request("team", [image.reference], pull=["old"]),
                 secret_item("team", "old", data, DOCKERCFG_BINDING))
    assert result.response == {"allowed": True}, result.message


def test_each_matching_entry_is_tried_on_401(tls_registry, write_config, private_image) -> None:
    image = private_image("several")
    items = (
        secret_item("team", "stale", dockerconfigjson({tls_registry.host: basic("old-password")})),
        secret_item("team", "current", dockerconfigjson({tls_registry.host: basic(PASSWORD)})),
    )
    result = run(write_config(), request("team", [image.reference], pull=["stale", "current"]), *items)
    assert result.response == {"allowed": True}, result.message
    only_stale = run(write_config(), request("team", [image.reference], pull=["stale"]), *items)
    assert only_stale.allowed is False and "rejected the credentials (401)" in only_stale.message


def test_mounted_auth_only_when_no_entry_matches(tls_registry, write_config, private_image, tmp_path) -> None:
    image = private_image("fallback")
    mounted = tmp_path / "mounted.json"
    mounted.write_text(json.dumps({"auths": {tls_registry.host: basic(PASSWORD)}}))
    config = write_config(auth=mounted)
    wrong_host = secret_item("team", "elsewhere", dockerconfigjson({"registry.example.com": basic("x")}))
    fallback = run(config, request("team", [image.reference], pull=["elsewhere"]), wrong_host)
    assert fallback.response == {"allowed": True}, fallback.message
    # A 401 with a matching entry is final: the mounted credential is not tried behind it.
    wrong_password = secret_item("team", "stale", dockerconfigjson({tls_registry.host: basic("old-password")}))
    refused = run(config, request("team", [image.reference], pull=["stale"]), wrong_password)
    assert refused.allowed is False and "rejected the credentials (401)" in refused.message


def test_rotated_and_deleted_secrets(tls_registry, write_config, private_image, tmp_path) -> None:
    env = {"SIGNGATE_CACHE_DIR": str(tmp_path / "cache")}
    config = write_config()
    before = secret_item("team", "regcred", dockerconfigjson({tls_registry.host: basic("old-password")}))
    after = secret_item("team", "regcred", dockerconfigjson({tls_registry.host: basic(PASSWORD)}))
    image = private_image("rotated")
    stale = run(config, request("team", [image.reference], pull=["regcred"]), before, env=env)
    assert stale.allowed is False and "401" in stale.message
    rotated = run(config, request("team", [image.reference], pull=["regcred"]), after, env=env)
    assert rotated.response == {"allowed": True}, rotated.message
    # Deleted: the snapshot no longer has it. A new image is denied, and the denial says so.
    other = private_image("after-delete")
    deleted = run(config, request("team", [other.reference], pull=["regcred"]), env=env)
    assert deleted.allowed is False and "team/regcred named by the pod were not found" in deleted.message


BAD = [
    pytest.param(base64.b64encode(b"{not json").decode(), "is not valid JSON", id="not-json"),
    pytest.param(dockerconfigjson({"HOST": "not an object"}), "entry 'HOST' is not an object", id="wrong-type"),
    pytest.param(dockerconfigjson({"HOST": {"auth": "QUFB" * 5000}}), "longer than 16384 characters", id="enormous-auth"),
]


@pytest.mark.parametrize(("data", "problem"), BAD)
def test_bad_secret_denies_only_the_images_that_need_it(
    tls_registry, registry, write_config, private_image, open_image, data, problem
) -> None:
    data = data if "HOST" not in base64.b64decode(data).decode(errors="replace") else dockerconfigjson(
        {tls_registry.host: json.loads(base64.b64decode(data))["auths"]["HOST"]}
    )
    problem = problem.replace("HOST", tls_registry.host)
    image = private_image("bad-secret")
    result = run(write_config(), request("team", [image.reference, open_image.reference], pull=["broken"]),
                 secret_item("team", "broken", data))
    assert result.allowed is False
    line = f'container "c0" image "{image.reference}": '
    assert line in result.message and "pull secret team/broken: " in result.message and problem in result.message
    assert open_image.reference not in result.message  # the open registry's image needed nothing
    entries = {e["image"]: e for e in result.decision_log["images"]}
    assert entries[open_image.reference]["verdict"] == "pass"
    # An unreadable entry for the registry denies as such; an unreadable secret, whose registries
    # are unknown, shows in the registry's refusal.
    assert entries[image.reference]["reason"] == ("registry-auth" if "JSON" in problem else "pull-secret-invalid")
    assert "QUFB" not in result.message and "QUFB" not in result.stderr


def test_pull_secrets_none_ignores_the_snapshots(tls_registry, write_config, private_image) -> None:
    image = private_image("ignored")
    result = run(write_config(pull_secrets="none"), request("team", [image.reference], pull=["regcred"]),
                 secret_item("team", "regcred", dockerconfigjson({tls_registry.host: basic(PASSWORD)})))
    assert result.allowed is False and "requires a login" in result.message
