"""The signgate configuration: schema, defaults and validation.

The file is YAML (JSON is YAML too). Validation is strict: unknown fields are errors, and every
error names the file and the field, e.g. `config.yaml: policy[1].threshold: ...`. The schema is
documented in the README; keep the two in step.
"""

from __future__ import annotations

import json
import re
import os
from typing import Any, Mapping

from .encoding import unique_keys
from .errors import ConfigError, InvalidReference
from .fields import LongInteger as _LongInteger, Section as _Section, ca_bundle_problem, clip as _clip, short as _short, type_name as _type_name
from .files import read_regular
from .podspec import config_path
from .policy import canonical_pattern, check_pattern
from .reference import canonical_insecure
# Deferred imports: the network guard (socket, threading) loads only for a configuration that
# lists registries.allowNetworks; the hook's other paths never need it.
from .verifiers import VERIFIERS
from .verifiers.interface import RuleContext
from .settings import (  # noqa: F401  (re-exported: the configuration's types)
    DEFAULT_CONFIG_PATH,
    DEFAULT_BINDING_NAME,
    DEFAULT_MUTATING_NAME,
    PIN_SCOPES,
    PULL_SECRET_SOURCES,
    DEFAULT_SELECTOR,
    ALWAYS_EXCLUDED_NAMESPACES,
    MODES,
    ACTIONS,
    HASH_ALGORITHMS,
    MULTI_ARCH_CHOICES,
    TLOG_CHOICES,
    MIB,
    RANGES,
    IdentitySpec,
    KeySpec,
    WebhookSettings,
    RegistrySettings,
    Limits,
    CacheSettings,
    Rule,
    Config,
)


def config_path_from_env(environ: Mapping[str, str] = os.environ) -> str:
    return config_path(environ)


def load_config(path: str, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, parse and validate the configuration file."""
    return parse_config(read_config_bytes(path), path, environ)


def read_config_bytes(path: str) -> bytes:
    try:
        raw = read_regular(path, 1024 * 1024)  # a FIFO or device is refused, never waited on
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (set SIGNGATE_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from None
    if len(raw) > 1024 * 1024:
        raise ConfigError(f"{path}: configuration file is larger than 1 MiB")
    return raw


def parse_config(raw: bytes | str, source: str, environ: Mapping[str, str] = os.environ) -> Config:
    # JSON is YAML, and the stdlib reads it without importing yaml (~20 ms per hook process).
    # The chart renders the configuration as JSON for that reason.
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except _DuplicateKey as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{source}: the configuration is nested too deeply") from None
        except ValueError:
            pass  # not JSON after all: YAML flow style, perhaps; let the YAML parser say what is wrong
        else:
            return build_config(data, source, environ)
    import yaml

    try:
        data = yaml.load(raw, Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the configuration is nested too deeply") from None
    except _LoadRefused as exc:
        raise ConfigError(f"{source}: invalid YAML{exc.where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    return build_config(data, source, environ)


class _DuplicateKey(Exception):
    pass


class _LoadRefused(Exception):
    """Something the loader refuses on purpose, with where it is in the file."""

    def __init__(self, mark: Any, problem: str) -> None:
        super().__init__(problem)
        self.where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        self.problem = problem


_no_duplicates = unique_keys(lambda key: _DuplicateKey(f"duplicate field {_short(key)}"))


def _strict_loader() -> Any:
    """A SafeLoader that refuses duplicate keys, aliases and unhashable keys.

    - Duplicate keys: YAML would silently keep the last one, so a second `policy:` would quietly
      drop the first list of rules.
    - Aliases (`*name`): nested aliases make a few hundred bytes stand for billions of values
      (a "billion laughs" document), which any later walk of the data (validation, an error
      message) would expand. A configuration has no need of them: values are written out.
    - A list or mapping as a key (`? [a, b]`) cannot be a field name.
    - Integer literals of more than 100 characters are kept as a marker, not converted.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _LoadRefused(
                    event.start_mark,
                    f"aliases are not accepted in the configuration (found *{_clip(event.anchor, 40)}); "
                    "write the value out instead",
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:
                    raise _LoadRefused(
                        key_node.start_mark, f"field names must be strings, found {_type_name(key)} as a field name"
                    ) from None
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    mark = key_node.start_mark
                    raise _DuplicateKey(f"duplicate field {_short(key)} at line {mark.line + 1}")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            text = self.construct_scalar(node)
            if len(text) > _LongInteger.LIMIT:
                return _LongInteger(text)
            return super().construct_yaml_int(node)

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return StrictLoader


def build_config(data: Any, source: str, environ: Mapping[str, str] = os.environ) -> Config:
    top = _Section(data, "", source)
    webhook = _webhook(top.section("webhook"), environ)
    keys = _keys(top.section("keys"))
    rekor_keys = _keys(top.section("rekorKeys"))
    identities = _identities(top.section("identities"))
    trusted_roots = _paths(top.section("trustedRoots"), "trusted_root.json")
    certificate_authorities = _paths(top.section("certificateAuthorities"), "PEM CA bundle")
    registries = _registries(top.section("registries"))
    limits = _limits(top.section("limits"))
    cache = _cache(top.section("cache"))
    mode = top.choice("mode", MODES, "enforce")
    deny_latest = top.boolean("denyLatest", False)
    require_digest = top.boolean("requireDigest", False)
    unmatched = top.choice("unmatchedImages", ("deny", "allow"), "deny")
    pin_scope = top.choice("pinScope", PIN_SCOPES, "pods")
    trust = {"identities": identities, "trusted_roots": trusted_roots, "certificate_authorities": certificate_authorities}
    policy = _policy(top, keys, rekor_keys, registries.insecure, trust)
    top.done()
    return Config(
        source=source,
        webhook=webhook,
        keys=keys,
        registries=registries,
        limits=limits,
        policy=policy,
        rekor_keys=rekor_keys,
        identities=identities,
        trusted_roots=trusted_roots,
        certificate_authorities=certificate_authorities,
        cache=cache,
        mode=mode,
        deny_latest=deny_latest,
        require_digest=require_digest,
        unmatched_images=unmatched,
        pin_scope=pin_scope,
    )


def _webhook(section: "_Section", environ: Mapping[str, str]) -> WebhookSettings:
    name = section.string("name", DEFAULT_BINDING_NAME)
    mutating_name = section.string("mutatingName", DEFAULT_MUTATING_NAME)
    for field_name, value in (("name", name), ("mutatingName", mutating_name)):
        if len([part for part in value.split(".") if part]) < 3 or value != value.strip():
            section.fail(field_name, f"must be a fully-qualified name with at least three dot-separated parts, got {_short(value)}")
    if name == mutating_name:
        section.fail("mutatingName", "must differ from name")
    selector = section.raw("namespaceSelector", None)
    if selector is None:
        selector = json.loads(json.dumps(DEFAULT_SELECTOR))  # a copy: never hand out the shared default
    _verify_selector(section, "namespaceSelector", selector)
    timeout = section.integer("timeoutSeconds", 10, *RANGES["webhook.timeoutSeconds"])
    default_deadline = max(timeout * 0.5, timeout - 2.0)
    deadline = section.number("deadlineSeconds", default_deadline, *RANGES["webhook.deadlineSeconds"])
    if deadline >= timeout:
        section.fail(
            "deadlineSeconds",
            f"must be shorter than timeoutSeconds ({timeout}), so that signgate answers before the API server gives up",
        )
    failure_policy = section.choice("failurePolicy", ("Fail", "Ignore"), "Fail")
    exclude = section.string_list("excludeNamespaces", ())
    configured = section.string("signgateNamespace", "")
    own = environ.get("SIGNGATE_NAMESPACE") or configured or None  # the env (downward API) is the truth
    section.done()
    return WebhookSettings(
        name=name,
        mutating_name=mutating_name,
        namespace_selector=selector,
        timeout_seconds=timeout,
        deadline_seconds=float(deadline),
        failure_policy=failure_policy,
        exclude_namespaces=tuple(exclude),
        signgate_namespace=own,
    )


def _verify_selector(section: "_Section", name: str, selector: Any) -> None:
    path = section.path_of(name)
    if not isinstance(selector, dict):
        section.fail(name, "must be a label selector mapping with matchLabels and/or matchExpressions")
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        section.fail(name, f"unknown field(s) {_clip(', '.join(sorted(map(str, unknown))), 200)}")
    labels = selector.get("matchLabels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ConfigError(f"{section.source}: {path}.matchLabels: must map label names to string values (quote \"true\")")
    expressions = selector.get("matchExpressions", [])
    if not isinstance(expressions, list):
        raise ConfigError(f"{section.source}: {path}.matchExpressions: must be a list")
    for i, expr in enumerate(expressions):
        where = f"{section.source}: {path}.matchExpressions[{i}]"
        if not isinstance(expr, dict) or set(expr) - {"key", "operator", "values"} or "key" not in expr:
            raise ConfigError(f"{where}: must have key, operator and (for In/NotIn) values")
        operator = expr.get("operator")
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ConfigError(f"{where}.operator: must be one of In, NotIn, Exists, DoesNotExist")
        values = expr.get("values", [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{where}.values: must be a list of strings")
        if operator in ("In", "NotIn") and not values:
            raise ConfigError(f"{where}.values: must not be empty for operator {operator}")


def _keys(section: "_Section") -> dict[str, KeySpec]:
    keys: dict[str, KeySpec] = {}
    for name in section.keys():
        value = section.raw(name, None)
        if isinstance(value, str):
            path, hash_algorithm = value, None
        elif isinstance(value, dict):
            entry = section.section(name)
            path = entry.string("path", None, required=True)
            hash_algorithm = entry.choice("hashAlgorithm", HASH_ALGORITHMS, None)
            entry.done()
        else:
            section.fail(name, "must be the path of a PEM public key file, or a mapping with path and hashAlgorithm")
        if not path:
            section.fail(name, "the key file path is empty")
        keys[name] = KeySpec(name=name, path=path, hash_algorithm=hash_algorithm)
    section.done()
    return keys


IDENTITY_FIELDS = {
    "issuer": "issuer", "issuerRegExp": "issuer_regexp", "subject": "subject", "subjectRegExp": "subject_regexp",
    "githubWorkflowRepository": "github_workflow_repository", "githubWorkflowRef": "github_workflow_ref",
    "githubWorkflowTrigger": "github_workflow_trigger",
}


def _identities(section: "_Section") -> dict[str, IdentitySpec]:
    """`identities: {name: {issuer|issuerRegExp, subject|subjectRegExp, github...}}`; regular
    expressions are compiled here, so an invalid one stops `--config` naming its field."""
    identities: dict[str, IdentitySpec] = {}
    for name in section.keys():
        entry = section.section(name)
        values = {attribute: entry.string(field_name, None) for field_name, attribute in IDENTITY_FIELDS.items()}
        entry.done()
        for exact, pattern, what in (("issuer", "issuerRegExp", "issuer"), ("subject", "subjectRegExp", "subject")):
            given = [f for f in (exact, pattern) if values[IDENTITY_FIELDS[f]] is not None]
            if len(given) != 1:
                entry.fail(exact, f"exactly one of {exact} and {pattern} is required: the certificate's {what} must be matched")
            if pattern in given:
                try:
                    re.compile(values[IDENTITY_FIELDS[pattern]])
                except (re.error, RecursionError, OverflowError) as exc:
                    entry.fail(pattern, f"is not a valid regular expression: {exc}")
        identities[name] = IdentitySpec(name=name, **values)
    section.done()
    return identities


def _paths(section: "_Section", what: str) -> dict[str, str]:
    paths: dict[str, str] = {}
    for name in section.keys():
        value = section.raw(name, None)
        if not isinstance(value, str) or not value:
            section.fail(name, f"must be the path of a {what} file")
        paths[name] = value
    section.done()
    return paths


def _registries(section: "_Section") -> RegistrySettings:
    ca_bundle = section.string("caBundle", None)
    auth = section.string("auth", None)
    insecure = section.string_list("insecure", ())
    networks = section.string_list("allowNetworks", ())
    # Whose credentials the registry client uses: `pod` reads the pod's imagePullSecrets from
    # shell-operator snapshots (pullsecrets.py); `none` only the mounted `auth` file.
    pull_secrets = section.choice("pullSecrets", PULL_SECRET_SOURCES, "none")
    section.done()
    canonical: set[str] = set()
    for number, entry in enumerate(insecure):
        # The same canonical form as image references, so `Registry.local:80` and `localhost:5000`
        # name the hosts that image names resolve to.
        try:
            canonical.add(canonical_insecure(entry))
        except InvalidReference as exc:
            section.fail(f"insecure[{number}]", str(exc))
    allow_networks = []
    for number, entry in enumerate(networks):
        from .network import parse_allowed_network

        try:
            allow_networks.append(str(parse_allowed_network(entry)))
        except ValueError as exc:
            section.fail(f"allowNetworks[{number}]", str(exc))
    for path, what in ((ca_bundle, "caBundle"), (auth, "auth")):
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            section.fail(what, f"cannot read {path} (it must be a readable file)")
    if ca_bundle is not None:
        problem = ca_bundle_problem(ca_bundle)
        if problem:
            section.fail("caBundle", problem)
    return RegistrySettings(
        ca_bundle=ca_bundle,
        auth=auth,
        insecure=frozenset(canonical),
        allow_networks=tuple(dict.fromkeys(allow_networks)),
        pull_secrets=pull_secrets,
    )


def _limits(section: "_Section") -> Limits:
    defaults = Limits()
    limits = Limits(
        **{
            name: (section.number if isinstance(default, float) else section.integer)(
                field_name, default, *RANGES[f"limits.{field_name}"]
            )
            for name, field_name, default in (
                ("max_manifest_bytes", "maxManifestBytes", defaults.max_manifest_bytes),
                ("max_blob_bytes", "maxBlobBytes", defaults.max_blob_bytes),
                ("max_signature_layers", "maxSignatureLayers", defaults.max_signature_layers),
                ("max_referrers", "maxReferrers", defaults.max_referrers),
                ("max_images_per_request", "maxImagesPerRequest", defaults.max_images_per_request),
                ("max_binding_context_bytes", "maxBindingContextBytes", defaults.max_binding_context_bytes),
                ("connect_timeout_seconds", "connectTimeoutSeconds", defaults.connect_timeout_seconds),
                ("read_timeout_seconds", "readTimeoutSeconds", defaults.read_timeout_seconds),
            )
        }
    )
    section.done()
    return limits


def _cache(section: "_Section") -> CacheSettings:
    defaults = CacheSettings()
    ttl = section.number("ttlSeconds", defaults.ttl_seconds, *RANGES["cache.ttlSeconds"])
    settings = CacheSettings(
        ttl_seconds=ttl,
        negative_ttl_seconds=section.number(
            "negativeTtlSeconds", min(defaults.negative_ttl_seconds, ttl), *RANGES["cache.negativeTtlSeconds"]
        ),
        tag_ttl_seconds=section.number("tagTtlSeconds", defaults.tag_ttl_seconds, *RANGES["cache.tagTtlSeconds"]),
        max_entries=section.integer("maxEntries", defaults.max_entries, *RANGES["cache.maxEntries"]),
    )
    if settings.negative_ttl_seconds > settings.ttl_seconds:
        section.fail("negativeTtlSeconds", "must not be longer than ttlSeconds")
    section.done()
    return settings


def _policy(
    top: "_Section",
    keys: Mapping[str, KeySpec],
    rekor_keys: Mapping[str, KeySpec],
    insecure: frozenset[str],
    trust: Mapping[str, Any] | None = None,
) -> tuple[Rule, ...]:
    items = top.raw("policy", None)
    if items is None:
        top.fail("policy", "is required: a list of rules (see the README)")
    if not isinstance(items, list) or not items:
        top.fail("policy", "must be a non-empty list of rules")
    rules = []
    for index, item in enumerate(items):
        section = _Section(item, f"policy[{index}]", top.source)
        images = section.string("images", None, required=True)
        problem = check_pattern(images)
        if problem:
            section.fail("images", problem)
        try:
            images = canonical_pattern(images, insecure)
        except InvalidReference as exc:
            section.fail("images", str(exc))
        action = section.choice("action", ACTIONS, "verify")
        message = section.string("message", None)
        mode = section.choice("mode", MODES, None)
        deny_latest = section.boolean("denyLatest", None)
        require_digest = section.boolean("requireDigest", None)
        pin_digest = section.boolean("pinDigest", False)
        rule_type = section.choice("type", tuple(VERIFIERS), "cosign")
        verifier = VERIFIERS[rule_type]
        # Another type's field on this rule is a mistake worth naming, not just an unknown field.
        for name in section.keys():
            owners = [other.type_name for other in VERIFIERS.values() if name in other.fields]
            if owners and rule_type not in owners:
                section.fail(name, f"is only used by rules with type {' or '.join(owners)}, and this rule's type is {rule_type}")
        settings = verifier.parse_settings(section, RuleContext(action, keys, rekor_keys, insecure, **(trust or {})))
        section.done()
        if pin_digest and action != "verify":
            section.fail("pinDigest", f"has no meaning for a static {action!r} rule: only verified digests are pinned")
        if message is not None and action != "deny":
            section.fail("message", "is only used by deny rules")
        rules.append(
            Rule(
                index=index,
                images=images,
                action=action,
                message=message,
                mode=mode,
                deny_latest=deny_latest,
                require_digest=require_digest,
                type=rule_type,
                pin_digest=pin_digest,
                **settings,
            )
        )
    return tuple(rules)
