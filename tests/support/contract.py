"""Drive the hook exactly as shell-operator does.

Write the binding-context file, set the environment, run the executable from its own directory
as a subprocess, and read the response file back. Nothing of the hook is imported here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "hooks" / "verify-images.py"
BINDING = "image-signatures.signgate.dev"


@dataclass
class HookRun:
    returncode: int
    raw_response: str
    stdout: str
    stderr: str
    response: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        assert self.response is not None, f"no response written; stderr: {self.stderr}"
        return bool(self.response.get("allowed"))

    @property
    def message(self) -> str:
        return (self.response or {}).get("message", "")

    @property
    def warnings(self) -> list[str]:
        return (self.response or {}).get("warnings", [])

    @property
    def decision_log(self) -> dict[str, Any]:
        entries = [entry for entry in self.logs if entry.get("msg") == "signgate decision"]
        assert len(entries) == 1, f"expected one decision log line, got {self.logs}"
        return entries[0]


def write_config(directory: Path, key_path: str | Path, registry_host: str, *, comment: str = "", **top: Any) -> Path:
    """A config file trusting one key for every image on a plain-HTTP test registry; `top`
    overrides or adds top-level fields. Each call writes a new file (new bytes, new cache keys)."""
    import time

    import yaml

    data: dict[str, Any] = {
        "keys": {"default": str(key_path)},
        "registries": {"insecure": [registry_host]},
        "policy": [{"images": "**"}],
    }
    data.update(top)
    path = Path(directory) / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(data) + (f"# {comment}\n" if comment else ""))
    return path


def hook_env(config_path: str | Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment shell-operator passes: its own, plus the hook's file paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNGATE_", "BINDING_", "VALIDATING_"))}
    # `#!/usr/bin/env python3` must find the interpreter that has the requirements installed.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if config_path is not None:
        env["SIGNGATE_CONFIG"] = str(config_path)
    env.update(extra or {})
    return env


def run_contexts(
    config_path: str | Path | None,
    contexts: Any,
    *,
    raw_context: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> HookRun:
    with tempfile.TemporaryDirectory(prefix="signgate-hook-") as tmp:
        context_path = Path(tmp) / f"hook-binding-context-{uuid.uuid4()}.json"
        response_path = Path(tmp) / "validating-response.json"
        context_path.write_bytes(raw_context if raw_context is not None else json.dumps(contexts).encode())
        response_path.write_text("")  # shell-operator pre-creates every file empty
        environment = hook_env(
            config_path,
            {
                "BINDING_CONTEXT_PATH": str(context_path),
                "VALIDATING_RESPONSE_PATH": str(response_path),
                "ADMISSION_RESPONSE_PATH": str(response_path),
                **(env or {}),
            },
        )
        completed = subprocess.run(
            [str(HOOK)], cwd=HOOK.parent, env=environment, capture_output=True, text=True, timeout=timeout
        )
        raw = response_path.read_text()
    run = HookRun(completed.returncode, raw, completed.stdout, completed.stderr)
    if raw.strip():
        run.response = json.loads(raw)
    for line in completed.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            run.logs.append(entry)
    return run


def run_request(config_path: str | Path | None, request: dict[str, Any], **kwargs: Any) -> HookRun:
    context = [{"binding": BINDING, "type": "Validating", "review": {"request": request}}]
    return run_contexts(config_path, context, **kwargs)


def run_config(config_path: str | Path | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HOOK), "--config"], cwd=HOOK.parent, env=hook_env(config_path, env), capture_output=True, text=True, timeout=60
    )


# ---- admission requests ---------------------------------------------------------------------------

_KINDS = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "ReplicationController": ("", "v1", "replicationcontrollers"),
    # Clusters before 1.22: the pods/ephemeralcontainers subresource, as a kind of its own.
    "EphemeralContainers": ("", "v1", "pods"),
}


def pod_spec(containers: list[str], init: list[str] = (), ephemeral: list[str] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(containers)]}
    if init:
        spec["initContainers"] = [{"name": f"init{i}", "image": image} for i, image in enumerate(init)]
    if ephemeral:
        spec["ephemeralContainers"] = [{"name": f"debug{i}", "image": image} for i, image in enumerate(ephemeral)]
    return spec


def workload(kind: str, spec: dict[str, Any], name: str = "app") -> dict[str, Any]:
    group, version, _ = _KINDS[kind]
    api_version = f"{group}/{version}" if group else version
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": "team"}}
    if kind == "EphemeralContainers":  # no pod spec: the ephemeral containers at the top level
        obj["ephemeralContainers"] = spec.get("ephemeralContainers") or []
        return obj
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    if kind == "Pod":
        obj["spec"] = spec
    elif kind == "CronJob":
        obj["spec"] = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        obj["spec"] = {"template": template}
        if kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
            obj["spec"]["selector"] = {"matchLabels": {"app": name}}
    return obj


def admission_request(obj: dict[str, Any] | None, *, kind: str | None = None, operation: str = "CREATE") -> dict[str, Any]:
    kind = kind or (obj or {}).get("kind", "Pod")
    group, version, resource = _KINDS.get(kind, ("", "v1", kind.lower() + "s"))
    return {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "name": (obj or {}).get("metadata", {}).get("name", ""),
        "namespace": "team",
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
    }


def request_for(kind: str, containers: list[str], init: list[str] = (), ephemeral: list[str] = ()) -> dict[str, Any]:
    return admission_request(workload(kind, pod_spec(containers, init, ephemeral)))
