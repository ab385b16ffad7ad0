"""A registry that cannot be reached is explained in words chosen from the failure's type and code.

The registry client classifies a failed connection by the exception types and OpenSSL codes that
requests wraps (`registry._causes`), never by searching the message for words: messages change
between library versions, types and codes do not. Each case below is a real failure on loopback,
produced by a TLS or TCP server started by the test, and read through the real client.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signgate.deadline import Deadline
from signgate.errors import RegistryUnreachable
from signgate.registry import RegistryClient
from signgate.settings import Limits, RegistrySettings
from support import certs


def _leaf(ca: certs.CA, directory: Path, host: str, *, expired: bool) -> tuple[Path, Path]:
    now = dt.datetime.now(dt.timezone.utc)
    not_before, not_after = (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired else (now - dt.timedelta(hours=1), now + dt.timedelta(days=1))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{host}-{expired}.crt", directory / f"{host}-{expired}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class _Server:
    """Accepts connections on 127.0.0.1; with a certificate, performs (and fails) the TLS handshake;
    without one, answers plain HTTP, so that a TLS client meets a server that does not speak TLS."""

    def __init__(self, cert: tuple[Path, Path] | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = None
        if cert is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(str(cert[0]), str(cert[1]))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    if self.context is not None:
                        with self.context.wrap_socket(conn, server_side=True):
                            pass
                    else:
                        conn.recv(4096)
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass  # the client refused our certificate: that is the point

    def close(self) -> None:
        self.listener.close()


@pytest.fixture()
def ca(tmp_path: Path) -> certs.CA:
    return certs.make_ca(tmp_path / "ca")


def _failure(host: str, ca: certs.CA | None) -> str:
    client = RegistryClient(RegistrySettings(ca_bundle=str(ca.cert_path) if ca else None), Limits(), Deadline(10.0))
    try:
        with pytest.raises(RegistryUnreachable) as caught:
            client.get_manifest(host, "app", "v1")
    finally:
        client.close()
    return str(caught.value)


@pytest.fixture()
def serve() -> Iterator:
    servers: list[_Server] = []

    def start(cert: tuple[Path, Path] | None) -> int:
        servers.append(_Server(cert))
        return servers[-1].port

    yield start
    for server in servers:
        server.close()


def test_a_certificate_for_another_name_is_a_name_mismatch(ca, serve, tmp_path: Path) -> None:
    port = serve(_leaf(ca, tmp_path, "other.example", expired=False))
    assert "the certificate does not match the host name" in _failure(f"localhost:{port}", ca)


def test_an_expired_certificate_is_called_expired(ca, serve, tmp_path: Path) -> None:
    port = serve(_leaf(ca, tmp_path, "localhost", expired=True))
    assert "the certificate has expired" in _failure(f"localhost:{port}", ca)


def test_a_certificate_from_an_untrusted_ca_names_the_setting_that_fixes_it(ca, serve, tmp_path: Path) -> None:
    port = serve(_leaf(ca, tmp_path, "localhost", expired=False))
    assert "certificate signed by an unknown authority; set registries.caBundle" in _failure(f"localhost:{port}", None)


def test_a_plain_http_server_asked_over_tls_does_not_speak_tls(serve) -> None:
    port = serve(None)
    assert "does not speak TLS; list it under registries.insecure" in _failure(f"localhost:{port}", None)


def test_a_closed_port_is_connection_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    assert "connection refused" in _failure(f"localhost:{port}", None)
