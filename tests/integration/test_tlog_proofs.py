"""Issue 16 in the hook's cosign path: inclusion proofs, checkpoints, Rekor v2 and bundle media types.

What must hold, through the real hook executable against a real docker-registry:

- whenever a bundle carries an inclusion proof it is verified, SET or not, whatever `tlog` says:
  a broken proof, a proof of another entry, or a checkpoint not signed by the entry's log fails
  that signature, with a message that says which;
- `tlog: required` accepts a Rekor v1 SET, or a Rekor v2 inclusion proof up to a checkpoint signed
  by a key in `rekorKeys` (Rekor v2 logs are found by their C2SP checkpoint key ID);
- the logged entry must be about this signature (body's digest, signature and key);
- bundle media types are accepted for v0.1, v0.2, v0.3 and the `bundle.v0.3+json` form only.

The log is tests/support/tlog.py: real keys signing real SETs and checkpoints over a real RFC 6962
tree.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Mapping

import pytest

from support.contract import HookRun, request_for, run_request
from support.oci import PushedImage, RegistryHTTP, push_image
from support.signer import (
    BUNDLE_MEDIA_TYPE,
    INTOTO_PAYLOAD_TYPE,
    attach_bundle,
    dsse_envelope,
    in_toto_statement,
    pae,
    TestKey,
)
from support.tlog import TestLog, dsse_v001_body, dsse_v002_body, hashedrekord_v002_body, new_log

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestLog]:
    directory = tmp_path_factory.mktemp("logs")
    return {
        "v1": new_log(directory, "rekor.test", "v1"),
        "v2": new_log(directory, "log2025-1.rekor.test", "v2"),
        "stranger-v1": new_log(directory, "stranger.test", "v1"),
        "stranger-v2": new_log(directory, "stranger2.rekor.test", "v2"),
    }


# ---- helpers -------------------------------------------------------------------------------------


class Signed:
    def __init__(self, key: TestKey, digest: str) -> None:
        self.key = key
        self.statement = in_toto_statement(digest)
        self.signature = key.sign(pae(INTOTO_PAYLOAD_TYPE, self.statement))

    def v001_body(self, signature: bytes | None = None) -> bytes:
        return dsse_v001_body(self.statement, signature or self.signature, self.key.public_pem)

    def hashedrekord_v002_body(self) -> bytes:
        return hashedrekord_v002_body(pae(INTOTO_PAYLOAD_TYPE, self.statement), self.signature, self.key.public_der)

    def dsse_v002_body(self) -> bytes:
        return dsse_v002_body(self.statement, self.signature, self.key.public_der)

    def bundle(self, entries: list[dict[str, Any]] | None, media_type: str = BUNDLE_MEDIA_TYPE) -> bytes:
        material: dict[str, Any] = {"publicKey": {"hint": self.key.hint}}
        if entries is not None:
            material["tlogEntries"] = entries
        return json.dumps(
            {
                "mediaType": media_type,
                "verificationMaterial": material,
                "dsseEnvelope": dsse_envelope(self.statement, INTOTO_PAYLOAD_TYPE, [self.signature]),
            }
        ).encode()


def admit(tmp_path: Path, http: RegistryHTTP, key: TestKey, image: PushedImage, tlog: str, rekor: Mapping[str, TestLog]) -> HookRun:
    data: dict[str, Any] = {
        "keys": {"release": str(key.pub_path)},
        "registries": {"insecure": [http.host]},
        "policy": [{"images": "**", "keys": ["release"], "tlog": tlog}],
    }
    if rekor:
        data["rekorKeys"] = {name: str(log.pub_path) for name, log in rekor.items()}
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(data))
    run = run_request(path, request_for("Pod", [image.reference]))
    assert run.returncode == 0, run.stderr
    assert run.response is not None, run.stderr
    return run


def signed_image(http: RegistryHTTP, repo: str, key: TestKey, make_entries, media_type: str = BUNDLE_MEDIA_TYPE) -> PushedImage:
    image = push_image(http, repo, "v1")
    signed = Signed(key, image.digest)
    attach_bundle(http, repo, image, signed.bundle(make_entries(signed), media_type))
    return image


def corrupt_first_hash(entry: dict[str, Any]) -> dict[str, Any]:
    hashes = entry["inclusionProof"]["hashes"]
    hashes[0] = hashes[0][:4] + ("A" if hashes[0][4] != "A" else "B") + hashes[0][5:]
    return entry


# ---- Rekor v1: SET and proof -----------------------------------------------------------------------


def test_a_rekor_v1_entry_with_set_and_proof_is_admitted(tmp_path, http, repo, keys, logs) -> None:
    key = keys["ecdsa-p256"]
    image = signed_image(http, repo, key, lambda s: [logs["v1"].entry(s.v001_body())])
    run = admit(tmp_path, http, key, image, "required", {"log": logs["v1"]})
    assert run.allowed, run.message


def test_a_broken_proof_is_denied_even_beside_a_valid_set(tmp_path, http, repo, keys, logs) -> None:
    key = keys["ecdsa-p256"]
    image = signed_image(http, repo, key, lambda s: [corrupt_first_hash(logs["v1"].entry(s.v001_body()))])
    run = admit(tmp_path, http, key, image, "required", {"log": logs["v1"]})
    assert not run.allowed
    assert "signature by key release: its transparency-log inclusion proof does not verify: its inclusion proof does not lead to the root hash it names" in run.message


def test_a_broken_proof_is_denied_under_tlog_ignore_too(tmp_path, http, repo, keys, logs) -> None:
    key = keys["ecdsa-p256"]
    image = signed_image(http, repo, key, lambda s: [corrupt_first_hash(logs["v1"].entry(s.v001_body()))])
    for rekor in ({"log": logs["v1"]}, {}):
        run = admit(tmp_path, http, key, image, "ignore", rekor)
        assert not run.allowed
        assert "its inclusion proof does not lead to the root hash it names" in run.message


def test_the_same_bundle_without_the_broken_proof_passes_under_tlog_ignore(tmp_path, http, repo, keys, logs) -> None:
    # The control for the case above: only the proof differs.
    key = keys["ecdsa-p256"]
    image = signed_image(http, repo, key, lambda s: [logs["v1"].entry(s.v001_body())])
    assert admit(tmp_path, http, key, image, "ignore", {}).allowed


def test_a_genuine_proof_of_another_entry_is_denied(tmp_path, http, repo, keys, logs) -> None:
    # The log really holds this body, and the proof and checkpoint are genuine, but the body is
    # about another signature by the same key: it proves nothing about this one.
    key = keys["ecdsa-p256"]
    other = key.sign(b"another statement")
    image = signed_image(http, repo, key, lambda s: [logs["v1"].entry(s.v001_body(other), promise=False)])
    run = admit(tmp_path, http, key, image, "required", {"log": logs["v1"]})
    assert not run.allowed
    assert "signature by key release: the transparency-log entry is for another signature or key" in run.message


def test_a_checkpoint_signed_by_an_unknown_key_is_denied(tmp_path, http, repo, keys, logs) -> None:
    key = keys["ecdsa-p256"]
    image = signed_image(
        http, repo, key, lambda s: [logs["v1"].entry(s.v001_body(), checkpoint_signer=logs["stranger-v1"])]
    )
    run = admit(tmp_path, http, key, image, "required", {"log": logs["v1"]})
    assert not run.allowed
    assert "its transparency-log inclusion proof does not verify: its checkpoint is not signed by the log's key" in run.message


# ---- Rekor v2: proof and checkpoint, no SET ------------------------------------------------------


@pytest.mark.parametrize("body", ["hashedrekord_v002_body", "dsse_v002_body"])
def test_a_rekor_v2_proof_with_a_checkpoint_by_a_rekor_key_meets_tlog_required(tmp_path, http, repo, keys, logs, body) -> None:
    key = keys["ecdsa-p256"]
    kind = ("hashedrekord", "0.0.2") if body.startswith("hashed") else ("dsse", "0.0.2")
    image = signed_image(http, repo, key, lambda s: [logs["v2"].entry(getattr(s, body)(), kind)])
    run = admit(tmp_path, http, key, image, "required", {"rekor-v2": logs["v2"]})
    assert run.allowed, run.message


def test_a_rekor_v2_entry_from_a_log_not_in_rekor_keys_is_denied(tmp_path, http, repo, keys, logs) -> None:
    key = keys["ecdsa-p256"]
    image = signed_image(http, repo, key, lambda s: [logs["stranger-v2"].entry(s.hashedrekord_v002_body(), ("hashedrekord", "0.0.2"))])
    run = admit(tmp_path, http, key, image, "required", {"rekor-v2": logs["v2"], "rekor-v1": logs["v1"]})
    assert not run.allowed
    assert f"its transparency-log entry is from log {logs['stranger-v2'].log_id.hex()[:16]}…, whose key is not trusted" in run.message


def test_a_rekor_v2_checkpoint_signed_by_another_log_is_denied(tmp_path, http, repo, keys, logs) -> None:
    key = keys["ecdsa-p256"]
    image = signed_image(
        http, repo, key,
        lambda s: [logs["v2"].entry(s.hashedrekord_v002_body(), ("hashedrekord", "0.0.2"), checkpoint_signer=logs["stranger-v2"])],
    )
    run = admit(tmp_path, http, key, image, "required", {"rekor-v2": logs["v2"], "other": logs["stranger-v2"]})
    assert not run.allowed
    assert "its checkpoint is not signed by the log's key" in run.message


def test_a_rekor_v2_entry_for_another_signature_is_denied(tmp_path, http, repo, keys, logs) -> None:
    key = keys["ecdsa-p256"]

    def entries(signed: Signed) -> list[dict[str, Any]]:
        body = hashedrekord_v002_body(b"something else", key.sign(b"something else"), key.public_der)
        return [logs["v2"].entry(body, ("hashedrekord", "0.0.2"))]

    image = signed_image(http, repo, key, entries)
    run = admit(tmp_path, http, key, image, "required", {"rekor-v2": logs["v2"]})
    assert not run.allowed
    assert "the transparency-log entry is for another payload" in run.message


def test_a_proof_without_a_checkpoint_does_not_meet_tlog_required(tmp_path, http, repo, keys, logs) -> None:
    key = keys["ecdsa-p256"]

    def entries(signed: Signed) -> list[dict[str, Any]]:
        entry = logs["v1"].entry(signed.v001_body(), promise=False)
        del entry["inclusionProof"]["checkpoint"]
        return [entry]

    image = signed_image(http, repo, key, entries)
    run = admit(tmp_path, http, key, image, "required", {"log": logs["v1"]})
    assert not run.allowed
    assert "its inclusion proof has no signed checkpoint, and no inclusion promise proves it" in run.message


# ---- media types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    ],
)
def test_known_bundle_versions_are_accepted(tmp_path, http, repo, keys, media_type) -> None:
    key = keys["ecdsa-p256"]
    image = signed_image(http, repo, key, lambda s: None, media_type)
    assert admit(tmp_path, http, key, image, "ignore", {}).allowed


@pytest.mark.parametrize(
    "media_type",
    ["application/vnd.dev.sigstore.bundle+json;version=99.9", "application/vnd.dev.sigstore.bundle.v0.4+json"],
)
def test_an_unknown_bundle_version_is_refused_and_named(tmp_path, http, repo, keys, media_type) -> None:
    key = keys["ecdsa-p256"]
    image = signed_image(http, repo, key, lambda s: None, media_type)
    run = admit(tmp_path, http, key, image, "ignore", {})
    assert not run.allowed
    assert f"its bundle media type {media_type!r} is not a known sigstore bundle version (0.1 to 0.3)" in run.message
