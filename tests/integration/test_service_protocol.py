"""Specification of the verifier service's protocol and lifecycle (signgate.service).

`signgate serve --socket PATH` listens on a Unix socket. A client (the hook, relay.py) sends one
frame: a 4-byte big-endian length and a JSON header, with the binding context attached as the one
SCM_RIGHTS descriptor. The parent answers a ping with `pong` itself; anything else goes to a
forked worker once its first bytes have arrived (at most --max-workers at once; the rest queue
and are told `queued`), which replies `accepted` and then `done <code> <sizes>` followed by the
response, metrics and log it produced, or `error <why>` at any point. Whatever a client sends, it
gets an error line or a closed connection, and the service goes on serving: the hook falls back
to deciding in its own process, so a refused request costs time, never an answer.

The pure part (parse_request, worker_environ) is specified by tables. Everything else runs the
real `python -m signgate serve` as a subprocess and talks to it through raw sockets, so a frame
that this file builds is exactly a frame a hook could send (a well-formed one is the control:
it is answered `done`).

Socket paths live under /tmp/sg-*: AF_UNIX paths must be shorter than 108 bytes, and pytest's
tmp_path can be longer.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from signgate import relay
from signgate.service import (
    HEADER_TIMEOUT,
    MAX_ENV,
    MAX_ENV_VALUE,
    MAX_FDS,
    MAX_HEADER_BYTES,
    MAX_PENDING,
    PROTOCOL,
    STOP_GRACE,
    RequestError,
    WorkRequest,
    parse_request,
    ping,
    worker_environ,
)
from support.service import LIB, VerifierService, busy_worker

BASE = {"v": PROTOCOL, "elapsed": 0.25, "fds": ["context"], "env": {}}
ONE_FD = [10]  # parse_request only pairs names with numbers; it never touches them


def header(**changes: Any) -> bytes:
    """A minimal valid work header with `changes` applied (a value of ... removes the field)."""
    fields = {k: v for k, v in {**BASE, **changes}.items() if v is not ...}
    return json.dumps(fields).encode()


# ---- 1. parse_request: what a request must look like ------------------------------------------


@pytest.mark.parametrize(
    "body,fds,expected",
    [
        (header(), ONE_FD, WorkRequest(elapsed=0.25, files={"context": 10}, env={})),
        (header(metrics=True), ONE_FD, WorkRequest(elapsed=0.25, files={"context": 10}, env={}, metrics=True)),
        (header(metrics=False), ONE_FD, WorkRequest(elapsed=0.25, files={"context": 10}, env={})),
        (header(elapsed=0), ONE_FD, WorkRequest(elapsed=0.0, files={"context": 10}, env={})),
        (header(elapsed=3600), ONE_FD, WorkRequest(elapsed=3600.0, files={"context": 10}, env={})),
        (
            header(env={"SIGNGATE_CONFIG": "/etc/signgate/config.yaml", "SIGNGATE_CACHE_DIR": ""}),
            ONE_FD,
            WorkRequest(
                elapsed=0.25,
                files={"context": 10},
                env={"SIGNGATE_CONFIG": "/etc/signgate/config.yaml", "SIGNGATE_CACHE_DIR": ""},
            ),
        ),
        (
            header(env={f"SIGNGATE_V{i}": "x" * MAX_ENV_VALUE for i in range(MAX_ENV)}),
            ONE_FD,
            WorkRequest(elapsed=0.25, files={"context": 10}, env={f"SIGNGATE_V{i}": "x" * MAX_ENV_VALUE for i in range(MAX_ENV)}),
        ),
        (json.dumps({"v": PROTOCOL, "ping": True}).encode(), [], WorkRequest(elapsed=0.0, files={}, env={}, ping=True)),
    ],
    ids=[
        "minimal-request",
        "metrics-wanted",
        "metrics-not-wanted",
        "elapsed-zero",
        "elapsed-at-the-3600-limit",
        "signgate-variables-including-empty-values",
        "exactly-MAX_ENV-variables-of-MAX_ENV_VALUE-characters",
        "ping",
    ],
)
def test_parse_request_accepts(body: bytes, fds: list[int], expected: WorkRequest) -> None:
    assert parse_request(body, fds) == expected


def _no_fd_for_the_context() -> tuple[bytes, list[int]]:
    return header(), []


@pytest.mark.parametrize(
    "body,fds,message",
    [
        (b"{not json", [], "not JSON"),
        (b"\xff\xfe", [], "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, [], "not JSON"),  # the parser's recursion limit is a refusal, not a crash
        (b"[1, 2]", [], "unsupported protocol"),
        (b'"v"', [], "unsupported protocol"),
        (header(v=PROTOCOL + 1), ONE_FD, f"speaks version {PROTOCOL}"),
        (header(v=1), ONE_FD, f"speaks version {PROTOCOL}"),  # the protocol that handed over stderr
        (header(v="1"), ONE_FD, f"speaks version {PROTOCOL}"),
        (header(v=...), ONE_FD, f"speaks version {PROTOCOL}"),
        (header(v=True), ONE_FD, f"speaks version {PROTOCOL}"),  # JSON true is not 1
        (json.dumps({"v": PROTOCOL, "ping": True}).encode(), [7], "a ping carries no descriptors"),
        (header(elapsed=...), ONE_FD, "elapsed must be a number"),
        (header(elapsed=-0.001), ONE_FD, "elapsed must be a number"),
        (header(elapsed=3600.001), ONE_FD, "elapsed must be a number"),
        (header(elapsed=True), ONE_FD, "elapsed must be a number"),
        (header(elapsed="1"), ONE_FD, "elapsed must be a number"),
        (header(elapsed=float("nan")), ONE_FD, "elapsed must be a number"),  # json.dumps writes NaN, json.loads reads it
        (header(elapsed=float("inf")), ONE_FD, "elapsed must be a number"),
        (*_no_fd_for_the_context(), "but 0 descriptors arrived"),
        (header(), [10, 11], "but 2 descriptors arrived"),
        (header(fds="context"), ONE_FD, "but 1 descriptors arrived"),
        (header(fds=...), ONE_FD, "but 1 descriptors arrived"),
        (header(fds=["context", "context"]), [10, 11], "the only descriptor is the binding context"),
        (header(fds=["stderr"]), ONE_FD, "the only descriptor is the binding context"),
        (header(fds=["context", "response", "stderr"]), [10, 11, 12], "the only descriptor is the binding context"),
        (header(fds=["context", "stderr"]), [10, 11], "the only descriptor is the binding context"),
        (header(metrics="yes"), ONE_FD, "metrics must be true or false"),
        (header(metrics=1), ONE_FD, "metrics must be true or false"),
        (header(env=...), ONE_FD, "env must be an object"),
        (header(env=["SIGNGATE_CONFIG=/x"]), ONE_FD, "env must be an object"),
        (header(env={f"SIGNGATE_V{i}": "x" for i in range(MAX_ENV + 1)}), ONE_FD, f"at most {MAX_ENV} variables"),
        (header(env={"PATH": "/tmp/evil"}), ONE_FD, "not 'PATH'"),
        (header(env={"LD_PRELOAD": "/tmp/evil.so"}), ONE_FD, "not 'LD_PRELOAD'"),
        (header(env={"signgate_config": "/x"}), ONE_FD, "not 'signgate_config'"),
        (header(env={"SIGNGATE_LIMIT": 3}), ONE_FD, "not 'SIGNGATE_LIMIT'"),
        (header(env={"SIGNGATE_CONFIG": None}), ONE_FD, "not 'SIGNGATE_CONFIG'"),
        (header(env={"SIGNGATE_CONFIG": "x" * (MAX_ENV_VALUE + 1)}), ONE_FD, "not 'SIGNGATE_CONFIG'"),
        (header(env={"SIGNGATE_CONFIG": "/etc/a\0/b"}), ONE_FD, "not 'SIGNGATE_CONFIG'"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "nested-deeper-than-the-parser-allows",
        "json-array-not-an-object",
        "json-string-not-an-object",
        "protocol-version-next",
        "protocol-version-1",
        "protocol-version-as-a-string",
        "protocol-version-missing",
        "protocol-version-true",
        "ping-with-descriptors",
        "elapsed-missing",
        "elapsed-negative",
        "elapsed-over-3600",
        "elapsed-boolean",
        "elapsed-a-string",
        "elapsed-nan",
        "elapsed-infinite",
        "fewer-descriptors-than-names",
        "more-descriptors-than-names",
        "fds-not-a-list",
        "fds-missing",
        "context-twice",
        "stderr-instead-of-context",
        "the-old-protocols-response-and-stderr",
        "stderr-beside-the-context",
        "metrics-a-string",
        "metrics-a-number",
        "env-missing",
        "env-not-an-object",
        "more-than-MAX_ENV-variables",
        "env-PATH-would-replace-the-services",
        "env-LD_PRELOAD-would-load-code-into-the-worker",
        "env-key-prefix-is-case-sensitive",
        "env-value-a-number",
        "env-value-null",
        "env-value-longer-than-MAX_ENV_VALUE",
        "env-value-with-NUL",
    ],
)
def test_parse_request_refuses(body: bytes, fds: list[int], message: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse_request(body, fds)
    assert message in str(raised.value)


# ---- 2. worker_environ: the environment the hook would have had -------------------------------

# The service container's own environment: what the worker keeps (PATH, proxies) and what must not
# reach it (the service's SIGNGATE_* and stale contract variables, which would name files of
# some other call or of no call at all).
SERVICE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin",
    "HTTPS_PROXY": "http://proxy.internal:3128",
    "SIGNGATE_CONFIG": "/etc/service/config.yaml",
    "SIGNGATE_CACHE_DIR": "/var/cache/service",
    "SIGNGATE_VERIFIER_SOCKET": "/run/signgate/v.sock",
    "BINDING_CONTEXT_PATH": "/tmp/service-context.json",
    "VALIDATING_RESPONSE_PATH": "/tmp/service-response.json",
    "ADMISSION_RESPONSE_PATH": "/tmp/service-response.json",
    "METRICS_PATH": "/tmp/service-metrics.json",
}
KEPT = {"PATH": "/usr/local/bin:/usr/bin", "HTTPS_PROXY": "http://proxy.internal:3128"}


OUTPUTS = {"response": 8, "metrics": 9, "log": 10}  # the worker's own in-memory files


@pytest.mark.parametrize(
    "metrics,hook_env,expected",
    [
        (
            False,
            {},
            {
                **KEPT,
                "BINDING_CONTEXT_PATH": "/proc/self/fd/7",
                "VALIDATING_RESPONSE_PATH": "/proc/self/fd/8",
                "ADMISSION_RESPONSE_PATH": "/proc/self/fd/8",
            },
        ),
        (
            True,
            {},
            {
                **KEPT,
                "BINDING_CONTEXT_PATH": "/proc/self/fd/7",
                "VALIDATING_RESPONSE_PATH": "/proc/self/fd/8",
                "ADMISSION_RESPONSE_PATH": "/proc/self/fd/8",
                "METRICS_PATH": "/proc/self/fd/9",
            },
        ),
        (
            False,
            {"SIGNGATE_CONFIG": "/etc/hook/config.yaml", "SIGNGATE_REGISTRY_AUTH": "/etc/hook/auth.json"},
            {
                **KEPT,
                "SIGNGATE_CONFIG": "/etc/hook/config.yaml",
                "SIGNGATE_REGISTRY_AUTH": "/etc/hook/auth.json",
                "BINDING_CONTEXT_PATH": "/proc/self/fd/7",
                "VALIDATING_RESPONSE_PATH": "/proc/self/fd/8",
                "ADMISSION_RESPONSE_PATH": "/proc/self/fd/8",
            },
        ),
    ],
    ids=[
        "the-received-context-and-the-workers-own-response-and-no-metrics-unless-the-hook-has-a-metrics-file",
        "metrics-into-the-workers-own-file-when-the-hook-has-a-metrics-file",
        "the-hooks-signgate-variables-replace-the-services-not-merge-with-them",
    ],
)
def test_worker_environ(metrics: bool, hook_env: dict[str, str], expected: dict[str, str]) -> None:
    request = WorkRequest(elapsed=0.0, files={"context": 7}, env=hook_env, metrics=metrics)
    assert worker_environ(SERVICE_ENV, request, OUTPUTS) == expected


def test_worker_environ_does_not_change_the_services_environment() -> None:
    own = dict(SERVICE_ENV)
    worker_environ(own, WorkRequest(elapsed=0.0, files={"context": 3}, env={"SIGNGATE_X": "1"}, metrics=True), OUTPUTS)
    assert own == SERVICE_ENV


# ---- helpers for the real service -----------------------------------------------------------------


@contextlib.contextmanager
def short_directory() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="sg-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with short_directory() as directory:
        yield directory


@pytest.fixture(scope="module")
def service() -> Iterator[VerifierService]:
    """One service for the cases that only need it to survive them (each leaves it as it found it)."""
    with short_directory() as directory, VerifierService(directory) as svc:
        yield svc


def service_environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNGATE_")}
    environment["PYTHONPATH"] = str(LIB)
    return environment


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signgate", *args], env=service_environment(), capture_output=True, text=True, timeout=30
    )


def frame(body: bytes | dict[str, Any]) -> bytes:
    """Length-prefixed header, as relay.py frames it."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return len(data).to_bytes(4, "big") + data


class Client:
    """A raw connection to the service, speaking (or mis-speaking) the protocol byte by byte."""

    def __init__(self, path: Path | str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))  # blocking: waits for room in the listen backlog
        self.buffer = b""

    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        """Send `data`, with `fds` attached to its first byte as relay.py attaches them."""
        self.sock.settimeout(5.0)
        try:
            if fds:
                sent = socket.send_fds(self.sock, [data], fds)
                data = data[sent:]
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker already refused and closed; its reply is still readable

    def line(self, timeout: float = 5.0) -> bytes:
        """The next line the service sends, b"" once it closed (TimeoutError: neither yet)."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(256)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def done(self, timeout: float = 5.0) -> "Done":
        """The `done` line and the response, metrics and log that follow it."""
        line = self.line(timeout)
        words = line.split()
        assert len(words) == 5 and words[0] == b"done", line
        sizes = [int(w) for w in words[2:]]
        self.sock.settimeout(timeout)
        while len(self.buffer) < sum(sizes):
            chunk = self.sock.recv(65536)
            assert chunk, f"the service closed after {len(self.buffer)} of {sum(sizes)} bytes"
            self.buffer += chunk
        parts = []
        for size in sizes:
            parts.append(self.buffer[:size])
            self.buffer = self.buffer[size:]
        return Done(int(words[1]), *parts)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class Done:
    """What a worker sends back with `done`."""

    code: int
    response: bytes
    metrics: bytes
    log: bytes

    @property
    def decisions(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.splitlines()]


@contextlib.contextmanager
def hook_files(directory: Path, context: bytes = b"[]") -> Iterator[dict[str, int]]:
    """Descriptors of the files a hook call has open: context, response and its stderr. Only the
    context is ever sent; the others are for clients that try to send more."""
    (directory / "context.json").write_bytes(context)
    fds = {
        "context": os.open(directory / "context.json", os.O_RDONLY),
        "response": os.open(directory / "response.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        "stderr": os.open(directory / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
    }
    try:
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def work_header(names: list[str], **changes: Any) -> dict[str, Any]:
    return {**BASE, "fds": names, **changes}


def send_work(client: Client, files: dict[str, int], directory: Path, elapsed: float = 0.25) -> None:
    """A well-formed request. Its configuration is missing: the cheapest complete admission (denied)."""
    env = {"SIGNGATE_CONFIG": str(directory / "missing.yaml")}
    client.send(frame(work_header(["context"], env=env, elapsed=elapsed)), [files["context"]])


def send_partial(client: Client) -> None:
    """The first bytes of a request and no more: a worker takes it and waits for the rest, until
    HEADER_TIMEOUT after the parent accepted it (the way to keep a worker busy)."""
    client.send((1000).to_bytes(4, "big") + b'{"v": ')


def log_entries(svc: VerifierService) -> list[dict[str, Any]]:
    return [json.loads(line) for line in svc.log().splitlines() if line.startswith("{")]


def wait_for_log(svc: VerifierService, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in svc.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    return svc.log()


def answers_ping(path: Path, timeout: float = 1.0) -> bool:
    return ping(str(path), timeout=timeout)


# ---- 3. raw clients: every malformed connection is refused, and the service goes on --------------


def _control_well_formed(client: Client, files: dict[str, int], directory: Path) -> None:
    send_work(client, files, directory)


def _header_longer_than_the_limit(client: Client, files: dict[str, int], directory: Path) -> None:
    client.send(frame(b" " * (MAX_HEADER_BYTES + 1)))


def _more_descriptors_than_the_limit(client: Client, files: dict[str, int], directory: Path) -> None:
    extra = [files["context"], files["response"], files["stderr"], files["stderr"], files["stderr"]]
    assert len(extra) == MAX_FDS + 1
    client.send(frame(work_header(["context", "response", "stderr", "metrics", "log"])), extra)


def _stderr_beside_the_context(client: Client, files: dict[str, int], directory: Path) -> None:
    # What protocol 1 sent: the service must never take the hook's stderr (or response) again.
    names = ["context", "response", "stderr"]
    client.send(frame(work_header(names)), [files[n] for n in names])


def _header_ends_early(client: Client, files: dict[str, int], directory: Path) -> None:
    client.send((100).to_bytes(4, "big") + b'{"v": 1')
    client.sock.shutdown(socket.SHUT_WR)  # half-close: the client can still read why


def _nothing_then_eof(client: Client, files: dict[str, int], directory: Path) -> None:
    client.sock.shutdown(socket.SHUT_WR)


def _partial_length_prefix(client: Client, files: dict[str, int], directory: Path) -> None:
    client.send(b"\x00\x00")
    client.sock.shutdown(socket.SHUT_WR)


def _trailing_bytes(client: Client, files: dict[str, int], directory: Path) -> None:
    client.send(frame({"v": PROTOCOL, "ping": True}) + b"more")  # not exactly a ping: the parent leaves it to a worker


def _pipe_as_the_context(client: Client, files: dict[str, int], directory: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        client.send(frame(work_header(["context"])), [read_end])
    finally:
        os.close(read_end)
        os.close(write_end)


def _wrong_protocol(client: Client, files: dict[str, int], directory: Path) -> None:
    client.send(frame(work_header(["context"], v=PROTOCOL + 1)), [files["context"]])


def _header_not_json(client: Client, files: dict[str, int], directory: Path) -> None:
    client.send(frame(b"GET / HTTP/1.1"))


def _env_outside_signgate(client: Client, files: dict[str, int], directory: Path) -> None:
    client.send(frame(work_header(["context"], env={"LD_PRELOAD": "/tmp/evil.so"})), [files["context"]])


@dataclass(frozen=True)
class Misuse:
    send: Callable[[Client, dict[str, int], Path], None]
    replies: tuple[str, ...]  # the lines the client reads, in order (each a prefix)
    log: str | None  # and the service's log records this (None: nothing to log)


MISUSES = {
    "control-a-well-formed-request-is-accepted-and-done": Misuse(_control_well_formed, ("accepted", "done 0"), None),
    "header-longer-than-MAX_HEADER_BYTES": Misuse(
        _header_longer_than_the_limit,
        (f"error the request header is larger than {MAX_HEADER_BYTES} bytes",),
        f"refused a request: the request header is larger than {MAX_HEADER_BYTES} bytes",
    ),
    "more-than-MAX_FDS-descriptors": Misuse(
        _more_descriptors_than_the_limit, (f"error more than {MAX_FDS} descriptors",), f"refused a request: more than {MAX_FDS} descriptors"
    ),
    "header-declares-a-length-then-the-client-stops-sending": Misuse(
        _header_ends_early, ("error the request header ended early",), "refused a request: the request header ended early"
    ),
    "connection-closed-without-a-byte": Misuse(_nothing_then_eof, ("error no request header",), "refused a request: no request header"),
    "less-than-the-4-byte-length": Misuse(
        _partial_length_prefix, ("error the request header ended early",), "refused a request: the request header ended early"
    ),
    "bytes-after-the-header": Misuse(
        _trailing_bytes, ("error trailing bytes after the request header",), "refused a request: trailing bytes after the request header"
    ),
    # Descriptors are checked before the request is accepted: the hook reads the error and decides itself.
    "pipe-as-the-context-descriptor": Misuse(
        _pipe_as_the_context, ("error the context descriptor is not a regular file",),
        "refused a request: the context descriptor is not a regular file",
    ),
    "the-hooks-stderr-and-response-beside-the-context": Misuse(
        _stderr_beside_the_context, ("error the only descriptor is the binding context",),
        "refused a request: the only descriptor is the binding context",
    ),
    "wrong-protocol-version": Misuse(
        _wrong_protocol,
        (f"error unsupported protocol (this service speaks version {PROTOCOL})",),
        f"refused a request: unsupported protocol (this service speaks version {PROTOCOL})",
    ),
    "header-not-json": Misuse(
        _header_not_json, ("error the request header is not JSON",), "refused a request: the request header is not JSON"
    ),
    "env-outside-SIGNGATE_": Misuse(
        _env_outside_signgate, ("error env may carry only SIGNGATE_* string variables, not 'LD_PRELOAD'",), "not 'LD_PRELOAD'"
    ),
}


@pytest.mark.parametrize("misuse", MISUSES.values(), ids=MISUSES.keys())
def test_a_malformed_connection_is_refused_and_the_service_keeps_serving(
    service: VerifierService, short_dir: Path, misuse: Misuse
) -> None:
    with hook_files(short_dir) as files, Client(service.socket) as client:
        misuse.send(client, files, short_dir)
        assert client.line() == b"queued"  # the parent has it: every request that sends a byte
        replies = [client.line() for _ in misuse.replies]
    assert len(replies) == len(misuse.replies)
    for reply, expected in zip(replies, misuse.replies):
        assert reply.decode().startswith(expected), replies
    if misuse.log is not None:
        assert misuse.log in wait_for_log(service, misuse.log)
    assert answers_ping(service.socket)


def test_a_well_formed_request_runs_the_admission_on_the_hooks_own_files(service: VerifierService, short_dir: Path) -> None:
    # The control above, read further: the worker read the context through /proc/self/fd, and sends
    # back the response, metrics and decision log it wrote into its own files, then closes.
    with hook_files(short_dir) as files, Client(service.socket) as client:
        send_work(client, files, short_dir)
        assert [client.line(), client.line()] == [b"queued", b"accepted"]
        done = client.done()
        assert client.line() == b""
    assert done.code == 0
    response = json.loads(done.response)
    assert response["allowed"] is False and "configuration file not found" in response["message"]
    assert [(d["msg"], d["verdict"], d["reasons"]) for d in done.decisions] == [("signgate decision", "denied", ["invalid-config"])]
    assert done.metrics == b""  # the hook has no metrics file (the header says so)
    assert (short_dir / "response.json").read_bytes() == b""  # the hook's own files were never sent
    assert "signgate decision" not in service.log()  # the decision log went to the hook, not to the service


def test_metrics_come_back_when_the_hook_has_a_metrics_file(service: VerifierService, short_dir: Path) -> None:
    with hook_files(short_dir) as files, Client(service.socket) as client:
        # Metrics are totals kept in the cache directory (shell-operator replaces a hook's series
        # on every run), so the worker needs one to report any.
        cache = short_dir / "cache"
        cache.mkdir()
        env = {"SIGNGATE_CONFIG": str(short_dir / "missing.yaml"), "SIGNGATE_CACHE_DIR": str(cache)}
        client.send(frame(work_header(["context"], env=env, metrics=True)), [files["context"]])
        assert [client.line(), client.line()] == [b"queued", b"accepted"]
        done = client.done()
    operations = [json.loads(line) for line in done.metrics.splitlines()]
    assert {"name": "signgate_decisions_total", "action": "set", "value": 1,
            "labels": {"result": "denied", "reason": "invalid-config"}} in operations
    assert {op["action"] for op in operations} == {"set"}


def test_relay_frames_a_request_the_service_runs(service: VerifierService, short_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # The hook's real client against the real service: the worker's exit code comes back, and relay()
    # writes the worker's response and copies its log to its own fd 2, which pytest captures.
    (short_dir / "context.json").write_text("[]")
    (short_dir / "response.json").write_text("")
    environ = {
        "SIGNGATE_VERIFIER_SOCKET": str(service.socket),
        "SIGNGATE_CONFIG": str(short_dir / "missing.yaml"),
        "BINDING_CONTEXT_PATH": str(short_dir / "context.json"),
        "VALIDATING_RESPONSE_PATH": str(short_dir / "response.json"),
    }
    assert relay.relay(environ, time.monotonic()) == 0
    response = json.loads((short_dir / "response.json").read_bytes())
    assert response["allowed"] is False and "configuration file not found" in response["message"]
    err = capfd.readouterr().err
    assert '"reasons": ["invalid-config"]' in err and "verifier service unavailable" not in err


def test_a_client_that_disconnects_mid_header_costs_only_its_worker(service: VerifierService) -> None:
    with Client(service.socket) as client:
        client.send((100).to_bytes(4, "big") + b'{"v": 1')
    # Nobody reads the reply; the worker's write fails quietly and it exits.
    assert "refused a request: the request header ended early" in wait_for_log(service, "the request header ended early")
    assert answers_ping(service.socket)


def test_a_silent_client_takes_no_worker_and_is_dropped_after_HEADER_TIMEOUT(service: VerifierService, short_dir: Path) -> None:
    with Client(service.socket) as silent, hook_files(short_dir) as files, Client(service.socket) as other:
        connected = time.monotonic()
        # Meanwhile the parent answers probes and a worker runs another request in full.
        assert answers_ping(service.socket, timeout=HEADER_TIMEOUT / 2)
        send_work(other, files, short_dir)
        assert [other.line(timeout=HEADER_TIMEOUT / 2), other.line(timeout=HEADER_TIMEOUT / 2)] == [b"queued", b"accepted"]
        assert other.done(timeout=HEADER_TIMEOUT / 2).code == 0
        assert time.monotonic() - connected < HEADER_TIMEOUT
        reply = silent.line(timeout=HEADER_TIMEOUT + 3)
        waited = time.monotonic() - connected
    assert reply == f"error no request header within {HEADER_TIMEOUT:g} s".encode(), reply
    assert HEADER_TIMEOUT - 0.5 <= waited <= HEADER_TIMEOUT + 2
    assert answers_ping(service.socket)


def test_a_client_trickling_its_header_is_cut_off_after_HEADER_TIMEOUT(service: VerifierService) -> None:
    with Client(service.socket) as slow:
        slow.send((1000).to_bytes(4, "big"))
        assert slow.line() == b"queued"
        give_up = time.monotonic() + HEADER_TIMEOUT + 1.0
        reply = None
        while reply is None and time.monotonic() < give_up:
            slow.send(b" ")
            with contextlib.suppress(TimeoutError):
                reply = slow.line(timeout=0.4)
    assert reply is not None and reply.startswith(b"error"), "the worker still waits for the header"


# ---- 4. bind: who may connect, and what is at the socket path --------------------------------------


def test_the_socket_is_0600_and_a_directory_the_service_creates_is_0700(short_dir: Path) -> None:
    svc = VerifierService(short_dir)
    svc.socket = short_dir / "run" / "v.sock"  # a directory the service itself must create
    # With umask 0 the modes are the service's own doing, not the test runner's umask.
    old_umask = os.umask(0)
    try:
        svc.start()
    finally:
        os.umask(old_umask)
    try:
        mode = os.lstat(svc.socket).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(short_dir / "run").st_mode) == 0o700
    finally:
        assert svc.stop() == 0


def test_a_stale_socket_file_is_replaced(short_dir: Path) -> None:
    path = short_dir / "v.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # what a killed service leaves behind
    stale.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(path))  # control: a socket file nobody listens on
    with VerifierService(short_dir) as svc:
        assert answers_ping(svc.socket)


def test_a_second_service_on_a_live_socket_refuses_to_start_and_the_first_keeps_serving(service: VerifierService) -> None:
    before = os.lstat(service.socket)
    second = run_cli("serve", "--socket", str(service.socket))
    assert second.returncode == 1
    assert f"another service already listens on {service.socket}" in second.stderr
    assert os.lstat(service.socket).st_ino == before.st_ino  # not unlinked and re-bound
    assert answers_ping(service.socket)


def test_a_regular_file_at_the_socket_path_is_left_alone(short_dir: Path) -> None:
    path = short_dir / "v.sock"
    path.write_bytes(b"somebody's data\n")
    result = run_cli("serve", "--socket", str(path))
    assert result.returncode == 1
    assert f"{path} exists and is not a socket" in result.stderr
    assert path.read_bytes() == b"somebody's data\n"


# ---- 5. lifecycle ------------------------------------------------------------------------------------


def test_sigterm_stops_the_service_and_removes_its_socket(short_dir: Path) -> None:
    with VerifierService(short_dir) as svc:
        assert answers_ping(svc.socket)
    assert svc.stop() == 0  # the context manager sent SIGTERM; this reads the exit code
    assert not svc.socket.exists()
    stopped = [e for e in log_entries(svc) if e["msg"] == "signgate serve: stopped"]
    assert stopped == [{"level": "info", "msg": "signgate serve: stopped", "unfinished_workers": 0}]


def test_sigterm_waits_for_a_worker_in_flight(short_dir: Path) -> None:
    with VerifierService(short_dir) as svc, Client(svc.socket) as silent:
        assert svc.process is not None
        send_partial(silent)
        assert silent.line() == b"queued"  # the parent accepts and forks the client's worker
        svc.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = svc.process.wait(timeout=STOP_GRACE + 5)
        took = time.monotonic() - signalled
        # The worker finished (gave up on its client) before the parent left: the reply is there.
        assert silent.line(timeout=0.1).startswith(b"error")
    assert code == 0 and took < STOP_GRACE
    assert not svc.socket.exists()
    stopped = [e for e in log_entries(svc) if e["msg"] == "signgate serve: stopped"]
    assert [e["unfinished_workers"] for e in stopped] == [0]


def test_a_worker_outlasting_STOP_GRACE_does_not_hold_up_the_exit(short_dir: Path) -> None:
    # The real service with two constants shortened so that a worker outlasts the grace period
    # within seconds: the silent client now holds its worker for a minute, the grace is one second.
    socket_path = short_dir / "v.sock"
    program = "import sys, signgate.service as s; s.STOP_GRACE = 1.0; s.HEADER_TIMEOUT = 60.0; sys.exit(s.main(sys.argv[1:]))"
    with open(short_dir / "service.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", program, "serve", "--socket", str(socket_path)], env=service_environment(), stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        while not (socket_path.exists() and answers_ping(socket_path)):
            assert process.poll() is None and time.monotonic() < deadline, (short_dir / "service.log").read_text()
            time.sleep(0.05)
        with Client(socket_path) as silent:
            send_partial(silent)
            assert silent.line() == b"queued"  # the parent accepts and forks the client's worker
            time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = process.wait(timeout=30)
            took = time.monotonic() - signalled
            with pytest.raises(TimeoutError):
                silent.line(timeout=0.1)  # its worker is still waiting: abandoned, not killed
        # Closing the client ends the orphaned worker (it reads EOF).
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0
    assert 1.0 <= took < 1.0 + 2.0  # the grace, plus at most one accept poll and some slack
    assert not socket_path.exists()
    entries = [json.loads(line) for line in (short_dir / "service.log").read_text().splitlines() if line.startswith("{")]
    assert [e["unfinished_workers"] for e in entries if e["msg"] == "signgate serve: stopped"] == [1]


# ---- 6. --max-workers and the queue ----------------------------------------------------------------


def test_with_one_worker_a_queued_request_waits_and_is_served_once_the_worker_is_free(short_dir: Path) -> None:
    with VerifierService(short_dir, max_workers=1) as svc, Client(svc.socket) as partial, Client(svc.socket) as queued:
        send_partial(partial)  # takes the only worker, which waits for the rest
        assert partial.line() == b"queued"
        with hook_files(short_dir) as files:
            connected = time.monotonic()
            send_work(queued, files, short_dir)
            assert queued.line() == b"queued"  # the parent has it; every worker is busy
            with pytest.raises(TimeoutError):
                queued.line(timeout=HEADER_TIMEOUT / 2)  # not `accepted` yet: the only worker is the other client's
            assert answers_ping(svc.socket, timeout=0.5)  # busy, yet its probe says it is alive
            # That worker gives up after HEADER_TIMEOUT; then the queued request is served, not dropped.
            assert queued.line(timeout=HEADER_TIMEOUT + 3) == b"accepted"
            waited = time.monotonic() - connected
            done = queued.done()
        assert partial.line(timeout=0.5).startswith(b"error")
    assert waited >= HEADER_TIMEOUT - 0.5
    assert [d["reasons"] for d in done.decisions] == [["invalid-config"]]


@pytest.mark.parametrize("value", ["0", "-1", "1025"], ids=["zero", "negative", "over-1024"])
def test_max_workers_out_of_range_is_a_usage_error(short_dir: Path, value: str) -> None:
    result = run_cli("serve", "--socket", str(short_dir / "v.sock"), "--max-workers", value)
    assert result.returncode == 2
    assert "--max-workers must be between 1 and 1024" in result.stderr
    assert not (short_dir / "v.sock").exists()


@contextlib.contextmanager
def one_busy_worker(directory: Path) -> Iterator[tuple[VerifierService, Client]]:
    """A service with --max-workers 1 whose worker is held, for HEADER_TIMEOUT, by a client that sent
    part of a request (close it to free the worker)."""
    with VerifierService(directory, max_workers=1) as svc, Client(svc.socket) as holder:
        send_partial(holder)
        assert holder.line() == b"queued"
        time.sleep(0.1)  # the parent forks the holder's worker
        yield svc, holder


def test_a_queued_request_whose_hook_gave_up_is_not_run(short_dir: Path) -> None:
    abandoned_dir, later_dir = short_dir / "abandoned", short_dir / "later"
    abandoned_dir.mkdir()
    later_dir.mkdir()
    with one_busy_worker(short_dir) as (svc, holder):
        with hook_files(abandoned_dir) as files, Client(svc.socket) as abandoned:
            send_work(abandoned, files, abandoned_dir)
            assert abandoned.line() == b"queued"
        # It closed, as relay.py does when no worker comes in time; its hook now decides itself.
        log = wait_for_log(svc, "dropped a queued request whose client left")
        with hook_files(later_dir) as files, Client(svc.socket) as later:
            send_work(later, files, later_dir)
            holder.close()  # frees the worker: the queue is served in order, one at a time
            assert later.line() == b"queued"
            assert later.line() == b"accepted"
            done = later.done()
        log = svc.log()
    assert done.decisions != []  # control: the request behind it ran
    # The parent dropped it from the queue; no worker ever saw it (one would log that it dropped it).
    assert "dropped a queued request whose client left" in log
    assert "dropped a request whose hook stopped waiting" not in log


def test_time_spent_in_the_queue_counts_against_the_deadline(short_dir: Path) -> None:
    queued_for = 0.8  # a relay client still waits for `accepted` this long
    with one_busy_worker(short_dir) as (svc, holder), hook_files(short_dir) as files, Client(svc.socket) as queued:
        send_work(queued, files, short_dir, elapsed=0.0)
        time.sleep(queued_for)
        holder.close()
        assert [queued.line(), queued.line()] == [b"queued", b"accepted"]
        done = queued.done()
    # The decision log's duration counts from the hook's start, as the deadline does.
    [decision] = done.decisions
    assert decision["duration_ms"] >= queued_for * 1000


def _sockets_of(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:"):
                found.add(target)
    return found


def test_a_worker_holds_no_connection_of_the_parent(short_dir: Path, keys: dict[str, Any]) -> None:
    # Workers are long-lived; a new one is forked when one exits. Forked while clients are queued
    # in the parent, it must hold none of their connections, nor the listener. The only worker is
    # held by a real admission; its hook hangs up, so it exits, and its replacement is forked while
    # `first` and `second` are queued. (With one fork per request, the test's first version looked
    # at the worker forked for `first`.)
    with VerifierService(short_dir, max_workers=1) as svc:
        assert svc.process is not None
        parent = svc.process.pid
        children = Path(f"/proc/{parent}/task/{parent}/children")
        with Client(svc.socket) as first, Client(svc.socket) as second:
            with busy_worker(svc.socket, short_dir, keys["ecdsa-p256"].pub_path):
                [holders_worker] = children.read_text().split()
                send_partial(first)
                send_partial(second)
                assert [first.line(), second.line()] == [b"queued", b"queued"]
            # The holder hung up: its worker exits; a new one takes `first`, `second` stays queued.
            deadline = time.monotonic() + 3
            shared: set[str] = set()
            worker = None
            while time.monotonic() < deadline:
                others = [int(pid) for pid in children.read_text().split() if pid != holders_worker]
                if others:
                    worker = others[0]
                    # Right after the fork the worker still has the listener; it closes it at once.
                    shared = _sockets_of(worker) & _sockets_of(parent)
                    if not shared:
                        break
                time.sleep(0.05)
            assert worker is not None, "no worker for the first queued client"
            assert shared == set()


def test_a_worker_ends_when_its_hook_hangs_up(short_dir: Path, keys: dict[str, Any]) -> None:
    # A worker busy on a registry that never answers (for up to 25 s). Its hook gives up and closes:
    # the worker must go at once, not keep a CPU and a worker slot for an answer nobody reads.
    # (One worker at most, so that it is the only child: workers are long-lived, and a new one
    # replaces it.)
    with VerifierService(short_dir, max_workers=1) as svc:
        assert svc.process is not None
        children = Path(f"/proc/{svc.process.pid}/task/{svc.process.pid}/children")
        with busy_worker(svc.socket, short_dir, keys["ecdsa-p256"].pub_path):
            [worker] = children.read_text().split()
        gone = time.monotonic() + 10  # a bound for a broken service, not a measurement
        while Path(f"/proc/{worker}/stat").exists() and Path(f"/proc/{worker}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < gone, "the worker outlived its hook"
            time.sleep(0.02)
        assert answers_ping(svc.socket)


def test_a_client_running_as_another_user_is_refused(short_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("connecting as another user needs root")
    program = (
        "import socket, sys\n"
        "conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "conn.connect(sys.argv[1]); conn.settimeout(5)\n"
        "sys.stdout.write(conn.recv(256).decode())\n"
    )
    with VerifierService(short_dir) as svc:
        # The socket's mode (0600) already keeps others out; open it to see the second guard.
        short_dir.chmod(0o755)
        svc.socket.chmod(0o666)
        # The system interpreter: nobody may not be allowed to run the test's own (under /root).
        stranger = subprocess.run(["/usr/bin/python3", "-c", program, str(svc.socket)], user=65534, capture_output=True, text=True, timeout=30)
        log = wait_for_log(svc, "refused a connection from uid 65534")
    assert stranger.stdout == "error this service serves only its own user\n", stranger.stderr
    assert "refused a connection from uid 65534: this service serves uid 0 and root only" in log


def connect_within(path: Path, seconds: float) -> Client | None:
    """A client, or None when the service neither takes the connection nor has room for it in time."""
    deadline = time.monotonic() + seconds
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)  # a full backlog is EAGAIN, not a wait without end
        try:
            sock.connect(str(path))
        except BlockingIOError:
            sock.close()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)
            continue
        except OSError:
            sock.close()
            return None  # nobody listens any more
        client = Client.__new__(Client)
        client.sock, client.buffer = sock, b""
        return client


# A flood once crashed the parent: select() refuses descriptors past 1023, and accept() fails
# with EMFILE at the descriptor limit. The queue is now bounded well within that limit.
@pytest.mark.parametrize(
    "nofile,clients",
    [
        (None, MAX_PENDING + 20),
        (256, 300),
    ],
    ids=["more-queued-than-MAX_PENDING", "more-queued-than-the-services-RLIMIT_NOFILE-of-256"],
)
def test_a_flood_of_queued_requests_does_not_bring_the_service_down(short_dir: Path, nofile: int | None, clients: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < clients + 100:
        pytest.skip(f"this test process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, clients + 100), hard))
    flood: list[Client] = []
    with contextlib.ExitStack() as restore, one_busy_worker(short_dir) as (svc, holder):
        restore.callback(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        assert svc.process is not None
        if nofile is not None:
            resource.prlimit(svc.process.pid, resource.RLIMIT_NOFILE, (nofile, hard))
        try:
            for _ in range(clients):
                client = connect_within(svc.socket, 2.0)
                if client is None:
                    break
                client.send(b"x")  # not a ping, and already there: the parent need not wait to see that
                flood.append(client)
            if not answers_ping(svc.socket, timeout=3.0):
                holder.close()  # a crashed parent still waits for its worker before it exits
                svc.stop()
                pytest.fail(f"the service stopped answering: {svc.log()[-400:]}")
            if nofile is None:
                # Requests beyond the queue are told at once, so that their hooks decide without waiting.
                assert [c.line(timeout=2.0) for c in flood[-10:]] == [b"error the verifier service is saturated"] * 10
        finally:
            for client in flood:
                client.close()
            holder.close()
