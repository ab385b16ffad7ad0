"""The hook's side of the verifier service: hand the admission request to a warm process.

A cold verification in a new process spends most of its time importing `requests` and
`cryptography`. When $SIGNGATE_VERIFIER_SOCKET names the Unix socket of `signgate serve`
(service.py), the hook hands it the binding context and a few numbers, and a worker forked from
the already-warm service runs the same admission code. The worker sends back the response, the
metrics and the decision log, and this process writes them where it would have written its own.

Protocol (version 2), one connection per admission call:

- hook to service: one frame, a 4-byte big-endian length and a JSON header (`v`, `elapsed`,
  `fds: ["context"]`, `metrics`, `env`), with the binding context attached as one read-only
  SCM_RIGHTS descriptor. That is the only file of this call the service ever holds: never the
  response, the metrics file, stdout or stderr. shell-operator reads the hook's output until
  stdout and stderr close, so a descriptor of them held elsewhere (say, by a request still
  queued in the service) would hold the answer back after this process exited.
- service to hook: `queued` (the parent, at once: it has the request and a worker will take it),
  `accepted` (a worker took it), then `done <code> <r> <m> <l>` and r bytes of response, m bytes
  of metrics lines and l bytes of log; or `error <why>` at any point.

The peer is checked before it is trusted with anything (a trust boundary, see SECURITY.md): it
must run as this process's user or as root (SO_PEERCRED), every wait has a total deadline (a
peer that drips bytes gets no more time than a silent one), and the response must be a JSON
object of the shape an admission response has before this process writes it. A peer that fails
any of this is treated as no service at all.

The service only accelerates. Every way it can fail to answer (no socket, refused, a malformed
or missing reply, a worker that died or hangs) makes the hook decide in its own process, as it
does without the service, while time remains (see the bounds in `_relay`). One case is
different on purpose: a service that has the request but no worker for it in time (`queued`,
then no `accepted` while the deadline could still be met), or whose queue is full, means this
machine is overloaded, and verifying here as well would only make every
other admission later. Then the hook sheds: it answers at once with a denial that
names each image it could not verify ("signgate is overloaded"), before the API server gives up
(shed.py).

Standard library only, and not even `socket`: its Python wrapper costs ~10 ms of enum set-up
per process, and `_socket` has everything a Unix-socket client needs.
"""

from __future__ import annotations

import json
import os
import sys
import time

from .shed import shed_margin, webhook_times  # light: the standard library and fastpath, loaded first

# Deferred imports: `_socket` only when a request is relayed; `signgate serve` imports this module
# for the protocol's constants and has its own sockets.

PROTOCOL = 2
# Connecting, and the service's first line (`queued`), in total. The parent answers at once
# whatever its load, so a silent peer is a broken one.
HANDSHAKE_TIMEOUT = 1.0
# A worker answers by the deadline (its own, counted from the same start); this much later it is
# stuck, and the hook stops waiting.
DONE_GRACE = 0.5
# Time kept before timeoutSeconds for deciding in this process when the service fails late.
FALLBACK_RESERVE = 1.5
MAX_LINE_BYTES = 256
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_METRICS_BYTES = 1024 * 1024
MAX_LOG_BYTES = 1024 * 1024
SOCKET_VARIABLE = "SIGNGATE_VERIFIER_SOCKET"
SATURATED = "the verifier service is saturated"
RESPONSE_FIELDS = ("allowed", "message", "warnings", "patch")


class Fallback:
    """The service did not answer: why, for the denial if too little time is left to verify here.

    `overloaded` means the service said it was busy: the hook then sheds while it still has
    twice the shedding margin (shed.reason_to_shed), rather than verifying in-process.
    """

    __slots__ = ("reason", "text", "overloaded")

    def __init__(self, reason: str, text: str, overloaded: bool = False) -> None:
        self.reason, self.text, self.overloaded = reason, text, overloaded

    def __repr__(self) -> str:
        return f"Fallback({self.reason!r}, {self.text!r}, overloaded={self.overloaded})"


class ServiceFailed(ConnectionError):
    """The service (or whatever answers on the socket) broke the protocol."""


def relay(environ: dict[str, str] | os._Environ[str], started: float) -> int | Fallback | None:
    """Have the verifier service answer this call: its exit code, or a Fallback or None to decide here."""
    path = environ.get(SOCKET_VARIABLE)
    if not path:
        return None
    try:
        return _relay(environ, path, started)
    except Exception as exc:  # whatever went wrong, this process still answers
        _warn(f"verifier service unavailable ({_describe(exc)}); verifying in this process")
        return None


def _relay(environ: dict[str, str] | os._Environ[str], path: str, started: float) -> int | Fallback | None:
    import _socket

    response_path = environ.get("VALIDATING_RESPONSE_PATH") or environ.get("ADMISSION_RESPONSE_PATH")
    context_path = environ.get("BINDING_CONTEXT_PATH")
    if not (response_path and context_path):
        return None  # the in-process path reports what is missing
    timeout, deadline = webhook_times(environ)
    margin = shed_margin(deadline)
    # The bounds, all counted from the request's start:
    # - a worker answers by the deadline; past it and a grace, it is stuck. And the hook keeps
    #   FALLBACK_RESERVE before timeoutSeconds to answer by itself, whatever the peer does;
    done_by = started + min(deadline + DONE_GRACE, timeout - FALLBACK_RESERVE)
    # - a request that gets no worker until the deadline is nearly over would be denied for the
    #   deadline by the worker anyway: it is shed here instead.
    accept_by = min(started + deadline - margin, done_by)
    now = time.monotonic()
    if now >= accept_by:
        return None  # too late to hand over: the hook sheds (shed.py)
    header = {
        "v": PROTOCOL,
        "elapsed": now - started,
        "fds": ["context"],
        "metrics": bool(environ.get("METRICS_PATH")),
        "env": {k: v for k, v in environ.items() if k.startswith("SIGNGATE_") and k != SOCKET_VARIABLE},
    }
    body = json.dumps(header).encode()
    frame = len(body).to_bytes(4, "big") + body
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(min(HANDSHAKE_TIMEOUT, accept_by - now))
        sock.connect(path)
        handshake_by = min(time.monotonic() + HANDSHAKE_TIMEOUT, done_by)
        _verify_peer(sock, _socket)
        context = os.open(context_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The kernel keeps its own reference while the descriptor is in flight.
            sent = sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, context.to_bytes(4, sys.byteorder))])
        finally:
            os.close(context)
        if sent < len(frame):
            sock.sendall(frame[sent:])
        lines = _Lines(sock)
        reply = lines.next(handshake_by)
        if reply == b"queued":
            # The parent has it: wait for a worker while one could still verify in time.
            try:
                reply = lines.next(accept_by)
            except TimeoutError:
                waited = time.monotonic() - started
                _warn(f"verifier service overloaded (no worker free within {waited:.1f} s of the request); deciding in this process")
                return Fallback("overloaded", f"signgate is overloaded (no verifier worker was free within {waited:.1f} s)", True)
        if reply != b"accepted":
            refusal = _refusal(reply)  # raises unless the service said it is saturated
            _warn(f"verifier service overloaded ({refusal}); deciding in this process")
            return Fallback("overloaded", f"signgate is overloaded ({refusal})", True)
        try:
            reply = lines.next(done_by)
        except TimeoutError:
            bound = done_by - started
            _warn(f"verifier service unavailable (it accepted the request but gave no answer within {bound:.1f} s); deciding in this process")
            return Fallback("timeout", f"the verifier service accepted the request but gave no answer within {bound:.1f} s")
        try:
            code, sizes = _parse_done(reply)
            response, metrics, log = (lines.read(size, done_by) for size in sizes)
            problem = response_problem(response) or metrics_problem(metrics)
            if code != 0:
                problem = f"the worker reported exit code {code}"
            if problem:
                raise ServiceFailed(f"invalid answer: {problem}")
        except (ServiceFailed, TimeoutError, OSError) as exc:
            why = _describe(exc)
            _warn(f"verifier service unavailable ({why}); verifying in this process")
            return Fallback("service-failed", f"the verifier service failed ({why})")
    finally:
        sock.close()
    # Checked; now written where this process would have written its own.
    with open(response_path, "wb") as handle:
        handle.write(response)
    _forward(log, environ.get("METRICS_PATH"), metrics)
    return 0


def _verify_peer(sock: object, _socket: object) -> None:
    """Only a service running as this user, or as root, may answer for this hook."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # type: ignore[attr-defined]
    uid = int.from_bytes(raw[4:8], sys.byteorder)  # struct ucred: pid, uid, gid
    own = os.geteuid()
    if uid not in (own, 0):
        raise ServiceFailed(f"the socket's listener runs as uid {uid}, not as this hook's uid {own} or root")


def _refusal(reply: bytes) -> str:
    """Why the service did not take the request. Returns only when it said it is saturated."""
    words = reply.decode("ascii", "replace").split()
    if words[:1] == ["error"]:
        text = " ".join(words[1:])[:200]
        if text == SATURATED:
            return text
        raise ServiceFailed(text or "the service refused the request")
    if not words:
        raise ServiceFailed("the service closed the connection without an answer")
    raise ServiceFailed(f"unexpected reply {reply[:40]!r}")


def _parse_done(reply: bytes) -> tuple[int, tuple[int, int, int]]:
    """`done <exit code> <response bytes> <metrics bytes> <log bytes>`."""
    words = reply.decode("ascii", "replace").split()
    if len(words) == 5 and words[0] == "done" and all(w.isdigit() and len(w) <= 9 for w in words[1:]):
        code, *sizes = (int(w) for w in words[1:])
        for size, limit, what in zip(sizes, (MAX_RESPONSE_BYTES, MAX_METRICS_BYTES, MAX_LOG_BYTES), ("response", "metrics", "log")):
            if size > limit:
                raise ServiceFailed(f"a {what} of {size} bytes, more than {limit}")
        return code, (sizes[0], sizes[1], sizes[2])
    if words[:1] == ["accepted"] or words[:1] == ["queued"]:
        raise ServiceFailed(f"unexpected reply {reply[:40]!r}")
    _refusal(reply)
    raise ServiceFailed(f"unexpected reply {reply[:40]!r}")  # a saturated service after accepting


def response_problem(raw: bytes) -> str | None:
    """What is wrong with a response body, or None when it has the shape of an admission response."""
    if not raw:
        return "no response"
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "the response is not JSON"
    if not isinstance(body, dict):
        return "the response is not a JSON object"
    extra = sorted(str(k)[:40] for k in body if k not in RESPONSE_FIELDS)
    if extra:
        return f"unexpected response fields {extra[:5]}"
    allowed = body.get("allowed")
    if type(allowed) is not bool:
        return "the response has no boolean 'allowed'"
    message = body.get("message")
    if "message" in body and not isinstance(message, str):
        return "the response's message is not a string"
    if not allowed and not message:
        return "a denial without a message"
    warnings = body.get("warnings", [])
    if not (isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)):
        return "the response's warnings are not a list of strings"
    if "patch" in body and not (allowed and isinstance(body["patch"], str)):
        return "a patch that is not a string, or comes with a denial"
    return None


def metrics_problem(raw: bytes) -> str | None:
    for line in raw.splitlines():
        try:
            operation = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return "a metrics line is not JSON"
        if not (isinstance(operation, dict) and isinstance(operation.get("name"), str) and isinstance(operation.get("action"), str)):
            return "a metrics line is not a metric operation"
    return None


def _forward(log: bytes, metrics_path: str | None, metrics: bytes) -> None:
    """The worker's decision log to this process's stderr (shell-operator's log), its metrics to ours."""
    try:
        sys.stderr.flush()
        view = memoryview(log)
        while view:
            view = view[os.write(2, view):]
    except OSError:
        pass
    if metrics_path and metrics:
        try:
            with open(metrics_path, "ab") as handle:
                handle.write(metrics)
        except OSError:
            pass  # metrics are never worth failing for; the in-process path would skip them too


class _Lines:
    """Newline-terminated replies, then raw bytes, from a socket; every read by a total deadline."""

    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self, by: float, want: int) -> bool:
        left = by - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer in time")
        self.sock.settimeout(left)  # type: ignore[attr-defined]
        chunk = self.sock.recv(min(max(want, MAX_LINE_BYTES), 1024 * 1024))  # type: ignore[attr-defined]
        self.buffer += chunk
        return bool(chunk)

    def next(self, by: float) -> bytes:
        """The next line; b"" when the peer closed first. TimeoutError at `by`, however it trickles."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE_BYTES:
                raise ServiceFailed(f"unexpected reply {self.buffer[:40]!r}")
            if not self._fill(by, MAX_LINE_BYTES):
                line, self.buffer = self.buffer, b""
                return line
        line, _, self.buffer = self.buffer.partition(b"\n")
        if len(line) > MAX_LINE_BYTES:
            raise ServiceFailed(f"unexpected reply {line[:40]!r}")
        return line

    def read(self, size: int, by: float) -> bytes:
        while len(self.buffer) < size:
            if not self._fill(by, size - len(self.buffer)):
                raise ServiceFailed("the service closed the connection in the middle of its answer")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no socket at the configured path"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ServiceFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _warn(message: str) -> None:
    try:
        sys.stderr.write(json.dumps({"level": "warn", "msg": f"signgate: {message}"}) + "\n")
        sys.stderr.flush()
    except Exception:
        pass
