"""The verification core against signatures that real cosign (and containers/image) made.

The fixtures live outside the project (see their README.md): per case the image manifest bytes,
the layers of its `sha256-<hex>.sig` manifest, the key, and what must come out. A registry would
serve exactly these bytes; here they go straight into the pure code the registry client feeds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signgate.config import KeySpec
from signgate.verifiers.cosign.legacy import (
    REKOR_BUNDLE_ANNOTATION,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_TYPE,
    Requirements,
    check_identity,
    check_legacy_signature,
    decode_signature,
    signature_layers,
)
from signgate.keys import PublicKey, load_public_key
from signgate.verifiers.cosign.rekor import RekorKeys

FIXTURES = Path(__file__).resolve().parents[5] / "shared" / "fixtures" / "cosign-interop"

if not (FIXTURES / "cases.json").is_file():
    pytest.skip(
        f"cosign interop fixtures not found at {FIXTURES} (they are shared test data, not part of the project)",
        allow_module_level=True,
    )

CASES: dict[str, Any] = json.loads((FIXTURES / "cases.json").read_text())
KEY_FILES = sorted(path.name for path in (FIXTURES / "keys").glob("*.pub"))


@dataclass(frozen=True)
class Layer:
    n: int
    payload: bytes
    media_type: str
    annotations: dict[str, str]


def key(filename: str) -> PublicKey:
    return load_public_key(KeySpec(Path(filename).stem, str(FIXTURES / "keys" / Path(filename).name)))


def manifest_digest(case: str) -> str:
    return "sha256:" + hashlib.sha256((FIXTURES / case / "manifest.json").read_bytes()).hexdigest()


def layers(case: str) -> list[Layer]:
    found = []
    for directory in sorted((FIXTURES / case / "signatures").iterdir(), key=lambda p: int(p.name)):
        found.append(
            Layer(
                n=int(directory.name),
                payload=(directory / "payload").read_bytes(),
                media_type=(directory / "mediatype").read_text().strip(),
                annotations=json.loads((directory / "annotations.json").read_text()),
            )
        )
    return found


def sig_manifest(case_layers: list[Layer]) -> dict[str, Any]:
    """The `.sig` manifest a registry would serve: each layer described by its payload's digest."""
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "layers": [
            {
                "mediaType": layer.media_type,
                "digest": "sha256:" + hashlib.sha256(layer.payload).hexdigest(),
                "size": len(layer.payload),
                "annotations": layer.annotations,
            }
            for layer in case_layers
        ],
    }


def run_case(case: str, keys: list[PublicKey], requirements: Requirements = Requirements(), rekor=None):
    """What signgate's core concludes for a case: the check of every simple-signing layer."""
    case_layers = layers(case)
    descriptors, _skipped = signature_layers(sig_manifest(case_layers), max_layers=100)
    unclaimed = list(case_layers)
    checks = {}
    for descriptor in descriptors:
        # Several layers may share a payload (and so a digest); match on annotations too, in order.
        layer = next(
            candidate
            for candidate in unclaimed
            if "sha256:" + hashlib.sha256(candidate.payload).hexdigest() == descriptor.digest
            and candidate.annotations == descriptor.annotations
        )
        unclaimed.remove(layer)
        checks[layer.n] = check_legacy_signature(
            f"{case} layer {layer.n}",
            layer.payload,
            descriptor.annotations.get(SIGNATURE_ANNOTATION),
            keys,
            manifest_digest(case),
            requirements,
            rekor,
            descriptor.annotations.get(REKOR_BUNDLE_ANNOTATION),
        )
    return checks


ALL_CASES = sorted(CASES)


def test_every_case_directory_is_listed_in_cases_json():
    directories = {p.name for p in FIXTURES.iterdir() if p.is_dir() and p.name != "keys"}
    assert directories == set(CASES)


@pytest.mark.parametrize("case", ALL_CASES)
def test_manifest_digest_is_the_sha256_of_the_manifest_bytes(case):
    assert manifest_digest(case) == CASES[case]["manifest_digest"]


@pytest.mark.parametrize("case", ALL_CASES)
def test_case_verdict_matches_cosign(case):
    checks = run_case(case, [key(CASES[case]["key"])])
    verified = any(check.counts for check in checks.values())
    assert verified is CASES[case]["expected_verified"], {n: c.problem for n, c in checks.items()}


@pytest.mark.parametrize("case", ALL_CASES)
def test_each_signature_validity_matches_cosign(case):
    case_key = key(CASES[case]["key"])
    facts = {entry["n"]: entry for entry in CASES[case]["signatures"]}
    for layer in layers(case):
        signature = decode_signature(layer.annotations.get(SIGNATURE_ANNOTATION))
        assert signature is not None
        assert case_key.signature_is_valid(signature, layer.payload) is facts[layer.n]["signature_valid"], f"layer {layer.n}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_each_simple_signing_layer_outcome_is_explained(case):
    """A layer counts exactly when its signature is valid and its claim names this manifest."""
    case_key = key(CASES[case]["key"])
    checks = run_case(case, [case_key])
    for entry in CASES[case]["signatures"]:
        if entry["mediatype"] != SIMPLE_SIGNING_TYPE:
            assert entry["n"] not in checks, "a non-signature layer must be ignored, not checked"
            continue
        check = checks[entry["n"]]
        should_count = entry["signature_valid"] and entry["claim_matches_manifest"]
        assert check.counts is should_count, check.problem
        if should_count:
            assert check.problem is None and check.keys == (case_key,)
        elif entry["signature_valid"]:
            # The key signed it, but for another image: the reader learns both facts.
            assert check.signed_by == (case_key.name,)
            assert f"the signature is for digest {entry['claimed_digest']}" in check.problem
        else:
            assert check.signed_by == ()
            assert check.problem == "it does not verify with the configured key(s)"


def test_other_attachment_layer_is_skipped_by_media_type():
    case_layers = layers("other-attachment")
    descriptors, skipped = signature_layers(sig_manifest(case_layers), max_layers=100)
    assert descriptors == [] and skipped == 1


def _wrong_keys() -> list[Any]:
    params = []
    for case in ALL_CASES:
        for filename in KEY_FILES:
            if f"keys/{filename}" != CASES[case]["key"]:
                params.append(pytest.param(case, filename, id=f"{case}-with-{filename}"))
    return params


@pytest.mark.parametrize("case, wrong_key", _wrong_keys())
def test_a_key_that_did_not_sign_verifies_nothing(case, wrong_key):
    other = key(wrong_key)
    for layer in layers(case):
        signature = decode_signature(layer.annotations.get(SIGNATURE_ANNOTATION))
        assert other.signature_is_valid(signature, layer.payload) is False, f"layer {layer.n}"
    checks = run_case(case, [other])
    assert not any(check.counts for check in checks.values())
    assert all(check.signed_by == () for check in checks.values())


def test_unrelated_rsa_key_alongside_the_right_key_still_verifies():
    checks = run_case("valid", [key("unrelated-rsa.pub"), key("cosign.pub")])
    assert [c.keys for c in checks.values()] == [(key("cosign.pub"),)]


# --- claims of the containers/image signature (valid-with-tag) --------------------------------

SIGNED_REFERENCE = "192.168.64.2:5000/skopeo-signed:tag"


def _valid_with_tag(requirements: Requirements):
    (check,) = run_case("valid-with-tag", [key("cosign.pub")], requirements).values()
    return check


def test_signed_docker_reference_is_as_recorded():
    (layer,) = layers("valid-with-tag")
    payload = json.loads(layer.payload)
    assert payload["critical"]["identity"]["docker-reference"] == SIGNED_REFERENCE


@pytest.mark.parametrize(
    "expected_name, passes",
    [
        pytest.param("192.168.64.2:5000/skopeo-signed", True, id="repository-named-by-the-tagged-reference"),
        pytest.param("192.168.64.2:5000/other", False, id="another-repository-on-the-same-registry"),
        pytest.param("192.168.64.2:5001/skopeo-signed", False, id="same-repository-on-another-port"),
        pytest.param("docker.io/library/skopeo-signed", False, id="same-name-on-docker-hub"),
    ],
)
def test_identity_check_against_the_docker_reference(expected_name, passes):
    assert (check_identity(SIGNED_REFERENCE, expected_name) is None) is passes
    check = _valid_with_tag(Requirements(identity=expected_name))
    assert check.counts is passes
    if not passes:
        assert check.problem == f"it was signed for 192.168.64.2:5000/skopeo-signed, not for {expected_name}"


@pytest.mark.parametrize(
    "annotations, passes, problem",
    [
        pytest.param((("creator", "containers/image 5.21.2-dev"),), True, None, id="creator-present-passes"),
        pytest.param((("creator", "cosign"),), False, "its annotation creator is 'containers/image 5.21.2-dev', "
                     "but 'cosign' is required", id="creator-with-another-value-fails"),
        pytest.param((("team", "payments"),), False, "it lacks the required annotation team=payments",
                     id="missing-annotation-fails"),
        pytest.param((("timestamp", "1657296609"),), False, "its annotation timestamp is 1657296609, "
                     "but '1657296609' is required", id="integer-timestamp-never-matches-a-string"),
        pytest.param((("creator", "containers/image 5.21.2-dev"), ("team", "payments")), False,
                     "it lacks the required annotation team=payments", id="every-required-annotation-must-hold"),
    ],
)
def test_annotation_requirements_on_the_signed_payload(annotations, passes, problem):
    check = _valid_with_tag(Requirements(annotations=annotations))
    assert check.counts is passes
    assert check.problem == problem


def test_annotation_requirement_fails_when_optional_is_null():
    (check,) = run_case("valid", [key("cosign.pub")], Requirements(annotations=(("creator", "x"),))).values()
    assert check.problem == "it lacks the required annotation creator=x"


# --- the Rekor SET of key-rekor-valid ---------------------------------------------------------


def test_rekor_set_proves_the_key_rekor_valid_signature():
    rekor = RekorKeys.of([key("rekor.pub")])
    (check,) = run_case("key-rekor-valid", [key("cosign2.pub")], rekor=rekor).values()
    assert check.counts, check.problem


def test_signature_without_a_rekor_bundle_fails_when_a_proof_is_required():
    rekor = RekorKeys.of([key("rekor.pub")])
    (check,) = run_case("valid", [key("cosign.pub")], rekor=rekor).values()
    assert not check.counts
    assert "carries no Rekor bundle" in check.problem


def test_rekor_set_is_not_accepted_under_an_untrusted_rekor_key():
    rekor = RekorKeys.of([key("cosign.pub")])  # a key, but not the log's
    (check,) = run_case("key-rekor-valid", [key("cosign2.pub")], rekor=rekor).values()
    assert not check.counts


# --- the signature annotation's base64, as cosign's Go decoder reads it ----------------------


def test_pki_rsa_signature_annotation_is_wrapped_like_cosign_writes_long_signatures():
    (layer,) = layers("pki-rsa")
    assert "\n" in layer.annotations[SIGNATURE_ANNOTATION]


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("AAEC", b"\x00\x01\x02", id="plain"),
        pytest.param("AA\nEC", b"\x00\x01\x02", id="line-feed-skipped-as-go-does"),
        pytest.param("AA\r\nEC\n", b"\x00\x01\x02", id="crlf-skipped-as-go-does"),
        pytest.param("AA EC", None, id="inner-space-refused"),
        pytest.param("AA*EC", None, id="non-base64-character-refused"),
        pytest.param("AAE", None, id="bad-padding-refused"),
        pytest.param("", None, id="empty-is-missing"),
        pytest.param(None, None, id="absent-is-missing"),
    ],
)
def test_decode_signature(text, expected):
    assert decode_signature(text) == expected
