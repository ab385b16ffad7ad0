"""Specification: registry traffic honours the proxy environment (HTTP_PROXY, NO_PROXY).

Clusters often reach registries only through an egress proxy. The hook takes the proxy from its
environment (the chart's `extraEnv`), per registry host; with the verifier service, the worker
uses the service container's own environment (only SIGNGATE_* variables travel with a request),
which the chart fills from the same `extraEnv`.

The proxy here is a small forwarding proxy on 127.0.0.1 that records what passes through it and
relays it to the real docker-registry; it is a stand-in for an egress proxy, not for the registry.
"""

from __future__ import annotations

import http.client
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from support.contract import request_for, run_request, write_config
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.service import VerifierService
from support.signer import TestKey, sign_legacy


class ForwardingProxy:
    """An HTTP proxy for plain-HTTP targets: absolute-form requests in, relayed to their host."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                target = urllib.parse.urlsplit(self.path)
                proxy.seen.append(self.path)
                if target.scheme != "http" or not target.netloc:
                    self.send_error(400, "absolute http:// URL expected")
                    return
                upstream = http.client.HTTPConnection(target.netloc, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection", "host")}
                upstream.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers)
                reply = upstream.getresponse()
                body = reply.read()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy() -> Iterator[ForwardingProxy]:
    running = ForwardingProxy()
    yield running
    running.close()


@pytest.fixture
def signed(registry: Registry, http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> PushedImage:
    image = push_image(http, repo, "v1")
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    return image


def through_proxy(proxy: ForwardingProxy, registry: Registry) -> list[str]:
    return [url for url in proxy.seen if urllib.parse.urlsplit(url).netloc == registry.host]


CASES = [
    # (name, environment beyond HTTP_PROXY, requests expected through the proxy)
    ("HTTP_PROXY carries every registry request", {}, 5),
    # requests' NO_PROXY semantics: an IP address matches as the bare address or a CIDR range.
    ("NO_PROXY naming the registry address goes direct", {"NO_PROXY": "{address}"}, 0),
    ("NO_PROXY with a CIDR range holding the registry goes direct", {"NO_PROXY": "127.0.0.0/8"}, 0),
    ("NO_PROXY naming another host still uses the proxy", {"NO_PROXY": "registry.example.com"}, 5),
]


@pytest.mark.parametrize("name, extra, expected", CASES, ids=[c[0] for c in CASES])
def test_the_hook_honours_the_proxy_environment(name, extra, expected, proxy, registry, signed, keys, tmp_path) -> None:
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, registry.host)
    address = registry.host.rsplit(":", 1)[0]
    env = {"HTTP_PROXY": proxy.url, **{k: v.format(address=address) for k, v in extra.items()}}
    run = run_request(config, request_for("Pod", [signed.reference]), env=env)
    assert run.allowed, run.message
    assert len(through_proxy(proxy, registry)) == expected, proxy.seen


def test_with_the_verifier_service_the_worker_uses_the_services_own_proxy(proxy, registry, signed, keys, tmp_path) -> None:
    config = write_config(tmp_path, keys["ecdsa-p256"].pub_path, registry.host)
    directory = Path(tempfile.mkdtemp(prefix="sg-proxy-", dir="/tmp"))
    with VerifierService(directory, env={"HTTP_PROXY": proxy.url}) as service:
        # The hook's own HTTP_PROXY would point nowhere: only SIGNGATE_* travels to the worker.
        run = run_request(
            config, request_for("Pod", [signed.reference]),
            env={"SIGNGATE_VERIFIER_SOCKET": str(service.socket), "HTTP_PROXY": "http://127.0.0.1:9"},
        )
    assert run.allowed, run.message
    assert not [e for e in run.logs if "verifier service unavailable" in e.get("msg", "")], run.stderr
    assert len(through_proxy(proxy, registry)) == 5, proxy.seen
