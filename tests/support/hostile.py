"""A deliberately misbehaving registry, and a guard that records every connection the hook makes.

`HostileRegistry` is a stdlib HTTP(S) server in a thread, bound to 127.0.0.1 only. Out of the box
it serves an honest cosign setup for one image: the image manifest (by tag and by digest), the
legacy `sha256-<hex>.sig` signature manifest and its simple-signing payload blob, signed with the
given key; the referrers API and the fallback tag answer 404, as distribution 2.8 does. Tests
then replace single routes with misbehaving replies: lying digests, bodies over the caps (with or
without Content-Length), endless or dripping bodies, redirects, 429s, broken JSON, thousands of
layers or referrers, broken token services. A secret string is planted in every error body, the
credentials and the token, so tests can check that no message or log ever carries it.

`ConnectionAudit` writes a `sitecustomize.py` that the hook subprocess imports at start-up (through
PYTHONPATH). It installs an audit hook (PEP 578) that records the address of every
`socket.connect` and *blocks* every connection that is not to an explicitly allowed
127.0.0.1:port. So a test can assert that the hook never even tried to reach a refused host, and no
bug can make a test send traffic anywhere but to its own servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Union

from support.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, canonical_json, sha256_digest
from support.signer import (
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING,
    TestKey,
    b64,
    cosign_config,
    fallback_tag,
    sig_tag,
    signature_manifest,
    simple_signing_payload,
)

# ---- replies ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP answer.

    framing: "length" sends Content-Length (`declared_length` overrides the true length, to lie),
    "chunked" uses chunked transfer encoding (no Content-Length), "close" sends the body and closes
    the connection (no Content-Length, no chunking).
    drip: seconds between single bytes of the body (the headers go out at once).
    endless: after `body`, keep sending `endless_chunk` until the client goes away or
    `endless_limit` bytes were sent.
    hangup: close the connection without sending anything.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    framing: str = "length"
    declared_length: int | None = None
    drip: float | None = None
    endless: bool = False
    endless_chunk: bytes = b"x" * 65536
    endless_limit: int = 1 << 30
    hangup: bool = False  # close the connection without answering at all


Route = Union[Reply, list, Callable[["Seen"], Reply]]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it (header names in lower case)."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]

    @property
    def bare_path(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


def json_reply(data: Any, status: int = 200, media_type: str = "application/json", **headers: str) -> Reply:
    return Reply(status, {"Content-Type": media_type, **headers}, canonical_json(data))


# ---- the server ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls_context: ssl.SSLContext | None = None
    connections = 0  # accepted TCP connections, so tests can see whether clients reuse them
    _count_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            self.connections += 1
        # The TLS handshake runs in the request's own thread, so a client that aborts it (an
        # unknown CA) or never starts it cannot block the accept loop.
        if self.tls_context is not None:
            try:
                request.settimeout(10)
                request = self.tls_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up mid-body are the point of several tests


class StubServer:
    """A bare HTTP(S) server on 127.0.0.1: `routes` (path without query -> Route), 404 otherwise.
    Records every request in `seen`, and how many body bytes went out per path in `sent`."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None, secret: str | None = None) -> None:
        self.secret = secret or f"hostile-secret-{uuid.uuid4().hex}"
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._served: dict[str, int] = {}
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.tls_context = context
        self.tls = tls is not None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- addresses ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        return self._server.connections

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "StubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what was asked -----------------------------------------------------------------------

    def requests_to(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.bare_path == path]

    def paths(self) -> list[str]:
        with self._lock:
            return [s.bare_path for s in self.seen]

    # -- answering ----------------------------------------------------------------------------

    def not_found(self) -> Reply:
        body = {"errors": [{"code": "NOT_FOUND", "message": "not here", "detail": self.secret}]}
        return json_reply(body, 404)

    def reply_for(self, request: Seen) -> Reply:
        route = self.routes.get(request.bare_path)
        if route is None:
            return self.not_found()
        if callable(route):
            return route(request)
        if isinstance(route, list):
            with self._lock:
                served = self._served.get(request.bare_path, 0)
                self._served[request.bare_path] = served + 1
            return route[min(served, len(route) - 1)]
        return route

    def handle(self, request: Seen) -> Reply:
        return self.reply_for(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:  # noqa: N802
                request = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                with server._lock:
                    server.seen.append(request)
                reply = server.handle(request)
                if reply.hangup:
                    self.close_connection = True
                    return
                try:
                    self._send(request, reply, head)
                except OSError:
                    self.close_connection = True

            def _send(self, request: Seen, reply: Reply, head: bool) -> None:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.framing == "length":
                    length = len(reply.body) if reply.declared_length is None else reply.declared_length
                    self.send_header("Content-Length", str(length))
                elif reply.framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if head:
                    return
                self.wfile.flush()
                chunked = reply.framing == "chunked"
                for piece in self._pieces(reply):
                    if server._stop.is_set():
                        self.close_connection = True
                        return
                    data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                    self.wfile.write(data)
                    self.wfile.flush()
                    with server._lock:
                        server.sent[request.bare_path] = server.sent.get(request.bare_path, 0) + len(piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                if reply.declared_length is not None and reply.declared_length != len(reply.body):
                    self.close_connection = True

            def _pieces(self, reply: Reply) -> Iterable[bytes]:
                if reply.drip is not None:
                    for byte in reply.body:
                        if server._stop.wait(reply.drip):
                            return
                        yield bytes([byte])
                elif reply.body:
                    yield reply.body
                if reply.endless:
                    sent = len(reply.body)
                    while sent < reply.endless_limit and not server._stop.is_set():
                        yield reply.endless_chunk
                        sent += len(reply.endless_chunk)

        return Handler


class HostileRegistry(StubServer):
    """A registry serving one image signed (legacy layout) by `key`, every route replaceable.

    Authentication, off by default: `require_basic = (user, password)` answers 401 with a Basic
    challenge to every /v2/ request without those credentials; `require_bearer = token` answers
    401 with a Bearer challenge whose realm is `token_realm` (default: this server's /token, which
    hands out the token unless `routes["/token"]` says otherwise).
    """

    def __init__(self, key: TestKey, *, repo: str = "hostile/app", tag: str = "v1", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = key
        self.repo = repo
        self.tag = tag
        self.password = f"{self.secret}-password"
        self.token = f"{self.secret}-token"
        self.require_basic: tuple[str, str] | None = None
        self.require_bearer: str | None = None
        self.token_realm: str | None = None

        config = b"{}"
        self.image_manifest = canonical_json({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256_digest(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "size": 1234, "digest": sha256_digest(uuid.uuid4().bytes)}],
        })
        self.digest = sha256_digest(self.image_manifest)
        # Another, unsigned image: what a lying registry would serve instead.
        self.other_manifest = self.image_manifest.replace(b'"size":1234', b'"size":4321')
        self.other_digest = sha256_digest(self.other_manifest)

        self.publish_manifest(self.tag, self.image_manifest)
        self.publish_manifest(self.digest, self.image_manifest)
        self.payload = simple_signing_payload(f"{self.host}/{self.repo}", self.digest)
        self.payload_digest = sha256_digest(self.payload)
        self.routes[self.blob_path(self.payload_digest)] = Reply(200, {"Content-Type": "application/octet-stream"}, self.payload)
        self.set_signature_layers([self.signature_layer()])

    # -- names ----------------------------------------------------------------------------------

    @property
    def reference(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repo}@{self.digest}"

    def manifest_path(self, reference: str) -> str:
        return f"/v2/{self.repo}/manifests/{reference}"

    def blob_path(self, digest: str) -> str:
        return f"/v2/{self.repo}/blobs/{digest}"

    @property
    def sig_path(self) -> str:
        return self.manifest_path(sig_tag(self.digest))

    @property
    def referrers_path(self) -> str:
        return f"/v2/{self.repo}/referrers/{self.digest}"

    @property
    def fallback_path(self) -> str:
        return self.manifest_path(fallback_tag(self.digest))

    # -- building the honest setup ------------------------------------------------------------

    def publish_manifest(self, reference: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
        digest = sha256_digest(body)
        self.routes[self.manifest_path(reference)] = Reply(
            200, {"Content-Type": media_type, "Docker-Content-Digest": digest}, body
        )
        return digest

    def signature_layer(self, annotation: Any = None, **extra: Any) -> dict[str, Any]:
        """The descriptor of a simple-signing layer over `self.payload`; `annotation` replaces the
        signature annotation (None: a valid signature by the key)."""
        value = b64(self.key.sign(self.payload)) if annotation is None else annotation
        layer: dict[str, Any] = {
            "mediaType": SIMPLESIGNING,
            "size": len(self.payload),
            "digest": self.payload_digest,
            "annotations": {SIGNATURE_ANNOTATION: value},
        }
        layer.update(extra)
        return layer

    def set_signature_layers(self, layers: list[dict[str, Any]]) -> bytes:
        config = cosign_config([str(layer.get("digest")) for layer in layers[:10] if isinstance(layer, dict)])
        body, media_type = signature_manifest((sha256_digest(config), len(config)), layers)
        self.publish_manifest(sig_tag(self.digest), body, media_type)
        return body

    def referrers_index(self, count: int) -> bytes:
        """An OCI index listing `count` referrers that do not exist."""
        entries = [
            {"mediaType": OCI_MANIFEST, "size": 500, "digest": sha256_digest(b"referrer %d" % n),
             "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}
            for n in range(count)
        ]
        return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})

    # -- authentication -----------------------------------------------------------------------

    def basic_header(self, user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def handle(self, request: Seen) -> Reply:
        if request.bare_path.startswith("/v2/"):
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
        if request.bare_path == "/token" and "/token" not in self.routes:
            return json_reply({"token": self.token, "expires_in": 300})
        return self.reply_for(request)

    def _refusal(self, request: Seen) -> Reply | None:
        body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "detail": self.secret}]}).encode()
        if self.require_basic is not None:
            if request.authorization != self.basic_header(*self.require_basic):
                return Reply(401, {"WWW-Authenticate": 'Basic realm="hostile"', "Content-Type": "application/json"}, body)
        if self.require_bearer is not None:
            if request.authorization != f"Bearer {self.require_bearer}":
                realm = self.token_realm or f"{self.url}/token"
                challenge = f'Bearer realm="{realm}",service="hostile",scope="repository:{self.repo}:pull"'
                return Reply(401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, body)
        return None


# ---- configuration files ------------------------------------------------------------------------


def write_config(path: Path, key: TestKey, **top: Any) -> Path:
    """A signgate configuration as JSON (which the hook parses without importing yaml). Defaults:
    the key as `default`, one rule `**`; `top` adds or replaces top-level fields."""
    data: dict[str, Any] = {"keys": {"default": str(key.pub_path)}, "policy": [{"images": "**"}]}
    data.update(top)
    path.write_text(json.dumps(data, indent=1))
    return path


def docker_config_json(path: Path, host: str, username: str, password: str) -> Path:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


# ---- the connection guard -----------------------------------------------------------------------

_SITECUSTOMIZE = r'''
# Written by tests/support/hostile.py: records every socket.connect of this process and blocks those that
# are not to an allowed 127.0.0.1:port. Nothing else is changed.
import json as _json
import os as _os
import sys as _sys

_LOG = _os.environ.get("HOSTILE_AUDIT_LOG")
_ALLOW = frozenset(a for a in _os.environ.get("HOSTILE_AUDIT_ALLOW", "").split(",") if a)


_NO_DNS = _os.environ.get("HOSTILE_AUDIT_NO_DNS") == "1"


def _audit(event, args):
    if event == "socket.getaddrinfo" and _NO_DNS and _LOG:
        # Opt-in: names are never resolved, so no DNS query leaves the host (address literals
        # need no query and go on to the connect check below).
        import ipaddress as _ipaddress

        host = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        try:
            _ipaddress.ip_address(host)
        except ValueError:
            with open(_LOG, "a", encoding="utf-8") as handle:
                handle.write(_json.dumps({"resolve": host}) + "\n")
            raise PermissionError(f"resolving {host} blocked by the test's connection guard")
        return
    if event != "socket.connect" or not _LOG:
        return
    try:
        address = args[1]
        host, port = str(address[0]), int(address[1])
    except Exception:
        host, port = repr(args[1:]), 0
    allowed = f"{host}:{port}" in _ALLOW
    with open(_LOG, "a", encoding="utf-8") as handle:
        handle.write(_json.dumps({"host": host, "port": port, "allowed": allowed}) + "\n")
    if not allowed:
        raise PermissionError(f"connection to {host}:{port} blocked by the test's connection guard")


_sys.addaudithook(_audit)
'''


class ConnectionAudit:
    """`env` makes a hook subprocess record (and, unless allowed, block) every connection."""

    def __init__(self, directory: Path, allow: Iterable[str] = (), block_dns: bool = False) -> None:
        self.block_dns = block_dns  # also refuse (and record) every name resolution but 127.0.0.1
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        self.log = self.directory / "connections.jsonl"
        self.allowed: set[str] = set(allow)

    def allow(self, *hosts: str) -> "ConnectionAudit":
        self.allowed.update(hosts)
        return self

    @property
    def env(self) -> dict[str, str]:
        for host in self.allowed:
            assert host.startswith("127.0.0.1:"), f"tests may only talk to 127.0.0.1, not {host}"
        existing = os.environ.get("PYTHONPATH")
        return {
            "PYTHONPATH": str(self.directory) + (os.pathsep + existing if existing else ""),
            "HOSTILE_AUDIT_LOG": str(self.log),
            "HOSTILE_AUDIT_ALLOW": ",".join(sorted(self.allowed)),
            "HOSTILE_AUDIT_NO_DNS": "1" if self.block_dns else "0",
        }

    def _entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def connections(self) -> list[dict[str, Any]]:
        return [entry for entry in self._entries() if "resolve" not in entry]

    def resolutions(self) -> list[str]:
        """Names the hook tried to resolve (recorded with block_dns only)."""
        return [entry["resolve"] for entry in self._entries() if "resolve" in entry]

    def clear(self) -> None:
        if self.log.exists():
            self.log.unlink()

    def blocked(self) -> list[dict[str, Any]]:
        return [c for c in self.connections() if not c["allowed"]]
