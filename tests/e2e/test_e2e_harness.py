"""The harness names the cause of every failure: a port in use, a missing build, a component that
never became ready (with its log tail). These run without the control plane."""

from __future__ import annotations

import json
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


# -- the harness runs what the chart deploys ---------------------------------------------------------


@pytest.fixture(scope="module")
def rendered_chart() -> list[dict]:
    """The chart rendered as the harness deploys it: release and namespace "signgate", the e2e
    configuration, registry credentials and CA from existing objects."""
    from e2e.conftest import signgate_config, unavailable

    try:
        import helm_python
    except ImportError:
        unavailable("helm-python-sdk (requirements-chart.txt) is not installed: it renders the chart")
    import yaml

    config = signgate_config("127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002")
    config.pop("keys")  # the chart writes these from keys, registryAuth and registryCA
    config["webhook"].pop("signgateNamespace")
    for field in ("auth", "caBundle"):
        config["registries"].pop(field)
    values = {
        "image": {"repository": "registry.example.com/signgate"},
        "keys": {"inline": {"default": "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"}},
        "registryAuth": {"existingSecret": "registry-auth"},
        "registryCA": {"existingConfigMap": "registry-ca"},
        "config": config,
    }
    chart = helm_python.Chart.load(str(cluster.REPO / "chart"))
    try:
        files = chart.render(values, name=cluster.RELEASE_NAMESPACE, namespace=cluster.RELEASE_NAMESPACE, is_install=True)
    finally:
        chart.close()
    return [doc for name, text in sorted(files.items()) if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def _find(docs: list[dict], kind: str, name: str) -> dict:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _env(container: dict) -> dict[str, str]:
    out = {}
    for entry in container["env"]:
        if "value" in entry:
            out[entry["name"]] = entry["value"]
        else:
            assert entry["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, entry
            out[entry["name"]] = cluster.RELEASE_NAMESPACE
    return out


def test_the_harness_gives_each_container_the_charts_env_and_mounts(rendered_chart: list[dict]) -> None:
    pod = _find(rendered_chart, "Deployment", cluster.SERVICE_NAME)["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    operator, verifier = containers["shell-operator"], containers["verifier"]
    harness_operator = cluster.operator_env(1, 2)
    for name in cluster.host_env(1, 2):
        harness_operator.pop(name)  # this machine's additions, explained in cluster.py
    assert _env(operator).items() <= harness_operator.items()
    assert set(harness_operator) - set(_env(operator)) <= set(cluster.IMAGE_ENV)
    assert _env(verifier).items() <= cluster.verifier_env().items()
    assert set(cluster.verifier_env()) - set(_env(verifier)) <= set(cluster.IMAGE_ENV)
    assert {m["mountPath"] for m in operator["volumeMounts"]} == set(cluster.OPERATOR_MOUNT_PATHS)
    assert {m["mountPath"] for m in verifier["volumeMounts"]} == set(cluster.SHARED_MOUNT_PATHS)
    assert verifier["command"][verifier["command"].index("--") + 1:] == cluster.VERIFIER_COMMAND
    service = _find(rendered_chart, "Service", cluster.SERVICE_NAME)
    assert [p["port"] for p in service["spec"]["ports"]] == [443]


def test_the_harness_config_is_what_the_chart_renders(rendered_chart: list[dict]) -> None:
    from e2e.conftest import signgate_config

    configmap = _find(rendered_chart, "ConfigMap", f"{cluster.SERVICE_NAME}-config")
    rendered = json.loads(configmap["data"]["config.json"])
    assert rendered == signgate_config("127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002")
