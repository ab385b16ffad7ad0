"""The hook through its real contract against real registries.

Every test pushes images (and signatures) to a real docker-registry on 127.0.0.1, writes a
signgate configuration file, and runs the hook executable as shell-operator would (contract.py).
Each denial is checked for what a person reading `kubectl` output needs: the container, the image
and the cause.

Small stdlib servers stand in where a real registry cannot misbehave on demand: one that accepts
connections and never answers (or answers one byte at a time), and a proxy that answers 503 once.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from support.contract import HookRun, request_for, run_request
from support.oci import PushedImage, RegistryHTTP, push_image, sha256_digest
from support.registry import Registry
from support.signer import TestKey, sig_tag, sign_legacy, simple_signing_payload

ALL_KINDS = ("Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController")
HttpFor = Callable[..., RegistryHTTP]


# ---- configuration files ------------------------------------------------------------------------

_config_numbers = itertools.count()


@pytest.fixture
def write_config(tmp_path: Path, keys: dict[str, TestKey]) -> Callable[..., Path]:
    """Write a signgate config trusting `keys["ecdsa-p256"]` as `default` for every image (`**`)."""

    def write(
        *,
        insecure: tuple[str, ...] = (),
        ca_bundle: Path | None = None,
        auth: Path | None = None,
        **top: Any,
    ) -> Path:
        registries: dict[str, Any] = {"insecure": list(insecure)}
        if ca_bundle is not None:
            registries["caBundle"] = str(ca_bundle)
        if auth is not None:
            registries["auth"] = str(auth)
        data: dict[str, Any] = {
            "keys": {"default": str(keys["ecdsa-p256"].pub_path)},
            "registries": registries,
            "policy": [{"images": "**"}],
        }
        data.update(top)
        path = tmp_path / f"config-{next(_config_numbers)}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def docker_config_json(directory: Path, host: str, username: str, password: str) -> Path:
    """A `.dockerconfigjson` as a Kubernetes pull secret mounts it."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    path = directory / f"dockerconfig-{next(_config_numbers)}.json"
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def pod(*images: str, init: tuple[str, ...] = (), ephemeral: tuple[str, ...] = ()) -> dict[str, Any]:
    return request_for("Pod", list(images), list(init), list(ephemeral))


def denial(label: str, image: str) -> str:
    """The start of one denial line: `container "c0" image "host/repo:v1": `."""
    return f'{label} image "{image}": '


def image_entry(run: HookRun, image: str) -> dict[str, Any]:
    [entry] = [e for e in run.decision_log["images"] if e["image"] == image]
    return entry


# ---- shared images ------------------------------------------------------------------------------


@pytest.fixture
def signed(http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> PushedImage:
    """`repo:v1`, signed (legacy layout) by the `default` key."""
    image = push_image(http, repo, "v1")
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    return image


@pytest.fixture(scope="module")
def shared_signed(registry: Registry, keys: dict[str, TestKey]) -> Iterator[PushedImage]:
    """One signed image for the many read-only "allowed" cases (module scope keeps them fast)."""
    client = RegistryHTTP(registry)
    repo = f"t/hook-registry-shared-{time.monotonic_ns()}"
    image = push_image(client, repo, "v1")
    sign_legacy(client, repo, image.digest, keys["ecdsa-p256"])
    yield image
    client.close()


# ---- the verdicts ------------------------------------------------------------------------------


def test_signed_image_is_allowed_and_the_log_names_key_and_digest(registry, write_config, signed) -> None:
    run = run_request(write_config(insecure=(registry.host,)), pod(signed.reference))
    assert run.returncode == 0
    assert run.response == {"allowed": True}
    entry = image_entry(run, signed.reference)
    assert entry["verdict"] == "pass" and entry["reason"] == "verified"
    assert entry["keys"] == ["default"]
    assert entry["digest"] == signed.digest
    assert run.decision_log["verdict"] == "allowed"


def test_unsigned_image_is_denied_no_signature_found(registry, http, repo, write_config) -> None:
    image = push_image(http, repo, "v1")
    run = run_request(write_config(insecure=(registry.host,)), pod(image.reference))
    assert run.allowed is False
    # It says where it looked, for which digest the tag resolved to, and which tags it searched.
    expected = f"no signature found in {registry.host}/{repo} for {image.digest[:19]}"
    assert run.message.startswith("signgate: " + denial('container "c0"', image.reference) + expected), run.message
    assert f"legacy tag {sig_tag(image.digest)[:19]}" in run.message
    assert image_entry(run, image.reference)["reason"] == "no-signature"


def test_image_signed_by_another_key_is_denied(registry, http, repo, keys, write_config) -> None:
    image = push_image(http, repo, "v1")
    sign_legacy(http, repo, image.digest, keys["other-ecdsa-p256"])
    run = run_request(write_config(insecure=(registry.host,)), pod(image.reference))
    assert run.allowed is False
    assert (
        denial('container "c0"', image.reference) + "1 legacy signature found; none verifies with key(s) default"
    ) in run.message


def test_signature_whose_payload_names_another_digest_is_denied(registry, http, repo, keys, write_config) -> None:
    image = push_image(http, repo, "v1")
    other = push_image(http, repo, "other")
    # A valid signature by the trusted key, stored under this image's .sig tag, for another image.
    payload = simple_signing_payload(f"{registry.host}/{repo}", other.digest)
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"], payload=payload)
    run = run_request(write_config(insecure=(registry.host,)), pod(image.reference))
    assert run.allowed is False
    assert denial('container "c0"', image.reference) + (
        "1 legacy signature found; none is valid: signature by key default: "
        f"the signature is for digest {other.digest}, but the image resolves to {image.digest}"
    ) in run.message
    assert image_entry(run, image.reference)["reason"] == "digest-mismatch"


def test_tag_moved_to_an_unsigned_image_after_signing_is_denied(registry, http, repo, keys, write_config) -> None:
    first = push_image(http, repo, "v1")
    sign_legacy(http, repo, first.digest, keys["ecdsa-p256"])
    moved = push_image(http, repo, "v1")  # different content, same tag
    assert moved.digest != first.digest
    config = write_config(insecure=(registry.host,))

    run = run_request(config, pod(moved.reference))
    assert run.allowed is False
    assert denial('container "c0"', moved.reference) + "no signature found" in run.message
    assert f"for {moved.digest[:19]}" in run.message  # the digest the tag points to now
    assert image_entry(run, moved.reference)["digest"] == moved.digest

    # Copying the old signature to the new digest's tag does not help: its payload names the old one.
    old_sig, media_type = http.get_manifest(repo, sig_tag(first.digest))
    http.put_manifest(repo, sig_tag(moved.digest), old_sig, media_type)
    run = run_request(config, pod(moved.reference))
    assert run.allowed is False
    assert f"the signature is for digest {first.digest}, but the image resolves to {moved.digest}" in run.message


@pytest.mark.parametrize(
    ("where", "label"),
    [("init", 'init container "init0"'), ("ephemeral", 'ephemeral container "debug0"')],
    ids=["unsigned-init-container-denied", "unsigned-ephemeral-container-denied"],
)
def test_unsigned_image_in_another_container_list_is_denied(
    registry, http, repo, write_config, signed, where, label
) -> None:
    unsigned = push_image(http, repo, "unsigned")
    request = pod(signed.reference, **{where: (unsigned.reference,)})
    run = run_request(write_config(insecure=(registry.host,)), request)
    assert run.allowed is False
    assert run.message.startswith("signgate: " + denial(label, unsigned.reference) + "no signature found")
    # The signed main container passed and is not blamed.
    assert 'container "c0"' not in run.message
    assert image_entry(run, signed.reference)["verdict"] == "pass"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_signed_image_is_allowed_for_every_kind(registry, write_config, shared_signed, kind) -> None:
    run = run_request(write_config(insecure=(registry.host,)), request_for(kind, [shared_signed.reference]))
    assert run.response == {"allowed": True}, run.message
    assert run.decision_log["kind"] == kind
    assert image_entry(run, shared_signed.reference)["keys"] == ["default"]


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob"])
def test_unsigned_image_is_denied_in_every_pod_spec_location(registry, http, repo, write_config, kind) -> None:
    image = push_image(http, repo, "v1")
    run = run_request(write_config(insecure=(registry.host,)), request_for(kind, [image.reference]))
    assert run.allowed is False
    assert denial('container "c0"', image.reference) + "no signature found" in run.message


def test_digest_pinned_reference_is_verified_by_its_digest(registry, write_config, shared_signed) -> None:
    run = run_request(write_config(insecure=(registry.host,)), pod(shared_signed.by_digest))
    assert run.response == {"allowed": True}, run.message
    assert image_entry(run, shared_signed.by_digest)["digest"] == shared_signed.digest


def test_tag_and_digest_the_digest_wins_over_a_tag_pointing_to_an_unsigned_image(
    registry, http, repo, write_config, keys
) -> None:
    signed_image = push_image(http, repo, "signed")
    sign_legacy(http, repo, signed_image.digest, keys["ecdsa-p256"])
    unsigned = push_image(http, repo, "unsigned")
    config = write_config(insecure=(registry.host,))

    # The kubelet pulls the digest; the tag is decoration and must not matter.
    pinned_signed = f"{registry.host}/{repo}:unsigned@{signed_image.digest}"
    run = run_request(config, pod(pinned_signed))
    assert run.response == {"allowed": True}, run.message
    assert image_entry(run, pinned_signed)["digest"] == signed_image.digest

    # And the other way round: a tag that points to a signed image does not rescue an unsigned digest.
    pinned_unsigned = f"{registry.host}/{repo}:signed@{unsigned.digest}"
    run = run_request(config, pod(pinned_unsigned))
    assert run.allowed is False
    assert denial('container "c0"', pinned_unsigned) + "no signature found" in run.message


@pytest.mark.parametrize(
    "layout",
    ["docker-media-types", "manifest-without-media-type"],
    ids=["legacy-signature-in-docker-media-types-allowed", "umoci-manifest-without-mediatype-allowed"],
)
def test_other_manifest_encodings_verify(registry, http, repo, keys, write_config, layout) -> None:
    if layout == "docker-media-types":
        image = push_image(http, repo, "v1", media_type="docker")
        signature = sign_legacy(http, repo, image.digest, keys["ecdsa-p256"], docker_media_types=True)
        assert b"application/vnd.docker.distribution.manifest.v2+json" in signature.manifest
    else:
        image = push_image(http, repo, "v1", omit_media_type=True)
        assert b"mediaType\":\"application/vnd.oci.image.manifest" not in image.manifest
        sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    run = run_request(write_config(insecure=(registry.host,)), pod(image.reference))
    assert run.response == {"allowed": True}, run.message
    assert image_entry(run, image.reference)["digest"] == image.digest


# ---- an unreachable or slow registry --------------------------------------------------------------


def test_registry_down_is_denied_connection_refused(fresh_registry, http_for, write_config, keys) -> None:
    reg = fresh_registry()
    client = http_for(reg)
    image = push_image(client, "t/down", "v1")
    sign_legacy(client, "t/down", image.digest, keys["ecdsa-p256"])
    reg.stop()
    run = run_request(write_config(insecure=(reg.host,)), pod(image.reference))
    assert run.allowed is False
    assert denial('container "c0"', image.reference) + f"registry {reg.host} unreachable: connection refused" in run.message


class UnresponsiveServer:
    """Accepts TCP connections on 127.0.0.1 and then never answers (`silent`), or answers an
    endless HTTP header one byte every `drip_seconds` (`drip`), so that no single read times out."""

    def __init__(self, mode: str, drip_seconds: float = 0.2) -> None:
        self.mode = mode
        self.drip_seconds = drip_seconds
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> "UnresponsiveServer":
        self._listener.settimeout(0.05)
        self._spawn(self._accept_loop)
        return self

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            self._connections.append(connection)
            if self.mode == "drip":
                self._spawn(self._drip, connection)

    def _drip(self, connection: socket.socket) -> None:
        data = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000
        for byte in data:
            if self._stop.wait(self.drip_seconds):
                return
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for connection in self._connections:
            connection.close()
        self._listener.close()


@pytest.mark.parametrize("behaviour", ["silent", "drip"], ids=["server-never-answers", "server-answers-a-byte-at-a-time"])
def test_deadline_exceeded_is_denied_in_time_naming_the_image(write_config, behaviour) -> None:
    server = UnresponsiveServer(behaviour).start()
    try:
        image = f"{server.host}/slow/app:v1"
        config = write_config(insecure=(server.host,), webhook={"timeoutSeconds": 2, "deadlineSeconds": 1})
        started = time.monotonic()
        run = run_request(config, pod(image), timeout=20)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert run.returncode == 0
    assert run.allowed is False
    assert denial('container "c0"', image) + "not verified within 1 s" in run.message
    # A generous bound (interpreter start included), not a performance target: the API server
    # would stop waiting after timeoutSeconds = 2.
    assert elapsed < 1 + 1.5, f"the hook took {elapsed:.2f} s"


class FlakyProxy:
    """A reverse proxy to a real registry that answers 503 (without Retry-After) to its very first
    request, and forwards everything else."""

    def __init__(self, upstream: Registry) -> None:
        self.upstream = upstream
        self.seen: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                with proxy._lock:
                    first = not proxy.seen
                    proxy.seen.append((self.path, 0))  # placeholder, so the next request is not first
                if first:
                    status, headers, body = 503, {"Content-Type": "text/plain"}, b"try again"
                else:
                    status, headers, body = proxy.forward(self.path, self.headers.get("Accept", "*/*"))
                with proxy._lock:
                    proxy.seen[proxy.seen.index((self.path, 0))] = (self.path, status)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def forward(self, path: str, accept: str) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=5)
        try:
            connection.request("GET", path, headers={"Accept": accept})
            response = connection.getresponse()
            body = response.read()
            headers = {
                name: value
                for name, value in response.getheaders()
                if name.lower() in ("content-type", "docker-content-digest", "location")
            }
            return response.status, headers, body
        finally:
            connection.close()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FlakyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def test_registry_answering_503_once_is_retried_and_allowed(registry, write_config, shared_signed) -> None:
    with FlakyProxy(registry) as proxy:
        image = f"{proxy.host}/{shared_signed.repo}:v1"
        run = run_request(write_config(insecure=(proxy.host,)), pod(image))
    assert run.response == {"allowed": True}, run.message
    manifest_path = f"/v2/{shared_signed.repo}/manifests/v1"
    # The manifest was asked for again after the 503, and the rest of the verification went on.
    assert proxy.seen[:2] == [(manifest_path, 503), (manifest_path, 200)], proxy.seen
    # .sig manifest and payload (200), referrers probe and fallback tag (404): the lookups go out
    # together (issue 18), so in any order.
    assert sorted(status for _, status in proxy.seen[2:]) == [200, 200, 404, 404], proxy.seen


# ---- TLS, Basic auth and tokens -------------------------------------------------------------------


@pytest.fixture
def tls_signed(tls_registry: Registry, http_for: HttpFor, repo: str, keys: dict[str, TestKey]) -> PushedImage:
    client = http_for(tls_registry)
    image = push_image(client, repo, "v1")
    sign_legacy(client, repo, image.digest, keys["ecdsa-p256"])
    return image


@pytest.mark.parametrize(
    ("trust_ca", "password", "expected"),
    [
        (True, "s3cret", None),
        (False, "s3cret", "TLS verification of {host} failed (certificate signed by an unknown authority"),
        (True, "wrong", "the registry rejected the credentials (401)"),
        (True, None, "the registry requires a login and no credentials are configured for {host}"),
    ],
    ids=[
        "ca-bundle-and-credentials-allowed",
        "without-the-ca-denied-unknown-authority",
        "wrong-password-denied-authentication",
        "no-credentials-denied-login-required",
    ],
)
def test_tls_registry_with_basic_auth(
    tls_registry, tls_signed, write_config, tmp_path, trust_ca, password, expected
) -> None:
    auth = docker_config_json(tmp_path, tls_registry.host, "tester", password) if password else None
    # The rule names the registry: signgate contacts a loopback address only when the config names it.
    config = write_config(
        ca_bundle=tls_registry.ca_path if trust_ca else None,
        auth=auth,
        policy=[{"images": f"{tls_registry.host}/**"}],
    )
    run = run_request(config, pod(tls_signed.reference))
    if expected is None:
        assert run.response == {"allowed": True}, run.message
        return
    assert run.allowed is False
    assert denial('container "c0"', tls_signed.reference) in run.message
    assert expected.format(host=tls_registry.host) in run.message


@pytest.mark.parametrize("with_credentials", [False, True], ids=["anonymous-pull-allowed", "with-credentials-file-allowed"])
def test_token_registry_fetches_one_token_per_process(
    token_registry, http_for, repo, keys, write_config, tmp_path, with_credentials
) -> None:
    client = http_for(token_registry)
    image = push_image(client, repo, "v1")
    sign_legacy(client, repo, image.digest, keys["ecdsa-p256"])
    token_server = token_registry.token_server
    assert token_server is not None
    auth = docker_config_json(tmp_path, token_registry.host, "tester", "s3cret") if with_credentials else None
    before = len(token_server.requests)

    run = run_request(write_config(insecure=(token_registry.host,), auth=auth), pod(image.reference))

    assert run.response == {"allowed": True}, run.message
    fetched = [r for r in token_server.requests[before:] if r.query.get("scope") == [f"repository:{repo}:pull"]]
    # One token for the repository serves the manifest, the .sig tag, the payload blob, the
    # referrers probe and the fallback tag.
    assert len(fetched) == 1, fetched
    assert fetched[0].status == 200
    assert fetched[0].query.get("service") == [token_server.service]
    # The token service is plain HTTP on another host:port, so the credentials are never sent
    # there (README: only over HTTPS, or to the registry host itself). Anonymous pull suffices.
    assert fetched[0].authorization is False


# ---- warn mode -------------------------------------------------------------------------------------


def test_warn_mode_admits_an_unsigned_image_with_the_reason_as_warning(registry, http, repo, write_config) -> None:
    image = push_image(http, repo, "v1")
    run = run_request(write_config(insecure=(registry.host,), mode="warn"), pod(image.reference))
    assert run.allowed is True
    assert "message" not in run.response
    [warning] = run.warnings
    assert warning.startswith("signgate (warn mode) would deny: " + denial('container "c0"', image.reference))
    assert "no signature found" in warning


# ---- what the hook asks of the registry ----------------------------------------------------------


def test_cold_legacy_signed_image_by_digest_costs_exactly_five_requests(registry, http, repo, keys, write_config) -> None:
    image = push_image(http, repo, "v1")
    signature = sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    config = write_config(insecure=(registry.host,))
    mark = registry.mark()

    run = run_request(config, pod(image.by_digest))

    assert run.response == {"allowed": True}, run.message
    hex_digest = image.digest.partition(":")[2]
    # The image and the lookups that need only its digest go out together (issue 18), so in any order.
    assert sorted(tuple(request) for request in registry.requests_since(mark)) == sorted([
        ("GET", f"/v2/{repo}/manifests/{image.digest}", 200),  # the image, by digest
        ("GET", f"/v2/{repo}/manifests/sha256-{hex_digest}.sig", 200),  # legacy signature manifest
        ("GET", f"/v2/{repo}/blobs/{signature.payload_digest}", 200),  # its simple-signing payload
        ("GET", f"/v2/{repo}/referrers/{image.digest}", 404),  # referrers API probe
        ("GET", f"/v2/{repo}/manifests/sha256-{hex_digest}", 404),  # referrers fallback tag
    ])
    assert signature.payload_digest == sha256_digest(signature.payload)


def test_check_identity_with_a_null_identity_is_a_named_denial_not_an_internal_error(
    registry, http, repo, keys, write_config
) -> None:
    image = push_image(http, repo, "v1")
    # Signed by the trusted key, so the claims are read; `identity: null` is valid JSON that
    # cosign itself writes nowhere, but a payload may carry it.
    payload = (
        b'{"critical":{"identity":null,"image":{"docker-manifest-digest":"' + image.digest.encode()
        + b'"},"type":"cosign container image signature"},"optional":null}'
    )
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"], payload=payload)
    config = write_config(insecure=(registry.host,), policy=[{"images": "**", "checkIdentity": True}])
    run = run_request(config, pod(image.reference))
    assert run.allowed is False
    assert denial('container "c0"', image.reference) + (
        "1 legacy signature found; none is valid: signature by key default: "
        "its payload names no docker-reference, but the rule checks the identity"
    ) in run.message
    assert "internal error" not in run.message
