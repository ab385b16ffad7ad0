"""A realistic bench (issue 18, item 1): signgate and `cosign verify` against a TLS registry with
token auth, at RTT 0 and at 50 ms RTT, with the round trips on the critical path measured.

Set-up, all on 127.0.0.1 (see bench/latency_proxy.py for the instruments):

    client ─▶ DelayProxy ─▶ TLSTerminator ─┬▶ docker-registry (token auth)
                                           └▶ token server (tests/support/tokenserver.py), path /token

The registry advertises https://<proxy>/token as its realm (the token service on the registry's own
host and port, as Harbor and ghcr.io serve it; cosign refuses a realm on another loopback address),
so a token fetch pays the same delay and TLS as a registry request. Clients reach both through the proxies' ports and
verify TLS against the bench's own CA (signgate: `registries.caBundle`; cosign: SSL_CERT_FILE), with
IP SANs for 127.0.0.1, so names and CAs are really checked. Pulls are anonymous (the token server
grants `pull` to anyone), which still costs the challenge and the token fetch.

The terminator sees every connection, handshake and request with server-side timestamps. For each
sample the bench reports the wall time, the number of requests (registry and token service), and
the critical path: the longest chain of connection set-ups, TLS handshakes and requests in which each
started after the previous one ended (bench/latency_proxy.py: critical_path). As an independent
check it also reports (median wall at 50 ms − median wall at RTT 0) / 50 ms: the round trips the
delay actually added.

Usage: `python bench/realistic.py [--samples N] [--output FILE]`; importable: `main()` runs with the
defaults, `main(["--samples", "3"])` with arguments. Returns 0; a verdict other than "allowed" or a
failed cosign verification raises, since the numbers would then mean nothing.
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
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO / "bench", REPO / "tests", REPO / "hooks" / "lib"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from latency_proxy import DelayProxy, Event, EventLog, TLSTerminator, critical_path, per_repository_critical_path  # noqa: E402

HOOK = REPO / "hooks" / "verify-images.py"
FLOOR = REPO / "bench" / "floor_hook.py"
RTTS = (0.0, 0.050)
IN_PROCESS = "hook, in-process"
# The verifier service with `--worker-requests 1`: a fresh worker per request, which keeps no
# connection or token (the service before issue 18, item 3).
WITH_SERVICE = "hook + service, fresh worker"
# The verifier service as deployed: long-lived workers, measured after an unmeasured admission of
# the same images (connections warm, a token for each repository held; the verdict is not cached).
WARM_SERVICE = "hook + service, warm"
COSIGN = "cosign verify (v3)"
RUNNERS = (IN_PROCESS, WITH_SERVICE, WARM_SERVICE, COSIGN)
CONCURRENT = 50  # admissions at once for the service's memory under load (issue 18, item 4)


@dataclass
class Sample:
    wall: float
    registry_requests: int
    token_requests: int
    connections: int
    depth: int  # critical path over all events
    repo_depth: int  # the longest of the per-repository critical paths (a lower bound for several images)
    chain: list[Event]


@dataclass
class Cell:
    scenario: str
    rtt: float
    runner: str
    samples: list[Sample] = field(default_factory=list)
    skipped: str = ""

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in self.samples)

    def median_sample(self) -> Sample:
        ordered = sorted(self.samples, key=lambda s: s.wall)
        return ordered[len(ordered) // 2]


@dataclass(frozen=True)
class Scenario:
    name: str
    references: tuple[str, ...]
    warm: bool = False


# -- the registry behind TLS and a proxied token service ------------------------------------------------


def realm_registry(directory: Path, realm: Callable[[], str]):
    """A token-mode tests/support Registry whose advertised realm is `realm()` (the proxied token URL)."""
    from support.registry import Registry

    class RealmRegistry(Registry):
        def _config_text(self, port: int) -> str:
            text = super()._config_text(port)
            assert self.token_server is not None
            original = f"realm: {self.token_server.realm}"
            if original not in text:
                raise RuntimeError("the registry config has no token realm line to point at the proxy")
            return text.replace(original, f"realm: {realm()}")

    return RealmRegistry(directory, mode="token")


class Bed:
    """The registry, the token server, their TLS relays and delay proxies; `set_rtt` changes both delays."""

    def __init__(self, tmp: Path) -> None:
        from support import certs

        self.log = EventLog()
        self.ca = certs.make_ca(tmp / "proxy-tls", "signgate realistic-bench CA")
        cert, key = certs.make_server_cert(self.ca, tmp / "proxy-tls")
        # The token service is served on the registry's own host and port (path /token), as Harbor
        # and ghcr.io do: cosign (go-containerregistry) refuses a token realm on another loopback
        # address. It is therefore behind the same delay and the same TLS.
        self.registry = realm_registry(tmp / "registry", lambda: f"https://{self.proxy.host}/token")
        token = self.registry.token_server
        assert token is not None
        self.relay = TLSTerminator(lambda: ("127.0.0.1", self.registry.port), cert, key, self.log, "registry",
                                   routes={"/token": ("token", lambda: ("127.0.0.1", token.port))}).start()
        self.proxy = DelayProxy(("127.0.0.1", self.relay.port)).start()
        self.registry.start()
        # tests/support's token server writes headers and body separately without TCP_NODELAY, so
        # each token response would stall on a delayed ACK (up to 40 ms) between it and the relay:
        # an artefact of the test server, switched off for the bench (socketserver's own option).
        server = getattr(token, "_server", None)
        if server is None:
            raise RuntimeError("the token server is not running")
        server.RequestHandlerClass.disable_nagle_algorithm = True

    @property
    def host(self) -> str:
        return self.proxy.host

    def set_rtt(self, rtt: float) -> None:
        self.proxy.delay = rtt / 2

    def close(self) -> None:
        for part in (self.proxy, self.relay):
            part.stop()
        self.registry.stop()
        if self.registry.token_server is not None:
            self.registry.token_server.stop()


# -- running one sample ------------------------------------------------------------------------------


def run_hook(executable: Path, config: Path | None, references: tuple[str, ...], cache: Path | None,
             tmp: Path, socket: Path | None) -> None:
    """One admission as shell-operator runs it (a new process, binding-context and response files)."""
    from support.contract import hook_env, request_for

    context, response = tmp / f"ctx-{uuid.uuid4().hex}.json", tmp / f"resp-{uuid.uuid4().hex}.json"
    request = request_for("Pod", list(references))
    context.write_text(json.dumps([{"binding": "image-signatures.signgate.dev", "type": "Validating",
                                    "review": {"request": request}}]))
    response.write_text("")
    extra = {"BINDING_CONTEXT_PATH": str(context), "VALIDATING_RESPONSE_PATH": str(response)}
    if cache is not None:
        extra["SIGNGATE_CACHE_DIR"] = str(cache)
    if socket is not None:
        extra["SIGNGATE_VERIFIER_SOCKET"] = str(socket)
    completed = subprocess.run([str(executable)], cwd=executable.parent, env=hook_env(config, extra),
                               capture_output=True, timeout=120)
    body = json.loads(response.read_text() or "null")
    context.unlink()
    response.unlink()
    if completed.returncode != 0 or not isinstance(body, dict) or body.get("allowed") is not True:
        raise RuntimeError(f"{executable.name} did not allow {references}: rc={completed.returncode} "
                           f"{body} {completed.stderr[-800:]!r}")
    if socket is not None and b"verifier service unavailable" in completed.stderr:
        raise RuntimeError(f"the hook fell back to its own process; the numbers would be wrong: {completed.stderr!r}")


def calibrate(bed: Bed, count: int = 30) -> tuple[float, float]:
    """The instrument's own cost at RTT 0, measured with http.client: (new TCP + TLS + one GET,
    one GET on a kept-alive connection), median seconds. Every request of a sample pays about this."""
    import http.client
    import ssl

    context = ssl.create_default_context(cafile=str(bed.ca.cert_path))
    fresh, kept = [], []
    connection = http.client.HTTPSConnection("127.0.0.1", bed.proxy.port, context=context, timeout=10)
    for _ in range(count):
        started = time.perf_counter()
        one = http.client.HTTPSConnection("127.0.0.1", bed.proxy.port, context=context, timeout=10)
        one.request("GET", "/v2/")
        one.getresponse().read()
        one.close()
        fresh.append(time.perf_counter() - started)
        started = time.perf_counter()
        connection.request("GET", "/v2/")
        connection.getresponse().read()
        kept.append(time.perf_counter() - started)
    connection.close()
    return statistics.median(fresh), statistics.median(kept)


def measure(bed: Bed, action: Callable[[], None]) -> Sample:
    started = time.perf_counter()
    action()
    ended = time.perf_counter()
    time.sleep(0.01)  # the relay logs a request after writing its response
    events = bed.log.between(started, ended)
    depth, chain = critical_path(events)
    return Sample(
        wall=ended - started,
        registry_requests=sum(1 for e in events if e.kind == "request" and e.service == "registry"),
        token_requests=sum(1 for e in events if e.kind == "request" and e.service == "token"),
        connections=sum(1 for e in events if e.kind == "tcp"),
        depth=depth, repo_depth=per_repository_critical_path(events), chain=chain,
    )


# -- the service's memory (issue 18, item 4) -----------------------------------------------------------


@dataclass
class Memory:
    processes: int  # the parent and its workers
    rss: float  # MiB, summed over the processes (pages shared after the fork counted in each)
    pss: float  # MiB, proportional set size summed: shared pages divided among their sharers,
    # which is close to what the container's memory cgroup is charged (page cache aside)
    parent_rss: float

    def __str__(self) -> str:
        return f"{self.processes} processes, RSS {self.rss:.0f} MiB summed, PSS {self.pss:.0f} MiB"


def _smaps(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of `pid` in MiB, from /proc/<pid>/smaps_rollup; (0, 0) when it is gone."""
    found = {"Rss:": 0.0, "Pss:": 0.0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] in found:
                found[parts[0]] = int(parts[1]) / 1024
    except (OSError, ValueError):
        pass
    return found["Rss:"], found["Pss:"]


def service_memory(service) -> Memory:
    assert service.process is not None
    parent = service.process.pid
    try:
        children = [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
    except OSError:
        children = []
    sizes = [_smaps(pid) for pid in [parent, *children]]
    return Memory(1 + len(children), sum(r for r, _ in sizes), sum(p for _, p in sizes), sizes[0][0])


def under_load(service, admit: Callable[[int], None]) -> Memory:
    """The service's peak memory while CONCURRENT hook processes are admitted at once."""
    import threading

    peak = service_memory(service)
    done = threading.Event()
    errors: list[BaseException] = []

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            now = service_memory(service)
            if now.pss > peak.pss:
                peak = now
            time.sleep(0.02)

    def one(i: int) -> None:
        try:
            admit(i)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    watcher = threading.Thread(target=sample)
    watcher.start()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {CONCURRENT} concurrent admissions failed: {errors[0]}")
    return peak


# -- the bench ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5, help="samples per scenario, runner and RTT (default 5)")
    parser.add_argument("--output", default=str(REPO / "bench" / "RESULTS-latency.md"))
    # Called from another program (`make bench`), main() takes its defaults, not that program's argv.
    args = parser.parse_args(argv if argv is not None else [])
    samples = max(1, min(args.samples, 50))  # bounded: the whole run should stay within minutes

    from support import tools
    from support.oci import RegistryHTTP, push_image
    from support.service import VerifierService
    from support.signer import generate_key, sign_bundle, sign_legacy

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "hooks" / "lib")], env=env, check=True)
    began = time.monotonic()
    cosign = tools.path_of("cosign-v3")
    cosign_missing = "" if cosign.is_file() and os.access(cosign, os.X_OK) else (
        f"cosign v3 is not built ({cosign} is missing): run `make tools`")

    with tempfile.TemporaryDirectory(prefix="sg-latency-", dir="/tmp") as scratch:
        tmp = Path(scratch)
        bed = Bed(tmp)
        service = VerifierService(tmp / "service")
        fresh_service = VerifierService(tmp / "service-fresh", args=("--worker-requests", "1"))
        memory: dict[str, Memory] = {}
        try:
            http = RegistryHTTP(bed.registry, verify=str(bed.ca.cert_path))
            key = generate_key("ecdsa-p256", tmp, "cosign")
            host = bed.host

            def signed(repo: str, layout: str) -> tuple[str, str]:
                image = push_image(http, repo, "v1", content=repo.encode())
                if layout == "legacy":
                    sign_legacy(http, repo, image.digest, key, docker_reference=f"{host}/{repo}")
                else:
                    sign_bundle(http, repo, image.digest, image.media_type, image.size, key)
                return f"{host}/{repo}:v1", f"{host}/{repo}@{image.digest}"

            legacy_tag, legacy_digest = signed("bench/legacy", "legacy")
            bundle_tag, bundle_digest = signed("bench/bundle", "bundle")
            many = tuple(signed(f"bench/many{i}", "legacy")[0] for i in range(10))
            http.close()
            scenarios = [
                Scenario("cold, legacy-signed, by digest", (legacy_digest,)),
                Scenario("cold, legacy-signed, by tag", (legacy_tag,)),
                Scenario("cold, bundle-signed, by digest", (bundle_digest,)),
                Scenario("cold, bundle-signed, by tag", (bundle_tag,)),
                Scenario("warm (verdict cached), legacy by tag", (legacy_tag,), warm=True),
                Scenario("warm (verdict cached), legacy by digest", (legacy_digest,), warm=True),
                Scenario("cold, 10 distinct images, one registry", many),
            ]
            config = tmp / "config.json"
            config.write_text(json.dumps({
                "keys": {"default": str(key.pub_path)},
                "registries": {"caBundle": str(bed.ca.cert_path)},
                "policy": [{"images": f"{host}/**"}],
            }))
            home = tmp / "home"
            (home / ".docker").mkdir(parents=True)
            cosign_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                          "DOCKER_CONFIG": str(home / ".docker"), "SSL_CERT_FILE": str(bed.ca.cert_path)}

            def fresh_cache() -> Path:
                path = tmp / f"cache-{uuid.uuid4().hex}"
                path.mkdir()
                return path

            def runner(name: str, scenario: Scenario, cache: Path | None) -> Callable[[], None]:
                if name == COSIGN:
                    def verify() -> None:
                        completed = subprocess.run(
                            [str(cosign), "verify", "--key", str(key.pub_path), "--insecure-ignore-tlog=true",
                             *scenario.references], env=cosign_env, capture_output=True, timeout=120)
                        if completed.returncode != 0:
                            raise RuntimeError(f"cosign verify failed on {scenario.references}: "
                                               f"{completed.stderr[-800:]!r}")
                    return verify
                socket = {WITH_SERVICE: fresh_service.socket, WARM_SERVICE: service.socket}.get(name)
                return lambda: run_hook(HOOK, config, scenario.references, cache or fresh_cache(), tmp, socket)

            service.start()
            fresh_service.start()
            memory["idle, just started"] = service_memory(service)
            # Warm the OS caches before measuring anything.
            for _ in range(2):
                run_hook(FLOOR, None, (legacy_tag,), None, tmp, None)
                run_hook(HOOK, config, (legacy_tag,), fresh_cache(), tmp, None)

            bed.set_rtt(0.0)
            overhead = calibrate(bed)
            cells: dict[tuple[str, float, str], Cell] = {}
            # Both RTTs and all clients take turns within each round, so the load of a shared
            # machine drifts over all cells alike and the RTT-0/50 ms difference stays meaningful.
            floors: dict[float, list[float]] = {rtt: [] for rtt in RTTS}
            for _ in range(samples * 2):
                for rtt in RTTS:
                    bed.set_rtt(rtt)
                    floors[rtt].append(measure(bed, lambda: run_hook(FLOOR, None, (legacy_tag,), None, tmp, None)).wall)
            for scenario in scenarios:
                count = samples if len(scenario.references) == 1 else max(1, (samples + 1) // 2)
                warm_caches: dict[str, Path] = {}
                bed.set_rtt(0.0)
                for rtt in RTTS:
                    for name in RUNNERS:
                        cell = cells[(scenario.name, rtt, name)] = Cell(scenario.name, rtt, name)
                        if name == COSIGN and cosign_missing:
                            cell.skipped = cosign_missing
                        elif name == COSIGN and scenario.warm:
                            cell.skipped = "cosign keeps no verdict cache: every run is cold"
                        elif name == WARM_SERVICE and scenario.warm:
                            cell.skipped = "the hook's fast path answers before any service: as the row above"
                        elif scenario.warm and name not in warm_caches:
                            warm_caches[name] = fresh_cache()
                            runner(name, scenario, warm_caches[name])()  # fill the verdict cache
                for _ in range(count):
                    for rtt in RTTS:
                        bed.set_rtt(rtt)
                        for name in RUNNERS:
                            cell = cells[(scenario.name, rtt, name)]
                            if not cell.skipped:
                                if name == WARM_SERVICE:
                                    runner(name, scenario, None)()  # warm up: connections and tokens, not the verdict
                                cell.samples.append(measure(bed, runner(name, scenario, warm_caches.get(name))))
                for rtt in RTTS:
                    print(f"  RTT {rtt * 1000:.0f} ms: {scenario.name}: " + ", ".join(
                        f"{n} {c.median('wall') * 1000:.0f} ms/{c.median('depth'):g} RT"
                        for n in RUNNERS if not (c := cells[(scenario.name, rtt, n)]).skipped), file=sys.stderr)
            memory["idle, after the scenarios"] = service_memory(service)
            bed.set_rtt(max(RTTS))
            memory[f"{CONCURRENT} concurrent cold admissions at {max(RTTS) * 1000:.0f} ms RTT (peak)"] = under_load(
                service, lambda i: run_hook(HOOK, config, (many[i % len(many)],), fresh_cache(), tmp, service.socket))
            from signgate.service import ACCEPT_POLL, WORKER_IDLE_SECONDS

            time.sleep(1.0)
            memory["just after the burst"] = service_memory(service)
            # The workers the burst made are retired after WORKER_IDLE_SECONDS without work.
            time.sleep(WORKER_IDLE_SECONDS + 2 * ACCEPT_POLL + 1.0)
            memory[f"idle, {WORKER_IDLE_SECONDS:g} s after the burst"] = service_memory(service)
            for label, found in memory.items():
                print(f"  service memory, {label}: {found}", file=sys.stderr)
        finally:
            service.stop()
            fresh_service.stop()
            bed.close()

    report = render(scenarios, cells, floors, time.monotonic() - began, samples, overhead, memory)
    print(report)
    Path(args.output).write_text(report)
    return 0


# -- the report --------------------------------------------------------------------------------------


def depth_text(scenario: Scenario, cell: Cell) -> str:
    if len(scenario.references) == 1:
        return f"{cell.median('depth'):g}"
    return f"{cell.median('repo_depth'):g}–{cell.median('depth'):g}"


def describe(event: Event) -> str:
    prefix = "token " if event.service == "token" else ""
    if event.kind == "tcp":
        return f"{prefix}TCP#{event.connection}"
    if event.kind == "tls":
        return f"{prefix}TLS#{event.connection}"
    method, path, status = event.what.split(" ")
    short = path.rsplit("/", 2)
    tail = "/".join(short[-2:]) if len(short) > 2 else path
    if len(tail) > 34:
        tail = tail[:16] + "…" + tail[-12:]
    return f"{prefix}{method} {tail} {status}"


def render(scenarios: list[Scenario], cells: dict[tuple[str, float, str], Cell], floors: dict[float, list[float]],
           duration: float, samples: int, overhead: tuple[float, float], memory: dict[str, Memory] | None = None) -> str:
    # The floor makes no network call: one median over the samples taken at both RTTs.
    pooled = statistics.median(value for values in floors.values() for value in values)
    floor = {rtt: pooled for rtt in floors}
    lines = [
        "# signgate at registry latency: TLS, token auth, RTT 0 and 50 ms",
        "",
        f"Written by `python bench/realistic.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"in {duration:.0f} s; {samples} samples per cell (10-image scenario: {max(1, (samples + 1) // 2)}), medians.",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
        f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())} (the relay and the proxy run in",
        "the bench's own process and share the cores with the clients: at RTT 0 their cost is part of the wall time).",
        "",
        "## Method",
        "",
        "All on 127.0.0.1: client → delay proxy → TLS relay → Debian's docker-registry with token auth, and the",
        "same for the token server (the registry advertises the proxied HTTPS realm). The delay proxy holds",
        "every chunk for RTT/2 in each direction, in order, and holds the first client bytes of each",
        "connection one more RTT so that a new TCP connection costs what it costs over a real link. The",
        "TLS relay (the bench's own CA: `registries.caBundle` for signgate, SSL_CERT_FILE for cosign) logs",
        "each connection, handshake and request with server-side times. Pulls are anonymous, so every cold",
        "process pays the 401 challenge and a token fetch.",
        "",
        f"- **{WITH_SERVICE}**: the verifier service with `--worker-requests 1`, a fresh fork of the service",
        "  for every request, which keeps no connection or token (the service before long-lived workers).",
        f"  **{WARM_SERVICE}**: the service as deployed (long-lived workers), each measured admission right after",
        "  an unmeasured one of the same images with another cold verdict cache: connections warm and a token",
        "  for each repository held, as for the steady traffic of a cluster; nothing else is kept.",
        "- **wall ms**: the client process from start to exit (hook: a new process per admission, as",
        "  shell-operator runs it; cosign: one `cosign verify --key K --insecure-ignore-tlog=true` process, given",
        "  all images of the scenario at once).",
        "- **requests**: HTTP requests seen by the relays, registry + token service; **conns**: new TCP connections.",
        "- **critical RT (log)**: the longest chain of TCP set-ups, TLS handshakes and requests in which each",
        "  started after the previous one ended, from the relay's timestamps (TCP 1, TLS 1.3 1, request 1).",
        "  At 50 ms the overlap of concurrent requests is unambiguous; at RTT 0 two independent requests may",
        "  happen not to overlap, so the RTT-0 figure is an upper bound. With several images verified at once,",
        "  independent streams staggered in time also chain into each other; there the column shows",
        "  *per-image–all*: the longest single image's path (a lower bound) and the chain over all events",
        "  (an upper bound). **RT from delay** is the arbiter.",
        "- **RT from delay**: (median wall at 50 ms − median wall at RTT 0) / 50 ms: the round trips the delay",
        "  really added, an independent check of the log's count (it also includes waits the log cannot see).",
        "- **× floor**: wall / the floor (bench/floor_hook.py, a stdlib-only hook that allows) in the same run;",
        "  **× cosign**: wall / cosign's wall for the same scenario and RTT.",
        "",
        f"The instrument's own cost at RTT 0 (http.client through proxy and relay, median of 30): a new TCP",
        f"connection + TLS handshake + one GET {overhead[0] * 1000:.1f} ms; one GET on a kept-alive connection",
        f"{overhead[1] * 1000:.1f} ms. Every request of a sample pays about this on top of the registry.",
        "",
        f"Floor (no network; median of {sum(len(v) for v in floors.values())} samples taken at both RTTs): {pooled * 1000:.1f} ms.",
        "",
        "| scenario | RTT | client | wall ms | requests (reg + token) | conns | critical RT (log) | RT from delay | × floor | × cosign |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    slow_rtt = max(RTTS)
    for scenario in scenarios:
        for rtt in RTTS:
            for name in RUNNERS:
                cell = cells.get((scenario.name, rtt, name))
                if cell is None:
                    continue
                if cell.skipped:
                    lines.append(f"| {scenario.name} | {rtt * 1000:.0f} | {name} | – | – | – | – | – | – | {cell.skipped} |")
                    continue
                wall = cell.median("wall")
                reg, tok = cell.median("registry_requests"), cell.median("token_requests")
                delay_rt = "–"
                fast = cells.get((scenario.name, 0.0, name))
                if rtt == slow_rtt and fast is not None and fast.samples:
                    delay_rt = f"{(wall - fast.median('wall')) / slow_rtt:.1f}"
                cosign = cells.get((scenario.name, rtt, COSIGN))
                versus = f"{wall / cosign.median('wall'):.2f}" if cosign and cosign.samples and name != COSIGN else "–"
                lines.append(
                    f"| {scenario.name} | {rtt * 1000:.0f} | {name} | {wall * 1000:.0f} | {reg + tok:g} ({reg:g} + {tok:g}) | "
                    f"{cell.median('connections'):g} | {depth_text(scenario, cell)} | {delay_rt} | {wall / floor[rtt]:.2f} | {versus} |"
                )
    lines += [
        "",
        f"## The measured critical paths at {slow_rtt * 1000:.0f} ms RTT",
        "",
        "The chain of the median sample, as the relay logged it (`#n` numbers the connection; requests",
        "shown by their last two path segments):",
        "",
    ]
    for scenario in scenarios:
        for name in RUNNERS:
            cell = cells.get((scenario.name, slow_rtt, name))
            if cell is None or not cell.samples:
                continue
            sample = cell.median_sample()
            chain = " → ".join(describe(e) for e in sample.chain) or "(no network)"
            lines.append(f"- **{scenario.name}**, {name} ({sample.depth} RT): {chain}")
    lines += ["", *bounds(scenarios, cells, floor), ""]
    if memory:
        lines += memory_section(memory)
    return "\n".join(lines)


def memory_section(memory: dict[str, Memory]) -> list[str]:
    lines = [
        "## The verifier service's memory (issue 18, item 4)",
        "",
        "The parent and its workers (default --max-workers 32), from /proc/<pid>/smaps_rollup. RSS counts",
        "the pages a worker shares with the parent (after the fork) in every process; PSS divides them among",
        "their sharers, and is close to what the container's memory cgroup is charged.",
        "",
        "| when | processes | parent RSS MiB | RSS summed MiB | PSS summed MiB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, found in memory.items():
        lines.append(f"| {label} | {found.processes} | {found.parent_rss:.0f} | {found.rss:.0f} | {found.pss:.0f} |")
    idle = [m for label, m in memory.items() if label.startswith("idle")]
    if idle:
        worst = max(m.pss for m in idle)
        lines += ["", f"Target: RSS ≤ 100 MiB idle (PSS, the charged figure): {worst:.0f} MiB at most, "
                      f"{'met' if worst <= 100 else '**missed**'}."]
    lines.append("")
    return lines


def at_rtt0(cell: Cell, cosign: Cell | None) -> str:
    """Where the RTT-0 median sample's wall time went, from the relay's log: with no delay, the time
    from a connection's accept to its first byte is the client's own TLS set-up."""
    sample = cell.median_sample()
    hellos = [(e.end - e.start) * 1000 for e in sample.chain if e.kind == "tcp"]
    served = sum(e.end - e.start for e in sample.chain if e.kind != "tcp") * 1000
    if not hellos:
        return ""
    rest = sample.wall * 1000 - served - sum(hellos)
    return (f" At RTT 0 ({sample.wall * 1000:.0f} ms): {statistics.median(hellos):.0f} ms per new connection between connect()"
            f" and the TLS ClientHello (client-side set-up; ×{len(hellos)} on the path), {served:.0f} ms in handshakes and"
            f" requests as the relay saw them, {rest:.0f} ms in the client process before, between and after them"
            + (f" (cosign: {statistics.median(theirs):.1f} ms per new connection before its ClientHello)."
               if cosign is not None and (theirs := [(e.end - e.start) * 1000 for s in cosign.samples for e in s.chain
                                                      if e.kind == "tcp"]) else "."))


def bounds(scenarios: list[Scenario], cells: dict[tuple[str, float, str], Cell], floor: dict[float, float]) -> list[str]:
    """What bounds each number today, from the measurements, and the issue's targets against them."""
    rtt = max(RTTS)

    def cell(name: str, runner: str = WARM_SERVICE, at: float = rtt) -> Cell | None:
        found = cells.get((name, at, runner))
        return found if found is not None and found.samples else None

    lines = ["## What bounds the numbers today", ""]
    for scenario in scenarios:
        here = cell(scenario.name)
        fast = cell(scenario.name, at=0.0)
        if here is None or fast is None:
            continue
        sample = here.median_sample()
        chain = sample.chain
        connections = sum(1 for e in chain if e.kind == "tcp")
        token = sum(1 for e in chain if e.service == "token")
        requests = sum(1 for e in chain if e.kind == "request" and e.service == "registry")
        after_error = sum(1 for before, after in zip(chain, chain[1:])
                          if after.kind == "tcp" and before.kind == "request" and before.what.split(" ")[-1] in ("401", "404"))
        added = here.median("wall") - fast.median("wall")
        multi = len(scenario.references) > 1
        lines.append(
            f"- **{scenario.name}** ({WARM_SERVICE}): {here.median('wall') * 1000:.0f} ms at {rtt * 1000:.0f} ms RTT, "
            f"{fast.median('wall') * 1000:.0f} ms at RTT 0; the delay added {added / rtt:.1f} RT. "
            + ("No request: the verdict cache answers, and the floor (process start) bounds it."
               if not chain else
               f"Its {'longest chain over all events' if multi else 'critical path'}: {sample.depth} RT = "
               f"{connections} new TCP connection(s) and {connections} TLS handshake(s), {token} token fetch(es), "
               f"{requests} registry request(s) in sequence; {after_error} of the new connections opened right after a "
               f"401 or 404 answer on a connection that could have been reused."
               + ("" if multi else at_rtt0(fast, cell(scenario.name, COSIGN, at=0.0)))))
    lines += [
        "",
        "Every hook process, and every fresh worker of the service, opens new TCP and TLS connections",
        "to the registry and the token service and fetches a new token: those set-ups are on the",
        f"critical path of its first admission. The service's long-lived workers keep them ({WARM_SERVICE}).",
        "",
        f"## The issue's targets at 50 ms RTT ({WARM_SERVICE})",
        "",
        "The targets assume warm connections and a token already held: the service's long-lived",
        "workers, measured after one admission of the same images.",
        "",
        "| target | budget ms | measured ms | |",
        "| --- | ---: | ---: | --- |",
    ]
    base = floor[rtt]
    for name, trips in (("cold, legacy-signed, by digest", 2), ("cold, legacy-signed, by tag", 3),
                        ("cold, bundle-signed, by digest", 3), ("cold, bundle-signed, by tag", 4)):
        here = cell(name)
        if here is not None:
            budget = trips * rtt + 2 * base
            wall = here.median("wall")
            lines.append(f"| {name} ≤ {trips} RTT + 2× floor | {budget * 1000:.0f} | {wall * 1000:.0f} | "
                         f"{'met' if wall <= budget else '**missed**'} |")
    one, ten = cell("cold, legacy-signed, by tag"), cell("cold, 10 distinct images, one registry")
    if one and ten:
        ratio = ten.median("wall") / one.median("wall")
        lines.append(f"| 10 distinct images ≤ 1.3× one | {one.median('wall') * 1.3 * 1000:.0f} | "
                     f"{ten.median('wall') * 1000:.0f} | {ratio:.2f}× {'met' if ratio <= 1.3 else '**missed**'} |")
    for name in ("cold, legacy-signed, by tag", "cold, bundle-signed, by tag"):
        here, theirs = cell(name), cell(name, COSIGN)
        if here and theirs:
            ratio = here.median("wall") / theirs.median("wall")
            lines.append(f"| {name}: ≤ 0.5× cosign | {theirs.median('wall') * 500:.0f} | {here.median('wall') * 1000:.0f} | "
                         f"{ratio:.2f}× {'met' if ratio <= 0.5 else '**missed**'} |")
    warm = cell("warm (verdict cached), legacy by tag", WITH_SERVICE)  # the fast path: no worker involved
    if warm:
        ratio = warm.median("wall") / base
        lines.append(f"| warm ≤ 1.5× floor | {base * 1500:.0f} | {warm.median('wall') * 1000:.0f} | "
                     f"{ratio:.2f}× {'met' if ratio <= 1.5 else '**missed**'} |")
    lines += [
        "",
        f"With the service's workers warm, no connection set-up and no token fetch remains on these paths",
        "(0 new connections above); what remains is registry requests made one after another. The targets",
        "for single images count on issuing the independent lookups concurrently (issue 18, item 2).",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
