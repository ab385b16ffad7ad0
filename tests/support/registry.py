"""A real distribution 2.8 registry (``docker-registry serve``) on 127.0.0.1 for tests.

Each instance owns a directory holding its generated config, its filesystem storage and its logs.
Debian's packaged config is never used: it listens on all interfaces.

Logs (what distribution 2.8.2 actually does):

* the access log (gorilla ``CombinedLoggingHandler``) goes to **stdout**, one Apache "combined" line per
  request, including requests outside ``/v2/`` and 401s: ``127.0.0.1 - - [23/Nov/2026:09:20:12 +0000]
  "GET /v2/foo/manifests/bar?x=1 HTTP/1.1" 404 93 "" "curl/7.88.1"``. The URI is the raw request URI,
  query included; quotes inside the user agent are backslash-escaped.
* the application log (logrus, ``time=... level=info msg="response completed" ...``) goes to **stderr**.

They are written to ``access.log`` and ``registry.log`` so request counting parses only access lines.
The access line is written when the handler returns, which for large bodies can be after the client has
read the whole response; :meth:`Registry.mark` and :meth:`Registry.requests_since` therefore send a
barrier request and wait for it to be logged before reading.
"""

from __future__ import annotations

import ctypes
import http.client
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, NamedTuple


from . import certs
from .tokenserver import TokenServer

Mode = Literal["plain", "tls_htpasswd", "token"]
MODES: tuple[Mode, ...] = ("plain", "tls_htpasswd", "token")

REGISTRY_BINARY = "docker-registry"
DEFAULT_USER = "tester"
DEFAULT_PASSWORD = "s3cret"

# Requests made by this module (readiness polls, log barriers) carry this user agent and are hidden
# from request counts, so counts only reflect what the code under test did.
INTERNAL_USER_AGENT = "signgate-test-infra/1"
BARRIER_PREFIX = "/_signgate_log_barrier/"

_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]*)\] '
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>[^"]*)" (?P<status>\d{3}) (?P<size>\S+)'
    r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?\s*$'
)


class RegistryStartError(RuntimeError):
    pass


class _PortClash(RegistryStartError):
    pass


class LoggedRequest(NamedTuple):
    """One access-log entry; a tuple so ``(method, path, status)`` unpacking works."""

    method: str
    path: str  # without the query string
    status: int


@dataclass(frozen=True)
class AccessLine:
    method: str
    uri: str
    status: int
    user_agent: str

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]


def parse_access_line(line: str) -> AccessLine | None:
    """Parse one combined-format line; anything else (logrus lines, partial writes) gives None."""
    match = _ACCESS_LINE.match(line)
    if match is None:
        return None
    agent = (match.group("agent") or "").replace('\\"', '"').replace("\\\\", "\\")
    return AccessLine(match.group("method"), match.group("uri"), int(match.group("status")), agent)


def _yaml_str(value: object) -> str:
    return json.dumps(str(value))


def free_port() -> int:
    """A port that was free a moment ago. Racy by nature, hence the retry in Registry.start()."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM the registry when the thread that
    started it dies, so an interrupted pytest run leaves no orphan holding a port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: stop() still cleans up on orderly exits


def stop_process(process: "subprocess.Popen[bytes] | None", timeout: float = 5.0) -> None:
    """Stop a server this harness started: SIGTERM, then SIGKILL after `timeout`; a no-op when it
    has already exited."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def fast_storage_root() -> Path | None:
    """/dev/shm when it is a writable tmpfs (fsync is free there), else None."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a LISTEN socket on ``port``, from /proc/net/tcp{,6} (Linux).
    Lets tests prove a server is bound to loopback only, not just that loopback reaches it."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state = fields[1], fields[3]
            address, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port and len(address) == width:
                found.add(_proc_address(address))
    return found


def _proc_address(hex_address: str) -> str:
    # /proc prints each 32-bit word in host (little-endian) order.
    words = [bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8)]
    raw = b"".join(words)
    return str(ipaddress.ip_address(raw))


def registry_binary() -> str | None:
    return shutil.which(REGISTRY_BINARY)


class Registry:
    """A registry process in one of three modes:

    * ``plain``: HTTP, no auth;
    * ``tls_htpasswd``: HTTPS with its own CA (``ca_path``) and bcrypt htpasswd user tester/s3cret;
    * ``token``: HTTP with token auth from a :class:`TokenServer` (tester/s3cret may push,
      anonymous may pull).
    """

    def __init__(self, directory: Path | str, mode: Mode = "plain", *,
                 username: str = DEFAULT_USER, password: str = DEFAULT_PASSWORD,
                 data_dir: Path | str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown registry mode {mode!r}; expected one of {MODES}")
        self.mode: Mode = mode
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # The filesystem driver fsyncs every committed blob; on ext4 that doubles push time, so
        # callers may put the storage on tmpfs (see fast_storage_root()).
        self.data_dir = Path(data_dir) if data_dir is not None else self.directory / "data"
        self.config_path = self.directory / "config.yml"
        self.access_log_path = self.directory / "access.log"
        self.log_path = self.directory / "registry.log"
        authenticated = mode != "plain"
        self.username: str | None = username if authenticated else None
        self.password: str | None = password if authenticated else None
        self.ca: certs.CA | None = None
        self.ca_path: Path | None = None
        self.token_server: TokenServer | None = None
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        # Fixed per instance: upload-session state is HMAC'd with it and must survive restart().
        self._http_secret = secrets.token_hex(16)
        self._prepare_auth_material()

    # -- configuration ---------------------------------------------------------------------------

    def _prepare_auth_material(self) -> None:
        if self.mode == "tls_htpasswd":
            tls_dir = self.directory / "tls"
            self.ca = certs.make_ca(tls_dir, "signgate registry test CA")
            self.ca_path = self.ca.cert_path
            self._cert_path, self._key_path = certs.make_server_cert(self.ca, tls_dir)
            assert self.username is not None and self.password is not None
            # Cost 4 (Go's minimum): the registry runs bcrypt on every request, and benchmarks
            # should measure the client, not the registry's password hashing.
            # Imported here: only this mode needs it, and `make demo`'s runtime-only venv lacks it.
            import bcrypt

            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
            self._htpasswd_path = self.directory / "htpasswd"
            self._htpasswd_path.write_text(f"{self.username}:{hashed}\n")
        elif self.mode == "token":
            assert self.username is not None and self.password is not None
            self.token_server = TokenServer(self.directory / "token",
                                            {self.username: self.password})

    def _config_text(self, port: int) -> str:
        # Flow mappings and JSON strings are valid YAML, so no YAML library is needed and paths
        # with odd characters stay safe.
        q = _yaml_str
        lines = [
            "version: 0.1",
            # info level is required: readiness waits for the "listening on" line.
            "log: {level: info, accesslog: {disabled: false}}",
            "storage:",
            f"  filesystem: {{rootdirectory: {q(self.data_dir)}}}",
            "  delete: {enabled: true}",
            "  cache: {blobdescriptor: inmemory}",
            "http:",
            f"  addr: 127.0.0.1:{port}",
            f"  secret: {self._http_secret}",
        ]
        if self.mode == "tls_htpasswd":
            lines.append(f"  tls: {{certificate: {q(self._cert_path)}, key: {q(self._key_path)}}}")
            lines += ["auth:",
                      f"  htpasswd: {{realm: signgate-test, path: {q(self._htpasswd_path)}}}"]
        elif self.mode == "token":
            assert self.token_server is not None
            ts = self.token_server
            lines += ["auth:", "  token:",
                      f"    realm: {ts.realm}",
                      f"    service: {ts.service}",
                      f"    issuer: {ts.issuer}",
                      f"    rootcertbundle: {q(ts.cert_path)}"]
        # The storage health check would probe the driver every 10 s and add log noise.
        lines.append("health: {storagedriver: {enabled: false}}")
        return "\n".join(lines) + "\n"

    # -- addresses -------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        if self.port is None:
            raise RuntimeError("registry not started")
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.mode == "tls_htpasswd" else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.mode != "tls_htpasswd":
            return None
        return ssl.create_default_context(cafile=str(self.ca_path))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0, attempts: int = 5) -> "Registry":
        """Start on a free port (retrying on a clash) and wait until ``GET /v2/`` answers."""
        if self.running:
            return self
        if self.token_server is not None:
            self.token_server.start()
        keep_port = self.port is not None  # restart(): clients hold the old address
        for attempt in range(attempts):
            port = self.port if keep_port else free_port()
            assert port is not None
            try:
                self._spawn(port)
                self._wait_ready(timeout)
                return self
            except _PortClash:
                self._reap()
                if attempt == attempts - 1:
                    raise
                if keep_port:
                    time.sleep(0.1)  # give whoever holds it a moment; the address must not change
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        self.port = port
        self.config_path.write_text(self._config_text(port))
        # Only this run's output decides whether it died of a port clash (restart() appends).
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Append mode keeps logs across restart(); with O_APPEND every line the registry writes in
        # one syscall lands whole, so a concurrent reader sees at most a trailing partial line.
        with open(self.access_log_path, "ab") as out, open(self.log_path, "ab") as err:
            self._process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.directory,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                preexec_fn=_die_with_parent,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._wait_bound(deadline)
        last_error = "no attempt made"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status = self._internal_get("/v2/", timeout=1.0)
                if status in (200, 401):
                    return
                last_error = f"GET /v2/ answered {status}"
            except (OSError, http.client.HTTPException) as exc:
                last_error = repr(exc)
            time.sleep(0.005)
        self._reap()
        raise RegistryStartError(
            f"registry on {self.host} not ready after {timeout}s ({last_error})\n{self.log_tail()}")

    def _wait_bound(self, deadline: float) -> None:
        """Wait for this process's own "listening on" line (logged after a successful bind).
        Polling the port alone could reach whatever else holds it after a clash."""
        needle = f"listening on 127.0.0.1:{self.port}"
        while time.monotonic() < deadline:
            self._check_alive()
            if needle in self._log_since_spawn():
                return
            time.sleep(0.002)
        self._reap()
        raise RegistryStartError(f"registry never reported {needle!r}\n{self.log_tail()}")

    def _check_alive(self) -> None:
        assert self._process is not None
        if self._process.poll() is None:
            return
        if "address already in use" in self._log_since_spawn():
            raise _PortClash(f"port {self.port} in use")
        raise RegistryStartError(
            f"docker-registry exited with {self._process.returncode}\n{self.log_tail()}")

    def _log_since_spawn(self) -> str:
        with open(self.log_path, "rb") as handle:
            handle.seek(self._log_offset)
            return handle.read().decode(errors="replace")

    def _internal_get(self, path: str, timeout: float = 2.0) -> int:
        assert self.port is not None
        conn: http.client.HTTPConnection
        if self.mode == "tls_htpasswd":
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.ssl_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"User-Agent": INTERNAL_USER_AGENT})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the registry (SIGTERM, then SIGKILL). Data and port are kept for restart()."""
        self._reap(timeout)
        if self.token_server is not None:
            self.token_server.stop()

    def _reap(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout)

    def restart(self, timeout: float = 10.0) -> "Registry":
        """Stop and start again on the same port with the same data (token server keeps running)."""
        self._reap()
        return self.start(timeout=timeout)

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- logs ------------------------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the application log and the access log, for error messages."""
        parts = []
        for path in (self.log_path, self.access_log_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def request_log_lines(self) -> list[str]:
        """All raw access-log lines so far (including internal barrier/readiness requests)."""
        if not self.access_log_path.exists():
            return []
        return [line for line in self.access_log_path.read_text(errors="replace").splitlines()
                if parse_access_line(line) is not None]

    def _barrier(self, timeout: float = 5.0) -> int:
        """Make a uniquely named request and wait for its access line; return the log size after it.

        Every request whose response the caller has already received is logged before this point.
        A stopped registry serves nothing more, so then the current end of the log is the answer."""
        if not self.running:
            return self.access_log_path.stat().st_size if self.access_log_path.exists() else 0
        token = uuid.uuid4().hex
        self._internal_get(BARRIER_PREFIX + token)
        needle = (BARRIER_PREFIX + token).encode()
        deadline = time.monotonic() + timeout
        while True:
            data = self.access_log_path.read_bytes()
            index = data.rfind(needle)
            if index >= 0:
                end = data.find(b"\n", index)
                return len(data) if end < 0 else end + 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"access log barrier not seen\n{self.log_tail()}")
            time.sleep(0.002)

    def mark(self) -> int:
        """A position in the access log; pass it to requests_since()."""
        return self._barrier()

    def requests_since(self, mark: int) -> list[LoggedRequest]:
        """Requests logged after ``mark`` (excluding this module's own), in log order."""
        end = self._barrier()
        with open(self.access_log_path, "rb") as handle:
            handle.seek(mark)
            chunk = handle.read(end - mark).decode(errors="replace")
        found = []
        for line in chunk.splitlines():
            parsed = parse_access_line(line)
            if parsed is None or parsed.user_agent == INTERNAL_USER_AGENT:
                continue
            found.append(LoggedRequest(parsed.method, parsed.path, parsed.status))
        return found

    def count_requests(self, mark: int, methods: Iterable[str] = ("GET", "HEAD"),
                       path_prefix: str = "/v2/") -> int:
        """How many ``methods`` requests on paths under ``path_prefix`` happened since ``mark``."""
        wanted = set(methods)
        return sum(1 for r in self.requests_since(mark)
                   if r.method in wanted and r.path.startswith(path_prefix))

    def __repr__(self) -> str:
        where = self.url if self.port is not None else "not started"
        return f"<Registry {self.mode} {where} running={self.running}>"
