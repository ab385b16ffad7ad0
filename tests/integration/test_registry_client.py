"""RegistryClient (hooks/lib/signgate/registry.py) against real registries and tiny stub servers.

The real docker-registry runs in its three modes (plain HTTP, TLS + htpasswd, token auth). Where
the real registry cannot show a behaviour (a redirect to a CDN, a referrers API, 429s, lying
digests), a small stdlib HTTP server on 127.0.0.1 plays the registry and records every request it
receives, headers included, so the tests can say what the client sent and to whom.
"""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator, Union

import pytest

from signgate.config import Limits, RegistrySettings
from signgate.credentials import CredentialStore, Credentials
from signgate.deadline import Deadline
from signgate.errors import (
    BadResponse,
    DeadlineExceeded,
    DigestMismatch,
    HostNotAllowed,
    NotFound,
    RegistryAuthError,
    RegistryRateLimited,
    RegistryUnreachable,
    TooLarge,
)
from signgate.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    _retry_after,
    parse_challenge,
)
from support.oci import RegistryHTTP, push_image, push_index, sha256_digest
from support.registry import Registry

USER, PASSWORD = "tester", "s3cret"


# ---- a stub registry ----------------------------------------------------------------------------

Body = Union[bytes, Iterable[bytes]]  # an iterable is sent chunked, without Content-Length
Reply = tuple[int, dict[str, str], Body]


@dataclass(frozen=True)
class Seen:
    """One request as the stub received it."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


class Stub:
    """An HTTP/1.1 server on 127.0.0.1. `routes` maps a path (query included) to a reply, a list of
    replies given in turn (the last one repeats), or a function of the request. Unknown paths get 404.
    Every request is recorded in `seen`."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply | list[Reply] | Callable[[Seen], Reply]] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._served: dict[str, int] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                request = Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
                status, headers, body = stub.reply(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if isinstance(body, bytes):
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in body:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True  # the client gave up reading: expected in cap tests

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def reply(self, request: Seen) -> Reply:
        with self._lock:
            self.seen.append(request)
            route = self.routes.get(request.path)
            count = self._served.get(request.path, 0)
            self._served[request.path] = count + 1
        if route is None:
            return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NOT_FOUND"}]}'
        if callable(route):
            return route(request)
        if isinstance(route, list):
            return route[min(count, len(route) - 1)]
        return route

    def paths(self) -> list[str]:
        return [request.path for request in self.seen]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "Stub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def stub() -> Iterator[Callable[[], Stub]]:
    made: list[Stub] = []

    def make() -> Stub:
        server = Stub().start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def blob_reply(data: bytes, **headers: str) -> Reply:
    return 200, {"Content-Type": "application/octet-stream", **headers}, data


def manifest_reply(data: bytes, media_type: str = OCI_MANIFEST, **headers: str) -> Reply:
    return 200, {"Content-Type": media_type, "Docker-Content-Digest": sha256_digest(data), **headers}, data


def basic_challenge(then: Reply) -> Callable[[Seen], Reply]:
    """401 with a Basic challenge until the request carries the expected credentials."""
    expected = "Basic " + __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def route(request: Seen) -> Reply:
        if request.authorization == expected:
            return then
        return 401, {"WWW-Authenticate": 'Basic realm="stub"'}, b""

    return route


# ---- production clients -------------------------------------------------------------------------


@pytest.fixture
def make_client() -> Iterator[Callable[..., RegistryClient]]:
    """`make_client(*plain_http_hosts, ca_bundle=, credentials={host: (user, password)}, limits=,
    deadline=seconds, elapsed=seconds of it already used, host_allowed=)`; closed at teardown."""
    made: list[RegistryClient] = []

    def make(
        *insecure: str,
        ca_bundle: str | None = None,
        credentials: dict[str, tuple[str, str]] | None = None,
        limits: Limits | None = None,
        deadline: float = 10.0,
        elapsed: float = 0.0,
        host_allowed: Callable[[str, str, str], str | None] | None = None,
        host_named: Callable[[str, str], bool] | None = None,
    ) -> RegistryClient:
        store = CredentialStore({h: Credentials(u, p) for h, (u, p) in (credentials or {}).items()})
        client = RegistryClient(
            RegistrySettings(ca_bundle=ca_bundle, insecure=frozenset(insecure)),
            limits or Limits(),
            Deadline(deadline, start=time.monotonic() - elapsed),
            credentials=store,
            host_allowed=host_allowed,
            host_named=host_named,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@dataclass
class Served:
    """A real registry in one mode, a test-side client to set it up, and a production client."""

    registry: Registry
    http: RegistryHTTP
    client: RegistryClient


MODES = {
    "plain": "registry",
    "tls-basic-auth": "tls_registry",
    "token-auth-anonymous-pull": "token_registry",
}


@pytest.fixture(params=list(MODES), ids=list(MODES))
def served(request: pytest.FixtureRequest, http_for: Callable[..., RegistryHTTP], make_client) -> Served:
    reg: Registry = request.getfixturevalue(MODES[request.param])
    if reg.mode == "tls_htpasswd":
        client = make_client(ca_bundle=str(reg.ca_path), credentials={reg.host: (USER, PASSWORD)})
    else:
        client = make_client(reg.host)  # plain HTTP; the token registry lets anonymous callers pull
    return Served(reg, http_for(reg), client)


# ---- manifests and blobs on the real registry, in all three modes ---------------------------------


def test_manifest_by_tag_and_by_digest_returns_the_digest_of_the_bytes(served: Served, repo: str) -> None:
    image = push_image(served.http, repo, "v1")
    host = served.registry.host
    by_tag = served.client.get_manifest(host, repo, "v1")
    by_digest = served.client.get_manifest(host, repo, image.digest)
    for manifest in (by_tag, by_digest):
        assert manifest.body == image.manifest
        assert manifest.digest == image.digest == sha256_digest(manifest.body)
        assert manifest.media_type == OCI_MANIFEST
        assert manifest.data["layers"][0]["digest"] == image.layer_digests[0]
        assert not manifest.is_index


def test_blob_is_returned_after_its_digest_is_checked(served: Served, repo: str) -> None:
    data = b"a simple-signing payload " + repo.encode()
    digest = served.http.push_blob(repo, data)
    assert served.client.get_blob(served.registry.host, repo, digest) == data


@pytest.mark.parametrize(
    "what", ["missing-tag", "missing-digest", "missing-blob", "missing-repository"]
)
def test_absent_things_raise_not_found(served: Served, repo: str, what: str) -> None:
    push_image(served.http, repo, "v1")
    absent = sha256_digest(b"nothing has this digest " + repo.encode())
    host = served.registry.host
    fetch = {
        "missing-tag": lambda: served.client.get_manifest(host, repo, "no-such-tag"),
        "missing-digest": lambda: served.client.get_manifest(host, repo, absent),
        "missing-blob": lambda: served.client.get_blob(host, repo, absent),
        "missing-repository": lambda: served.client.get_manifest(host, repo + "-absent", "v1"),
    }[what]
    with pytest.raises(NotFound, match="not found"):
        fetch()


def test_token_registry_one_token_serves_every_request_of_a_repository(token_registry, http_for, make_client, repo) -> None:
    http = http_for(token_registry)
    image = push_image(http, repo, "v1")
    client = make_client(token_registry.host)
    token_server = token_registry.token_server
    before = len(token_server.requests)
    client.get_manifest(token_registry.host, repo, "v1")
    client.get_manifest(token_registry.host, repo, image.digest)
    client.get_blob(token_registry.host, repo, image.config_digest)
    fetched = [r for r in token_server.requests[before:] if r.query.get("scope") == [f"repository:{repo}:pull"]]
    assert len(fetched) == 1
    # Only the first request met a 401; the token was reused for the others.
    assert [r.status for r in client.records if r.host == token_registry.host] == [401, 200, 200, 200]


# ---- media types and Accept ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected_type"),
    [
        ("oci-manifest", OCI_MANIFEST),
        ("docker-manifest", DOCKER_MANIFEST),
        ("oci-index", OCI_INDEX),
        ("docker-manifest-list", DOCKER_LIST),
        ("oci-manifest-without-mediatype", OCI_MANIFEST),
    ],
    ids=["oci-manifest", "docker-manifest", "oci-index", "docker-manifest-list", "umoci-manifest-without-mediatype"],
)
def test_default_accept_gets_every_manifest_kind_as_pushed(http, registry, make_client, repo, kind, expected_type) -> None:
    if kind == "oci-index":
        pushed: Any = push_index(http, repo, "v1")
    elif kind == "docker-manifest-list":
        pushed = push_index(http, repo, "v1", media_type="docker")
    else:
        pushed = push_image(
            http, repo, "v1",
            media_type="docker" if kind == "docker-manifest" else "oci",
            omit_media_type=kind.endswith("without-mediatype"),
        )
    manifest = make_client(registry.host).get_manifest(registry.host, repo, "v1")
    assert manifest.digest == pushed.digest
    assert manifest.body == pushed.manifest
    # Without a mediaType field (umoci) the Content-Type header says what it is.
    assert manifest.media_type == expected_type
    assert manifest.is_index is (kind in ("oci-index", "docker-manifest-list"))


def test_manifest_request_accepts_all_four_manifest_and_index_types(stub, make_client) -> None:
    server = stub()
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
    server.routes["/v2/app/manifests/v1"] = manifest_reply(body)
    make_client(server.host).get_manifest(server.host, "app", "v1")
    accepted = {part.strip() for part in server.seen[0].headers["accept"].split(",")}
    assert accepted == {OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST}
    assert {part.strip() for part in MANIFEST_ACCEPT.split(",")} == accepted


@pytest.mark.parametrize(
    ("pushed", "accept", "outcome"),
    [
        # distribution serves an OCI manifest only to a client that accepts the OCI type.
        ("oci-manifest", DOCKER_MANIFEST, NotFound),
        ("oci-index", f"{OCI_MANIFEST}, {DOCKER_MANIFEST}", NotFound),
        # A Docker list asked for without the list type: the registry answers its amd64 manifest.
        # The digest is computed from the bytes received, so it is the child's, not the list's.
        ("docker-manifest-list", f"{OCI_MANIFEST}, {DOCKER_MANIFEST}", "amd64-child"),
    ],
    ids=["oci-manifest-not-served-to-docker-only-accept", "oci-index-not-served-to-manifest-accept", "docker-list-degrades-to-amd64-child"],
)
def test_narrow_accept_behaviour_of_the_registry(http, registry, make_client, repo, pushed, accept, outcome) -> None:
    if pushed == "oci-manifest":
        push_image(http, repo, "v1")
    else:
        index = push_index(http, repo, "v1", media_type="oci" if pushed == "oci-index" else "docker")
    client = make_client(registry.host)
    if outcome is NotFound:
        with pytest.raises(NotFound):
            client.get_manifest(registry.host, repo, "v1", accept=accept)
        return
    manifest = client.get_manifest(registry.host, repo, "v1", accept=accept)
    child = index.child("amd64")
    assert (manifest.digest, manifest.media_type, manifest.body) == (child.digest, DOCKER_MANIFEST, child.manifest)


# ---- digests are checked ---------------------------------------------------------------------------


GOOD = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
EVIL = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[ ]}'


@pytest.mark.parametrize(
    ("what", "route", "reply", "expected"),
    [
        ("blob", f"/v2/app/blobs/{sha256_digest(GOOD)}", blob_reply(EVIL), "not the requested"),
        ("manifest-by-digest", f"/v2/app/manifests/{sha256_digest(GOOD)}", manifest_reply(EVIL), "not the requested"),
        (
            "manifest-by-tag",
            "/v2/app/manifests/v1",
            (200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256_digest(GOOD)}, EVIL),
            f"the registry says digest {sha256_digest(GOOD)} but sent bytes with digest {sha256_digest(EVIL)}",
        ),
    ],
    ids=["blob-with-other-bytes", "manifest-by-digest-with-other-bytes", "tag-whose-header-digest-disagrees"],
)
def test_bytes_that_do_not_match_their_digest_are_refused(stub, make_client, what, route, reply, expected) -> None:
    server = stub()
    server.routes[route] = reply
    client = make_client(server.host)
    with pytest.raises(DigestMismatch, match=expected):
        if what == "blob":
            client.get_blob(server.host, "app", sha256_digest(GOOD))
        elif what == "manifest-by-digest":
            client.get_manifest(server.host, "app", sha256_digest(GOOD))
        else:
            client.get_manifest(server.host, "app", "v1")


def test_unsupported_digest_algorithm_is_refused(stub, make_client) -> None:
    server = stub()
    server.routes["/v2/app/blobs/md5:0123"] = blob_reply(b"x")
    with pytest.raises(DigestMismatch, match="'md5' is not supported"):
        make_client(server.host).get_blob(server.host, "app", "md5:0123")


# ---- size caps ---------------------------------------------------------------------------------------


def test_manifest_larger_than_the_limit_is_too_large(http, registry, make_client, repo) -> None:
    small = push_image(http, repo, "small")
    big = push_image(http, repo, "big", annotations={"padding": "x" * 2000})
    assert len(small.manifest) < 1024 < len(big.manifest)
    client = make_client(registry.host, limits=Limits(max_manifest_bytes=1024))
    assert client.get_manifest(registry.host, repo, "small").digest == small.digest
    with pytest.raises(TooLarge, match=f"is {len(big.manifest)} bytes, more than the limit of 1024 bytes"):
        client.get_manifest(registry.host, repo, "big")


def test_blob_larger_than_the_limit_is_too_large(http, registry, make_client, repo) -> None:
    digest = http.push_blob(repo, b"p" * 2048)
    client = make_client(registry.host, limits=Limits(max_blob_bytes=2048))
    assert len(client.get_blob(registry.host, repo, digest)) == 2048
    with pytest.raises(TooLarge, match="more than the limit of 2047 bytes"):
        client.get_blob(registry.host, repo, digest, max_bytes=2047)


def test_body_without_content_length_is_cut_at_the_limit(stub, make_client) -> None:
    server = stub()
    sent: list[int] = []

    def endless() -> Iterator[bytes]:
        for _ in range(10_000):  # 640 MB if nobody stopped reading
            sent.append(1)
            yield b"z" * 65536

    digest = sha256_digest(b"whatever")
    server.routes[f"/v2/app/blobs/{digest}"] = lambda request: (200, {}, endless())
    client = make_client(server.host, limits=Limits(max_blob_bytes=100_000))
    with pytest.raises(TooLarge, match="is larger than the limit of 100000 bytes"):
        client.get_blob(server.host, "app", digest)
    time.sleep(0.1)
    assert len(sent) < 100, "the client kept reading past the cap"


# ---- credentials go only where they belong -----------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "credentials_follow"),
    [("other-host", False), ("same-host", True)],
    ids=["redirect-to-another-host-carries-no-credentials", "redirect-on-the-same-host-keeps-credentials"],
)
def test_blob_redirect_and_basic_credentials(stub, make_client, target, credentials_follow) -> None:
    registry_stub, cdn = stub(), stub()
    payload = b"signature payload"
    digest = sha256_digest(payload)
    where = cdn if target == "other-host" else registry_stub
    location = f"http://{where.host}/cdn/{digest}?signed=1"
    registry_stub.routes[f"/v2/app/blobs/{digest}"] = basic_challenge((307, {"Location": location}, b""))
    where.routes[f"/cdn/{digest}?signed=1"] = blob_reply(payload)
    client = make_client(registry_stub.host, cdn.host, credentials={registry_stub.host: (USER, PASSWORD)})

    assert client.get_blob(registry_stub.host, "app", digest) == payload

    [redirected] = [r for r in where.seen if r.path.startswith("/cdn/")]
    assert (redirected.authorization is not None) == credentials_follow
    # The registry itself got the credentials, after its challenge.
    assert [r.authorization is not None for r in registry_stub.seen if r.path.startswith("/v2/")] == [False, True]
    assert all(r.authorization is None for r in cdn.seen)


def test_bearer_token_is_not_forwarded_on_a_redirect_to_another_host(stub, make_client) -> None:
    registry_stub, cdn = stub(), stub()
    payload = b"bundle"
    digest = sha256_digest(payload)
    registry_stub.routes["/token?scope=repository%3Aapp%3Apull&service=stub"] = (
        200, {"Content-Type": "application/json"}, b'{"token": "tok-123"}'
    )

    def blob(request: Seen) -> Reply:
        if request.authorization == "Bearer tok-123":
            return 307, {"Location": f"http://{cdn.host}/b"}, b""
        realm = f"http://{registry_stub.host}/token"
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="stub",scope="repository:app:pull"'}, b""

    registry_stub.routes[f"/v2/app/blobs/{digest}"] = blob
    cdn.routes["/b"] = blob_reply(payload)
    client = make_client(registry_stub.host, cdn.host, credentials={registry_stub.host: (USER, PASSWORD)})

    assert client.get_blob(registry_stub.host, "app", digest) == payload
    assert cdn.paths() == ["/b"] and cdn.seen[0].authorization is None
    # The token service is the registry host itself, so the credentials may go there (over HTTP).
    [token_request] = [r for r in registry_stub.seen if r.path.startswith("/token")]
    assert token_request.authorization is not None and token_request.authorization.startswith("Basic ")


@pytest.mark.parametrize(
    ("realm_on", "credentials_sent"),
    [("registry-host", True), ("other-host-plain-http", False)],
    ids=["token-service-on-the-registry-host-gets-credentials", "plain-http-token-service-elsewhere-gets-none"],
)
def test_credentials_to_the_token_service(stub, make_client, realm_on, credentials_sent) -> None:
    registry_stub = stub()
    token_service = registry_stub if realm_on == "registry-host" else stub()
    token_service.routes["/token?scope=repository%3Aapp%3Apull"] = (200, {}, b'{"access_token": "t0k"}')
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()

    def manifest(request: Seen) -> Reply:
        if request.authorization == "Bearer t0k":
            return manifest_reply(body)
        return 401, {"WWW-Authenticate": f'Bearer realm="http://{token_service.host}/token"'}, b""

    registry_stub.routes["/v2/app/manifests/v1"] = manifest
    client = make_client(registry_stub.host, token_service.host, credentials={registry_stub.host: (USER, PASSWORD)})
    assert client.get_manifest(registry_stub.host, "app", "v1").body == body
    [token_request] = [r for r in token_service.seen if r.path.startswith("/token")]
    assert (token_request.authorization is not None) == credentials_sent


def test_token_service_refusal_after_withholding_credentials_says_so(stub, make_client) -> None:
    registry_stub, token_service = stub(), stub()
    token_service.routes["/token?scope=repository%3Aapp%3Apull"] = (401, {"WWW-Authenticate": 'Basic realm="t"'}, b"")
    registry_stub.routes["/v2/app/manifests/v1"] = (
        401, {"WWW-Authenticate": f'Bearer realm="http://{token_service.host}/token"'}, b""
    )
    client = make_client(registry_stub.host, token_service.host, credentials={registry_stub.host: (USER, PASSWORD)})
    with pytest.raises(RegistryAuthError) as raised:
        client.get_manifest(registry_stub.host, "app", "v1")
    # Not "refused the credentials": none were sent. Say why, so the fix (HTTPS) is obvious.
    assert "not sent" in str(raised.value) and "plain HTTP" in str(raised.value), str(raised.value)
    assert [r.authorization for r in token_service.seen] == [None]


def test_basic_credentials_are_sent_only_to_their_own_host(stub, make_client) -> None:
    own, other = stub(), stub()
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
    for server in (own, other):
        server.routes["/v2/app/manifests/v1"] = basic_challenge(manifest_reply(body))
    client = make_client(own.host, other.host, credentials={own.host: (USER, PASSWORD)})

    assert client.get_manifest(own.host, "app", "v1").body == body
    with pytest.raises(RegistryAuthError, match=f"no credentials are configured for {other.host}"):
        client.get_manifest(other.host, "app", "v1")
    assert [r.authorization is not None for r in own.seen] == [False, True]
    assert [r.authorization for r in other.seen] == [None]


def test_tls_registry_refuses_credentials_of_another_host(tls_registry, http_for, make_client, repo) -> None:
    push_image(http_for(tls_registry), repo, "v1")
    client = make_client(ca_bundle=str(tls_registry.ca_path), credentials={"127.0.0.1:1": (USER, PASSWORD)})
    with pytest.raises(RegistryAuthError, match=f"no credentials are configured for {tls_registry.host}"):
        client.get_manifest(tls_registry.host, repo, "v1")


def test_wrong_password_is_an_authentication_error(tls_registry, http_for, make_client, repo) -> None:
    push_image(http_for(tls_registry), repo, "v1")
    client = make_client(ca_bundle=str(tls_registry.ca_path), credentials={tls_registry.host: (USER, "wrong")})
    with pytest.raises(RegistryAuthError, match=r"rejected the credentials \(401\)"):
        client.get_manifest(tls_registry.host, repo, "v1")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("tls-without-its-ca", "certificate signed by an unknown authority; set registries.caBundle"),
        ("https-to-a-plain-http-registry", "does not speak TLS; list it under registries.insecure"),
    ],
)
def test_tls_problems_are_named(request, make_client, case, expected) -> None:
    if case == "tls-without-its-ca":
        reg = request.getfixturevalue("tls_registry")
    else:
        reg = request.getfixturevalue("registry")
    client = make_client()  # HTTPS with the system CAs only
    with pytest.raises(RegistryUnreachable, match=expected) as raised:
        client.get_manifest(reg.host, "t/any", "v1")
    assert f"TLS verification of {reg.host} failed" in str(raised.value)


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once the socket is closed


@pytest.mark.parametrize("named", [True, False], ids=["named-in-the-configuration", "allowed-only-by-a-wildcard"])
def test_connection_failures_of_a_host_no_rule_names_all_read_unreachable(request, make_client, named) -> None:
    # refused, not TLS, and silent: a port scanner could tell them apart; kubectl readers must not.
    plain = request.getfixturevalue("registry")  # plain HTTP, asked over HTTPS: "does not speak TLS"
    with socket.socket() as silent:  # accepts into its backlog, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hosts = {"refused": _closed_port(), "not-tls": plain.host, "silent": f"127.0.0.1:{silent.getsockname()[1]}"}
        client = make_client(deadline=10.0, limits=Limits(connect_timeout_seconds=0.5, read_timeout_seconds=0.5),
                             host_named=lambda host, scheme: named)
        errors = {}
        for case, host in hosts.items():
            with pytest.raises(RegistryUnreachable) as raised:
                client.get_manifest(host, "t/any", "v1")
            errors[case] = raised.value
    details = {case: error.log_detail for case, error in errors.items()}
    messages = {case: str(error) for case, error in errors.items()}
    if named:
        assert "connection refused" in messages["refused"]
        assert "does not speak TLS" in messages["not-tls"]
        assert "did not answer in time" in messages["silent"]
        assert details == {"refused": None, "not-tls": None, "silent": None}
    else:
        for case, host in hosts.items():
            assert messages[case] == f"registry {host} unreachable (the cause is in the signgate log)"
        assert "connection refused" in details["refused"]
        assert "does not speak TLS" in details["not-tls"]
        assert "did not answer in time" in details["silent"]


def test_refused_hosts_are_never_contacted_not_even_by_a_redirect(stub, make_client) -> None:
    allowed, refused = stub(), stub()
    digest = sha256_digest(b"x")
    allowed.routes[f"/v2/app/blobs/{digest}"] = (302, {"Location": f"http://{refused.host}/x"}, b"")
    refused.routes["/x"] = blob_reply(b"x")

    def host_allowed(host: str, scheme: str, role: str) -> str | None:
        return f"{host} is not in the policy" if host == refused.host else None

    client = make_client(allowed.host, refused.host, host_allowed=host_allowed)
    with pytest.raises(HostNotAllowed, match=f"{refused.host} is not in the policy"):
        client.get_manifest(refused.host, "app", "v1")
    with pytest.raises(HostNotAllowed):
        client.get_blob(allowed.host, "app", digest)
    assert refused.seen == []


# ---- the referrers API --------------------------------------------------------------------------------


def test_registry_without_referrers_api_gives_none(http, registry, make_client, repo) -> None:
    image = push_image(http, repo, "v1")
    client = make_client(registry.host)
    assert client.get_referrers(registry.host, repo, image.digest, max_descriptors=50) is None


DIGEST = sha256_digest(b"the image")
REFERRERS = f"/v2/app/referrers/{DIGEST}"


def descriptors(*names: str) -> list[dict[str, Any]]:
    return [
        {"mediaType": OCI_MANIFEST, "digest": sha256_digest(name.encode()), "size": 100,
         "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}
        for name in names
    ]


def index_page(entries: list[dict[str, Any]], link: str | None = None, content_type: str = OCI_INDEX) -> Reply:
    headers = {"Content-Type": content_type}
    if link:
        headers["Link"] = link
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return 200, headers, body


@pytest.mark.parametrize(
    ("pages", "max_descriptors", "expected", "fetched"),
    [
        ({REFERRERS: index_page(descriptors("a", "b"))}, 50, ["a", "b"], [REFERRERS]),
        (
            {
                REFERRERS: index_page(descriptors("a", "b"), f'<{REFERRERS}?n=2&last=b>; rel="next"'),
                f"{REFERRERS}?n=2&last=b": index_page(descriptors("c")),
            },
            50, ["a", "b", "c"], [REFERRERS, f"{REFERRERS}?n=2&last=b"],
        ),
        (
            {
                REFERRERS: index_page(descriptors("a", "b"), f'<{REFERRERS}?last=b>; rel="next"'),
                f"{REFERRERS}?last=b": index_page(descriptors("c")),
            },
            2, ["a", "b"], [REFERRERS],
        ),
        (
            {REFERRERS: index_page(descriptors("a", "b", "c"))},
            2, ["a", "b"], [REFERRERS],
        ),
        (
            {REFERRERS: index_page(descriptors("a"), f'<http://127.0.0.1:1{REFERRERS}?last=a>; rel="next"')},
            50, ["a"], [REFERRERS],
        ),
        (
            {
                REFERRERS: index_page(descriptors("a"), f'<{REFERRERS}?last=a>; rel="next"'),
                f"{REFERRERS}?last=a": (404, {}, b""),
            },
            50, ["a"], [REFERRERS, f"{REFERRERS}?last=a"],
        ),
        ({REFERRERS: index_page(descriptors("a"), content_type="application/json")}, 50, None, [REFERRERS]),
        ({REFERRERS: (404, {}, b"404 page not found")}, 50, None, [REFERRERS]),
        ({REFERRERS: (400, {}, b"")}, 50, None, [REFERRERS]),
        ({REFERRERS: (406, {}, b"")}, 50, None, [REFERRERS]),
    ],
    ids=[
        "one-page",
        "link-pagination-is-followed",
        "pagination-stops-at-the-maximum",
        "one-page-is-truncated-to-the-maximum",
        "next-link-to-another-host-is-not-followed",
        "a-missing-next-page-keeps-what-was-read",
        "not-an-oci-index-means-no-referrers-api",
        "404-means-no-referrers-api",
        "400-means-no-referrers-api",
        "406-means-no-referrers-api",
    ],
)
def test_referrers_pages(stub, make_client, pages, max_descriptors, expected, fetched) -> None:
    server = stub()
    server.routes.update(pages)
    found = make_client(server.host).get_referrers(server.host, "app", DIGEST, max_descriptors)
    if expected is None:
        assert found is None
    else:
        assert found == descriptors(*expected)
    assert server.paths() == fetched
    assert all(request.headers["accept"] == OCI_INDEX for request in server.seen)


def test_referrers_page_that_is_not_an_index_after_the_first_is_an_error(stub, make_client) -> None:
    server = stub()
    server.routes[REFERRERS] = index_page(descriptors("a"), f'<{REFERRERS}?last=a>; rel="next"')
    server.routes[f"{REFERRERS}?last=a"] = (200, {"Content-Type": OCI_INDEX}, b'{"schemaVersion": 2}')
    with pytest.raises(BadResponse, match="a page is not an OCI index"):
        make_client(server.host).get_referrers(server.host, "app", DIGEST, 50)


# ---- challenges ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
            ("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:library/nginx:pull"}),
        ),
        ('Basic realm="Registry Realm"', ("basic", {"realm": "Registry Realm"})),
        ('BEARER Realm="r", Service="s"', ("bearer", {"realm": "r", "service": "s"})),
        ('Bearer realm="r",scope="repository:a:pull,push"', ("bearer", {"realm": "r", "scope": "repository:a:pull,push"})),
        (r'Bearer realm="say \"hi\""', ("bearer", {"realm": 'say "hi"'})),
        ("Bearer realm=https://x/token,service=reg", ("bearer", {"realm": "https://x/token", "service": "reg"})),
        ('Bearer error, realm="r"', ("bearer", {"realm": "r"})),
        ("Basic", ("basic", {})),
        ("", ("", {})),
    ],
    ids=[
        "docker-hub-bearer", "basic", "scheme-and-keys-are-case-insensitive", "comma-inside-quotes",
        "escaped-quote", "unquoted-values", "bare-token-skipped", "scheme-only", "empty",
    ],
)
def test_parse_challenge(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_challenge(header) == expected


# ---- retries and Retry-After ---------------------------------------------------------------------------


class InSeconds(float):
    """A Retry-After HTTP-date this many seconds from when the test runs (not when it is collected)."""

    def header(self) -> str:
        return email.utils.formatdate(time.time() + self, usegmt=True)


@pytest.mark.parametrize(
    ("value", "attempt", "low", "high"),
    [
        (None, 1, 0.2, 0.2),
        (None, 2, 0.4, 0.4),
        ("0", 1, 0.0, 0.0),
        ("3", 1, 3.0, 3.0),
        (" 7 ", 1, 7.0, 7.0),
        (InSeconds(30), 1, 25.0, 30.0),
        (InSeconds(-30), 1, 0.0, 0.0),
        ("soon", 2, 0.4, 0.4),
        ("1.5", 1, 0.2, 0.2),
    ],
    ids=[
        "absent-backoff-first", "absent-backoff-doubles", "zero-seconds", "seconds", "seconds-with-spaces",
        "http-date-in-the-future", "http-date-in-the-past-is-now", "garbage-falls-back-to-backoff",
        "fractional-is-not-a-delay-seconds-value",
    ],
)
def test_retry_after_values(value: str | InSeconds | None, attempt: int, low: float, high: float) -> None:
    header = value.header() if isinstance(value, InSeconds) else value
    assert low <= _retry_after(header, attempt) <= high


def test_429_with_retry_after_zero_is_retried(stub, make_client) -> None:
    server = stub()
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
    server.routes["/v2/app/manifests/v1"] = [(429, {"Retry-After": "0"}, b""), manifest_reply(body)]
    client = make_client(server.host)
    started = time.monotonic()
    assert client.get_manifest(server.host, "app", "v1").body == body
    assert time.monotonic() - started < 1.0
    assert [r.status for r in client.records] == [429, 200]


def test_429_asking_to_wait_beyond_the_deadline_fails_at_once(stub, make_client) -> None:
    server = stub()
    server.routes["/v2/app/manifests/v1"] = (429, {"Retry-After": "30"}, b"")
    client = make_client(server.host, deadline=2)
    started = time.monotonic()
    with pytest.raises(RegistryRateLimited, match="it asks to retry after 30 s, beyond the 2 s deadline"):
        client.get_manifest(server.host, "app", "v1")
    assert time.monotonic() - started < 0.5
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    ("status", "retry_after", "elapsed", "error", "expected"),
    [
        (429, "30", 0.0, RegistryRateLimited,
         r"rate-limited by the registry \(429\); it asks to retry after 30 s, beyond the 3 s deadline"),
        (503, "30", 0.0, RegistryUnreachable,
         r"answered HTTP 503; it asks to retry after 30 s, beyond the 3 s deadline"),
        # 2 s is within the 3 s deadline, but only about 1 s of it is left.
        (429, "2", 2.0, RegistryRateLimited,
         r"it asks to retry after 2 s, more than the [01]\.\d s left of the 3 s deadline"),
        (503, "2", 2.0, RegistryUnreachable,
         r"answered HTTP 503; it asks to retry after 2 s, more than the [01]\.\d s left of the 3 s deadline"),
        # "soon" means nothing: our backoff (0.2 s) does not fit in what is left, and no wait is quoted.
        (429, "soon", 2.85, RegistryRateLimited, r"rate-limited by the registry \(429\) after 1 attempts$"),
    ],
    ids=[
        "429-retry-after-beyond-the-deadline", "503-retry-after-beyond-the-deadline",
        "429-retry-after-beyond-what-is-left", "503-retry-after-beyond-what-is-left",
        "429-unreadable-retry-after-is-not-quoted",
    ],
)
def test_retry_after_that_cannot_be_honoured_fails_at_once_saying_why(
    stub, make_client, status, retry_after, elapsed, error, expected
) -> None:
    server = stub()
    server.routes["/v2/app/manifests/v1"] = (status, {"Retry-After": retry_after}, b"")
    client = make_client(server.host, deadline=3, elapsed=elapsed)
    with pytest.raises(error, match=expected):
        client.get_manifest(server.host, "app", "v1")
    assert len(server.seen) == 1


def test_503_on_every_attempt_gives_up_after_three(stub, make_client) -> None:
    server = stub()
    server.routes["/v2/app/manifests/v1"] = (503, {"Retry-After": "0"}, b"")
    client = make_client(server.host)
    with pytest.raises(RegistryUnreachable, match="answered HTTP 503 after 3 attempts"):
        client.get_manifest(server.host, "app", "v1")
    assert len(server.seen) == 3


# ---- the deadline -------------------------------------------------------------------------------------


def test_a_slowly_dripping_body_is_cut_at_the_deadline(stub, make_client) -> None:
    server = stub()
    digest = sha256_digest(b"never complete")

    def drip() -> Iterator[bytes]:
        for _ in range(100):
            time.sleep(0.05)
            yield b"."

    server.routes[f"/v2/app/blobs/{digest}"] = lambda request: (200, {}, drip())
    client = make_client(server.host, deadline=0.5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="not verified within 0.5 s"):
        client.get_blob(server.host, "app", digest)
    assert time.monotonic() - started < 1.5


# ---- tokens and credentials that HTTP headers cannot carry (issue 13, finding 7e) ----------------


@pytest.mark.parametrize(
    "token",
    ["s3cr€t", "s3cr\u00e9t", "s3cr\u0000t", "s3.cr.et\u200b"],
    ids=["not-latin-1", "latin-1-but-not-ascii", "control-character", "invisible-unicode"],
)
def test_a_token_that_no_header_can_carry_is_an_auth_error_naming_the_registry_not_the_token(stub, make_client, token) -> None:
    registry_stub = stub()
    registry_stub.routes["/token?scope=repository%3Aapp%3Apull"] = (
        200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode()
    )
    registry_stub.routes["/v2/app/manifests/v1"] = (
        401, {"WWW-Authenticate": f'Bearer realm="http://{registry_stub.host}/token"'}, b""
    )
    client = make_client(registry_stub.host)
    with pytest.raises(RegistryAuthError) as raised:
        client.get_manifest(registry_stub.host, "app", "v1")
    text = str(raised.value)
    assert f"the token service sent no usable token for {registry_stub.host}: it holds characters other than visible ASCII" in text
    assert "s3" not in text, "the token itself never appears in a message"
    assert [r.path for r in registry_stub.seen] == ["/v2/app/manifests/v1", "/token?scope=repository%3Aapp%3Apull"]


def test_credentials_beyond_latin_1_are_sent_as_utf_8(stub, make_client) -> None:
    # Basic credentials travel base64-encoded, so any character is fine: UTF-8, as docker does.
    user, password = "jürgen", "pässwörd€"
    expected = "Basic " + __import__("base64").b64encode(f"{user}:{password}".encode()).decode()
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
    own = stub()
    own.routes["/v2/app/manifests/v1"] = lambda request: (
        manifest_reply(body) if request.authorization == expected else (401, {"WWW-Authenticate": 'Basic realm="s"'}, b"")
    )
    client = make_client(own.host, credentials={own.host: (user, password)})
    assert client.get_manifest(own.host, "app", "v1").body == body


def test_through_the_hook_such_a_token_is_a_denial_naming_the_registry(stub, tmp_path, keys) -> None:
    from support.contract import request_for, run_request, write_config

    registry_stub = stub()
    registry_stub.routes["/token?scope=repository%3Aapp%3Apull"] = (200, {}, json.dumps({"token": "s3cr€t"}).encode())
    registry_stub.routes["/v2/app/manifests/v1"] = (
        401, {"WWW-Authenticate": f'Bearer realm="http://{registry_stub.host}/token"'}, b""
    )
    image = f"{registry_stub.host}/app:v1"
    run = run_request(write_config(tmp_path, keys["ecdsa-p256"].pub_path, registry_stub.host), request_for("Pod", [image]))
    assert run.allowed is False
    assert "internal error" not in run.message and "s3" not in run.message
    assert f'container "c0" image "{image}": ' in run.message
    assert f"the token service sent no usable token for {registry_stub.host}: it holds characters other than visible ASCII" in run.message
