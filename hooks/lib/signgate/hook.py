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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, TextIO

from .admission import AdmissionRequest, RequestFields
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
        verify_key_files(config)
    except SigngateError as exc:
        err.write(json.dumps({"level": "error", "msg": f"signgate: invalid configuration: {exc}"}) + "\n")
        return 1
    # shell-operator runs --config at every start: where an operator looks after rolling the pods.
    for line in trust_expiry_warnings(config):
        _log(err, "warn", line, reason="trust-material-expiring")
    class PlainDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # no &anchors/*aliases: plain YAML for any parser
            return True

    out.write(yaml.dump(binding_config(config), Dumper=PlainDumper, sort_keys=False, default_flow_style=False))
    return 0


def verify_key_files(config: Config) -> None:
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
    verify_trust_files(config)


def verify_trust_files(config: Config) -> None:
    """Load every trusted root and CA bundle once, so that a broken one stops start-up."""
    if not config.trusted_roots and not config.certificate_authorities:
        return
    from .verifiers.cosign.certificates import CertificateProblem, trust_from_pem
    from .verifiers.cosign.trust_root import TrustRootError, load_trust_root

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


def trust_expiry_warnings(config: Config) -> list[str]:
    """Warnings for trusted roots and CA bundles whose keys are past or near the end of their
    validity (trust_root.EXPIRY_WARNING). Never raises: a warning is not worth a failed start."""
    if not config.trusted_roots and not config.certificate_authorities:
        return []
    try:
        from .verifiers.cosign.trust_root import expiry_warnings

        return expiry_warnings(config.trusted_roots, config.certificate_authorities)
    except Exception as exc:
        return [f"signgate: cannot check the trust material's validity: {type(exc).__name__}: {exc}"]


TrustRefresh = dict[tuple[str, str], list[tuple[str, float | None]]]


def trust_refresh(config: Config, decision: Any) -> TrustRefresh | None:
    """For the trust material the decision's rules used, (section, name) -> [(kind, the moment
    it starts needing refreshing as seconds since the epoch, or None for never)]
    (trust_root.material_refresh). Material that cannot be read is absent: the rules report it.
    None when the moments could not be found at all: then no gauge is set and no pass that used
    trust material is remembered for the fast path, which would otherwise report nothing for it."""
    from .verifiers import verifier_for

    used = {material for r in decision.results if r.rule is not None for material in verifier_for(r.rule).trust_material(r.rule)}
    roots = {name for section, name in used if section == "trustedRoots"}
    authorities = {name for section, name in used if section == "certificateAuthorities"}
    if not roots and not authorities:
        return {}
    try:
        from .verifiers.cosign.trust_root import material_refresh

        report = material_refresh({n: config.trusted_roots[n] for n in roots if n in config.trusted_roots},
                                  {n: config.certificate_authorities[n] for n in authorities if n in config.certificate_authorities})
        return {(section, name): [(kind, None if moment is None else moment.timestamp()) for kind, moment in moments.items()]
                for section, name, moments in report}
    except Exception:  # a gauge is not worth the decision's counts: the rules report unreadable material
        return None


def trust_expiry_gauges(refresh: TrustRefresh | None, now: float | None = None) -> list[tuple[str, dict[str, str], int]]:
    """signgate_trust_material_expiring for the trust material the decision's rules used: 1 for
    each (name, kind) that needs refreshing, 0 for the kinds that do not, so that a refreshed
    ConfigMap clears the alert at the next admission. The fast path (fastpath._add_trust_gauges)
    sets the same series from the moments remember_passes records."""
    now = time.time() if now is None else now
    return [
        ("signgate_trust_material_expiring", {"name": name, "kind": kind}, int(moment is not None and now >= moment))
        for (_, name), kinds in sorted((refresh or {}).items())
        for kind, moment in kinds
    ]


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
    if config.registries.pull_secrets == "pod":
        from .pullsecrets import snapshot_bindings

        # Pull secrets and ServiceAccounts reach the hook as snapshots in its binding context
        # (pullsecrets.py): shell-operator watches them, the hook makes no API call. They are
        # watched only in the namespaces the webhook checks.
        kubernetes = snapshot_bindings({"labelSelector": namespace_selector(config)})
        output["kubernetes"] = kubernetes
        names = [item["name"] for item in kubernetes]
        for admission in output["kubernetesValidating"] + output.get("kubernetesMutating", []):
            admission["includeSnapshotsFrom"] = names
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
#
# `run` is the hook's decision in memory: it takes the binding context and the parsed configuration
# and returns the response, the log lines and the metrics to add, reading no environment variable
# and no file (only the verdict cache and the fast path's records, when it is given their
# directory). `run_admission` is the shell-operator side around it: it reads the configuration and
# the binding context from the files the environment names, and writes what `run` returns. The hook
# process (`main`) and the verifier service's workers (service.py) both call `run_admission`.


@dataclass
class HookResult:
    """What one call of the hook produces. `response` is None when the binding context holds no
    admission review (nothing is answered); `metrics` is what the run adds to the totals, to be
    written before `give_up_at` (time.monotonic()); `reason` is set when the response is an error's
    denial (or warning) rather than a decision; `unfinished`: worker threads were still running at
    the deadline, and the process should leave once the answer is out."""

    response: dict[str, Any] | None
    log_lines: list[str] = field(default_factory=list)
    metrics: Any = None
    give_up_at: float = 0.0
    reason: str | None = None
    unfinished: bool = False
    decision: Any = None  # the decision.Decision, when one was made
    fields: RequestFields = field(default_factory=RequestFields)  # the request, as the log names it


def run(
    binding_context: bytes | list[Any] | dict[str, Any],
    config: Config,
    *,
    started: float | None = None,
    fallback: Any = None,
    cache_dir: str | None = None,
    config_digest: str | None = None,
    verifier: Any = None,
) -> HookResult:
    """Answer the binding context in memory. Never raises: every error becomes the response it
    would be in the hook (a denial naming its cause, or a warning in warn mode).

    `binding_context`: the file's bytes (the size limit and the JSON syntax are checked here) or
    the parsed array (or one object). `started`: when the request started, on the monotonic clock.
    `fallback`: why the verifier service did not answer (relay.Fallback), see `_shed`.
    `cache_dir`: the verdict cache and the fast path's records ($SIGNGATE_CACHE_DIR); None: no
    cache. `config_digest`: fastpath.config_digest of the configuration's bytes, which keys the
    fast path's records (without it nothing is recorded for the fast path). `verifier`: a callable
    (rule, reference) -> ImageVerdict that replaces the registries (decision.decide)."""
    started = time.monotonic() if started is None else started
    lines: list[str] = []
    fields = RequestFields()
    try:
        contexts = parse_binding_context(binding_context, config.limits.max_binding_context_bytes)
        # Logged: snapshots (pull secrets) make the context grow toward limits.maxBindingContextBytes.
        context_bytes = len(binding_context) if isinstance(binding_context, (bytes, bytearray)) else None
        admission = [c for c in contexts if isinstance(c, dict) and c.get("type") in ADMISSION_TYPES]
        if not admission:
            types = sorted({str(c.get("type")) for c in contexts if isinstance(c, dict)})
            _log(lines, "info", "no admission context; nothing to do", types=types)
            return HookResult(None, lines)
        review = admission[0].get("review")
        raw_request = review.get("request") if isinstance(review, dict) else None
        fields = RequestFields.of(raw_request)
        request = AdmissionRequest.parse(raw_request, "the binding context has no review.request object")
        from .cache import VerdictCache
        from .decision import decide
        from . import metrics

        deadline = Deadline(config.webhook.deadline_seconds, start=started)
        cache = VerdictCache(replace(config.cache, directory=cache_dir), config)
        mutating = admission[0].get("type") == "Mutating"
        if mutating and not _pinning_applies(config, request):
            _log(lines, "info", "signgate: nothing to pin", **fields.as_log(), verdict="allowed")
            return HookResult({"allowed": True}, lines, fields=fields)
        # An injected verifier needs no registry library: nothing is left to import before it runs.
        shed = _shed(deadline, fallback, started, loaded=verifier is not None)
        if shed is not None:
            # Too little time left to verify: every image that needs a signature is denied (or
            # warned about, by its rule's mode) at once, naming why; static rules still apply.
            # No registry is contacted and nothing heavy is imported. The Deadline given here
            # only bounds the threads that hand out these verdicts.
            decision = decide(request, config, Deadline(deadline.seconds), verifier=_unverified(*shed, deadline.seconds))
        else:
            if not mutating:
                _elect_for_fast_path(cache_dir, config_digest, request)
            pull_secrets = None
            if config.registries.pull_secrets == "pod":
                from .pullsecrets import pod_credentials

                # From the snapshots shell-operator put in this context: no API call (pullsecrets.py).
                pull_secrets = pod_credentials(admission[0], raw_request, config.registries.insecure)
            decision = decide(request, config, deadline, cache=cache, verifier=verifier, pull_secrets=pull_secrets)
        body = decision.response()
        if mutating and decision.allowed:
            from .pinning import encode_patch, pin_operations

            old_object = request.old_object if request.operation == "UPDATE" else None
            operations = pin_operations(decision.results, old_object)
            if operations:
                body["patch"] = encode_patch(operations)
        result = HookResult(body, lines, give_up_at=deadline.expires_at, unfinished=decision.unfinished,
                            decision=decision, fields=fields)
        # The answer is made: nothing below may replace it with an error response.
        try:
            lines.append(decision_line(fields, decision, started, binding_context_bytes=context_bytes))
            refresh = trust_refresh(config, decision)
            remember_passes(cache_dir, config_digest, config, decision, refresh)
            # Last: the totals a run shows are those at its update, and shell-operator applies
            # runs' metrics in about the order they exit (fastpath.py, "cumulative metrics").
            seconds = time.monotonic() - started
            result.metrics = metrics.increments(decision, seconds, decision.registry_requests,
                                                trust_expiry_gauges(refresh))
        except Exception as exc:  # bookkeeping only
            _log(lines, "error", f"signgate: after answering: {type(exc).__name__}: {exc}")
        return result
    except SigngateError as exc:
        return error_result(started, config, fields, exc.reason, str(exc), lines)
    except Exception as exc:  # the last line of defence: never crash into "Hook failed"
        text = f"internal error: {type(exc).__name__}: {exc}"
        return error_result(started, config, fields, "internal-error", text, lines)


def run_admission(
    environ: Mapping[str, str],
    started: float,
    log: TextIO,
    on_unfinished: Callable[[], None] | None = None,
    fallback: Any = None,
) -> int:
    """Answer one admission call from shell-operator's files: `run`, with its inputs read from
    and its outputs written to the paths in `environ`. `on_unfinished` replaces the default exit
    when worker threads are stuck past the deadline (the verifier service must tell the hook
    before leaving). `fallback` (a relay.Fallback) says why the verifier service did not answer."""
    response_path = environ.get("VALIDATING_RESPONSE_PATH") or environ.get("ADMISSION_RESPONSE_PATH")
    config: Config | None = None
    try:
        config_path = config_path_from_env(environ)
        try:
            raw_config = read_config_bytes(config_path)
            config = parse_config(raw_config, config_path, environ)
        except ConfigError as exc:
            result = error_result(started, None, RequestFields(), "invalid-config", f"invalid configuration: {exc}")
        else:
            try:
                raw_context = read_binding_context_bytes(environ, config.limits.max_binding_context_bytes)
            except SigngateError as exc:
                result = error_result(started, config, RequestFields(), exc.reason, str(exc))
            else:
                cache_dir = environ.get("SIGNGATE_CACHE_DIR") or None
                digest = None
                if cache_dir:
                    from .fastpath import config_digest

                    digest = config_digest(raw_config)
                result = run(raw_context, config, started=started, fallback=fallback, cache_dir=cache_dir,
                             config_digest=digest)
    except Exception as exc:  # reading the configuration failed in an unforeseen way
        result = error_result(started, config, RequestFields(), "internal-error",
                              f"internal error: {type(exc).__name__}: {exc}")
    if result.response is None:
        _write_lines(log, result.log_lines)
        return 0
    try:
        write_response(response_path, result.response)
    except Exception as exc:
        if result.reason is not None:
            _log(log, "error", f"signgate: cannot write the response: {exc}", reason=result.reason)
        else:
            # As if the decision had failed: its own log lines and metrics are dropped, and the
            # error's denial is tried once more (it fails the same way, and says so).
            if isinstance(exc, SigngateError):
                reason, text = exc.reason, str(exc)
            else:
                reason, text = "internal-error", f"internal error: {type(exc).__name__}: {exc}"
            result = error_result(started, config, result.fields, reason, text)
            try:
                write_response(response_path, result.response or {})
            except Exception as again:
                _log(log, "error", f"signgate: cannot write the response: {again}", reason=reason)
    _write_lines(log, result.log_lines)
    if result.metrics is not None:
        try:
            from . import metrics

            metrics.write(environ, result.metrics, result.give_up_at)
        except Exception as exc:  # bookkeeping only
            _log(log, "error", f"signgate: after answering: {type(exc).__name__}: {exc}")
    if result.unfinished:
        # Worker threads are stuck on a slow registry past the deadline. The answer is written;
        # leave now instead of waiting for them (shell-operator would never kill us).
        log.flush()
        if on_unfinished is not None:
            on_unfinished()
        os._exit(0)
    return 0


# CPU seconds a verification still costs a hook process once the library is imported: importing
# `requests` and `cryptography` (a verifier service's worker has them already).
REMAINING_VERIFY_CPU = 0.25


def _shed(deadline: Deadline, fallback: Any, started: float, loaded: bool = False) -> tuple[str, str] | None:
    """Whether to answer without verifying, and why: (reason, text) or None (see shed.py).
    `loaded`: the verification needs no further imports."""
    from .shed import reason_to_shed

    cost = 0.0 if loaded or "requests" in sys.modules else REMAINING_VERIFY_CPU
    return reason_to_shed(deadline.seconds, deadline.remaining(), fallback, time.monotonic() - started, cost)


def _unverified(reason: str, text: str, seconds: float) -> Callable[..., Any]:
    from .verdict import ImageVerdict

    verdict = ImageVerdict(False, reason, f"not verified within {seconds:g} s: {text}")
    return lambda rule, ref: verdict


def _elect_for_fast_path(cache_dir: str | None, config_digest: str | None, request: AdmissionRequest) -> None:
    """Tell fast-path processes that this one is deciding these images (see fastpath.elect)."""
    if not cache_dir or not config_digest or not request.checked:
        return
    from . import fastpath

    images = [c.image for c in request.containers if isinstance(c.image, str)]
    fastpath.elect(cache_dir, config_digest, images)


def _pinning_applies(config: Config, request: AdmissionRequest) -> bool:
    if not config.pinning or not request.checked:
        return False
    return request.pod_kind == "Pod" or config.pin_scope == "workloads"


def remember_passes(cache_dir: str | None, config_digest: str | None, config: Config, decision: Any,
                    refresh: TrustRefresh | None) -> None:
    """Record passed images for the fast path (fastpath.py), which reads $SIGNGATE_CACHE_DIR,
    with the refresh moments of the trust material each image's rule used (`refresh`, from
    trust_refresh), so that the fast path sets signgate_trust_material_expiring as this path would."""
    if not cache_dir or not config_digest or not decision.results:
        return
    from . import fastpath
    from .verifiers import verifier_for

    now = time.time()
    settings = config.cache
    for result in decision.results:
        verdict, rule, ref = result.verdict, result.rule, result.reference
        if not verdict.passed or not isinstance(result.container.image, str) or ref is None:
            continue
        dependencies: list[str] = []
        trust: list[tuple[str, str, float | None]] = []
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
            material = verifier_for(rule).trust_material(rule)
            if material and refresh is None:
                continue  # its gauge could not be computed: the full path tries again next time
            # Material absent from `refresh` could not be read: neither path sets its gauge.
            trust = [(name, kind, moment) for section, name in material
                     for kind, moment in (refresh or {}).get((section, name), [])]
        fastpath.remember(
            cache_dir, config_digest, result.container.image, dependencies, expires,
            config.limits.max_images_per_request, verdict.reason, result.mode, trust,
        )


def read_binding_context_bytes(environ: Mapping[str, str], max_bytes: int) -> bytes:
    """At most `max_bytes` + 1 bytes of $BINDING_CONTEXT_PATH (one more shows it is too large)."""
    path = environ.get("BINDING_CONTEXT_PATH")
    if not path:
        raise InputError("BINDING_CONTEXT_PATH is not set")
    try:
        with open(path, "rb") as handle:
            return handle.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read the binding context: {exc.strerror}") from None


def parse_binding_context(raw: bytes | list[Any] | dict[str, Any], max_bytes: int) -> list[Any]:
    """The binding context as a list of contexts (shell-operator may send one object)."""
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > max_bytes:
            raise InputError(f"the binding context is larger than the limit of {max_bytes} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InputError("the binding context is not valid JSON") from None
    else:
        data = raw
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


def error_result(
    started: float,
    config: Config | None,
    fields: RequestFields,
    reason: str,
    text: str,
    lines: list[str] | None = None,
) -> HookResult:
    """The answer to an error: a denial naming it, or in warn mode an admission with a warning."""
    from . import metrics

    lines = [] if lines is None else lines
    warn = config is not None and config.mode == "warn"
    if warn:
        body: dict[str, Any] = {"allowed": True, "warnings": [f"signgate (warn mode) would deny: {text}"]}
    else:
        body = {"allowed": False, "message": f"signgate: {text}"}
    # Bounded by the deadline like the rest of the run; without a configuration, by a second.
    seconds = config.webhook.deadline_seconds if config is not None else 1.0
    _log(
        lines,
        "error",
        "signgate decision",
        **fields.as_log(),
        verdict="allowed" if warn else "denied",
        reasons=[reason],
        error=text,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    return HookResult(body, lines, metrics.error_increments(reason, warn), started + seconds, reason, fields=fields)


def decision_line(fields: RequestFields, decision: Any, started: float, **extra: Any) -> str:
    """The decision's log line (JSON, without the newline); `extra` fields are added when not None."""
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
    return _line(
        # shell-operator re-logs the hook's JSON lines at their level and knows "warn", not
        # "warning" (which it would log as info).
        "info" if decision.allowed else "warn",
        "signgate decision",
        **fields.as_log(),
        verdict="allowed" if decision.allowed else "denied",
        reasons=reasons or ([decision.summary] if decision.summary else []),
        images=images,
        warnings=len(decision.warnings),
        cache={"hits": decision.cache_hits, "misses": decision.cache_misses},
        registry_requests=len(decision.registry_requests),
        duration_ms=int((time.monotonic() - started) * 1000),
        **{k: v for k, v in extra.items() if v is not None},
    )


def _line(level: str, msg: str, **fields: Any) -> str:
    return json.dumps({"level": level, "msg": msg, **fields}, default=str)


def _log(log: TextIO | list[str], level: str, msg: str, **fields: Any) -> None:
    """One JSON log line, to a stream or to a run's list of lines."""
    try:
        line = _line(level, msg, **fields)
        if isinstance(log, list):
            log.append(line)
        else:
            log.write(line + "\n")
    except Exception:
        pass


def _write_lines(log: TextIO, lines: list[str]) -> None:
    for line in lines:
        try:
            log.write(line + "\n")
        except Exception:
            pass
