"""Cold verification of the same images by real `cosign verify` (v3) and by signgate, in one run.

The images are pushed to Debian's docker-registry on 127.0.0.1 and signed by real cosign v3
(offline: no transparency log), half in the bundle layout (v3's default) and half in the legacy
`.sig` layout. Each sample verifies one image from nothing, in a new process, as a CI job or an
admission request would:

- `cosign verify --key K --insecure-ignore-tlog=true --allow-http-registry REF` (cosign keeps no
  cache between runs);
- `signgate --config C verify REF`, the CLI, with no cache directory;
- the hook as shell-operator runs it, on a Pod admission request for REF, with no cache, handing
  the call to the verifier service (`signgate serve`) as the chart does;
- the same hook without the service (verifying in its own process), for reference.

Every sample must reach the expected verdict (pass); the tools take turns within each round, so
a slow moment of the machine is spread over all of them. Reported: the median and p90 per tool
and layout, and each signgate variant's median as a ratio of cosign's. This is a benchmark, not a
test. Usage: `python bench/cosign_side_by_side.py [--rounds N] [--images N] [--output FILE]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "hooks" / "lib")]

import yaml  # noqa: E402

from support import contract  # noqa: E402
from support import tools  # noqa: E402
from support.oci import RegistryHTTP, push_image  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.service import VerifierService  # noqa: E402

PASSWORD = "bench-password"
COSIGN = "cosign verify (v3)"
CLI = "signgate verify (CLI)"
HOOK_SERVICE = "hook + verifier service"
HOOK_ALONE = "hook, in its own process"
TOOLS = (COSIGN, CLI, HOOK_SERVICE, HOOK_ALONE)
LAYOUTS = {
    "bundle": ["--use-signing-config=false", "--tlog-upload=false"],
    "legacy": ["--use-signing-config=false", "--tlog-upload=false", "--new-bundle-format=false"],
}
REGISTRY_FLAGS = ["--allow-http-registry", "--allow-insecure-registry"]


def cosign_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "DOCKER_CONFIG": str(home / ".docker"), "COSIGN_PASSWORD": PASSWORD}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr}")
    return completed


def timed(action: Callable[[], bool]) -> float:
    started = time.perf_counter()
    ok = action()
    elapsed = time.perf_counter() - started
    if not ok:
        raise SystemExit("a verification that must pass did not; the numbers would mean nothing")
    return elapsed


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="times each image is verified by each tool")
    parser.add_argument("--images", type=int, default=4, help="images per layout")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    args = parser.parse_args()

    cosign = tools.path_of("cosign-v3")
    if not cosign.is_file():
        print(f"cosign v3 is not built ({cosign} is missing): run `make tools`", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="sg-side-", dir="/tmp") as scratch:
        tmp = Path(scratch)
        home = tmp / "home"
        (home / ".docker").mkdir(parents=True)
        env = cosign_env(home)
        run([str(cosign), "generate-key-pair", "--output-key-prefix", str(tmp / "cosign")], env)
        registry = Registry(tmp / "registry").start()
        service = VerifierService(tmp / "service")
        try:
            http = RegistryHTTP(registry)
            images: dict[str, list[str]] = {}
            for layout, flags in LAYOUTS.items():
                images[layout] = []
                for n in range(args.images):
                    image = push_image(http, f"bench/{layout}-{n}", "v1")
                    run([str(cosign), "sign", "--key", str(tmp / "cosign.key"), *flags, *REGISTRY_FLAGS, "--yes",
                         image.by_digest], env)
                    images[layout].append(image.reference)
            http.close()
            config = tmp / "config.yaml"
            config.write_text(yaml.safe_dump({
                "keys": {"default": str(tmp / "cosign.pub")},
                "registries": {"insecure": [registry.host]},
                "policy": [{"images": "**"}],
            }))
            service.start()
            cli_env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNGATE_")}
            cli_env["PYTHONPATH"] = str(REPO / "hooks" / "lib")

            def with_cosign(reference: str) -> bool:
                return subprocess.run([str(cosign), "verify", "--key", str(tmp / "cosign.pub"),
                                       "--insecure-ignore-tlog=true", *REGISTRY_FLAGS, reference],
                                      env=env, capture_output=True, timeout=120).returncode == 0

            def with_cli(reference: str) -> bool:
                return subprocess.run([sys.executable, "-m", "signgate", "--config", str(config), "verify", reference],
                                      env=cli_env, capture_output=True, timeout=120).returncode == 0

            def with_hook(socket: Path | None) -> Callable[[str], bool]:
                extra = {"SIGNGATE_VERIFIER_SOCKET": str(socket)} if socket else {}

                def verify(reference: str) -> bool:
                    hook = contract.run_request(config, contract.request_for("Pod", [reference]), env=extra)
                    # Falling back to its own process would measure the wrong thing.
                    if socket and "verifier service unavailable" in hook.stderr:
                        raise SystemExit(f"the hook did not reach the verifier service: {hook.stderr}")
                    return hook.allowed

                return verify

            verifiers = {COSIGN: with_cosign, CLI: with_cli, HOOK_SERVICE: with_hook(service.socket),
                         HOOK_ALONE: with_hook(None)}
            samples = {(tool, layout): [] for tool in TOOLS for layout in LAYOUTS}
            for round_number in range(args.rounds):
                for layout, references in images.items():
                    for position, reference in enumerate(references):
                        # Rotate who goes first, so no tool always follows the same one.
                        shift = (round_number + position) % len(TOOLS)
                        for tool in TOOLS[shift:] + TOOLS[:shift]:
                            samples[(tool, layout)].append(timed(lambda: verifiers[tool](reference)))
        finally:
            service.stop()
            registry.stop()

    table = render(samples, args)
    print(table)
    if args.output:
        args.output.write_text(table + "\n")
    return 0


def render(samples: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> str:
    version = tools.versions()["COSIGN_V3"]
    lines = [
        f"Cold verification of one image, cosign {version} and signgate side by side "
        f"({args.images} images per layout, {args.rounds} rounds, a new process per verification, no caches):",
        "",
        "| layout | tool | median | p90 | median / cosign's |",
        "| --- | --- | --- | --- | --- |",
    ]
    for layout in LAYOUTS:
        base = statistics.median(samples[(COSIGN, layout)])
        for tool in TOOLS:
            values = samples[(tool, layout)]
            median = statistics.median(values)
            lines.append(f"| {layout} | {tool} | {median * 1000:.0f} ms | {quantile(values, 0.9) * 1000:.0f} ms | "
                         f"{median / base:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
