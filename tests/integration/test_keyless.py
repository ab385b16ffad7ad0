"""Certificate signers through the hook (issue 16): keyless (a Fulcio-shaped test CA with SCTs and
a test Rekor log, in a trusted_root.json) and private PKI (a PEM CA bundle), in both layouts.

What must hold:
- a signature counts for a rule's identity when its chain leads to a trusted CA valid at a
  verified signing time (the SET's integrated time, else the current time), its SCT verifies with
  the trust root's CT log key (unless the rule waives it), it has codeSigning, and its subject and
  issuer match the identity;
- each failure is a clear denial that says what was found against what was required;
- identities count once by name; a rule that lists identities and no keys does not use `default`;
- an invalid regular expression is a configuration error at `--config`, naming its field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, Mapping

import pytest

from support.contract import HookRun, request_for, run_config, run_request
from support.fulcio import NOW, new_ct_log, new_fulcio, pem, trusted_root
from support.oci import PushedImage, RegistryHTTP, push_image
from support.signer import (
    BUNDLE_MEDIA_TYPE,
    INTOTO_PAYLOAD_TYPE,
    attach_bundle,
    b64,
    dsse_envelope,
    in_toto_statement,
    pae,
    sign_legacy,
    simple_signing_payload,
    TestKey,
)
from support.tlog import TestLog, new_log
from support.tsa import new_tsa

pytestmark = pytest.mark.registry

CERTIFICATE = "dev.sigstore.cosign/certificate"
CHAIN = "dev.sigstore.cosign/chain"
REKOR_BUNDLE = "dev.sigstore.cosign/bundle"
WORKFLOW = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"




@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    fulcio, ct, log = new_fulcio(), new_ct_log(), new_log(directory, "rekor.test", "v1")
    log2 = new_log(directory, "log2025-1.rekor.test", "v2")
    tsa = new_tsa(directory / "tsa")
    root_path = trusted_root(directory / "trusted_root.json", fulcio, [ct], [log, log2], [tsa])
    corp = new_fulcio("corp-ca")
    corp_chain, _ = corp.write(directory)
    return {
        "fulcio": fulcio, "ct": ct, "log": log, "log2": log2, "tsa": tsa, "root": root_path,
        "other": new_fulcio("other-ca"), "other-ct": new_ct_log(),
        "corp": corp, "corp-chain": corp_chain, "dir": directory,
    }


IDENTITY = {"issuer": GITHUB_ISSUER, "subjectRegExp": r"^https://github\.com/org/repo/\.github/workflows/release\.yml@refs/tags/"}


def config(http: RegistryHTTP, pki: Mapping[str, Any], rule: Mapping[str, Any] | None = None, identity: Mapping[str, Any] = IDENTITY, **top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "registries": {"insecure": [http.host]},
        "identities": {"release": dict(identity)},
        "trustedRoots": {"test-good": str(pki["root"])},
        "certificateAuthorities": {"corp": str(pki["corp-chain"])},
        "policy": [{"images": "**", "identities": ["release"], "trustedRoot": "test-good", **(rule or {})}],
    }
    data.update(top)
    return data


def admit(tmp_path: Path, data: Mapping[str, Any], image: PushedImage) -> HookRun:
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(data))
    run = run_request(path, request_for("Pod", [image.reference]))
    assert run.returncode == 0, run.stderr
    assert run.response is not None, run.stderr
    return run


def hashedrekord(payload: bytes, signature: bytes, certificate_pem: str) -> bytes:
    return json.dumps({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {"content": b64(signature), "publicKey": {"content": b64(certificate_pem.encode())}},
        },
    }, sort_keys=True, separators=(",", ":")).encode()


def legacy_rekor_bundle(log: TestLog, body: bytes, integrated: int) -> str:
    index = log.append(body)
    body_b64 = b64(body)
    return json.dumps({
        "SignedEntryTimestamp": b64(log.set_over(body_b64, integrated, index)),
        "Payload": {"body": body_b64, "integratedTime": integrated, "logIndex": index, "logID": log.log_id.hex()},
    })


def sign_legacy_keyless(
    http: RegistryHTTP, repo: str, image: PushedImage, key: TestKey, certificate: Any, chain_pem: str,
    log: TestLog | None = None, integrated: int | None = None, certificate_annotation: str | None = None,
    tsa: Any = None,
) -> None:
    payload = simple_signing_payload(f"{http.host}/{repo}", image.digest)
    signature = key.sign(payload)
    annotations = {CERTIFICATE: certificate_annotation or pem(certificate), CHAIN: chain_pem}
    if tsa is not None:
        # cosign's legacy layout: the timestamp is over the raw signature bytes.
        annotations["dev.sigstore.cosign/rfc3161timestamp"] = json.dumps({"SignedRFC3161Timestamp": b64(tsa.stamp(signature))})
    if log is not None:
        when = integrated if integrated is not None else int(NOW.timestamp())
        annotations[REKOR_BUNDLE] = legacy_rekor_bundle(log, hashedrekord(payload, signature, pem(certificate)), when)
    sign_legacy(http, repo, image.digest, key, payload=payload, signature_override=signature, extra_layer_annotations=annotations)


def certificate_bundle(image: PushedImage, key: TestKey, chain: list[Any], log: TestLog | None, as_chain: bool = True) -> bytes:
    from cryptography.hazmat.primitives import serialization

    statement = in_toto_statement(image.digest)
    signature = key.sign(pae(INTOTO_PAYLOAD_TYPE, statement))
    ders = [b64(c.public_bytes(serialization.Encoding.DER)) for c in chain]
    material: dict[str, Any] = (
        {"x509CertificateChain": {"certificates": [{"rawBytes": d} for d in ders]}} if as_chain else {"certificate": {"rawBytes": ders[0]}}
    )
    if log is not None:
        body = json.dumps({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {"payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(statement).hexdigest()},
                     "signatures": [{"signature": b64(signature), "verifier": b64(pem(chain[0]).encode())}]},
        }, sort_keys=True, separators=(",", ":")).encode()
        material["tlogEntries"] = [log.entry(body, integrated=int(NOW.timestamp()))]
    return json.dumps({
        "mediaType": BUNDLE_MEDIA_TYPE if as_chain else "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "verificationMaterial": material,
        "dsseEnvelope": dsse_envelope(statement, INTOTO_PAYLOAD_TYPE, [signature]),
    }).encode()


def leaf(pki: Mapping[str, Any], key: TestKey, fulcio: str = "fulcio", ct: str | None = "ct", **kwargs: Any) -> Any:
    return pki[fulcio].issue(key.public_key, ct_log=pki[ct] if ct else None, **kwargs)


# ---- keyless: the legacy layout --------------------------------------------------------------------


def test_a_keyless_legacy_signature_with_sct_and_set_is_admitted(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key), pki["fulcio"].chain_pem.decode(), pki["log"])
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), image)
    assert run.allowed, run.message


def test_another_identity_is_denied_saying_what_was_found_and_required(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    other = "https://github.com/evil/repo/.github/workflows/release.yml@refs/tags/v1"
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key, subject=other), pki["fulcio"].chain_pem.decode(), pki["log"])
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert (
        f"signed by {other} (issuer {GITHUB_ISSUER}), but the rule requires subject matching {IDENTITY['subjectRegExp']}"
        in run.message
    )


def test_another_issuer_is_denied(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key, issuer="https://accounts.example.com"), pki["fulcio"].chain_pem.decode())
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert f"(issuer https://accounts.example.com), but the rule requires issuer {GITHUB_ISSUER}" in run.message


def test_a_chain_to_another_root_is_denied(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key, fulcio="other"), pki["other"].chain_pem.decode())
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert f"signed by {WORKFLOW} (issuer {GITHUB_ISSUER}), but its certificate does not chain to trusted root test-good" in run.message


def test_an_expired_leaf_with_no_verified_time_is_denied_and_a_set_within_its_validity_admits(tmp_path, http, repo, keys, pki) -> None:
    key = keys["ecdsa-p256"]
    start = NOW - dt.timedelta(days=2)
    certificate = leaf(pki, key, not_before=start, not_after=start + dt.timedelta(minutes=10))
    unlogged, logged = push_image(http, repo, "v1"), push_image(http, repo, "v2")
    sign_legacy_keyless(http, repo, unlogged, key, certificate, pki["fulcio"].chain_pem.decode())
    run = admit(tmp_path, config(http, pki), unlogged)
    assert not run.allowed
    assert "no verified time, so the current time" in run.message and "the certificate expired" in run.message
    # The same certificate, with a log entry integrated while it was valid: the signing time is
    # the log's, so the chain is valid then (as cosign).
    sign_legacy_keyless(http, repo, logged, key, certificate, pki["fulcio"].chain_pem.decode(), pki["log"], int((start + dt.timedelta(minutes=3)).timestamp()))
    assert admit(tmp_path, config(http, pki), logged).allowed


def test_a_verified_rfc3161_time_within_the_leafs_validity_admits_an_expired_leaf(tmp_path, http, repo, keys, pki) -> None:
    # OpenSSL's TSA stamps the signature now, while the leaf is valid; the leaf then expires. The
    # chain is checked at the stamped time, as sigstore does; without the stamp, at the current
    # time, and it fails. (The wait only lets the leaf expire; nothing is timed.)
    import time

    key = keys["ecdsa-p256"]
    now = dt.datetime.now(dt.timezone.utc)
    certificate = leaf(pki, key, not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(seconds=2))
    stamped, unstamped = push_image(http, repo, "v1"), push_image(http, repo, "v2")
    sign_legacy_keyless(http, repo, stamped, key, certificate, pki["fulcio"].chain_pem.decode(), tsa=pki["tsa"])
    sign_legacy_keyless(http, repo, unstamped, key, certificate, pki["fulcio"].chain_pem.decode())
    while dt.datetime.now(dt.timezone.utc) <= certificate.not_valid_after_utc + dt.timedelta(seconds=1):
        time.sleep(0.5)
    run = admit(tmp_path, config(http, pki), stamped)
    assert run.allowed, run.message
    run = admit(tmp_path, config(http, pki), unstamped)
    assert not run.allowed and "the certificate expired" in run.message


def test_a_timestamp_from_an_untrusted_tsa_gives_no_verified_time(tmp_path, http, repo, keys, pki) -> None:
    # A timestamp the trust root's TSAs did not sign is not counted (as sigstore's clients), so
    # the chain is checked at the current time: an expired leaf is refused.
    key = keys["ecdsa-p256"]
    stranger_tsa = new_tsa(pki["dir"] / "stranger-tsa")
    start = NOW - dt.timedelta(days=2)
    certificate = leaf(pki, key, not_before=start, not_after=start + dt.timedelta(minutes=10))
    image = push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, certificate, pki["fulcio"].chain_pem.decode(), tsa=stranger_tsa)
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert "no verified time, so the current time" in run.message


@pytest.mark.parametrize("ct, expected", [(None, "its certificate carries no SCT"), ("other-ct", "its certificate's SCT does not verify with a CT log key of trusted root test-good")])
def test_a_missing_or_forged_sct_is_denied(tmp_path, http, repo, keys, pki, ct, expected) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key, ct=ct), pki["fulcio"].chain_pem.decode())
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert expected in run.message


def test_without_code_signing_usage_is_denied(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key, code_signing=False), pki["fulcio"].chain_pem.decode())
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert "its certificate lacks the codeSigning extended key usage" in run.message


@pytest.mark.parametrize(
    "annotation, expected",
    [
        ("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", "its certificate annotation is malformed"),
        (" ", "its certificate annotation is malformed"),
        ("twice", "its certificate annotation must hold exactly one PEM certificate"),
    ],
)
def test_a_malformed_certificate_is_a_clear_denial(tmp_path, http, repo, keys, pki, annotation, expected) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    certificate = leaf(pki, key)
    if annotation == "twice":
        annotation = pem(certificate) * 2
    sign_legacy_keyless(http, repo, image, key, certificate, pki["fulcio"].chain_pem.decode(), certificate_annotation=annotation)
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert expected in run.message


def test_a_malformed_chain_annotation_is_a_clear_denial(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert "none is valid: its certificate chain annotation is malformed (not PEM certificates)" in run.message


def test_a_bundle_certificate_that_is_not_der_is_a_clear_denial(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    bundle = json.loads(certificate_bundle(image, key, [leaf(pki, key)], None, as_chain=False))
    bundle["verificationMaterial"]["certificate"]["rawBytes"] = b64(b"not a certificate")
    attach_bundle(http, repo, image, json.dumps(bundle).encode())
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert "1 bundle found; none is valid: its certificate is malformed (not a DER X.509 certificate)" in run.message


def test_an_oversized_chain_is_capped(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key), pki["fulcio"].chain_pem.decode() * 6)
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert "its certificate chain annotation holds more than 10 certificates" in run.message


def test_github_extensions_are_matched(tmp_path, http, repo, keys, pki) -> None:
    key = keys["ecdsa-p256"]
    github = {"repository": "org/repo", "ref": "refs/tags/v1", "trigger": "push"}
    image = push_image(http, repo, "v1")
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key, github=github), pki["fulcio"].chain_pem.decode())
    wanted = dict(IDENTITY, githubWorkflowRepository="org/repo", githubWorkflowRef="refs/tags/v1", githubWorkflowTrigger="push")
    assert admit(tmp_path, config(http, pki, identity=wanted), image).allowed
    run = admit(tmp_path, config(http, pki, identity=dict(wanted, githubWorkflowRef="refs/heads/main")), image)
    assert not run.allowed
    assert "but the rule requires GitHub workflow ref refs/heads/main (the certificate has refs/tags/v1)" in run.message


# ---- keyless: bundles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("as_chain", [True, False], ids=["x509CertificateChain", "certificate"])
def test_a_keyless_bundle_is_admitted(tmp_path, http, repo, keys, pki, as_chain) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    certificate = leaf(pki, key)
    chain = [certificate, pki["fulcio"].intermediate] if as_chain else [certificate]
    attach_bundle(http, repo, image, certificate_bundle(image, key, chain, pki["log"], as_chain))
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), image)
    assert run.allowed, run.message


def test_a_keyless_bundle_for_another_identity_is_denied(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    certificate = leaf(pki, key, subject="someone@example.com", issuer="https://accounts.example.com")
    attach_bundle(http, repo, image, certificate_bundle(image, key, [certificate, pki["fulcio"].intermediate], pki["log"]))
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert "1 bundle found; none is valid: signed by someone@example.com (issuer https://accounts.example.com), but the rule requires" in run.message


def test_an_oversized_bundle_chain_is_refused(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    certificate = leaf(pki, key)
    attach_bundle(http, repo, image, certificate_bundle(image, key, [certificate] + [pki["fulcio"].intermediate] * 11, None))
    run = admit(tmp_path, config(http, pki), image)
    assert not run.allowed
    assert "its certificate chain has 12 certificates, more than the limit of 10" in run.message


def rekor_v2_certificate_bundle(pki: Mapping[str, Any], image: PushedImage, key: TestKey, corrupt: bool = False) -> bytes:
    """A certificate bundle logged on Rekor v2: no SET, an inclusion proof up to a checkpoint signed
    by the trusted root's Ed25519 log; the entry names the certificate, as Rekor v2 logs it."""
    from cryptography.hazmat.primitives import serialization

    certificate = leaf(pki, key)
    bundle = json.loads(certificate_bundle(image, key, [certificate, pki["fulcio"].intermediate], None))
    statement = base64_decode(bundle["dsseEnvelope"]["payload"])
    signature = base64_decode(bundle["dsseEnvelope"]["signatures"][0]["sig"])
    body = json.dumps({
        "apiVersion": "0.0.2", "kind": "hashedrekord",
        "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(pae(INTOTO_PAYLOAD_TYPE, statement)).digest())},
            "signature": {"content": b64(signature), "verifier": {
                "x509Certificate": {"rawBytes": b64(certificate.public_bytes(serialization.Encoding.DER))},
                "keyDetails": "PKIX_ECDSA_P256_SHA_256"}},
        }},
    }, sort_keys=True, separators=(",", ":")).encode()
    entry = pki["log2"].entry(body, ("hashedrekord", "0.0.2"))
    if corrupt:
        entry["inclusionProof"]["hashes"][0] = b64(bytes(32))
    bundle["verificationMaterial"]["tlogEntries"] = [entry]
    return json.dumps(bundle).encode()


@pytest.mark.parametrize("corrupt", [False, True], ids=["valid-proof", "broken-proof"])
def test_a_keyless_bundle_on_rekor_v2_is_proven_by_the_trusted_roots_log(tmp_path, http, repo, keys, pki, corrupt) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    attach_bundle(http, repo, image, rekor_v2_certificate_bundle(pki, image, key, corrupt))
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), image)
    assert run.allowed is not corrupt, run.message
    if corrupt:
        assert f"signed by {WORKFLOW} (issuer {GITHUB_ISSUER}), but its transparency-log inclusion proof does not verify" in run.message


def base64_decode(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


# ---- private PKI ------------------------------------------------------------------------------------


def test_a_private_ca_rule_admits_without_sct_or_log(tmp_path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    certificate = leaf(pki, key, fulcio="corp", ct=None, subject="release@corp.example", issuer=None)
    sign_legacy_keyless(http, repo, image, key, certificate, pki["corp"].chain_pem.decode())
    rule = {"trustedRoot": None, "certificateAuthority": "corp", "ignoreSct": True}
    rule = {k: v for k, v in rule.items() if v is not None}
    data = config(http, pki, identity={"subject": "release@corp.example", "issuerRegExp": ".*"})
    data["policy"][0].pop("trustedRoot")
    data["policy"][0].update(rule)
    run = admit(tmp_path, data, image)
    assert run.allowed, run.message


def test_an_intermediate_in_the_ca_bundle_does_not_anchor_on_its_own(tmp_path, http, repo, keys, pki) -> None:
    # The bundle holds corp's intermediate beside another CA's root: the leaf's chain must reach a
    # self-signed root of the bundle, so the intermediate alone proves nothing.
    from cryptography.hazmat.primitives import serialization

    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    certificate = leaf(pki, key, fulcio="corp", ct=None, subject="release@corp.example", issuer=None)
    sign_legacy_keyless(http, repo, image, key, certificate, pki["corp"].chain_pem.decode())
    mixed = pki["dir"] / "mixed-bundle.pem"
    mixed.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (pki["corp"].intermediate, pki["other"].root)))
    data = config(http, pki, identity={"subject": "release@corp.example", "issuerRegExp": ".*"})
    data["certificateAuthorities"] = {"corp": str(mixed)}
    data["policy"][0].pop("trustedRoot")
    data["policy"][0].update({"certificateAuthority": "corp", "ignoreSct": True})
    run = admit(tmp_path, data, image)
    assert not run.allowed
    assert "its certificate does not chain to certificate authority corp" in run.message


def test_a_private_ca_rule_without_ignore_sct_is_a_configuration_error(tmp_path, http, pki) -> None:
    data = config(http, pki)
    data["policy"][0].pop("trustedRoot")
    data["policy"][0]["certificateAuthority"] = "corp"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    completed = run_config(path)
    assert completed.returncode != 0
    assert "policy[0].ignoreSct: must be true with a certificateAuthority" in completed.stderr


# ---- counting and configuration -----------------------------------------------------------------------


def test_an_identity_counts_once_however_many_certificates_match(tmp_path, http, repo, keys, pki) -> None:
    image = push_image(http, repo, "v1")
    for kind in ("ecdsa-p256", "ecdsa-p384"):
        key = keys[kind]
        sign_legacy_keyless(http, repo, image, key, leaf(pki, key), pki["fulcio"].chain_pem.decode())
    data = config(http, pki, {"keys": ["ci"], "threshold": 2}, keys={"ci": str(keys["rsa-2048"].pub_path)})
    run = admit(tmp_path, data, image)
    assert not run.allowed
    assert "signed by 1 of the 2 required keys (verified by: release; trusted: ci, identities release)" in run.message
    sign_legacy(http, repo, image.digest, keys["rsa-2048"])
    assert admit(tmp_path, data, image).allowed


def test_an_identity_rule_does_not_fall_back_to_the_default_key(tmp_path, http, repo, keys, pki) -> None:
    image = push_image(http, repo, "v1")
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    data = config(http, pki, keys={"default": str(keys["ecdsa-p256"].pub_path)})
    run = admit(tmp_path, data, image)
    assert not run.allowed
    assert "none verifies with key(s) identities release" in run.message


@pytest.mark.parametrize(
    "identity, field",
    [({"issuer": GITHUB_ISSUER, "subjectRegExp": "(["}, "identities.release.subjectRegExp: is not a valid regular expression"),
     ({"issuerRegExp": "*x", "subject": WORKFLOW}, "identities.release.issuerRegExp: is not a valid regular expression"),
     ({"subject": WORKFLOW}, "identities.release.issuer: exactly one of issuer and issuerRegExp is required")],
)
def test_identity_mistakes_are_configuration_errors_at_config(tmp_path, http, pki, identity, field) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config(http, pki, identity=identity)))
    completed = run_config(path)
    assert completed.returncode != 0
    assert field in completed.stderr
