"""Specification of what signgate reads from an admission request and from registry credentials.

signgate.admission finds every image of every object that carries a pod spec, with a JSON Pointer
to it; anything of the wrong shape is an error, never silently skipped (a skipped image would be
admitted unchecked). signgate.credentials binds each credential to one registry host.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from signgate.admission import CONTAINER_LISTS, POD_SPEC_PATHS, container_images, pod_spec_kind
from signgate.credentials import Credentials, CredentialStore, load_credentials, parse_docker_config
from signgate.errors import ConfigError, InputError

# Where each kind keeps its pod spec, written out independently of the library's table.
POD_SPEC_LOCATION: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "EphemeralContainers": (),  # clusters before 1.22: the lists at the top level of the object
}
KINDS = sorted(POD_SPEC_LOCATION)


def wrap(kind: str, pod_spec: Any) -> dict[str, Any]:
    """An object of `kind` whose pod spec is `pod_spec`."""
    obj: Any = pod_spec
    for field in reversed(POD_SPEC_LOCATION[kind]):
        obj = {field: obj}
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}, **obj}


def resolve(obj: Any, pointer: str) -> Any:
    """RFC 6901 JSON Pointer resolution, to check the pointers the library reports."""
    for token in pointer.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        obj = obj[int(token)] if isinstance(obj, list) else obj[token]
    return obj


FULL_POD_SPEC = {
    "containers": [
        {"name": "app", "image": "registry.example.com/app:1.0"},
        {"name": "sidecar", "image": "registry.example.com/proxy:2.0"},
    ],
    "initContainers": [{"name": "init", "image": "registry.example.com/init:1"}],
    "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
    "volumes": [],
}


def test_every_kind_in_the_table_has_a_specified_pod_spec_location():
    assert set(POD_SPEC_PATHS) == set(POD_SPEC_LOCATION)
    assert CONTAINER_LISTS == ("initContainers", "containers", "ephemeralContainers")


@pytest.mark.parametrize("kind", KINDS)
def test_container_images_finds_every_container_list_in_order(kind):
    obj = wrap(kind, FULL_POD_SPEC)
    base = "".join(f"/{field}" for field in POD_SPEC_LOCATION[kind])
    found = container_images(kind, obj)
    assert [(c.list_name, c.container, c.image, c.pointer) for c in found] == [
        ("initContainers", "init", "registry.example.com/init:1", f"{base}/initContainers/0/image"),
        ("containers", "app", "registry.example.com/app:1.0", f"{base}/containers/0/image"),
        ("containers", "sidecar", "registry.example.com/proxy:2.0", f"{base}/containers/1/image"),
        ("ephemeralContainers", "debug", "busybox", f"{base}/ephemeralContainers/0/image"),
    ]
    for container in found:
        assert resolve(obj, container.pointer) == container.image


@pytest.mark.parametrize("kind", KINDS)
def test_objects_without_containers_have_no_images(kind):
    assert container_images(kind, wrap(kind, {"volumes": []})) == []
    assert container_images(kind, wrap(kind, {"containers": None, "initContainers": []})) == []


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"kind": "Deployment"}, id="no-spec"),
        pytest.param({"spec": None}, id="null-spec"),
        pytest.param({"spec": {"replicas": 1}}, id="no-template"),
        pytest.param({"spec": {"template": None}}, id="null-template"),
    ],
)
def test_missing_pod_spec_has_no_images(obj):
    assert container_images("Deployment", obj) == []


def test_container_without_image_or_name_is_still_reported():
    found = container_images("Pod", {"spec": {"containers": [{"name": "a"}, {"image": "nginx", "name": 5}]}})
    assert [(c.container, c.image) for c in found] == [("a", None), ("", "nginx")]


@pytest.mark.parametrize(
    "container, label",
    [
        pytest.param({"list_name": "containers", "name": "app", "index": 0}, 'container "app"', id="named-container"),
        pytest.param({"list_name": "initContainers", "name": "init", "index": 0}, 'init container "init"',
                     id="named-init-container"),
        pytest.param({"list_name": "ephemeralContainers", "name": "dbg", "index": 0}, 'ephemeral container "dbg"',
                     id="named-ephemeral-container"),
        pytest.param({"list_name": "containers", "name": None, "index": 1}, "container #1",
                     id="unnamed-container-by-position"),
    ],
)
def test_container_label_names_the_container_for_messages(container, label):
    entries = [{"image": "a"}] * container["index"] + [
        {"image": "b", **({"name": container["name"]} if container["name"] else {})}
    ]
    found = container_images("Pod", {"spec": {container["list_name"]: entries}})
    assert found[-1].label == label


MALFORMED = [
    pytest.param("Pod", [], "the Pod object is not a JSON object", id="object-is-a-list"),
    pytest.param("Pod", "nginx", "the Pod object is not a JSON object", id="object-is-a-string"),
    pytest.param("Pod", {"spec": "x"}, "/spec: is not an object", id="pod-spec-is-a-string"),
    pytest.param("Deployment", {"spec": {"template": []}}, "/spec/template: is not an object",
                 id="template-is-a-list"),
    pytest.param("CronJob", {"spec": {"jobTemplate": {"spec": [1]}}}, "/spec/jobTemplate/spec: is not an object",
                 id="job-template-spec-is-a-list"),
    pytest.param("Pod", {"spec": {"containers": "nginx"}}, "/spec/containers: is not a list of containers",
                 id="container-list-is-a-string"),
    pytest.param("Pod", {"spec": {"containers": {"name": "a", "image": "nginx"}}},
                 "/spec/containers: is not a list of containers", id="container-list-is-a-mapping"),
    pytest.param("Pod", {"spec": {"containers": [{"image": "a"}, 5]}},
                 "/spec/containers/1: a container entry is not an object", id="container-entry-is-a-number"),
    pytest.param("Pod", {"spec": {"initContainers": [None]}},
                 "/spec/initContainers/0: a container entry is not an object", id="init-container-entry-is-null"),
    pytest.param("Job", {"spec": {"template": {"spec": {"ephemeralContainers": [["nginx"]]}}}},
                 "/spec/template/spec/ephemeralContainers/0: a container entry is not an object",
                 id="ephemeral-container-entry-is-a-list"),
]


@pytest.mark.parametrize("kind, obj, message", MALFORMED)
def test_malformed_objects_raise_input_error_naming_the_location(kind, obj, message):
    with pytest.raises(InputError) as info:
        container_images(kind, obj)
    assert str(info.value) == message
    assert info.value.reason == "invalid-input"


@pytest.mark.parametrize(
    "request_, expected",
    [
        pytest.param({"kind": {"group": "", "version": "v1", "kind": "Pod"}}, "Pod", id="pod-from-request-kind"),
        pytest.param({"kind": {"group": "batch", "version": "v1", "kind": "CronJob"}}, "CronJob",
                     id="cronjob-from-request-kind"),
        pytest.param({"object": {"kind": "Deployment"}}, "Deployment", id="from-object-kind-when-request-has-none"),
        pytest.param({"kind": "Pod", "object": {"kind": "StatefulSet"}}, "StatefulSet",
                     id="malformed-request-kind-falls-back-to-object-kind"),
        pytest.param({"kind": {"kind": "ConfigMap"}, "object": {"kind": "Pod"}}, None,
                     id="request-kind-is-authoritative"),
        pytest.param({"kind": {"kind": "Service"}}, None, id="kind-without-pod-spec"),
        pytest.param({"kind": {"kind": "pod"}}, None, id="kind-is-case-sensitive"),
        pytest.param({"object": "Pod"}, None, id="object-not-a-mapping"),
        pytest.param({}, None, id="no-kind-at-all"),
    ],
)
def test_pod_spec_kind(request_, expected):
    assert pod_spec_kind(request_) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_pod_spec_kind_knows_every_kind_of_the_table(kind):
    assert pod_spec_kind({"kind": {"kind": kind}}) == kind


# --- credentials ------------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "key, entry, host, expected",
    [
        pytest.param("registry.example.com", {"auth": b64("robot:s3cret")}, "registry.example.com",
                     Credentials("robot", "s3cret"), id="auth-is-base64-of-user-colon-password"),
        pytest.param("registry.example.com", {"auth": b64("robot:pa:ss")}, "registry.example.com",
                     Credentials("robot", "pa:ss"), id="password-may-contain-colons"),
        pytest.param("registry.example.com", {"username": "robot", "password": "s3cret"}, "registry.example.com",
                     Credentials("robot", "s3cret"), id="username-and-password-fields"),
        pytest.param("registry.example.com", {"auth": "", "username": "robot", "password": "pw"},
                     "registry.example.com", Credentials("robot", "pw"), id="empty-auth-uses-username-password"),
        pytest.param("https://registry.example.com:5000/v2/", {"auth": b64("u:p")}, "registry.example.com:5000",
                     Credentials("u", "p"), id="key-with-scheme-and-path-binds-to-host-and-port"),
        pytest.param("Registry.Example.com", {"auth": b64("u:p")}, "REGISTRY.example.COM", Credentials("u", "p"),
                     id="host-names-compare-case-insensitively"),
        pytest.param("[::1]:5000", {"auth": b64("u:p")}, "[::1]:5000", Credentials("u", "p"), id="ipv6-host"),
        pytest.param("registry.example.com:443", {"auth": b64("u:p")}, "registry.example.com", Credentials("u", "p"),
                     id="default-port-key-is-the-registry-image-names-spell-without-it"),
        pytest.param("https://Registry.Example.com:443/v1/", {"auth": b64("u:p")}, "registry.example.com",
                     Credentials("u", "p"), id="url-key-with-default-port-and-capitals"),
        pytest.param("localhost:5000", {"auth": b64("u:p")}, "127.0.0.1:5000", Credentials("u", "p"),
                     id="localhost-key-is-127.0.0.1"),
    ],
)
def test_parse_docker_config(key, entry, host, expected):
    store = parse_docker_config({"auths": {key: entry}}, "/auth/.dockerconfigjson")
    assert store.for_host(host) == expected


@pytest.mark.parametrize(
    "key",
    [
        "https://index.docker.io/v1/",
        "index.docker.io",
        "docker.io",
        "registry-1.docker.io",
        "https://registry-1.docker.io/v2/",
        "https://docker.io",
        "Index.Docker.IO",
    ],
)
def test_docker_hub_keys_bind_to_the_docker_hub_api_host(key):
    store = parse_docker_config({"auths": {key: {"auth": b64("hub:pw")}}}, "auth.json")
    assert dict(store.by_host) == {"registry-1.docker.io": Credentials("hub", "pw")}


@pytest.mark.parametrize(
    "key, asked",
    [
        pytest.param("registry.example.com", "registry.example.com:5000", id="same-host-other-port"),
        pytest.param("registry.example.com:5000", "registry.example.com", id="port-key-not-for-default-port"),
        pytest.param("registry.example.com", "registry.example.com.evil.io", id="host-as-prefix-of-another"),
        pytest.param("registry.example.com", "sub.registry.example.com", id="subdomain"),
        pytest.param("registry.example.com", "example.com", id="parent-domain"),
        pytest.param("https://registry.example.com/team", "evil.io", id="key-path-is-not-a-host"),
        pytest.param("evil.io/registry.example.com", "registry.example.com", id="host-in-key-path-is-ignored"),
        pytest.param("docker.io", "evil.io", id="docker-hub-credentials-stay-with-docker-hub"),
        pytest.param("registry.example.com", "", id="empty-host"),
    ],
)
def test_for_host_never_returns_credentials_for_another_host(key, asked):
    store = parse_docker_config({"auths": {key: {"auth": b64("u:p")}}}, "auth.json")
    assert store.for_host(asked) is None


@pytest.mark.parametrize("key", ["127.1:5000", "2130706433", "[::ffff:7f00:1]:5000", "registry.example.com:0443"])
def test_a_key_without_canonical_form_is_a_configuration_error_naming_it(key):
    with pytest.raises(ConfigError) as raised:
        parse_docker_config({"auths": {key: {"auth": b64("u:p")}}}, "auth.json")
    assert f"registries.auth: auth.json: auths[{key!r}]: " in str(raised.value)


_DOCKER_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}  # these are mapped together
# Hosts already in canonical form (reference.canonical_registry): keys are looked up canonically.
_host = st.from_regex(r"[a-z0-9]{1,6}(\.[a-z0-9]{1,6}){0,1}\.[a-z][a-z0-9]{0,5}(:[1-9][0-9]{0,3})?", fullmatch=True).filter(
    lambda host: host not in _DOCKER_HUB_NAMES and not host.endswith(".localhost") and not host.endswith(":443")
)


@given(configured=st.lists(_host, min_size=1, max_size=4, unique=True), asked=_host)
@example(configured=["r.io:5000", "r.io"], asked="r.io:5000")
def test_credentials_are_only_returned_for_a_configured_host(configured, asked):
    # `auth` is base64 of username:password, split at the first colon: a username must hold none,
    # so it is not built from the host, whose port would end up in it.
    users = {host: f"user{number}" for number, host in enumerate(configured)}
    auths = {host: {"auth": b64(f"{users[host]}:pw")} for host in configured}
    store = parse_docker_config({"auths": auths}, "auth.json")
    found = store.for_host(asked)
    if asked in configured:
        assert found == Credentials(users[asked], "pw")
    else:
        assert found is None


@pytest.mark.parametrize(
    "data, message",
    [
        pytest.param([], "registries.auth: auth.json has no 'auths' object (expected a .dockerconfigjson)", id="not-an-object"),
        pytest.param({"credsStore": "desktop"}, "registries.auth: auth.json has no 'auths' object (expected a .dockerconfigjson)", id="no-auths"),
        pytest.param({"auths": ["r.io"]}, "registries.auth: auth.json has no 'auths' object (expected a .dockerconfigjson)", id="auths-is-a-list"),
        pytest.param({"auths": {"r.io": "dTpw"}}, "registries.auth: auth.json: auths['r.io'] is not an object",
                     id="entry-is-a-string"),
        pytest.param({"auths": {"r.io": {"auth": "%%%not-base64"}}},
                     "registries.auth: auth.json: auths['r.io'].auth is not valid base64 of username:password",
                     id="auth-is-not-base64"),
        pytest.param({"auths": {"r.io": {"auth": b64("no-colon")}}},
                     "registries.auth: auth.json: auths['r.io'].auth does not decode to username:password",
                     id="auth-without-colon"),
        pytest.param({"auths": {"r.io": {"auth": base64.b64encode(b"\xff\xfe:x").decode()}}},
                     "registries.auth: auth.json: auths['r.io'].auth is not valid base64 of username:password",
                     id="auth-is-not-utf8"),
        pytest.param({"auths": {"r.io": {}}},
                     "registries.auth: auth.json: auths['r.io'] has neither 'auth' nor username/password",
                     id="entry-without-credentials"),
        pytest.param({"auths": {"r.io": {"username": "u"}}},
                     "registries.auth: auth.json: auths['r.io'] has neither 'auth' nor username/password",
                     id="username-without-password"),
        pytest.param({"auths": {"r.io": {"identitytoken": "tok"}}},
                     "registries.auth: auth.json: auths['r.io'] has neither 'auth' nor username/password",
                     id="identity-token-only"),
    ],
)
def test_malformed_docker_config_is_a_config_error(data, message):
    with pytest.raises(ConfigError) as info:
        parse_docker_config(data, "auth.json")
    assert str(info.value) == message


def test_secrets_never_appear_in_messages_or_reprs():
    with pytest.raises(ConfigError) as info:
        parse_docker_config({"auths": {"r.io": {"auth": b64("no-colon-but-s3cret")}}}, "auth.json")
    assert "s3cret" not in str(info.value) and b64("no-colon-but-s3cret") not in str(info.value)
    store = parse_docker_config({"auths": {"r.io": {"username": "u", "password": "s3cret"}}}, "auth.json")
    assert "s3cret" not in repr(store) and "s3cret" not in repr(store.for_host("r.io"))


def test_load_credentials_without_a_file_is_empty():
    assert load_credentials(None) == CredentialStore()
    assert load_credentials(None).for_host("registry.example.com") is None


def test_load_credentials_reads_a_dockerconfigjson(tmp_path):
    path = tmp_path / ".dockerconfigjson"
    path.write_text(json.dumps({"auths": {"registry.example.com": {"auth": b64("u:p")}}}))
    assert load_credentials(str(path)).for_host("registry.example.com") == Credentials("u", "p")


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param(None, "registries.auth: cannot read {path}", id="missing-file"),
        pytest.param(b"{not json", "registries.auth: {path} is not valid JSON (expected a .dockerconfigjson)",
                     id="invalid-json"),
        pytest.param(b"\xff\xfe", "registries.auth: {path} is not valid JSON", id="not-utf8"),
        pytest.param(b" " * (1024 * 1024 + 1), "registries.auth: {path} is larger than 1 MiB", id="too-large"),
    ],
)
def test_load_credentials_errors(content, message, tmp_path):
    path = tmp_path / ".dockerconfigjson"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_credentials(str(path))
    assert str(info.value).startswith(message.format(path=path))


def test_a_legacy_ephemeral_containers_object_yields_its_images_with_pointers():
    # As the API server of a cluster before 1.22 sends it for pods/ephemeralcontainers.
    obj = {
        "apiVersion": "v1",
        "kind": "EphemeralContainers",
        "metadata": {"name": "web-1", "namespace": "team"},
        "ephemeralContainers": [{"name": "debug", "image": "busybox:1.36", "targetContainerName": "app"}],
    }
    assert pod_spec_kind({"kind": {"group": "", "version": "v1", "kind": "EphemeralContainers"}, "object": obj}) == "EphemeralContainers"
    [found] = container_images("EphemeralContainers", obj)
    assert (found.list_name, found.container, found.image, found.pointer) == (
        "ephemeralContainers", "debug", "busybox:1.36", "/ephemeralContainers/0/image"
    )
    assert found.label == 'ephemeral container "debug"'
