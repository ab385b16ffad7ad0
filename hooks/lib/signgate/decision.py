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

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .admission import ContainerImage, container_images, pod_spec_kind
from .config import Config, Rule
from .deadline import Deadline
from .errors import InputError, InvalidReference
from .policy import match_rule, static_decision
from .reference import ImageReference, parse_reference
from .verify import ImageVerdict, KeyRing, verify_image

CHECKED_OPERATIONS = ("CREATE", "UPDATE")


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

    def response(self) -> dict[str, Any]:
        body: dict[str, Any] = {"allowed": self.allowed}
        if not self.allowed:
            body["message"] = self.message
        if self.warnings:
            body["warnings"] = self.warnings
        return body


# A verifier takes (rule, reference) and returns a verdict; the default one talks to registries.
Verifier = Callable[[Rule, ImageReference], ImageVerdict]


def decide(request: Any, config: Config, deadline: Deadline, verifier_factory: Callable[[], Verifier] | None = None) -> Decision:
    if not isinstance(request, dict):
        raise InputError("the admission review has no request object")
    operation = request.get("operation")
    if operation not in CHECKED_OPERATIONS:
        return Decision(True, summary=f"operation {operation} not checked")
    kind = pod_spec_kind(request)
    if kind is None:
        return Decision(True, summary="no pod spec")
    obj = request.get("object")
    if obj is None:
        raise InputError(f"the {operation} request for a {kind} carries no object")
    containers = container_images(kind, obj)
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
            ref = parse_reference(container.image)
        except InvalidReference as exc:
            verdict = ImageVerdict(False, exc.reason, str(exc))
            results[position] = ImageResult(container, None, None, config.mode, verdict)
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

    if pending:
        verifier = (verifier_factory or registry_verifier(config, deadline))()
        verdicts, unfinished = _run_concurrently(pending, verifier, deadline)
        for key, entries in pending.items():
            verdict = verdicts.get(key) or ImageVerdict(
                False, "timeout", f"not verified within {deadline.seconds:g} s (the registry is too slow or unreachable)"
            )
            for position, container, ref, rule in entries:
                results[position] = ImageResult(container, ref, rule, config.rule_mode(rule), verdict)
    else:
        unfinished = False

    ordered = [results[i] for i in range(len(containers))]
    return _combine(ordered, unfinished)


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


def registry_verifier(config: Config, deadline: Deadline) -> Callable[[], Verifier]:
    def factory() -> Verifier:
        from .credentials import load_credentials
        from .registry import RegistryClient

        client = RegistryClient(
            config.registries, config.limits, deadline, credentials=load_credentials(config.registries.auth)
        )
        keyring = KeyRing(config.keys, config.rekor_keys)

        def verifier(rule: Rule, ref: ImageReference) -> ImageVerdict:
            return verify_image(config, rule, ref, client, keyring)

        return verifier

    return factory


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


def monotonic_ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
