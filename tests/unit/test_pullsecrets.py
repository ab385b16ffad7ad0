"""Pull-secret credentials from binding-context snapshots (pullsecrets.py), without a registry.

What the kubelet would use for a pod, read from shell-operator's snapshots: which secrets, which
entries match which image, in which order, what bad data denies, and that one namespace's
credentials never serve another's pod. The registry-facing behaviour runs through the hook's
contract in tests/integration/test_pullsecrets_hook.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from signgate.cache import VerdictCache
from signgate.config import parse_config
from signgate.credentials import CredentialStore, Credentials
from signgate.deadline import Deadline
from signgate.decision import decide
from signgate.hook import binding_config
from signgate.pullsecrets import (
    DOCKERCFG_BINDING,
    DOCKERCONFIGJSON_BINDING,
    MAX_AUTH_CHARS,
    SERVICE_ACCOUNT_BINDING,
    PodCredentials,
    PullSecretError,
    pod_credentials,
)
from signgate.settings import CacheSettings
from signgate.verdict import ImageVerdict

PASSWORD = "correct-horse-battery-staple"


def auth(user: str, password: str = PASSWORD) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def secret(namespace: str, name: str, auths: Any, *, legacy: bool = False, raw: Any = None) -> tuple[str, dict[str, Any]]:
    """One snapshot item as the jqFilter of snapshot_bindings leaves it."""
    if raw is None:
        document = auths if legacy else {"auths": auths}
        raw = base64.b64encode(json.dumps(document).encode()).decode()
    binding = DOCKERCFG_BINDING if legacy else DOCKERCONFIGJSON_BINDING
    return binding, {"filterResult": {"namespace": namespace, "name": name, "data": raw}}


def account(namespace: str, name: str, secrets: list[str]) -> tuple[str, dict[str, Any]]:
    return SERVICE_ACCOUNT_BINDING, {"filterResult": {"namespace": namespace, "name": name, "imagePullSecrets": secrets}}


def context(*items: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    snapshots: dict[str, list[Any]] = {DOCKERCONFIGJSON_BINDING: [], DOCKERCFG_BINDING: [], SERVICE_ACCOUNT_BINDING: []}
    for binding, item in items:
        snapshots[binding].append(item)
    return {"binding": "image-signatures.signgate.dev", "type": "Validating", "snapshots": snapshots}


def pod_request(namespace: str = "team", pull: list[str] | None = None, account_name: str | None = None,
                kind: str = "Pod", images: tuple[str, ...] = ("registry.example.com/team/app:v1",)) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}
    if pull is not None:
        spec["imagePullSecrets"] = [{"name": name} for name in pull]
    if account_name is not None:
        spec["serviceAccountName"] = account_name
    obj: dict[str, Any] = {"metadata": {"name": "app", "namespace": namespace}}
    if kind == "Pod":
        obj["spec"] = spec
    else:
        obj["spec"] = {"template": {"spec": spec}}
    return {"uid": "u", "kind": {"kind": kind}, "namespace": namespace, "operation": "CREATE", "object": obj}


def users(found: tuple[Credentials, ...]) -> list[str]:
    return [c.username for c in found]


# ---- which secrets ------------------------------------------------------------------------------


def test_pod_secrets_in_the_request_namespace_only() -> None:
    ctx = context(
        secret("team", "regcred", {"registry.example.com": auth("team-user")}),
        secret("other", "regcred", {"registry.example.com": auth("other-user")}),
    )
    mine = pod_credentials(ctx, pod_request("team", ["regcred"]))
    assert users(mine.candidates("registry.example.com", "team/app")) == ["team-user"]
    theirs = pod_credentials(ctx, pod_request("other", ["regcred"]))
    assert users(theirs.candidates("registry.example.com", "team/app")) == ["other-user"]
    # A namespace without the secret gets nobody's credentials, not a neighbour's.
    nobody = pod_credentials(ctx, pod_request("third", ["regcred"]))
    assert nobody.candidates("registry.example.com", "team/app") == ()
    assert "third/regcred" in nobody.note()


def test_service_account_secrets_when_the_pod_names_none() -> None:
    ctx = context(
        secret("team", "builder-cred", {"registry.example.com": auth("builder")}),
        secret("team", "default-cred", {"registry.example.com": auth("default")}),
        secret("team", "pod-cred", {"registry.example.com": auth("pod")}),
        account("team", "builder", ["builder-cred"]),
        account("team", "default", ["default-cred"]),
        account("other", "builder", ["pod-cred"]),
    )
    by_account = pod_credentials(ctx, pod_request(account_name="builder", kind="Deployment"))
    assert users(by_account.candidates("registry.example.com", "x")) == ["builder"]
    by_default = pod_credentials(ctx, pod_request(kind="Deployment"))
    assert users(by_default.candidates("registry.example.com", "x")) == ["default"]
    # The pod's own list wins, as the ServiceAccount admission plugin copies only into an empty one.
    own = pod_credentials(ctx, pod_request(pull=["pod-cred"], account_name="builder"))
    assert users(own.candidates("registry.example.com", "x")) == ["pod"]


def test_secret_missing_from_the_snapshot_is_skipped_and_named() -> None:
    ctx = context(secret("team", "present", {"registry.example.com": auth("present")}))
    creds = pod_credentials(ctx, pod_request(pull=["gone", "present"]))
    assert users(creds.candidates("registry.example.com", "x")) == ["present"]
    assert "team/gone" in creds.note() and "team/present" not in creds.note()
    # No snapshots at all (the bindings are missing): every named secret is missing, nothing raises.
    bare = pod_credentials({"type": "Validating"}, pod_request(pull=["gone"]))
    assert bare.candidates("registry.example.com", "x") == () and "team/gone" in bare.note()


def test_legacy_dockercfg_is_read() -> None:
    ctx = context(secret("team", "old", {"https://registry.example.com": auth("legacy")}, legacy=True))
    creds = pod_credentials(ctx, pod_request(pull=["old"]))
    assert users(creds.candidates("registry.example.com", "x")) == ["legacy"]


# ---- matching, as the kubelet matches ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "host", "repository", "matches"),
    [
        ("registry.example.com", "registry.example.com", "a/b", True),
        ("https://registry.example.com/v1/", "registry.example.com", "a/b", True),
        ("Registry.Example.com:443", "registry.example.com", "a/b", True),
        ("registry.example.com", "registry.example.com:5000", "a/b", False),
        ("registry.example.com:5000", "registry.example.com:5000", "a/b", True),
        ("registry.example.com:5000", "registry.example.com", "a/b", False),
        ("registry.example.com/team", "registry.example.com", "team/app", True),
        ("registry.example.com/team", "registry.example.com", "other/app", False),
        ("registry.example.com/v2/team", "registry.example.com", "team/app", True),
        ("*.example.com", "registry.example.com", "a", True),
        ("*.example.com", "example.com", "a", False),
        ("*.example.com", "a.registry.example.com", "a", False),
        ("*.example.com:5000", "registry.example.com:5000", "a", True),
        ("*.example.com", "registry.example.com:5000", "a", False),
        ("localhost:5000", "127.0.0.1:5000", "a", True),
        ("https://index.docker.io/v1/", "registry-1.docker.io", "library/nginx", True),
        ("docker.io", "registry-1.docker.io", "library/nginx", True),
        ("registry.example.com", "registry.example.com.evil.io", "a", False),
        ("evil.io", "registry.example.com", "a", False),
        ("127.1", "127.0.0.1", "a", False),  # no canonical form: matches nothing
    ],
)
def test_key_matching(key: str, host: str, repository: str, matches: bool) -> None:
    ctx = context(secret("team", "s", {key: auth("u")}))
    found = pod_credentials(ctx, pod_request(pull=["s"])).candidates(host, repository)
    assert users(found) == (["u"] if matches else [])


def test_most_specific_first_and_every_match_in_order() -> None:
    ctx = context(
        secret("team", "first", {"registry.example.com": auth("host-1"), "registry.example.com/team": auth("path")}),
        secret("team", "second", {"registry.example.com": auth("host-2"), "*.example.com": auth("wild")}),
    )
    creds = pod_credentials(ctx, pod_request(pull=["first", "second"]))
    assert users(creds.candidates("registry.example.com", "team/app")) == ["path", "host-1", "host-2", "wild"]
    assert users(creds.candidates("registry.example.com", "other/app")) == ["host-1", "host-2", "wild"]
    assert users(creds.candidates("mirror.example.com", "x")) == ["wild"]


def test_mounted_credentials_only_when_no_entry_matches() -> None:
    mounted = CredentialStore({"registry.example.com": Credentials("mounted", "m"), "other.example.com": Credentials("mounted-2", "m")})
    ctx = context(secret("team", "s", {"registry.example.com": auth("pod")}))
    creds = pod_credentials(ctx, pod_request(pull=["s"])).with_fallback(mounted)
    assert users(creds.candidates("registry.example.com", "x")) == ["pod"]  # never both
    assert users(creds.candidates("other.example.com", "x")) == ["mounted-2"]
    assert creds.candidates("third.example.com", "x") == ()


# ---- bad data -----------------------------------------------------------------------------------

BAD_SECRETS = [
    pytest.param({"raw": base64.b64encode(b"{not json").decode()}, "is not valid JSON", id="not-json"),
    pytest.param({"raw": "%%%"}, "is not valid base64", id="not-base64"),
    pytest.param({"raw": 7}, "is not a base64 string", id="data-not-a-string"),
    pytest.param({"raw": base64.b64encode(b"[1, 2]").decode()}, "has no 'auths' object", id="not-an-object"),
    pytest.param({"raw": base64.b64encode(b'{"auths": []}').decode()}, "has no 'auths' object", id="auths-a-list"),
]


@pytest.mark.parametrize(("bad", "problem"), BAD_SECRETS)
def test_unreadable_secret_is_named_when_access_is_refused(bad: dict[str, Any], problem: str) -> None:
    ctx = context(
        secret("team", "broken", None, raw=bad["raw"]),
        secret("team", "good", {"good.example.com": auth("good")}),
    )
    mounted = CredentialStore({"mounted.example.com": Credentials("mounted", "m")})
    creds = pod_credentials(ctx, pod_request(pull=["broken", "good"])).with_fallback(mounted)
    # Which registries it covered is unknown: images go on without it (an open registry needs
    # nothing), and the refusal of any image then names the secret and why.
    assert creds.candidates("registry.example.com", "x") == ()
    assert users(creds.candidates("mounted.example.com", "x")) == ["mounted"]
    assert users(creds.candidates("good.example.com", "x")) == ["good"]
    assert "pull secret team/broken: " in creds.note() and problem in creds.note()


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        pytest.param("a string", "is not an object", id="entry-not-an-object"),
        pytest.param({"auth": 12}, "'auth' that is not a string", id="auth-not-a-string"),
        pytest.param({"auth": "bm9jb2xvbg=="}, "does not decode to username:password", id="auth-without-colon"),
        pytest.param({"auth": "!!!"}, "not valid base64", id="auth-not-base64"),
        pytest.param({"auth": "QUFB" * (MAX_AUTH_CHARS // 4 + 1)}, f"longer than {MAX_AUTH_CHARS}", id="enormous-auth"),
        pytest.param({"username": "u", "password": "p" * (MAX_AUTH_CHARS + 1)}, f"longer than {MAX_AUTH_CHARS}", id="enormous-password"),
        pytest.param({"username": "u"}, "neither 'auth' nor a username and password", id="no-password"),
    ],
)
def test_unreadable_entry_denies_only_the_images_its_key_matches(entry: Any, problem: str) -> None:
    ctx = context(secret("team", "mixed", {"registry.example.com": entry, "good.example.com": auth("good")}))
    creds = pod_credentials(ctx, pod_request(pull=["mixed"]))
    with pytest.raises(PullSecretError) as caught:
        creds.candidates("registry.example.com", "x")
    message = str(caught.value)
    assert message.startswith("pull secret team/mixed: entry 'registry.example.com' ") and problem in message
    assert "QUFB" not in message and "ppp" not in message  # never the contents
    assert users(creds.candidates("good.example.com", "x")) == ["good"]


# ---- identities, never secrets ------------------------------------------------------------------


def test_identity_differs_by_namespace_and_credentials_and_holds_no_secret() -> None:
    a = pod_credentials(context(secret("a", "s", {"r.io": auth("u")})), pod_request("a", ["s"]))
    a_again = pod_credentials(context(secret("a", "s", {"r.io": auth("u")})), pod_request("a", ["s"]))
    b = pod_credentials(context(secret("b", "s", {"r.io": auth("u")})), pod_request("b", ["s"]))
    rotated = pod_credentials(context(secret("a", "s", {"r.io": auth("u", "new-password")})), pod_request("a", ["s"]))
    assert a.identity() == a_again.identity()
    assert len({a.identity(), b.identity(), rotated.identity()}) == 3
    [credentials] = a.candidates("r.io", "x")
    for text in (a.identity(), credentials.fingerprint, credentials.stable_fingerprint, repr(credentials), repr(a.entries)):
        assert PASSWORD not in text and base64.b64encode(f"u:{PASSWORD}".encode()).decode() not in text


# ---- --config ------------------------------------------------------------------------------------


def config_text(**registries: Any) -> bytes:
    return json.dumps({
        "registries": registries,
        "webhook": {"namespaceSelector": {"matchLabels": {"tenant": "yes"}}},
        "policy": [{"images": "**", "action": "allow", "pinDigest": False}],
    }).encode()


def test_config_without_pull_secrets_has_no_kubernetes_bindings() -> None:
    output = binding_config(parse_config(config_text(), "c.json", {}))
    assert "kubernetes" not in output
    assert "includeSnapshotsFrom" not in output["kubernetesValidating"][0]


def test_config_with_pull_secrets_feeds_snapshots_only() -> None:
    config = parse_config(config_text(pullSecrets="pod"), "c.json", {"SIGNGATE_NAMESPACE": "signgate"})
    output = binding_config(config)
    bindings = {b["name"]: b for b in output["kubernetes"]}
    assert set(bindings) == {DOCKERCONFIGJSON_BINDING, DOCKERCFG_BINDING, SERVICE_ACCOUNT_BINDING}
    validating = output["kubernetesValidating"][0]
    assert validating["includeSnapshotsFrom"] == list(bindings)
    for binding in bindings.values():
        # Never run for their own events; filtered objects only; the webhook's namespaces only.
        assert binding["executeHookOnEvent"] == [] and binding["executeHookOnSynchronization"] is False
        assert binding["keepFullObjectsInMemory"] is False
        assert binding["namespace"] == {"labelSelector": validating["namespace"]["labelSelector"]}
        assert binding["namespace"]["labelSelector"]["matchLabels"] == {"tenant": "yes"}
        assert "jqFilter" in binding
    assert bindings[DOCKERCONFIGJSON_BINDING]["fieldSelector"]["matchExpressions"] == [
        {"field": "type", "operator": "=", "value": "kubernetes.io/dockerconfigjson"}
    ]
    assert bindings[DOCKERCFG_BINDING]["fieldSelector"]["matchExpressions"][0]["value"] == "kubernetes.io/dockercfg"
    assert bindings[SERVICE_ACCOUNT_BINDING]["kind"] == "ServiceAccount"
    excluded = validating["namespace"]["labelSelector"]["matchExpressions"][-1]
    assert excluded["operator"] == "NotIn" and "signgate" in excluded["values"] and "kube-system" in excluded["values"]


# ---- the verdict cache decision ------------------------------------------------------------------


class CountingVerifier:
    def __init__(self, verdict: ImageVerdict) -> None:
        self.verdict, self.calls = verdict, 0

    def __call__(self, rule: Any, ref: Any) -> ImageVerdict:
        self.calls += 1
        return self.verdict


DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example.com/team/app@{DIGEST}"


def _verify_config(tmp_path: Any, **rule: Any) -> Any:
    key = tmp_path / "k.pub"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    key.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    text = {"keys": {"default": str(key)}, "registries": {"pullSecrets": "pod"}, "policy": [{"images": "**", **rule}]}
    return parse_config(json.dumps(text).encode(), "c.json", {})


def _decide(config: Any, cache: VerdictCache, namespace: str, verifier: CountingVerifier, password: str = PASSWORD) -> Any:
    ctx = context(secret(namespace, "s", {"registry.example.com": auth("u", password)}))
    request = pod_request(namespace, ["s"], images=(IMAGE,))
    return decide(request, config, Deadline(5), cache=cache, verifier=verifier,
                  pull_secrets=pod_credentials(ctx, request))


def test_a_pass_serves_every_namespace(tmp_path: Any) -> None:
    config = _verify_config(tmp_path)
    cache = VerdictCache(CacheSettings(directory=str(tmp_path / "cache")), config)
    verifier = CountingVerifier(ImageVerdict(True, "verified", "", digest=DIGEST, verified_keys=("default",)))
    assert _decide(config, cache, "a", verifier).allowed and verifier.calls == 1
    # The documented decision: a verified signature is about the image, whoever asked.
    assert _decide(config, cache, "b", verifier).allowed and verifier.calls == 1


def test_a_failure_serves_only_the_same_namespace_and_credentials(tmp_path: Any) -> None:
    config = _verify_config(tmp_path)
    cache = VerdictCache(CacheSettings(directory=str(tmp_path / "cache")), config)
    verifier = CountingVerifier(ImageVerdict(False, "no-signature", "no signature found", digest=DIGEST))
    assert not _decide(config, cache, "a", verifier).allowed and verifier.calls == 1
    assert not _decide(config, cache, "a", verifier).allowed and verifier.calls == 1  # cached for a
    assert not _decide(config, cache, "b", verifier).allowed and verifier.calls == 2  # not for b
    assert not _decide(config, cache, "a", verifier, "rotated").allowed and verifier.calls == 3  # nor new credentials
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(errors="replace")


def test_an_unauthorized_answer_is_never_cached(tmp_path: Any) -> None:
    config = _verify_config(tmp_path)
    cache = VerdictCache(CacheSettings(directory=str(tmp_path / "cache")), config)
    verifier = CountingVerifier(ImageVerdict(False, "registry-auth", "the registry rejected the credentials (401)", digest=DIGEST))
    _decide(config, cache, "a", verifier)
    _decide(config, cache, "a", verifier)
    assert verifier.calls == 2


def test_config_with_pull_secrets_and_pinning_feeds_both_admission_bindings(tmp_path: Any) -> None:
    output = binding_config(_verify_config(tmp_path, pinDigest=True))
    names = [b["name"] for b in output["kubernetes"]]
    assert output["kubernetesValidating"][0]["includeSnapshotsFrom"] == names
    assert output["kubernetesMutating"][0]["includeSnapshotsFrom"] == names


def test_pull_secret_credentials_class_is_what_the_client_asks_for() -> None:
    # The registry client asks for `candidates` and `for_host` (notary's server too).
    creds = PodCredentials("team", [], [], [], CredentialStore({"r.io": Credentials("m", "p")}))
    assert creds.for_host("r.io") == Credentials("m", "p")
    assert users(creds.candidates("r.io", "x")) == ["m"]


def test_a_token_obtained_with_one_credential_never_serves_another() -> None:
    from signgate.registry import RegistryClient
    from signgate.settings import Limits, RegistrySettings

    ctx = context(
        secret("team", "first", {"registry.example.com": auth("first")}),
        secret("team", "second", {"registry.example.com": auth("second")}),
    )
    creds = pod_credentials(ctx, pod_request(pull=["first", "second"]))
    client = RegistryClient(RegistrySettings(), Limits(), Deadline(5), credentials=creds)
    scope = "repository:team/app:pull"
    first, second = creds.candidates("registry.example.com", "team/app")
    client._tokens[("registry.example.com", scope, first.fingerprint)] = "token-of-first"
    assert client._authorization("registry.example.com", scope) == "Bearer token-of-first"
    # After a 401 the client moves to the next credential: the first one's token is not sent.
    assert client._next_credentials("registry.example.com", scope)
    assert client._authorization("registry.example.com", scope) is None
    # Another repository's scope never borrows it either.
    assert client._authorization("registry.example.com", "repository:team/other:pull") is None
    assert first.fingerprint != second.fingerprint and PASSWORD not in first.fingerprint
    client.close()


@pytest.mark.parametrize("value", ["namespace", "", True, ["pod"]])
def test_config_refuses_other_pull_secret_sources(value: Any) -> None:
    from signgate.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(pullSecrets=value), "c.json", {})
    assert "registries.pullSecrets" in str(caught.value)


def test_config_default_is_none() -> None:
    assert parse_config(config_text(), "c.json", {}).registries.pull_secrets == "none"
