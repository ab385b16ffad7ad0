"""The instruments of bench/realistic.py: a latency-injecting TCP proxy, a TLS-terminating HTTP
relay that logs every request's timing, and the critical-path arithmetic over that log.

Topology (everything on 127.0.0.1):

    client ──TCP──▶ DelayProxy ──TCP──▶ TLSTerminator ──HTTP──▶ registry (or token server)
             (one-way delay both ways)   (TLS with its own CA; logs connection, handshake and
                                          request start/end times; no delay behind it)

A TCP proxy in front of TLS sees only bytes, never requests; the terminator behind it sees the
requests as the server does, with the delay already applied in front of it. Its timestamps are
therefore server-side times, which is what a registry's access log would show (but to the
microsecond, where distribution's access log has one-second resolution).

DelayProxy
    Each chunk read from one side is written to the other side no sooner than `delay` seconds after
    it was read, in order (one queue and one writer per direction). With `handshake_rtt` the first
    client-to-server chunk of each connection waits one extra round trip (2 × delay): the kernel
    completes the TCP handshake with the proxy at once, so without this a new connection would cost
    the client nothing; with it, the client's first bytes reach the server 1.5 RTT after connect(),
    as over a real link (SYN, SYN-ACK, then data). Buffers are bounded (a full queue stops reading
    from that side) and so is the number of connections.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

CHUNK = 65536
QUEUE_CHUNKS = 64  # per direction: at most 4 MiB in flight per connection side
# Connections a client closed linger here until the relay behind notices (up to its 30 s idle
# timeout), and a verifier that issues its lookups concurrently opens several per image: 512 was
# reached within one bench run (issue 18, item 2). About 4 descriptors per connection in the bench's
# process, so 2048 stays well within its limit.
MAX_CONNECTIONS = 2048


class DelayProxy:
    """A TCP proxy on 127.0.0.1 adding `delay` seconds one way, in both directions, to every chunk.

    `upstream` is (host, port) or a callable returning it at connect time (so the proxy can be started,
    and its port handed out, before the server behind it exists). `delay` may be changed while running;
    a chunk uses the delay in force when it was read.
    """

    def __init__(self, upstream: tuple[str, int] | Callable[[], tuple[str, int]], delay: float = 0.0, *,
                 handshake_rtt: bool = True, max_connections: int = MAX_CONNECTIONS) -> None:
        self._upstream = upstream
        self.delay = delay
        self.handshake_rtt = handshake_rtt
        self.max_connections = max_connections
        self.port = 0
        self.connections = 0  # accepted so far
        self.active = 0
        self.refused = 0  # over max_connections, or the upstream could not be reached
        self.measured: list[float] = []  # per chunk: time written minus time read, minus the handshake wait
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None] | None] = set()
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "DelayProxy":
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("delay proxy did not start")
        if self._error is not None:
            raise RuntimeError(f"delay proxy failed to start: {self._error}")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, limit=CHUNK))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "DelayProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- one connection ----------------------------------------------------------------------------

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)  # a strong reference: the loop holds tasks only weakly
        try:
            await self._serve(client_reader, client_writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            over = self.active >= self.max_connections
            if not over:
                self.active += 1
        if over:
            self.refused += 1
            client_writer.close()
            return
        try:
            upstream = self._upstream() if callable(self._upstream) else self._upstream
            try:
                server_reader, server_writer = await asyncio.open_connection(*upstream, limit=CHUNK)
            except OSError:
                self.refused += 1
                client_writer.close()
                return
            try:
                await asyncio.gather(
                    self._pipe(client_reader, server_writer, first_extra=self.handshake_rtt),
                    self._pipe(server_reader, client_writer, first_extra=False),
                    return_exceptions=True,
                )
            except asyncio.CancelledError:
                pass  # the proxy is stopping: close both sides below and end quietly
            for writer in (client_writer, server_writer):
                writer.close()
                try:
                    await writer.wait_closed()
                except (OSError, asyncio.CancelledError):
                    pass
        finally:
            with self._lock:
                self.active -= 1

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, first_extra: bool) -> None:
        """Read chunks from one side and deliver each after the delay, in order; EOF is delayed too."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def deliver() -> None:
            broken = False
            while True:
                read_at, due, data = await queue.get()
                if broken:  # keep draining so the reader is never stuck on a full queue
                    if not data:
                        return
                    continue
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    if not data:  # EOF: half-close, so the other direction can still finish
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    writer.write(data)
                    await writer.drain()
                except (ConnectionError, OSError, RuntimeError):
                    broken = True
                    continue
                self.measured.append(loop.time() - read_at)

        delivering = asyncio.ensure_future(deliver())
        extra = first_extra
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                now = loop.time()
                due = now + self.delay + (2 * self.delay if extra else 0.0)
                if extra and data:
                    # The handshake wait is not part of the per-chunk delay that `measured` reports.
                    now += 2 * self.delay
                    extra = False
                await queue.put((now, due, data))
                if not data:
                    break
            await delivering
        except (ConnectionError, OSError):
            pass
        finally:
            delivering.cancel()


# -- the TLS-terminating, request-logging relay ------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One thing the server side saw: a TCP connection (accept until the client's first byte),
    a TLS handshake (first byte until the handshake completed) or an HTTP request (headers read
    until the response was written)."""

    service: str  # "registry" or "token"
    connection: int
    kind: str  # "tcp", "tls", "request"
    start: float  # time.perf_counter() seconds, server side
    end: float
    round_trips: int  # what this event costs the client sequentially: 1, or 2 for a TLS 1.2 handshake
    what: str = ""  # "GET /v2/.../manifests/v1 200", "TLSv1.3"
    repository: str = ""  # of a request: /v2/<repository>/..., or a token request's scope


class EventLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._next_connection = 0

    def add(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def new_connection(self) -> int:
        with self._lock:
            self._next_connection += 1
            return self._next_connection

    def between(self, start: float, end: float) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e.start >= start and e.start <= end]


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


Upstream = "tuple[str, int] | Callable[[], tuple[str, int]]"


class TLSTerminator:
    """HTTPS on 127.0.0.1 with `cert`/`key`, relaying each request to the plain-HTTP `upstream`
    (one upstream connection per client connection and upstream) and logging Events into `log`.

    `routes` maps a path prefix to (service name, upstream): a token service served on the
    registry's own host and port, as Harbor (/service/token) and ghcr.io (/token) do. Clients that
    guard against token realms on other loopback or private addresses (go-containerregistry, hence
    cosign) accept a realm on the registry's own host:port only.
    """

    def __init__(self, upstream: Upstream, cert: Path, key: Path, log: EventLog, service: str,
                 routes: "dict[str, tuple[str, Upstream]] | None" = None) -> None:
        self._upstream = upstream
        self.log = log
        self.service = service
        self.routes = dict(routes or {})
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.context = context
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, path: str) -> tuple[str, tuple[str, int]]:
        """(service, upstream address) for a request path."""
        service, upstream = self.service, self._upstream
        for prefix, (name, target) in self.routes.items():
            if path.startswith(prefix):
                service, upstream = name, target
                break
        return service, upstream() if callable(upstream) else upstream

    def start(self) -> "TLSTerminator":
        terminator = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def get_request(self):  # type: ignore[override]
                sock, address = super().get_request()
                return (sock, time.perf_counter()), address

            def shutdown_request(self, request):  # type: ignore[override]
                super().shutdown_request(request[0] if isinstance(request, tuple) else request)

        class Handler(_RelayHandler):
            relay = terminator

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"tls-terminator-{self.service}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def __enter__(self) -> "TLSTerminator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _RelayHandler(BaseHTTPRequestHandler):
    relay: TLSTerminator
    protocol_version = "HTTP/1.1"
    timeout = 30
    # The response goes out as a header write and a body write; with Nagle's algorithm the body
    # would wait for the ACK of the headers, which the peer delays by up to 40 ms: a stall per
    # request that belongs to the instrument, not to the client measured.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the Event log is the record

    def setup(self) -> None:
        raw, accepted = self.request
        self.connection_id = self.relay.log.new_connection()
        raw.settimeout(self.timeout)
        # The client's first byte (the ClientHello): the end of the TCP connection's cost to it.
        # (A peek, not select(): with many connections open the descriptor may exceed select's 1024.)
        try:
            raw.recv(1, socket.MSG_PEEK)
        except OSError:
            pass  # no ClientHello in time: the handshake below fails and says so
        hello = time.perf_counter()
        self.relay.log.add(Event(self.relay.service, self.connection_id, "tcp", accepted, hello, 1))
        tls = self.relay.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (OSError, ssl.SSLError):
            tls.close()
            raise
        version = tls.version() or "?"
        self.relay.log.add(Event(self.relay.service, self.connection_id, "tls", hello, time.perf_counter(),
                                 2 if version in ("TLSv1.2", "TLSv1.1", "TLSv1") else 1, version))
        self.request = tls
        self.upstream_connections: dict[tuple[str, int], http.client.HTTPConnection] = {}
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            for upstream in self.upstream_connections.values():
                upstream.close()
            try:
                self.connection.close()
            except OSError:
                pass

    def handle_one_request(self) -> None:
        # Started when the request line can be read: that is when the request reached the server.
        self.request_started = 0.0
        try:
            # peek waits for the next request's first byte without consuming it (bytes already
            # buffered count too, which a select() on the socket would miss).
            first = self.rfile.peek(1)
        except (OSError, ValueError):
            first = b""
        if not first:
            self.close_connection = True
            return
        self.request_started = time.perf_counter()
        super().handle_one_request()

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        service, address = self.relay.route(self.path)
        for attempt in (1, 2):
            upstream = self.upstream_connections.get(address)
            if upstream is None:
                upstream = self.upstream_connections[address] = http.client.HTTPConnection(*address, timeout=30)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException):
                # A kept-alive upstream connection the server closed: reconnect once.
                upstream.close()
                del self.upstream_connections[address]
                if attempt == 2:
                    self.send_error(502, "upstream unreachable")
                    return
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command == "HEAD" or response.status in (204, 304):
            declared = response.getheader("Content-Length")
            if declared is not None:
                self.send_header("Content-Length", declared)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)
        self.wfile.flush()
        self.relay.log.add(Event(service, self.connection_id, "request", self.request_started,
                                 time.perf_counter(), 1, f"{self.command} {self.path.split('?')[0]} {response.status}",
                                 repository_of(self.path)))

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay


def repository_of(target: str) -> str:
    """The repository a registry request or token request is about ("" if none): the name in
    /v2/<name>/(manifests|blobs|referrers|tags)/..., or in a token request's repository scope."""
    url = urlsplit(target)
    if url.path.startswith("/v2/"):
        parts = url.path[4:].split("/")
        for i in range(len(parts) - 1, 0, -1):
            if parts[i] in ("manifests", "blobs", "referrers", "tags"):
                return "/".join(parts[:i])
        return ""
    for scope in parse_qs(url.query).get("scope", []):
        kind, _, rest = scope.partition(":")
        if kind == "repository" and ":" in rest:
            return rest.rpartition(":")[0]
    return ""


# -- arithmetic over the log -------------------------------------------------------------------------


def critical_path(events: list[Event]) -> tuple[int, list[Event]]:
    """The longest chain of events in which each one started after the previous one ended, counted in
    round trips (a TCP connection 1, a TLS 1.3 handshake 1, a request 1), and that chain.

    Events of one connection are ordered by construction (TCP, then TLS, then its requests in turn);
    across connections an event depends on another only if it started after that one ended, so
    requests that overlapped in time count once. At 50 ms RTT a dependent event starts at least one
    RTT after its predecessor ended, so overlap is unambiguous; at RTT 0 two independent requests
    may happen not to overlap and then count as sequential: the RTT-0 depth is an upper bound.
    """
    ordered = sorted(events, key=lambda e: (e.start, e.end))
    depth: list[int] = []
    previous: list[int] = []
    for i, event in enumerate(ordered):
        best, best_j = 0, -1
        for j in range(i):
            other = ordered[j]
            same_connection = other.connection == event.connection  # numbered per EventLog
            if (same_connection or other.end <= event.start) and depth[j] > best:
                best, best_j = depth[j], j
        depth.append(best + event.round_trips)
        previous.append(best_j)
    if not ordered:
        return 0, []
    i = max(range(len(ordered)), key=lambda k: depth[k])
    total, chain = depth[i], []
    while i >= 0:
        chain.append(ordered[i])
        i = previous[i]
    return total, chain[::-1]


def per_repository_critical_path(events: list[Event]) -> int:
    """The longest critical path of any one repository's events, ignoring dependencies between
    repositories: a lower bound for several images verified at once, where `critical_path` over all
    events is an upper bound (independent streams staggered in time chain into each other there).
    A connection's set-up is counted for the repository of the first request made on it."""
    first: dict[int, str] = {}
    for event in sorted(events, key=lambda e: e.start):
        if event.kind == "request" and event.connection not in first:
            first[event.connection] = event.repository
    groups: dict[str, list[Event]] = {}
    for event in events:
        owner = event.repository if event.kind == "request" else first.get(event.connection)
        if owner is not None:
            groups.setdefault(owner, []).append(event)
    return max((critical_path(group)[0] for group in groups.values()), default=0)


def loopback_echo_server() -> tuple[socket.socket, threading.Thread]:
    """A TCP echo server on 127.0.0.1 (for tests of the proxy): echoes until EOF, then closes."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    def echo(connection: socket.socket) -> None:
        with connection:
            while True:
                data = connection.recv(CHUNK)
                if not data:
                    connection.shutdown(socket.SHUT_WR)
                    return
                connection.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread
