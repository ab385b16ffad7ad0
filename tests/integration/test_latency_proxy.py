"""The instruments of bench/realistic.py: the delay proxy really delays, forwards bytes intact in both
directions and closes cleanly; the TLS relay logs what it relays; the critical-path arithmetic counts
overlapping requests once. These are properties of the measuring instrument, not timings of signgate.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from latency_proxy import DelayProxy, Event, EventLog, TLSTerminator, critical_path, loopback_echo_server  # noqa: E402
from support import certs  # noqa: E402

DELAY = 0.04


@pytest.fixture
def echo():
    listener, _ = loopback_echo_server()
    yield listener.getsockname()
    listener.close()


def _round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.perf_counter()
        sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
        sender.start()
        received = bytearray()
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        sender.join()
        return bytes(received), time.perf_counter() - started


def test_the_proxy_delays_every_chunk_by_at_least_the_configured_delay(echo):
    with DelayProxy(echo, DELAY, handshake_rtt=False) as proxy:
        received, elapsed = _round_trip(proxy.port, b"ping")
        assert received == b"ping"
        # Both directions delayed: the echo cannot come back sooner than one full round trip.
        assert elapsed >= 2 * DELAY
        assert proxy.measured and min(proxy.measured) >= DELAY


def test_the_handshake_round_trip_is_added_once_per_connection(echo):
    with DelayProxy(echo, DELAY, handshake_rtt=True) as proxy:
        received, elapsed = _round_trip(proxy.port, b"hello")
        assert received == b"hello"
        assert elapsed >= 4 * DELAY  # the simulated TCP handshake (2 × delay) plus the round trip


def test_bytes_arrive_intact_and_in_order_in_both_directions(echo):
    payload = os.urandom(3 * 1024 * 1024 + 17)  # many chunks, more than the bounded queue holds at once
    with DelayProxy(echo, 0.002) as proxy:
        received, _ = _round_trip(proxy.port, payload)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_the_proxy_closes_cleanly_on_both_sides(echo):
    with DelayProxy(echo, 0.001) as proxy:
        for _ in range(5):
            assert _round_trip(proxy.port, b"x")[0] == b"x"
        deadline = time.monotonic() + 5
        while proxy.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.connections == 5
        assert proxy.active == 0
        assert proxy.refused == 0


def test_an_unreachable_upstream_closes_the_client_connection():
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    with DelayProxy(("127.0.0.1", port), 0.0) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            try:
                assert sock.recv(10) == b""
            except ConnectionResetError:
                pass
        assert proxy.refused == 1


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_the_tls_relay_verifies_against_its_ca_and_logs_connection_handshake_and_requests(tmp_path: Path):
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    ca = certs.make_ca(tmp_path, "relay test CA")
    cert, key = certs.make_server_cert(ca, tmp_path)
    log = EventLog()
    try:
        with TLSTerminator(backend.server_address, cert, key, log, "registry") as relay, \
                DelayProxy(("127.0.0.1", relay.port), DELAY) as proxy:
            context = ssl.create_default_context(cafile=str(ca.cert_path))
            connection = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=10)
            for path in ("/a", "/b"):
                connection.request("GET", path)
                response = connection.getresponse()
                assert response.status == 200 and response.read() == f"hello {path}".encode()
            connection.close()
            time.sleep(0.2)
            events = log.between(0, time.perf_counter())
    finally:
        backend.shutdown()
    assert [e.kind for e in events] == ["tcp", "tls", "request", "request"]
    assert [e.what for e in events if e.kind == "request"] == ["GET /a 200", "GET /b 200"]
    depth, chain = critical_path(events)
    assert depth == 4  # TCP, TLS 1.3, and two requests in turn on one connection
    assert len(chain) == 4


def test_overlapping_requests_on_two_connections_count_once():
    def conn(n: int, start: float) -> list[Event]:
        return [Event("registry", n, "tcp", start, start + 1, 1), Event("registry", n, "tls", start + 1, start + 2, 1),
                Event("registry", n, "request", start + 2, start + 3, 1)]

    parallel = conn(1, 0) + conn(2, 0.1)
    assert critical_path(parallel)[0] == 3
    after = conn(1, 0) + conn(2, 3.5)  # the second connection opened after the first's response
    assert critical_path(after)[0] == 6
    assert critical_path([])[0] == 0


def test_requests_are_attributed_to_their_repository():
    from latency_proxy import per_repository_critical_path, repository_of

    assert repository_of("/v2/bench/many3/manifests/v1") == "bench/many3"
    assert repository_of("/v2/a/b/blobs/sha256:00") == "a/b"
    assert repository_of("/v2/a/referrers/sha256:00") == "a"
    assert repository_of("/token?scope=repository%3Abench%2Fmany3%3Apull&service=x") == "bench/many3"
    assert repository_of("/v2/") == ""
    # Two repositories' chains staggered in time: all events chain into 4, each repository alone is 2.
    events = [Event("registry", 1, "request", 0, 1, 1, repository="a"), Event("registry", 2, "request", 1.5, 2.5, 1, repository="b"),
              Event("registry", 1, "request", 3, 4, 1, repository="a"), Event("registry", 2, "request", 4.5, 5.5, 1, repository="b")]
    assert critical_path(events)[0] == 4
    assert per_repository_critical_path(events) == 2
