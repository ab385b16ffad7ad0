"""The configuration's data types and fixed values: what a parsed configuration is.

Parsing and validation live in config.py, above the policy and the network guard whose helpers
it uses; everything below (keys, registry client, network guard, verifiers) needs only these
types, so it imports this module and the layers stay one-way (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, get_args

from .podspec import DEFAULT_CONFIG_PATH  # noqa: F401  (re-exported)

DEFAULT_BINDING_NAME = "image-signatures.signgate.dev"
DEFAULT_MUTATING_NAME = "image-digests.signgate.dev"
PIN_SCOPES = ("pods", "workloads")
DEFAULT_SELECTOR: Mapping[str, Any] = {"matchLabels": {"signed": "required"}}
ALWAYS_EXCLUDED_NAMESPACES = ("kube-system",)
# The closed sets of values the configuration may name: a Literal each for the type checker,
# and its tuple of values for the parser and messages.
Mode = Literal["enforce", "warn"]
Action = Literal["verify", "allow", "deny"]
Tlog = Literal["ignore", "required"]
MultiArch = Literal["exact", "index-or-platforms"]
PullSecretSource = Literal["none", "pod"]
MODES: tuple[str, ...] = get_args(Mode)
ACTIONS: tuple[str, ...] = get_args(Action)
HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
MULTI_ARCH_CHOICES: tuple[str, ...] = get_args(MultiArch)
TLOG_CHOICES: tuple[str, ...] = get_args(Tlog)
PULL_SECRET_SOURCES: tuple[str, ...] = get_args(PullSecretSource)
MIB = 1024 * 1024
# (minimum, maximum) of every number in the configuration; the README's reference lists them.
# Every number must lie in its range, which also keeps out NaN and infinity (YAML .nan, .inf)
# and integers too large to convert: a NaN lifetime would never expire, a NaN timeout fails
# every request.
RANGES: Mapping[str, tuple[Any, Any]] = {
    "webhook.timeoutSeconds": (1, 30),  # the API server's own limits
    "webhook.deadlineSeconds": (0.1, 30),  # and below timeoutSeconds
    "limits.maxManifestBytes": (1024, 64 * MIB),
    "limits.maxBlobBytes": (1024, 64 * MIB),
    "limits.maxSignatureLayers": (1, 1000),
    "limits.maxReferrers": (1, 1000),
    "limits.maxImagesPerRequest": (1, 10000),
    "limits.maxBindingContextBytes": (1024, 64 * MIB),
    "limits.connectTimeoutSeconds": (0.1, 60),
    "limits.readTimeoutSeconds": (0.1, 60),
    "cache.ttlSeconds": (0, 86400),
    "cache.negativeTtlSeconds": (0, 86400),  # and not above ttlSeconds
    "cache.tagTtlSeconds": (0, 86400),
    "cache.maxEntries": (10, 1000000),
    "policy[].threshold": (1, 1000),  # and not above the number of keys the rule lists
}


@dataclass(frozen=True)
class KeySpec:
    name: str
    path: str
    hash_algorithm: str | None = None  # None: the key type's default (see keys.py)


@dataclass(frozen=True)
class IdentitySpec:
    """A certificate identity, as cosign's --certificate-identity(-regexp) and
    --certificate-oidc-issuer(-regexp): exactly one of each pair is set. Regular expressions are
    searched (unanchored), as cosign's Go regexp.MatchString does; anchor them with ^...$."""

    name: str
    issuer: str | None = None
    issuer_regexp: str | None = None
    subject: str | None = None
    subject_regexp: str | None = None
    # Fulcio's GitHub Actions extensions, matched exactly when set.
    github_workflow_repository: str | None = None
    github_workflow_ref: str | None = None
    github_workflow_trigger: str | None = None


@dataclass(frozen=True)
class WebhookSettings:
    name: str = DEFAULT_BINDING_NAME
    mutating_name: str = DEFAULT_MUTATING_NAME
    namespace_selector: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_SELECTOR))
    timeout_seconds: int = 10
    deadline_seconds: float = 8.0
    failure_policy: str = "Fail"
    exclude_namespaces: tuple[str, ...] = ()
    signgate_namespace: str | None = None


@dataclass(frozen=True)
class RegistrySettings:
    ca_bundle: str | None = None
    auth: str | None = None
    insecure: frozenset[str] = frozenset()  # canonical (reference.canonical_insecure)
    allow_networks: tuple[str, ...] = ()  # CIDRs of internal networks that may be contacted (network.py)
    # "pod": credentials from the pod's imagePullSecrets (and its ServiceAccount's), read from
    # shell-operator snapshots (pullsecrets.py), before `auth`; "none": `auth` only.
    pull_secrets: PullSecretSource = "none"


@dataclass(frozen=True)
class Limits:
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_blob_bytes: int = 1024 * 1024
    max_signature_layers: int = 100
    max_referrers: int = 50
    max_images_per_request: int = 100
    max_binding_context_bytes: int = 8 * 1024 * 1024
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class CacheSettings:
    """See cache.py for what is cached and why."""

    directory: str | None = None  # from $SIGNGATE_CACHE_DIR only (see cache.py); None: no cache
    ttl_seconds: float = 600.0
    negative_ttl_seconds: float = 60.0
    tag_ttl_seconds: float = 30.0
    max_entries: int = 10000


@dataclass(frozen=True)
class Rule:
    """One policy rule. `index` is its position in the file, used in messages and as a tiebreak."""

    index: int
    images: str
    action: Action = "verify"
    message: str | None = None
    keys: tuple[str, ...] = ()
    threshold: int = 1
    required: tuple[str, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    check_identity: bool = False
    signature_repository: str | None = None
    mode: Mode | None = None
    deny_latest: bool | None = None
    require_digest: bool | None = None
    tlog: Tlog = "ignore"
    multi_arch: MultiArch = "exact"
    type: str = "cosign"  # a name in verifiers.VERIFIERS (config checks it)
    # The parsed settings of a verifier type whose fields do not sit on the rule (see docs/architecture.md).
    settings: Any = None
    pin_digest: bool = False  # the mutating call rewrites name:tag to name:tag@sha256:<verified digest>
    # Certificate signers (issue 16): names in Config.identities, and the trust material they chain to.
    identities: tuple[str, ...] = ()
    trusted_root: str | None = None  # a name in Config.trusted_roots (Sigstore trusted_root.json)
    certificate_authority: str | None = None  # a name in Config.certificate_authorities (PEM CA bundle)
    ignore_sct: bool = False  # cosign's --insecure-ignore-sct, for a private PKI

    @property
    def label(self) -> str:
        return f"policy[{self.index}] ({self.images})"


@dataclass(frozen=True)
class Config:
    source: str
    webhook: WebhookSettings
    keys: Mapping[str, KeySpec]
    registries: RegistrySettings
    limits: Limits
    policy: tuple[Rule, ...]
    rekor_keys: Mapping[str, KeySpec] = field(default_factory=dict)
    identities: Mapping[str, IdentitySpec] = field(default_factory=dict)
    trusted_roots: Mapping[str, str] = field(default_factory=dict)  # name -> trusted_root.json path
    certificate_authorities: Mapping[str, str] = field(default_factory=dict)  # name -> PEM bundle path
    cache: CacheSettings = field(default_factory=CacheSettings)
    mode: Mode = "enforce"
    deny_latest: bool = False
    require_digest: bool = False
    unmatched_images: str = "deny"
    pin_scope: str = "pods"  # which objects the mutating binding pins: pods, or workloads too

    @property
    def pinning(self) -> bool:
        return any(rule.pin_digest for rule in self.policy)

    def rule_mode(self, rule: Rule | None) -> str:
        return rule.mode if rule is not None and rule.mode else self.mode

    def rule_deny_latest(self, rule: Rule | None) -> bool:
        return self.deny_latest if rule is None or rule.deny_latest is None else rule.deny_latest

    def rule_require_digest(self, rule: Rule | None) -> bool:
        return self.require_digest if rule is None or rule.require_digest is None else rule.require_digest

    def excluded_namespaces(self) -> tuple[str, ...]:
        """Namespaces the webhook never sees, whatever the selector says: no deadlock on itself."""
        names = list(ALWAYS_EXCLUDED_NAMESPACES)
        if self.webhook.signgate_namespace:
            names.append(self.webhook.signgate_namespace)
        names.extend(self.webhook.exclude_namespaces)
        return tuple(dict.fromkeys(names))
