"""Specification of the verifier service as the hook sees it (relay.py and service.py).

With $SIGNGATE_VERIFIER_SOCKET set, a hook call that the fast path cannot answer hands its files
to `signgate serve`, whose forked worker runs the same admission code. Two promises:

1. The service answers exactly as the hook would have: same response, same decision log on the
   hook's stderr, same metrics, same caches (so the next call takes the fast path).
2. The service only accelerates. However it fails (absent, refusing, silent, lying, hung), the hook
   still answers, by deciding in its own process, and logs why.

The hook runs as a real subprocess against the real registry on 127.0.0.1; the service is the real
`python -m signgate serve`. Hostile stand-ins for the service are small socket servers here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from support.contract import BINDING, HOOK, HookRun, admission_request, hook_env, pod_spec, request_for, run_contexts, run_request, workload, write_config
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.service import VerifierService, busy_worker, drain_to_eof, pipe_holders
from support.signer import TestKey, sign_legacy


@pytest.fixture(scope="module")
def service() -> Iterator[VerifierService]:
    directory = Path(tempfile.mkdtemp(prefix="sg-svc-", dir="/tmp"))
    with VerifierService(directory) as running:
        yield running


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory whose paths fit in a Unix socket address (pytest's tmp paths may not)."""
    path = Path(tempfile.mkdtemp(prefix="sg-", dir="/tmp"))
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


class Images:
    def __init__(self, registry: Registry, http: RegistryHTTP, repo: str, key: TestKey) -> None:
        self.signed: PushedImage = push_image(http, repo, "v1", content=b"signed " + repo.encode())
        sign_legacy(http, repo, self.signed.digest, key)
        self.unsigned: PushedImage = push_image(http, repo, "unsigned", content=b"unsigned " + repo.encode())
        self.registry = registry


@pytest.fixture
def images(registry: Registry, http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> Images:
    return Images(registry, http, repo, keys["ecdsa-p256"])


def via(service: VerifierService, cache: Path, **extra: str) -> dict[str, str]:
    return {"SIGNGATE_VERIFIER_SOCKET": str(service.socket), "SIGNGATE_CACHE_DIR": str(cache), **extra}


def relay_warnings(run: HookRun) -> list[str]:
    return [e["msg"] for e in run.logs if e.get("level") == "warn" and "verifier service" in e.get("msg", "")]


def comparable(run: HookRun) -> dict[str, Any]:
    """What must not depend on who decided: the response and the decision's verdicts."""
    assert run.returncode == 0 and run.response is not None, run.stderr
    decisions = [e for e in run.logs if e.get("msg") == "signgate decision"]
    assert len(decisions) == 1, run.stderr
    log = decisions[0]
    images = [{k: v for k, v in image.items()} for image in log.get("images", [])]
    return {"response": run.response, "verdict": log["verdict"], "reasons": log["reasons"], "images": images}


# ---- 1. the same answer as the hook's own ----------------------------------------------------------


def _contexts(request: dict[str, Any], kind: str = "Validating") -> list[dict[str, Any]]:
    return [{"binding": BINDING, "type": kind, "review": {"request": request}}]


CASES: list[tuple[str, Callable[[Images, Path, dict[str, TestKey]], tuple[Path, Any]]]] = [
    (
        "signed image by tag is admitted",
        lambda im, d, k: (write_config(d, k["ecdsa-p256"].pub_path, im.registry.host), _contexts(request_for("Pod", [im.signed.reference]))),
    ),
    (
        "signed image by digest is admitted",
        lambda im, d, k: (
            write_config(d, k["ecdsa-p256"].pub_path, im.registry.host),
            _contexts(request_for("Pod", [f"{im.signed.reference.rsplit(':', 1)[0]}@{im.signed.digest}"])),
        ),
    ),
    (
        "unsigned image is denied with the same message",
        lambda im, d, k: (write_config(d, k["ecdsa-p256"].pub_path, im.registry.host), _contexts(request_for("Pod", [im.unsigned.reference]))),
    ),
    (
        "signature by an untrusted key is denied",
        lambda im, d, k: (write_config(d, k["other-ecdsa-p256"].pub_path, im.registry.host), _contexts(request_for("Pod", [im.signed.reference]))),
    ),
    (
        "one unsigned container among signed ones denies the pod and names it",
        lambda im, d, k: (
            write_config(d, k["ecdsa-p256"].pub_path, im.registry.host),
            _contexts(request_for("Pod", [im.signed.reference], init=[im.unsigned.reference])),
        ),
    ),
    (
        "warn mode admits the unsigned image with a warning",
        lambda im, d, k: (
            write_config(d, k["ecdsa-p256"].pub_path, im.registry.host, mode="warn"),
            _contexts(request_for("Pod", [im.unsigned.reference])),
        ),
    ),
    (
        "a deployment is checked through its pod template",
        lambda im, d, k: (
            write_config(d, k["ecdsa-p256"].pub_path, im.registry.host),
            _contexts(admission_request(workload("Deployment", pod_spec([im.unsigned.reference])))),
        ),
    ),
    (
        "the mutating call pins the digest with the same patch",
        lambda im, d, k: (
            write_config(d, k["ecdsa-p256"].pub_path, im.registry.host, policy=[{"images": "**", "pinDigest": True}]),
            _contexts(request_for("Pod", [im.signed.reference]), kind="Mutating"),
        ),
    ),
    (
        "an image no rule matches is denied by default",
        lambda im, d, k: (
            write_config(d, k["ecdsa-p256"].pub_path, im.registry.host, policy=[{"images": "elsewhere.example/**"}]),
            _contexts(request_for("Pod", [im.signed.reference])),
        ),
    ),
]


@pytest.mark.parametrize("name, build", CASES, ids=[name for name, _ in CASES])
def test_the_service_answers_exactly_as_the_hook_itself(name, build, images, service, keys, tmp_path) -> None:
    config, contexts = build(images, tmp_path, keys)
    own = run_contexts(config, contexts, env={"SIGNGATE_CACHE_DIR": str(tmp_path / "own")})
    served = run_contexts(config, contexts, env=via(service, tmp_path / "served"))
    assert comparable(served) == comparable(own)
    assert relay_warnings(served) == []


FAULTY_INPUT = [
    ("a configuration that does not parse", b"keys: [unclosed", b"[]"),
    ("a binding context that is not JSON", None, b"{not json"),
    ("a binding context without a request", None, json.dumps([{"binding": BINDING, "type": "Validating", "review": {}}]).encode()),
]


@pytest.mark.parametrize("name, raw_config, raw_context", FAULTY_INPUT, ids=[c[0] for c in FAULTY_INPUT])
def test_faulty_input_is_denied_by_the_service_with_the_hooks_own_message(name, raw_config, raw_context, images, service, keys, tmp_path) -> None:
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, images.registry.host)
    if raw_config is not None:
        config.write_bytes(raw_config)
    own = run_contexts(config, None, raw_context=raw_context, env={"SIGNGATE_CACHE_DIR": str(tmp_path / "own")})
    served = run_contexts(config, None, raw_context=raw_context, env=via(service, tmp_path / "served"))
    assert own.response is not None and own.response["allowed"] is False
    assert served.response == own.response
    assert relay_warnings(served) == []


def test_the_hook_process_imports_neither_requests_nor_cryptography_when_the_service_answers(images, service, keys, tmp_path) -> None:
    # Shadow both packages for the hook process only: importing either there fails loudly.
    shadow = tmp_path / "shadow"
    for package in ("requests", "cryptography"):
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(f"raise ImportError('the hook process imported {package}')\n")
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, images.registry.host)
    request = request_for("Pod", [images.signed.reference])

    served = run_request(config, request, env=via(service, tmp_path / "c1", PYTHONPATH=str(shadow)))
    assert served.allowed, served.stderr
    # The shadow works: without the service the same hook process cannot verify.
    alone = run_request(config, request, env={"SIGNGATE_CACHE_DIR": str(tmp_path / "c2"), "PYTHONPATH": str(shadow)})
    assert not alone.allowed and "imported" in alone.message


def test_decision_log_and_metrics_reach_the_hooks_own_files(images, service, keys, tmp_path) -> None:
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, images.registry.host)
    metrics = tmp_path / "metrics.json"
    run = run_request(config, request_for("Pod", [images.signed.reference]), env=via(service, tmp_path / "c", METRICS_PATH=str(metrics)))
    assert run.allowed
    assert run.decision_log["images"][0]["reason"] == "verified"
    operations = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert any(op["name"] == "signgate_decisions_total" and op["labels"].get("result") == "allowed" for op in operations), operations


def test_after_the_service_verified_an_image_the_next_call_is_answered_by_the_fast_path_alone(images, keys, tmp_path, short_dir) -> None:
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, images.registry.host)
    request = request_for("Pod", [images.signed.reference])
    with VerifierService(short_dir) as own_service:
        first = run_request(config, request, env=via(own_service, tmp_path / "cache"))
    assert first.allowed
    # The service is gone: only the hook's fast path can answer now, from the worker's entries.
    mark = images.registry.mark()
    second = run_request(config, request, env=via(own_service, tmp_path / "cache"))
    assert second.allowed
    assert second.decision_log["cache"].get("fast") is True
    assert images.registry.count_requests(mark) == 0
    assert relay_warnings(second) == []  # the fast path answered before the relay was tried


def test_concurrent_cold_admissions_through_the_service_elect_one_verifier(images, service, keys, tmp_path) -> None:
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, images.registry.host)
    cache = tmp_path / "shared"
    results: list[HookRun | BaseException] = []

    def admit() -> None:
        try:
            results.append(run_request(config, request_for("Pod", [images.signed.reference]), env=via(service, cache)))
        except BaseException as exc:  # recorded, never lost
            results.append(exc)

    mark = images.registry.mark()
    threads = [threading.Thread(target=admit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16
    assert all(isinstance(r, HookRun) and r.allowed for r in results), results
    # Tag resolution + referrers probe + fallback tag + .sig manifest + payload: once in all.
    assert images.registry.count_requests(mark) == 5


# ---- 2. the service only accelerates -----------------------------------------------------------------


class FakeService:
    """A Unix socket server that misbehaves in one chosen way, in a thread."""

    def __init__(self, path: Path, behaviour: Callable[[socket.socket], None]) -> None:
        self.path = path
        self.behaviour = behaviour
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(16)
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                self.behaviour(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.listener.close()


def _hang_up(conn: socket.socket) -> None:
    conn.recv(65536)


def _reply(line: bytes) -> Callable[[socket.socket], None]:
    def behaviour(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(line)

    return behaviour


def _accept_then(line: bytes) -> Callable[[socket.socket], None]:
    return _reply(b"accepted\n" + line)


def _done(response: bytes, code: int = 0, metrics: bytes = b"", log: bytes = b"") -> bytes:
    """A `done` line and its payload, as a worker sends them."""
    return f"done {code} {len(response)} {len(metrics)} {len(log)}\n".encode() + response + metrics + log


# What a stand-in for the worker answers with, allowing everything: none of it may be written.
FORGED = json.dumps({"allowed": True}).encode()

BROKEN_SERVICES = [
    ("closes the connection without a word", _hang_up, "closed the connection without an answer"),
    ("accepts the request, then closes without an answer", _accept_then(b""), "closed the connection without an answer"),
    ("accepts the request, then fails it", _accept_then(b"error the worker failed\n"), "the worker failed"),
    ("refuses the request", _reply(b"error too busy\n"), "too busy"),
    ("answers something else", _reply(b"hello there\n"), "unexpected reply"),
    ("answers before accepting", _reply(_done(FORGED)), "unexpected reply"),
    ("claims a non-numeric exit code", _accept_then(b"done zero 0 0 0\n"), "unexpected reply"),
    ("says done with the old protocol's line", _accept_then(b"done 0\n"), "unexpected reply"),
    ("says done and sends no response", _accept_then(_done(b"")), "invalid answer: no response"),
    ("reports a failed worker, with an admission", _accept_then(_done(FORGED, code=1)), "the worker reported exit code 1"),
    ("sends a response that is not JSON", _accept_then(_done(b"{allowed: true")), "the response is not JSON"),
    ("sends a JSON array", _accept_then(_done(b"[true]")), "not a JSON object"),
    ("sends allowed as a string", _accept_then(_done(b'{"allowed": "true"}')), "no boolean 'allowed'"),
    ("sends a denial without a message", _accept_then(_done(b'{"allowed": false}')), "a denial without a message"),
    ("sends a response with fields of its own", _accept_then(_done(b'{"allowed": true, "status": {"code": 200}}')), "unexpected response fields"),
    ("sends warnings that are not strings", _accept_then(_done(b'{"allowed": true, "warnings": [1]}')), "warnings are not a list of strings"),
    ("sends metrics that are not metrics", _accept_then(_done(FORGED, metrics=b"rm -rf /\n")), "a metrics line is not JSON"),
    ("announces more response than it sends", _accept_then(b"done 0 100 0 0\n" + FORGED), "closed the connection in the middle of its answer"),
    ("announces a response over the limit", _accept_then(b"done 0 999999999 0 0\n"), "more than"),
    ("sends a line longer than any reply", _reply(b"accepted" * 100), "unexpected reply"),
]


@pytest.mark.parametrize("name, behaviour, logged", BROKEN_SERVICES, ids=[c[0] for c in BROKEN_SERVICES])
def test_a_broken_service_makes_the_hook_decide_itself_and_say_why(name, behaviour, logged, images, keys, tmp_path, short_dir) -> None:
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, images.registry.host)
    fake = FakeService(short_dir / "v.sock", behaviour)
    try:
        signed = run_request(config, request_for("Pod", [images.signed.reference]), env={"SIGNGATE_VERIFIER_SOCKET": str(fake.path)})
        unsigned = run_request(config, request_for("Pod", [images.unsigned.reference]), env={"SIGNGATE_VERIFIER_SOCKET": str(fake.path)})
    finally:
        fake.close()
    assert fake.connections == 2
    assert signed.allowed, signed.stderr
    # Never the peer's answer, never an empty response, never a hook failure: verified here.
    assert unsigned.returncode == 0 and not unsigned.allowed and "no signature found" in unsigned.message, unsigned.stderr
    for run in (signed, unsigned):
        warnings = relay_warnings(run)
        assert len(warnings) == 1 and logged in warnings[0] and "verifying in this process" in warnings[0], run.stderr
        assert run.decision_log["images"][0]["reason"] in ("verified", "no-signature"), run.stderr


UNREACHABLE = [
    ("no file at the socket path", lambda d: d / "absent.sock", "no socket at the configured path"),
    ("a socket file nobody listens on", lambda d: _dead_socket(d / "dead.sock"), "connection refused"),
    ("a regular file at the socket path", lambda d: _regular_file(d / "file.sock"), "connection refused"),
]


def _dead_socket(path: Path) -> Path:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()
    return path


def _regular_file(path: Path) -> Path:
    path.write_text("not a socket")
    return path


@pytest.mark.parametrize("name, make, logged", UNREACHABLE, ids=[c[0] for c in UNREACHABLE])
def test_an_unreachable_service_makes_the_hook_decide_itself(name, make, logged, images, keys, tmp_path, short_dir) -> None:
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, images.registry.host)
    run = run_request(config, request_for("Pod", [images.signed.reference]), env={"SIGNGATE_VERIFIER_SOCKET": str(make(short_dir))})
    assert run.allowed, run.stderr
    warnings = relay_warnings(run)
    assert len(warnings) == 1 and logged in warnings[0], run.stderr


def _json_config(path: Path, key: TestKey, host: str, **webhook: Any) -> Path:
    # JSON, as the chart renders it, so that the relay can read timeoutSeconds without yaml.
    path.write_text(json.dumps({
        "keys": {"default": str(key.pub_path)},
        "registries": {"insecure": [host]},
        "policy": [{"images": "**"}],
        **({"webhook": webhook} if webhook else {}),
    }))
    return path


def _admit_through_stalled_service(short_dir: Path, config: Path, image: str, *, accept: bool) -> tuple[HookRun, float]:
    """Admit `image` through a service that stalls: before `accepted`, or after it. The run and
    its wall time."""
    release = threading.Event()

    def stall(conn: socket.socket) -> None:
        conn.recv(65536)
        if accept:
            conn.sendall(b"accepted\n")
        release.wait(30)

    fake = FakeService(short_dir / "v.sock", stall)
    started = time.monotonic()
    try:
        run = run_request(config, request_for("Pod", [image]), env={"SIGNGATE_VERIFIER_SOCKET": str(fake.path)})
    finally:
        release.set()
        fake.close()
    return run, time.monotonic() - started


def test_a_service_that_never_starts_the_request_gets_one_second_then_the_hook_decides(images, keys, tmp_path, short_dir) -> None:
    config = _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host)
    run, elapsed = _admit_through_stalled_service(short_dir, config, images.signed.reference, accept=False)
    assert run.allowed, run.stderr  # verified in-process, within the deadline
    assert 1.0 <= elapsed < 6, elapsed
    assert "no answer in time" in relay_warnings(run)[0]


def test_a_peer_that_accepts_and_then_says_nothing_is_waited_for_until_the_deadline_not_the_webhook_timeout(
    images, keys, tmp_path, short_dir
) -> None:
    # timeoutSeconds 30, deadline 2 s: a real worker answers by the deadline, so the hook waits for
    # it 2 s and a grace of 0.5 s, not 30 s. It then answers in-process: the deadline is over, so
    # with the deadline's denial, naming the container, the image and why.
    config = _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host, timeoutSeconds=30, deadlineSeconds=2)
    run, _ = _admit_through_stalled_service(short_dir, config, images.signed.reference, accept=True)
    assert run.returncode == 0 and not run.allowed, run.stderr
    assert run.message.startswith(f'signgate: container "c0" image "{images.signed.reference}": not verified within 2 s'), run.message
    assert "the verifier service accepted the request but gave no answer within 2.5 s" in run.message
    assert run.decision_log["reasons"] == ["timeout"]
    [warning] = relay_warnings(run)
    assert "gave no answer within 2.5 s" in warning, run.stderr


def test_a_peer_that_drips_its_first_line_gets_one_second_in_total(images, keys, tmp_path, short_dir) -> None:
    # One byte every 0.9 s: each read would be under a one-second timeout, the whole line is not.
    sent: list[int] = []

    def drip(conn: socket.socket) -> None:
        conn.recv(65536)
        for byte in b"accepted\n":
            conn.sendall(bytes([byte]))
            sent.append(byte)
            time.sleep(0.9)
        conn.recv(1)  # until the hook hangs up

    fake = FakeService(short_dir / "v.sock", drip)
    try:
        run = run_request(
            _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host),
            request_for("Pod", [images.signed.reference]),
            env={"SIGNGATE_VERIFIER_SOCKET": str(fake.path)},
        )
    finally:
        fake.close()
    assert run.allowed and run.decision_log["images"][0]["reason"] == "verified", run.stderr  # decided here
    assert "no answer in time" in relay_warnings(run)[0]
    assert len(sent) < len(b"accepted\n"), "the hook waited for the whole dripped line"


def test_a_service_running_as_another_user_is_not_trusted(images, keys, tmp_path, short_dir) -> None:
    # A stand-in running as nobody, ready to admit anything. The hook (root here) must refuse it
    # before sending anything, and verify in-process.
    if os.geteuid() != 0:
        pytest.skip("starting a process as another user needs root")
    short_dir.chmod(0o777)  # where nobody may create its socket
    program = (
        "import socket, sys\n"
        "listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "listener.bind(sys.argv[1]); listener.listen(8)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    conn, _ = listener.accept()\n"
        "    conn.recv(65536)\n"
        f"    conn.sendall({b'accepted' + bytes([10]) + _done(FORGED)!r})\n"
        "    conn.close()\n"
    )
    path = short_dir / "v.sock"
    # The system interpreter: nobody may not be allowed to run the test's own (under /root).
    stranger = subprocess.Popen(["/usr/bin/python3", "-c", program, str(path)], user=65534, stdout=subprocess.PIPE, text=True)
    try:
        assert stranger.stdout is not None and stranger.stdout.readline() == "ready\n"
        run = run_request(
            write_config(tmp_path, keys["ecdsa-p256"].pub_path, images.registry.host),
            request_for("Pod", [images.unsigned.reference]),
            env={"SIGNGATE_VERIFIER_SOCKET": str(path)},
        )
    finally:
        stranger.kill()
        stranger.wait()
    assert not run.allowed and "no signature found" in run.message, run.stderr
    [warning] = relay_warnings(run)
    assert "runs as uid 65534, not as this hook's uid 0 or root" in warning


def test_a_registry_that_never_answers_is_cut_off_at_the_deadline_by_the_worker(keys, tmp_path, service) -> None:
    # A TCP listener that accepts and never answers: the worker's own deadline, counted from the
    # hook's start, must end the call, and the worker must still tell the hook it answered.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    host = f"127.0.0.1:{silent.getsockname()[1]}"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "keys": {"default": str(keys["ecdsa-p256"].pub_path)},
        "registries": {"insecure": [host]},
        "policy": [{"images": "**"}],
        "webhook": {"timeoutSeconds": 4, "deadlineSeconds": 2},
    }))
    started = time.monotonic()
    try:
        run = run_request(config, request_for("Pod", [f"{host}/slow/app:v1"]), env=via(service, tmp_path / "c"))
    finally:
        silent.close()
    elapsed = time.monotonic() - started
    assert not run.allowed
    assert f"{host}/slow/app:v1" in run.message and "not verified within 2 s" in run.message
    assert elapsed < 3.5, elapsed  # the deadline includes the hook's own start-up
    assert relay_warnings(run) == []  # the worker answered; the hook did not decide again


def test_a_saturated_service_still_answers_its_probe_and_the_hook_sheds_the_request(images, keys, tmp_path, short_dir) -> None:
    # The only worker is busy for 25 s; the hook's deadline is 1.5 s. The service says `queued`, the
    # hook waits for a worker while one could still verify, then answers at once with a denial that
    # names the image and says why, instead of adding an in-process verification to the load.
    config = _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host, timeoutSeconds=3)
    with VerifierService(short_dir, max_workers=1) as saturated, busy_worker(saturated.socket, short_dir, keys["ecdsa-p256"].pub_path):
        assert saturated.ping()  # the parent answers probes itself, busy or not
        mark = images.registry.mark()
        run = run_request(config, request_for("Pod", [images.signed.reference]), env={"SIGNGATE_VERIFIER_SOCKET": str(saturated.socket)})
        assert images.registry.count_requests(mark) == 0  # not verified in-process either
    assert run.returncode == 0 and not run.allowed, run.stderr
    assert run.message.startswith(f'signgate: container "c0" image "{images.signed.reference}": not verified within 1.5 s: signgate is overloaded'), run.message
    assert run.decision_log["reasons"] == ["overloaded"]
    assert "verifier service overloaded (no worker free within" in " ".join(e["msg"] for e in run.logs)


def test_requests_queued_behind_a_busy_worker_are_served_in_turn(images, keys, tmp_path, short_dir) -> None:
    config = _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host)
    results: list[HookRun] = []
    with VerifierService(short_dir, max_workers=1) as narrow:
        def admit(i: int) -> None:
            env = {"SIGNGATE_VERIFIER_SOCKET": str(narrow.socket), "SIGNGATE_CACHE_DIR": str(tmp_path / f"c{i}")}
            results.append(run_request(config, request_for("Pod", [images.signed.reference]), env=env))

        threads = [threading.Thread(target=admit, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 3 and all(r.allowed for r in results)
    # One worker at a time, each a fraction of a second: nobody gave up and decided by itself.
    assert [relay_warnings(r) for r in results] == [[]] * 3


def test_idle_connections_never_take_a_worker_and_are_dropped_from_the_queue(images, keys, tmp_path, short_dir) -> None:
    # Five connections that send nothing, ahead of a hook, with a single worker. They used to take
    # the worker in turn for HEADER_TIMEOUT each, so that the hook gave up and verified itself.
    config = _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host)
    with VerifierService(short_dir, max_workers=1) as narrow:
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(5)]
        try:
            for conn in idle:
                conn.connect(str(narrow.socket))
            run = run_request(config, request_for("Pod", [images.signed.reference]), env={"SIGNGATE_VERIFIER_SOCKET": str(narrow.socket)})
            replies = []
            for conn in idle:
                conn.settimeout(10)  # a bound for a broken service, not a measurement
                replies.append(conn.recv(256))
        finally:
            for conn in idle:
                conn.close()
        log = narrow.log()
    assert run.allowed, run.stderr
    assert relay_warnings(run) == []  # the worker answered, not the hook
    assert replies == [b"error no request header within 2 s\n"] * 5
    assert log.count("refused a request: no request header within 2 s") == 5


# ---- 3. the hook's stdout and stderr are its own -------------------------------------------------------
#
# shell-operator reads a hook's output until stdout and stderr close, after the hook has exited.
# A copy of either held by another process (a queued request, a worker, whatever answers on the
# socket) holds the answer back, past the API server's timeout. So at the moment the hook exits,
# nobody else may hold them: no /proc/*/fd entry, and no descriptor in flight in a socket (which no
# /proc lists, but which keeps the pipe from reading EOF).


def run_hook_and_find_holders(config: Path, request: dict[str, Any], env: dict[str, str]) -> tuple[HookRun, list[str]]:
    """Run the hook as shell-operator does; at the moment it exits, list who else holds its stdout
    or stderr."""
    with tempfile.TemporaryDirectory(prefix="signgate-hook-") as tmp:
        context = Path(tmp) / "context.json"
        response = Path(tmp) / "response.json"
        context.write_text(json.dumps([{"binding": BINDING, "type": "Validating", "review": {"request": request}}]))
        response.write_text("")
        environment = hook_env(config, {"BINDING_CONTEXT_PATH": str(context), "VALIDATING_RESPONSE_PATH": str(response), **env})
        process = subprocess.Popen(
            [str(HOOK)], cwd=HOOK.parent, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        # The hook writes a few lines at most: far below a pipe's capacity, so waiting cannot block it.
        returncode = process.wait(timeout=60)
        holders: list[str] = []
        output: dict[str, bytes] = {}
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            inode = os.fstat(pipe.fileno()).st_ino
            holders += [f"{name}: {h}" for h in pipe_holders(inode, exclude={(os.getpid(), pipe.fileno())})]
            output[name], closed = drain_to_eof(pipe.fileno())
            if not closed:
                holders.append(f"{name}: open for writing somewhere (in flight in a socket, or above)")
        process.stdout.close()
        process.stderr.close()
        raw = response.read_text()
    run = HookRun(returncode, raw, output["stdout"].decode(), output["stderr"].decode())
    run.response = json.loads(raw) if raw.strip() else None
    run.logs = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    return run, holders


def _never_reads(release: threading.Event) -> Callable[[socket.socket], None]:
    """A peer that takes the connection and reads nothing: whatever was sent stays in flight."""
    return lambda conn: release.wait(30)


def _keeps_descriptors(release: threading.Event) -> Callable[[socket.socket], None]:
    """A peer that receives the request with its descriptors, keeps them and answers nothing."""

    def behaviour(conn: socket.socket) -> None:
        _, fds, _, _ = socket.recv_fds(conn, 65536, 16)
        try:
            release.wait(30)
        finally:
            for fd in fds:
                os.close(fd)

    return behaviour


@pytest.mark.parametrize("stall", [_never_reads, _keeps_descriptors], ids=["a-peer-that-never-reads", "a-peer-that-keeps-the-descriptors"])
def test_a_stalled_peer_holds_neither_stdout_nor_stderr_after_the_hook_exits(stall, images, keys, tmp_path, short_dir) -> None:
    release = threading.Event()
    fake = FakeService(short_dir / "v.sock", stall(release))
    try:
        run, holders = run_hook_and_find_holders(
            _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host),
            request_for("Pod", [images.signed.reference]),
            {"SIGNGATE_VERIFIER_SOCKET": str(fake.path)},
        )
    finally:
        release.set()
        fake.close()
    assert run.allowed, run.stderr  # decided in-process after the handshake's second
    assert holders == []


def test_a_served_request_leaves_the_hooks_stdout_and_stderr_to_it_alone(images, service, keys, tmp_path) -> None:
    run, holders = run_hook_and_find_holders(
        _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host),
        request_for("Pod", [images.signed.reference]),
        via(service, tmp_path / "cache"),
    )
    assert run.allowed and relay_warnings(run) == [], run.stderr
    assert run.decision_log["images"][0]["reason"] == "verified"  # the worker's log, relayed
    assert holders == []


def test_a_request_queued_in_a_saturated_service_holds_neither_stdout_nor_stderr_after_the_hook_exits(images, keys, tmp_path, short_dir) -> None:
    config = _json_config(tmp_path / "config.json", keys["ecdsa-p256"], images.registry.host, timeoutSeconds=3)
    with VerifierService(short_dir, max_workers=1) as saturated, busy_worker(saturated.socket, short_dir, keys["ecdsa-p256"].pub_path):
        run, holders = run_hook_and_find_holders(config, request_for("Pod", [images.signed.reference]), {"SIGNGATE_VERIFIER_SOCKET": str(saturated.socket)})
        log = _wait_for(saturated, "dropped a queued request whose client left")
    assert not run.allowed and "signgate is overloaded" in run.message, run.stderr
    assert holders == []
    assert "dropped a queued request whose client left" in log  # and it will not run later


def _wait_for(svc: VerifierService, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in svc.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    return svc.log()
