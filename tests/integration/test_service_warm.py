"""Warm connections and tokens across admissions in the verifier service (issue 18, item 3).

The service's workers are long-lived: an admission finds the TLS connections and bearer tokens
of the previous ones (registry.WarmPool). These tests run the hook as shell-operator does
(contract.py) through the real `signgate serve`, against a TLS registry with token auth whose
servers count what they receive (tests/hostile.py): TCP connections accepted, token requests and
who made them. Nothing is timed; counts say what was reused.

Each admission gets a fresh cache directory, so that it reaches the registry instead of being
answered from the on-disk verdict cache.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.contract import HookRun, request_for, run_request
from support.hostile import HostileRegistry, Reply, Seen, StubServer, json_reply
from support import certs
from support.service import VerifierService, busy_worker
from support.signer import TestKey

_numbers = itertools.count()


class TokenService(StubServer):
    """A token service over TLS that issues a new token per request to each known user, valid for
    `expires_in` seconds (None: the field is left out), and records who asked for which."""

    def __init__(self, users: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.users = users
        self.expires_in: float | None = 300
        self.issued: dict[str, str] = {}  # token -> user
        self._count = itertools.count()
        self._issue_lock = threading.Lock()

    def handle(self, request: Seen) -> Reply:
        if request.bare_path != "/token":
            return self.not_found()
        user = _basic_user(request.authorization, self.users)
        if user is None:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="token"'}, b"")
        with self._issue_lock:
            token = f"{self.secret}-{user}-{next(self._count)}"
            self.issued[token] = user
        answer: dict[str, Any] = {"token": token}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return json_reply(answer)

    def users_asking(self) -> list[str | None]:
        return [_basic_user(r.authorization, self.users) for r in self.seen if r.bare_path == "/token"]


class TokenRegistry(HostileRegistry):
    """The hostile registry's signed image, behind any token that `tokens` issued."""

    def __init__(self, key: TestKey, tokens: TokenService, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.tokens = tokens
        self.token_realm = f"{tokens.url}/token"

    def _refusal(self, request: Seen) -> Reply | None:
        authorization = request.authorization or ""
        if authorization.startswith("Bearer ") and authorization[len("Bearer "):] in self.tokens.issued:
            return None
        challenge = f'Bearer realm="{self.token_realm}",service="warm",scope="repository:{self.repo}:pull"'
        return Reply(401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, b'{"errors": []}')

    def users_served(self, since: int = 0) -> set[str | None]:
        """Whose tokens the /v2/ requests after the first `since` carried (None: no token)."""
        found: set[str | None] = set()
        for request in self.seen[since:]:
            authorization = request.authorization or ""
            found.add(self.tokens.issued.get(authorization[len("Bearer "):]) if authorization.startswith("Bearer ") else None)
        return found


def _basic_user(header: str | None, users: dict[str, str]) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(header[len("Basic "):]).decode().partition(":")
    return user if users.get(user) == password else None


USERS = {"alice": "alice-password", "bob": "bob-password"}


class Setup:
    """A TLS registry with token auth, its token service, and a signgate configuration for it."""

    def __init__(self, directory: Path, key: TestKey, registry: TokenRegistry, tokens: TokenService, ca: Path) -> None:
        self.directory, self.key, self.registry, self.tokens, self.ca = directory, key, registry, tokens, ca
        self.auth = directory / "auth.json"
        self.login("alice")

    def login(self, user: str) -> None:
        """registries.auth: the Docker config the configuration names, rewritten in place."""
        auth = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
        self.auth.write_text(json.dumps({"auths": {self.registry.host: {"auth": auth}}}))

    def config(self, **webhook: Any) -> Path:
        path = self.directory / "config.json"
        data: dict[str, Any] = {
            "keys": {"default": str(self.key.pub_path)},
            "registries": {"caBundle": str(self.ca), "auth": str(self.auth)},
            # Loopback registries are contacted only when a rule names them.
            "policy": [{"images": f"{self.registry.host}/**"}],
        }
        if webhook:
            data["webhook"] = webhook
        path.write_text(json.dumps(data))
        return path

    def admit(self, service: VerifierService, image: str | None = None, **webhook: Any) -> HookRun:
        cache = self.directory / f"cache-{next(_numbers)}"  # a cold admission every time
        env = {"SIGNGATE_VERIFIER_SOCKET": str(service.socket), "SIGNGATE_CACHE_DIR": str(cache)}
        return run_request(self.config(**webhook), request_for("Pod", [image or self.registry.reference]), env=env)

    def requests_to_the_registry(self) -> int:
        return len(self.registry.seen)


@pytest.fixture
def setup(keys: dict[str, TestKey], tmp_path: Path) -> Iterator[Setup]:
    ca = certs.make_ca(tmp_path / "ca", "warm service test CA")
    server = certs.make_server_cert(ca, tmp_path / "tls")
    key = keys["ecdsa-p256"]
    with TokenService(USERS, tls=server) as tokens, TokenRegistry(key, tokens, tls=server) as registry:
        yield Setup(tmp_path, key, registry, tokens, ca.cert_path)


@pytest.fixture
def service() -> Iterator[VerifierService]:
    directory = Path(tempfile.mkdtemp(prefix="sg-warm-", dir="/tmp"))
    with VerifierService(directory) as running:
        yield running


def served(run: HookRun) -> bool:
    """The service's worker answered (not the hook in its own process, not the fast path)."""
    warnings = [e for e in run.logs if e.get("level") == "warn" and "verifier service" in e.get("msg", "")]
    return run.returncode == 0 and warnings == [] and run.decision_log["cache"].get("fast") is not True


def workers_of(service: VerifierService) -> list[int]:
    assert service.process is not None
    pid = service.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


# ---- warm across admissions -----------------------------------------------------------------------


def test_a_second_admission_reuses_the_tls_connection_and_the_token(setup: Setup, service: VerifierService) -> None:
    first = setup.admit(service)
    assert first.allowed and served(first), first.stderr
    assert setup.tokens.users_asking() == ["alice"]
    # The lookups of the image go out together (issue 18), so the first admission may open several.
    opened = setup.registry.connections
    assert opened >= 1 and setup.tokens.connections == 1
    before = setup.requests_to_the_registry()

    second = setup.admit(service)
    assert second.allowed and served(second), second.stderr
    # It went to the registry (a cold cache) ...
    assert setup.requests_to_the_registry() > before
    # ... over the same TLS connections, with the token already held: no 401, no token request.
    assert setup.registry.connections == opened
    assert setup.tokens.users_asking() == ["alice"] and setup.tokens.connections == 1
    assert [r.path for r in setup.registry.seen[before:]][0] == setup.registry.manifest_path(setup.registry.tag)
    assert setup.registry.users_served(before) == {"alice"}


def test_another_credential_gets_neither_the_token_nor_the_connection(setup: Setup, service: VerifierService) -> None:
    assert setup.admit(service).allowed
    assert setup.tokens.users_asking() == ["alice"]
    alice = setup.registry.connections

    # registries.auth now names another user: the same worker must log in as bob, on a new connection.
    setup.login("bob")
    before = setup.requests_to_the_registry()
    as_bob = setup.admit(service)
    assert as_bob.allowed and served(as_bob), as_bob.stderr
    assert setup.tokens.users_asking() == ["alice", "bob"]
    # Only bob's token reached the registry once bob's credential was in use (the first request
    # carries none: it is the one that gets the challenge).
    assert setup.registry.users_served(before) == {None, "bob"}
    assert setup.registry.connections > alice and setup.tokens.connections == 2
    both = setup.registry.connections

    # Back to alice: her token and her connection are still there, and bob's are not used.
    setup.login("alice")
    before = setup.requests_to_the_registry()
    again = setup.admit(service)
    assert again.allowed and served(again), again.stderr
    assert setup.tokens.users_asking() == ["alice", "bob"]
    assert setup.registry.users_served(before) == {"alice"}
    assert setup.registry.connections == both and setup.tokens.connections == 2


def test_a_token_that_expires_within_the_next_admission_is_fetched_again(setup: Setup, service: VerifierService) -> None:
    # One second to live is less than the margin (an admission's deadline): never reused.
    setup.tokens.expires_in = 1
    assert setup.admit(service).allowed
    opened = setup.registry.connections
    second = setup.admit(service)
    assert second.allowed and served(second), second.stderr
    assert setup.tokens.users_asking() == ["alice", "alice"]
    assert setup.registry.connections == opened  # the connections are still reused


def test_a_token_without_expires_in_lives_the_specs_60_seconds(setup: Setup, service: VerifierService) -> None:
    setup.tokens.expires_in = None
    assert setup.admit(service).allowed
    assert setup.admit(service).allowed
    assert setup.tokens.users_asking() == ["alice"]


def test_an_expired_token_is_fetched_again(setup: Setup, service: VerifierService) -> None:
    # Valid for 16 s; the margin is 10 s (more than the 2 s deadline): reusable for 6 s after it
    # was requested, then fetched again.
    setup.tokens.expires_in = 16
    webhook = {"timeoutSeconds": 5, "deadlineSeconds": 2}
    started = time.monotonic()
    assert setup.admit(service, **webhook).allowed
    opened = setup.registry.connections
    assert setup.admit(service, **webhook).allowed
    if time.monotonic() - started < 5:  # the control: still valid, reused (a slow machine skips it)
        assert setup.tokens.users_asking() == ["alice"]
    time.sleep(max(0.0, started + 6.5 - time.monotonic()))
    later = setup.admit(service, **webhook)
    assert later.allowed and served(later), later.stderr
    assert setup.tokens.users_asking()[-2:] == ["alice", "alice"]
    assert setup.registry.connections == opened  # the connections are still reused


def test_the_worker_keeps_no_tag_resolution(setup: Setup, service: VerifierService) -> None:
    # The tag now names an unsigned image. The warm worker resolved it a moment ago, but only the
    # on-disk cache may remember tags (tagTtlSeconds); a cold cache must see the change.
    assert setup.admit(service).allowed
    setup.registry.publish_manifest(setup.registry.tag, setup.registry.other_manifest)
    moved = setup.admit(service)
    assert served(moved)
    assert not moved.allowed and "no signature" in moved.message, moved.message


# ---- workers that die, hooks that leave ---------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_the_next_request_is_served(setup: Setup, service: VerifierService) -> None:
    assert setup.admit(service).allowed
    opened = setup.registry.connections
    victims = workers_of(service)
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    later = setup.admit(service)
    assert later.allowed and served(later), later.stderr
    assert set(workers_of(service)).isdisjoint(victims)
    # Its pool died with it: the new worker connected and logged in again.
    assert setup.registry.connections > opened and setup.tokens.users_asking() == ["alice", "alice"]


def test_a_worker_that_crashes_is_replaced(setup: Setup, service: VerifierService) -> None:
    assert setup.admit(service).allowed
    for pid in workers_of(service):
        os.kill(pid, signal.SIGSEGV)
    later = setup.admit(service)
    assert later.allowed and served(later), later.stderr


def test_a_hung_up_hooks_request_does_not_hold_the_next_one(setup: Setup, keys: dict[str, TestKey]) -> None:
    # One worker, held by an admission on a registry that never answers (deadline 25 s). Its hook
    # hangs up: the next request must be served by the service, not wait for that deadline (it
    # would be shed or verified in the hook's own process, and say so).
    directory = Path(tempfile.mkdtemp(prefix="sg-warm-", dir="/tmp"))
    with VerifierService(directory, max_workers=1) as one:
        with busy_worker(one.socket, directory, keys["ecdsa-p256"].pub_path):
            [held] = workers_of(one)
        run = setup.admit(one, timeoutSeconds=10, deadlineSeconds=8)
        assert run.allowed and served(run), run.stderr
        assert workers_of(one) != [held]


# ---- without the service --------------------------------------------------------------------------------


def test_without_the_service_registry_clients_share_nothing(setup: Setup) -> None:
    # The hook in its own process (and any RegistryClient outside the service's workers) keeps its
    # connections and tokens to itself, as before.
    from signgate.config import Limits, RegistrySettings
    from signgate.credentials import CredentialStore, Credentials
    from signgate.deadline import Deadline
    from signgate.registry import RegistryClient, warm_pool

    assert warm_pool() is None
    host = setup.registry.host
    for _ in range(2):
        client = RegistryClient(
            RegistrySettings(ca_bundle=str(setup.ca)), Limits(), Deadline(10),
            credentials=CredentialStore({host: Credentials("alice", USERS["alice"])}),
        )
        try:
            assert client.get_manifest(host, setup.registry.repo, setup.registry.tag).digest == setup.registry.digest
        finally:
            client.close()
    assert setup.tokens.users_asking() == ["alice", "alice"]
    assert setup.registry.connections == 2


def test_with_worker_requests_1_every_admission_gets_a_fresh_worker_and_keeps_nothing(setup: Setup) -> None:
    # `--worker-requests 1`: the service as it was before long-lived workers (the bench's baseline).
    directory = Path(tempfile.mkdtemp(prefix="sg-warm-", dir="/tmp"))
    opened = [0]
    with VerifierService(directory, args=("--worker-requests", "1")) as fresh:
        for _ in range(2):
            run = setup.admit(fresh)
            assert run.allowed and served(run), run.stderr
            opened.append(setup.registry.connections)
    assert setup.tokens.users_asking() == ["alice", "alice"]
    # Each admission opened connections of its own (several: its lookups go out together).
    assert opened[0] < opened[1] < opened[2] and setup.tokens.connections == 2


@pytest.mark.parametrize("value", ["0", "1000001"])
def test_worker_requests_out_of_range_is_a_usage_error(value: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    from support.service import LIB

    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNGATE_")}
    environment["PYTHONPATH"] = str(LIB)
    socket_path = Path(tempfile.mkdtemp(prefix="sg-warm-", dir="/tmp")) / "v.sock"
    result = subprocess.run([sys.executable, "-m", "signgate", "serve", "--socket", str(socket_path), "--worker-requests", value],
                            env=environment, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--worker-requests must be between 1 and 1000000" in result.stderr
    assert not socket_path.exists()


# ---- a kept connection that the registry closed -----------------------------------------------------------


class ClosingRegistry:
    """Plain HTTP/1.1 on 127.0.0.1 serving one manifest; the second request on any connection is
    read and the connection closed without an answer, as when a registry's idle timeout closes a
    kept connection just as a request goes out on it."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {}, "layers": []}).encode()
        self.body = body
        self.connections = 0
        self.dropped = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.served = 0
                owner.connections += 1

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                self.served += 1
                if self.served > 1:
                    owner.dropped += 1
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "ClosingRegistry":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _plain_client(host: str) -> Any:
    from signgate.config import Limits, RegistrySettings
    from signgate.deadline import Deadline
    from signgate.registry import RegistryClient

    return RegistryClient(RegistrySettings(insecure=frozenset({host})), Limits(), Deadline(10))


def test_a_kept_connection_that_the_registry_closed_is_replaced_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from signgate import registry as registry_module

    pool = registry_module.WarmPool(shared=True)  # as in a worker of the service (enable_warm_pool)
    monkeypatch.setattr(registry_module, "_WARM_POOL", pool)
    with ClosingRegistry() as server:
        first = _plain_client(server.host)
        assert first.get_manifest(server.host, "app", "v1").body == server.body
        first.close()
        pool.new_admission()
        # The next admission's request goes out on the kept connection, which the registry closes:
        # sent again, once, on a new one.
        second = _plain_client(server.host)
        assert second.get_manifest(server.host, "app", "v1").body == server.body
        second.close()
    pool.close()
    assert (server.connections, server.dropped) == (2, 1)


def test_within_one_admission_a_dropped_request_is_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the service (or within one admission) the behaviour is what it was: no retry.
    from signgate import registry as registry_module
    from signgate.errors import RegistryUnreachable

    assert registry_module.warm_pool() is None
    with ClosingRegistry() as server:
        client = _plain_client(server.host)
        try:
            client.get_manifest(server.host, "app", "v1")
            with pytest.raises(RegistryUnreachable):
                client.get_manifest(server.host, "app", "v1")
        finally:
            client.close()
    assert (server.connections, server.dropped) == (1, 1)
