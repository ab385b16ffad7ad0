"""From an admission request to a decision.

Steps, in order:
1. Operations other than CREATE and UPDATE, and objects without a pod spec, are allowed with
   no network I/O.
2. Every image of every container list is parsed and matched to a rule; static rules (allow,
   deny, tag rules, unmatched images) decide without network I/O.
3. Distinct (image, rule) pairs that need signatures are verified concurrently in worker
   threads. The caller's thread waits at most until the deadline; whatever is unfinished then is
   reported as "not verified within N s". Worker threads are never waited for beyond that.
4. Each image's failure counts under its own rule's mode: an `enforce` failure denies the
   request, a `warn` failure only adds a warning. So one enforce failure denies the request even
   when other images are in warn mode, and warn-mode images never deny.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .admission import AdmissionRequest, ContainerImage
from .settings import Config, Rule
from .deadline import Deadline
from .errors import AmbiguousRegistry, InvalidReference, SigngateError
from .podspec import is_checked
from .policy import match_rule, static_decision
from .reference import ImageReference, parse_reference
from .verifiers import verifier_endpoints, evaluate_image
from .keyring import KeyRing
from .verdict import ImageVerdict

# Deferred imports: the registry client (requests, TLS), credentials and the network guard load
# only when an image must be fetched; requests settled by allow/deny rules never pay for them.
if TYPE_CHECKING:
    from .cache import VerdictCache
    from .pullsecrets import PodCredentials



@dataclass(frozen=True)
class ImageResult:
    container: ContainerImage
    reference: ImageReference | None
    rule: Rule | None
    mode: str
    verdict: ImageVerdict

    @property
    def line(self) -> str:
        return f"{self.container.label} image {_quote(self.container.image)}: {self.verdict.message}"


@dataclass
class Decision:
    allowed: bool
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    results: list[ImageResult] = field(default_factory=list)
    summary: str = ""  # a short reason token for logs when there are no image results
    unfinished: bool = False  # worker threads were still running at the deadline
    cache_hits: int = 0
    cache_misses: int = 0
    registry_requests: list[tuple[str, int | None]] = field(default_factory=list)

    def response(self) -> dict[str, Any]:
        body: dict[str, Any] = {"allowed": self.allowed}
        if not self.allowed:
            body["message"] = self.message
        if self.warnings:
            body["warnings"] = self.warnings
        return body


# A verifier takes (rule, reference) and returns a verdict: RegistryVerifier, or the cache over it.
Verifier = Callable[[Rule, ImageReference], ImageVerdict]


def decide(
    request: Any,
    config: Config,
    deadline: Deadline,
    cache: "VerdictCache | None" = None,
    verifier: Verifier | None = None,
    pull_secrets: "PodCredentials | None" = None,
) -> Decision:
    """The answer to one admission request: an AdmissionRequest, or the review's request object
    (parsed here). `verifier` replaces the registries (the hook's shedding path passes one that
    answers "overloaded" for every image that would need a signature). `pull_secrets`: the pod's
    own registry credentials (`registries.pullSecrets: pod`), tried before the mounted ones;
    failures found with them are cached for this pod's namespace and credentials only (see
    _CachedVerifier)."""
    if not isinstance(request, AdmissionRequest):
        request = AdmissionRequest.parse(request)
    if not is_checked(request.operation):
        return Decision(True, summary=f"operation {request.operation} not checked")
    kind = request.pod_kind
    if kind is None:
        return Decision(True, summary="no pod spec")
    containers = request.containers
    if len(containers) > config.limits.max_images_per_request:
        return Decision(
            False,
            f"signgate: the {kind} has {len(containers)} containers, more than the limit of "
            f"{config.limits.max_images_per_request} images per request",
            summary="too-many-images",
        )

    results: dict[int, ImageResult] = {}
    pending: dict[tuple[str, int], list[tuple[int, ContainerImage, ImageReference, Rule]]] = {}
    for position, container in enumerate(containers):
        try:
            ref = parse_reference(container.image, config.registries.insecure)
        except InvalidReference as exc:
            verdict = ImageVerdict(False, exc.reason, str(exc))
            # An unclear registry spelling may still be pulled: no warn mode may admit it.
            mode = "enforce" if isinstance(exc, AmbiguousRegistry) else config.mode
            results[position] = ImageResult(container, None, None, mode, verdict)
            continue
        rule = match_rule(config, ref)
        mode = config.rule_mode(rule)
        static = static_decision(config, ref, rule)
        if static.passed is not None:
            verdict = ImageVerdict(static.passed, static.reason, "" if static.passed else static.message)
            results[position] = ImageResult(container, ref, rule, mode, verdict)
            continue
        assert rule is not None
        pending.setdefault((str(ref), rule.index), []).append((position, container, ref, rule))

    unfinished = False
    hits = misses = 0
    network = None
    if pending:
        network = RegistryVerifier(config, deadline, pull_secrets) if verifier is None else None
        verify: Verifier = verifier or network  # type: ignore[assignment]
        cached = None
        if cache is not None and cache.enabled:
            asker = pull_secrets.identity() if pull_secrets is not None else None
            cached = _CachedVerifier(cache, verify, deadline, asker)
        verdicts: dict[tuple[str, int], ImageVerdict] = {}
        if cached is not None:
            # Lookups in this thread first: when the cache decides everything, no thread starts,
            # no HTTP library is imported and no registry is contacted.
            for key, entries in pending.items():
                hit = cached.lookup(entries[0][3], entries[0][2])
                if hit is not None:
                    verdicts[key] = hit
        remaining = {key: entries for key, entries in pending.items() if key not in verdicts}
        if remaining:
            found, unfinished = _run_concurrently(remaining, cached or verify, deadline)
            verdicts.update(found)
        if cache is not None:
            hits, misses = cache.hits, cache.misses
        for key, entries in pending.items():
            verdict = verdicts.get(key) or ImageVerdict(
                False, "timeout", f"not verified within {deadline.seconds:g} s (the registry is too slow or unreachable)"
            )
            for position, container, ref, rule in entries:
                results[position] = ImageResult(container, ref, rule, config.rule_mode(rule), verdict)

    ordered = [results[i] for i in range(len(containers))]
    decision = _combine(ordered, unfinished)
    decision.cache_hits, decision.cache_misses = hits, misses
    if network is not None:
        decision.registry_requests = network.requests()
    return decision


def _run_concurrently(
    pending: dict[tuple[str, int], list[tuple[int, ContainerImage, ImageReference, Rule]]],
    verifier: Verifier,
    deadline: Deadline,
) -> tuple[dict[tuple[str, int], ImageVerdict], bool]:
    import threading

    verdicts: dict[tuple[str, int], ImageVerdict] = {}
    lock = threading.Lock()

    def work(key: tuple[str, int], rule: Rule, ref: ImageReference) -> None:
        try:
            verdict = verifier(rule, ref)
        except Exception as exc:  # a bug must still become a named denial, not a crash
            verdict = ImageVerdict(False, "internal-error", f"internal error while verifying: {type(exc).__name__}: {exc}")
        with lock:
            verdicts[key] = verdict

    threads = []
    for key, entries in pending.items():
        _, _, ref, rule = entries[0]
        thread = threading.Thread(target=work, args=(key, rule, ref), daemon=True, name=f"verify-{key[0]}")
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=deadline.remaining())
    unfinished = any(thread.is_alive() for thread in threads)
    with lock:
        return dict(verdicts), unfinished


class RegistryVerifier:
    """Verifies against registries. The client (and `requests`) is created on first use only."""

    def __init__(self, config: Config, deadline: Deadline, pull_secrets: "PodCredentials | None" = None) -> None:
        import threading

        self.config = config
        self.deadline = deadline
        self.pull_secrets = pull_secrets
        self.keyring = KeyRing(config.keys, config.rekor_keys)
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from .credentials import load_credentials
                from .network import HostPolicy
                from .registry import RegistryClient

                hosts = HostPolicy.from_config(self.config, verifier_endpoints(self.config))
                credentials: Any = load_credentials(self.config.registries.auth, self.config.registries.insecure)
                if self.pull_secrets is not None:
                    # The pod's pull secrets first; the mounted file only where none matches.
                    credentials = self.pull_secrets.with_fallback(credentials)
                self._client = RegistryClient(
                    self.config.registries,
                    self.config.limits,
                    self.deadline,
                    credentials=credentials,
                    host_allowed=hosts.check,
                    host_named=hosts.is_named,
                )
            return self._client

    def __call__(self, rule: Rule, ref: ImageReference) -> ImageVerdict:
        try:
            client = self.client()
        except SigngateError as exc:  # e.g. an unreadable registries.auth file
            return ImageVerdict(False, "invalid-config", f"invalid configuration: {exc}")
        return evaluate_image(self.config, rule, ref, client, self.keyring)

    def requests(self) -> list[tuple[str, int | None]]:
        with self._lock:
            if self._client is None:
                return []
            return [(record.host, record.status) for record in list(self._client.records)]


class _CachedVerifier:
    """Consults the disk cache, and lets one process per image go to the registry at a time.

    With pull secrets (`asker` is set: the pod's namespace and credentials, pullsecrets.py), the
    decision of the README's "Pull secrets": a pass is about the image and serves every
    namespace (a pod elsewhere still cannot pull without credentials of its own), but a failure
    may come from what these credentials could not read, so it is filed under `asker` and serves
    only requests with the same namespace and credentials. Errors such as "unauthorized" are
    never cached at all (cache.py).
    """

    POLL_SECONDS = 0.02

    def __init__(self, cache: "VerdictCache", inner: Verifier, deadline: Deadline, asker: str | None = None) -> None:
        self.cache, self.inner, self.deadline, self.asker = cache, inner, deadline, asker

    def _entry(self, rule: Rule, ref: ImageReference, digest: str, read: Callable[[str], Any]) -> Any:
        entry = read(self.cache.verdict_key(rule, ref, digest))
        if self.asker is None:
            return entry
        if entry is not None and entry.get("passed") is True:
            return entry
        # Only a pass is shared; a failure must be this asker's own.
        return self.cache.peek_verdict(self.cache.verdict_key(rule, ref, digest, asker=self.asker))

    def lookup(self, rule: Rule, ref: ImageReference) -> ImageVerdict | None:
        digest = ref.digest or self.cache.get_tag(self.cache.tag_key(ref))
        if digest is None:
            self.cache.misses += 1
            return None
        if self.asker is None:
            entry = self.cache.get_verdict(self.cache.verdict_key(rule, ref, digest))
        else:
            entry = self._entry(rule, ref, digest, self.cache.peek_verdict)
            if entry is None:
                self.cache.misses += 1
            else:
                self.cache.hits += 1
        return _verdict_from(entry) if entry is not None else None

    def __call__(self, rule: Rule, ref: ImageReference) -> ImageVerdict:
        import time

        lock = self.cache.lock(self.cache.lock_key(rule, ref))
        # Wait for another process fetching the same image, but keep the later part of the
        # deadline for fetching ourselves in case that process is stuck or gone.
        give_up_at = self.deadline.remaining() * 0.4
        try:
            while not lock.try_acquire():
                if self.deadline.remaining() <= give_up_at:
                    break
                time.sleep(self.POLL_SECONDS)
                hit = self._peek(rule, ref)
                if hit is not None:
                    return hit
            hit = self._peek(rule, ref)
            if hit is not None:
                return hit
            verdict = self.inner(rule, ref)
            self._store(rule, ref, verdict)
            return verdict
        finally:
            lock.release()

    def _peek(self, rule: Rule, ref: ImageReference) -> ImageVerdict | None:
        digest = ref.digest or self.cache.get_tag(self.cache.tag_key(ref))
        if digest is None:
            return None
        entry = self._entry(rule, ref, digest, self.cache.peek_verdict)
        if entry is None:
            return None
        # The lookup before the wait counted a miss; the verdict another process fetched is a hit.
        self.cache.misses = max(0, self.cache.misses - 1)
        self.cache.hits += 1
        return _verdict_from(entry)

    def _store(self, rule: Rule, ref: ImageReference, verdict: ImageVerdict) -> None:
        if verdict.digest is None:
            return
        if ref.digest is None and ref.tag is not None:
            self.cache.put_tag(self.cache.tag_key(ref), verdict.digest)
        asker = None if verdict.passed else self.asker
        self.cache.put_verdict(self.cache.verdict_key(rule, ref, verdict.digest, asker=asker), _verdict_to(verdict))


def _verdict_to(verdict: ImageVerdict) -> dict[str, Any]:
    return {
        "passed": verdict.passed,
        "reason": verdict.reason,
        "message": verdict.message,
        "digest": verdict.digest,
        "verified_keys": list(verdict.verified_keys),
    }


def _verdict_from(entry: dict[str, Any]) -> ImageVerdict | None:
    try:
        return ImageVerdict(
            passed=entry["passed"] is True,  # a corrupt "false" string must never pass
            reason=str(entry["reason"]),
            message=str(entry["message"]),
            digest=entry.get("digest") if isinstance(entry.get("digest"), str) else None,
            verified_keys=tuple(str(k) for k in entry.get("verified_keys", [])),
            details=("from the verdict cache",),
            expires_at=float(entry["_expires"]) if isinstance(entry.get("_expires"), (int, float)) else None,
        )
    except (KeyError, TypeError):
        return None


def _combine(results: list[ImageResult], unfinished: bool) -> Decision:
    enforce = [r for r in results if not r.verdict.passed and r.mode == "enforce"]
    warn = [r for r in results if not r.verdict.passed and r.mode == "warn"]
    warnings = [f"signgate (warn mode) would deny: {r.line}" for r in warn]
    if enforce:
        message = "signgate: " + "; ".join(r.line for r in enforce)
        return Decision(False, message, warnings, results, unfinished=unfinished)
    return Decision(True, "", warnings, results, unfinished=unfinished)


def _quote(image: Any) -> str:
    if isinstance(image, str):
        return f'"{image if len(image) <= 200 else image[:200] + "…"}"'
    return "(missing)" if image is None else f"({type(image).__name__}, not a string)"
