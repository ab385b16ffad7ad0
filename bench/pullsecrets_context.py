"""What pull-secret snapshots cost the hook: binding-context bytes and the time to read them.

`registries.pullSecrets: pod` puts every selected namespace's pull secrets into every admission
call's binding context (pullsecrets.py). This script builds contexts shaped exactly as the
bindings' jqFilters leave them (one `.dockerconfigjson` with one registry per secret, as
`kubectl create secret docker-registry` writes it) for several numbers of secrets, and measures
in this process what the hook does with one: read and parse the file (hook.read_binding_context)
and find the pod's credentials (pullsecrets.pod_credentials). shell-operator's own memory for the
same secrets is measured on the real program by
tests/e2e/test_e2e_pullsecrets.py::test_thousand_secrets_memory_and_context_size; the results of
both are in docs/pullsecrets.md. A benchmark, not a test: it asserts nothing.

    .venv/bin/python bench/pullsecrets_context.py [--counts 100,1000,10000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "hooks" / "lib")]

from signgate.hook import read_binding_context  # noqa: E402
from signgate.pullsecrets import DOCKERCFG_BINDING, DOCKERCONFIGJSON_BINDING, SERVICE_ACCOUNT_BINDING, pod_credentials  # noqa: E402


def context(count: int, per_namespace: int = 100) -> list[dict]:
    secrets = []
    for i in range(count):
        namespace = f"tenant-{i // per_namespace:04d}"
        auth = base64.b64encode(f"robot-{i}:{'p' * 32}".encode()).decode()
        config = {"auths": {f"registry-{i % per_namespace:03d}.example.com": {
            "username": f"robot-{i}", "password": "p" * 32, "auth": auth}}}
        secrets.append({"filterResult": {"namespace": namespace, "name": f"pull-{i % per_namespace:03d}",
                                         "data": base64.b64encode(json.dumps(config).encode()).decode()}})
    accounts = [{"filterResult": {"namespace": f"tenant-{n:04d}", "name": "default", "imagePullSecrets": []}}
                for n in range(max(1, count // per_namespace))]
    request = {"uid": "u", "kind": {"kind": "Pod"}, "namespace": "tenant-0000", "operation": "CREATE",
               "object": {"metadata": {"name": "app"}, "spec": {
                   "imagePullSecrets": [{"name": "pull-007"}],
                   "containers": [{"name": "app", "image": "registry-007.example.com/team/app:v1"}]}}}
    return [{"binding": "image-signatures.signgate.dev", "type": "Validating",
             "snapshots": {DOCKERCONFIGJSON_BINDING: secrets, DOCKERCFG_BINDING: [], SERVICE_ACCOUNT_BINDING: accounts},
             "review": {"request": request}}]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="0,100,1000,10000")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print("| secrets | context bytes | bytes per secret | read + parse (median ms) | credentials (median ms) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "context.json"
        base = None
        for count in [int(c) for c in args.counts.split(",")]:
            path.write_text(json.dumps(context(count)))  # shell-operator writes compact JSON too
            size = path.stat().st_size
            base = size if base is None else base
            reads, finds = [], []
            for _ in range(args.rounds):
                started = time.perf_counter()
                contexts = read_binding_context({"BINDING_CONTEXT_PATH": str(path)}, 64 * 1024 * 1024)
                parsed = time.perf_counter()
                found = pod_credentials(contexts[0], contexts[0]["review"]["request"])
                found.candidates("registry-007.example.com", "team/app")
                done = time.perf_counter()
                reads.append((parsed - started) * 1000)
                finds.append((done - parsed) * 1000)
            per = (size - base) / count if count else 0
            print(f"| {count} | {size} | {per:.0f} | {statistics.median(reads):.2f} | {statistics.median(finds):.2f} |")


if __name__ == "__main__":
    main()
