"""Fewer round trips on the critical path (issue 18, item 2), proved by observation, not by timing.

At real registry latency every request issued after another costs a round trip. Once the digest
is known, the `.sig` manifest, the referrers probe and the fallback tag do not depend on each
other, nor do the payloads of several signature layers: the hook must have them in flight
together. Each test below makes the registry (tests/support/hostile.py) hold one answer until the
request it should be concurrent with has also arrived. A hook that sends them one after another
cannot satisfy that: the held answer then gives up after HOLD_SECONDS (so the test fails instead
of hanging) and the test sees that the partner request was not there.

The other two promises are counted in the servers' own logs: the images of one admission share
one token per registry and scope, and a cached verdict sends no request at all.

Every case runs the real hook executable as shell-operator does (contract.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support.contract import HookRun, request_for, run_request
from support.hostile import ConnectionAudit, HostileRegistry, Reply, Seen, write_config
from support.oci import sha256_digest
from support.signer import TestKey, b64

# How long a held answer waits for its partner request. Far longer than two loopback requests
# take when they are sent together; short enough that a sequential hook fails the test quickly.
HOLD_SECONDS = 3.0


@pytest.fixture
def key(keys: dict[str, TestKey]) -> TestKey:
    return keys["ecdsa-p256"]


@pytest.fixture
def hostile(key: TestKey) -> Iterator[HostileRegistry]:
    with HostileRegistry(key) as server:
        yield server


def admit(hostile: HostileRegistry, key: TestKey, tmp_path: Path, *images: str, cache_dir: Path | None = None) -> HookRun:
    audit = ConnectionAudit(tmp_path / "audit", allow=[hostile.host])
    config = write_config(tmp_path / "config.json", key, registries={"insecure": [hostile.host]})
    env = dict(audit.env)
    if cache_dir is not None:
        env["SIGNGATE_CACHE_DIR"] = str(cache_dir)
    run = run_request(config, request_for("Pod", list(images or (hostile.reference,))), env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert audit.blocked() == [], audit.blocked()
    return run


class Rendezvous:
    """Routes that answer only once every one of `paths` has been requested (or HOLD_SECONDS passed).

    `together` stays True only if, for every held request, all partners had arrived in time.
    """

    def __init__(self, hostile: HostileRegistry, paths: list[str]) -> None:
        self.arrived = {path: threading.Event() for path in paths}
        self.together = True
        self.held: list[str] = []
        for path in paths:
            original = hostile.routes.get(path)
            hostile.routes[path] = self._route(hostile, path, original)

    def _route(self, hostile: HostileRegistry, path: str, original: object) -> Callable[[Seen], Reply]:
        def answer(request: Seen) -> Reply:
            self.arrived[path].set()
            self.held.append(path)
            for event in self.arrived.values():
                if not event.wait(HOLD_SECONDS):
                    self.together = False
            if original is None:
                return hostile.not_found()
            return original(request) if callable(original) else original  # type: ignore[return-value]

        return answer


@pytest.mark.parametrize("by", ["digest", "tag"])
def test_the_sig_manifest_referrers_probe_and_fallback_tag_are_in_flight_together(
    hostile: HostileRegistry, key: TestKey, tmp_path: Path, by: str
) -> None:
    together = [hostile.sig_path, hostile.referrers_path, hostile.fallback_path]
    if by == "digest":
        # The lookups need only the digest, which the reference already names: they go out beside
        # the image manifest itself.
        together.append(hostile.manifest_path(hostile.digest))
    meeting = Rendezvous(hostile, together)
    run = admit(hostile, key, tmp_path, hostile.by_digest if by == "digest" else hostile.reference)
    assert run.response == {"allowed": True}, run.message
    assert sorted(meeting.held) == sorted(together)
    assert meeting.together, f"these were requested one after another: {together}"
    # Each once: fetching them together adds no request but the fallback tag's.
    for path in together:
        assert len(hostile.requests_to(path)) == 1, hostile.paths()


def test_an_image_missing_by_digest_is_still_named_as_missing(hostile: HostileRegistry, key: TestKey, tmp_path: Path) -> None:
    # Its signature lookups went out beside the manifest, but the manifest's answer decides first.
    missing = sha256_digest(b"no such image")
    image = f"{hostile.host}/{hostile.repo}@{missing}"
    run = admit(hostile, key, tmp_path, image)
    assert run.allowed is False
    assert f"the registry has no image {hostile.host}/{hostile.repo} with digest {missing}" in run.message, run.message


def test_the_payloads_of_two_signature_layers_are_fetched_together(
    hostile: HostileRegistry, key: TestKey, tmp_path: Path
) -> None:
    # A second payload: the same claims with a trailing newline (other bytes, so another blob),
    # signed by the same key. Both layers are valid; both must be fetched, and together.
    second = hostile.payload + b"\n"
    second_digest = sha256_digest(second)
    hostile.routes[hostile.blob_path(second_digest)] = Reply(200, {"Content-Type": "application/octet-stream"}, second)
    second_layer = hostile.signature_layer(
        annotation=b64(key.sign(second)), size=len(second), digest=second_digest
    )
    hostile.set_signature_layers([hostile.signature_layer(), second_layer])
    first_path, second_path = hostile.blob_path(hostile.payload_digest), hostile.blob_path(second_digest)
    meeting = Rendezvous(hostile, [first_path, second_path])
    run = admit(hostile, key, tmp_path, hostile.by_digest)
    assert run.response == {"allowed": True}, run.message
    assert sorted(meeting.held) == sorted([first_path, second_path])
    assert meeting.together, "the payloads of the two layers were fetched one after another"


def test_a_layer_over_the_size_limit_is_still_not_fetched(hostile: HostileRegistry, key: TestKey, tmp_path: Path) -> None:
    # The limits apply before anything is fetched, concurrently or not.
    big = hostile.signature_layer(size=10**9, digest=sha256_digest(b"big"))
    hostile.set_signature_layers([big, hostile.signature_layer()])
    run = admit(hostile, key, tmp_path, hostile.by_digest)
    assert run.response == {"allowed": True}, run.message
    assert hostile.requests_to(hostile.blob_path(sha256_digest(b"big"))) == []


def test_the_first_failing_layer_is_reported_in_layer_order_whatever_answers_first(
    hostile: HostileRegistry, key: TestKey, tmp_path: Path
) -> None:
    # Both payloads are held until both have arrived, so they answer in either order; the denial
    # names layer 0's problem first: results are checked in layer order, not in order of arrival.
    first_bad = sha256_digest(b"first")
    second_bad = sha256_digest(b"second")
    for digest in (first_bad, second_bad):
        hostile.routes[hostile.blob_path(digest)] = Reply(503)
    hostile.set_signature_layers([
        hostile.signature_layer(size=5, digest=first_bad),
        hostile.signature_layer(size=6, digest=second_bad),
    ])
    meeting = Rendezvous(hostile, [hostile.blob_path(first_bad), hostile.blob_path(second_bad)])
    run = admit(hostile, key, tmp_path, hostile.by_digest)
    assert run.allowed is False
    assert meeting.together
    message = run.message
    assert first_bad in message and "(and 1 more signature(s) could not be read)" in message, message
    assert message.index(first_bad) < (message.index(second_bad) if second_bad in message else len(message)), message


def test_the_images_of_one_request_share_one_token_per_registry_and_scope(
    hostile: HostileRegistry, key: TestKey, tmp_path: Path
) -> None:
    # Three references to one repository, verified in three threads, each with its lookups in
    # flight together: every first request is refused (401), and yet one token is fetched.
    hostile.require_bearer = hostile.token
    images = (hostile.reference, hostile.by_digest, f"{hostile.host}/{hostile.repo}:{hostile.tag}@{hostile.digest}")
    run = admit(hostile, key, tmp_path, *images)
    assert run.response == {"allowed": True}, run.message
    assert len(hostile.requests_to("/token")) == 1, hostile.paths()


def test_a_cached_verdict_sends_no_request_at_all(hostile: HostileRegistry, key: TestKey, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    images = (hostile.reference, hostile.by_digest)
    first = admit(hostile, key, tmp_path, *images, cache_dir=cache)
    assert first.response == {"allowed": True}, first.message
    assert hostile.paths(), "the first admission asked the registry"
    before = len(hostile.paths())
    second = admit(hostile, key, tmp_path, *images, cache_dir=cache)
    assert second.response == {"allowed": True}, second.message
    assert hostile.paths()[before:] == [], "a cached verdict (and tag) still went to the registry"
