"""The harness names the cause of every failure: a port in use, a missing build, a component that
never became ready (with its log tail). These run without the control plane."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from e2e import cluster

pytestmark = pytest.mark.e2e


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(cluster.HarnessError, match=f"kube-apiserver: port 127.0.0.1:{port} is already in use"):
            cluster.require_free(port, "kube-apiserver")


def test_a_component_that_exits_shows_its_log_tail(tmp_path: Path) -> None:
    process = cluster.Process("etcd", [sys.executable, "-c", "import sys; print('bind: address already in use'); sys.exit(3)"],
                              tmp_path / "etcd.log", env={}).start()
    with pytest.raises(cluster.HarnessError) as caught:
        process.wait_until(lambda: False, 10, "GET /health")
    message = str(caught.value)
    assert "etcd exited with status 3 before it was ready (GET /health)" in message
    assert "bind: address already in use" in message


def test_a_component_that_never_gets_ready_shows_its_log_tail(tmp_path: Path) -> None:
    process = cluster.Process("kube-apiserver", [sys.executable, "-c", "import time; print('waiting for etcd', flush=True); time.sleep(60)"],
                              tmp_path / "apiserver.log", env={}).start()
    try:
        with pytest.raises(cluster.HarnessError) as caught:
            process.wait_until(lambda: (_ for _ in ()).throw(ConnectionRefusedError("refused")), 1, "GET /readyz")
    finally:
        process.stop()
    message = str(caught.value)
    assert "kube-apiserver was not ready within 1 s (GET /readyz; last error: ConnectionRefusedError('refused'))" in message
    assert "waiting for etcd" in message
    assert not process.running


def test_a_missing_build_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "tools" / "etcd"
    with pytest.raises(cluster.HarnessError, match=f"etcd: {missing} is missing"):
        cluster.Process("etcd", [str(missing)], tmp_path / "etcd.log", env={}).start()


def test_the_machine_lock_is_exclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "LOCK_PATH", tmp_path / "e2e.lock")
    first = cluster.MachineLock()
    first.acquire()
    try:
        with pytest.raises(cluster.HarnessError, match="another e2e control plane holds"):
            cluster.MachineLock(timeout=0).acquire()
    finally:
        first.release()
    second = cluster.MachineLock(timeout=0)
    second.acquire()
    second.release()
