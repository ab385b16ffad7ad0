"""The real verifier service (`python -m signgate serve`) as a subprocess, for tests and the benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "hooks" / "lib"


class VerifierService:
    """`signgate serve` on a socket in `directory`; stopped with SIGTERM on exit."""

    def __init__(self, directory: Path, *, max_workers: int = 32, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        # Unix socket paths are limited to 107 bytes; pytest's tmp paths can be longer.
        self.directory = Path(directory)
        self.socket = self.directory / "v.sock"
        if len(str(self.socket)) > 100:
            raise ValueError(f"socket path too long for AF_UNIX: {self.socket}")
        self.max_workers = max_workers
        self.env = env
        self.args = args  # more `signgate serve` options (--worker-requests)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / "service.log"

    def start(self) -> "VerifierService":
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNGATE_")}
        environment["PYTHONPATH"] = str(LIB)
        environment.update(self.env or {})
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "signgate", "serve", "--socket", str(self.socket), "--max-workers", str(self.max_workers), *self.args],
            env=environment, stdout=log, stderr=log, cwd=self.directory,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"signgate serve exited {self.process.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"signgate serve did not answer: {self.log()}")
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        sys.path.insert(0, str(LIB))
        from signgate.service import ping

        return self.socket.exists() and ping(str(self.socket), timeout=1.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "VerifierService":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---- helpers for what the service must never do -------------------------------------------------


def pipe_holders(inode: int, exclude: set[tuple[int, int]]) -> list[str]:
    """Every (process, descriptor) that holds the pipe `inode` open, except those in `exclude`,
    as readable lines ("pid 123 (python3) fd 2")."""
    target = f"pipe:[{inode}]"
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != target or (int(pid), int(fd)) in exclude:
                    continue
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            found.append(f"pid {pid} ({comm}) fd {fd}")
    return found


def drain_to_eof(fd: int) -> tuple[bytes, bool]:
    """What the pipe `fd` holds now, and whether its write end is closed everywhere (EOF).

    Non-blocking: a write end that is still open anywhere, even as a descriptor in flight in a
    socket, which no /proc/*/fd lists, reads as "no data yet" instead of EOF.
    """
    os.set_blocking(fd, False)
    data = b""
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data, True
            data += chunk
    except BlockingIOError:
        return data, False
    finally:
        os.set_blocking(fd, True)


@contextlib.contextmanager
def busy_worker(socket_path: Path, directory: Path, key_path: Path) -> Iterator[socket.socket]:
    """Occupy one worker of the service at `socket_path` with a real admission that waits on a
    registry that accepts connections and never answers, for up to 25 s. Closing the returned
    connection (as on exit) ends the worker: its hook has gone."""
    sys.path.insert(0, str(LIB))
    from signgate.relay import PROTOCOL

    from support.contract import BINDING, request_for

    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    host = f"127.0.0.1:{silent.getsockname()[1]}"
    config = directory / "busy-worker-config.json"
    config.write_text(json.dumps({
        "keys": {"default": str(key_path)},
        "registries": {"insecure": [host]},
        "policy": [{"images": "**"}],
        "webhook": {"timeoutSeconds": 30, "deadlineSeconds": 25},
        "limits": {"connectTimeoutSeconds": 25, "readTimeoutSeconds": 25},
    }))
    context = directory / "busy-worker-context.json"
    context.write_text(json.dumps([{"binding": BINDING, "type": "Validating", "review": {"request": request_for("Pod", [f"{host}/held/app:v1"])}}]))
    body = json.dumps({"v": PROTOCOL, "elapsed": 0.0, "fds": ["context"], "env": {"SIGNGATE_CONFIG": str(config)}}).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(10)
        conn.connect(str(socket_path))
        fd = os.open(context, os.O_RDONLY)
        try:
            socket.send_fds(conn, [len(body).to_bytes(4, "big") + body], [fd])
        finally:
            os.close(fd)
        replies = b""
        while b"accepted\n" not in replies:
            chunk = conn.recv(256)
            if not chunk:
                raise RuntimeError(f"the service did not take the busy request: {replies!r}")
            replies += chunk
        yield conn
    finally:
        conn.close()
        silent.close()
