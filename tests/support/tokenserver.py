"""A Docker-registry token server (the ``auth.token`` protocol of distribution 2.8), for tests.

It signs ES256 JWTs with a fresh P-256 key whose self-signed certificate is what the registry is given
as ``rootcertbundle``. The registry finds the key by the JWT ``kid``, which must be the libtrust key id.

Grants: anonymous callers get ``pull`` only; a known user with the right password gets what they ask for
among ``pull``, ``push``, ``delete`` and ``*`` (the registry checks ``delete`` for manifest DELETEs, so
the test client needs it); a wrong password is a 401. Every request is recorded so tests can assert on
how a client authenticates (e.g. that it does not send credentials it should not).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

ANONYMOUS_ACTIONS = frozenset({"pull"})
USER_ACTIONS = frozenset({"pull", "push", "delete", "*"})


@dataclass(frozen=True)
class TokenRequest:
    """One request as the token server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: bool  # an Authorization header was present at all
    username: str | None  # the Basic-auth user, if one could be decoded
    status: int


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_kid(public_key: ec.EllipticCurvePublicKey) -> str:
    """libtrust key id: first 240 bits of sha256(DER SPKI), base32, in 12 colon-separated groups."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(text[i : i + 4] for i in range(0, 48, 4))


def parse_scope(scope: str) -> tuple[str, str, set[str]] | None:
    """``repository:org/app:pull,push`` → (type, name, actions). Names never contain ':' but the
    type may (``repository(plugin)``), so split the actions off the right first."""
    head, sep, actions = scope.rpartition(":")
    if not sep:
        return None
    type_, sep, name = head.partition(":")
    if not sep or not name:
        return None
    return type_, name, {a for a in actions.split(",") if a}


def _self_signed(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )


class TokenServer:
    """Token endpoint on ``http://127.0.0.1:<port>/token``; use as a context manager or start()/stop()."""

    def __init__(
        self,
        directory: Path | str,
        users: Mapping[str, str],
        *,
        service: str = "signgate-test-registry",
        issuer: str = "signgate-test-issuer",
        expires_in: int = 300,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.kid = libtrust_kid(self._key.public_key())
        self.cert_path = self.directory / "token-signer.crt"
        self.cert_path.write_bytes(
            _self_signed(self._key, issuer).public_bytes(serialization.Encoding.PEM)
        )
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "TokenServer":
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name="signgate-token-server",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> "TokenServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token server not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    # -- request log -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequest]:
        """A snapshot; safe to call while clients are talking to the server."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # -- token logic -----------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> tuple[bool, str | None]:
        """(ok, username). No header = anonymous (ok); a malformed or wrong Basic header is not ok."""
        if header is None:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        if not sep or self.users.get(user) != password:
            return False, user or None
        return True, user

    def grant(self, username: str | None, scopes: list[str]) -> list[dict[str, object]]:
        allowed = USER_ACTIONS if username else ANONYMOUS_ACTIONS
        access: list[dict[str, object]] = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            type_, name, wanted = parsed
            actions = sorted(wanted & allowed)
            if actions:
                access.append({"type": type_, "name": name, "actions": actions})
        return access

    def issue(self, username: str | None, access: list[dict[str, object]]) -> dict[str, object]:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "kid": self.kid}
        claims = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS ES256 wants the fixed-width r||s form, not DER.
        token = signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        issued_at = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": self.expires_in,
                "issued_at": issued_at}


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; with Nagle's algorithm on, the second waits
        # for the client's delayed ACK (up to 40 ms per token answer), which benchmarks would count.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # the structured request list replaces stderr noise

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            query = parse_qs(url.query, keep_blank_values=True)
            auth_header = self.headers.get("Authorization")
            ok, user = server.authenticate(auth_header)
            if url.path != "/token":
                status, body, extra = 404, {"error": "not found"}, {}
            elif not ok:
                status, body = 401, {"errors": [{"code": "UNAUTHORIZED",
                                                 "message": "invalid username/password"}]}
                extra = {"WWW-Authenticate": 'Basic realm="signgate-token"'}
            elif query.get("service", [server.service])[0] != server.service:
                status, body, extra = 400, {"error": "unknown service"}, {}
            else:
                status, extra = 200, {}
                body = server.issue(user, server.grant(user, query.get("scope", [])))
            server._record(TokenRequest(self.command, url.path, query, auth_header is not None,
                                        user, status))
            self._send(status, body, extra)

        def do_POST(self) -> None:  # noqa: N802
            # The OAuth2 form flow is not offered, as with many real token servers; clients must
            # fall back to GET. Drain the body so the connection stays usable.
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            url = urlsplit(self.path)
            server._record(TokenRequest(self.command, url.path, parse_qs(url.query),
                                        "Authorization" in self.headers, None, 405))
            self._send(405, {"error": "method not allowed"}, {"Allow": "GET"})

        def _send(self, status: int, body: object, extra: Mapping[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
