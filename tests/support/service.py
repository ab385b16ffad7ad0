"""The real verifier service (`python -m signgate serve`) as a subprocess, for tests and the benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "hooks" / "lib"


class VerifierService:
    """`signgate serve` on a socket in `directory`; stopped with SIGTERM on exit."""

    def __init__(self, directory: Path, *, max_workers: int = 32, env: dict[str, str] | None = None) -> None:
        # Unix socket paths are limited to 107 bytes; pytest's tmp paths can be longer.
        self.directory = Path(directory)
        self.socket = self.directory / "v.sock"
        if len(str(self.socket)) > 100:
            raise ValueError(f"socket path too long for AF_UNIX: {self.socket}")
        self.max_workers = max_workers
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / "service.log"

    def start(self) -> "VerifierService":
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNGATE_")}
        environment["PYTHONPATH"] = str(LIB)
        environment.update(self.env or {})
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "signgate", "serve", "--socket", str(self.socket), "--max-workers", str(self.max_workers)],
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
