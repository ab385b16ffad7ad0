"""The hook's side of the verifier service: hand the admission request to a warm process.

A cold verification in a new process spends most of its time importing `requests` and
`cryptography`. When $SIGNGATE_VERIFIER_SOCKET names the Unix socket of `signgate serve`
(service.py), the hook passes it the open files of this call (binding context, response,
metrics and its own stderr, as SCM_RIGHTS descriptors) and a few numbers, and a worker forked
from the already-warm service runs the same admission code on them. The worker writes the
response and the decision log exactly where this process would have.

The service only accelerates. Every way it can fail to answer (no socket, refused, busy past
the webhook's timeout, a malformed or missing reply, a worker that died) returns None here and
the hook decides in its own process, as it does without the service. So the service can slow an
admission down but cannot be the reason for an answer.

Standard library only, and not even `socket`: its Python wrapper costs ~10 ms of enum set-up
per process, and `_socket` has everything a Unix-socket client needs.
"""

from __future__ import annotations

import json
import os
import sys
import time

from .podspec import config_path  # already loaded: the hook tries fastpath.py first

PROTOCOL = 1
# Kubernetes caps a webhook's timeoutSeconds at 30: past that the API server has given up.
MAX_WEBHOOK_TIMEOUT = 30.0
CONNECT_TIMEOUT = 1.0
ACCEPT_TIMEOUT = 1.0
MAX_REPLY_BYTES = 256
MAX_CONFIG_BYTES = 1024 * 1024
SOCKET_VARIABLE = "SIGNGATE_VERIFIER_SOCKET"


def relay(environ: dict[str, str] | os._Environ[str], started: float) -> int | None:
    """Have the verifier service answer this call: its exit code, or None to decide here."""
    path = environ.get(SOCKET_VARIABLE)
    if not path:
        return None
    try:
        return _relay(environ, path, started)
    except Exception as exc:  # whatever went wrong, this process still answers
        _warn(f"verifier service unavailable ({_describe(exc)}); verifying in this process")
        return None


def _relay(environ: dict[str, str] | os._Environ[str], path: str, started: float) -> int | None:
    import _socket

    response_path = environ.get("VALIDATING_RESPONSE_PATH") or environ.get("ADMISSION_RESPONSE_PATH")
    context_path = environ.get("BINDING_CONTEXT_PATH")
    if not (response_path and context_path):
        return None  # the in-process path reports what is missing
    webhook_timeout = _webhook_timeout(environ)
    timeout = webhook_timeout - (time.monotonic() - started)
    if timeout <= 0:
        return None
    names: list[str] = []
    fds: list[int] = []
    try:
        fds.append(os.open(context_path, os.O_RDONLY | os.O_CLOEXEC))
        names.append("context")
        fds.append(os.open(response_path, os.O_WRONLY | os.O_CLOEXEC))
        names.append("response")
        fds.append(2)  # the receiver gets its own copy; ours stays open
        names.append("stderr")
        metrics_path = environ.get("METRICS_PATH")
        if metrics_path:
            try:
                fds.append(os.open(metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
                names.append("metrics")
            except OSError:
                pass  # metrics are never worth failing for; the in-process path would skip them too
        header = {
            "v": PROTOCOL,
            "elapsed": time.monotonic() - started,
            "fds": names,
            "env": {k: v for k, v in environ.items() if k.startswith("SIGNGATE_") and k != SOCKET_VARIABLE},
        }
        body = json.dumps(header).encode()
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(min(CONNECT_TIMEOUT, timeout))
            sock.connect(path)
            sock.settimeout(timeout)
            packed = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
            frame = len(body).to_bytes(4, "big") + body
            sent = sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)])
            if sent < len(frame):
                sock.sendall(frame[sent:])
            lines = _Lines(sock)
            # A worker starts at once unless the service is saturated; then this process still
            # has most of the deadline to decide by itself.
            sock.settimeout(min(ACCEPT_TIMEOUT, timeout))
            _expect_accepted(lines.next())
            sock.settimeout(max(0.001, webhook_timeout - (time.monotonic() - started)))
            reply = lines.next()
        finally:
            sock.close()
    finally:
        for fd in fds:
            if fd != 2:
                os.close(fd)
    return _parse_done(reply)


def _expect_accepted(reply: bytes) -> None:
    if reply != b"accepted":
        _parse_done(reply)  # raises the reason
        raise ConnectionError(f"unexpected reply {reply[:40]!r}")


def _parse_done(reply: bytes) -> int:
    """`done <exit code>` means the worker answered; anything else means decide here."""
    words = reply.decode("ascii", "replace").split()
    if len(words) == 2 and words[0] == "done" and words[1].isdigit():
        return int(words[1])
    if words[:1] == ["error"]:
        raise ConnectionError(" ".join(words[1:])[:200] or "the service refused the request")
    if not words:
        raise ConnectionError("the service closed the connection without an answer")
    raise ConnectionError(f"unexpected reply {reply[:40]!r}")


class _Lines:
    """Newline-terminated replies from a socket, at most MAX_REPLY_BYTES each."""

    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> bytes:
        while b"\n" not in self.buffer and len(self.buffer) < MAX_REPLY_BYTES:
            chunk = self.sock.recv(MAX_REPLY_BYTES)  # type: ignore[attr-defined]
            if not chunk:
                break
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line[:MAX_REPLY_BYTES]


def _webhook_timeout(environ: dict[str, str] | os._Environ[str]) -> float:
    """The webhook's timeoutSeconds when the configuration is JSON (as the chart renders it).

    Waiting longer than the API server does is pointless; a YAML configuration is not parsed
    here (that would import yaml), so it gets Kubernetes' maximum.
    """
    try:
        with open(config_path(environ), "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        webhook = json.loads(raw).get("webhook") or {}
        return min(MAX_WEBHOOK_TIMEOUT, float(webhook.get("timeoutSeconds", 10)))
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return MAX_WEBHOOK_TIMEOUT


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no socket at the configured path"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"


def _warn(message: str) -> None:
    try:
        sys.stderr.write(json.dumps({"level": "warn", "msg": f"signgate: {message}"}) + "\n")
    except Exception:
        pass
