"""Proof that the test infrastructure is real: real registries, real auth, real TLS, and signatures
that verify with independent `cryptography` calls over the exact stored bytes."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from typing import Callable

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from support import certs
from support.oci import (
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryError, RegistryHTTP, push_image, push_index,
    sha256_digest,
)
from support.registry import (
    Registry, RegistryStartError, listening_addresses, parse_access_line,
)
from support.signer import (
    BUNDLE_MEDIA_TYPE, COSIGN_SIGN_PREDICATE, INTOTO_PAYLOAD_TYPE, SIGNATURE_ANNOTATION,
    SIMPLESIGNING, TestKey, der_to_p1363, generate_key, pae, sign_bundle, sign_legacy,
    simple_signing_payload,
)

HttpFor = Callable[..., RegistryHTTP]


# -- registries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["registry", "tls_registry", "token_registry"])
def test_each_mode_answers_on_loopback(fixture: str, request: pytest.FixtureRequest) -> None:
    reg: Registry = request.getfixturevalue(fixture)
    assert reg.running and reg.host.startswith("127.0.0.1:")
    verify = str(reg.ca_path) if reg.ca_path else True
    response = requests.get(f"{reg.url}/v2/", verify=verify, timeout=5)
    expected = 200 if reg.mode == "plain" else 401
    assert response.status_code == expected
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert listening_addresses(reg.port) == {"127.0.0.1"}
    if reg.token_server is not None:
        assert listening_addresses(reg.token_server.port) == {"127.0.0.1"}


def test_start_reports_a_port_clash(tmp_path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        reg = Registry(tmp_path, "plain")
        reg.port = squatter.getsockname()[1]  # as restart() would: the port must be kept
        with pytest.raises(RegistryStartError, match="in use"):
            reg.start(attempts=1)
        assert not reg.running


def test_registry_start_is_fast(fresh_registry: Callable[..., Registry]) -> None:
    started = time.perf_counter()
    fresh_registry()
    # Typically ~30 ms; the bound only catches a broken readiness loop (e.g. fixed sleeps).
    assert time.perf_counter() - started < 2.0


def test_push_image_digest_is_sha256_of_served_manifest(http: RegistryHTTP, repo: str) -> None:
    image = push_image(http, repo, "v1")
    body, media_type = http.get_manifest(repo, "v1")
    assert body == image.manifest
    assert sha256_digest(body) == image.digest
    assert media_type == OCI_MANIFEST
    assert image.reference == f"{http.host}/{repo}:v1"
    served = http.request("GET", f"/v2/{repo}/manifests/{image.digest}", repo=repo,
                          headers={"Accept": OCI_MANIFEST})
    assert served.headers["Docker-Content-Digest"] == image.digest


def test_push_image_content_controls_digest(http: RegistryHTTP, repo: str) -> None:
    a, b = push_image(http, repo, "a"), push_image(http, repo, "b")
    same1 = push_image(http, repo, "c", content="fixed")
    same2 = push_image(http, repo, "d", content=b"fixed")
    assert a.digest != b.digest
    assert same1.digest == same2.digest


def test_docker_media_type_image(http: RegistryHTTP, repo: str) -> None:
    image = push_image(http, repo, "docker", media_type="docker")
    body, media_type = http.get_manifest(repo, "docker")
    assert media_type == DOCKER_MANIFEST == image.media_type
    assert json.loads(body)["mediaType"] == DOCKER_MANIFEST


def test_manifest_without_media_type_field_is_served_by_content_type(
        http: RegistryHTTP, repo: str) -> None:
    image = push_image(http, repo, "umoci", omit_media_type=True)
    body, media_type = http.get_manifest(repo, "umoci")
    assert "mediaType" not in json.loads(body)
    assert media_type == OCI_MANIFEST
    assert sha256_digest(body) == image.digest


def test_push_index_lists_children(http: RegistryHTTP, repo: str) -> None:
    index = push_index(http, repo, "multi")
    body, media_type = http.get_manifest(repo, "multi")
    assert media_type == OCI_INDEX and sha256_digest(body) == index.digest
    listed = {(m["platform"]["os"], m["platform"]["architecture"]): m["digest"]
              for m in json.loads(body)["manifests"]}
    assert listed == {("linux", "amd64"): index.child("amd64").digest,
                      ("linux", "arm64"): index.child("arm64").digest}
    for child in index.children:
        child_body, _ = http.get_manifest(repo, child.digest)
        assert sha256_digest(child_body) == child.digest


def test_delete_manifest(http: RegistryHTTP, repo: str) -> None:
    image = push_image(http, repo, "gone")
    http.delete_manifest(repo, image.digest)
    assert http.find_manifest(repo, image.digest) is None


# distribution 2.8 quirks the production client has to live with; pinned here so a registry
# upgrade that changes them is noticed.


def test_quirk_oci_manifest_needs_oci_accept(http: RegistryHTTP, repo: str) -> None:
    image = push_image(http, repo, "v1")
    for accept in ("", "*/*", DOCKER_MANIFEST):
        response = http.request("GET", f"/v2/{repo}/manifests/{image.digest}", repo=repo,
                                expect=(404,), headers={"Accept": accept} if accept else {})
        assert "OCI manifest found, but accept header does not support" in response.text


def test_quirk_docker_list_by_tag_is_rewritten_to_amd64_child(http: RegistryHTTP,
                                                             repo: str) -> None:
    index = push_index(http, repo, "multi", media_type="docker")
    response = http.request("GET", f"/v2/{repo}/manifests/multi", repo=repo,
                            headers={"Accept": DOCKER_MANIFEST})
    assert sha256_digest(response.content) == index.child("amd64").digest != index.digest


def test_quirk_put_content_type_must_match_body(http: RegistryHTTP, repo: str) -> None:
    image = push_image(http, repo, "v1")
    with pytest.raises(RegistryError) as caught:
        http.put_manifest(repo, "v2", image.manifest, DOCKER_MANIFEST)
    assert caught.value.status == 400


# -- TLS and auth --------------------------------------------------------------------------------


def test_tls_registry_rejects_client_without_the_ca(tls_registry: Registry, tmp_path) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_registry.url}/v2/", timeout=5)  # system trust store only
    unrelated = certs.make_unrelated_ca(tmp_path)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_registry.url}/v2/", verify=str(unrelated.cert_path), timeout=5)


def test_tls_server_cert_is_strictly_valid(tls_registry: Registry) -> None:
    context = ssl.create_default_context(cafile=str(tls_registry.ca_path))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # what newer Pythons enable by default
    assert requests.get(f"{tls_registry.url}/v2/", verify=str(tls_registry.ca_path),
                        timeout=5).status_code == 401
    with socket.create_connection(("127.0.0.1", tls_registry.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_htpasswd_accepts_tester_and_rejects_wrong_password(
        tls_registry: Registry, http_for: HttpFor, repo: str) -> None:
    good = http_for(tls_registry)
    image = push_image(good, repo, "v1")
    assert good.get_manifest(repo, "v1")[0] == image.manifest
    bad = http_for(tls_registry, password="wrong")
    with pytest.raises(RegistryError) as caught:
        bad.get_manifest(repo, "v1")
    assert caught.value.status == 401
    assert requests.get(f"{tls_registry.url}/v2/", verify=str(tls_registry.ca_path),
                        auth=("tester", "s3cret"), timeout=5).status_code == 200


def test_token_registry_issues_tokens_and_denies_anonymous_push(
        token_registry: Registry, http_for: HttpFor, repo: str) -> None:
    token_server = token_registry.token_server
    assert token_server is not None
    before = len(token_server.requests)
    pusher = http_for(token_registry)
    image = push_image(pusher, repo, "v1")
    seen = token_server.requests[before:]
    assert seen and all(r.authorization and r.username == "tester" for r in seen)
    assert any(f"repository:{repo}:pull,push" in r.query.get("scope", []) for r in seen)

    anonymous = http_for(token_registry, anonymous=True)
    assert anonymous.get_manifest(repo, "v1")[0] == image.manifest  # anonymous pull works
    with pytest.raises(RegistryError) as caught:
        push_image(anonymous, repo, "v2")
    assert caught.value.status == 401
    anon_requests = [r for r in token_server.requests[before:] if not r.authorization]
    assert anon_requests and all(r.status == 200 for r in anon_requests)


def test_token_server_rejects_wrong_password(token_registry: Registry) -> None:
    token_server = token_registry.token_server
    assert token_server is not None
    response = requests.get(token_server.realm, params={"service": token_server.service,
                                                        "scope": "repository:x/y:pull"},
                            auth=("tester", "nope"), timeout=5)
    assert response.status_code == 401
    assert token_server.requests[-1].status == 401 and token_server.requests[-1].authorization


def test_token_grants_depend_on_credentials(token_registry: Registry) -> None:
    ts = token_registry.token_server
    assert ts is not None

    def actions(auth: tuple[str, str] | None) -> list[str]:
        response = requests.get(ts.realm, params={"service": ts.service,
                                                  "scope": "repository:a/b:pull,push"},
                                auth=auth, timeout=5)
        token = response.json()["token"]
        claims_b64 = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
        assert claims["aud"] == ts.service and claims["iss"] == ts.issuer
        return claims["access"][0]["actions"] if claims["access"] else []

    assert actions(None) == ["pull"]
    assert actions(("tester", "s3cret")) == ["pull", "push"]


# -- access log ----------------------------------------------------------------------------------


def test_parse_access_line_handles_distribution_format() -> None:
    line = ('127.0.0.1 - - [23/Nov/2026:09:20:12 +0000] "HEAD /v2/foo/manifests/bar?x=1 HTTP/1.1" '
            '404 93 "" "a \\"quoted\\" agent"')
    parsed = parse_access_line(line)
    assert parsed is not None
    assert (parsed.method, parsed.path, parsed.status) == ("HEAD", "/v2/foo/manifests/bar", 404)
    assert parsed.user_agent == 'a "quoted" agent'
    assert parse_access_line('time="2026-11-23T09:20:12Z" level=info msg="response completed"') is None


def test_request_counting_from_access_log(registry: Registry, http: RegistryHTTP, repo: str) -> None:
    image = push_image(http, repo, "v1")
    mark = registry.mark()
    http.get_manifest(repo, "v1")
    assert http.head_manifest(repo, image.digest) == (image.digest, OCI_MANIFEST)
    http.find_manifest(repo, "missing")
    seen = registry.requests_since(mark)
    assert seen == [
        ("GET", f"/v2/{repo}/manifests/v1", 200),
        ("HEAD", f"/v2/{repo}/manifests/{image.digest}", 200),
        ("GET", f"/v2/{repo}/manifests/missing", 404),
    ]
    assert registry.count_requests(mark) == 3
    assert registry.count_requests(mark, methods=("HEAD",)) == 1
    assert registry.requests_since(registry.mark()) == []


def test_request_counting_sees_large_blob_reads(registry: Registry, http: RegistryHTTP,
                                                repo: str) -> None:
    # Big responses are flushed before the handler returns, so the log line can trail the body:
    # the barrier in requests_since() must still catch it.
    digest = http.push_blob(repo, b"x" * (4 << 20))
    mark = registry.mark()
    for _ in range(3):
        http.get_blob(repo, digest)
    assert registry.count_requests(mark) == 3


# -- lifecycle -----------------------------------------------------------------------------------


def test_restart_keeps_port_and_data(fresh_registry: Callable[..., Registry],
                                     http_for: HttpFor) -> None:
    reg = fresh_registry()
    http = http_for(reg)
    image = push_image(http, "demo/persist", "v1")
    upload = http.request("POST", "/v2/demo/persist/blobs/uploads/", repo="demo/persist",
                          expect=(202,)).headers["Location"]
    host = reg.host
    reg.restart()
    assert reg.host == host and reg.running
    assert http.get_manifest("demo/persist", "v1")[0] == image.manifest
    # An upload session opened before the restart can still be completed (same http.secret).
    data = b"after restart"
    http.request("PUT", f"{upload}&digest={sha256_digest(data)}", repo="demo/persist",
                 expect=(201,), data=data)
    assert http.get_blob("demo/persist", sha256_digest(data)) == data


def test_stopped_registry_refuses_connections(fresh_registry: Callable[..., Registry],
                                             http_for: HttpFor) -> None:
    reg = fresh_registry()
    url = reg.url
    mark = reg.mark()
    http_for(reg).list_tags("demo/none")
    reg.stop()
    assert reg.requests_since(mark) == [("GET", "/v2/demo/none/tags/list", 404)]
    assert not reg.running
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/v2/", timeout=2)


def test_token_registry_restart_keeps_auth(fresh_registry: Callable[..., Registry],
                                           http_for: HttpFor) -> None:
    reg = fresh_registry("token")
    http = http_for(reg)
    push_image(http, "demo/tok", "v1")
    reg.restart()
    assert http.list_tags("demo/tok") == ["v1"]


# -- signer: legacy .sig -------------------------------------------------------------------------


def _layers(http: RegistryHTTP, repo: str, tag: str) -> list[dict]:
    body, _ = http.get_manifest(repo, tag, accept=(OCI_MANIFEST, DOCKER_MANIFEST))
    return json.loads(body)["layers"]


def test_simple_signing_payload_is_byte_exact() -> None:
    payload = simple_signing_payload("127.0.0.1:5000/demo/signed", "sha256:" + "ab" * 32)
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/demo/signed"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}')
    annotated = simple_signing_payload("r/x", "sha256:00", {"z": "1", "a": "<&>"})
    assert annotated.endswith(b'"optional":{"a":"\\u003c\\u0026\\u003e","z":"1"}}')


def test_sign_legacy_signature_verifies_over_stored_payload(
        http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> None:
    image = push_image(http, repo, "v1")
    key = keys["ecdsa-p256"]
    result = sign_legacy(http, repo, image.digest, key)
    assert result.tag == "sha256-" + image.digest.split(":")[1] + ".sig"
    assert result.tag in http.list_tags(repo)
    (layer,) = _layers(http, repo, result.tag)
    assert layer["mediaType"] == SIMPLESIGNING
    payload = http.get_blob(repo, layer["digest"])
    assert len(payload) == layer["size"]
    signature = base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION])
    # Straight `cryptography`, not TestKey.verify: the check must not share code with the signer.
    key.public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    claims = json.loads(payload)
    assert claims["critical"]["image"]["docker-manifest-digest"] == image.digest
    assert claims["critical"]["identity"]["docker-reference"] == f"{http.host}/{repo}"
    with pytest.raises(InvalidSignature):
        keys["other-ecdsa-p256"].verify(signature, payload)


def test_sign_legacy_appends_layers(http: RegistryHTTP, repo: str,
                                    keys: dict[str, TestKey]) -> None:
    image = push_image(http, repo, "v1")
    first = sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    second = sign_legacy(http, repo, image.digest, keys["rsa-2048"], annotations={"env": "prod"})
    assert (first.layer_count, second.layer_count) == (1, 2)
    layers = _layers(http, repo, second.tag)
    assert [item["digest"] for item in layers] == [first.payload_digest, second.payload_digest]
    for item, key in zip(layers, (keys["ecdsa-p256"], keys["rsa-2048"])):
        key.verify(base64.b64decode(item["annotations"][SIGNATURE_ANNOTATION]),
                   http.get_blob(repo, item["digest"]))
    assert json.loads(http.get_blob(repo, layers[1]["digest"]))["optional"] == {"env": "prod"}


@pytest.mark.parametrize("fixture", ["registry", "tls_registry", "token_registry"])
def test_signing_works_in_every_auth_mode(fixture: str, request: pytest.FixtureRequest,
                                          http_for: HttpFor, repo: str,
                                          keys: dict[str, TestKey]) -> None:
    http = http_for(request.getfixturevalue(fixture))
    image = push_image(http, repo, "v1")
    sign_legacy(http, repo, image.digest, keys["ecdsa-p384"], hash="sha384")
    second = sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    bundle = sign_bundle(http, repo, image.digest, image.media_type, image.size, keys["ed25519"])
    assert second.layer_count == 2
    assert set(http.list_tags(repo)) == {"v1", second.tag, bundle.fallback_tag}


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "ed25519"])
def test_every_key_kind_signs_verifiably(kind: str, keys: dict[str, TestKey]) -> None:
    key = keys[kind]
    assert key.pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    key.verify(key.sign(b"payload"), b"payload")
    if kind.startswith("ecdsa"):
        key.verify(key.sign(b"p", "sha512"), b"p", "sha512")
        assert len(der_to_p1363(key.sign(b"p"), key)) % 2 == 0
    if kind == "rsa-2048":
        assert key.pkcs1_pub_path is not None
        assert key.pkcs1_pub_path.read_bytes().startswith(b"-----BEGIN RSA PUBLIC KEY-----")


def test_sign_legacy_options(http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> None:
    image = push_image(http, repo, "v1")
    key = keys["ecdsa-p256"]
    other = repo + "-sigs"
    result = sign_legacy(http, repo, image.digest, key, sig_repo=other, docker_media_types=True,
                         signature_override="not base64!", extra_layer_annotations={"x": "y"})
    assert http.find_manifest(repo, result.tag) is None
    body, media_type = http.get_manifest(other, result.tag)
    assert media_type == DOCKER_MANIFEST
    (layer,) = json.loads(body)["layers"]
    assert layer["annotations"] == {SIGNATURE_ANNOTATION: "not base64!", "x": "y"}


# -- signer: sigstore bundle in a referrer --------------------------------------------------------


def test_pae_format() -> None:
    assert pae("application/vnd.in-toto+json", b"hello") == \
        b"DSSEv1 28 application/vnd.in-toto+json 5 hello"


def test_sign_bundle_fallback_index_and_dsse_signature(
        http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> None:
    image = push_image(http, repo, "v1")
    key = keys["ecdsa-p256"]
    result = sign_bundle(http, repo, image.digest, image.media_type, image.size, key,
                         annotations={"env": "prod"})
    index_body, media_type = http.get_manifest(repo, "sha256-" + image.digest.split(":")[1])
    assert media_type == OCI_INDEX
    (entry,) = json.loads(index_body)["manifests"]
    assert entry["digest"] == result.referrer_digest
    assert entry["artifactType"] == BUNDLE_MEDIA_TYPE

    referrer_body, _ = http.get_manifest(repo, result.referrer_digest)
    referrer = json.loads(referrer_body)
    assert referrer["subject"] == image.descriptor()
    (layer,) = referrer["layers"]
    bundle = json.loads(http.get_blob(repo, layer["digest"]))
    envelope = bundle["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    key.verify(signature, pae(envelope["payloadType"], payload))
    statement = json.loads(payload)
    assert statement["subject"][0]["digest"]["sha256"] == image.digest.split(":")[1]
    assert statement["subject"][0]["annotations"] == {"env": "prod"}
    assert statement["predicateType"] == COSIGN_SIGN_PREDICATE
    assert envelope["payloadType"] == INTOTO_PAYLOAD_TYPE
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == key.hint


def test_sign_bundle_accumulates_and_tampers(http: RegistryHTTP, repo: str,
                                             keys: dict[str, TestKey]) -> None:
    image = push_image(http, repo, "v1")
    args = (http, repo, image.digest, image.media_type, image.size)
    good = sign_bundle(*args, keys["ed25519"])
    bad = sign_bundle(*args, keys["ecdsa-p256"], tamper_payload=True, index_artifact_type="")
    wrong = sign_bundle(*args, keys["ecdsa-p256"], subject_digest="sha256:" + "0" * 64)
    entries = json.loads(http.get_manifest(repo, good.fallback_tag)[0])["manifests"]
    assert [e["digest"] for e in entries] == [good.referrer_digest, bad.referrer_digest,
                                              wrong.referrer_digest]
    assert "artifactType" not in entries[1]
    envelope = json.loads(bad.bundle)["dsseEnvelope"]
    with pytest.raises(InvalidSignature):
        keys["ecdsa-p256"].verify(bad.signature,
                                  pae(envelope["payloadType"], base64.b64decode(envelope["payload"])))
    assert json.loads(wrong.statement)["subject"][0]["digest"]["sha256"] == "0" * 64


def test_sign_index_digest(http: RegistryHTTP, repo: str, keys: dict[str, TestKey], tmp_path) -> None:
    index = push_index(http, repo, "multi")
    rsa_key = generate_key("rsa-2048", tmp_path, "rsa", rsa_pkcs1_pem=True)
    result = sign_legacy(http, repo, index.digest, rsa_key)
    assert result.tag == f"sha256-{index.digest.split(':')[1]}.sig"
    assert http.find_manifest(repo, f"sha256-{index.child('amd64').digest.split(':')[1]}.sig") is None
