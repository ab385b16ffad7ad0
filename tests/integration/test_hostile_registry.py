"""The hook against a registry that lies, stalls, floods and misbehaves on purpose (tests/support/hostile.py).

Every case runs the real hook executable as shell-operator does (contract.py) against a
HostileRegistry on 127.0.0.1 that serves an honest, signed image until one route is replaced by a
misbehaviour. Each test names the denial a person reading `kubectl` output gets. Three checks run
on every hook run (`Hook.run`):

- the hook exits 0 and writes exactly one JSON object with a boolean `allowed`;
- the secret planted in every error body, in the password and in the token never appears in the
  response or the logs, and no message is long enough to carry a response body;
- the hook connected to nothing but the servers the test started (ConnectionAudit blocks and
  records anything else), so no misbehaviour can make it reach another address.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.contract import HookRun, request_for, run_request
from support.hostile import (
    ConnectionAudit,
    HostileRegistry,
    Reply,
    StubServer,
    docker_config_json,
    json_reply,
    write_config,
)
from support import certs
from support.oci import OCI_INDEX, OCI_MANIFEST, canonical_json, sha256_digest
from support.signer import BUNDLE_MEDIA_TYPE, TestKey, b64

MAX_MESSAGE = 1500  # longer than any honest denial of one image, far shorter than any body served here


# ---- running the hook against a hostile registry -------------------------------------------------


@dataclass
class Hook:
    hostile: HostileRegistry
    audit: ConnectionAudit
    directory: Path
    key: TestKey
    secrets: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    _configs: int = 0

    def config(self, **top: Any) -> Path:
        top.setdefault("registries", {"insecure": [self.hostile.host]})
        self._configs += 1
        return write_config(self.directory / f"config-{self._configs}.json", self.key, **top)

    def run(self, *images: str, config: Path | None = None, **top: Any) -> HookRun:
        images = images or (self.hostile.reference,)
        config = config or self.config(**top)
        started = time.monotonic()
        run = run_request(config, request_for("Pod", list(images)), env=self.audit.env, timeout=60)
        self.elapsed = time.monotonic() - started
        assert run.returncode == 0, run.stderr
        assert isinstance(run.response, dict) and isinstance(run.response.get("allowed"), bool), run.raw_response
        for secret in [self.hostile.secret, *self.secrets]:
            assert secret not in run.raw_response, f"the response carries a secret: {run.raw_response}"
            assert secret not in run.stderr, f"the log carries a secret: {run.stderr}"
        assert len(run.message) < MAX_MESSAGE * len(images), run.message
        assert "internal error" not in run.message and "Traceback" not in run.stderr, run.stderr
        assert self.audit.blocked() == [], f"the hook tried to connect elsewhere: {self.audit.blocked()}"
        return run


@pytest.fixture
def key(keys: dict[str, TestKey]) -> TestKey:
    return keys["ecdsa-p256"]


@pytest.fixture
def hostile(key: TestKey) -> Iterator[HostileRegistry]:
    with HostileRegistry(key) as server:
        yield server


@pytest.fixture
def hook(hostile: HostileRegistry, key: TestKey, tmp_path: Path) -> Hook:
    audit = ConnectionAudit(tmp_path / "audit", allow=[hostile.host])
    return Hook(hostile, audit, tmp_path, key)


@pytest.fixture
def second_server(hook: Hook) -> Iterator[StubServer]:
    """Another server on 127.0.0.1 (another port, so another host): a CDN or a token service."""
    with StubServer(secret=hook.hostile.secret) as server:
        hook.audit.allow(server.host)
        yield server


def denial(image: str, text: str, label: str = 'container "c0"') -> str:
    return f'{label} image "{image}": {text}'


def assert_denied(run: HookRun, image: str, text: str) -> None:
    assert run.allowed is False, run.response
    assert denial(image, text) in run.message, run.message


def manifest_reply(body: bytes, **headers: str) -> Reply:
    return Reply(200, {"Content-Type": OCI_MANIFEST, **headers}, body)


# ---- the honest baseline -------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_the_honest_setup_is_allowed_so_every_denial_below_is_the_misbehaviour(hook: Hook, hostile, by) -> None:
    image = hostile.reference if by == "tag" else hostile.by_digest
    run = hook.run(image)
    assert run.response == {"allowed": True}, run.message
    assert hostile.requests_to(hostile.blob_path(hostile.payload_digest)), "the signature payload was checked"


# ---- lies about digests --------------------------------------------------------------------------


def test_manifest_bytes_that_do_not_match_the_requested_digest_are_denied(hook: Hook, hostile) -> None:
    # Asked for the signed image by digest, the registry serves another (unsigned) image.
    hostile.routes[hostile.manifest_path(hostile.digest)] = manifest_reply(hostile.other_manifest)
    run = hook.run(hostile.by_digest)
    assert_denied(
        run,
        hostile.by_digest,
        f"manifest {hostile.host}/{hostile.repo}@{hostile.digest}: the registry sent bytes with digest "
        f"{hostile.other_digest}, not the requested {hostile.digest}",
    )


def test_tag_manifest_whose_docker_content_digest_header_lies_is_denied(hook: Hook, hostile) -> None:
    # The header names the signed digest, the bytes are another image: the bytes decide.
    hostile.routes[hostile.manifest_path(hostile.tag)] = manifest_reply(
        hostile.other_manifest, **{"Docker-Content-Digest": hostile.digest}
    )
    run = hook.run()
    assert_denied(
        run,
        hostile.reference,
        f"manifest {hostile.reference}: the registry says digest {hostile.digest} "
        f"but sent bytes with digest {hostile.other_digest}",
    )
    assert hostile.requests_to(hostile.sig_path) == [], "no signature is looked up for a manifest that lied"


def test_tag_serving_another_image_without_a_header_is_verified_as_that_image(hook: Hook, hostile) -> None:
    # Without the header there is nothing to catch the lie by; the digest is computed from the
    # bytes, so the other (unsigned) image is what gets verified, and it has no signature.
    hostile.routes[hostile.manifest_path(hostile.tag)] = manifest_reply(hostile.other_manifest)
    run = hook.run()
    assert_denied(run, hostile.reference, f"no signature found in {hostile.host}/{hostile.repo} for {hostile.other_digest[:19]}…")


def test_signature_payload_blob_that_does_not_match_its_digest_is_denied(hook: Hook, hostile) -> None:
    forged = hostile.payload.replace(b"cosign container image signature", b"cosign container image signaturE")
    hostile.routes[hostile.blob_path(hostile.payload_digest)] = Reply(200, {}, forged)
    run = hook.run()
    assert_denied(
        run, hostile.reference, f"blob {hostile.host}/{hostile.repo}@{hostile.payload_digest}: the registry sent bytes with digest"
    )


def test_signature_manifest_whose_header_lies_is_denied(hook: Hook, hostile) -> None:
    route = hostile.routes[hostile.sig_path]
    assert isinstance(route, Reply)
    hostile.routes[hostile.sig_path] = Reply(200, {**route.headers, "Docker-Content-Digest": hostile.other_digest}, route.body)
    run = hook.run()
    assert_denied(run, hostile.reference, f"manifest {hostile.host}/{hostile.repo}:sha256-")
    assert f"the registry says digest {hostile.other_digest} but sent bytes with digest" in run.message


# ---- bodies over the caps --------------------------------------------------------------------------

FRAMINGS = {
    # A Content-Length over the cap is refused before a byte of the body is read.
    "content-length": dict(framing="length", declared_length=1 << 30, endless=True),
    # Without Content-Length the read is streamed and cut at the cap.
    "chunked": dict(framing="chunked", endless=True),
    "until-close": dict(framing="close", endless=True),
}
SENT_BOUND = 64 << 20  # what the server managed to push into socket buffers before the hook hung up


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_manifest_larger_than_the_cap_is_denied_and_never_read_whole(hook: Hook, hostile, framing) -> None:
    path = hostile.manifest_path(hostile.tag)
    hostile.routes[path] = Reply(200, {"Content-Type": OCI_MANIFEST}, b'{"schemaVersion":2,"x":"', **FRAMINGS[framing])
    run = hook.run(limits={"maxManifestBytes": 4096})
    if framing == "content-length":
        assert_denied(run, hostile.reference, f"manifest {hostile.reference} is {1 << 30} bytes, more than the limit of 4096 bytes")
    else:
        assert_denied(run, hostile.reference, f"manifest {hostile.reference} is larger than the limit of 4096 bytes")
    assert hostile.sent.get(path, 0) < SENT_BOUND
    assert hook.elapsed < 8, "an endless body is cut at the cap, not at the deadline"


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_signature_blob_larger_than_the_cap_is_denied_and_never_read_whole(hook: Hook, hostile, framing) -> None:
    path = hostile.blob_path(hostile.payload_digest)
    hostile.routes[path] = Reply(200, {}, hostile.payload, **FRAMINGS[framing])
    run = hook.run(limits={"maxBlobBytes": 2048})
    blob = f"blob {hostile.host}/{hostile.repo}@{hostile.payload_digest}"
    if framing == "content-length":
        assert_denied(run, hostile.reference, f"{blob} is {1 << 30} bytes, more than the limit of 2048 bytes")
    else:
        assert_denied(run, hostile.reference, f"{blob} is larger than the limit of 2048 bytes")
    assert hostile.sent.get(path, 0) < SENT_BOUND
    assert hook.elapsed < 8


def test_signature_layer_declaring_a_payload_over_the_cap_is_never_fetched(hook: Hook, hostile) -> None:
    hostile.set_signature_layers([hostile.signature_layer(size=50 << 20)])
    run = hook.run(limits={"maxBlobBytes": 2048})
    assert_denied(run, hostile.reference, "1 legacy signature found; none verifies with key(s) default")
    assert hostile.requests_to(hostile.blob_path(hostile.payload_digest)) == []


# ---- slow registries -------------------------------------------------------------------------------

DEADLINE = {"timeoutSeconds": 4, "deadlineSeconds": 2}
GRACE = 2.0  # interpreter start-up and exit on a loaded two-core machine; the API server waits 4 s here


@pytest.mark.parametrize("where", ["image-manifest", "signature-manifest", "signature-blob", "token"])
def test_a_body_dripping_one_byte_per_second_is_denied_at_the_deadline(hook: Hook, hostile, where) -> None:
    if where == "token":
        hostile.require_bearer = hostile.token
        hostile.routes["/token"] = Reply(200, {"Content-Type": "application/json"}, json.dumps({"token": hostile.token}).encode(), drip=1.0)
    else:
        path = {
            "image-manifest": hostile.manifest_path(hostile.tag),
            "signature-manifest": hostile.sig_path,
            "signature-blob": hostile.blob_path(hostile.payload_digest),
        }[where]
        honest = hostile.routes[path]
        assert isinstance(honest, Reply)
        hostile.routes[path] = Reply(honest.status, honest.headers, honest.body, drip=1.0)
    run = hook.run(webhook=DEADLINE)
    assert_denied(run, hostile.reference, "not verified within 2 s (the registry is too slow or unreachable)")
    assert hook.elapsed < DEADLINE["deadlineSeconds"] + GRACE, f"the hook took {hook.elapsed:.1f} s"


def test_many_images_stuck_on_a_dripping_registry_are_all_named_and_the_hook_still_exits(hook: Hook, hostile) -> None:
    tags = [f"stuck{n}" for n in range(8)]
    for tag in tags:
        hostile.routes[hostile.manifest_path(tag)] = Reply(200, {"Content-Type": OCI_MANIFEST}, hostile.image_manifest, drip=1.0)
    images = [f"{hostile.host}/{hostile.repo}:{tag}" for tag in tags]
    run = hook.run(*images, webhook=DEADLINE)
    assert run.allowed is False
    for number, image in enumerate(images):
        assert denial(image, "not verified within 2 s", f'container "c{number}"') in run.message
    # The worker threads are still blocked in reads: the hook answers and leaves without them.
    assert hook.elapsed < DEADLINE["deadlineSeconds"] + GRACE, f"the hook took {hook.elapsed:.1f} s"


# ---- redirects ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["another-host", "same-host"])
def test_blob_redirect_carries_the_credentials_only_to_the_registry_itself(hook: Hook, hostile, second_server, target) -> None:
    hostile.require_basic = ("tester", hostile.password)
    blob = hostile.blob_path(hostile.payload_digest)
    if target == "another-host":
        second_server.routes["/cdn/blob"] = Reply(200, {}, hostile.payload)
        location = f"{second_server.url}/cdn/blob"
    else:
        hostile.routes["/v2/cdn/blob"] = Reply(200, {}, hostile.payload)
        location = "/v2/cdn/blob"
    hostile.routes[blob] = Reply(307, {"Location": location}, b"moved " + hostile.secret.encode())
    auth = docker_config_json(hook.directory / "auth.json", hostile.host, "tester", hostile.password)
    run = hook.run(registries={"insecure": [hostile.host, second_server.host], "auth": str(auth)})

    assert run.response == {"allowed": True}, run.message
    basic = hostile.basic_header("tester", hostile.password)
    # The registry required Basic auth and got it on every request after the challenge.
    assert [s.authorization for s in hostile.seen[1:]] == [basic] * (len(hostile.seen) - 1)
    if target == "another-host":
        [fetched] = second_server.seen
        assert fetched.authorization is None, "credentials followed a redirect to another host"
        assert all(hostile.password not in value for value in fetched.headers.values())
    else:
        [fetched] = hostile.requests_to("/v2/cdn/blob")
        assert fetched.authorization == basic


REFUSED_REDIRECTS = {
    "metadata": ("http://169.254.169.254/latest/meta-data/", "refusing to contact 169.254.169.254: a cloud metadata address"),
    "scheme-relative-metadata": ("//169.254.169.254/x", "refusing to contact 169.254.169.254: a cloud metadata address"),
    "ipv6-loopback": ("http://[::1]:9/x", "refusing to contact [::1]:9: a loopback address"),
    "localhost": ("http://localhost:9/x", "refusing to contact localhost:9: a loopback address"),
    "numeric-loopback": ("http://2130706433:9/x", "refusing to contact 2130706433:9: registry host '2130706433' is not an IPv4 address"),
    "link-local": ("http://169.254.1.1/x", "refusing to contact 169.254.1.1: a link-local address"),
    "ipv4-mapped-metadata": (
        "http://[::ffff:169.254.169.254]/x",
        "refusing to contact [::ffff:169.254.169.254]: registry host '[::ffff:169.254.169.254]' is an IPv6 spelling "
        "of the IPv4 address 169.254.169.254",
    ),
    "ipv4-compatible-loopback": (
        "http://[::7f00:2]/x", "refusing to contact [::7f00:2]: registry host '[::7f00:2]' is an IPv6 spelling of the IPv4 address 127.0.0.2"
    ),
    "decimal-metadata": ("http://2852039166/x", "refusing to contact 2852039166: registry host '2852039166' is not an IPv4 address"),
    "octal-metadata": (
        "http://0251.0376.0251.0376/x",
        "refusing to contact 0251.0376.0251.0376: registry host '0251.0376.0251.0376' is not an IPv4 address",
    ),
    "private-network": ("http://10.1.2.3:6379/x", "refusing to contact 10.1.2.3:6379: a private address"),
    "another-port-of-the-registry": ("http://127.0.0.1:9/x", "refusing to contact 127.0.0.1:9: a loopback address"),
    "fragment-before-user-info": ("http://169.254.169.254#@127.0.0.1/x", "refusing to contact 169.254.169.254: a cloud metadata address"),
}


@pytest.mark.parametrize("case", list(REFUSED_REDIRECTS))
def test_blob_redirect_to_a_refused_address_is_never_followed(hook: Hook, hostile, case) -> None:
    location, expected = REFUSED_REDIRECTS[case]
    hostile.routes[hostile.blob_path(hostile.payload_digest)] = Reply(302, {"Location": location})
    run = hook.run()
    assert_denied(run, hostile.reference, expected)
    assert {(c["host"], c["port"]) for c in hook.audit.connections()} == {("127.0.0.1", hostile.port)}


# URLs that urllib.parse and urllib3 (which requests connects with) read as different hosts: the
# host policy must judge the host that is really contacted, so such locations are refused outright.
AMBIGUOUS_LOCATIONS = {
    # urllib.parse: user info "169.254.169.254\\", host 127.0.0.1; urllib3: host 169.254.169.254.
    "backslash-before-user-info": "http://169.254.169.254\\@{second}/x",
    # urllib3 percent-decodes the host: 169.254.169.254.
    "percent-encoded-host": "http://%31%36%39.254.169.254/x",
    # User info is never needed by a CDN, and only invites confusion.
    "user-info": "http://169.254.169.254:80@{second}/x",
    "percent-encoded-slash-in-user-info": "http://169.254.169.254%2f@{second}/x",
    "space-in-the-host": "http://169.254.169.254 @{second}/x",
}


@pytest.mark.parametrize("case", list(AMBIGUOUS_LOCATIONS))
def test_blob_redirect_whose_host_parsers_disagree_on_is_refused(hook: Hook, hostile, second_server, case) -> None:
    second_server.routes["/x"] = Reply(200, {}, hostile.payload)
    location = AMBIGUOUS_LOCATIONS[case].format(second=second_server.host)
    hostile.routes[hostile.blob_path(hostile.payload_digest)] = Reply(302, {"Location": location})
    run = hook.run()
    assert_denied(run, hostile.reference, f"blob {hostile.host}/{hostile.repo}@{hostile.payload_digest}: redirect to an unusable location")
    assert second_server.seen == []
    assert {(c["host"], c["port"]) for c in hook.audit.connections()} == {("127.0.0.1", hostile.port)}


@pytest.mark.parametrize("case", ["backslash-before-user-info", "percent-encoded-host", "user-info"])
def test_token_realm_whose_host_parsers_disagree_on_is_refused(hook: Hook, hostile, second_server, case) -> None:
    # With the registry's own host after the "@", the credentials for it would go along.
    location = AMBIGUOUS_LOCATIONS[case].format(second=hostile.host).replace("/x", "/token")
    hostile.require_bearer = hostile.token
    hostile.token_realm = location
    auth = docker_config_json(hook.directory / "auth.json", hostile.host, "tester", hostile.password)
    run = hook.run(registries={"insecure": [hostile.host], "auth": str(auth)})
    assert_denied(run, hostile.reference, f"manifest {hostile.reference}: the registry names an unusable token service")
    assert hostile.requests_to("/token") == []
    assert {(c["host"], c["port"]) for c in hook.audit.connections()} == {("127.0.0.1", hostile.port)}


def test_redirect_loop_is_cut_after_three(hook: Hook, hostile) -> None:
    blob = hostile.blob_path(hostile.payload_digest)
    hostile.routes[blob] = Reply(307, {"Location": blob})
    run = hook.run()
    assert_denied(run, hostile.reference, f"blob {hostile.host}/{hostile.repo}@{hostile.payload_digest}: more than 3 redirects")
    assert len(hostile.requests_to(blob)) == 4


def test_redirect_from_https_to_plain_http_is_refused(key: TestKey, tmp_path: Path) -> None:
    ca = certs.make_ca(tmp_path / "ca")
    with HostileRegistry(key, tls=certs.make_server_cert(ca, tmp_path / "tls")) as hostile, StubServer() as cdn:
        cdn.routes["/blob"] = Reply(200, {}, hostile.payload)
        hostile.routes[hostile.blob_path(hostile.payload_digest)] = Reply(307, {"Location": f"{cdn.url}/blob"})
        hook = Hook(hostile, ConnectionAudit(tmp_path / "audit", allow=[hostile.host, cdn.host]), tmp_path, key)
        run = hook.run(policy=[{"images": f"{hostile.host}/**"}], registries={"caBundle": str(ca.cert_path)})
    assert_denied(
        run, hostile.reference, f"blob {hostile.host}/{hostile.repo}@{hostile.payload_digest}: redirect from HTTPS to plain HTTP refused"
    )
    assert cdn.seen == []


# ---- rate limits and errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "asks"),
    [("60", "60 s"), ("Wed, 21 Oct 2099 07:28:00 GMT", None)],
    ids=["delay-seconds", "http-date"],
)
def test_429_asking_to_wait_beyond_the_deadline_is_denied_at_once(hook: Hook, hostile, retry_after, asks) -> None:
    path = hostile.manifest_path(hostile.tag)
    hostile.routes[path] = Reply(429, {"Retry-After": retry_after}, b"slow down " + hostile.secret.encode())
    run = hook.run(webhook={"timeoutSeconds": 10, "deadlineSeconds": 8})
    assert_denied(run, hostile.reference, f"manifest {hostile.reference}: rate-limited by the registry (429); it asks to retry after")
    assert "beyond the 8 s deadline" in run.message
    if asks:
        assert f"retry after {asks}," in run.message
    assert len(hostile.requests_to(path)) == 1, "nothing is retried that cannot be waited for"
    assert hook.elapsed < 5, f"the hook waited ({hook.elapsed:.1f} s) instead of failing at once"


def test_429_with_a_short_retry_after_is_honoured_and_allowed(hook: Hook, hostile) -> None:
    path = hostile.manifest_path(hostile.tag)
    honest = hostile.routes[path]
    hostile.routes[path] = [Reply(429, {"Retry-After": "1"}), honest]
    run = hook.run()
    assert run.response == {"allowed": True}, run.message
    assert len(hostile.requests_to(path)) == 2


def test_503_on_every_attempt_gives_up_after_three_attempts(hook: Hook, hostile) -> None:
    path = hostile.manifest_path(hostile.tag)
    hostile.routes[path] = Reply(503, {"Content-Type": "text/html"}, b"<h1>down</h1>" + hostile.secret.encode())
    run = hook.run()
    assert_denied(run, hostile.reference, f"manifest {hostile.reference}: the registry answered HTTP 503 after 3 attempts")
    assert len(hostile.requests_to(path)) == 3


# ---- malformed documents ------------------------------------------------------------------------------

BAD_JSON = {
    "not-json": (lambda secret: b"<html>" + secret + b"</html>", "is not valid JSON"),
    "truncated": (lambda secret: b'{"schemaVersion":2,"layers":[', "is not valid JSON"),
    "deeply-nested": (lambda secret: b"[" * 200_000, "is not valid JSON"),
    "not-utf8": (lambda secret: b'{"a":"\xff\xfe"}', "is not valid JSON"),
    "array": (lambda secret: b'["' + secret + b'"]', "is not a JSON object"),
    "null": (lambda secret: b"null", "is not a JSON object"),
}


@pytest.mark.parametrize("which", ["image-manifest", "signature-manifest"])
@pytest.mark.parametrize("case", list(BAD_JSON))
def test_manifest_that_is_not_a_json_object_is_denied(hook: Hook, hostile, case, which) -> None:
    make, problem = BAD_JSON[case]
    body = make(hostile.secret.encode())
    if which == "image-manifest":
        hostile.publish_manifest(hostile.tag, body)
        what = f"manifest {hostile.reference}"
    else:
        hostile.routes[hostile.sig_path] = manifest_reply(body)
        what = f"manifest {hostile.host}/{hostile.repo}:sha256-{hostile.digest[7:]}.sig"
    run = hook.run()
    assert_denied(run, hostile.reference, f"{what} {problem}")


def test_signature_manifest_without_a_layers_list_is_denied(hook: Hook, hostile) -> None:
    hostile.routes[hostile.sig_path] = manifest_reply(json.dumps({"schemaVersion": 2, "layers": {"a": 1}}).encode())
    run = hook.run()
    assert_denied(run, hostile.reference, "legacy tag sha256-")
    assert "the signature manifest has no layers list" in run.message


def test_compressed_body_against_accept_encoding_identity_is_not_inflated(hook: Hook, hostile) -> None:
    # 50 MiB of zeros in ~50 KiB: a gzip bomb. signgate asks for identity and never decodes.
    path = hostile.manifest_path(hostile.tag)
    hostile.routes[path] = Reply(200, {"Content-Encoding": "gzip", "Content-Type": OCI_MANIFEST}, gzip.compress(b"\0" * (50 << 20)))
    run = hook.run()
    assert_denied(run, hostile.reference, f"manifest {hostile.reference} is not valid JSON")


# ---- floods -------------------------------------------------------------------------------------------


def test_thousands_of_signature_layers_are_refused_without_fetching_one(hook: Hook, hostile) -> None:
    hostile.set_signature_layers([hostile.signature_layer()] * 5000)
    run = hook.run()
    assert_denied(
        run,
        hostile.reference,
        f"legacy tag sha256-{hostile.digest[7:19]}….sig: the signature manifest has 5000 layers, more than the limit of 100",
    )
    assert hostile.requests_to(hostile.blob_path(hostile.payload_digest)) == []
    assert hook.elapsed < 8


def test_thousands_of_referrers_in_the_fallback_index_cost_at_most_max_referrers_fetches(hook: Hook, hostile) -> None:
    hostile.routes[hostile.fallback_path] = Reply(200, {"Content-Type": OCI_INDEX}, hostile.referrers_index(5000))
    run = hook.run(limits={"maxReferrers": 20})
    # The listed referrers do not exist; the legacy signature still counts.
    assert run.response == {"allowed": True}, run.message
    fetched = [path for path in hostile.paths() if "/manifests/sha256:" in path]
    assert 0 < len(fetched) <= 20, len(fetched)
    assert hook.elapsed < 8


def test_thousands_of_referrers_in_the_referrers_api_cost_at_most_max_referrers_fetches(hook: Hook, hostile) -> None:
    hostile.routes[hostile.referrers_path] = Reply(200, {"Content-Type": OCI_INDEX}, hostile.referrers_index(5000))
    run = hook.run(limits={"maxReferrers": 20})
    assert run.response == {"allowed": True}, run.message
    fetched = [path for path in hostile.paths() if "/manifests/sha256:" in path]
    assert 0 < len(fetched) <= 20, len(fetched)


def test_endless_referrers_pagination_stops(hook: Hook, hostile) -> None:
    def page(request: Any) -> Reply:
        number = int(request.path.split("n=", 1)[1]) if "n=" in request.path else 0
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
        link = f'<{hostile.referrers_path}?n={number + 1}>; rel="next"'
        return Reply(200, {"Content-Type": OCI_INDEX, "Link": link}, body)

    hostile.routes[hostile.referrers_path] = page
    run = hook.run()
    assert run.response == {"allowed": True}, run.message
    assert len(hostile.requests_to(hostile.referrers_path)) <= 16


# ---- garbage signature annotations ----------------------------------------------------------------

GARBAGE_ANNOTATIONS = {
    "not-base64": lambda secret: "!!! this is not base64 " + secret,
    "empty": lambda secret: "",
    "whitespace": lambda secret: " \r\n\t ",
    "base64-of-nothing-useful": lambda secret: b64(secret.encode()),
    "huge": lambda secret: b64(b"\x30" * 1_500_000),
    "not-a-string": lambda secret: 12345,
    "an-object": lambda secret: {"sig": secret},
}


@pytest.mark.parametrize("case", list(GARBAGE_ANNOTATIONS))
def test_garbage_signature_annotation_is_a_named_denial(hook: Hook, hostile, case) -> None:
    hostile.set_signature_layers([hostile.signature_layer(annotation=GARBAGE_ANNOTATIONS[case](hostile.secret))])
    run = hook.run()
    assert_denied(run, hostile.reference, "1 legacy signature found; none verifies with key(s) default")
    assert hook.elapsed < 8


def test_garbage_layers_next_to_a_valid_signature_do_not_spoil_it(hook: Hook, hostile) -> None:
    garbage = [hostile.signature_layer(annotation=make(hostile.secret)) for make in GARBAGE_ANNOTATIONS.values()]
    hostile.set_signature_layers(garbage[:3] + [hostile.signature_layer()] + garbage[3:] + [{"not": "a layer"}, 7, None])
    run = hook.run()
    assert run.response == {"allowed": True}, run.message


# ---- broken token services ----------------------------------------------------------------------------

TOKEN_FAILURES = {
    "http-500": (lambda s: Reply(500, {"Content-Type": "text/plain"}, b"boom " + s), "the token service answered HTTP 500"),
    "http-401": (lambda s: Reply(401, {}, b"no " + s), "the token service refused the credentials (401)"),
    "no-token": (lambda s: json_reply({"detail": s.decode()}), "the token service sent no usable token"),
    "empty-token": (lambda s: json_reply({"token": ""}), "the token service sent no usable token"),
    "token-not-a-string": (lambda s: json_reply({"token": 12345}), "the token service sent no usable token"),
    "token-with-a-newline": (lambda s: json_reply({"token": "abc\r\nX-Injected: " + s.decode()}), "the token service sent no usable token"),
    "invalid-json": (lambda s: Reply(200, {"Content-Type": "application/json"}, b"{not json " + s), "the token service sent invalid JSON"),
    "deeply-nested": (lambda s: Reply(200, {}, b"[" * 50_000), "the token service sent invalid JSON"),
    "json-array": (lambda s: json_reply([s.decode()]), "the token service sent no usable token"),
    "endless": (lambda s: Reply(200, {}, b'{"token":"', framing="chunked", endless=True), "is larger than the limit of 65536 bytes"),
}


@pytest.mark.parametrize("case", list(TOKEN_FAILURES))
def test_broken_token_service_is_a_named_denial(hook: Hook, hostile, case) -> None:
    make, expected = TOKEN_FAILURES[case]
    hostile.require_bearer = hostile.token
    hostile.routes["/token"] = make(hostile.secret.encode())
    auth = docker_config_json(hook.directory / "auth.json", hostile.host, "tester", hostile.password)
    run = hook.run(registries={"insecure": [hostile.host], "auth": str(auth)})
    assert run.allowed is False
    assert denial(hostile.reference, f"manifest {hostile.reference}: ") in run.message or denial(
        hostile.reference, f"token for manifest {hostile.reference}"
    ) in run.message, run.message
    assert expected in run.message


def test_token_service_on_a_refused_address_is_never_contacted(hook: Hook, hostile) -> None:
    hostile.require_bearer = hostile.token
    hostile.token_realm = "http://169.254.169.254/latest/api/token"
    run = hook.run()
    assert_denied(run, hostile.reference, "refusing to contact 169.254.169.254: a cloud metadata address")
    assert {(c["host"], c["port"]) for c in hook.audit.connections()} == {("127.0.0.1", hostile.port)}


def test_credentials_are_withheld_from_a_plain_http_token_service_on_another_host(hook: Hook, hostile, second_server) -> None:
    hostile.require_bearer = hostile.token
    hostile.token_realm = f"{second_server.url}/token"
    second_server.routes["/token"] = json_reply({"token": hostile.token})
    auth = docker_config_json(hook.directory / "auth.json", hostile.host, "tester", hostile.password)
    run = hook.run(registries={"insecure": [hostile.host], "auth": str(auth)})
    assert run.response == {"allowed": True}, run.message
    [asked] = second_server.seen
    assert asked.authorization is None
    assert all(hostile.password not in value for value in asked.headers.values())


# ---- TLS ------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_material(tmp_path: Path) -> dict[str, Any]:
    ca = certs.make_ca(tmp_path / "ca", "hostile registry CA")
    return {"ca": ca, "unrelated": certs.make_unrelated_ca(tmp_path / "unrelated"), "server": certs.make_server_cert(ca, tmp_path / "tls")}


@pytest.mark.parametrize("trust", ["unrelated-ca-bundle", "system-store", "the-right-ca"])
def test_tls_signed_by_an_unknown_authority_is_denied(key: TestKey, tmp_path: Path, tls_material, trust) -> None:
    with HostileRegistry(key, tls=tls_material["server"]) as hostile:
        hook = Hook(hostile, ConnectionAudit(tmp_path / "audit", allow=[hostile.host]), tmp_path, key)
        registries = {}
        if trust != "system-store":
            registries["caBundle"] = str(tls_material["ca" if trust == "the-right-ca" else "unrelated"].cert_path)
        run = hook.run(policy=[{"images": f"{hostile.host}/**"}], registries=registries)
    if trust == "the-right-ca":
        assert run.response == {"allowed": True}, run.message
        return
    assert_denied(
        run,
        hostile.reference,
        f"manifest {hostile.reference}: TLS verification of {hostile.host} failed "
        "(certificate signed by an unknown authority; set registries.caBundle)",
    )
    assert hostile.seen == [], "no request went over the unverified connection"


def test_plain_http_registry_addressed_over_https_is_named(hook: Hook, hostile) -> None:
    run = hook.run(policy=[{"images": f"{hostile.host}/**"}], registries={})
    assert_denied(
        run,
        hostile.reference,
        f"manifest {hostile.reference}: TLS verification of {hostile.host} failed "
        "(the registry does not speak TLS; list it under registries.insecure if it is plain HTTP)",
    )


# ---- broken HTTP ------------------------------------------------------------------------------------------

PROTOCOL_VIOLATIONS = {
    "hangs-up-without-answering": (Reply(hangup=True), "unreachable"),
    "body-shorter-than-content-length": (
        Reply(200, {"Content-Type": OCI_MANIFEST}, b'{"schemaVersion":2', declared_length=5000),
        "the connection failed while reading",
    ),
    "a-thousand-headers": (Reply(200, {f"X-H{n}": "v" for n in range(1000)}, b"{}"), "unreachable: connection failed"),
    "a-megabyte-header": (Reply(200, {"X-Big": "v" * (1 << 20)}, b"{}"), "unreachable: connection failed"),
    "status-200-empty-body": (Reply(200, {}, b""), "is not valid JSON"),
    "unknown-status": (Reply(599, {}, b"{}"), "unexpected HTTP status 599"),
    "manifest-redirect": (Reply(302, {"Location": "/elsewhere"}), "unexpected HTTP status 302"),
}


@pytest.mark.parametrize("case", list(PROTOCOL_VIOLATIONS))
def test_protocol_violations_are_named_denials(hook: Hook, hostile, case) -> None:
    reply, expected = PROTOCOL_VIOLATIONS[case]
    reply = dataclasses.replace(reply, headers={**reply.headers, "X-Secret": hostile.secret})
    hostile.routes[hostile.manifest_path(hostile.tag)] = reply
    run = hook.run()
    assert run.allowed is False
    assert denial(hostile.reference, "") in run.message
    assert expected in run.message, run.message


# ---- secrets --------------------------------------------------------------------------------------------

LEAKY_FAILURES = {
    # (authentication, misbehaviour)
    "basic-auth+html-error-page": ("basic", lambda h: h.routes.__setitem__(h.sig_path, Reply(500, {}, b"<pre>" + h.secret.encode()))),
    "basic-auth+invalid-manifest": ("basic", lambda h: h.publish_manifest(h.tag, b"oops " + h.secret.encode())),
    "basic-auth+wrong-password": ("basic-wrong", lambda h: None),
    "bearer+forbidden": ("bearer", lambda h: h.routes.__setitem__(h.sig_path, Reply(403, {}, h.secret.encode()))),
    "bearer+garbage-blob": ("bearer", lambda h: h.routes.__setitem__(h.blob_path(h.payload_digest), Reply(200, {}, h.secret.encode()))),
    "bearer+redirect-echoing-the-token": (
        "bearer",
        lambda h: h.routes.__setitem__(h.blob_path(h.payload_digest), Reply(302, {"Location": f"/v2/x?token={h.token}"})),
    ),
}


@pytest.mark.parametrize("case", list(LEAKY_FAILURES))
def test_denials_and_logs_never_carry_the_password_the_token_or_a_body(hook: Hook, hostile, case) -> None:
    scheme, misbehave = LEAKY_FAILURES[case]
    password = hostile.password
    if scheme.startswith("basic"):
        hostile.require_basic = ("tester", hostile.password)
        if scheme == "basic-wrong":
            password = hostile.password + "-wrong"
    else:
        hostile.require_bearer = hostile.token
    misbehave(hostile)
    auth = docker_config_json(hook.directory / "auth.json", hostile.host, "tester", password)
    hook.secrets = [
        password,
        hostile.token,
        base64.b64encode(f"tester:{password}".encode()).decode(),
    ]
    run = hook.run(registries={"insecure": [hostile.host], "auth": str(auth)})  # Hook.run checks the secrets
    assert run.allowed is False
    assert denial(hostile.reference, "") in run.message
    assert len([e for e in run.logs if e.get("msg") == "signgate decision"]) == 1


# ---- bundles in referrers -------------------------------------------------------------------------------


def serve_bundle_referrer(hostile: HostileRegistry, bundle: bytes) -> None:
    """List one referrer holding `bundle` under the fallback tag (the registry has no referrers API)."""
    bundle_digest = sha256_digest(bundle)
    hostile.routes[hostile.blob_path(bundle_digest)] = Reply(200, {}, bundle)
    referrer = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": sha256_digest(b"{}")},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "size": len(bundle), "digest": bundle_digest}],
        "subject": {"mediaType": OCI_MANIFEST, "size": len(hostile.image_manifest), "digest": hostile.digest},
    })
    referrer_digest = hostile.publish_manifest(sha256_digest(referrer), referrer)
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "size": len(referrer), "digest": referrer_digest, "artifactType": BUNDLE_MEDIA_TYPE}],
    })
    hostile.routes[hostile.fallback_path] = Reply(200, {"Content-Type": OCI_INDEX}, index)


@pytest.mark.parametrize(
    "bundle",
    [b"not json", b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}', b"[]", b"\xff" * 100],
    ids=["not-json", "no-envelope", "array", "binary"],
)
def test_garbage_bundle_next_to_a_valid_legacy_signature_does_not_spoil_it(hook: Hook, hostile, bundle) -> None:
    serve_bundle_referrer(hostile, bundle)
    run = hook.run()
    assert run.response == {"allowed": True}, run.message
    assert hostile.requests_to(hostile.blob_path(sha256_digest(bundle))), "the bundle was fetched and judged"


def test_deeply_nested_bundle_next_to_a_valid_legacy_signature_does_not_spoil_it(hook: Hook, hostile) -> None:
    serve_bundle_referrer(hostile, b"[" * 200_000)
    run = hook.run()
    assert run.response == {"allowed": True}, run.message
