"""`signgate serve`: a warm, pre-forking verifier for the hook (the client side is relay.py).

shell-operator starts a new hook process for every admission request, and a process that must
verify imports `requests` and `cryptography` first: several times the cost of starting Python.
This service imports them once. For every connection it forks a worker, which:

1. receives the hook call's open files (binding context, response, optionally metrics, and the
   hook's stderr) as SCM_RIGHTS descriptors, with the hook's SIGNGATE_* variables and how long
   ago the hook started, and replies `accepted`;
2. runs `hook.run_admission`, the code the hook would run itself, on those files, so the
   response, decision log, metrics and caches are exactly those of an in-process call, and the
   deadline still counts from the hook's start;
3. replies `done <exit code>` and exits.

A worker is a fresh fork of a process that has done nothing but import: no state passes from
one admission to the next except through the on-disk caches, as between hook processes. The
service holds no configuration either; each worker reads it (and the keys) as the hook would,
so configuration changes apply at once. The socket file is created 0600, in a directory the
deployment shares only between the hook and verifier containers.

The parent never blocks on a connection (a stuck client only ever holds its own worker). It
keeps at most --max-workers workers alive; requests beyond that wait in a queue, and a hook
whose request is not `accepted` within a second decides by itself (relay.py). Pings are answered
by the parent at once, busy or not, because a saturated service is still alive. On SIGTERM or
SIGINT it stops accepting, waits up to STOP_GRACE seconds for its workers, and removes the
socket.
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
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TextIO

# Deferred imports: `signgate ping` imports this module and stays light; `serve` loads the whole
# library once in preload(), before it forks its workers.

PROTOCOL = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_FDS = 4
MAX_ENV = 64
MAX_ENV_VALUE = 4096
HEADER_TIMEOUT = 2.0
STOP_GRACE = 10.0
ACCEPT_POLL = 0.5
BUSY_POLL = 0.01
MAX_PENDING = 1024
PING_FRAME_BODY = json.dumps({"v": PROTOCOL, "ping": True}).encode()
PING_FRAME = len(PING_FRAME_BODY).to_bytes(4, "big") + PING_FRAME_BODY
FD_NAMES = ("context", "response", "stderr", "metrics")
CONTRACT_VARIABLES = ("BINDING_CONTEXT_PATH", "VALIDATING_RESPONSE_PATH", "ADMISSION_RESPONSE_PATH", "METRICS_PATH")


class RequestError(Exception):
    """A connection whose request this service will not run (told to the client, which falls back)."""


@dataclass(frozen=True)
class WorkRequest:
    elapsed: float  # seconds since the hook process started
    files: dict[str, int]  # descriptor by name (FD_NAMES)
    env: dict[str, str]  # the hook's SIGNGATE_* variables
    ping: bool = False


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
    if len(set(map(str, names))) != len(names):
        raise RequestError(f"the header names a descriptor twice: {names!r}")
    if any(name not in FD_NAMES for name in names) or not {"context", "response", "stderr"} <= set(names):
        raise RequestError(f"descriptors must be context, response, stderr and optionally metrics, not {names!r}")
    env = header.get("env")
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise RequestError(f"env must be an object of at most {MAX_ENV} variables")
    for key, value in env.items():
        if not (isinstance(value, str) and key.startswith("SIGNGATE_") and len(value) <= MAX_ENV_VALUE and "\0" not in value):
            raise RequestError(f"env may carry only SIGNGATE_* string variables, not {key!r}")
    return WorkRequest(elapsed=float(elapsed), files=dict(zip(names, fds)), env=dict(env))


def worker_environ(own: Mapping[str, str], request: WorkRequest) -> dict[str, str]:
    """The environment the hook would have had: this process's own (PATH, proxies, ...), the hook's
    SIGNGATE_* variables instead of ours, and the contract paths pointing at the received files."""
    environ = {k: v for k, v in own.items() if not k.startswith("SIGNGATE_") and k not in CONTRACT_VARIABLES}
    environ.update(request.env)
    files = request.files
    environ["BINDING_CONTEXT_PATH"] = fd_path(files["context"])
    environ["VALIDATING_RESPONSE_PATH"] = environ["ADMISSION_RESPONSE_PATH"] = fd_path(files["response"])
    if "metrics" in files:
        environ["METRICS_PATH"] = fd_path(files["metrics"])
    return environ


def fd_path(fd: int) -> str:
    # Opening /proc/self/fd/N reopens the very file the hook opened, even though this process may
    # live in another container and not see the hook's /tmp.
    return f"/proc/self/fd/{fd}"


# ---- the worker ----------------------------------------------------------------------------------


def handle(conn: socket.socket, own_environ: Mapping[str, str], log: TextIO, accepted_at: float) -> None:
    """Serve one connection in a forked worker. Never returns normally: the caller exits.

    `accepted_at` is when the parent accepted the connection: time spent queued behind busy
    workers counts against the hook's deadline.
    """
    try:
        request = receive(conn, time.monotonic() + HEADER_TIMEOUT)
    except (RequestError, OSError) as exc:
        _log(log, "warn", f"signgate serve: refused a request: {exc}")
        _reply(conn, f"error {exc}")
        return
    if request.ping:
        _reply(conn, "pong")
        return
    for name, fd in request.files.items():
        if name != "stderr" and not stat.S_ISREG(os.fstat(fd).st_mode):
            _log(log, "warn", f"signgate serve: refused a request: the {name} descriptor is not a regular file")
            _reply(conn, f"error the {name} descriptor is not a regular file")
            return
    # A hook that waited too long for this line has closed the connection and decides by itself:
    # its request must not run a second time here.
    if _peer_gone(conn) or not _reply(conn, "accepted"):
        _log(log, "info", "signgate serve: dropped a request whose hook stopped waiting")
        return
    # The decision log goes where the hook's would: into shell-operator's log.
    sys.stderr.flush()
    os.dup2(request.files["stderr"], 2)
    environ = worker_environ(own_environ, request)
    os.environ.clear()
    os.environ.update(environ)  # for libraries that read it (proxies, CA bundles)
    started = accepted_at - request.elapsed
    from .hook import run_admission

    def finish(code: int) -> None:
        sys.stderr.flush()
        _reply(conn, f"done {code}")

    conn.settimeout(None)
    try:
        code = run_admission(environ, started, sys.stderr, on_unfinished=lambda: _exit_now(finish))
    except BaseException as exc:  # run_admission answers every error itself; this is a bug
        _log(sys.stderr, "error", f"signgate serve: worker failed: {type(exc).__name__}: {exc}")
        _reply(conn, "error the worker failed")
        return
    finish(code)


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
        bundle, cache, cosign, credentials, decision, fastpath, hook, keys, metrics, network, notary, pinning,
        podspec, policy, registry, rekor, verify,
    )


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


def serve(path: str, max_workers: int, log: TextIO = sys.stderr) -> int:
    preload()
    try:
        listener = bind(path)
    except OSError as exc:
        _log(log, "error", f"signgate serve: cannot listen on {path}: {exc}")
        return 1
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Workers are forks: objects frozen here are never touched by their garbage collector, so
    # the memory stays shared with the parent instead of being copied page by page.
    gc.freeze()
    workers: set[int] = set()
    # Requests accepted while every worker is busy, oldest first. They wait here rather than in
    # the kernel's backlog so that the parent keeps accepting, and so keeps answering pings:
    # a busy service is alive, and its probes must say so.
    pending: deque[tuple[socket.socket, float]] = deque()
    _log(log, "info", "signgate serve: listening", socket=path, max_workers=max_workers, max_pending=pending_limit(), pid=os.getpid())
    out_of_files_logged = 0.0
    try:
        while not stopping:
            _reap(workers)
            while pending and len(workers) < max_workers:
                conn, accepted_at = pending.popleft()
                workers.add(_spawn(conn, accepted_at, listener, pending, log))
            listener.settimeout(BUSY_POLL if pending else ACCEPT_POLL)
            try:
                conn, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            except OSError as exc:  # out of descriptors: leave connections in the backlog for now
                if time.monotonic() - out_of_files_logged > 10:
                    _log(log, "error", f"signgate serve: cannot accept: {exc}", pending=len(pending), workers=len(workers))
                    out_of_files_logged = time.monotonic()
                time.sleep(BUSY_POLL)
                continue
            accepted_at = time.monotonic()
            if _answer_ping(conn, wait=BUSY_POLL if len(workers) >= max_workers else 0.0):
                conn.close()
            elif len(workers) < max_workers and not pending:
                workers.add(_spawn(conn, accepted_at, listener, pending, log))
            elif len(pending) < pending_limit():  # read each time: the limit may be lowered at run time
                pending.append((conn, accepted_at))
            else:  # the hook decides by itself at once rather than waiting for a turn
                _reply(conn, "error the verifier service is saturated")
                conn.close()
    finally:
        listener.close()
        for conn, _ in pending:  # their hooks decide in-process
            conn.close()
        try:
            os.unlink(path)
        except OSError:
            pass
        end = time.monotonic() + STOP_GRACE
        while workers and time.monotonic() < end:
            _reap(workers)
            time.sleep(0.05)
        _log(log, "info", "signgate serve: stopped", unfinished_workers=len(workers))
    return 0


def _spawn(
    conn: socket.socket, accepted_at: float, listener: socket.socket, pending: deque[tuple[socket.socket, float]], log: TextIO
) -> int:
    """Fork a worker for `conn`; the parent keeps only the worker's pid."""
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # Only its own connection: a queued client's socket held here would outlive the
            # parent closing it (on SIGTERM) until this worker exits.
            listener.close()
            for other, _ in pending:
                other.close()
            handle(conn, os.environ.copy(), log, accepted_at)
        except BaseException:
            code = 1
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(code)
    conn.close()
    return pid


def pending_limit() -> int:
    """How many queued connections the parent may hold: well within its descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_PENDING
    return max(1, min(MAX_PENDING, (soft - 64) // 2))


def _answer_ping(conn: socket.socket, wait: float) -> bool:
    """Answer `conn` here if it is a ping whose bytes have arrived (within `wait` seconds)."""
    try:
        if wait > 0:
            poller = select.poll()  # select() cannot watch descriptors past 1023
            poller.register(conn, select.POLLIN)
            poller.poll(wait * 1000)
        data = conn.recv(len(PING_FRAME) + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return False
    if data != PING_FRAME:
        return False
    try:
        conn.recv(len(PING_FRAME))
        conn.settimeout(1.0)
        conn.sendall(b"pong\n")
    except OSError:
        pass
    return True


def _reap(workers: set[int]) -> None:
    """Collect every worker that has exited, without waiting."""
    while workers:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            workers.clear()
            return
        if pid == 0:
            return
        workers.discard(pid)


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
    return serve(args.socket, args.max_workers, err)


def _log(log: TextIO, level: str, msg: str, **fields: Any) -> None:
    try:
        log.write(json.dumps({"level": level, "msg": msg, **fields}, default=str) + "\n")
        log.flush()
    except Exception:
        pass
