"""One registry, one identity: the bypasses of issue 13 (findings 1, 5 and 7c), through the hook's contract.

The kubelet pulls from the same server whichever way a pod spells its registry, so every spelling
must meet the same rule. Each case runs the hook executable as shell-operator does
(contract.run_request) against the real docker-registry on 127.0.0.1, under a connection guard
(hostile.ConnectionAudit) that records and blocks every connection but the test registry's and,
for hosts like registry.example.com, every name resolution: nothing leaves this machine.

Before the fix each case below was admitted: the spelling matched no rule (or a broader one) and
fell to `unmatchedImages: allow`, a catch-all allow, or the global `mode: warn`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.contract import HookRun, request_for, run_request
from support.hostile import ConnectionAudit, StubServer
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.signer import TestKey, sign_legacy

pytestmark = pytest.mark.registry


@pytest.fixture
def key(keys: dict[str, TestKey]) -> TestKey:
    return keys["ecdsa-p256"]


def write(path: Path, key: TestKey, **top: Any) -> Path:
    data: dict[str, Any] = {"keys": {"default": str(key.pub_path)}, **top}
    path.write_text(json.dumps(data, indent=1))
    return path


def run(config: Path, guard: ConnectionAudit, *images: str) -> HookRun:
    result = run_request(config, request_for("Pod", list(images)), env=guard.env)
    assert result.returncode == 0 and isinstance(result.response, dict), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.message, result.stderr
    return result


def denial(image: str, text: str = "", container: str = "c0") -> str:
    return f'container "{container}" image "{image}": {text}'


@pytest.fixture
def unsigned(http: RegistryHTTP, repo: str) -> PushedImage:
    return push_image(http, repo, "unsigned")


@pytest.fixture
def signed(http: RegistryHTTP, repo: str, key: TestKey) -> PushedImage:
    image = push_image(http, repo, "signed")
    sign_legacy(http, repo, image.digest, key)
    return image


# ---- a verified loopback registry, spelled otherwise ----------------------------------------------

# How the pod spells 127.0.0.1:{port} -> what the denial says after the image.
LOOPBACK_SPELLINGS = {
    "localhost:{port}": "no signature found in 127.0.0.1:{port}/{repo}",
    "LocalHost:{port}": "no signature found in 127.0.0.1:{port}/{repo}",
    "registry.localhost:{port}": "no signature found in 127.0.0.1:{port}/{repo}",
    "127.1:{port}": "invalid image reference '{image}': registry host '127.1' is not an IPv4 address in dotted-decimal form",
    "2130706433:{port}": "invalid image reference '{image}': registry host '2130706433' is not an IPv4 address",
    "0x7f000001:{port}": "invalid image reference '{image}': registry host '0x7f000001' is not an IPv4 address",
    "0177.0.0.1:{port}": "invalid image reference '{image}': registry host '0177.0.0.1' is not an IPv4 address",
    "[::ffff:7f00:1]:{port}": (
        "invalid image reference '{image}': registry host '[::ffff:7f00:1]' is an IPv6 spelling of the IPv4 address 127.0.0.1"
    ),
    "[::ffff:127.0.0.1]:{port}": "invalid image reference '{image}': invalid registry host",
    "127.0.0.1:0{port}": "invalid image reference '{image}': registry '127.0.0.1:0{port}' has an invalid port",
}


@pytest.mark.parametrize("spelling", list(LOOPBACK_SPELLINGS))
def test_another_spelling_of_a_verified_loopback_registry_is_not_unmatched(
    registry: Registry, repo: str, unsigned: PushedImage, key: TestKey, tmp_path: Path, spelling: str
) -> None:
    guard = ConnectionAudit(tmp_path / "guard", allow=[registry.host])
    config = write(
        tmp_path / "config.json", key,
        registries={"insecure": [registry.host]},
        unmatchedImages="allow",
        policy=[{"images": f"{registry.host}/**"}],
    )
    host = spelling.format(port=registry.port)
    image = f"{host}/{repo}:unsigned"
    result = run(config, guard, image)
    assert result.allowed is False, f"{image} was admitted: {result.response}"
    expected = LOOPBACK_SPELLINGS[spelling].format(port=registry.port, repo=repo, image=image)
    assert result.message.startswith("signgate: " + denial(image, expected)), result.message
    assert guard.blocked() == [], guard.blocked()


def test_localhost_is_the_same_registry_for_a_signed_image_too(
    registry: Registry, repo: str, signed: PushedImage, key: TestKey, tmp_path: Path
) -> None:
    # The control: the canonical spelling reaches the registry, verifies and admits.
    guard = ConnectionAudit(tmp_path / "guard", allow=[registry.host])
    config = write(tmp_path / "config.json", key, registries={"insecure": [registry.host]},
                   policy=[{"images": f"localhost:{registry.port}/**"}])
    image = f"localhost:{registry.port}/{repo}:signed"
    result = run(config, guard, image)
    assert result.response == {"allowed": True}, result.message
    [entry] = result.decision_log["images"]
    assert entry["rule"] == f"127.0.0.1:{registry.port}/**" and entry["digest"] == signed.digest
    assert {(c["host"], c["port"]) for c in guard.connections()} == {("127.0.0.1", registry.port)}


# ---- the default port ---------------------------------------------------------------------------------


def guarded(tmp_path: Path) -> ConnectionAudit:
    """Nothing may be contacted, and no name resolved: these hosts are not on this machine."""
    return ConnectionAudit(tmp_path / "guard", block_dns=True)


@pytest.mark.parametrize(
    "pattern",
    ["registry.example.com/**", "registry.example.com:443/**"],
    ids=["rule-without-port", "rule-with-the-default-port"],
)
@pytest.mark.parametrize(
    "image",
    ["registry.example.com:443/app:unsigned", "Registry.Example.COM:443/app:unsigned", "registry.example.com/app:unsigned"],
    ids=["image-with-the-default-port", "image-in-capitals-with-the-default-port", "image-without-port"],
)
def test_the_default_port_does_not_escape_a_verify_rule(key: TestKey, tmp_path: Path, pattern: str, image: str) -> None:
    guard = guarded(tmp_path)
    config = write(tmp_path / "config.json", key, unmatchedImages="allow", policy=[{"images": pattern}])
    result = run(config, guard, image)
    assert result.allowed is False, f"{image} was admitted: {result.response}"
    [entry] = result.decision_log["images"]
    assert entry["rule"] == "registry.example.com/**", entry  # the verify rule applied, nothing else
    assert result.message.startswith("signgate: " + denial(image, "registry registry.example.com ")), result.message
    # It went for the registry (and was stopped by the guard before any query left the machine).
    assert guard.resolutions() and set(guard.resolutions()) == {"registry.example.com"}
    assert guard.connections() == []


@pytest.mark.parametrize("image", ["quay.io:443/untrusted/x", "QUAY.IO:443/untrusted/x:v1", "quay.io/untrusted/x"])
def test_the_default_port_does_not_escape_a_deny_rule_under_a_catch_all_allow(key: TestKey, tmp_path: Path, image: str) -> None:
    guard = guarded(tmp_path)
    config = write(tmp_path / "config.json", key, policy=[
        {"images": "quay.io/untrusted/**", "action": "deny", "message": "untrusted images are not allowed"},
        {"images": "**", "action": "allow"},
    ])
    result = run(config, guard, image)
    assert result.allowed is False, f"{image} was admitted: {result.response}"
    assert result.message == "signgate: " + denial(image, "untrusted images are not allowed")
    assert guard.connections() == [] and guard.resolutions() == []  # a static rule needs no network


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("registry.example.com:443/app:v1", "registry registry.example.com "),
        ("registry.example.com:000443/app:v1", "invalid image reference 'registry.example.com:000443/app:v1': "
                                               "registry 'registry.example.com:000443' has an invalid port '000443'"),
        ("registry.example.com:0443/app:v1", "invalid image reference"),
        ("127.1:443/app:v1", "invalid image reference '127.1:443/app:v1': registry host '127.1' is not an IPv4 address"),
    ],
    ids=["default-port", "port-with-leading-zeros", "port-with-one-leading-zero", "ambiguous-host"],
)
def test_global_warn_mode_does_not_soften_an_enforce_rule_for_another_spelling(
    key: TestKey, tmp_path: Path, image: str, expected: str
) -> None:
    guard = guarded(tmp_path)
    config = write(tmp_path / "config.json", key, mode="warn",
                   policy=[{"images": "registry.example.com/**", "mode": "enforce"}])
    result = run(config, guard, image)
    assert result.allowed is False, f"{image} was admitted with only a warning: {result.response}"
    assert result.message.startswith("signgate: " + denial(image, expected)), result.message
    assert guard.connections() == []


def test_global_warn_mode_still_only_warns_for_an_image_without_enforce_rule(key: TestKey, tmp_path: Path) -> None:
    # The control for the case above: warn mode itself still works for a well-spelled image.
    guard = guarded(tmp_path)
    config = write(tmp_path / "config.json", key, mode="warn", policy=[{"images": "registry.example.com/**", "mode": "enforce"}])
    result = run(config, guard, "other.example.com/app:v1")
    assert result.allowed is True and len(result.warnings) == 1, result.response
    assert "no policy rule matches it" in result.warnings[0]


# ---- internal network probing (finding 5) ---------------------------------------------------------------


def test_naming_a_registry_opens_its_port_only(registry: Registry, repo: str, signed: PushedImage, key: TestKey, tmp_path: Path) -> None:
    # Another server on 127.0.0.1, another port: a loopback service a pod must not make signgate probe.
    with StubServer(secret="never") as other:
        guard = ConnectionAudit(tmp_path / "guard", allow=[registry.host, other.host])
        config = write(tmp_path / "config.json", key, registries={"insecure": [registry.host]},
                       policy=[{"images": f"{registry.host}/**"}, {"images": "**"}])
        probe = f"{other.host}/x:1"
        result = run(config, guard, signed.reference, probe)
        assert result.allowed is False
        assert f'image "{signed.reference}"' not in result.message  # the named endpoint is verified
        assert denial(probe, f"refusing to contact {other.host}: a loopback address", "c1") in result.message
        assert other.seen == []
        assert {(c["host"], c["port"]) for c in guard.connections()} == {("127.0.0.1", registry.port)}


def test_token_service_named_by_an_allowed_registry_stays_allowed_on_its_own_port(
    token_registry: Registry, http_for: Any, repo: str, key: TestKey, tmp_path: Path
) -> None:
    # The token service listens on another port of 127.0.0.1 than the registry whose challenge names it.
    client = http_for(token_registry)
    image = push_image(client, repo, "v1")
    sign_legacy(client, repo, image.digest, key)
    token_server = token_registry.token_server
    assert token_server is not None and token_server.port != token_registry.port
    guard = ConnectionAudit(tmp_path / "guard", allow=[token_registry.host, f"127.0.0.1:{token_server.port}"])
    config = write(tmp_path / "config.json", key, registries={"insecure": [token_registry.host]},
                   policy=[{"images": f"{token_registry.host}/**"}])
    result = run(config, guard, image.reference)
    assert result.response == {"allowed": True}, result.message
    assert ("127.0.0.1", token_server.port) in {(c["host"], c["port"]) for c in guard.connections()}
    assert guard.blocked() == []


@pytest.mark.parametrize(
    "image",
    ["10.0.0.7:6379/x:1", "172.20.0.1/x:1", "192.168.0.10:8080/x:1", "100.64.1.1:2379/x:1", "[fd00::7]:6443/x:1"],
)
def test_an_internal_address_under_a_wildcard_rule_is_refused_before_any_connection(key: TestKey, tmp_path: Path, image: str) -> None:
    guard = guarded(tmp_path)
    config = write(tmp_path / "config.json", key, policy=[{"images": "**"}])
    result = run(config, guard, image)
    assert result.allowed is False
    host = image.split("/", 1)[0]
    assert denial(image, f"refusing to contact {host}: ") in result.message
    assert "registries.allowNetworks" in result.message
    assert guard.connections() == [], guard.connections()


def test_allow_networks_opens_an_internal_network_and_a_failure_there_reads_unreachable(key: TestKey, tmp_path: Path) -> None:
    # The guard stops the connection attempt before it leaves the process (no packet is sent).
    guard = guarded(tmp_path)
    config = write(tmp_path / "config.json", key, registries={"allowNetworks": ["10.0.0.0/8"]},
                   policy=[{"images": "**"}])
    image = "10.0.0.7:6379/x:1"
    result = run(config, guard, image)
    assert result.allowed is False
    assert result.message == "signgate: " + denial(
        image, "registry 10.0.0.7:6379 unreachable (the cause is in the signgate log)"
    )
    [entry] = result.decision_log["images"]
    assert entry["detail"] == "registry 10.0.0.7:6379 unreachable: connection failed"
    assert [(c["host"], c["port"]) for c in guard.connections()] == [("10.0.0.7", 6379)]
    # Outside the listed network, the refusal stands.
    result = run(config, guard, "192.168.0.10:6379/x:1")
    assert "refusing to contact 192.168.0.10:6379: a private address" in result.message


def test_a_registry_named_in_the_configuration_keeps_its_detailed_message(key: TestKey, tmp_path: Path) -> None:
    guard = guarded(tmp_path)
    config = write(tmp_path / "config.json", key, policy=[{"images": "10.0.0.7:6379/**"}])
    image = "10.0.0.7:6379/x:1"
    result = run(config, guard, image)
    assert result.message == "signgate: " + denial(image, "registry 10.0.0.7:6379 unreachable: connection failed")
    assert "detail" not in result.decision_log["images"][0]
