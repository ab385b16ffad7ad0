"""`signgate serve`: a warm verifier for the hook, with long-lived workers (the client side is relay.py).

shell-operator starts a new hook process for every admission request, and a process that must
verify imports `requests` and `cryptography` first: several times the cost of starting Python.
This service imports them once, then forks workers that live across requests. A worker, for each
connection the parent hands it:

1. receives the binding context as one read-only SCM_RIGHTS descriptor, with the hook's
   SIGNGATE_* variables and how long ago the request started, and replies `accepted`;
2. runs `hook.run_admission`, the code the hook would run itself, writing the response, the
   metrics and the decision log into in-memory files of its own, so that they are exactly those
   of an in-process call, and the deadline still counts from the request's start;
3. replies `done <exit code> <sizes>` followed by those three files, restores its own
   environment and stderr, tells the parent `idle`, and waits for the next connection. The hook
   checks the files and writes them where it would have written its own.

Why long-lived workers (issue 18): at real registry latency the cost of a cold admission is
counted in round trips, and a fresh fork per request paid a TCP and a TLS handshake and a token
request for every registry it touched, about four round trips. A worker that lives on keeps them
(registry.WarmPool): Sessions keyed by (canonical host, TLS trust, credential fingerprint) and
bearer tokens keyed by (host, scope, credential fingerprint), each token only until its
`expires_in` less a margin longer than an admission's deadline, so that nothing obtained with
one credential serves a request made with another, and no token expires mid-admission. The
alternative, a broker in the parent that would own the connections and serve every worker,
would put the registry traffic of all admissions through one process and one more hop, and
make the parent, which must stay responsive to probes and to `queued`, do TLS. Connections and
tokens are all a worker keeps: verdicts and tag resolutions live only in the on-disk cache,
under its rules (tagTtlSeconds), and the configuration and keys are read for every request as
the hook reads them, so configuration changes apply at once. Nothing else of a request's
in-memory state reaches the next one: the environment and stderr are restored, the output files
closed, and the credential fingerprint memo cleared.

Workers: the parent keeps MIN_WORKERS ready, forks more on demand up to --max-workers, hands a
queued connection to the idle worker that was busy most recently (so that under light load one
worker serves request after request, its connections warm), and retires workers idle for
WORKER_IDLE_SECONDS beyond MIN_WORKERS. A worker leaves after MAX_WORKER_REQUESTS requests or
above MAX_WORKER_RSS, and when the parent closes its control connection; one that exits for any
reason (crashed, killed, recycled) is forgotten and replaced when needed. Each is a fork of the
parent taken after preload(): it holds none of the parent's other connections.

The service never holds the hook's response file, metrics file, stdout or stderr: shell-operator
reads a hook's output until stdout and stderr close, so a copy held here (by a request still
queued, or a worker still busy after the hook gave up) would hold its answer back. A worker
whose hook hangs up before its answer exits at once (its request's threads may wait on a
registry until the deadline; a fresh fork replaces the worker in milliseconds), and so does one
whose threads are stuck past the deadline after it answered.

The socket file is created 0600, in a directory the deployment shares only between the hook and
verifier containers, and a client must run as the service's user or as root (SO_PEERCRED).

The parent never blocks on a connection and never gives one a worker before its first bytes
have arrived: a connection that sends nothing within HEADER_TIMEOUT is dropped from the queue,
and one whose client closes is dropped at once (its hook decides by itself). It keeps at most
--max-workers workers alive; requests beyond that wait in a queue. The parent tells every
request's hook `queued` as soon as the request's first bytes arrive, so that the hook waits for a
worker rather than verify in-process on an overloaded machine (relay.py). Pings are answered by
the parent at once, busy or not, because a saturated service is still alive. On SIGTERM or
SIGINT it stops accepting, tells queued clients, closes every worker's control connection (an
idle worker exits at once, a busy one after its request), waits up to STOP_GRACE seconds for
them, and removes the socket.
"""


from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TextIO

from .relay import MAX_LOG_BYTES, MAX_METRICS_BYTES, MAX_RESPONSE_BYTES, PROTOCOL, SATURATED

# Deferred imports: `signgate ping` imports this module and stays light; `serve` loads the whole
# library once in preload(), before it forks its workers.

MAX_HEADER_BYTES = 64 * 1024
MAX_FDS = 4
MAX_ENV = 64
MAX_ENV_VALUE = 4096
# How long a client may take to send its whole request, counted from the parent's accept, queued
# or not. The hook sends it at once.
HEADER_TIMEOUT = 2.0
# A request that waited for a worker past its HEADER_TIMEOUT still gets this long to be read.
HEADER_GRACE = 0.2
STOP_GRACE = 10.0
# Long-lived workers (see the module's docstring): how many are kept ready, how long one more
# may stay idle, and when one is replaced by a fresh fork.
# One ready worker: it holds the warm connections, and under light load serves every request.
# Each more costs about 10 MiB of its own (bench/RESULTS-latency.md), so the workers a burst
# made are retired after half a minute without work.
MIN_WORKERS = 1
WORKER_IDLE_SECONDS = 30.0
MAX_WORKER_REQUESTS = 1000
MAX_WORKER_RSS = 160 * 1024 * 1024
REPLENISH_SECONDS = 0.2
IDLE = b"idle"
ACCEPT_POLL = 0.5
BUSY_POLL = 0.01
MAX_PENDING = 1024
PING_FRAME_BODY = json.dumps({"v": PROTOCOL, "ping": True}).encode()
PING_FRAME = len(PING_FRAME_BODY).to_bytes(4, "big") + PING_FRAME_BODY
FD_NAMES = ("context",)
CONTRACT_VARIABLES = ("BINDING_CONTEXT_PATH", "VALIDATING_RESPONSE_PATH", "ADMISSION_RESPONSE_PATH", "METRICS_PATH")
OUTPUTS = ("response", "metrics", "log")
OUTPUT_LIMITS = {"response": MAX_RESPONSE_BYTES, "metrics": MAX_METRICS_BYTES, "log": MAX_LOG_BYTES}


class RequestError(Exception):
    """A connection whose request this service will not run (told to the client, which falls back)."""


@dataclass(frozen=True)
class WorkRequest:
    elapsed: float  # seconds since the request started (see fastpath.request_started)
    files: dict[str, int]  # descriptor by name (FD_NAMES)
    env: dict[str, str]  # the hook's SIGNGATE_* variables
    ping: bool = False
    metrics: bool = False  # the hook has a metrics file: produce metrics


# ---- the pure part: what a request must look like --------------------------------------------


def parse_request(body: bytes, fds: list[int]) -> WorkRequest:
    """Validate the header and pair its descriptor names with the received descriptors."""
    try:
        header = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RequestError("the request header is not JSON") from None
    if not isinstance(header, dict) or type(header.get("v")) is not int or header["v"] != PROTOCOL:
        raise RequestError(f"unsupported protocol (this service speaks version {PROTOCOL})")
    if header.get("ping") is True:
        if fds:
            raise RequestError("a ping carries no descriptors")
        return WorkRequest(elapsed=0.0, files={}, env={}, ping=True)
    elapsed = header.get("elapsed")
    if not isinstance(elapsed, (int, float)) or isinstance(elapsed, bool) or not 0 <= elapsed <= 3600:
        raise RequestError("elapsed must be a number of seconds between 0 and 3600")
    names = header.get("fds")
    if not isinstance(names, list) or len(names) != len(fds):
        raise RequestError(f"the header names {names!r} but {len(fds)} descriptors arrived")
    if names != list(FD_NAMES):
        raise RequestError(f"the only descriptor is the binding context (fds: [\"context\"]), not {names!r}")
    metrics = header.get("metrics", False)
    if not isinstance(metrics, bool):
        raise RequestError("metrics must be true or false")
    env = header.get("env")
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise RequestError(f"env must be an object of at most {MAX_ENV} variables")
    for key, value in env.items():
        if not (isinstance(value, str) and key.startswith("SIGNGATE_") and len(value) <= MAX_ENV_VALUE and "\0" not in value):
            raise RequestError(f"env may carry only SIGNGATE_* string variables, not {key!r}")
    return WorkRequest(elapsed=float(elapsed), files=dict(zip(names, fds)), env=dict(env), metrics=metrics)


def worker_environ(own: Mapping[str, str], request: WorkRequest, outputs: Mapping[str, int]) -> dict[str, str]:
    """The environment the hook would have had: this process's own (PATH, proxies, ...), the hook's
    SIGNGATE_* variables instead of ours, the binding context the hook sent, and the worker's own
    in-memory files (`outputs`) for the response and, when the hook has a metrics file, metrics."""
    environ = {k: v for k, v in own.items() if not k.startswith("SIGNGATE_") and k not in CONTRACT_VARIABLES}
    environ.update(request.env)
    environ["BINDING_CONTEXT_PATH"] = fd_path(request.files["context"])
    environ["VALIDATING_RESPONSE_PATH"] = environ["ADMISSION_RESPONSE_PATH"] = fd_path(outputs["response"])
    if request.metrics and "metrics" in outputs:
        environ["METRICS_PATH"] = fd_path(outputs["metrics"])
    return environ


def fd_path(fd: int) -> str:
    # Opening /proc/self/fd/N reopens the very file, even though this process may live in another
    # container and not see the hook's /tmp.
    return f"/proc/self/fd/{fd}"


# ---- the worker ----------------------------------------------------------------------------------


def handle(conn: socket.socket, own_environ: Mapping[str, str], log: TextIO, accepted_at: float) -> bool:
    """Serve one connection in a worker, and leave the worker as it was before.

    `accepted_at` is when the parent accepted the connection: time spent queued behind busy
    workers counts against the hook's deadline, and against HEADER_TIMEOUT. Returns False when
    the worker must not serve another request (the admission code failed in a way it never
    should); a worker whose hook hangs up mid-request, or whose threads are stuck past the
    deadline, exits from within (see _HangUpWatch and _exit_now).
    """
    try:
        request = receive(conn, max(accepted_at + HEADER_TIMEOUT, time.monotonic() + HEADER_GRACE))
    except (RequestError, OSError) as exc:
        _log(log, "warn", f"signgate serve: refused a request: {exc}")
        _reply(conn, f"error {exc}")
        return True
    try:
        return _run(conn, request, own_environ, log, accepted_at)
    finally:
        for fd in request.files.values():
            os.close(fd)


def _run(conn: socket.socket, request: WorkRequest, own_environ: Mapping[str, str], log: TextIO, accepted_at: float) -> bool:
    if request.ping:
        _reply(conn, "pong")
        return True
    for name, fd in request.files.items():
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            _log(log, "warn", f"signgate serve: refused a request: the {name} descriptor is not a regular file")
            _reply(conn, f"error the {name} descriptor is not a regular file")
            return True
    # A hook that waited too long for this line has closed the connection and decides by itself:
    # its request must not run a second time here.
    if _peer_gone(conn) or not _reply(conn, "accepted"):
        _log(log, "info", "signgate serve: dropped a request whose hook stopped waiting")
        return True
    watch = _HangUpWatch(conn)
    # The response, metrics and decision log go into this worker's own in-memory files; the hook
    # gets them with `done` and writes them itself (see the module's docstring).
    outputs = {name: os.memfd_create(f"signgate-{name}", os.MFD_CLOEXEC) for name in OUTPUTS}
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    os.dup2(outputs["log"], 2)
    environ = worker_environ(own_environ, request, outputs)
    os.environ.clear()
    os.environ.update(environ)  # for libraries that read it (proxies, CA bundles)
    started = accepted_at - request.elapsed
    from . import registry
    from .hook import run_admission

    def finish(code: int) -> None:
        try:
            sys.stderr.flush()
        except OSError:
            pass
        watch.stop()  # from here on a hang-up is the hook leaving with its answer
        _send_done(conn, code, outputs)

    pool = registry.warm_pool()
    if pool is not None:
        pool.new_admission()
    conn.settimeout(None)
    reusable = True
    try:
        code = run_admission(environ, started, sys.stderr, on_unfinished=lambda: _exit_now(finish))
    except BaseException as exc:  # run_admission answers every error itself; this is a bug
        _log(log, "error", f"signgate serve: worker failed: {type(exc).__name__}: {exc}")
        watch.stop()
        _reply(conn, "error the worker failed")
        reusable = False
    else:
        finish(code)
    finally:
        # Back to the worker's own state, for the next request: its environment, its stderr.
        try:
            sys.stderr.flush()
        except OSError:
            pass
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        for fd in outputs.values():
            os.close(fd)
        os.environ.clear()
        os.environ.update(own_environ)
    return reusable


def _send_done(conn: socket.socket, code: int, outputs: Mapping[str, int]) -> None:
    """`done <code> <response> <metrics> <log>` (sizes in bytes), then the three files' contents."""
    contents = [_read_output(outputs[name], OUTPUT_LIMITS[name], name == "log") for name in OUTPUTS]
    line = f"done {code} " + " ".join(str(len(data)) for data in contents) + "\n"
    try:
        conn.settimeout(5.0)
        conn.sendall(line.encode() + b"".join(contents))
    except OSError:
        pass  # the hook has gone; it decided by itself


def _read_output(fd: int, limit: int, cut: bool) -> bytes:
    data = os.pread(fd, limit + 1, 0)
    if len(data) > limit and cut:  # the log is cut at a line; anything else too big is the hook's to refuse
        data = data[: data.rfind(b"\n", 0, limit) + 1]
    return data


class _HangUpWatch:
    """End this worker as soon as its hook hangs up before its answer: the hook has decided by
    itself, and the work here would only take CPU from admissions that still wait (a cache file
    half written is a temporary file that the cache sweeps). The worker exits rather than abandon
    the request in place: the request's threads may be blocked on a registry until the deadline,
    and a fresh worker from the parent is ready in milliseconds. Its pool of connections goes
    with it; the other workers' do not."""

    def __init__(self, conn: socket.socket) -> None:
        import threading

        self._lock = threading.Lock()
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        poller = select.poll()
        # After its request the hook only reads: POLLRDHUP means it closed, or shut its end.
        poller.register(conn.fileno(), select.POLLRDHUP)
        poller.register(self._wake_r, select.POLLIN)

        def watch() -> None:
            while True:
                for fd, events in poller.poll():
                    if fd == self._wake_r:
                        return
                    if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        with self._lock:
                            if self._stopped:
                                return
                            os._exit(0)

        self._thread = threading.Thread(target=watch, name="hook-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _exit_now(finish: Callable[[int], None]) -> None:
    # Worker threads are stuck on a slow registry past the deadline and the answer is written:
    # tell the hook and leave without waiting for them.
    finish(0)
    os._exit(0)


def receive(conn: socket.socket, deadline: float) -> WorkRequest:
    """Read one length-prefixed header, and the descriptors that came with it, by `deadline`."""
    conn.settimeout(_left(deadline))
    data, fds, flags, _ = socket.recv_fds(conn, MAX_HEADER_BYTES + 4, MAX_FDS)
    try:
        if flags & socket.MSG_CTRUNC:
            raise RequestError(f"more than {MAX_FDS} descriptors")
        while 0 < len(data) < 4:
            data += _recv_by(conn, 4 - len(data), deadline)
        if len(data) < 4:
            raise RequestError("no request header")
        length = int.from_bytes(data[:4], "big")
        if length > MAX_HEADER_BYTES:
            raise RequestError(f"the request header is larger than {MAX_HEADER_BYTES} bytes")
        body = data[4:]
        while len(body) < length:
            body += _recv_by(conn, length - len(body), deadline)
        if len(body) != length:
            raise RequestError("trailing bytes after the request header")
        return parse_request(body, list(fds))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _recv_by(conn: socket.socket, size: int, deadline: float) -> bytes:
    """Up to `size` bytes, failing at `deadline` however slowly they trickle in."""
    conn.settimeout(_left(deadline))
    chunk = conn.recv(size)
    if not chunk:
        raise RequestError("the request header ended early")
    return chunk


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise RequestError(f"no complete request header within {HEADER_TIMEOUT:g} s")
    return left


def _peer_gone(conn: socket.socket) -> bool:
    """True when the client has closed its end (after sending its whole request, it only reads)."""
    # Non-blocking for real: with a timeout set, Python would wait for data before recv().
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        conn.settimeout(1.0)


def _reply(conn: socket.socket, line: str) -> bool:
    """Send one line; False when the hook has gone (it decides by itself)."""
    try:
        conn.settimeout(1.0)
        conn.sendall(line.encode("ascii", "replace")[:200] + b"\n")
        return True
    except OSError:
        return False


def _tell(conn: socket.socket, line: str) -> None:
    """Send one line without ever blocking (the parent's replies; a fresh socket has room)."""
    try:
        conn.send(line.encode("ascii", "replace")[:200] + b"\n", socket.MSG_DONTWAIT)
    except OSError:
        pass


# ---- the parent ----------------------------------------------------------------------------------


def preload() -> None:
    """Import everything a verification may need, so that no worker pays for it.

    The list mirrors the library's deferred imports (they are deferred for the in-process path).
    """
    import base64, concurrent.futures, email.utils, fcntl, ssl, threading, warnings  # noqa: E401, F401

    import certifi  # noqa: F401
    import requests  # noqa: F401
    import yaml  # noqa: F401
    from cryptography import x509  # noqa: F401
    from cryptography.exceptions import InvalidSignature  # noqa: F401
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils  # noqa: F401
    from cryptography.x509.oid import NameOID  # noqa: F401
    from urllib3.util import parse_url  # noqa: F401

    from . import (  # noqa: F401
        cache, credentials, decision, fastpath, hook, keys, metrics, network, pinning, podspec, policy,
        pullsecrets, registry,
    )
    from .verifiers.cosign import bundle, flow, legacy, models, rekor, transparency  # noqa: F401
    from .verifiers.notaryv1 import decision as notary_decision, transport as notary_transport  # noqa: F401
    from .config import ConfigError, config_path_from_env, load_config

    # The TLS trust, built once here: every worker forked from this parent inherits the contexts
    # instead of loading certifi's ~150 certificates itself (about 20 ms of CPU per worker,
    # measured by bench/realistic.py). A worker still rebuilds one whose CA bundle has changed.
    registry.shared_tls_context(None)
    try:
        ca_bundle = load_config(config_path_from_env(os.environ), os.environ).registries.ca_bundle
        if ca_bundle is not None:
            registry.shared_tls_context(ca_bundle)
    except (ConfigError, registry.RegistryError, OSError):
        pass  # each request reports its own configuration problem; this was only a warm-up


def bind(path: str) -> socket.socket:
    """Listen on `path`, mode 0600, replacing a stale socket left by a previous run."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not stat.S_ISSOCK(existing.st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: a stale socket
        else:
            raise OSError(f"another service already listens on {path}")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    listener.listen(128)
    listener.settimeout(ACCEPT_POLL)
    return listener


@dataclass
class Waiting:
    """A connection the parent accepted and no worker has yet."""

    conn: socket.socket
    accepted_at: float
    ready: bool = False  # its first bytes have arrived (and it was told `queued`): a worker may take it


@dataclass
class Worker:
    """A long-lived worker, as the parent sees it."""

    pid: int
    control: socket.socket  # the parent's end of the worker's socketpair
    busy: bool = False
    idle_since: float = 0.0


def serve(path: str, max_workers: int, log: TextIO = sys.stderr, worker_requests: int = MAX_WORKER_REQUESTS) -> int:
    preload()
    try:
        listener = bind(path)
    except OSError as exc:
        _log(log, "error", f"signgate serve: cannot listen on {path}: {exc}")
        return 1
    listener.setblocking(False)
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A worker's exit (SIGCHLD) and SIGTERM wake the poll below through this pipe, so that a
    # queued request gets a free worker at once.
    wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    signal.set_wakeup_fd(wake[1], warn_on_full_buffer=False)
    # Workers are forks: objects frozen here are never touched by their garbage collector, so
    # the memory stays shared with the parent instead of being copied page by page.
    gc.freeze()
    workers: dict[int, Worker] = {}  # by pid, alive or not yet reaped
    controls: dict[int, Worker] = {}  # by the descriptor of the parent's end, while connected
    # Connections without a worker, oldest first. They wait here rather than in the kernel's
    # backlog so that the parent keeps accepting, and so keeps answering pings: a busy service
    # is alive, and its probes must say so.
    waiting: dict[int, Waiting] = {}
    poller = select.poll()  # select() cannot watch descriptors past 1023
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake[0], select.POLLIN)
    _log(log, "info", "signgate serve: listening", socket=path, max_workers=max_workers, worker_requests=worker_requests,
         max_pending=pending_limit(), pid=os.getpid())
    out_of_files_logged = 0.0

    def drop(fd: int, reply: str | None = None) -> None:
        entry = waiting.pop(fd)
        poller.unregister(fd)
        if reply is not None:
            _tell(entry.conn, reply)
        entry.conn.close()

    def disconnect(worker: Worker) -> None:
        """Forget a worker that left (or must leave): it exits on its own once its control ends."""
        if controls.pop(worker.control.fileno(), None) is not None:
            poller.unregister(worker.control.fileno())
        worker.control.close()

    def spawn() -> Worker:
        worker = _spawn(listener, waiting, controls, wake, log, worker_requests)
        workers[worker.pid] = controls[worker.control.fileno()] = worker
        poller.register(worker.control.fileno(), select.POLLIN)
        return worker

    def idle_worker() -> Worker | None:
        # The most recently used first: under light load one worker serves request after request,
        # so its connections and tokens stay warm, and the others can be retired when idle.
        idle = [w for w in controls.values() if not w.busy]
        if idle:
            return max(idle, key=lambda w: w.idle_since)
        if len(workers) < max_workers:
            return spawn()
        return None

    replenish_at = 0.0
    try:
        while not stopping:
            _reap(workers, lambda worker: disconnect(worker))
            for fd in [fd for fd, entry in waiting.items() if entry.ready]:
                worker = idle_worker()
                if worker is None:
                    break
                entry = waiting[fd]
                if not _hand_over(worker, entry):
                    disconnect(worker)  # it died meanwhile; the request waits for another
                    continue
                waiting.pop(fd)
                poller.unregister(fd)
                entry.conn.close()  # the worker has it: the parent holds no hook's connection
                worker.busy = True
            now = time.monotonic()
            # Keep MIN_WORKERS ready; retire the others after WORKER_IDLE_SECONDS without work.
            for worker in sorted((w for w in controls.values() if not w.busy), key=lambda w: w.idle_since):
                if len(controls) > MIN_WORKERS and now - worker.idle_since > WORKER_IDLE_SECONDS:
                    disconnect(worker)
            # (At most every REPLENISH_SECONDS: a worker that dies at once must not make a fork loop.)
            if now >= replenish_at:
                while len(controls) < min(MIN_WORKERS, max_workers) and len(workers) < max_workers:
                    spawn()
                replenish_at = now + REPLENISH_SECONDS
            timeout = ACCEPT_POLL
            for entry in waiting.values():
                if not entry.ready:
                    timeout = min(timeout, entry.accepted_at + HEADER_TIMEOUT - now)
            for fd, events in poller.poll(max(0.0, timeout) * 1000):
                if fd == wake[0]:
                    _drain(fd)
                elif fd == listener.fileno():
                    try:
                        _accept_all(listener, waiting, poller, log)
                    except OSError as exc:  # out of descriptors: leave connections in the backlog for now
                        if time.monotonic() - out_of_files_logged > 10:
                            _log(log, "error", f"signgate serve: cannot accept: {exc}", pending=len(waiting), workers=len(workers))
                            out_of_files_logged = time.monotonic()
                        time.sleep(BUSY_POLL)
                elif fd in controls:
                    worker = controls[fd]
                    try:
                        message = worker.control.recv(16, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        continue
                    except OSError:
                        message = b""
                    if message == IDLE:
                        worker.busy = False
                        worker.idle_since = time.monotonic()
                    else:  # it exited (recycled, crashed, killed, or its hook hung up)
                        disconnect(worker)
                elif fd in waiting:
                    if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        # Its client closed: a hook that stopped waiting decides by itself.
                        _log(log, "info", "signgate serve: dropped a queued request whose client left")
                        drop(fd)
                    elif events & select.POLLIN and not waiting[fd].ready:
                        if _answer_ping(waiting[fd].conn):
                            drop(fd)
                        else:
                            # At once, before any worker takes it: the hook then knows that the
                            # service has its request and waits for a worker, which on a loaded
                            # machine may take longer to come than the hook's handshake allows
                            # (relay.py).
                            _tell(waiting[fd].conn, "queued")
                            waiting[fd].ready = True
                            poller.modify(fd, 0)  # from now on, only its hang-up matters
            now = time.monotonic()
            for fd in [fd for fd, entry in waiting.items() if not entry.ready and now - entry.accepted_at >= HEADER_TIMEOUT]:
                _log(log, "warn", f"signgate serve: refused a request: no request header within {HEADER_TIMEOUT:g} s")
                drop(fd, f"error no request header within {HEADER_TIMEOUT:g} s")
    finally:
        listener.close()
        for fd in list(waiting):  # their hooks decide in-process
            drop(fd, "error the verifier service is stopping")
        try:
            os.unlink(path)
        except OSError:
            pass
        # An idle worker reads the end of its control connection and exits; a busy one exits
        # when its request is done.
        for worker in list(controls.values()):
            disconnect(worker)
        end = time.monotonic() + STOP_GRACE
        while workers and time.monotonic() < end:
            _reap(workers, lambda worker: None)
            time.sleep(0.05)
        _log(log, "info", "signgate serve: stopped", unfinished_workers=len(workers))
    return 0


def _hand_over(worker: Worker, entry: Waiting) -> bool:
    """Pass a queued connection to an idle worker, with when it was accepted."""
    try:
        socket.send_fds(worker.control, [struct.pack("d", entry.accepted_at)], [entry.conn.fileno()], socket.MSG_DONTWAIT)
        return True
    except OSError:
        return False


def _accept_all(listener: socket.socket, waiting: dict[int, Waiting], poller: Any, log: TextIO) -> None:
    """Accept what the backlog holds: answer pings, refuse strangers, queue the rest."""
    own_uid = os.geteuid()
    for _ in range(64):
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        accepted_at = time.monotonic()
        uid = _peer_uid(conn)
        if uid not in (own_uid, 0):
            _log(log, "warn", f"signgate serve: refused a connection from uid {uid}: this service serves uid {own_uid} and root only")
            _tell(conn, "error this service serves only its own user")
            conn.close()
            continue
        if _answer_ping(conn):
            conn.close()
            continue
        if len(waiting) >= pending_limit():  # read each time: the limit may be lowered at run time
            # The hook sheds at once rather than waiting for a turn (relay.py).
            _tell(conn, f"error {SATURATED}")
            conn.close()
            continue
        waiting[conn.fileno()] = Waiting(conn, accepted_at)
        poller.register(conn.fileno(), select.POLLIN)


def _peer_uid(conn: socket.socket) -> int:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)[1]


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass


def _spawn(
    listener: socket.socket,
    waiting: dict[int, Waiting],
    controls: dict[int, Worker],
    wake: tuple[int, int],
    log: TextIO,
    worker_requests: int = MAX_WORKER_REQUESTS,
) -> Worker:
    """Fork a long-lived worker; the parent keeps its pid and one end of a socketpair."""
    parent_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(number, signal.SIG_DFL)
            os.close(wake[0])
            os.close(wake[1])
            # Only its own connections: a queued client's socket held here would outlive the
            # parent closing it (on SIGTERM, or when its hook leaves) until this worker exits,
            # and another worker's control socket would keep that worker from seeing the parent
            # close it.
            listener.close()
            parent_end.close()
            for other in waiting.values():
                other.conn.close()
            for worker in controls.values():
                worker.control.close()
            work(worker_end, os.environ.copy(), log, worker_requests)
        except BaseException:
            code = 1
        finally:
            try:
                sys.stderr.flush()
            except BaseException:
                pass
            os._exit(code)
    worker_end.close()
    return Worker(pid, parent_end, busy=False, idle_since=time.monotonic())


def work(control: socket.socket, own_environ: Mapping[str, str], log: TextIO, max_requests: int = MAX_WORKER_REQUESTS) -> None:
    """A worker's life: take a connection from the parent, serve it, say `idle`, again; until the
    parent closes the control connection, or this worker has served `max_requests` requests
    (--worker-requests) or grown past MAX_WORKER_RSS (the parent then forks a fresh one when it
    needs one). With --worker-requests 1 every request gets a fresh fork, as before issue 18:
    nothing at all, not even a connection, passes from one admission to the next."""
    from . import registry

    registry.enable_warm_pool()
    served = 0
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 64, 1)
        except InterruptedError:
            continue
        if not fds:
            return  # the parent closed the control connection (stopping, retiring or gone)
        conn = socket.socket(fileno=fds[0])
        try:
            (accepted_at,) = struct.unpack("d", message)
            reusable = handle(conn, own_environ, log, accepted_at)
        finally:
            conn.close()
        served += 1
        if not reusable or served >= max_requests or _rss() > MAX_WORKER_RSS:
            return
        _forget_credentials()
        try:
            control.send(IDLE)
        except OSError:
            return


def _rss() -> int:
    """This process's resident set in bytes."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _forget_credentials() -> None:
    # Credentials are fingerprinted with a slow hash, memoised per process; in a long-lived
    # worker that memo would keep every pull secret it ever saw. Pool keys hold only fingerprints.
    from . import credentials

    credentials._FINGERPRINTS.clear()


def pending_limit() -> int:
    """How many queued connections the parent may hold: well within its descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_PENDING
    return max(1, min(MAX_PENDING, (soft - 64) // 2))


def _answer_ping(conn: socket.socket) -> bool:
    """Answer `conn` here if it is a ping whose bytes have all arrived."""
    try:
        data = conn.recv(len(PING_FRAME) + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return False
    if data != PING_FRAME:
        return False  # anything else, a ping still arriving included, goes to a worker
    try:
        conn.recv(len(PING_FRAME), socket.MSG_DONTWAIT)
        _tell(conn, "pong")
    except OSError:
        pass
    return True


def _reap(workers: dict[int, Worker], gone: Callable[[Worker], None]) -> None:
    """Collect every worker that has exited, without waiting."""
    while workers:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            for worker in workers.values():
                gone(worker)
            workers.clear()
            return
        if pid == 0:
            return
        worker = workers.pop(pid, None)
        if worker is not None:
            gone(worker)


def ping(path: str, timeout: float = 3.0) -> bool:
    """True when a service answers on `path` (for the container's probes)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(PING_FRAME)
        return conn.recv(64).startswith(b"pong\n")
    except OSError:
        return False
    finally:
        conn.close()


def main(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`signgate serve --socket PATH [--max-workers N]` and `signgate ping --socket PATH`."""
    parser = argparse.ArgumentParser(prog=f"signgate {argv[0] if argv else 'serve'}")
    parser.add_argument("--socket", required=True, help="the Unix socket the hook's $SIGNGATE_VERIFIER_SOCKET names")
    if argv[:1] == ["serve"]:
        parser.add_argument("--max-workers", type=int, default=32, help="workers alive at once (default 32)")
        parser.add_argument("--worker-requests", type=int, default=MAX_WORKER_REQUESTS,
                            help=f"requests a worker serves before a fresh one replaces it (default {MAX_WORKER_REQUESTS}; "
                                 "1: a fresh worker for every request, keeping no connection or token)")
    args = parser.parse_args(argv[1:])
    if argv[:1] == ["ping"]:
        if ping(args.socket):
            out.write("ok\n")
            return 0
        err.write(f"signgate: no verifier service answers on {args.socket}\n")
        return 1
    if not 1 <= args.max_workers <= 1024:
        err.write("signgate: --max-workers must be between 1 and 1024\n")
        return 2
    if not 1 <= args.worker_requests <= 1_000_000:
        err.write("signgate: --worker-requests must be between 1 and 1000000\n")
        return 2
    return serve(args.socket, args.max_workers, err, args.worker_requests)


def _log(log: TextIO, level: str, msg: str, **fields: Any) -> None:
    try:
        log.write(json.dumps({"level": level, "msg": msg, **fields}, default=str) + "\n")
        log.flush()
    except Exception:
        pass
