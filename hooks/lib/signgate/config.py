"""The signgate configuration: schema, defaults and validation.

The file is YAML (JSON is YAML too). Validation is strict: unknown fields are errors, and every
error names the file and the field, e.g. `config.yaml: policy[1].threshold: ...`. The schema is
documented in the README; keep the two in step.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any, Callable, Mapping, NoReturn

from .encoding import unique_keys
from .errors import ConfigError, InvalidReference
from .files import read_regular
from .podspec import config_path
from .policy import canonical_pattern, validate_pattern
from .reference import canonical_endpoint, canonical_insecure, parse_reference
# Deferred imports: the network guard (socket, threading) loads only for a configuration that
# lists registries.allowNetworks; the hook's other paths never need it.
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
    VERIFIER_TYPES,
    MIB,
    RANGES,
    KeySpec,
    WebhookSettings,
    RegistrySettings,
    Limits,
    CacheSettings,
    NotarySettings,
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


class _LongInteger:
    """An integer literal too long to be a sensible value (Python refuses to convert past 4300
    digits, with a ValueError). Kept as its length, so that the field's check names the field."""

    LIMIT = 100  # characters

    def __init__(self, text: str) -> None:
        self.digits = sum(ch.isdigit() for ch in text)

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


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
    registries = _registries(top.section("registries"))
    limits = _limits(top.section("limits"))
    cache = _cache(top.section("cache"))
    mode = top.choice("mode", MODES, "enforce")
    deny_latest = top.boolean("denyLatest", False)
    require_digest = top.boolean("requireDigest", False)
    unmatched = top.choice("unmatchedImages", ("deny", "allow"), "deny")
    pin_scope = top.choice("pinScope", PIN_SCOPES, "pods")
    policy = _policy(top, keys, rekor_keys, registries.insecure)
    top.done()
    return Config(
        source=source,
        webhook=webhook,
        keys=keys,
        registries=registries,
        limits=limits,
        policy=policy,
        rekor_keys=rekor_keys,
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
    _check_selector(section, "namespaceSelector", selector)
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


def _check_selector(section: "_Section", name: str, selector: Any) -> None:
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


def ca_bundle_problem(path: str) -> str | None:
    """Why a CA bundle cannot be used, or None. Checked at load so that a wrong file fails
    `--config` instead of surfacing later as a misleading TLS error."""
    if b"-----BEGIN CERTIFICATE-----" not in _head(path):
        return f"{path} holds no PEM certificate"
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"{path} is not a usable CA bundle ({exc.__class__.__name__})"
    return None


def _head(path: str, size: int = 1024 * 1024) -> bytes:
    try:
        return read_regular(path, size)[:size]
    except OSError:
        return b""


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
    top: "_Section", keys: Mapping[str, KeySpec], rekor_keys: Mapping[str, KeySpec], insecure: frozenset[str]
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
        problem = validate_pattern(images)
        if problem:
            section.fail("images", problem)
        try:
            images = canonical_pattern(images, insecure)
        except InvalidReference as exc:
            section.fail("images", str(exc))
        action = section.choice("action", ACTIONS, "verify")
        message = section.string("message", None)
        rule_keys = tuple(section.string_list("keys", ()))
        threshold = section.integer("threshold", 1, *RANGES["policy[].threshold"])
        required = tuple(section.string_list("required", ()))
        annotations = section.string_map("annotations")
        check_identity = section.boolean("checkIdentity", False)
        signature_repository = section.string("signatureRepository", None)
        mode = section.choice("mode", MODES, None)
        deny_latest = section.boolean("denyLatest", None)
        require_digest = section.boolean("requireDigest", None)
        tlog = section.choice("tlog", TLOG_CHOICES, "ignore")
        multi_arch = section.choice("multiArch", MULTI_ARCH_CHOICES, "exact")
        pin_digest = section.boolean("pinDigest", False)
        rule_type = section.choice("type", VERIFIER_TYPES, "cosign")
        notary = _notary(section, keys) if rule_type == "notaryv1" else None
        if rule_type != "notaryv1" and "notary" in section.data:
            section.fail("notary", "is only used by rules with type notaryv1")
        section.done()
        if rule_type == "notaryv1":
            if action != "verify":
                section.fail("type", "notaryv1 applies to verify rules only")
            for name, value in (("keys", rule_keys), ("required", required), ("annotations", annotations)):
                if value:
                    section.fail(name, "has no meaning for a notaryv1 rule (use notary.rootKeys and notary.delegations)")
            if tlog != "ignore" or multi_arch != "exact" or signature_repository or check_identity or threshold != 1:
                section.fail("type", "notaryv1 rules take no cosign settings (tlog, multiArch, signatureRepository, checkIdentity, threshold)")

        if action == "verify" and rule_type == "cosign":
            if not rule_keys:
                if "default" not in keys:
                    section.fail("keys", "is required for a verify rule (no key is named 'default')")
                rule_keys = ("default",)
            for name in rule_keys + required:
                if name not in keys:
                    known = ", ".join(sorted(keys)) or "none"
                    section.fail("keys" if name in rule_keys else "required", f"names unknown key {_short(name)} (keys: {_clip(known, 200)})")
            if len(set(rule_keys)) != len(rule_keys):
                section.fail("keys", "lists a key twice")
            missing = [name for name in required if name not in rule_keys]
            if missing:
                section.fail("required", f"{', '.join(missing)} must also be listed in keys")
            if threshold > len(rule_keys):
                section.fail("threshold", f"is {threshold}, but the rule lists only {len(rule_keys)} key(s)")
            if signature_repository is not None:
                signature_repository = _signature_repository(section, signature_repository, insecure)
            if tlog == "required" and not rekor_keys:
                section.fail("tlog", "is 'required', but no rekorKeys are configured to check the proofs with")
        else:
            for name, value in (("keys", rule_keys), ("required", required), ("annotations", annotations)):
                if value:
                    section.fail(name, f"has no meaning for a static {action!r} rule")
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
                keys=rule_keys,
                threshold=threshold,
                required=required,
                annotations=annotations,
                check_identity=check_identity,
                signature_repository=signature_repository,
                mode=mode,
                deny_latest=deny_latest,
                require_digest=require_digest,
                tlog=tlog,
                multi_arch=multi_arch,
                type=rule_type,
                notary=notary,
                pin_digest=pin_digest,
            )
        )
    return tuple(rules)


def _notary(rule: "_Section", keys: Mapping[str, KeySpec]) -> NotarySettings:
    section = rule.section("notary")
    server = section.string("server", None, required=True)
    if not server.startswith(("https://", "http://")) or server.rstrip("/").count("/") > 2:
        section.fail("server", f"must be a URL like https://notary.example.com:4443, got {_short(server)}")
    try:  # the host as registries are read (reference.canonical_endpoint)
        parts = urllib.parse.urlsplit(server)
        canonical_endpoint(parts.netloc, parts.scheme)
    except (InvalidReference, ValueError) as exc:
        section.fail("server", f"{_short(server)}: {exc}")
    root_keys = tuple(section.string_list("rootKeys", ()))
    if not root_keys:
        section.fail("rootKeys", "is required: the names of the pinned root public keys (in keys)")
    for name in root_keys:
        if name not in keys:
            section.fail("rootKeys", f"names unknown key {_short(name)} (keys: {_clip(', '.join(sorted(keys)) or 'none', 200)})")
    ca_bundle = section.string("caBundle", None)
    if ca_bundle is not None:
        if not (os.path.isfile(ca_bundle) and os.access(ca_bundle, os.R_OK)):
            section.fail("caBundle", f"cannot read {ca_bundle} (it must be a readable file)")
        problem = ca_bundle_problem(ca_bundle)
        if problem:
            section.fail("caBundle", problem)
    delegations = tuple(section.string_list("delegations", ()))
    for role in delegations:
        if not role.startswith("targets/") or role.endswith("/"):
            section.fail("delegations", f"{_short(role)} is not a delegation role (e.g. targets/releases)")
    section.done()
    return NotarySettings(server=server.rstrip("/"), root_keys=root_keys, ca_bundle=ca_bundle, delegations=delegations)


def _signature_repository(section: "_Section", value: str, insecure: frozenset[str]) -> str:
    """The repository in canonical form (registry/repository), as image names are."""
    try:
        ref = parse_reference(value, insecure)
    except InvalidReference as exc:
        section.fail("signatureRepository", str(exc))
    if not ref.tag_defaulted:
        section.fail("signatureRepository", "must be a repository name without tag or digest")
    return ref.written_name


class _Section:
    """A mapping being validated. Tracks which fields were read so unknown ones are reported."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            where = path or "top level"
            raise ConfigError(f"{source}: {where}: must be a mapping, got {_type_name(data)}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(f"{source}: {path or 'top level'}: field names must be strings, got {_short(key)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.source = source
        self.seen: set[str] = set()

    def path_of(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {self.path_of(name)}: {problem}")

    def keys(self) -> list[str]:
        return list(self.data)

    def done(self) -> None:
        unknown = [key for key in self.data if key not in self.seen]
        if unknown:
            where = self.path or "top level"
            raise ConfigError(f"{self.source}: {where}: unknown field {_short(unknown[0])}")

    def raw(self, name: str, default: Any) -> Any:
        self.seen.add(name)
        return self.data.get(name, default)

    def section(self, name: str) -> "_Section":
        return _Section(self.raw(name, None), self.path_of(name), self.source)

    def _typed(self, name: str, default: Any, check: Callable[[Any], bool], what: str, required: bool) -> Any:
        # An explicit null means "not set": the README's reference writes optional fields that way.
        if name not in self.data or self.data[name] is None:
            if required:
                self.fail(name, "is required")
            self.seen.add(name)
            return default
        value = self.raw(name, default)
        if not check(value):
            shown = "" if isinstance(value, _LongInteger) else f" {_short(value)}"
            self.fail(name, f"must be {what}, got {_type_name(value)}{shown}")
        return value

    def string(self, name: str, default: str | None, required: bool = False) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, str), "a string", required)

    def boolean(self, name: str, default: bool | None) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, bool), "true or false", False)

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        what = f"an integer between {minimum} and {maximum}"
        value = self._typed(name, default, lambda v: isinstance(v, int) and not isinstance(v, bool), what, False)
        if not minimum <= value <= maximum:
            self.fail(name, f"must be {what}, got {_number_text(value)}")
        return int(value)

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        # NaN compares false with everything and infinity passes any minimum, so a bare
        # `value < minimum` lets both through: a NaN lifetime never expires, a NaN timeout
        # breaks every request. The range test below is written so that NaN fails it.
        what = f"a finite number between {minimum:g} and {maximum:g}"
        value = self._typed(
            name, default, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), what, False
        )
        if not minimum <= value <= maximum:
            self.fail(name, f"must be {what}, got {_number_text(value)}")
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> Any:
        value = self._typed(name, default, lambda v: isinstance(v, str), "a string", False)
        if value is not None and value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}, got {_short(value)}")
        return value

    def string_list(self, name: str, default: tuple[str, ...]) -> list[str]:
        value = self._typed(
            name,
            default,
            lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, str) and i for i in v),
            "a list of non-empty strings",
            False,
        )
        return list(value)

    def string_map(self, name: str) -> tuple[tuple[str, str], ...]:
        value = self._typed(
            name,
            {},
            lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(i, str) for k, i in v.items()),
            "a mapping of strings to strings (quote numbers and booleans)",
            False,
        )
        return tuple(sorted(value.items()))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, _LongInteger):
        return f"an integer of {value.digits} digits"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _number_text(value: Any) -> str:
    """A number as the reader wrote it in YAML: `.nan`, `.inf`, `-.inf`, or its digits (bounded)."""
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 64:  # str() of a huge integer is slow, and refused past 4300 digits
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return str(value)
    return _short(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 60) -> str:
    """A repr() of `value` cut to `limit` characters, built without ever producing more.

    repr() of a whole value can be enormous: a list nested ten deep, nine wide, is a few hundred
    bytes of YAML with aliases and 3.5 billion items in its repr(). This walk stops as soon as it
    has enough characters, so its cost is bounded by `limit`, whatever the value.
    """
    out: list[str] = []
    size = 0

    def put(text: str) -> bool:
        nonlocal size
        piece = text[: limit + 1 - size]
        out.append(piece)
        size += len(piece)
        return size > limit

    def walk(item: Any, depth: int) -> bool:  # True: enough characters
        if depth > 16:
            return put("...")
        if isinstance(item, (list, tuple)):
            if put("["):
                return True
            for position, element in enumerate(item):
                if (position and put(", ")) or walk(element, depth + 1):
                    return True
            return put("]")
        if isinstance(item, dict):
            if put("{"):
                return True
            for position, (key, element) in enumerate(item.items()):
                if (position and put(", ")) or walk(key, depth + 1) or put(": ") or walk(element, depth + 1):
                    return True
            return put("}")
        if isinstance(item, (str, bytes)):
            return put(repr(item[: limit + 1]))
        if isinstance(item, (int, float)) and not isinstance(item, bool) and not (isinstance(item, int) and item.bit_length() <= 64):
            return put(_number_text(item))
        return put(_clip(repr(item), limit + 1))

    walk(value, 0)
    text = "".join(out)
    return text if size <= limit else text[: limit - 3] + "..."
