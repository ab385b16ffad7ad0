"""The shell-operator contract, with no registry involved: --config, input handling, failures.

Every test runs the real executable as a subprocess (see contract.py).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.contract import HOOK, BINDING, admission_request, hook_env, pod_spec, request_for, run_config, run_contexts, run_request, workload


@pytest.fixture
def public_key(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "cosign.pub"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.fixture
def write_config(tmp_path: Path, public_key: Path):
    def write(extra: dict | None = None, policy: list | None = None, raw: str | None = None) -> Path:
        path = tmp_path / "config.yaml"
        if raw is not None:
            path.write_text(raw)
            return path
        data = {
            "keys": {"default": str(public_key)},
            # Unreachable by design: any test that reaches the network here fails loudly.
            "registries": {"insecure": ["127.0.0.1:9"]},
            "policy": policy or [{"images": "registry.k8s.io/**", "action": "allow"}, {"images": "**"}],
        }
        data.update(extra or {})
        path.write_text(yaml.safe_dump(data))
        return path

    return write


# ---- --config --------------------------------------------------------------------------------------


def test_config_output_carries_the_namespace_selector_and_rules(write_config) -> None:
    config = write_config({"webhook": {"namespaceSelector": {"matchLabels": {"team": "payments"}}, "timeoutSeconds": 7}})
    completed = run_config(config, {"SIGNGATE_NAMESPACE": "signgate-system"})
    assert completed.returncode == 0, completed.stderr
    output = yaml.safe_load(completed.stdout)
    assert output["configVersion"] == "v1"
    [binding] = output["kubernetesValidating"]
    assert binding["name"] == BINDING and len(binding["name"].split(".")) >= 3
    selector = binding["namespace"]["labelSelector"]
    assert selector["matchLabels"] == {"team": "payments"}
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "signgate-system"]} in selector[
        "matchExpressions"
    ]
    resources = {r for rule in binding["rules"] for r in rule["resources"]}
    assert resources >= {
        "pods", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs", "replicationcontrollers"
    }
    assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in binding["rules"])
    assert binding["failurePolicy"] == "Fail"
    assert binding["sideEffects"] == "None"
    assert binding["timeoutSeconds"] == 7


def test_config_output_is_only_yaml_on_stdout(write_config) -> None:
    completed = run_config(write_config())
    assert completed.returncode == 0
    assert completed.stdout.startswith("configVersion: v1")


def test_config_default_selector_is_the_signed_required_label(write_config) -> None:
    output = yaml.safe_load(run_config(write_config()).stdout)
    assert output["kubernetesValidating"][0]["namespace"]["labelSelector"]["matchLabels"] == {"signed": "required"}


def test_user_selector_cannot_remove_the_kube_system_exclusion(write_config) -> None:
    selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kube-system", "apps"]}]}
    output = yaml.safe_load(run_config(write_config({"webhook": {"namespaceSelector": selector}})).stdout)
    expressions = output["kubernetesValidating"][0]["namespace"]["labelSelector"]["matchExpressions"]
    assert expressions[0] == selector["matchExpressions"][0]
    assert expressions[-1]["operator"] == "NotIn" and "kube-system" in expressions[-1]["values"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown-field", "unknown field 'polcy'"),
        ("missing-key-file", "keys.default"),
        ("invalid-yaml", "invalid YAML at line"),
        ("bad-threshold", "policy[0].threshold"),
    ],
    ids=["unknown-field-fails-config", "missing-key-file-fails-config", "invalid-yaml-fails-config", "bad-threshold-fails-config"],
)
def test_invalid_configuration_fails_the_config_call_with_a_clear_reason(write_config, tmp_path, case, expected) -> None:
    if case == "unknown-field":
        config = write_config({"polcy": []})
    elif case == "missing-key-file":
        config = write_config({"keys": {"default": str(tmp_path / "absent.pub")}})
    elif case == "invalid-yaml":
        config = write_config(raw="keys: [unclosed\n")
    else:
        config = write_config(policy=[{"images": "**", "threshold": 2}])
    completed = run_config(config)
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert expected in completed.stderr
    assert str(config) in completed.stderr


def test_missing_configuration_file_fails_the_config_call(tmp_path) -> None:
    completed = run_config(tmp_path / "nowhere.yaml")
    assert completed.returncode == 1
    assert "configuration file not found" in completed.stderr


# ---- validating calls without network ---------------------------------------------------------------


def test_invalid_configuration_denies_validating_calls_with_the_reason(write_config) -> None:
    config = write_config({"polcy": []})
    run = run_request(config, request_for("Pod", ["registry.k8s.io/pause:3.9"]))
    assert run.returncode == 0
    assert run.allowed is False
    assert "invalid configuration" in run.message and "polcy" in run.message


def test_statically_allowed_images_are_admitted_without_network(write_config) -> None:
    run = run_request(write_config(), request_for("Pod", ["registry.k8s.io/pause:3.9"]))
    assert run.returncode == 0 and run.allowed is True
    assert run.response == {"allowed": True}


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_allowed_without_looking_at_images(write_config, operation) -> None:
    request = request_for("Pod", ["unsigned.example.com/x:1"])
    request["operation"] = operation
    request["object"] = None
    run = run_request(write_config(), request)
    assert run.allowed is True


def test_objects_without_a_pod_spec_are_allowed(write_config) -> None:
    request = admission_request({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}, kind="ConfigMap")
    assert run_request(write_config(), request).allowed is True


def test_invalid_image_reference_is_denied_naming_container_and_image(write_config) -> None:
    run = run_request(write_config(), request_for("Pod", ["registry.k8s.io/pause:3.9", "Not A Valid/Ref"]))
    assert run.allowed is False
    assert 'container "c1" image "Not A Valid/Ref": invalid image reference' in run.message


def test_unmatched_registry_is_denied_as_untrusted(write_config) -> None:
    config = write_config(policy=[{"images": "registry.k8s.io/**", "action": "allow"}])
    run = run_request(config, request_for("Pod", ["quay.io/team/app:1.0"]))
    assert run.allowed is False
    assert "registry or repository quay.io/team/app is not trusted" in run.message


def test_deny_latest_applies_to_implicit_and_explicit_latest(write_config) -> None:
    config = write_config({"denyLatest": True}, policy=[{"images": "registry.k8s.io/**", "action": "allow"}])
    run = run_request(config, request_for("Pod", ["registry.k8s.io/pause", "registry.k8s.io/pause:latest"]))
    assert run.allowed is False
    assert "has no tag, which means :latest" in run.message
    assert "uses the tag :latest" in run.message


def test_warn_mode_admits_with_warnings(write_config) -> None:
    config = write_config({"mode": "warn"}, policy=[{"images": "registry.k8s.io/**", "action": "allow"}])
    run = run_request(config, request_for("Pod", ["quay.io/team/app:1.0"]))
    assert run.allowed is True
    assert len(run.warnings) == 1 and "quay.io/team/app is not trusted" in run.warnings[0]


def test_decision_log_is_one_json_line_with_the_request_facts(write_config) -> None:
    request = request_for("Deployment", ["registry.k8s.io/pause:3.9"])
    run = run_request(write_config(), request)
    entry = run.decision_log
    assert entry["uid"] == request["uid"]
    assert entry["namespace"] == "team" and entry["kind"] == "Deployment" and entry["name"] == "app"
    assert entry["verdict"] == "allowed"
    assert entry["images"][0]["image"] == "registry.k8s.io/pause:3.9"
    assert isinstance(entry["duration_ms"], int)


# ---- malformed input never crashes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "binding context is not valid JSON"),
        (b'"a string"', "not a JSON array"),
        (b'[{"type": "Validating", "review": {}}]', "no review.request"),
        (b'[{"type": "Validating", "review": {"request": {"operation": "CREATE", "kind": {"kind": "Pod"}}}}]', "carries no object"),
        (
            b'[{"type": "Validating", "review": {"request": {"operation": "CREATE", "kind": {"kind": "Pod"}, "object": {"spec": {"containers": [1]}}}}}]',
            "container entry is not an object",
        ),
    ],
    ids=["truncated-json", "not-an-array", "no-request", "create-without-object", "container-not-an-object"],
)
def test_malformed_binding_context_is_an_explicit_denial(write_config, raw, expected) -> None:
    run = run_contexts(write_config(), None, raw_context=raw)
    assert run.returncode == 0
    assert run.allowed is False
    assert expected in run.message


def test_non_admission_contexts_are_tolerated(write_config) -> None:
    run = run_contexts(write_config(), [{"binding": "x", "type": "Synchronization", "objects": []}, {"type": "Schedule"}])
    assert run.returncode == 0
    assert run.raw_response == ""


def test_oversized_binding_context_is_denied(write_config) -> None:
    config = write_config({"limits": {"maxBindingContextBytes": 2048}})
    request = request_for("Pod", ["registry.k8s.io/pause:3.9"])
    request["object"]["metadata"]["annotations"] = {"padding": "x" * 4096}
    run = run_request(config, request)
    assert run.allowed is False and "larger than the limit" in run.message


def test_too_many_images_is_denied(write_config) -> None:
    config = write_config({"limits": {"maxImagesPerRequest": 2}})
    run = run_request(config, request_for("Pod", ["registry.k8s.io/pause:3.9"] * 3))
    assert run.allowed is False and "more than the limit of 2 images" in run.message


def test_a_broken_library_still_answers_with_a_denial(tmp_path, write_config) -> None:
    # Copy the hook next to an empty lib/ so that importing the library fails.
    from support.contract import HOOK

    hooks = tmp_path / "hooks"
    (hooks / "lib").mkdir(parents=True)
    copy = hooks / HOOK.name
    copy.write_text(HOOK.read_text())
    copy.chmod(0o755)
    import subprocess

    from support.contract import hook_env

    context = tmp_path / "ctx.json"
    response = tmp_path / "resp.json"
    context.write_text(json.dumps([{"type": "Validating", "review": {"request": request_for("Pod", ["x:1"])}}]))
    response.write_text("")
    env = hook_env(write_config(), {"BINDING_CONTEXT_PATH": str(context), "VALIDATING_RESPONSE_PATH": str(response)})
    env["PYTHONPATH"] = ""
    completed = subprocess.run([str(copy)], cwd=hooks, env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    body = json.loads(response.read_text())
    assert body["allowed"] is False and "cannot load the hook library" in body["message"]


# ---- configuration traps (issue 13, findings 4 and 6) ------------------------------------------------

MEMORY_LIMIT = 1 << 30  # the hook needs about 60 MB; a YAML bomb's repr() needs tens of GB


def run_hook_limited(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the hook under an address-space limit, so that a regression shows as a MemoryError
    (or a kill) in seconds instead of taking the test machine's memory."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [str(HOOK), *args], cwd=HOOK.parent, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=limit
    )


def validating_call_limited(tmp_path: Path, config: Path, request: dict, extra: dict | None = None) -> tuple[subprocess.CompletedProcess[str], dict]:
    context = tmp_path / "binding-context.json"
    response = tmp_path / "validating-response.json"
    context.write_text(json.dumps([{"binding": BINDING, "type": "Validating", "review": {"request": request}}]))
    response.write_text("")
    env = hook_env(config, {"BINDING_CONTEXT_PATH": str(context), "VALIDATING_RESPONSE_PATH": str(response), **(extra or {})})
    completed = run_hook_limited([], env)
    return completed, json.loads(response.read_text() or "null")


NON_FINITE_SETTINGS = [
    pytest.param({"cache": {"ttlSeconds": float("nan")}}, "cache.ttlSeconds: must be a finite number between 0 and 86400, got .nan",
                 id="nan-ttl"),
    pytest.param({"cache": {"tagTtlSeconds": float("nan")}},
                 "cache.tagTtlSeconds: must be a finite number between 0 and 86400, got .nan", id="nan-tag-ttl"),
    pytest.param({"webhook": {"deadlineSeconds": float("nan")}},
                 "webhook.deadlineSeconds: must be a finite number between 0.1 and 30, got .nan", id="nan-deadline"),
    pytest.param({"limits": {"connectTimeoutSeconds": float("inf")}},
                 "limits.connectTimeoutSeconds: must be a finite number between 0.1 and 60, got .inf", id="infinite-timeout"),
    pytest.param({"limits": {"readTimeoutSeconds": float("nan")}},
                 "limits.readTimeoutSeconds: must be a finite number between 0.1 and 60, got .nan", id="nan-read-timeout"),
    pytest.param({"cache": {"maxEntries": 10**400}},
                 "cache.maxEntries: must be an integer between 10 and 1000000, got an integer of 401 digits",
                 id="huge-integer"),
]


@pytest.mark.parametrize("extra, expected", NON_FINITE_SETTINGS)
def test_a_non_finite_number_fails_the_config_call_naming_the_field(write_config, extra, expected) -> None:
    config = write_config(extra)
    completed = run_config(config)
    assert completed.returncode == 1 and completed.stdout == ""
    assert f"{config}: {expected}" in completed.stderr


@pytest.mark.parametrize("extra, expected", NON_FINITE_SETTINGS)
def test_a_non_finite_number_denies_validating_calls_naming_the_field(write_config, extra, expected) -> None:
    # registry.k8s.io is allowed by a static rule: with the setting ignored, this would be admitted.
    run = run_request(write_config(extra), request_for("Pod", ["registry.k8s.io/pause:3.9"]))
    assert run.returncode == 0 and run.allowed is False
    assert run.message.startswith("signgate: invalid configuration: ") and expected in run.message


def billion_laughs_config(public_key: Path) -> str:
    """A valid configuration but for `mode`, a wrong-typed value made of nested aliases: 9**10 items."""
    lines = [f"keys: {{default: {public_key}}}", "policy: [{images: '**', action: allow}]",
             'l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 10):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nmode: *l9\n"


BOMB_MESSAGE = "invalid YAML at line 4, column 10: aliases are not accepted in the configuration (found *l0)"


def test_a_yaml_bomb_fails_the_config_call_clearly(write_config, public_key) -> None:
    config = write_config(raw=billion_laughs_config(public_key))
    completed = run_hook_limited(["--config"], hook_env(config))
    assert "MemoryError" not in completed.stderr
    assert completed.returncode == 1 and completed.stdout == ""
    assert f"signgate: invalid configuration: {config}: {BOMB_MESSAGE}" in completed.stderr


def test_a_yaml_bomb_denies_validating_calls_clearly(tmp_path, write_config, public_key) -> None:
    config = write_config(raw=billion_laughs_config(public_key))
    completed, response = validating_call_limited(tmp_path, config, request_for("Pod", ["registry.k8s.io/pause:3.9"]))
    assert completed.returncode == 0, completed.stderr
    assert response["allowed"] is False
    assert response["message"] == f"signgate: invalid configuration: {config}: {BOMB_MESSAGE}; write the value out instead"


def test_a_list_as_a_field_name_fails_the_config_call_clearly(write_config, public_key) -> None:
    config = write_config(raw=f"keys: {{default: {public_key}}}\npolicy: [{{images: '**'}}]\n? [mode, x]\n: warn\n")
    completed = run_config(config)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert f"{config}: invalid YAML at line 3, column 3: field names must be strings, found a list" in completed.stderr


def test_a_key_file_that_is_a_fifo_fails_the_config_call_at_once(tmp_path, write_config) -> None:
    fifo = tmp_path / "fifo.pub"
    os.mkfifo(fifo)
    config = write_config({"keys": {"default": str(fifo)}})
    completed = run_hook_limited(["--config"], hook_env(config), timeout=20)
    assert completed.returncode == 1
    assert f"keys.default: key 'default': cannot read {fifo}: not a regular file (a named pipe)" in completed.stderr


def test_a_key_file_that_is_a_fifo_denies_at_once_naming_it(tmp_path, write_config) -> None:
    fifo = tmp_path / "fifo.pub"
    os.mkfifo(fifo)
    config = write_config({"keys": {"default": str(fifo)}})
    image = "127.0.0.1:9/app@sha256:" + "a" * 64  # by digest: no registry round trip before the key is read
    # With a cache, the verdict key is made of the key file's bytes: read before anything else.
    run = run_request(config, request_for("Pod", [image]), env={"SIGNGATE_CACHE_DIR": str(tmp_path / "cache")}, timeout=20)
    assert run.allowed is False
    assert f'container "c0" image "{image}": cannot check signatures: key \'default\': cannot read {fifo}: ' \
           "not a regular file (a named pipe)" in run.message


# ---- the legacy EphemeralContainers kind (issue 13, finding 7d) -------------------------------------


def legacy_ephemeral_request(*images: str) -> dict:
    """`kubectl debug` on a cluster before 1.22: the pods/ephemeralcontainers subresource arrives as
    an object of kind EphemeralContainers (core v1), its list at the top level, no pod spec."""
    request = admission_request(workload("EphemeralContainers", pod_spec([], ephemeral=list(images)), name="web-1"))
    request["subResource"] = "ephemeralcontainers"
    return request


def test_legacy_ephemeral_containers_are_checked_not_admitted_as_without_pod_spec(write_config) -> None:
    config = write_config(policy=[{"images": "registry.k8s.io/**", "action": "allow"}])
    run = run_request(config, legacy_ephemeral_request("registry.k8s.io/pause:3.9", "unsigned.example.com/tools:1"))
    assert run.allowed is False
    assert 'ephemeral container "debug1" image "unsigned.example.com/tools:1": registry or repository ' \
           "unsigned.example.com/tools is not trusted: no policy rule matches it" in run.message
    assert "debug0" not in run.message
    assert run.decision_log["kind"] == "EphemeralContainers"
    assert [image["image"] for image in run.decision_log["images"]] == ["registry.k8s.io/pause:3.9", "unsigned.example.com/tools:1"]


def test_legacy_ephemeral_containers_with_allowed_images_are_admitted(write_config) -> None:
    config = write_config(policy=[{"images": "registry.k8s.io/**", "action": "allow"}])
    run = run_request(config, legacy_ephemeral_request("registry.k8s.io/pause:3.9"))
    assert run.allowed is True, run.message
    assert run.decision_log["images"][0]["list"] == "ephemeralContainers"


def test_a_malformed_legacy_ephemeral_containers_object_is_denied(write_config) -> None:
    request = legacy_ephemeral_request()
    request["object"]["ephemeralContainers"] = {"name": "debug", "image": "unsigned.example.com/tools:1"}
    run = run_request(write_config(), request)
    assert run.allowed is False
    assert "/ephemeralContainers: is not a list of containers" in run.message


def test_the_binding_still_routes_the_subresource_that_carries_the_legacy_kind(write_config) -> None:
    # The legacy kind travels on the same resource as today's Pod kind: pods/ephemeralcontainers.
    completed = run_config(write_config())
    [binding] = yaml.safe_load(completed.stdout)["kubernetesValidating"]
    core = [rule for rule in binding["rules"] if rule["apiGroups"] == [""]]
    assert any("pods/ephemeralcontainers" in rule["resources"] and rule["apiVersions"] == ["v1"] for rule in core)


def test_a_configuration_file_that_is_a_fifo_denies_at_once_on_every_path(tmp_path) -> None:
    """The fast path, the relay to the verifier service (which reads the webhook timeout) and the
    early shed each read the configuration before the library does: none may block on a FIFO."""
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    env = {"SIGNGATE_CACHE_DIR": str(tmp_path / "cache"),
           "SIGNGATE_VERIFIER_SOCKET": str(tmp_path / "no-service.sock")}
    run = run_request(str(fifo), request_for("Pod", ["registry.example.com/app:v1"]), env=env, timeout=20)
    assert run.allowed is False
    assert "not a regular file (a named pipe)" in run.message
