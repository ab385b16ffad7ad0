"""Specification of cosign v3 signatures: sigstore bundles attached to an image as OCI referrers.

What must hold (cosign-format.md §6.2, bundle.py, verify.py):

- a bundle counts when its DSSE signature verifies over the PAE with a trusted key, its payload is
  an in-toto statement with cosign's signature predicate, a subject carries the image digest, and
  the rule's annotations are among that subject's annotations;
- bundles are found through the referrers API, or, where the registry has none (docker-registry
  2.8, used here), through the fallback tag `sha256-<hex>`; every referrer manifest is fetched,
  whatever the index says its artifactType is, and only single-bundle-layer manifests count;
- both layouts count: a valid `.sig` is not hidden by a foreign bundle (cosign v3 would hide it),
  and thresholds count distinct keys across layouts.

Registry-backed tests run the real hook executable (contract.py) against a real docker-registry.
The referrers API itself, which that registry lacks, is served by `MemoryRegistry` below: a tiny
stdlib HTTP server on 127.0.0.1 that serves exactly the bytes it is given.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from support.contract import HookRun, request_for, run_request
from signgate.verifiers.cosign.bundle import check_bundle, check_statement
from signgate.verifiers.cosign.bundle import pae as library_pae
from signgate.config import build_config
from signgate.verifiers.cosign.legacy import Requirements
from signgate.deadline import Deadline
from signgate.keys import PublicKey, load_public_key
from signgate.config import KeySpec
from signgate.reference import parse_reference
from signgate.registry import RegistryClient
from signgate.verifiers import evaluate_image
from signgate.keyring import KeyRing
from signgate.verdict import ImageVerdict
from support.oci import OCI_INDEX, OCI_MANIFEST, PushedImage, RegistryHTTP, canonical_json, push_image, sha256_digest
from support.signer import (
    BUNDLE_MEDIA_TYPE,
    COSIGN_SIGN_PREDICATE,
    EMPTY_JSON,
    INTOTO_PAYLOAD_TYPE,
    attach_referrer,
    b64,
    dsse_envelope,
    fallback_tag,
    in_toto_statement,
    pae,
    referrer_descriptor,
    referrer_manifest,
    sign_bundle,
    sign_legacy,
    sigstore_bundle,
    TestKey,
)

SBOM_TYPE = "application/spdx+json"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"


# ---- shared helpers (test_rekor.py and test_multiarch.py import these) ------------------------------


def config_data(
    hosts: list[str],
    keys: Mapping[str, TestKey | Path | str],
    rule: Mapping[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A configuration whose only rule covers everything on `hosts` (plain HTTP)."""
    key_paths = {name: str(k.pub_path if isinstance(k, TestKey) else k) for name, k in keys.items()}
    return {
        "keys": key_paths,
        "registries": {"insecure": list(hosts)},
        "policy": [{"images": "**", "keys": list(key_paths), **(rule or {})}],
        **top,
    }


def write_config(tmp_path: Path, data: Mapping[str, Any]) -> Path:
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(data))
    return path


def admit(tmp_path: Path, data: Mapping[str, Any], image: str) -> HookRun:
    """Run the real hook on a Pod with one container running `image`."""
    run = run_request(write_config(tmp_path, data), request_for("Pod", [image]))
    assert run.returncode == 0, run.stderr
    assert run.response is not None, run.stderr
    return run


def verify(data: Mapping[str, Any], image: str) -> ImageVerdict:
    """evaluate_image with the configuration's only rule, in-process (for details and reasons)."""
    config = build_config(data, "test-config.json")
    client = RegistryClient(config.registries, config.limits, Deadline(30))
    try:
        return evaluate_image(config, config.policy[0], parse_reference(image), client, KeyRing(config.keys, config.rekor_keys))
    finally:
        client.close()


def public_key(key: TestKey, name: str = "release") -> PublicKey:
    return load_public_key(KeySpec(name, str(key.pub_path)))


def make_bundle(
    key: TestKey,
    subject_digest: str,
    *,
    annotations: Mapping[str, str] | None = None,
    predicate_type: str = COSIGN_SIGN_PREDICATE,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """A key-signed bundle as cosign v3 writes it; `extra` is merged into verificationMaterial."""
    statement = in_toto_statement(subject_digest, annotations=annotations, predicate_type=predicate_type)
    signature = key.sign(pae(INTOTO_PAYLOAD_TYPE, statement))
    bundle = json.loads(sigstore_bundle(dsse_envelope(statement, INTOTO_PAYLOAD_TYPE, [signature]), key.hint))
    bundle["verificationMaterial"].update(extra or {})
    return canonical_json(bundle)


def sbom_referrer(subject: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(manifest, layer blob) of an SBOM attached as a referrer: an artifact, not a bundle."""
    sbom = canonical_json({"spdxVersion": "SPDX-2.3", "name": f"sbom-{uuid.uuid4().hex}"})
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": sha256_digest(EMPTY_JSON)},
            "layers": [{"mediaType": SBOM_TYPE, "size": len(sbom), "digest": sha256_digest(sbom)}],
            "subject": dict(subject),
        }
    )
    return manifest, sbom


class MemoryRegistry:
    """A read-only OCI registry held in memory on 127.0.0.1, with an OCI 1.1 referrers API.

    It validates nothing and serves exactly the bytes it was given, which is what lets tests serve
    the cosign interop fixtures (whose image blobs are absent) and referrers answers of any shape.
    `referrers` maps (repository, digest) to pages of descriptors, linked with `Link: rel="next"`;
    `referrers_answer` replaces the API's answer with (status, content type, body); `requests`
    records every path asked for, query included.
    """

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.referrers: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}
        self.referrers_api = True
        self.referrers_answer: tuple[int, str, bytes] | None = None
        self.next_link_base = ""  # e.g. "http://other-host:1" to make the next page point elsewhere
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                registry.requests.append(self.path)
                status, headers, body = registry.answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- content --------------------------------------------------------------------------------

    def put_manifest(self, repo: str, body: bytes, media_type: str, tag: str | None = None) -> str:
        digest = sha256_digest(body)
        self.manifests[(repo, digest)] = (body, media_type)
        if tag:
            self.manifests[(repo, tag)] = (body, media_type)
        return digest

    def put_blob(self, data: bytes) -> str:
        digest = sha256_digest(data)
        self.blobs[digest] = data
        return digest

    def put_image(self, repo: str, tag: str = "v1") -> dict[str, Any]:
        """A unique image manifest (its blobs are never fetched); returns its descriptor."""
        body = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": sha256_digest(b"{}")},
                "layers": [],
                "annotations": {"test": uuid.uuid4().hex},
            }
        )
        digest = self.put_manifest(repo, body, OCI_MANIFEST, tag)
        return {"mediaType": OCI_MANIFEST, "size": len(body), "digest": digest}

    def put_referrer(self, repo: str, manifest: bytes, blobs: list[bytes]) -> dict[str, Any]:
        for blob in blobs:
            self.put_blob(blob)
        self.put_manifest(repo, manifest, OCI_MANIFEST)
        return referrer_descriptor(manifest, json.loads(manifest).get("artifactType"))

    def bundle_referrer(self, repo: str, subject: Mapping[str, Any], bundle: bytes) -> dict[str, Any]:
        manifest = referrer_manifest((sha256_digest(bundle), len(bundle)), subject)
        return self.put_referrer(repo, manifest, [EMPTY_JSON, bundle])

    def fallback_index(self, repo: str, digest: str, descriptors: list[dict[str, Any]]) -> None:
        index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
        self.put_manifest(repo, index, OCI_INDEX, fallback_tag(digest))

    # -- protocol -------------------------------------------------------------------------------

    def answer(self, raw_path: str) -> tuple[int, dict[str, str], bytes]:
        parts = urllib.parse.urlsplit(raw_path)
        path, query = parts.path, urllib.parse.parse_qs(parts.query)
        if path == "/v2/":
            return 200, {"Content-Type": "application/json"}, b"{}"
        for kind in ("manifests", "blobs", "referrers"):
            name, sep, reference = path[len("/v2/"):].rpartition(f"/{kind}/")
            if path.startswith("/v2/") and sep and name and reference:
                return getattr(self, f"_{kind}")(name, reference, query)
        return self._not_found()

    def _manifests(self, name: str, reference: str, query: Any) -> tuple[int, dict[str, str], bytes]:
        found = self.manifests.get((name, reference))
        if found is None:
            return self._not_found()
        body, media_type = found
        return 200, {"Content-Type": media_type, "Docker-Content-Digest": sha256_digest(body)}, body

    def _blobs(self, name: str, reference: str, query: Any) -> tuple[int, dict[str, str], bytes]:
        body = self.blobs.get(reference)
        if body is None:
            return self._not_found()
        return 200, {"Content-Type": "application/octet-stream"}, body

    def _referrers(self, name: str, reference: str, query: Any) -> tuple[int, dict[str, str], bytes]:
        if self.referrers_answer is not None:
            status, content_type, body = self.referrers_answer
            return status, {"Content-Type": content_type}, body
        if not self.referrers_api:
            return self._not_found()
        pages = self.referrers.get((name, reference)) or [[]]
        page = int(query.get("page", ["0"])[0])
        headers = {"Content-Type": OCI_INDEX}
        if page + 1 < len(pages):
            headers["Link"] = f'<{self.next_link_base}/v2/{name}/referrers/{reference}?page={page + 1}>; rel="next"'
        body = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": pages[page]})
        return 200, headers, body

    def _not_found(self) -> tuple[int, dict[str, str], bytes]:
        return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NOT_FOUND"}]}'


@pytest.fixture
def memory_registry() -> Iterator[MemoryRegistry]:
    server = MemoryRegistry()
    yield server
    server.close()


# ---- fixtures of this module ----------------------------------------------------------------------


@pytest.fixture
def trusted(keys: dict[str, TestKey]) -> TestKey:
    return keys["ecdsa-p256"]


@pytest.fixture
def stranger(keys: dict[str, TestKey]) -> TestKey:
    return keys["other-ecdsa-p256"]


@pytest.fixture
def image(http: RegistryHTTP, repo: str) -> PushedImage:
    return push_image(http, repo, "v1")


@pytest.fixture
def config(http: RegistryHTTP, trusted: TestKey) -> dict[str, Any]:
    return config_data([http.host], {"release": trusted})


def bundle_for(http: RegistryHTTP, image: PushedImage, key: TestKey, **kwargs: Any) -> Any:
    return sign_bundle(http, image.repo, image.digest, image.media_type, image.size, key, **kwargs)


# ---- through the hook, against a real registry without a referrers API ------------------------------


def test_a_valid_bundle_under_the_fallback_tag_admits_the_image(tmp_path, http, image, trusted, config) -> None:
    bundle_for(http, image, trusted)
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message
    [logged] = run.decision_log["images"]
    assert logged["digest"] == image.digest and logged["keys"] == ["release"]


def test_no_signature_names_both_places_searched(tmp_path, http, image, config) -> None:
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert f"no signature found in {http.host}/{image.repo}" in run.message
    short = image.digest.partition(":")[2][:12]
    assert f"legacy tag sha256-{short}….sig" in run.message
    assert f"bundles under the fallback tag sha256-{short}… (no referrers API)" in run.message


def test_a_bundle_by_an_untrusted_key_is_denied_naming_the_trusted_keys(tmp_path, http, image, stranger, config) -> None:
    bundle_for(http, image, stranger)
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert "1 bundle found; none verifies with key(s) release" in run.message


def test_a_bundle_whose_subject_is_another_digest_is_denied(tmp_path, http, image, trusted, config) -> None:
    other = "sha256:" + "ab" * 32
    bundle_for(http, image, trusted, subject_digest=other)
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert f"signature by key release: the signature is for digest {other}, but the image resolves to {image.digest}" in run.message


def test_an_attestation_by_the_trusted_key_is_not_a_signature(tmp_path, http, image, trusted, config) -> None:
    bundle_for(http, image, trusted, predicate_type=SLSA_PROVENANCE)
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert "signature by key release: it is an attestation" in run.message
    assert SLSA_PROVENANCE in run.message


def test_a_tampered_envelope_payload_is_denied(tmp_path, http, image, trusted, config) -> None:
    bundle_for(http, image, trusted, tamper_payload=True)
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert "1 bundle found; none verifies with key(s) release" in run.message


def test_a_payload_type_other_than_in_toto_is_denied_and_says_so(http, image, trusted, config) -> None:
    # The key did sign (PAE binds the type), so the reader is told what is wrong, not "wrong key".
    bundle_for(http, image, trusted, payload_type="application/json")
    verdict = verify(config, image.reference)
    assert not verdict.passed
    assert "its DSSE payloadType is 'application/json', not application/vnd.in-toto+json" in verdict.message
    assert "signature by key release" in verdict.message


@pytest.mark.parametrize(
    "signed, required, allowed, explanation",
    [
        pytest.param({"env": "prod"}, {"env": "prod"}, True, None, id="required-annotation-present-admits"),
        pytest.param({"env": "prod", "team": "a"}, {"env": "prod"}, True, None, id="extra-annotations-are-fine"),
        pytest.param({"env": "dev"}, {"env": "prod"}, False, "its annotation env is 'dev', but 'prod' is required", id="other-value-denied"),
        pytest.param(None, {"env": "prod"}, False, "it lacks the required annotation env=prod", id="absent-annotation-denied"),
        pytest.param({"env": "prod"}, {}, True, None, id="rule-without-annotations-ignores-them"),
    ],
)
def test_rule_annotations_are_matched_against_the_bundle_subject(
    tmp_path, http, image, trusted, signed, required, allowed, explanation
) -> None:
    bundle_for(http, image, trusted, annotations=signed)
    data = config_data([http.host], {"release": trusted}, {"annotations": required})
    run = admit(tmp_path, data, image.reference)
    assert run.allowed is allowed, run.message
    if explanation:
        assert f"1 bundle found; none is valid: signature by key release: {explanation}" in run.message


def test_one_valid_bundle_among_two_suffices(tmp_path, http, image, trusted, stranger, config) -> None:
    bundle_for(http, image, stranger)
    bundle_for(http, image, trusted)
    assert len(json.loads(http.get_manifest(image.repo, fallback_tag(image.digest))[0])["manifests"]) == 2
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message


def test_a_valid_legacy_signature_counts_even_when_a_foreign_bundle_exists(tmp_path, http, image, trusted, stranger, config) -> None:
    # cosign v3 reads .sig only when it finds no bundle; signgate counts both layouts.
    sign_legacy(http, image.repo, image.digest, trusted)
    bundle_for(http, image, stranger)
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message


def test_a_valid_bundle_counts_even_when_a_foreign_legacy_signature_exists(tmp_path, http, image, trusted, stranger, config) -> None:
    sign_legacy(http, image.repo, image.digest, stranger)
    bundle_for(http, image, trusted)
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message


@pytest.mark.parametrize(
    "legacy_key, bundle_key, allowed",
    [
        pytest.param("ci", "release", True, id="two-keys-across-layouts-meet-threshold-2"),
        pytest.param("release", "release", False, id="one-key-in-both-layouts-counts-once"),
    ],
)
def test_thresholds_count_distinct_keys_across_layouts(tmp_path, http, image, keys, legacy_key, bundle_key, allowed) -> None:
    named = {"release": keys["ecdsa-p256"], "ci": keys["ecdsa-p384"]}
    sign_legacy(http, image.repo, image.digest, named[legacy_key])
    bundle_for(http, image, named[bundle_key])
    data = config_data([http.host], named, {"threshold": 2})
    run = admit(tmp_path, data, image.reference)
    assert run.allowed is allowed, run.message
    if not allowed:
        assert "signed by 1 of the 2 required keys (verified by: release; trusted: release, ci)" in run.message


def test_a_fallback_index_without_artifact_types_is_still_read(tmp_path, http, image, trusted, config) -> None:
    # Indexes written by cosign before ggcr v0.22.1 leave artifactType empty (cosign#4641).
    signed = bundle_for(http, image, trusted, index_artifact_type="")
    assert "artifactType" not in json.loads(signed.index)["manifests"][0]
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message


def test_a_fallback_index_that_lies_about_artifact_type_is_not_trusted(tmp_path, http, image, trusted, config) -> None:
    # The index says "SBOM"; the manifest holds a bundle. What counts is the manifest itself.
    bundle_for(http, image, trusted, index_artifact_type=SBOM_TYPE)
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message


def test_a_referrer_that_is_not_a_bundle_is_ignored(tmp_path, http, image, config) -> None:
    manifest, sbom = sbom_referrer(image.descriptor())
    attach_referrer(http, image.repo, image.digest, manifest, [sbom], SBOM_TYPE)
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert "no signature found" in run.message  # not "1 bundle found": an SBOM is no signature


def test_a_bundle_next_to_a_non_bundle_referrer_admits(tmp_path, http, image, trusted, config) -> None:
    manifest, sbom = sbom_referrer(image.descriptor())
    attach_referrer(http, image.repo, image.digest, manifest, [sbom], SBOM_TYPE)
    bundle_for(http, image, trusted)
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message


def test_messages_count_each_layout(tmp_path, http, image, stranger, config) -> None:
    bundle_for(http, image, stranger)
    bundle_for(http, image, stranger, annotations={"n": "2"})
    sign_legacy(http, image.repo, image.digest, stranger)
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert "2 bundles and 1 legacy signature found; none verifies with key(s) release" in run.message


def test_check_identity_cannot_be_met_by_a_bundle_and_says_why(tmp_path, http, image, trusted) -> None:
    bundle_for(http, image, trusted)
    data = config_data([http.host], {"release": trusted}, {"checkIdentity": True})
    run = admit(tmp_path, data, image.reference)
    assert not run.allowed
    assert "bundles name no repository, and the rule sets checkIdentity (only legacy signatures can meet it)" in run.message


def test_check_identity_is_met_by_a_legacy_signature_next_to_a_bundle(tmp_path, http, image, trusted) -> None:
    bundle_for(http, image, trusted)
    sign_legacy(http, image.repo, image.digest, trusted)
    data = config_data([http.host], {"release": trusted}, {"checkIdentity": True})
    run = admit(tmp_path, data, image.reference)
    assert run.allowed, run.message


def test_bundles_are_read_from_the_rules_signature_repository(tmp_path, http, image, trusted, repo) -> None:
    signatures = f"{repo}-signatures"
    sign_bundle(http, image.repo, image.digest, image.media_type, image.size, trusted, sig_repo=signatures)
    assert http.find_manifest(image.repo, fallback_tag(image.digest), accept=(OCI_INDEX,)) is None
    data = config_data([http.host], {"release": trusted}, {"signatureRepository": f"{http.host}/{signatures}"})
    run = admit(tmp_path, data, image.reference)
    assert run.allowed, run.message


def test_max_referrers_caps_the_referrer_manifests_fetched_from_the_fallback_index(tmp_path, registry, http, image, trusted, stranger) -> None:
    bundle_for(http, image, stranger, annotations={"n": "1"})
    bundle_for(http, image, stranger, annotations={"n": "2"})
    signed = bundle_for(http, image, trusted)  # third in the index: beyond a cap of 2
    data = config_data([http.host], {"release": trusted}, limits={"maxReferrers": 2})
    mark = registry.mark()
    run = admit(tmp_path, data, image.reference)
    assert not run.allowed
    assert "2 bundles found; none verifies with key(s) release" in run.message
    fetched = [path for _, path, _ in registry.requests_since(mark) if "/manifests/sha256:" in path]
    assert f"/v2/{image.repo}/manifests/{signed.referrer_digest}" not in fetched
    assert len(fetched) == 2


def test_an_oversized_bundle_is_not_downloaded(http, image, trusted) -> None:
    padding = {"n": "x" * 2048}  # the bundle grows past maxBlobBytes (its minimum is 1024)
    bundle_for(http, image, trusted, annotations=padding)
    data = config_data([http.host], {"release": trusted}, limits={"maxBlobBytes": 1024})
    verdict = verify(data, image.reference)
    assert not verdict.passed
    assert any("its bundle size is missing or over the limit" in line for line in verdict.details)


# ---- check_bundle and check_statement: the pure core ------------------------------------------------

DIGEST = "sha256:" + "0123456789abcdef" * 4


def statement_bytes(**fields: Any) -> bytes:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": DIGEST.partition(":")[2]}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }
    statement.update(fields)
    return json.dumps(statement).encode()


def signed_bundle(keys_: list[TestKey], payload: bytes, **bundle_fields: Any) -> bytes:
    envelope = dsse_envelope(payload, INTOTO_PAYLOAD_TYPE, [k.sign(pae(INTOTO_PAYLOAD_TYPE, payload)) for k in keys_])
    bundle = {"mediaType": BUNDLE_MEDIA_TYPE, "verificationMaterial": {"publicKey": {"hint": keys_[0].hint}}, "dsseEnvelope": envelope}
    bundle.update(bundle_fields)
    return json.dumps(bundle).encode()


def test_pae_is_the_dsse_v1_encoding() -> None:
    assert library_pae("application/vnd.in-toto+json", b"{}") == b"DSSEv1 28 application/vnd.in-toto+json 2 {}"
    # Lengths are byte counts, not character counts.
    assert library_pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_a_cosign_shaped_bundle_counts_for_its_key(trusted) -> None:
    key = public_key(trusted)
    check = check_bundle("b", make_bundle(trusted, DIGEST), [key], DIGEST, Requirements())
    assert check.counts and check.keys == (key,) and check.problem is None and check.layout == "bundle"


@pytest.mark.parametrize(
    "data, problem",
    [
        pytest.param(b"\xff not json", "it is not valid JSON", id="non-json"),
        pytest.param(b"[1, 2]", "it is not a sigstore bundle", id="json-but-not-an-object"),
        pytest.param(json.dumps({"mediaType": "application/json", "dsseEnvelope": {}}).encode(), "it is not a sigstore bundle", id="wrong-media-type"),
        pytest.param(json.dumps({"dsseEnvelope": {}}).encode(), "it is not a sigstore bundle", id="no-media-type"),
        pytest.param(
            json.dumps(
                {
                    "mediaType": BUNDLE_MEDIA_TYPE,
                    "verificationMaterial": {"publicKey": {"hint": "x"}},
                    "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(b"0" * 32)}, "signature": b64(b"sig")},
                }
            ).encode(),
            "the bundle does not contain a DSSE envelope",
            id="message-signature-bundle",
        ),
        pytest.param(
            json.dumps({"mediaType": BUNDLE_MEDIA_TYPE, "dsseEnvelope": {"payloadType": INTOTO_PAYLOAD_TYPE, "payload": "%%%", "signatures": [{"sig": "AAAA"}]}}).encode(),
            "its DSSE payload is missing or not base64",
            id="payload-not-base64",
        ),
        pytest.param(
            json.dumps({"mediaType": BUNDLE_MEDIA_TYPE, "dsseEnvelope": {"payloadType": INTOTO_PAYLOAD_TYPE, "payload": b64(b"{}"), "signatures": []}}).encode(),
            "its DSSE envelope has no signatures",
            id="no-signatures",
        ),
    ],
)
def test_what_is_not_a_dsse_bundle_is_rejected(trusted, data, problem) -> None:
    check = check_bundle("b", data, [public_key(trusted)], DIGEST, Requirements())
    assert not check.counts
    assert check.problem == problem
    assert check.signed_by == ()


def test_several_dsse_signatures_count_each_trusted_key_that_signed(keys) -> None:
    # sigstore-go refuses envelopes with more than one signature; signgate counts each one that
    # verifies (see the report: a deliberate divergence in the library, documented here).
    a, b, stranger = keys["ecdsa-p256"], keys["ecdsa-p384"], keys["other-ecdsa-p256"]
    ka, kb = public_key(a, "a"), public_key(b, "b")
    data = signed_bundle([stranger, a, b], statement_bytes())
    check = check_bundle("b", data, [ka, kb], DIGEST, Requirements())
    assert check.counts and set(check.keys) == {ka, kb}


def test_url_safe_unpadded_base64_is_read_strictly(trusted) -> None:
    # protobuf JSON may write bytes URL-safe and unpadded; any other stray character is refused.
    payload = statement_bytes(predicate={"x": "??>>"})  # base64 of this has '+' or '/' in it
    signature = trusted.sign(pae(INTOTO_PAYLOAD_TYPE, payload))
    urlsafe = lambda data: base64.urlsafe_b64encode(data).decode().rstrip("=")  # noqa: E731
    assert any(c in urlsafe(payload) + urlsafe(signature) for c in "-_")
    envelope = {"payload": urlsafe(payload), "payloadType": INTOTO_PAYLOAD_TYPE, "signatures": [{"sig": urlsafe(signature)}]}
    material = {"publicKey": {"hint": trusted.hint}}  # required since bundles are typed (issue 15)
    data = json.dumps({"mediaType": BUNDLE_MEDIA_TYPE, "verificationMaterial": material, "dsseEnvelope": envelope}).encode()
    assert check_bundle("b", data, [public_key(trusted)], DIGEST, Requirements()).counts
    envelope["payload"] = urlsafe(payload) + "!!"
    data = json.dumps({"mediaType": BUNDLE_MEDIA_TYPE, "dsseEnvelope": envelope}).encode()
    assert check_bundle("b", data, [public_key(trusted)], DIGEST, Requirements()).problem == "its DSSE payload is missing or not base64"


@pytest.mark.parametrize("payload_type", [None, 7, ["application/vnd.in-toto+json"]])
def test_a_payload_type_that_is_not_a_string_is_rejected_before_any_signature_check(trusted, payload_type) -> None:
    bundle = json.loads(signed_bundle([trusted], statement_bytes()))
    bundle["dsseEnvelope"]["payloadType"] = payload_type
    check = check_bundle("b", json.dumps(bundle).encode(), [public_key(trusted)], DIGEST, Requirements())
    assert not check.counts and check.signed_by == ()
    assert check.problem.startswith("its DSSE payloadType is ")


def test_a_signature_over_the_bare_payload_instead_of_the_pae_does_not_verify(trusted) -> None:
    payload = statement_bytes()
    envelope = {"payload": b64(payload), "payloadType": INTOTO_PAYLOAD_TYPE, "signatures": [{"sig": b64(trusted.sign(payload))}]}
    data = json.dumps({"mediaType": BUNDLE_MEDIA_TYPE, "dsseEnvelope": envelope}).encode()
    check = check_bundle("b", data, [public_key(trusted)], DIGEST, Requirements())
    assert not check.counts and check.problem == "it does not verify with the configured key(s)"


@pytest.mark.parametrize(
    "statement_type, accepted",
    [
        pytest.param("https://in-toto.io/Statement/v1", True, id="statement-v1"),
        pytest.param("https://in-toto.io/Statement/v0.1", True, id="statement-v0.1-still-accepted"),
        pytest.param("https://example.com/Statement/v1", False, id="foreign-statement-type"),
        pytest.param(None, False, id="no-statement-type"),
    ],
)
def test_statement_types(statement_type, accepted) -> None:
    problem = check_statement(statement_bytes(_type=statement_type), DIGEST, Requirements())
    assert (problem is None) is accepted, problem
    if not accepted:
        assert "is not in-toto" in problem


@pytest.mark.parametrize(
    "fields, problem",
    [
        pytest.param({"predicateType": SLSA_PROVENANCE}, f"it is an attestation (predicateType '{SLSA_PROVENANCE}'), not a signature", id="attestation"),
        pytest.param({"subject": "nope"}, "its statement has no subject list", id="subject-not-a-list"),
        pytest.param({"subject": [{"digest": {"sha512": "00"}}]}, f"its statement has no subject with the image digest {DIGEST}", id="no-sha256-subject"),
        pytest.param(
            {"subject": [{"digest": {"sha256": "ff" * 32}}]},
            f"the signature is for digest sha256:{'ff' * 32}, but the image resolves to {DIGEST}",
            id="other-digest",
        ),
    ],
)
def test_statement_claims_that_are_rejected(fields, problem) -> None:
    assert check_statement(statement_bytes(**fields), DIGEST, Requirements()) == problem


def test_any_subject_may_carry_the_digest() -> None:
    subjects = [{"digest": {"sha256": "ff" * 32}}, {"name": "x", "digest": {"sha256": DIGEST.partition(":")[2]}}]
    assert check_statement(statement_bytes(subject=subjects), DIGEST, Requirements()) is None


def test_annotations_are_read_from_the_matching_subject_and_must_be_strings() -> None:
    hex_digest = DIGEST.partition(":")[2]
    subjects = [{"digest": {"sha256": "ff" * 32}, "annotations": {"n": "1"}}, {"digest": {"sha256": hex_digest}, "annotations": {"n": 1}}]
    problem = check_statement(statement_bytes(subject=subjects), DIGEST, Requirements(annotations=(("n", "1"),)))
    assert problem == "its annotation n is 1, but '1' is required"


def test_check_identity_is_refused_for_bundles_with_its_explanation() -> None:
    problem = check_statement(statement_bytes(), DIGEST, Requirements(identity="registry.example.com/app"))
    assert problem == "bundles name no repository, and the rule sets checkIdentity (only legacy signatures can meet it)"


def test_statement_claims_are_only_read_after_the_signature_verified(trusted, stranger) -> None:
    # An attestation by an untrusted key reports the key problem, never the statement's content.
    data = make_bundle(stranger, DIGEST, predicate_type=SLSA_PROVENANCE)
    check = check_bundle("b", data, [public_key(trusted)], DIGEST, Requirements())
    assert check.problem == "it does not verify with the configured key(s)" and check.signed_by == ()


# ---- the referrers API (OCI 1.1), served by MemoryRegistry -----------------------------------------


def test_referrers_pages_are_followed_to_a_bundle_on_page_two(tmp_path, memory_registry, trusted, stranger) -> None:
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    first = mem.bundle_referrer(repo, subject, make_bundle(stranger, subject["digest"]))
    second = mem.bundle_referrer(repo, subject, make_bundle(trusted, subject["digest"]))
    mem.referrers[(repo, subject["digest"])] = [[first], [second]]
    run = admit(tmp_path, config_data([mem.host], {"release": trusted}), f"{mem.host}/{repo}:v1")
    assert run.allowed, run.message
    assert f"/v2/{repo}/referrers/{subject['digest']}?page=1" in mem.requests
    # The fallback tag is asked once, beside the probe (issue 18: one round trip for both); the
    # API answered, so its answer (here a 404) is not used.
    assert mem.requests.count(f"/v2/{repo}/manifests/{fallback_tag(subject['digest'])}") == 1


def test_a_referrers_api_answer_is_authoritative_over_a_stale_fallback_tag(memory_registry, trusted) -> None:
    # As in ggcr (cosign): the fallback tag is read only when the registry has no referrers API.
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    stale = mem.bundle_referrer(repo, subject, make_bundle(trusted, subject["digest"]))
    mem.fallback_index(repo, subject["digest"], [stale])
    verdict = verify(config_data([mem.host], {"release": trusted}), f"{mem.host}/{repo}:v1")
    assert not verdict.passed
    assert verdict.reason == "no-signature"
    assert "bundles in the referrers API" in verdict.message
    # The fallback tag itself is fetched beside the referrers probe (issue 18), but what it lists
    # is never followed when the API answered.
    assert f"/v2/{repo}/manifests/{stale['digest']}" not in mem.requests


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param((404, "application/json", b"{}"), id="404"),
        pytest.param((400, "application/json", b"{}"), id="400"),
        pytest.param((406, "text/plain", b"not acceptable"), id="406"),
        pytest.param((200, "text/html", b"<html>registry UI</html>"), id="200-but-html"),
        pytest.param((200, "application/json", b'{"manifests": []}'), id="200-json-not-an-oci-index"),
    ],
)
def test_a_referrers_answer_that_is_not_an_oci_index_falls_back_to_the_tag(memory_registry, trusted, answer) -> None:
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    mem.fallback_index(repo, subject["digest"], [mem.bundle_referrer(repo, subject, make_bundle(trusted, subject["digest"]))])
    mem.referrers_answer = answer
    verdict = verify(config_data([mem.host], {"release": trusted}), f"{mem.host}/{repo}:v1")
    assert verdict.passed, verdict.message
    assert f"/v2/{repo}/manifests/{fallback_tag(subject['digest'])}" in mem.requests


def test_max_referrers_stops_paging(memory_registry, trusted) -> None:
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    manifest, sbom = sbom_referrer(subject)
    page_one = mem.put_referrer(repo, manifest, [EMPTY_JSON, sbom])
    page_two = mem.bundle_referrer(repo, subject, make_bundle(trusted, subject["digest"]))
    mem.referrers[(repo, subject["digest"])] = [[page_one], [page_two]]
    data = config_data([mem.host], {"release": trusted}, limits={"maxReferrers": 1})
    verdict = verify(data, f"{mem.host}/{repo}:v1")
    assert not verdict.passed and verdict.reason == "no-signature"
    assert not any("page=1" in path for path in mem.requests)
    assert f"/v2/{repo}/manifests/{page_two['digest']}" not in mem.requests


def test_max_referrers_caps_the_manifests_fetched_from_one_long_page(memory_registry, trusted, stranger) -> None:
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    listed = [mem.bundle_referrer(repo, subject, make_bundle(stranger, subject["digest"], annotations={"n": str(i)})) for i in range(5)]
    mem.referrers[(repo, subject["digest"])] = [listed]
    verdict = verify(config_data([mem.host], {"release": trusted}, limits={"maxReferrers": 3}), f"{mem.host}/{repo}:v1")
    assert verdict.message.startswith("3 bundles found; none verifies")
    fetched = {d["digest"] for d in listed if f"/v2/{repo}/manifests/{d['digest']}" in mem.requests}
    assert fetched == {d["digest"] for d in listed[:3]}


def test_pagination_never_leads_to_another_host(memory_registry, trusted) -> None:
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    mem.referrers[(repo, subject["digest"])] = [[], [mem.bundle_referrer(repo, subject, make_bundle(trusted, subject["digest"]))]]
    mem.next_link_base = "http://127.0.0.2:9"  # a different host: must not be contacted
    verdict = verify(config_data([mem.host, "127.0.0.2:9"], {"release": trusted}), f"{mem.host}/{repo}:v1")
    assert not verdict.passed and verdict.reason == "no-signature"


def test_referrer_manifests_are_checked_against_their_digest(memory_registry, trusted) -> None:
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    descriptor = mem.bundle_referrer(repo, subject, make_bundle(trusted, subject["digest"]))
    # The registry serves other bytes under the listed digest: nothing from it may count.
    forged = make_bundle(trusted, subject["digest"], annotations={"forged": "yes"})
    mem.manifests[(repo, descriptor["digest"])] = (referrer_manifest((sha256_digest(forged), len(forged)), subject), OCI_MANIFEST)
    mem.put_blob(forged)
    mem.referrers[(repo, subject["digest"])] = [[descriptor]]
    verdict = verify(config_data([mem.host], {"release": trusted}), f"{mem.host}/{repo}:v1")
    assert not verdict.passed
    assert "digest" in verdict.message and descriptor["digest"] in verdict.message


def test_bundle_blobs_are_checked_against_their_digest(memory_registry, trusted) -> None:
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    bundle = make_bundle(trusted, subject["digest"])
    descriptor = mem.bundle_referrer(repo, subject, bundle)
    mem.blobs[sha256_digest(bundle)] = make_bundle(trusted, subject["digest"], annotations={"x": "y"})[: len(bundle)]
    mem.referrers[(repo, subject["digest"])] = [[descriptor]]
    verdict = verify(config_data([mem.host], {"release": trusted}), f"{mem.host}/{repo}:v1")
    assert not verdict.passed
    assert sha256_digest(bundle) in verdict.message



# ---- one broken signature is one failed candidate (issue 13, finding 7b) ------------------------------


def delete_blob(http: RegistryHTTP, repo: str, digest: str) -> None:
    """Make the registry answer 404 for a blob that a manifest still lists."""
    http.request("DELETE", f"/v2/{repo}/blobs/{digest}", repo=repo, expect=(202,))
    assert not http.blob_exists(repo, digest)


def test_a_bundle_whose_blob_is_gone_does_not_void_a_valid_legacy_signature(tmp_path, http, image, trusted, stranger, config) -> None:
    sign_legacy(http, image.repo, image.digest, trusted)
    broken = bundle_for(http, image, stranger)
    delete_blob(http, image.repo, broken.bundle_digest)
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message
    assert run.decision_log["images"][0]["keys"] == ["release"]


def test_a_legacy_layer_whose_blob_is_gone_does_not_void_a_valid_bundle(tmp_path, http, image, trusted, stranger, config) -> None:
    broken = sign_legacy(http, image.repo, image.digest, stranger)
    bundle_for(http, image, trusted)
    delete_blob(http, image.repo, broken.payload_digest)
    run = admit(tmp_path, config, image.reference)
    assert run.allowed, run.message


def test_when_nothing_verifies_the_broken_bundle_is_named_and_not_cached_as_definite(tmp_path, http, image, stranger, config) -> None:
    sign_legacy(http, image.repo, image.digest, stranger)
    broken = bundle_for(http, image, stranger)
    delete_blob(http, image.repo, broken.bundle_digest)
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert f"blob {http.host}/{image.repo}@{broken.bundle_digest} not found; " \
           "1 legacy signature found; none verifies with key(s) release" in run.message
    assert run.decision_log["images"][0]["reason"] == "not-found"  # transient: never cached as a verdict


def test_a_lone_broken_bundle_denies_naming_it(tmp_path, http, image, trusted, config) -> None:
    broken = bundle_for(http, image, trusted)
    delete_blob(http, image.repo, broken.bundle_digest)
    run = admit(tmp_path, config, image.reference)
    assert not run.allowed
    assert f'image "{image.reference}": blob {http.host}/{image.repo}@{broken.bundle_digest} not found' in run.message


def test_a_referrer_manifest_that_fails_its_digest_check_does_not_void_a_valid_legacy_signature(memory_registry, trusted) -> None:
    mem, repo = memory_registry, "app"
    subject = mem.put_image(repo)
    descriptor = mem.bundle_referrer(repo, subject, make_bundle(trusted, subject["digest"]))
    mem.manifests[(repo, descriptor["digest"])] = (b'{"schemaVersion": 2, "layers": []}', OCI_MANIFEST)  # other bytes
    mem.referrers[(repo, subject["digest"])] = [[descriptor]]
    data = config_data([mem.host], {"release": trusted})
    assert not verify(data, f"{mem.host}/{repo}:v1").passed  # control: that referrer alone is no signature
    sign_legacy_in_memory(mem, repo, subject["digest"], trusted)
    verdict = verify(data, f"{mem.host}/{repo}:v1")
    assert verdict.passed, verdict.message
    assert any("could not be read" in detail and descriptor["digest"][:19] in detail for detail in verdict.details)


def sign_legacy_in_memory(mem: "MemoryRegistry", repo: str, digest: str, key: TestKey) -> None:
    """A legacy `.sig` manifest in the memory registry, as sign_legacy writes it to a real one."""
    from support.signer import SIMPLESIGNING, SIGNATURE_ANNOTATION, cosign_config, sig_tag, signature_manifest, simple_signing_payload

    payload = simple_signing_payload(f"{mem.host}/{repo}", digest)
    payload_digest = mem.put_blob(payload)
    layer = {"mediaType": SIMPLESIGNING, "size": len(payload), "digest": payload_digest,
             "annotations": {SIGNATURE_ANNOTATION: b64(key.sign(payload))}}
    config = cosign_config([payload_digest])
    body, media_type = signature_manifest((mem.put_blob(config), len(config)), [layer])
    mem.put_manifest(repo, body, media_type, tag=sig_tag(digest))
