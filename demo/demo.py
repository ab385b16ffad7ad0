"""`make demo`: signgate's main job on an embedded local registry.

1. Start Debian's docker-registry on 127.0.0.1 (a generated config, a free port).
2. Generate a cosign-compatible key pair; push one image and sign it, push another unsigned.
3. Run the hook exactly as shell-operator does (binding-context file, environment, the executable
   as a subprocess, the response file) on a Deployment admission request for each image.
4. Print the two decisions as `kubectl apply` would show them.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "hooks" / "lib")]

from support.contract import admission_request, pod_spec, run_config, run_request, workload  # noqa: E402
from support.oci import RegistryHTTP, push_image  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.signer import generate_key, sign_legacy  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="signgate-demo-") as tmp:
        work = Path(tmp)
        with Registry(work / "registry", mode="plain") as registry:
            http = RegistryHTTP(registry)
            key = generate_key("ecdsa-p256", work, "cosign")
            signed = push_image(http, "demo/signed", "v1", content=b"signed demo image")
            sign_legacy(http, "demo/signed", signed.digest, key)
            unsigned = push_image(http, "demo/unsigned", "v1", content=b"unsigned demo image")

            config = work / "config.yaml"
            config.write_text(
                json.dumps(
                    {
                        "keys": {"default": str(key.pub_path)},
                        "registries": {"insecure": [registry.host]},
                        "denyLatest": True,
                        "policy": [{"images": f"{registry.host}/**", "keys": ["default"]}],
                    },
                    indent=2,
                )
            )
            binding = run_config(config)
            if binding.returncode != 0:
                print(binding.stderr, file=sys.stderr)
                return 1

            print("signgate demo")
            print(f"  registry  {registry.url}  (Debian docker-registry, started for this demo)")
            print(f"  key       {key.pub_path}  (ECDSA P-256, cosign format)")
            print(f"  images    {signed.reference}  {signed.digest[:19]}…  signed")
            print(f"            {unsigned.reference}  {unsigned.digest[:19]}…  not signed")
            print(f"  hook      hooks/verify-images.py --config → binding {binding.stdout.splitlines()[2].split(': ')[-1]}")

            status = 0
            for name, image in (("signed-app", signed.reference), ("unsigned-app", unsigned.reference)):
                filename = f"deployment-{name.split('-')[0]}.yaml"
                request = admission_request(workload("Deployment", pod_spec([image]), name=name))
                request["object"]["spec"]["template"]["spec"]["containers"][0]["name"] = "app"
                run = run_request(config, request)
                log = run.decision_log
                print(f"\n$ kubectl apply -f {filename}")
                for warning in run.warnings:
                    print(f"Warning: {warning}")
                if run.allowed:
                    print(f"deployment.apps/{name} created")
                else:
                    print(
                        f'Error from server (Forbidden): error when creating "{filename}": admission webhook '
                        f'"{binding_name(binding.stdout)}" denied the request: {run.message}'
                    )
                print(f"  (hook: {log['verdict']} in {log['duration_ms']} ms; reasons: {', '.join(log['reasons']) or '-'})")
                expected = name == "signed-app"
                if run.allowed is not expected:
                    status = 1
            return status


def binding_name(config_output: str) -> str:
    for line in config_output.splitlines():
        if line.strip().startswith("- name:"):
            return line.split(":", 1)[1].strip()
    return "signgate"


if __name__ == "__main__":
    sys.exit(main())
