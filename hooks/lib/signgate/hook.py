"""The shell-operator hook contract.

- `HOOK --config` prints the binding configuration as YAML on stdout, and nothing else. An
  invalid signgate configuration makes it exit 1 with the reason on stderr: shell-operator then
  refuses to start and logs why, which is better than running with a policy nobody wrote.
- Any other call reads the JSON array at $BINDING_CONTEXT_PATH. For a Validating context it writes
  exactly one JSON object to $VALIDATING_RESPONSE_PATH (alias $ADMISSION_RESPONSE_PATH) and
  exits 0, whatever happens: shell-operator turns a crash into an opaque "Hook failed", so every
  error becomes an explicit denial that names its cause (or, in warn mode, an admission with a
  warning). Other context types (Synchronization, Schedule, ...) are ignored.
- One JSON line per decision goes to stderr, which shell-operator merges into its own log.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Mapping, TextIO

from .config import Config, config_path_from_env, load_config, parse_config, read_config_bytes
from .deadline import Deadline
from .errors import ConfigError, InputError, SigngateError
from .podspec import CHECKED_OPERATIONS

# Deferred imports: the hook is a new process per call; the decision code, cache, metrics and
# pinning load only on the paths that use them (a config check or a synchronization needs none).

WORKLOAD_RULES = [
    {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "resources": ["pods", "pods/ephemeralcontainers", "replicationcontrollers"],
        "operations": list(CHECKED_OPERATIONS),
        "scope": "Namespaced",
    },
    {
        "apiGroups": ["apps"],
        "apiVersions": ["v1"],
        "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
        "operations": list(CHECKED_OPERATIONS),
        "scope": "Namespaced",
    },
    {
        "apiGroups": ["batch"],
        "apiVersions": ["v1"],
        "resources": ["jobs", "cronjobs"],
        "operations": list(CHECKED_OPERATIONS),
        "scope": "Namespaced",
    },
]
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
ADMISSION_TYPES = ("Validating", "Mutating")
POD_RULES = [
    {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "resources": ["pods"],
        "operations": list(CHECKED_OPERATIONS),
        "scope": "Namespaced",
    }
]


def main(
    argv: list[str],
    environ: Mapping[str, str] = os.environ,
    started: float | None = None,
    fallback: Any = None,
) -> int:
    """`started`: when the request started, on the monotonic clock (fastpath.request_started);
    `fallback`: why the verifier service did not answer (relay.py)."""
    started = time.monotonic() if started is None else started
    if len(argv) > 1 and argv[1] == "--config":
        return print_config(environ, sys.stdout, sys.stderr)
    return run_admission(environ, started, sys.stderr, fallback=fallback)


# ---- --config ----------------------------------------------------------------------------------


def print_config(environ: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    import yaml

    path = config_path_from_env(environ)
    try:
        config = load_config(path, environ)
        check_key_files(config)
    except SigngateError as exc:
        err.write(json.dumps({"level": "error", "msg": f"signgate: invalid configuration: {exc}"}) + "\n")
        return 1
    class PlainDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # no &anchors/*aliases: plain YAML for any parser
            return True

    out.write(yaml.dump(binding_config(config), Dumper=PlainDumper, sort_keys=False, default_flow_style=False))
    return 0


def check_key_files(config: Config) -> None:
    """Load every key once, so that a broken key stops start-up instead of denying later."""
    from .keys import load_public_key

    if config.registries.auth:
        from .credentials import load_credentials

        try:
            load_credentials(config.registries.auth, config.registries.insecure)
        except ConfigError as exc:
            raise ConfigError(f"{config.source}: {exc}") from None
    for section, specs in (("keys", config.keys), ("rekorKeys", config.rekor_keys)):
        for spec in specs.values():
            try:
                load_public_key(spec)
            except SigngateError as exc:
                raise ConfigError(f"{config.source}: {section}.{spec.name}: {exc}") from None
    check_trust_files(config)


def check_trust_files(config: Config) -> None:
    """Load every trusted root and CA bundle once, so that a broken one stops start-up."""
    if not config.trusted_roots and not config.certificate_authorities:
        return
    from .certificates import CertificateProblem, trust_from_pem
    from .trust_root import TrustRootError, load_trust_root

    for name, path in config.trusted_roots.items():
        try:
            load_trust_root(path)
        except TrustRootError as exc:
            raise ConfigError(f"{config.source}: trustedRoots.{name}: {exc}") from None
    for name, path in config.certificate_authorities.items():
        try:
            with open(path, "rb") as handle:
                trust_from_pem(name, path, handle.read(4 * 1024 * 1024), False)
        except OSError as exc:
            raise ConfigError(f"{config.source}: certificateAuthorities.{name}: cannot read {path}: {exc.strerror}") from None
        except CertificateProblem as exc:
            raise ConfigError(f"{config.source}: certificateAuthorities.{name}: {exc}") from None


def binding_config(config: Config) -> dict[str, Any]:
    binding = {
        "name": config.webhook.name,
        "namespace": {"labelSelector": namespace_selector(config)},
        "rules": WORKLOAD_RULES,
        "failurePolicy": config.webhook.failure_policy,
        "sideEffects": "None",
        "timeoutSeconds": config.webhook.timeout_seconds,
    }
    output: dict[str, Any] = {"configVersion": "v1", "kubernetesValidating": [binding]}
    if config.pinning:
        # Present only when a rule pins digests. It shares the selector, the settings and the
        # configuration; the validating binding stays the enforcement point.
        mutating = dict(binding, name=config.webhook.mutating_name)
        mutating["rules"] = POD_RULES if config.pin_scope == "pods" else WORKLOAD_RULES
        mutating["rules"] = [dict(rule, resources=[r for r in rule["resources"] if "/" not in r]) for rule in mutating["rules"]]
        output["kubernetesMutating"] = [mutating]
    return output


def namespace_selector(config: Config) -> dict[str, Any]:
    """The user's selector, ANDed with an exclusion of kube-system and signgate's own namespace.

    Expressions of a label selector are ANDed, so the exclusion holds however the user's own
    selector is written: the webhook can never block the pods that would repair it.
    """
    selector = json.loads(json.dumps(config.webhook.namespace_selector))
    expressions = list(selector.get("matchExpressions", []))
    expressions.append(
        {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": list(config.excluded_namespaces())}
    )
    selector["matchExpressions"] = expressions
    return selector


# ---- admission -----------------------------------------------------------------------------------


def run_admission(
    environ: Mapping[str, str],
    started: float,
    log: TextIO,
    on_unfinished: Callable[[], None] | None = None,
    fallback: Any = None,
) -> int:
    """Answer one admission call. `on_unfinished` replaces the default exit when worker threads
    are stuck past the deadline (the verifier service must tell the hook before leaving).
    `fallback` (a relay.Fallback) says why the verifier service did not answer: see `_shed`."""
    response_path = environ.get("VALIDATING_RESPONSE_PATH") or environ.get("ADMISSION_RESPONSE_PATH")
    config: Config | None = None
    request: dict[str, Any] = {}
    try:
        config_path = config_path_from_env(environ)
        try:
            raw_config = read_config_bytes(config_path)
            config = parse_config(raw_config, config_path, environ)
        except ConfigError as exc:
            return _respond_error(
                response_path, log, started, None, request, "invalid-config", f"invalid configuration: {exc}", environ
            )
        contexts = read_binding_context(environ, config.limits.max_binding_context_bytes)
        admission = [c for c in contexts if isinstance(c, dict) and c.get("type") in ADMISSION_TYPES]
        if not admission:
            types = sorted({str(c.get("type")) for c in contexts if isinstance(c, dict)})
            _log(log, "info", "no admission context; nothing to do", types=types)
            return 0
        review = admission[0].get("review")
        found = review.get("request") if isinstance(review, dict) else None
        if not isinstance(found, dict):
            raise InputError("the binding context has no review.request object")
        request = found
        from .cache import VerdictCache, settings_from
        from .decision import decide
        from . import metrics

        deadline = Deadline(config.webhook.deadline_seconds, start=started)
        cache = VerdictCache(settings_from(config, environ), config)
        mutating = admission[0].get("type") == "Mutating"
        if mutating and not _pinning_applies(config, request):
            write_response(response_path, {"allowed": True})
            _log(log, "info", "signgate: nothing to pin", **_request_fields(request), verdict="allowed")
            return 0
        shed = _shed(deadline, fallback, started)
        if shed is not None:
            # Too little time left to verify: every image that needs a signature is denied (or
            # warned about, by its rule's mode) at once, naming why; static rules still apply.
            # No registry is contacted and nothing heavy is imported. The Deadline given here
            # only bounds the threads that hand out these verdicts.
            decision = decide(request, config, Deadline(deadline.seconds), verifier=_unverified(*shed, deadline.seconds))
        else:
            _elect_for_fast_path(environ, raw_config, request, mutating)
            decision = decide(request, config, deadline, cache=cache)
        body = decision.response()
        if mutating and decision.allowed:
            from .pinning import encode_patch, pin_operations

            old_object = request.get("oldObject") if request.get("operation") == "UPDATE" else None
            operations = pin_operations(decision.results, old_object)
            if operations:
                body["patch"] = encode_patch(operations)
        write_response(response_path, body)
        # The answer is written: nothing below may replace it with an error response.
        try:
            log_decision(log, request, decision, started)
            remember_passes(environ, config, raw_config, decision)
            # Last: the totals a run shows are those at its update, and shell-operator applies
            # runs' metrics in about the order they exit (fastpath.py, "cumulative metrics").
            seconds = time.monotonic() - started
            metrics.write(environ, metrics.increments(decision, seconds, decision.registry_requests), deadline.expires_at)
        except Exception as exc:  # bookkeeping only
            _log(log, "error", f"signgate: after answering: {type(exc).__name__}: {exc}")
        if decision.unfinished:
            # Worker threads are stuck on a slow registry past the deadline. The answer is written;
            # leave now instead of waiting for them (shell-operator would never kill us).
            log.flush()
            if on_unfinished is not None:
                on_unfinished()
            os._exit(0)
        return 0
    except SigngateError as exc:
        return _respond_error(response_path, log, started, config, request, exc.reason, str(exc), environ)
    except Exception as exc:  # the last line of defence: never crash into "Hook failed"
        text = f"internal error: {type(exc).__name__}: {exc}"
        return _respond_error(response_path, log, started, config, request, "internal-error", text, environ)


# CPU seconds a verification still costs a hook process once the library is imported: importing
# `requests` and `cryptography` (a verifier service's worker has them already).
REMAINING_VERIFY_CPU = 0.25


def _shed(deadline: Deadline, fallback: Any, started: float) -> tuple[str, str] | None:
    """Whether to answer without verifying, and why: (reason, text) or None (see shed.py)."""
    from .shed import reason_to_shed

    cost = 0.0 if "requests" in sys.modules else REMAINING_VERIFY_CPU
    return reason_to_shed(deadline.seconds, deadline.remaining(), fallback, time.monotonic() - started, cost)


def _unverified(reason: str, text: str, seconds: float) -> Callable[..., Any]:
    from .verify import ImageVerdict

    verdict = ImageVerdict(False, reason, f"not verified within {seconds:g} s: {text}")
    return lambda rule, ref: verdict


def _elect_for_fast_path(environ: Mapping[str, str], raw_config: bytes, request: Any, mutating: bool) -> None:
    """Tell fast-path processes that this one is deciding these images (see fastpath.elect)."""
    cache_dir = environ.get("SIGNGATE_CACHE_DIR")
    if not cache_dir or mutating:
        return
    from . import fastpath
    from .podspec import pod_spec_kind, walk_containers

    kind = pod_spec_kind(request)
    if kind is None or request.get("operation") not in ("CREATE", "UPDATE"):
        return
    try:
        images = [image for _, _, image, _ in walk_containers(kind, request.get("object")) if isinstance(image, str)]
    except SigngateError:
        return  # decide() reports the malformed object
    fastpath.elect(cache_dir, fastpath.config_digest(raw_config), images)


def _pinning_applies(config: Config, request: dict[str, Any]) -> bool:
    from .podspec import pod_spec_kind

    kind = pod_spec_kind(request)
    if not config.pinning or kind is None or request.get("operation") not in ("CREATE", "UPDATE"):
        return False
    return kind == "Pod" or config.pin_scope == "workloads"


def remember_passes(environ: Mapping[str, str], config: Config, raw_config: bytes, decision: Any) -> None:
    """Record passed images for the fast path (fastpath.py), which reads $SIGNGATE_CACHE_DIR."""
    cache_dir = environ.get("SIGNGATE_CACHE_DIR")
    if not cache_dir or not decision.results:
        return
    from . import fastpath
    from .verifiers import verifier_for

    digest = fastpath.config_digest(raw_config)
    now = time.time()
    settings = config.cache
    for result in decision.results:
        verdict, rule, ref = result.verdict, result.rule, result.reference
        if not verdict.passed or not isinstance(result.container.image, str) or ref is None:
            continue
        dependencies: list[str] = []
        if verdict.reason in ("allowed-by-rule", "unmatched-allowed"):
            expires = now + settings.ttl_seconds
        else:
            if rule is None:
                continue
            expires = verdict.expires_at or now + settings.ttl_seconds
            if ref.digest is None:
                if settings.tag_ttl_seconds <= 0:
                    continue  # tags are re-resolved on every request
                expires = min(expires, now + settings.tag_ttl_seconds)
            dependencies = verifier_for(rule).trust_files(config, rule)
        fastpath.remember(
            cache_dir, digest, result.container.image, dependencies, expires,
            config.limits.max_images_per_request, verdict.reason, result.mode,
        )


def read_binding_context(environ: Mapping[str, str], max_bytes: int) -> list[Any]:
    path = environ.get("BINDING_CONTEXT_PATH")
    if not path:
        raise InputError("BINDING_CONTEXT_PATH is not set")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read the binding context: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise InputError(f"the binding context is larger than the limit of {max_bytes} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError("the binding context is not valid JSON") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError("the binding context is not a JSON array")
    return data


def write_response(path: str | None, body: dict[str, Any]) -> None:
    if not path:
        raise InputError("VALIDATING_RESPONSE_PATH is not set")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(body, handle)


def _respond_error(
    response_path: str | None,
    log: TextIO,
    started: float,
    config: Config | None,
    request: dict[str, Any],
    reason: str,
    text: str,
    environ: Mapping[str, str] | None = None,
) -> int:
    warn = config is not None and config.mode == "warn"
    if warn:
        body: dict[str, Any] = {"allowed": True, "warnings": [f"signgate (warn mode) would deny: {text}"]}
    else:
        body = {"allowed": False, "message": f"signgate: {text}"}
    try:
        write_response(response_path, body)
    except (OSError, SigngateError) as exc:
        _log(log, "error", f"signgate: cannot write the response: {exc}", reason=reason)
    from . import metrics

    if environ is not None:
        # Bounded by the deadline like the rest of the run; without a configuration, by a second.
        seconds = config.webhook.deadline_seconds if config is not None else 1.0
        metrics.write(environ, metrics.error_increments(reason, warn), started + seconds)
    _log(
        log,
        "error",
        "signgate decision",
        **_request_fields(request),
        verdict="allowed" if warn else "denied",
        reasons=[reason],
        error=text,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    return 0


def log_decision(log: TextIO, request: dict[str, Any], decision: Any, started: float) -> None:
    images = [
        {
            "container": r.container.container,
            "list": r.container.list_name,
            "image": r.container.image if isinstance(r.container.image, str) else None,
            "digest": r.verdict.digest,
            "rule": r.rule.images if r.rule else None,
            "mode": r.mode,
            "verdict": "pass" if r.verdict.passed else "fail",
            "reason": r.verdict.reason,
            "keys": list(r.verdict.verified_keys),
            **({"message": r.verdict.message} if not r.verdict.passed else {}),
            **({"detail": r.verdict.log_detail} if r.verdict.log_detail else {}),
        }
        for r in decision.results
    ]
    reasons = sorted({r.verdict.reason for r in decision.results if not r.verdict.passed})
    _log(
        log,
        # shell-operator re-logs the hook's JSON lines at their level and knows "warn", not
        # "warning" (which it would log as info).
        "info" if decision.allowed else "warn",
        "signgate decision",
        **_request_fields(request),
        verdict="allowed" if decision.allowed else "denied",
        reasons=reasons or ([decision.summary] if decision.summary else []),
        images=images,
        warnings=len(decision.warnings),
        cache={"hits": decision.cache_hits, "misses": decision.cache_misses},
        registry_requests=len(decision.registry_requests),
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def _request_fields(request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        request = {}
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    obj = request.get("object") if isinstance(request.get("object"), dict) else {}
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = request.get("name") or metadata.get("name") or metadata.get("generateName") or ""
    return {
        "uid": request.get("uid") if isinstance(request.get("uid"), str) else "",
        "namespace": request.get("namespace") if isinstance(request.get("namespace"), str) else "",
        "kind": kind.get("kind", "") if isinstance(kind.get("kind"), str) else "",
        "name": name if isinstance(name, str) else "",
        "operation": request.get("operation") if isinstance(request.get("operation"), str) else "",
    }


def _log(log: TextIO, level: str, msg: str, **fields: Any) -> None:
    try:
        log.write(json.dumps({"level": level, "msg": msg, **fields}, default=str) + "\n")
    except Exception:
        pass
