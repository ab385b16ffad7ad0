"""Connection reuse in RegistryClient (issue 18): how many TCP connections a check opens.

At real registry latency a new connection costs a TCP and a TLS handshake (2-3 round trips).
Closing a 401 or 404 response without reading its body made urllib3 drop the connection, so a cold
legacy check reconnected after every such answer. These tests count the connections that the
servers accept (tests/support/hostile.py), never times, and check that the bodies worth skipping are
skipped: an endless or dripping 404 body costs its connection, not the check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.hostile import HostileRegistry, Reply, StubServer, json_reply
from signgate import registry as registry_module
from signgate.config import Limits, RegistrySettings
from signgate.credentials import CredentialStore, Credentials
from signgate.deadline import Deadline
from signgate.errors import NotFound, RegistryUnreachable
from signgate.registry import DRAIN_CAP, RegistryClient
from support import certs
from support.signer import fallback_tag, sig_tag


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Any]:
    ca = certs.make_ca(tmp_path / "ca", "connections test CA")
    return {"ca": ca, "server": certs.make_server_cert(ca, tmp_path / "tls")}


def client_for(*insecure: str, ca_bundle: str | None = None, deadline: float = 10.0,
               credentials: dict[str, tuple[str, str]] | None = None, limits: Limits | None = None) -> RegistryClient:
    store = CredentialStore({h: Credentials(u, p) for h, (u, p) in (credentials or {}).items()})
    return RegistryClient(
        RegistrySettings(ca_bundle=ca_bundle, insecure=frozenset(insecure)),
        limits or Limits(),
        Deadline(deadline),
        credentials=store,
    )


def cold_legacy_check(client: RegistryClient, hostile: HostileRegistry) -> None:
    """The requests of a cold legacy check by tag, in the order the verifier makes them when it
    makes them one after another: tag, .sig manifest, payload, referrers (404), fallback tag (404)."""
    host, repo = hostile.host, hostile.repo
    manifest = client.get_manifest(host, repo, hostile.tag)
    assert manifest.digest == hostile.digest
    signature = client.get_manifest(host, repo, sig_tag(manifest.digest))
    payload_digest = signature.data["layers"][0]["digest"]
    assert client.get_blob(host, repo, payload_digest) == hostile.payload
    assert client.get_referrers(host, repo, manifest.digest, 50) is None
    with pytest.raises(NotFound):
        client.get_manifest(host, repo, fallback_tag(manifest.digest))


def test_cold_legacy_check_with_a_token_uses_one_connection_per_host(keys, tls) -> None:
    """401 with a body, then the token from another host, then the manifest, the signature, the
    payload and two 404s: one TLS connection to the registry and one to the token service."""
    key = keys["ecdsa-p256"]
    with HostileRegistry(key, tls=tls["server"]) as hostile, StubServer(tls=tls["server"]) as token_service:
        token_service.routes["/token"] = json_reply({"token": hostile.token, "expires_in": 300})
        hostile.require_bearer = hostile.token
        hostile.token_realm = f"{token_service.url}/token"
        client = client_for(ca_bundle=str(tls["ca"].cert_path),
                            credentials={hostile.host: ("tester", hostile.password)})
        try:
            cold_legacy_check(client, hostile)
        finally:
            client.close()
        statuses = [record.status for record in client.records if record.host == hostile.host]
        assert statuses.count(401) == 1 and statuses.count(404) == 2, statuses
        assert len(hostile.seen) == 6  # the 401, then tag, .sig, payload, referrers, fallback tag
        assert len(token_service.seen) == 1
        assert hostile.connections == 1
        assert token_service.connections == 1


def test_404s_on_plain_http_reuse_the_connection(keys) -> None:
    with HostileRegistry(keys["ecdsa-p256"]) as hostile:
        client = client_for(hostile.host)
        try:
            for n in range(5):
                with pytest.raises(NotFound):
                    client.get_manifest(hostile.host, hostile.repo, f"missing-{n}")
            cold_legacy_check(client, hostile)
        finally:
            client.close()
        assert len(hostile.seen) == 10
        assert hostile.connections == 1


def test_error_statuses_and_redirects_reuse_the_connection(keys) -> None:
    """A 500 that is retried, a 400 from the referrers API and a same-host redirect of a blob: each
    body is small, read and skipped, and the connection carries the next request."""
    with HostileRegistry(keys["ecdsa-p256"]) as hostile:
        payload_path = hostile.blob_path(hostile.payload_digest)
        hostile.routes["/v2/elsewhere"] = hostile.routes[payload_path]
        hostile.routes[payload_path] = [
            json_reply({"errors": [{"code": "UNKNOWN", "detail": hostile.secret}]}, 500, **{"Retry-After": "0"}),
            Reply(307, {"Location": "/v2/elsewhere", "Content-Type": "text/html"}, b"<a href=/v2/elsewhere>moved</a>"),
        ]
        hostile.routes[hostile.referrers_path] = json_reply({"errors": [{"code": "UNSUPPORTED"}]}, 400)
        client = client_for(hostile.host)
        try:
            assert client.get_blob(hostile.host, hostile.repo, hostile.payload_digest) == hostile.payload
            assert client.get_referrers(hostile.host, hostile.repo, hostile.digest, 50) is None
        finally:
            client.close()
        assert len(hostile.seen) == 4
        assert hostile.connections == 1


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_endless_404_body_is_not_read_past_the_cap(keys, framing: str) -> None:
    """An endless 404 body, chunked or with a huge Content-Length: the answer is still "not found",
    the client stops reading at DRAIN_CAP (or reads nothing, for a declared size over it) and drops
    that connection; the next request opens a new one."""
    with HostileRegistry(keys["ecdsa-p256"]) as hostile:
        path = hostile.manifest_path("endless")
        declared = None if framing == "chunked" else 1 << 30
        hostile.routes[path] = Reply(404, {"Content-Type": "application/json"}, b"{", framing=framing,
                                     declared_length=declared, endless=True)
        client = client_for(hostile.host)
        try:
            with pytest.raises(NotFound):
                client.get_manifest(hostile.host, hostile.repo, "endless")
            with pytest.raises(NotFound):
                client.get_manifest(hostile.host, hostile.repo, "missing")
        finally:
            client.close()
        assert hostile.connections == 2
        # What left the server: what the client read (at most the cap and one read more) plus what
        # the two sockets' buffers held when the client hung up. Reading without the cap would
        # take gigabytes off the 1 GiB stream.
        assert hostile.sent[path] < DRAIN_CAP + 64 * 1024 + 24 * 1024 * 1024


def test_dripping_404_body_is_abandoned_within_the_deadline(keys) -> None:
    """A 404 whose small body drips a byte at a time: the client gives up draining it (the
    connection is closed) and the check goes on, instead of spending its deadline on a body it
    does not need. Without the limit, reading 400 bytes at 0.1 s each would outlast the deadline
    and the second request would fail."""
    with HostileRegistry(keys["ecdsa-p256"]) as hostile:
        path = hostile.manifest_path("drip")
        hostile.routes[path] = Reply(404, {"Content-Type": "application/json"}, b" " * 400, drip=0.1)
        client = client_for(hostile.host, deadline=6.0)
        try:
            with pytest.raises(NotFound):
                client.get_manifest(hostile.host, hostile.repo, "drip")
            manifest = client.get_manifest(hostile.host, hostile.repo, hostile.tag)
        finally:
            client.close()
        assert manifest.digest == hostile.digest
        assert hostile.connections == 2
        assert hostile.sent[path] < 400


def test_body_without_length_is_not_drained(keys) -> None:
    """A 404 framed by closing the connection: such a connection can never be reused, so it is not
    read at all, even when the server holds it open."""
    with HostileRegistry(keys["ecdsa-p256"]) as hostile:
        path = hostile.manifest_path("close-framed")
        hostile.routes[path] = Reply(404, {"Content-Type": "application/json"}, b"{}", framing="close", endless=True)
        client = client_for(hostile.host)
        try:
            with pytest.raises(NotFound):
                client.get_manifest(hostile.host, hostile.repo, "close-framed")
            client.get_manifest(hostile.host, hostile.repo, hostile.tag)
        finally:
            client.close()
        assert hostile.connections == 2
        assert hostile.sent[path] < 64 * 1024 + 24 * 1024 * 1024


def test_one_tls_context_per_bundle_and_reloaded_when_the_bundle_changes(keys, tmp_path: Path) -> None:
    """The TLS context is shared by every client of the process for one caBundle, and the trust is
    what the bundle file says now: a bundle replaced in place (a rotated Secret) is read again."""
    first = certs.make_ca(tmp_path / "first", "first CA")
    second = certs.make_ca(tmp_path / "second", "second CA")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(first.cert_path.read_bytes())
    with HostileRegistry(keys["ecdsa-p256"], tls=certs.make_server_cert(second, tmp_path / "tls")) as hostile:
        clients = [client_for(ca_bundle=str(bundle)) for _ in range(2)]
        try:
            with pytest.raises(RegistryUnreachable, match="unknown authority"):
                clients[0].get_manifest(hostile.host, hostile.repo, hostile.tag)
            with pytest.raises(RegistryUnreachable, match="unknown authority"):
                clients[1].get_manifest(hostile.host, hostile.repo, hostile.tag)
            assert registry_module.shared_tls_context(str(bundle)) is registry_module.shared_tls_context(str(bundle))
            bundle.write_bytes(second.cert_path.read_bytes())
            fresh = client_for(ca_bundle=str(bundle))
            clients.append(fresh)
            assert fresh.get_manifest(hostile.host, hostile.repo, hostile.tag).digest == hostile.digest
        finally:
            for client in clients:
                client.close()


def test_without_a_bundle_the_test_ca_is_not_trusted(keys, tls) -> None:
    """The shared default context trusts what requests' verify=True trusted: not a private CA."""
    with HostileRegistry(keys["ecdsa-p256"], tls=tls["server"]) as hostile:
        client = client_for()
        try:
            with pytest.raises(RegistryUnreachable, match="unknown authority"):
                client.get_manifest(hostile.host, hostile.repo, hostile.tag)
        finally:
            client.close()
        assert hostile.seen == []


def test_the_verifier_service_builds_the_tls_contexts_before_it_forks(tmp_path: Path, monkeypatch) -> None:
    """`signgate serve` warms the default context and the configured caBundle's in its parent, so
    that each forked worker inherits them instead of loading certifi's bundle again."""
    import multiprocessing

    from signgate import service
    from support.signer import generate_key

    ca = certs.make_ca(tmp_path / "ca", "registry CA")
    key = generate_key("ecdsa-p256", tmp_path, "cosign")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"keys": {"default": str(key.pub_path)},
                                  "registries": {"caBundle": str(ca.cert_path)},
                                  "policy": [{"images": "**"}]}))
    monkeypatch.setenv("SIGNGATE_CONFIG", str(config))
    monkeypatch.setattr(registry_module, "_TLS_CONTEXTS", {})
    service.preload()
    assert set(registry_module._TLS_CONTEXTS) == {None, str(ca.cert_path)}
    warmed = registry_module._TLS_CONTEXTS[str(ca.cert_path)][1]

    def child(result: Any) -> None:  # a worker is a fork of the parent, as in the service
        result.put(registry_module.shared_tls_context(str(ca.cert_path)) is warmed)

    queue = multiprocessing.get_context("fork").SimpleQueue()
    worker = multiprocessing.get_context("fork").Process(target=child, args=(queue,))
    worker.start()
    worker.join(30)
    assert queue.get() is True


def test_a_broken_configuration_does_not_stop_the_service_warming_up(tmp_path: Path, monkeypatch) -> None:
    from signgate import service

    (tmp_path / "config.yaml").write_text("policy: [")
    monkeypatch.setenv("SIGNGATE_CONFIG", str(tmp_path / "config.yaml"))
    monkeypatch.setattr(registry_module, "_TLS_CONTEXTS", {})
    service.preload()
    assert set(registry_module._TLS_CONTEXTS) == {None}
