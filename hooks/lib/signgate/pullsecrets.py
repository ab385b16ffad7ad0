"""Registry credentials from the pod's own imagePullSecrets (`registries.pullSecrets: pod`).

The kubelet pulls a pod's images with the pod's pull secrets, from the pod's namespace. signgate
fetches with the same credentials, so that each tenant's private images can be verified without
a platform-wide credential that reads every tenant's repositories.

Where the secrets come from: shell-operator watches Secrets of the two pull-secret types and
ServiceAccounts (the `kubernetes` bindings of `snapshot_bindings`, limited to the namespaces the
webhook checks) and hands them to the hook as snapshots in the binding context. Their jqFilters
keep only the namespace, the name and the auth data (for a ServiceAccount, the names of its pull
secrets). The hook makes no API call.

Which credentials, in this order, as the kubelet has them:

- the pod's (or pod template's) `imagePullSecrets`; when it names none, those of its
  ServiceAccount (`serviceAccountName`, `default` when unset). This is what the ServiceAccount
  admission plugin does: it copies the ServiceAccount's secrets into a pod that names none, and
  the kubelet then reads only the pod's list. A Pod request arrives with that copy made; a
  template (Deployment, Job, ...) does not, so the ServiceAccount is read here;
- only secrets in the request's namespace: one namespace's credentials never serve another's pod;
- a secret named but absent from the snapshot is skipped, as the kubelet skips it, and named in
  the denial if the registry then refuses access.

Matching an entry to an image, as the kubelet's keyring does: the entry's key is a host with an
optional port and an optional path prefix (`https://`, and `/v1/` or `/v2/` right after the host,
are dropped); a host may hold `*` wildcards, each matching one DNS label (`*.example.com` matches
`a.example.com`, not `example.com` nor `a.b.example.com`); the port must be the same; the
repository must start with the path (a plain prefix, as in the kubelet). Hosts are compared in
their canonical form (reference.canonical_registry), like every other registry name in signgate.
Matching entries are tried most specific first (keys in reverse lexical order); several
credentials that match are each tried in turn when the registry answers 401, as the kubelet
does. When no pull-secret entry matches the registry, the mounted `registries.auth` is used; a
401 with a matching entry is not a reason to fall back to it.

Bad data (a secret that is not base64 or JSON, an entry of the wrong type, an `auth` longer than
MAX_AUTH_CHARS) denies the images that need it, naming the secret by namespace/name and never its
contents: an entry that cannot be read denies the images its key matches; a secret that cannot be
read at all is treated as absent, and named in the denial of every image whose registry then
refuses access (which registries it was for cannot be known). Images settled without a registry,
matched by a readable entry, or that need no credentials are unaffected.

Standard library only, and nothing is parsed until an image needs credentials.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .credentials import AuthFieldError, CredentialStore, Credentials, parse_auth_field
from .encoding import b64_strict
from .errors import InvalidReference, RegistryAuthError
from .podspec import POD_SPEC_PATHS, pod_spec_kind
from .reference import DOCKER_HUB, DOCKER_HUB_API_HOST, canonical_registry

# Binding names (the keys of `snapshots` in the binding context) and what each one watches.
DOCKERCONFIGJSON_BINDING = "signgate-pull-secrets-dockerconfigjson"
DOCKERCFG_BINDING = "signgate-pull-secrets-dockercfg"
SERVICE_ACCOUNT_BINDING = "signgate-pull-secret-serviceaccounts"
SECRET_TYPES = {
    DOCKERCONFIGJSON_BINDING: ("kubernetes.io/dockerconfigjson", ".dockerconfigjson"),
    DOCKERCFG_BINDING: ("kubernetes.io/dockercfg", ".dockercfg"),
}
# A Secret holds at most 1 MiB; anything larger is not one the API server would have stored.
MAX_SECRET_BYTES = 1024 * 1024
# An `auth` (base64 of user:password) or a username plus password longer than this is refused:
# registry tokens (ECR, GCR, ACR) are a few kilobytes, and an HTTP header of this size is already
# more than most servers accept.
MAX_AUTH_CHARS = 16 * 1024
# Pull secrets read per pod: more than any pod needs, few enough to bound the work.
MAX_SECRETS_PER_POD = 64
MAX_SHOWN = 120
_DOCKER_HUB_KEYS = ("index.docker.io", "docker.io", "registry-1.docker.io")


def snapshot_bindings(namespace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `kubernetes` bindings that feed the snapshots; `namespace` is the webhook's selector.

    Field selectors can only AND, so each Secret type has its own binding. None of them runs
    the hook (`executeHookOnEvent: []`, no synchronization run): they exist for their snapshots.
    `keepFullObjectsInMemory: false` keeps only the filtered data in shell-operator's memory and
    out of the binding context.
    """
    common = {
        "executeHookOnEvent": [],
        "executeHookOnSynchronization": False,
        "keepFullObjectsInMemory": False,
        "namespace": json.loads(json.dumps(namespace)),
    }
    bindings = []
    for name, (secret_type, key) in SECRET_TYPES.items():
        bindings.append(
            {
                "name": name,
                "apiVersion": "v1",
                "kind": "Secret",
                "fieldSelector": {"matchExpressions": [{"field": "type", "operator": "=", "value": secret_type}]},
                "jqFilter": f'{{namespace: .metadata.namespace, name: .metadata.name, data: .data["{key}"]}}',
                **common,
            }
        )
    bindings.append(
        {
            "name": SERVICE_ACCOUNT_BINDING,
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "jqFilter": "{namespace: .metadata.namespace, name: .metadata.name, imagePullSecrets: [.imagePullSecrets[]?.name]}",
            **common,
        }
    )
    return bindings


class PullSecretError(RegistryAuthError):
    """A pull secret the image needs cannot be read. Names the secret, never its contents."""

    reason = "pull-secret-invalid"


@dataclass(frozen=True)
class _Entry:
    """One credential of one pull secret, with the key it is filed under."""

    sort_key: str  # host[:port][/path], canonical: the kubelet's index key
    host: str  # canonical host, or a pattern with `*` labels
    port: str | None
    path: str  # "" or "/prefix"
    credentials: Credentials = field(repr=False)
    secret: str  # namespace/name

    def matches(self, registry: str, repository: str) -> bool:
        return _key_matches(self.host, self.port, self.path, registry, repository)


@dataclass(frozen=True)
class _Broken:
    secret: str
    problem: str
    # The key whose entry is unreadable, parsed; None when the whole secret is unreadable.
    key: tuple[str, str | None, str] | None = None


class PodCredentials:
    """The credentials of one pod, with the mounted store as fallback.

    Offers what the registry client asks of a CredentialStore: `candidates(host, repository)`
    (every credential to try, in order) and `for_host(host)`.
    """

    def __init__(
        self,
        namespace: str,
        entries: list[_Entry],
        broken: list[_Broken],
        missing: list[str],
        fallback: CredentialStore | None = None,
    ) -> None:
        self.namespace = namespace
        # Reverse lexical order of the keys (the kubelet's): more specific keys first; entries
        # under the same key keep the order of the secrets that hold them.
        order = {key: i for i, key in enumerate(sorted({e.sort_key for e in entries}, reverse=True))}
        self.entries = sorted(entries, key=lambda e: order[e.sort_key])
        self.broken = broken
        self.missing = missing
        self.fallback = fallback or CredentialStore()

    def with_fallback(self, fallback: CredentialStore) -> "PodCredentials":
        return PodCredentials(self.namespace, list(self.entries), list(self.broken), list(self.missing), fallback)

    @property
    def used_secrets(self) -> list[str]:
        return list(dict.fromkeys(e.secret for e in self.entries))

    def candidates(self, host: str, repository: str) -> tuple[Credentials, ...]:
        registry = DOCKER_HUB if host == DOCKER_HUB_API_HOST else host
        for broken in self.broken:
            if broken.key is not None and _key_matches(*broken.key, registry, repository):
                raise PullSecretError(f"pull secret {broken.secret}: {broken.problem}")
        found: list[Credentials] = []
        for entry in self.entries:
            if entry.matches(registry, repository) and entry.credentials not in found:
                found.append(entry.credentials)
        if found:
            return tuple(found)
        # A secret that cannot be read at all is not known to cover this registry: the image goes
        # on as if it were absent, and if the registry then refuses access, note() names it.
        return self.fallback.candidates(host, repository)

    def for_host(self, host: str) -> Credentials | None:
        found = self.candidates(host, "")
        return found[0] if found else None

    def note(self) -> str:
        """What a refused-access message should add: the named secrets that were not found, and
        those that could not be read at all (which registries they were for is unknown)."""
        notes = []
        if self.missing:
            names = ", ".join(self.missing[:5]) + (", ..." if len(self.missing) > 5 else "")
            notes.append(
                f"pull secret(s) {names} named by the pod were not found: not in the namespace, not of type "
                "kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg, or not yet seen by signgate"
            )
        notes.extend(f"pull secret {b.secret}: {b.problem}" for b in self.broken if b.key is None)
        return f" ({'; '.join(notes[:5])})" if notes else ""

    def identity(self) -> str:
        """Who asked, for the verdict cache's negative entries: the namespace and a one-way
        digest of every credential the pod may use (never the credentials themselves)."""
        material = [self.namespace] + sorted(
            f"{e.sort_key}\0{e.credentials.stable_fingerprint}" for e in self.entries
        ) + sorted(f"broken\0{b.secret}\0{b.problem}" for b in self.broken)
        return hashlib.sha256("\0\0".join(material).encode()).hexdigest()


def pod_credentials(context: Mapping[str, Any], request: Mapping[str, Any], insecure: Any = frozenset()) -> PodCredentials:
    """The pull-secret credentials for the pod of an admission request (see the module docstring).

    `context` is the admission binding context, with `snapshots`. Never raises: bad data becomes
    entries of `broken`, which deny only the images that need them.
    """
    namespace = request.get("namespace") if isinstance(request.get("namespace"), str) else ""
    snapshots = context.get("snapshots") if isinstance(context.get("snapshots"), dict) else {}
    spec = _pod_spec(request)
    names = _secret_names(spec.get("imagePullSecrets"))
    if not names and namespace:
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        if isinstance(account, str):
            for item in _filter_results(snapshots.get(SERVICE_ACCOUNT_BINDING)):
                if item.get("namespace") == namespace and item.get("name") == account:
                    names = _secret_names([{"name": n} for n in item.get("imagePullSecrets") or [] if isinstance(n, str)])
                    break
    names = names[:MAX_SECRETS_PER_POD]
    secrets: dict[str, tuple[str, Any]] = {}
    for binding in SECRET_TYPES:
        for item in _filter_results(snapshots.get(binding)):
            # Only this namespace's secrets: the snapshot holds every selected namespace's.
            if item.get("namespace") == namespace and isinstance(item.get("name"), str):
                secrets.setdefault(item["name"], (binding, item.get("data")))
    entries: list[_Entry] = []
    broken: list[_Broken] = []
    missing: list[str] = []
    for name in names:
        label = _shown(f"{namespace}/{name}")
        if name not in secrets:
            missing.append(label)
            continue
        binding, data = secrets[name]
        found, problems = _parse_secret(binding, data, label, insecure)
        entries.extend(found)
        broken.extend(problems)
    return PodCredentials(namespace, entries, broken, missing)


def _pod_spec(request: Mapping[str, Any]) -> dict[str, Any]:
    kind = pod_spec_kind(dict(request))
    spec: Any = request.get("object")
    if kind is None:
        return {}
    for part in filter(None, POD_SPEC_PATHS[kind].split(".")):
        spec = spec.get(part) if isinstance(spec, dict) else None
    return spec if isinstance(spec, dict) else {}


def _secret_names(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    names = [item.get("name") for item in value if isinstance(item, dict)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


def _filter_results(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        return []
    results = [item.get("filterResult") for item in items if isinstance(item, dict)]
    return [r for r in results if isinstance(r, dict)]


def _parse_secret(binding: str, data: Any, label: str, insecure: Any) -> tuple[list[_Entry], list[_Broken]]:
    secret_type, key = SECRET_TYPES[binding]
    if data is None:
        return [], [_Broken(label, f"has no {key} entry (a {secret_type} Secret needs one)")]
    if not isinstance(data, str) or len(data) > MAX_SECRET_BYTES * 4 // 3 + 4:
        return [], [_Broken(label, f"its {key} is not a base64 string of at most 1 MiB")]
    raw = b64_strict(data)
    if raw is None:
        return [], [_Broken(label, f"its {key} is not valid base64")]
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return [], [_Broken(label, f"its {key} is not valid JSON")]
    if binding == DOCKERCONFIGJSON_BINDING:
        auths = document.get("auths") if isinstance(document, dict) else None
        if not isinstance(auths, dict):
            return [], [_Broken(label, f"its {key} has no 'auths' object")]
    else:
        auths = document  # the legacy format: the keys are at the top level
        if not isinstance(auths, dict):
            return [], [_Broken(label, f"its {key} is not a JSON object")]
    entries: list[_Entry] = []
    broken: list[_Broken] = []
    for raw_key, entry in auths.items():
        parsed = _parse_key(str(raw_key), insecure)
        if parsed is None:
            continue  # a key with no canonical registry matches no image (the kubelet skips it too)
        host, port, path = parsed
        where = f"entry {_shown(str(raw_key))!r}"
        credentials, problem = _entry_credentials(entry)
        if problem is not None:
            broken.append(_Broken(label, f"{where} {problem}", parsed))
            continue
        assert credentials is not None
        sort_key = host + (f":{port}" if port else "") + path
        entries.append(_Entry(sort_key, host, port, path, credentials, label))
    return entries, broken


def _entry_credentials(entry: Any) -> tuple[Credentials | None, str | None]:
    if not isinstance(entry, dict):
        return None, "is not an object"
    auth = entry.get("auth")
    if auth is not None and auth != "":
        if not isinstance(auth, str):
            return None, "has an 'auth' that is not a string"
        if len(auth) > MAX_AUTH_CHARS:
            return None, f"has an 'auth' longer than {MAX_AUTH_CHARS} characters"
        try:
            return parse_auth_field(auth), None
        except AuthFieldError as exc:
            return None, f"has an 'auth' that {exc}"
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str):
        if len(username) + len(password) > MAX_AUTH_CHARS:
            return None, f"has a username and password longer than {MAX_AUTH_CHARS} characters"
        return Credentials(username, password), None
    return None, "has neither 'auth' nor a username and password (strings)"


def _parse_key(key: str, insecure: Any) -> tuple[str, str | None, str] | None:
    """(host, port, path) of a docker config key, the host canonical (or a `*` pattern)."""
    text = key.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    netloc, slash, path = text.partition("/")
    path = "/" + path if slash else ""
    if path.startswith(("/v1/", "/v2/")):
        path = path[3:]
    if path == "/":
        path = ""
    if netloc in _DOCKER_HUB_KEYS:
        return DOCKER_HUB, None, path
    if "*" in netloc:
        host, _, port = netloc.lower().partition(":")
        labels = host.split(".")
        if not host or any(not label for label in labels) or not all(ch.isalnum() or ch in "-*" for label in labels for ch in label):
            return None
        if port in ("", "443"):
            port = ""
        elif not port.isdigit():
            return None
        return host, port or None, path
    try:
        registry = canonical_registry(netloc, insecure)
    except InvalidReference:
        return None
    host, _, port = registry.partition(":") if not registry.startswith("[") else (registry, "", "")
    if registry.startswith("[") and "]:" in registry:
        host, port = registry.rsplit(":", 1)
    return host, port or None, path


def _key_matches(host: str, port: str | None, path: str, registry: str, repository: str) -> bool:
    if registry.startswith("[") and "]:" in registry:
        target_host, target_port = registry.rsplit(":", 1)
    elif registry.startswith("["):
        target_host, target_port = registry, ""
    else:
        target_host, _, target_port = registry.partition(":")
    if (port or "") != target_port:
        return False
    if "*" in host:
        patterns, labels = host.split("."), target_host.split(".")
        if len(patterns) != len(labels) or not all(fnmatch.fnmatchcase(l, p) for p, l in zip(patterns, labels)):
            return False
    elif host != target_host:
        return False
    # A plain string prefix, as the kubelet compares paths.
    return ("/" + repository).startswith(path) if path else True


def _shown(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"
