"""`make bench`: how fast the hook answers, driven exactly as shell-operator drives it.

Each sample writes a binding-context file, starts the hook executable as a new process (as
shell-operator does for every admission request), waits, and reads the response file. The
registry is Debian's docker-registry on 127.0.0.1, and request counts come from its own access
log. Results are printed as a table and written to bench/RESULTS.md.

This is a benchmark, not a test: it asserts nothing except that every response is valid and has
the expected verdict. The targets it is read against are listed in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "hooks" / "lib")]

from support.contract import hook_env, request_for  # noqa: E402
from support.oci import RegistryHTTP, push_image  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.service import VerifierService  # noqa: E402
from support.fulcio import new_ct_log, new_fulcio, pem, trusted_root  # noqa: E402
from support.signer import b64, generate_key, sign_bundle, sign_legacy, simple_signing_payload  # noqa: E402
from support.tlog import new_log  # noqa: E402

HOOK = REPO / "hooks" / "verify-images.py"
FLOOR = REPO / "bench" / "floor_hook.py"
IN_PROCESS = "in-process"
WITH_SERVICE = "with the verifier service"


@dataclass
class Scenario:
    name: str
    samples: list[float] = field(default_factory=list)  # seconds, per admission
    requests: list[int] = field(default_factory=list)  # registry requests, per admission or per batch
    note: str = ""

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        if not ordered:
            return float("nan")
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def run_once(
    executable: Path, config: Path | None, request: dict, cache_dir: Path | None, tmp: Path, socket: Path | None = None
) -> tuple[float, dict]:
    context = tmp / f"ctx-{uuid.uuid4().hex}.json"
    response = tmp / f"resp-{uuid.uuid4().hex}.json"
    context.write_text(json.dumps([{"binding": "image-signatures.signgate.dev", "type": "Validating", "review": {"request": request}}]))
    response.write_text("")
    extra = {"BINDING_CONTEXT_PATH": str(context), "VALIDATING_RESPONSE_PATH": str(response)}
    if cache_dir is not None:
        extra["SIGNGATE_CACHE_DIR"] = str(cache_dir)
    if socket is not None:
        extra["SIGNGATE_VERIFIER_SOCKET"] = str(socket)
    env = hook_env(config, extra)
    started = time.perf_counter()
    completed = subprocess.run([str(executable)], cwd=executable.parent, env=env, capture_output=True, timeout=60)
    elapsed = time.perf_counter() - started
    body = json.loads(response.read_text() or "null")
    context.unlink()
    response.unlink()
    if completed.returncode != 0 or not isinstance(body, dict):
        raise RuntimeError(f"{executable.name} failed: rc={completed.returncode} {completed.stderr[-500:]!r}")
    return elapsed, body


def expect(body: dict, allowed: bool, what: str) -> None:
    if body.get("allowed") is not allowed:
        raise RuntimeError(f"{what}: expected allowed={allowed}, got {body}")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; {platform.platform()}; "
        f"Python {platform.python_version()} ({sys.executable})"
    )


def compile_library() -> None:
    """Byte-compile the hook library as the image does (this environment may forbid writing .pyc)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "hooks" / "lib")], env=env, check=True)


def request_costs(host: str, count: int = 300) -> list[tuple[str, float, float]]:
    """CPU and wall time per GET on a kept-alive connection to the registry: `requests` (as the
    registry client uses it) against the standard library's http.client, for the record."""
    import http.client

    import requests

    def timed(get: Callable[[], None]) -> tuple[float, float]:
        for _ in range(20):
            get()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            get()
        return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count

    session = requests.Session()
    session.trust_env = False

    def with_requests() -> None:
        session.get(f"http://{host}/v2/", stream=True).content

    name, port = host.rsplit(":", 1)
    connection = http.client.HTTPConnection(name, int(port))

    def with_http_client() -> None:
        connection.request("GET", "/v2/")
        connection.getresponse().read()

    return [("requests.Session", *timed(with_requests)), ("http.client (standard library)", *timed(with_http_client))]


def raw_fetch_times(host: str, fetch_paths: list[list[str]], runs: int = 15) -> tuple[float, float]:
    """Median wall time of only the registry round trips of a cold check, for 1 image and for all
    images at once (one thread each, as the hook verifies), with http.client and no verification:
    what the registry itself costs, whatever the client."""
    import http.client

    name, port = host.rsplit(":", 1)

    def fetch(paths: list[str]) -> None:
        connection = http.client.HTTPConnection(name, int(port))
        for path in paths:
            connection.request("GET", path)
            connection.getresponse().read()
        connection.close()

    def timed(count: int) -> float:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            threads = [threading.Thread(target=fetch, args=(paths,)) for paths in fetch_paths[:count]]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    return timed(1), timed(len(fetch_paths))


KEYLESS_SUBJECT = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1"
KEYLESS_ISSUER = "https://token.actions.githubusercontent.com"


def keyless_signature(tmp: Path, http: RegistryHTTP, image, key) -> Path:
    """Sign `image` like cosign v2 keyless: a certificate with an SCT, its chain, and a SET from a
    test Rekor log; returns the trusted_root.json that trusts them."""
    import hashlib

    fulcio, ct, log = new_fulcio("bench-fulcio"), new_ct_log(), new_log(tmp / "logs", "rekor.bench", "v1")
    certificate = fulcio.issue(key.public_key, subject=KEYLESS_SUBJECT, issuer=KEYLESS_ISSUER, ct_log=ct)
    payload = simple_signing_payload(f"{http.host}/bench/keyless", image.digest)
    signature = key.sign(payload)
    body = json.dumps({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {"data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
                 "signature": {"content": b64(signature), "publicKey": {"content": b64(pem(certificate).encode())}}},
    }, sort_keys=True, separators=(",", ":")).encode()
    index, integrated = log.append(body), int(time.time())
    rekor_bundle = json.dumps({
        "SignedEntryTimestamp": b64(log.set_over(b64(body), integrated, index)),
        "Payload": {"body": b64(body), "integratedTime": integrated, "logIndex": index, "logID": log.log_id.hex()},
    })
    sign_legacy(http, "bench/keyless", image.digest, key, payload=payload, signature_override=signature, extra_layer_annotations={
        "dev.sigstore.cosign/certificate": pem(certificate), "dev.sigstore.cosign/chain": fulcio.chain_pem.decode(),
        "dev.sigstore.cosign/bundle": rekor_bundle,
    })
    return trusted_root(tmp / "trusted_root.json", fulcio, [ct], [log])


def import_costs() -> list[tuple[str, float]]:
    """Median wall time of `python -c 'import X'` minus `python -c pass`, over 7 runs each."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "hooks" / "lib"))

    def median_run(code: str) -> float:
        times = []
        for _ in range(7):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    base = median_run("pass")
    modules = [
        ("signgate.fastpath (all the warm path imports)", "import signgate.fastpath"),
        ("signgate.relay + _socket (the hook's side of the verifier service)", "import signgate.relay, _socket"),
        ("signgate.shed (a cold call's overload check, before the library)", "import signgate.shed"),
        ("signgate.hook (the full path's own code)", "import signgate.hook, signgate.decision, signgate.cache, signgate.verifiers.cosign.flow"),
        ("yaml (only for YAML configs; the chart renders JSON)", "import yaml"),
        ("jsonpath_ng (not imported by the hook)", "import jsonpath_ng"),
        ("requests (only when a registry is contacted)", "import requests"),
        ("signgate.verifiers.cosign.certificates + cryptography.x509.verification (certificate rules only)",
         "import signgate.verifiers.cosign.certificates, cryptography.x509, cryptography.x509.verification"),
        ("cryptography (only when a signature is checked)",
         "from cryptography.hazmat.primitives.asymmetric import ec, rsa, ed25519, padding, utils\n"
         "from cryptography.hazmat.primitives import hashes, serialization"),
    ]
    return [("python -c pass", base)] + [(name, median_run(code) - base) for name, code in modules]


# ---- late answers under a burst (issue 13, findings 2 and 8) ------------------------------------------

LATE_TIMEOUT = 10.0  # the webhook's timeoutSeconds in this scenario (Kubernetes' default)
LATE_HEADING = "## Late answers: a burst of distinct cold images"


@dataclass
class Answer:
    """One admission of the burst, timed as shell-operator sees it."""

    image: str
    signed: bool
    body: dict | None = None
    exited: float = float("nan")  # seconds from the binding context's write to the hook's exit
    closed: float = float("nan")  # ... to the last of stdout and stderr closing (EOF)
    reason: str = ""
    why: str = ""  # the denial's explanation, or the relay's warning

    @property
    def answered(self) -> float:
        """When shell-operator has the answer: the hook has exited and its output has closed."""
        return max(self.exited, self.closed)


@dataclass
class Burst:
    label: str
    size: int
    answers: list[Answer]
    wall: float  # seconds from the first write to the last answer
    load: float = float("nan")  # the 1-minute load average just before the burst (other work included)

    def late(self) -> list[Answer]:
        return [a for a in self.answers if not a.answered <= LATE_TIMEOUT]  # NaN (never answered) is late too

    def count(self, reason: str) -> int:
        return sum(1 for a in self.answers if a.reason == reason)


def admit_timed(config: Path, image: str, signed: bool, cache_dir: Path, tmp: Path, socket: Path | None, answer: Answer) -> None:
    """Run the hook once as shell-operator does: write the binding context, start the hook, wait for
    its exit and for EOF on stdout and stderr, read the response."""
    context = tmp / f"ctx-{uuid.uuid4().hex}.json"
    response = tmp / f"resp-{uuid.uuid4().hex}.json"
    extra = {"BINDING_CONTEXT_PATH": str(context), "VALIDATING_RESPONSE_PATH": str(response), "SIGNGATE_CACHE_DIR": str(cache_dir)}
    if socket is not None:
        extra["SIGNGATE_VERIFIER_SOCKET"] = str(socket)
    env = hook_env(config, extra)
    request = request_for("Pod", [image])
    response.write_text("")
    context.write_text(json.dumps([{"binding": "image-signatures.signgate.dev", "type": "Validating", "review": {"request": request}}]))
    written = time.monotonic()  # shell-operator starts the hook right after writing this file
    process = subprocess.Popen([str(HOOK)], cwd=HOOK.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    eof: dict[str, float] = {}
    output: dict[str, bytes] = {}

    def drain(name: str, stream: "subprocess.IO[bytes]") -> None:
        data = b""
        while chunk := stream.read(65536):
            data += chunk
        eof[name] = time.monotonic()
        output[name] = data

    readers = [threading.Thread(target=drain, args=(n, s)) for n, s in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=90)
        answer.exited = time.monotonic() - written
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for reader in readers:
        reader.join(timeout=90)
    if len(eof) == 2:
        answer.closed = max(eof.values()) - written
    try:
        answer.body = json.loads(response.read_text() or "null")
    except ValueError:
        answer.body = None
    context.unlink(missing_ok=True)
    response.unlink(missing_ok=True)
    body = answer.body if isinstance(answer.body, dict) else {}
    message = str(body.get("message", ""))
    warnings = [line for line in output.get("stderr", b"").decode(errors="replace").splitlines() if "verifier service" in line]
    if warnings:
        answer.why = json.loads(warnings[0]).get("msg", "")[:160]
    elif message:
        answer.why = message.split(": not verified within", 1)[-1][:160]
    if body.get("allowed") is True:
        answer.reason = "admitted"
    elif "signgate is overloaded" in message:
        answer.reason = "overloaded"
    elif "not verified within" in message:
        answer.reason = "deadline"
    elif "no signature found" in message:
        answer.reason = "unsigned"
    else:
        answer.reason = "other denial" if body else "no response"


def burst(label: str, size: int, config: Path, images: list[tuple[str, bool]], tmp: Path, socket: Path | None) -> Burst:
    cache_dir = tmp / f"burst-cache-{uuid.uuid4().hex}"
    cache_dir.mkdir()
    answers = [Answer(image, signed) for image, signed in images[:size]]
    load = os.getloadavg()[0]
    threads = [
        threading.Thread(target=admit_timed, args=(config, a.image, a.signed, cache_dir, tmp, socket, a)) for a in answers
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Burst(label, size, answers, time.monotonic() - started, load)


def late_answers(tmp: Path, registry: "Registry", http: RegistryHTTP, key: object, sizes: list[int]) -> list[Burst]:
    """`max(sizes)` distinct images (one in ten unsigned), then a burst of each size at once,
    in-process and with the verifier service, each on a cold cache."""
    count = max(sizes)
    images: list[tuple[str, bool]] = []
    for i in range(count):
        repo = f"bench/burst{i}"
        image = push_image(http, repo, "v1", content=f"burst {i}".encode())
        signed = i % 10 != 9
        if signed:
            sign_legacy(http, repo, image.digest, key)
        images.append((image.reference, signed))
    config = tmp / "burst-config.json"
    config.write_text(json.dumps({
        "keys": {"default": str(key.pub_path)},  # type: ignore[attr-defined]
        "registries": {"insecure": [registry.host]},
        "policy": [{"images": f"{registry.host}/**"}],
        "webhook": {"timeoutSeconds": int(LATE_TIMEOUT)},
    }))
    bursts = []
    for size in sizes:
        bursts.append(burst(IN_PROCESS, size, config, images, tmp, None))
        with VerifierService(Path(tempfile.mkdtemp(prefix="sg-burst-", dir="/tmp"))) as service:
            bursts.append(burst(WITH_SERVICE, size, config, images, tmp, service.socket))
    return bursts


def render_late(bursts: list[Burst]) -> str:
    def ms(values: list[float], q: float) -> str:
        ordered = sorted(v for v in values if v == v)
        if not ordered:
            return "-"
        return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000:.0f}"

    lines = [
        LATE_HEADING,
        "",
        f"Written on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {machine()}.",
        "",
        "N admissions start at the same moment, each of a distinct image (one in ten unsigned), on a",
        f"cold cache, with `timeoutSeconds: {LATE_TIMEOUT:g}` (deadline 8 s). Each is timed as shell-operator",
        "sees it: from writing the binding context to the hook's exit and the close (EOF) of its stdout",
        "and stderr, since shell-operator reads both to the end before it answers the API server. An",
        f"answer is **late** when that is after {LATE_TIMEOUT:g} s: the API server has stopped waiting (with",
        "`failurePolicy: Ignore`, a late answer is an unverified admission). The gap is from the hook's exit",
        "to its output closing: anything but ~0 means another process held the hook's stdout or stderr.",
        "",
        "| N | deployed | load before | late | answered p50 / p95 / max ms | exit→close gap p50 / p95 / max ms | verified and admitted | shed (overloaded) | deadline | unsigned denied | unsigned admitted | other | wall s |",
        "| ---: | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in bursts:
        answered = [a.answered for a in b.answers]
        gaps = [max(0.0, a.closed - a.exited) for a in b.answers]  # EOF may be seen before the exit is
        unsigned_admitted = sum(1 for a in b.answers if not a.signed and a.reason == "admitted")
        other = b.count("other denial") + b.count("no response")
        lines.append(
            f"| {b.size} | {b.label} | {b.load:.1f} | {len(b.late())} | {ms(answered, 0.5)} / {ms(answered, 0.95)} / {ms(answered, 1.0)} | "
            f"{ms(gaps, 0.5)} / {ms(gaps, 0.95)} / {ms(gaps, 1.0)} | {b.count('admitted') - unsigned_admitted} | {b.count('overloaded')} | "
            f"{b.count('deadline')} | {b.count('unsigned')} | {unsigned_admitted} | {other} | {b.wall:.1f} |"
        )
    lines += [
        "",
        "\"load before\" is the machine's 1-minute load average just before the burst: other work on the",
        "same two cores takes CPU from the burst. The exit→close gap is measured by this process's own",
        "threads (hundreds at once), so tenths of a second of it are this benchmark's scheduling, in-process",
        "as well; before issue 13 the gap with the verifier service was 2.4 s at p50 and 11 s at most.",
        "The burst's arrivals spread over the first seconds (each hook is started by a thread of this",
        "process, as shell-operator's HTTP handlers do); every time counts from that hook's own arrival.",
        "",
        "Target (issue 13): 0 late answers with the verifier service, and no unsigned image admitted.",
        'Shed admissions are denials that name the image and say "signgate is overloaded", given at once',
        "when too little of the deadline is left to verify; the API server or the controller retries them.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--output", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument(
        "--burst", default="200",
        help="comma-separated sizes of the late-answers burst (distinct cold images at once); default 200",
    )
    parser.add_argument(
        "--only-burst", action="store_true",
        help="run only the late-answers burst and replace its section in --output",
    )
    args = parser.parse_args()
    n = args.samples
    sizes = [int(size) for size in args.burst.split(",") if size.strip()]
    compile_library()
    if args.only_burst:
        return main_burst(args, sizes)

    with tempfile.TemporaryDirectory(prefix="signgate-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with Registry(tmp / "registry", mode="plain") as registry:
            http = RegistryHTTP(registry)
            key = generate_key("ecdsa-p256", tmp, "cosign")
            legacy = push_image(http, "bench/legacy", "v1", content=b"legacy")
            sign_legacy(http, "bench/legacy", legacy.digest, key)
            bundled = push_image(http, "bench/bundle", "v1", content=b"bundle")
            sign_bundle(http, "bench/bundle", bundled.digest, bundled.media_type, bundled.size, key)
            many = []
            fetch_paths: list[list[str]] = []  # the 5 requests of each image's cold check
            for i in range(10):
                image = push_image(http, f"bench/many{i}", "v1", content=f"many {i}".encode())
                signature = sign_legacy(http, f"bench/many{i}", image.digest, key)
                many.append(image)
                repo, hex_digest = f"bench/many{i}", image.digest.partition(":")[2]
                fetch_paths.append([
                    f"/v2/{repo}/manifests/v1", f"/v2/{repo}/referrers/{image.digest}",
                    f"/v2/{repo}/manifests/sha256-{hex_digest}", f"/v2/{repo}/manifests/sha256-{hex_digest}.sig",
                    f"/v2/{repo}/blobs/{signature.payload_digest}",
                ])

            keyless = push_image(http, "bench/keyless", "v1", content=b"keyless")
            root_path = keyless_signature(tmp, http, keyless, key)

            config = tmp / "config.json"
            config.write_text(json.dumps({
                "keys": {"default": str(key.pub_path)},
                "registries": {"insecure": [registry.host]},
                # A keyless rule (issue 16): a Fulcio-shaped test CA with SCTs, a test Rekor log.
                "identities": {"release": {"issuer": KEYLESS_ISSUER, "subject": KEYLESS_SUBJECT}},
                "trustedRoots": {"test": str(root_path)},
                "policy": [
                    {"images": f"{registry.host}/bench/keyless", "identities": ["release"], "trustedRoot": "test", "tlog": "required"},
                    {"images": f"{registry.host}/**"},
                ],
            }))
            by_digest = f"{registry.host}/bench/legacy@{legacy.digest}"
            one = request_for("Pod", [legacy.reference])
            one_digest = request_for("Pod", [by_digest])
            ten = request_for("Pod", [image.reference for image in many])
            scenarios: list[Scenario] = []

            def fresh_cache() -> Path:
                path = tmp / f"cache-{uuid.uuid4().hex}"
                path.mkdir()
                return path

            # Warm the OS caches before measuring anything.
            for _ in range(3):
                run_once(FLOOR, None, one, None, tmp)
                run_once(HOOK, config, one, fresh_cache(), tmp)

            floor = Scenario("floor: stdlib-only hook that allows")
            for _ in range(n):
                elapsed, body = run_once(FLOOR, None, one, None, tmp)
                floor.samples.append(elapsed)
            scenarios.append(floor)

            def measure(label: str, socket: Path | None) -> None:
                """Every scenario, with the hook deployed as `label` says."""

                def timed(name: str, request: dict, samples: int, cache_for: "Callable[[], Path]", allowed: bool = True) -> Scenario:
                    scenario = Scenario(f"{name} ({label})")
                    for _ in range(samples):
                        mark = registry.mark()
                        elapsed, body = run_once(HOOK, config, request, cache_for(), tmp, socket)
                        expect(body, allowed, scenario.name)
                        scenario.samples.append(elapsed)
                        scenario.requests.append(registry.count_requests(mark))
                    scenarios.append(scenario)
                    return scenario

                for name, request in (("warm cache, Pod with 1 container, tag", one), ("warm cache, Pod with 1 container, digest", one_digest)):
                    warm_cache = fresh_cache()
                    run_once(HOOK, config, request, warm_cache, tmp, socket)
                    timed(name, request, n, lambda: warm_cache)
                for name, request in (
                    ("cold, 1 image, legacy signature, tag", one),
                    ("cold, 1 image, legacy signature, digest", one_digest),
                    ("cold, 1 image, bundle, tag", request_for("Pod", [bundled.reference])),
                    ("cold, 1 image, keyless legacy signature (certificate rule: chain, SCT, SET), tag", request_for("Pod", [keyless.reference])),
                    ("cold, 10 distinct images", ten),
                ):
                    timed(name, request, max(5, n // 2), fresh_cache)

                rollout = Scenario(f"{args.replicas}-replica rollout: {args.replicas} Pods at once, cold cache ({label})")
                rollout_cache = fresh_cache()
                results: list[tuple[float, dict] | Exception] = [None] * args.replicas  # type: ignore[list-item]

                def admit(position: int) -> None:
                    try:
                        pod = request_for("Pod", [legacy.reference])
                        results[position] = run_once(HOOK, config, pod, rollout_cache, tmp, socket)
                    except Exception as exc:  # recorded and reported, never lost
                        results[position] = exc

                mark = registry.mark()
                threads = [threading.Thread(target=admit, args=(i,)) for i in range(args.replicas)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                failures = [r for r in results if isinstance(r, Exception) or r is None or r[1].get("allowed") is not True]
                rollout.samples = [r[0] for r in results if isinstance(r, tuple)]
                rollout.requests = [registry.count_requests(mark)]
                rollout.note = f"{len(failures)} failed or lost responses"
                scenarios.append(rollout)

            measure(IN_PROCESS, None)
            with VerifierService(Path(tempfile.mkdtemp(prefix="sg-bench-", dir="/tmp"))) as service:
                measure(WITH_SERVICE, service.socket)
            per_request = request_costs(registry.host)
            fetch_floor = raw_fetch_times(registry.host, fetch_paths)
            bursts = late_answers(tmp, registry, http, key, sizes) if sizes else []

    costs = import_costs()
    report = render(scenarios, floor, costs, args, per_request, fetch_floor)
    if bursts:
        report += "\n" + render_late(bursts)
    print(report)
    Path(args.output).write_text(report)
    return 0


def main_burst(args: argparse.Namespace, sizes: list[int]) -> int:
    """Only the late-answers burst: its section of --output is replaced, the rest kept."""
    with tempfile.TemporaryDirectory(prefix="signgate-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with Registry(tmp / "registry", mode="plain") as registry:
            http = RegistryHTTP(registry)
            key = generate_key("ecdsa-p256", tmp, "cosign")
            section = render_late(late_answers(tmp, registry, http, key, sizes or [200]))
    print(section)
    output = Path(args.output)
    existing = output.read_text() if output.exists() else ""
    before, found, after = existing.partition(LATE_HEADING)
    rest = after.split("\n## ", 1)[1] if found and "\n## " in after else ""
    output.write_text(before.rstrip("\n") + ("\n\n" if before.strip() else "") + section + ("\n## " + rest if rest else ""))
    return 0


def render(
    scenarios: list[Scenario],
    floor: Scenario,
    costs: list[tuple[str, float]],
    args: argparse.Namespace,
    per_request: list[tuple[str, float, float]],
    fetch_floor: tuple[float, float],
) -> str:
    base = floor.median
    lines = [
        "# signgate benchmark results",
        "",
        f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Machine: {machine()}.",
        "",
        "Every sample starts the hook as a new process, as shell-operator does, and includes",
        "interpreter start-up. The library is byte-compiled first, as in the image. The registry is",
        "Debian's docker-registry on 127.0.0.1 (plain HTTP); request counts come from its access log.",
        "Ratios are to the floor's median in this run.",
        "",
        f"Each scenario runs twice: **{IN_PROCESS}** (the hook alone: a cold call imports `requests`",
        f"and `cryptography` itself) and **{WITH_SERVICE}** (`signgate serve` running beside the",
        "hook, as the chart deploys it by default: a cold call is handed to a worker forked from a",
        "process that has imported them once). The verifier service holds no verdicts: \"cold\"",
        "means an empty verdict cache in both cases.",
        "",
        "| scenario | n | median ms | p95 ms | p99 ms | × floor | registry requests |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in scenarios:
        requests = "-" if not s.requests else (
            str(s.requests[0]) + " (whole rollout)" if "rollout" in s.name else f"{statistics.median(s.requests):g} per admission"
        )
        lines.append(
            f"| {s.name} | {len(s.samples)} | {s.median * 1000:.1f} | {s.quantile(0.95) * 1000:.1f} | "
            f"{s.quantile(0.99) * 1000:.1f} | {s.median / base:.2f} | {requests}{'; ' + s.note if s.note else ''} |"
        )
    lines += ["", "## Where the time goes", "", "Median extra wall time of importing each module in a fresh interpreter:", ""]
    lines += ["| import | ms |", "| --- | ---: |"]
    for name, seconds in costs:
        lines.append(f"| {name} | {seconds * 1000:.1f} |")
    lines += [
        "",
        "A cold call in-process pays for `requests` and `cryptography` (and the library around them)",
        "in every new process: several times the floor on this machine, whose bare interpreter starts",
        "unusually fast. With the verifier service, the hook process imports only the standard-library",
        "fast path and a Unix-socket client; the worker it hands the call to is a fork of a process",
        "that imported everything once, so the cold call costs the floor, the fast-path check, one",
        "fork and the registry round trips.",
        "",
        "One registry GET on a kept-alive loopback connection, CPU and wall time of the client process:",
        "",
        "| client | CPU ms | wall ms |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {cpu * 1000:.2f} | {wall * 1000:.2f} |" for name, cpu, wall in per_request],
        "",
        f"The registry round trips alone of a cold check (5 GETs per image, http.client, no verification, one",
        f"thread per image): {fetch_floor[0] * 1000:.1f} ms for 1 image, {fetch_floor[1] * 1000:.1f} ms for 10 at once.",
        "",
        "## Targets (issue 6)",
        "",
        "- warm cache, one container: at most 1.5× the floor;",
        "- cold, one image, legacy signature: at most 3× the floor;",
        "- 10 distinct cold images: at most 1.5× the one-image cold time;",
        "- 50-replica rollout: p99 under 2 s, no failed or lost responses, registry requests for the",
        "  whole rollout no more than twice those of a single cold admission;",
        "- registry requests for a cold legacy-signed image by digest: manifest, referrers probe,",
        "  fallback tag (this registry has no referrers API), signature manifest, payload blob = 5;",
        "  warm and digest-pinned: 0.",
        "",
        "Measured against the targets:",
        "",
        "| target | " + " | ".join([IN_PROCESS, WITH_SERVICE]) + " |",
        "| --- | --- | --- |",
    ]
    by_name = {s.name: s for s in scenarios}

    def get(name: str, label: str) -> Scenario | None:
        return by_name.get(f"{name} ({label})")

    rows: list[list[str]] = [[], [], [], [], [], []]
    for label in (IN_PROCESS, WITH_SERVICE):
        warm = get("warm cache, Pod with 1 container, tag", label)
        warm_digest = get("warm cache, Pod with 1 container, digest", label)
        cold = get("cold, 1 image, legacy signature, tag", label)
        cold_digest = get("cold, 1 image, legacy signature, digest", label)
        ten = get("cold, 10 distinct images", label)
        rollout = next((s for s in scenarios if "rollout" in s.name and s.name.endswith(f"({label})")), None)
        if not (warm and warm_digest and cold and cold_digest and ten and rollout):
            return "\n".join(lines)
        single = statistics.median(cold_digest.requests)
        rows[0].append(f"{warm.median / base:.2f}× (≤ 1.5×) {_mark(warm.median / base <= 1.5)}")
        rows[1].append(
            f"tag {cold.median / base:.2f}×, digest {cold_digest.median / base:.2f}× (≤ 3×) "
            f"{_mark(max(cold.median, cold_digest.median) / base <= 3)}"
        )
        rows[2].append(f"{ten.median / cold.median:.2f}× (≤ 1.5×) {_mark(ten.median / cold.median <= 1.5)}")
        lost = int(rollout.note.split()[0])
        ok = rollout.quantile(0.99) < 2 and lost == 0 and rollout.requests[0] <= 2 * single
        rows[3].append(f"p99 {rollout.quantile(0.99) * 1000:.0f} ms, {rollout.note}, {rollout.requests[0]} requests {_mark(ok)}")
        rows[4].append(f"{single:g} {_mark(single == 5)}")
        warm_requests = max(warm_digest.requests)
        rows[5].append(f"{warm_requests} {_mark(warm_requests == 0)}")
    names = [
        "warm cache, one container",
        "cold, one legacy-signed image",
        "10 distinct cold images vs one",
        "50-replica rollout",
        "requests, cold legacy by digest",
        "requests, warm by digest",
    ]
    for name, row in zip(names, rows):
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines.append("")
    one = get("cold, 1 image, legacy signature, tag", WITH_SERVICE)
    ten = get("cold, 10 distinct images", WITH_SERVICE)
    if one and ten and ten.median / one.median > 1.5:
        cpu = per_request[0][1] * 1000
        bound = (one.median + fetch_floor[1] - fetch_floor[0]) / one.median
        lines += [
            "**Why 10 distinct cold images miss 1.5× with the verifier service.** In-process, the import",
            "bill that every cold call pays hides most of the extra images' cost. Without that bill, the",
            f"extra images are what remains: 45 more registry requests, each costing {cpu:.1f} ms of CPU in",
            "`requests` alone (see the table above), in one worker whose threads share one interpreter",
            f"lock, on {os.cpu_count()} cores that the registry shares. The 10 images then take",
            f"{ten.median * 1000:.0f} ms against {one.median * 1000:.0f} ms for one: less than half the in-process time",
            "for the same request, but more than 1.5× the much faster single image. Meeting the ratio",
            "would take a faster registry or more cores, not only a faster client: the registry round trips",
            f"alone, with no verification and the standard library's http.client, take {fetch_floor[1] * 1000:.0f} ms for the",
            f"10 images against {fetch_floor[0] * 1000:.0f} ms for one. Added to the one-image time, that puts the 10 images",
            f"at {bound:.2f}× at best on this machine"
            + (
                ": here the two targets (cold ≤ 3× the floor, and 10 images ≤ 1.5× one) cannot both hold."
                if bound > 1.5 else
                "; a lighter registry client than `requests` could get there."
            ),
            "",
        ]
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


if __name__ == "__main__":
    sys.exit(main())
