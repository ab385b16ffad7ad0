"""Faults of the real world: a registry that goes away, a broken configuration, hostile image names.

- The real docker-registry is stopped before a request, during one and between two, and restarted:
  every outcome is an explicit denial naming the image and the cause, never a crash, and the next
  admission after a restart works again (transient failures are never cached).
- Each configuration fault gives a clear error in both calls shell-operator makes: `--config` exits
  1 with the file and the field on stderr (so shell-operator refuses to start), and a validating
  call denies naming the cause.
- SSRF: images naming loopback, link-local, metadata, unspecified or multicast hosts (as literals,
  as names, or as numbers that resolve to them) under a policy that matches everything (`**`) are
  denied "refusing to contact" without a single connection attempt. A connection guard
  (hostile.ConnectionAudit) records and blocks every socket.connect of the hook process, so a
  regression shows up as a recorded attempt, and still sends no traffic anywhere.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.contract import HookRun, request_for, run_config, run_request
from support.hostile import ConnectionAudit, docker_config_json, write_config
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.signer import TestKey, sign_legacy

pytestmark = pytest.mark.registry


def pod(*images: str) -> dict[str, Any]:
    return request_for("Pod", list(images))


def denial(image: str, text: str, label: str = 'container "c0"') -> str:
    return f'{label} image "{image}": {text}'


def check_contract(run: HookRun) -> None:
    """What every run must satisfy: exit 0, one JSON object with a boolean `allowed`, no crash."""
    assert run.returncode == 0, run.stderr
    assert isinstance(run.response, dict) and isinstance(run.response.get("allowed"), bool), run.raw_response
    assert "Traceback" not in run.stderr, run.stderr
    assert "internal error" not in run.raw_response, run.raw_response


@pytest.fixture
def key(keys: dict[str, TestKey]) -> TestKey:
    return keys["ecdsa-p256"]


def push_signed(client: RegistryHTTP, repo: str, key: TestKey, tags: int = 1) -> list[PushedImage]:
    images = []
    for number in range(tags):
        image = push_image(client, repo, f"v{number}")
        sign_legacy(client, repo, image.digest, key)
        images.append(image)
    return images


# ---- a registry that goes away ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["enforce", "warn"])
def test_registry_stopped_before_the_request_is_denied_connection_refused(fresh_registry, http_for, key, tmp_path, mode) -> None:
    reg = fresh_registry()
    images = push_signed(http_for(reg), "t/stopped-before", key, tags=2)
    reg.stop()
    config = write_config(tmp_path / "config.json", key, registries={"insecure": [reg.host]}, mode=mode)
    run = run_request(config, pod(*(i.reference for i in images)))
    check_contract(run)
    lines = [denial(i.reference, f"registry {reg.host} unreachable: connection refused", f'container "c{n}"') for n, i in enumerate(images)]
    if mode == "enforce":
        assert run.allowed is False
        for line in lines:
            assert line in run.message
    else:
        assert run.allowed is True and "message" not in run.response
        assert run.warnings == [f"signgate (warn mode) would deny: {line}" for line in lines]


class StopOnFirstRequest:
    """Stops a registry from a thread as soon as its access log shows the hook's first request
    (user agent "signgate"), i.e. while the hook is in the middle of its work."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.offset = registry.access_log_path.stat().st_size
        self.stopped_at: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._done = threading.Event()

    def _watch(self) -> None:
        give_up = time.monotonic() + 30
        while not self._done.is_set() and time.monotonic() < give_up:
            with open(self.registry.access_log_path, "rb") as handle:
                handle.seek(self.offset)
                if b'"signgate"' in handle.read():
                    self.registry.stop()
                    self.stopped_at = time.monotonic()
                    return
            time.sleep(0.002)

    def __enter__(self) -> "StopOnFirstRequest":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=35)


TRANSPORT_CAUSES = ("unreachable", "closed the connection", "connection failed", "not verified within", "connection reset")


def test_registry_stopped_in_the_middle_of_a_ten_image_request(fresh_registry, http_for, key, tmp_path) -> None:
    reg = fresh_registry()
    client = http_for(reg)
    images = []
    for number in range(10):
        image = push_image(client, f"t/mid-run-{number}", "v1")
        for _ in range(3):  # three signatures each: more requests per image, a wider window to stop in
            sign_legacy(client, image.repo, image.digest, key)
        images.append(image)
    config = write_config(tmp_path / "config.json", key, registries={"insecure": [reg.host]})

    with StopOnFirstRequest(reg) as stopper:
        started = time.monotonic()
        run = run_request(config, pod(*(i.reference for i in images)), timeout=60)
        finished = time.monotonic()

    check_contract(run)
    assert stopper.stopped_at is not None and stopper.stopped_at < finished, "the registry was not stopped during the run"
    assert finished - started < 8 + 2, "the hook must answer within its deadline"
    assert run.allowed is False, "the registry went away before the hook could fetch everything"
    failed = [entry for entry in run.decision_log["images"] if entry["verdict"] == "fail"]
    assert failed
    for entry in failed:
        number = int(entry["container"][1:])
        line = denial(images[number].reference, "", f'container "c{number}"')
        assert line in run.message
        assert any(cause in entry["message"] for cause in TRANSPORT_CAUSES), entry
    # What did pass, passed for real: verified by the key before the registry went away.
    for entry in run.decision_log["images"]:
        if entry["verdict"] == "pass":
            assert entry["reason"] == "verified" and entry["keys"] == ["default"]


def test_registry_stopped_between_two_admissions_and_restarted(fresh_registry, http_for, key, tmp_path) -> None:
    reg = fresh_registry()
    [image] = push_signed(http_for(reg), "t/restart", key)
    config = write_config(tmp_path / "config.json", key, registries={"insecure": [reg.host]})

    first = run_request(config, pod(image.reference))
    check_contract(first)
    assert first.response == {"allowed": True}, first.message

    reg.stop()
    second = run_request(config, pod(image.reference))
    check_contract(second)
    assert second.allowed is False
    assert denial(image.reference, f"registry {reg.host} unreachable: connection refused") in second.message

    reg.restart()
    third = run_request(config, pod(image.reference))
    check_contract(third)
    assert third.response == {"allowed": True}, third.message


def test_an_outage_is_never_cached_and_the_restarted_registry_admits_again(fresh_registry, http_for, key, tmp_path) -> None:
    reg = fresh_registry()
    [image] = push_signed(http_for(reg), "t/outage-cache", key)
    config = write_config(tmp_path / "config.json", key, registries={"insecure": [reg.host]})
    env = {"SIGNGATE_CACHE_DIR": str(tmp_path / "cache")}
    reg.stop()

    down = run_request(config, pod(image.reference), env=env)
    check_contract(down)
    assert down.allowed is False
    assert "unreachable: connection refused" in down.message

    reg.restart()
    mark = reg.mark()
    up = run_request(config, pod(image.reference), env=env)
    check_contract(up)
    assert up.response == {"allowed": True}, up.message
    assert reg.count_requests(mark) > 0, "the verdict came from the registry, not from a cached outage"

    # Once verified, the image stays admitted from the cache through the next outage.
    reg.stop()
    cached = run_request(config, pod(image.reference), env=env)
    check_contract(cached)
    assert cached.response == {"allowed": True}, cached.message


# ---- configuration faults -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_image(tls_registry: Registry, keys: dict[str, TestKey]) -> Iterator[PushedImage]:
    client = RegistryHTTP(tls_registry)
    [image] = push_signed(client, f"t/faults-tls-{time.monotonic_ns()}", keys["ecdsa-p256"])
    yield image
    client.close()


@pytest.fixture
def fault_setup(tls_registry: Registry, tls_image: PushedImage, key: TestKey, tmp_path: Path) -> dict[str, Any]:
    """A working configuration for a signed image on the TLS registry with Basic auth."""
    auth = docker_config_json(tmp_path / "auth.json", tls_registry.host, "tester", "s3cret")
    (tmp_path / "not-a-key.pub").write_text("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
    (tmp_path / "not-pem.crt").write_text("this is not a certificate\n")
    (tmp_path / "a-directory").mkdir()
    data = {
        "keys": {"default": str(key.pub_path)},
        "registries": {"caBundle": str(tls_registry.ca_path), "auth": str(auth)},
        "policy": [{"images": f"{tls_registry.host}/**"}],
    }
    return {"data": data, "dir": tmp_path, "image": tls_image, "key": key}


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


BUG_CA_DIRECTORY = (
    "BUG (config.py, not ours to edit): registries.caBundle is validated with os.access(R_OK), which a "
    "directory or a non-PEM file passes; --config exits 0 and admissions then deny with a misleading TLS "
    "error ('set registries.caBundle' when it is set)"
)
BUG_AUTH_FILE = (
    "BUG (hook.py/decision.py, not ours to edit): registries.auth is not loaded by --config, and an invalid "
    "auth file surfaces at admission as 'internal error while verifying: ConfigError: ...'"
)
BUG_DEEP_CONFIG = (
    "BUG (config.py, not ours to edit): a deeply nested configuration raises RecursionError: --config prints a "
    "traceback and admissions deny with 'internal error: RecursionError'"
)

# name -> (how to break the configuration, what --config must say, what a validating call must say).
# {cfg} is the configuration file, {dir} the directory of the broken files. A denial text starting
# with "image:" is expected in the line of the image, otherwise anywhere in the message.
CONFIG_FAULTS: dict[str, Any] = {
    "missing-key-file": (
        ("keys.default", "{dir}/missing.pub"),
        "{cfg}: keys.default: key 'default': file {dir}/missing.pub not found",
        "image:cannot check signatures: key 'default': file {dir}/missing.pub not found",
    ),
    "key-file-is-a-directory": (
        ("keys.default", "{dir}/a-directory"),
        "{cfg}: keys.default: key 'default': cannot read {dir}/a-directory: Is a directory",
        "image:cannot check signatures: key 'default': cannot read {dir}/a-directory: Is a directory",
    ),
    "key-file-is-not-a-pem-key": (
        ("keys.default", "{dir}/not-a-key.pub"),
        "{cfg}: keys.default: key 'default': {dir}/not-a-key.pub is not a PEM public key",
        "image:cannot check signatures: key 'default': {dir}/not-a-key.pub is not a PEM public key",
    ),
    "key-file-is-a-ca-bundle": (
        ("keys.default", "{dir}/not-pem.crt"),
        "{cfg}: keys.default: key 'default': {dir}/not-pem.crt is not a PEM public key",
        "image:cannot check signatures: key 'default': {dir}/not-pem.crt is not a PEM public key",
    ),
    "ca-bundle-does-not-exist": (
        ("registries.caBundle", "{dir}/missing-ca.crt"),
        "{cfg}: registries.caBundle: cannot read {dir}/missing-ca.crt",
        "signgate: invalid configuration: {cfg}: registries.caBundle: cannot read {dir}/missing-ca.crt",
    ),
    "ca-bundle-is-a-directory": pytest.param(
        ("registries.caBundle", "{dir}/a-directory"),
        "{cfg}: registries.caBundle:",
        "registries.caBundle: cannot read {dir}/a-directory (it must be a readable file)",
    ),
    "ca-bundle-is-not-pem": pytest.param(
        ("registries.caBundle", "{dir}/not-pem.crt"),
        "{cfg}: registries.caBundle:",
        "registries.caBundle: {dir}/not-pem.crt",
    ),
    "auth-file-does-not-exist": (
        ("registries.auth", "{dir}/missing-auth.json"),
        "{cfg}: registries.auth: cannot read {dir}/missing-auth.json",
        "signgate: invalid configuration: {cfg}: registries.auth: cannot read {dir}/missing-auth.json",
    ),
    "auth-file-is-not-json": pytest.param(
        ("registries.auth", "{dir}/not-pem.crt"),
        "registries.auth: {dir}/not-pem.crt is not valid JSON",
        "registries.auth: {dir}/not-pem.crt is not valid JSON",
    ),
    "unknown-top-level-field": (
        ("limitz", {}),
        "{cfg}: top level: unknown field 'limitz'",
        "signgate: invalid configuration: {cfg}: top level: unknown field 'limitz'",
    ),
    "unknown-field-in-limits": (
        ("limits.maxManifestByte", 4096),
        "{cfg}: limits: unknown field 'maxManifestByte'",
        "signgate: invalid configuration: {cfg}: limits: unknown field 'maxManifestByte'",
    ),
    "unknown-field-in-a-rule": (
        ("policy", [{"images": "**", "treshold": 1}]),
        "{cfg}: policy[0]: unknown field 'treshold'",
        "signgate: invalid configuration: {cfg}: policy[0]: unknown field 'treshold'",
    ),
    "invalid-yaml": (
        "keys:\n  default: /x.pub\npolicy: [\n  - images: '**'\n",
        "{cfg}: invalid YAML at line 4, column 3",
        "signgate: invalid configuration: {cfg}: invalid YAML at line 4, column 3",
    ),
    "yaml-tab-indentation": (
        "keys:\n\tdefault: /x.pub\n",
        "{cfg}: invalid YAML at line 2",
        "signgate: invalid configuration: {cfg}: invalid YAML at line 2",
    ),
    "configuration-file-missing": (
        None,
        "{cfg}: configuration file not found (set SIGNGATE_CONFIG)",
        "signgate: invalid configuration: {cfg}: configuration file not found (set SIGNGATE_CONFIG)",
    ),
    "configuration-is-a-list": (
        "- images: '**'\n",
        "{cfg}: top level: must be a mapping, got a list",
        "signgate: invalid configuration: {cfg}: top level: must be a mapping",
    ),
    "deeply-nested-configuration": pytest.param(
        "{" + '"a":[' * 50_000,
        "{cfg}:",
        "signgate: invalid configuration: {cfg}:",
    ),
}


@pytest.mark.parametrize(("fault", "config_error", "denial_text"), list(CONFIG_FAULTS.values()), ids=list(CONFIG_FAULTS))
def test_configuration_fault_is_named_by_config_and_by_validating_calls(fault_setup, fault, config_error, denial_text) -> None:
    directory: Path = fault_setup["dir"]
    image: PushedImage = fault_setup["image"]
    cfg = directory / "signgate-config.yaml"
    if isinstance(fault, tuple):
        data = json.loads(json.dumps(fault_setup["data"]))
        path, value = fault
        _set(data, path, value.format(dir=directory) if isinstance(value, str) else value)
        cfg.write_text(json.dumps(data, indent=1))
    elif isinstance(fault, str):
        cfg.write_text(fault)
    # None: no file at all.
    fill = {"cfg": cfg, "dir": directory}

    started = run_config(cfg)
    assert started.returncode == 1, f"--config accepted a broken configuration: {started.stdout}"
    assert started.stdout == "", "nothing but the binding configuration may go to stdout"
    assert config_error.format(**fill) in started.stderr, started.stderr
    assert "Traceback" not in started.stderr

    run = run_request(cfg, pod(image.reference))
    check_contract(run)
    assert run.allowed is False
    expected = denial_text.format(**fill)
    if expected.startswith("image:"):
        expected = denial(image.reference, expected[len("image:"):])
    assert expected in run.message, run.message


def test_the_working_configuration_of_the_fault_cases_admits(fault_setup) -> None:
    cfg = fault_setup["dir"] / "good.json"
    cfg.write_text(json.dumps(fault_setup["data"]))
    assert run_config(cfg).returncode == 0
    run = run_request(cfg, pod(fault_setup["image"].reference))
    check_contract(run)
    assert run.response == {"allowed": True}, run.message


def test_invalid_configuration_in_warn_mode_still_denies(key, tmp_path) -> None:
    # The mode is part of the configuration that could not be read: nothing says "warn".
    cfg = tmp_path / "config.yaml"
    cfg.write_text("mode: warn\npolicy: [\n")
    run = run_request(cfg, pod("registry.example.com/app:v1"))
    check_contract(run)
    assert run.allowed is False
    assert run.message.startswith(f"signgate: invalid configuration: {cfg}: invalid YAML")


# ---- SSRF: image names that point inside the cluster ----------------------------------------------

# image -> (host as named in the message, the reason after "refusing to contact <host>: ").
# Names are judged in canonical form: localhost and *.localhost are 127.0.0.1.
REFUSED_IMAGES = {
    "169.254.169.254/latest/meta-data:1": ("169.254.169.254", "a cloud metadata address"),
    "[fd00:ec2::254]/x:1": ("[fd00:ec2::254]", "a cloud metadata address"),
    "169.254.10.1/x:1": ("169.254.10.1", "a link-local address"),
    "[fe80::1]:5000/x:1": ("[fe80::1]:5000", "a link-local address"),
    "[::1]:5000/x:1": ("[::1]:5000", "a loopback address"),
    "127.0.0.1:5000/x:1": ("127.0.0.1:5000", "a loopback address"),
    "127.0.0.2:5000/x:1": ("127.0.0.2:5000", "a loopback address"),
    "localhost:5000/x:1": ("127.0.0.1:5000", "a loopback address"),
    "localhost/x:1": ("127.0.0.1", "a loopback address"),
    "LocalHost:5000/x:1": ("127.0.0.1:5000", "a loopback address"),
    "registry.localhost/x:1": ("127.0.0.1", "a loopback address"),
    "0.0.0.0:5000/x:1": ("0.0.0.0:5000", "an unspecified address"),
    "[::]:5000/x:1": ("[::]:5000", "an unspecified address"),
    "224.0.0.1/x:1": ("224.0.0.1", "a multicast address"),
    # Internal networks: only by naming the endpoint or listing the network in allowNetworks.
    "10.0.0.1:6379/x:1": ("10.0.0.1:6379", "a private address"),
    "172.16.5.4/x:1": ("172.16.5.4", "a private address"),
    "192.168.1.1:8080/x:1": ("192.168.1.1:8080", "a private address"),
    "100.64.0.1/x:1": ("100.64.0.1", "a carrier-grade NAT address"),
    "[fd12:3456::1]:5000/x:1": ("[fd12:3456::1]:5000", "a unique local address"),
    "198.18.0.1/x:1": ("198.18.0.1", "a reserved address"),
}
NETWORK_REASONS = ("a private address", "a carrier-grade NAT address", "a unique local address", "a reserved address")

# Spellings with no single reading are invalid references: denied before any host is judged.
NON_CANONICAL_IMAGES = {
    "127.1:5000/x:1": "registry host '127.1' is not an IPv4 address in dotted-decimal form",
    "2130706433:5000/x:1": "registry host '2130706433' is not an IPv4 address in dotted-decimal form",
    "0x7f000001:5000/x:1": "registry host '0x7f000001' is not an IPv4 address in dotted-decimal form",
    "0177.0.0.1:5000/x:1": "registry host '0177.0.0.1' is not an IPv4 address in dotted-decimal form",
    "2852039166:80/x:1": "registry host '2852039166' is not an IPv4 address in dotted-decimal form",
    "[::ffff:7f00:1]:5000/x:1": "registry host '[::ffff:7f00:1]' is an IPv6 spelling of the IPv4 address 127.0.0.1",
    "[::7f00:2]/x:1": "registry host '[::7f00:2]' is an IPv6 spelling of the IPv4 address 127.0.0.2",
    "[::a9fe:a9fe]/x:1": "registry host '[::a9fe:a9fe]' is an IPv6 spelling of the IPv4 address 169.254.169.254",
    "127.0.0.1:05000/x:1": "registry '127.0.0.1:05000' has an invalid port '05000'",
}


@pytest.fixture
def guard(tmp_path: Path) -> ConnectionAudit:
    """Blocks (and records) every connection of the hook: nothing may be contacted at all."""
    return ConnectionAudit(tmp_path / "guard")


def ssrf_config(tmp_path: Path, key: TestKey, **top: Any) -> Path:
    # `**` matches every image: only the host policy stands between the image name and a request.
    return write_config(tmp_path / "ssrf.json", key, policy=[{"images": "**"}], **top)


@pytest.mark.parametrize("image", list(REFUSED_IMAGES))
def test_refused_host_is_denied_without_any_connection_attempt(image, key, tmp_path, guard) -> None:
    host, reason = REFUSED_IMAGES[image]
    run = run_request(ssrf_config(tmp_path, key), pod(image), env=guard.env)
    check_contract(run)
    assert run.allowed is False
    if reason in NETWORK_REASONS:
        hint = "(name the host and port in a policy rule, or its network in registries.allowNetworks, to allow it)"
    else:
        hint = "(name the host and port in a policy rule or registries.insecure to allow it)"
    assert denial(image, f"refusing to contact {host}: {reason} {hint}") in run.message
    assert guard.connections() == [], f"the hook tried to connect: {guard.connections()}"


@pytest.mark.parametrize("image", list(NON_CANONICAL_IMAGES))
def test_a_host_spelling_without_a_single_reading_is_denied_before_any_connection(image, key, tmp_path, guard) -> None:
    run = run_request(ssrf_config(tmp_path, key), pod(image), env=guard.env)
    check_contract(run)
    assert run.allowed is False
    assert denial(image, f"invalid image reference {image!r}: {NON_CANONICAL_IMAGES[image]}") in run.message
    assert guard.connections() == [], f"the hook tried to connect: {guard.connections()}"


def _loopback_host_name() -> str | None:
    """This machine's own name when /etc/hosts maps it to a loopback address (as Debian does)."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return None
    if addresses and all(a.startswith("127.") or a == "::1" for a in addresses) and "." not in name:
        return name
    return None


def test_a_host_name_resolving_to_loopback_is_refused_without_any_connection_attempt(key, tmp_path, guard) -> None:
    name = _loopback_host_name()
    if name is None:
        pytest.skip("this machine's host name does not resolve to a loopback address locally")
    image = f"{name}:5000/x:1"  # the port makes it a registry host; a bare name would be a Docker Hub repository
    run = run_request(ssrf_config(tmp_path, key), pod(image), env=guard.env)
    check_contract(run)
    assert run.allowed is False
    assert denial(image, f"refusing to contact {name}:5000: it resolves to 127.") in run.message
    assert "a loopback address" in run.message
    assert guard.connections() == []


def test_refused_hosts_in_warn_mode_are_admitted_with_warnings_and_still_not_contacted(key, tmp_path, guard) -> None:
    images = ["169.254.169.254/x:1", "localhost:5000/x:1", "[::1]:5000/x:1"]
    run = run_request(ssrf_config(tmp_path, key, mode="warn"), pod(*images), env=guard.env)
    check_contract(run)
    assert run.allowed is True
    assert len(run.warnings) == 3 and all("refusing to contact" in w for w in run.warnings)
    assert guard.connections() == []


def test_each_refusal_names_the_host_and_port_it_was_asked_for(key, tmp_path, guard) -> None:
    # Verdicts are remembered per host within a request; the message must still name each port.
    images = ["localhost:5000/x:1", "localhost:6000/x:1", "[::1]:5000/x:1", "[::1]:6000/x:1"]
    run = run_request(ssrf_config(tmp_path, key), pod(*images), env=guard.env)
    check_contract(run)
    for number, image in enumerate(images):
        host = image.split("/", 1)[0].replace("localhost", "127.0.0.1")  # named in canonical form
        assert denial(image, f"refusing to contact {host}: ", f'container "c{number}"') in run.message
    assert guard.connections() == []


def test_images_matching_no_rule_or_a_static_rule_cause_no_request_at_all(key, tmp_path, guard) -> None:
    config = write_config(
        tmp_path / "static.json",
        key,
        policy=[
            {"images": "169.254.169.254/allowed/**", "action": "allow"},
            {"images": "169.254.169.254/denied/**", "action": "deny"},
            {"images": "registry.example.com/**"},
        ],
    )
    images = ["169.254.169.254/allowed/x:1", "169.254.169.254/denied/x:1", "[::1]:5000/x:1", "localhost/x:1"]
    run = run_request(config, pod(*images), env=guard.env)
    check_contract(run)
    assert run.allowed is False
    assert 'image "169.254.169.254/allowed/x:1"' not in run.message
    assert denial("169.254.169.254/denied/x:1", "", 'container "c1"') in run.message
    assert denial("[::1]:5000/x:1", "registry or repository [::1]:5000/x is not trusted", 'container "c2"') in run.message
    assert denial("localhost/x:1", "registry or repository 127.0.0.1/x is not trusted", 'container "c3"') in run.message
    assert guard.connections() == []


def test_naming_a_loopback_host_allows_that_endpoint_under_its_names_and_nothing_else(
    registry, http, repo, key, tmp_path, guard
) -> None:
    [image] = push_signed(http, repo, key)
    port = registry.port
    config = write_config(tmp_path / "named.json", key, registries={"insecure": [registry.host]})
    # localhost is 127.0.0.1: the same endpoint, verified and admitted like the named spelling.
    same = [f"localhost:{port}/{repo}:v0", f"LOCALHOST:{port}/{repo}:v0"]
    # Spellings with no single reading are invalid; another loopback address or port is not named.
    refused = {
        f"127.1:{port}/{repo}:v0": "invalid image reference",
        f"2130706433:{port}/{repo}:v0": "invalid image reference",
        f"[::1]:{port}/{repo}:v0": f"refusing to contact [::1]:{port}: a loopback address",
        f"127.0.0.1:{port + 1}/{repo}:v0": f"refusing to contact 127.0.0.1:{port + 1}: a loopback address",
    }
    guard.allow(registry.host)
    run = run_request(config, pod(image.reference, *same, *refused), env=guard.env)
    check_contract(run)
    assert run.allowed is False
    for alias in [image.reference, *same]:
        assert f'image "{alias}"' not in run.message, "the named endpoint is verified and admitted"
    for number, (alias, expected) in enumerate(refused.items(), start=1 + len(same)):
        assert denial(alias, expected, f'container "c{number}"') in run.message
    assert guard.blocked() == [], guard.blocked()
    assert {(c["host"], c["port"]) for c in guard.connections()} == {("127.0.0.1", port)}
