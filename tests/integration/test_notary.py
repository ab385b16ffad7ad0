"""notaryv1 rules: Docker Content Trust verified in Python against pinned root keys.

The trust data comes from a real notary-server (Debian's notary 0.7) on 127.0.0.1, written by the
real `notary` client (notary_env.py); images live in the real docker-registry. The hook runs through
its real contract (contract.py). Where a situation cannot be produced by the real tools (expired
metadata: the server sets expiry dates; tampered files: nothing can re-sign them), the pure
verification core is given real metadata from the real server and a clock or bytes of the test's
choosing. Unit tests cover the pure functions with metadata the test signs itself.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from support.contract import request_for, run_request
from support.notary_env import NotaryClient, NotaryServer, notary_binaries
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry, free_port
from support.signer import TestKey

from signgate.config import Limits, parse_config
from signgate.deadline import Deadline
from signgate.keys import public_key_from_pem
from signgate.verifiers.notaryv1.canonical_json import CanonicalJSONError, canonical_json
from signgate.verifiers.notaryv1.cli import root_key_main
from signgate.verifiers.notaryv1.decision import verify_target
from signgate.verifiers.notaryv1.errors import (
    HashMismatch,
    InvalidMetadata,
    MetadataExpired,
    NotaryError,
    RootNotTrusted,
    ThresholdNotMet,
)
from signgate.verifiers.notaryv1.keys import TufKey, parse_key, tuf_key_id
from signgate.verifiers.notaryv1.metadata import Metadata, parse_metadata, parse_time, verify_file
from signgate.verifiers.notaryv1.roles import Role, parse_delegations, verify_signatures
from signgate.verifiers.notaryv1.transport import NotaryFetcher
from signgate.verifiers.notaryv1.trust_data import TrustCollection
from signgate.verifiers.notaryv1.verifier import evaluate_notary
from signgate.reference import parse_reference
from signgate.registry import RegistryClient
from signgate.verifiers import evaluate_image
from signgate.keyring import KeyRing

pytestmark = pytest.mark.skipif(not notary_binaries(), reason="notary and notary-server (Debian package notary) are needed")

RELEASES = "targets/releases"


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notary_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotaryServer]:
    server = NotaryServer(tmp_path_factory.mktemp("notary-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def notary(notary_server: NotaryServer, tmp_path_factory: pytest.TempPathFactory) -> NotaryClient:
    """One trust directory: every GUN it creates shares its root key."""
    return NotaryClient(notary_server, tmp_path_factory.mktemp("notary-trust"))


@pytest.fixture(scope="module")
def root_pem(notary: NotaryClient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client's root public key, for pinning (the trust dir has one only after a first init)."""
    notary.init(f"127.0.0.1:1/signgate/bootstrap-{id(notary)}")
    path = tmp_path_factory.mktemp("notary-root") / "root.pub"
    path.write_bytes(notary.root_public_pem())
    return path


_numbers = itertools.count()


@pytest.fixture
def write_config(tmp_path: Path, notary_server: NotaryServer, root_pem: Path, registry: Registry) -> Callable[..., Path]:
    """A signgate config with one notaryv1 rule for every image of the test registry."""

    def write(*, root: Path | None = None, delegations: tuple[str, ...] = (), server: str | None = None) -> Path:
        notary_settings: dict[str, Any] = {
            "server": server or notary_server.url,
            "caBundle": str(notary_server.ca_path),
            "rootKeys": ["root"],
        }
        if delegations:
            notary_settings["delegations"] = list(delegations)
        data = {
            "keys": {"root": str(root or root_pem)},
            "registries": {"insecure": [registry.host]},
            "policy": [{"images": f"{registry.host}/**", "type": "notaryv1", "notary": notary_settings}],
        }
        path = tmp_path / f"config-{next(_numbers)}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def gun_of(image: PushedImage) -> str:
    return f"{image.host}/{image.repo}"


def pod(*images: str) -> dict[str, Any]:
    return request_for("Pod", list(images))


def denial(image: str) -> str:
    return f'container "c0" image "{image}": '


def image_entry(run: Any, image: str) -> dict[str, Any]:
    [entry] = [e for e in run.decision_log["images"] if e["image"] == image]
    return entry


@pytest.fixture
def signed_image(http: RegistryHTTP, repo: str, notary: NotaryClient, root_pem: Path) -> PushedImage:
    """`repo:v1` pushed and signed into the `targets` role of its GUN."""
    image = push_image(http, repo, "v1")
    notary.init(gun_of(image))
    notary.addhash(gun_of(image), "v1", image.size, image.digest)
    return image


def delegation_key(directory: Path, name: str = "releases") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / f"{name}.key"
    public = directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return public, private


def fetch_all(server: NotaryServer, gun: str, roles: tuple[str, ...] = ("root", "timestamp", "snapshot", "targets")) -> dict[str, bytes]:
    """Real metadata bytes from the real server, fetched by the production fetcher."""
    fetcher = NotaryFetcher(server.url, gun, deadline=Deadline(10), limits=Limits(), ca_bundle=str(server.ca_path))
    try:
        files = {role: fetcher(role, 1 << 20) for role in roles}
    finally:
        fetcher.close()
    assert all(files.values()), files
    return files  # type: ignore[return-value]


def dict_fetch(files: dict[str, bytes]) -> Callable[[str, int], bytes | None]:
    def fetch(role: str, max_bytes: int) -> bytes | None:
        data = files.get(role)
        if data is not None and len(data) > max_bytes:  # as NotaryFetcher: reading stops at the cap
            raise NotaryError(f"{role}.json is larger than the limit of {max_bytes} bytes")
        return data

    return fetch


def pinned(path: Path, name: str = "root") -> Any:
    return public_key_from_pem(name, str(path), path.read_bytes())




# ---- the hook, end to end -----------------------------------------------------------------------


def test_signed_tag_is_allowed(write_config, signed_image) -> None:
    run = run_request(write_config(), pod(signed_image.reference))
    assert run.returncode == 0
    assert run.response == {"allowed": True}, run.message
    entry = image_entry(run, signed_image.reference)
    assert entry["verdict"] == "pass" and entry["reason"] == "verified"
    assert entry["digest"] == signed_image.digest
    assert entry["keys"] == ["root"]


def test_signed_digest_reference_is_allowed_and_an_unsigned_digest_is_denied(
    write_config, signed_image, http, repo
) -> None:
    other = push_image(http, repo, "other")
    config = write_config()
    run = run_request(config, pod(signed_image.by_digest))
    assert run.response == {"allowed": True}, run.message

    run = run_request(config, pod(other.by_digest))
    assert run.allowed is False
    assert denial(other.by_digest) + f"no trust data for digest {other.digest[:19]}" in run.message
    assert image_entry(run, other.by_digest)["reason"] == "notary-no-trust-data"


def test_unsigned_tag_in_a_signed_collection_is_denied(write_config, signed_image, http, repo) -> None:
    unsigned = push_image(http, repo, "v2")
    run = run_request(write_config(), pod(unsigned.reference))
    assert run.allowed is False
    assert denial(unsigned.reference) + f"no trust data for the tag 'v2' in {gun_of(unsigned)} (signed tags: v1)" in run.message


def test_repository_without_trust_data_is_denied(write_config, http, repo, root_pem) -> None:
    image = push_image(http, repo, "v1")
    run = run_request(write_config(), pod(image.reference))
    assert run.allowed is False
    assert denial(image.reference) + (
        f"no trust data for the tag 'v1': the Notary server has no trust data for {gun_of(image)}"
    ) in run.message
    assert image_entry(run, image.reference)["reason"] == "notary-no-trust-data"


def test_tag_whose_signed_digest_differs_from_the_registry_is_denied(write_config, signed_image, http, repo) -> None:
    moved = push_image(http, repo, "v1")  # the tag now points to other content
    run = run_request(write_config(), pod(moved.reference))
    assert run.allowed is False
    assert denial(moved.reference) + (
        f"the digest differs from the signed one: tag 'v1' is signed by targets as {signed_image.digest[:19]}… "
        f"({signed_image.size} bytes), but the registry serves {moved.digest[:19]}… ({moved.size} bytes)"
    ) in run.message
    assert image_entry(run, moved.reference)["reason"] == "notary-digest-mismatch"


def test_wrong_pinned_root_key_is_denied(write_config, signed_image, keys: dict[str, TestKey]) -> None:
    run = run_request(write_config(root=keys["other-ecdsa-p256"].pub_path), pod(signed_image.reference))
    assert run.allowed is False
    assert denial(signed_image.reference) + f"root.json of {gun_of(signed_image)} is not signed by a pinned key" in run.message
    assert "are not among the pinned key(s) root" in run.message
    assert image_entry(run, signed_image.reference)["reason"] == "notary-root-untrusted"


def test_required_delegation_signed_is_allowed(write_config, http, repo, notary, root_pem, tmp_path) -> None:
    image = push_image(http, repo, "v1")
    gun = gun_of(image)
    notary.init(gun)
    notary.add_delegation(gun, RELEASES, *delegation_key(tmp_path))
    notary.addhash(gun, "v1", image.size, image.digest, roles=(RELEASES,))
    run = run_request(write_config(delegations=(RELEASES,)), pod(image.reference))
    assert run.response == {"allowed": True}, run.message


def test_required_delegation_that_did_not_sign_is_denied(write_config, signed_image, notary, tmp_path) -> None:
    config = write_config(delegations=(RELEASES,))
    # Not even delegated yet.
    run = run_request(config, pod(signed_image.reference))
    assert run.allowed is False
    assert denial(signed_image.reference) + (
        f"the required delegation {RELEASES} did not sign tag 'v1': targets delegates no role {RELEASES}"
    ) in run.message

    # Delegated, but the tag is signed by targets only.
    gun = gun_of(signed_image)
    notary.add_delegation(gun, RELEASES, *delegation_key(tmp_path))
    notary.addhash(gun, "other", 1, "sha256:" + "ab" * 32, roles=(RELEASES,))
    run = run_request(config, pod(signed_image.reference))
    assert run.allowed is False
    assert denial(signed_image.reference) + (
        f"the required delegation {RELEASES} did not sign tag 'v1' in {gun} (it is signed by targets)"
    ) in run.message
    assert image_entry(run, signed_image.reference)["reason"] == "notary-delegation-missing"


def test_without_required_delegations_releases_wins_over_targets(write_config, http, repo, notary, root_pem, tmp_path) -> None:
    """As the Docker client: targets/releases first. Here releases signs the served digest, while
    targets still names an older one."""
    old = push_image(http, repo, "v1")
    gun = gun_of(old)
    notary.init(gun)
    notary.addhash(gun, "v1", old.size, old.digest)
    new = push_image(http, repo, "v1")
    notary.add_delegation(gun, RELEASES, *delegation_key(tmp_path))
    notary.addhash(gun, "v1", new.size, new.digest, roles=(RELEASES,))
    run = run_request(write_config(), pod(new.reference))
    assert run.response == {"allowed": True}, run.message


def test_notary_server_down_is_denied_with_a_clear_message(write_config, signed_image) -> None:
    server = f"https://127.0.0.1:{free_port()}"
    run = run_request(write_config(server=server), pod(signed_image.reference))
    assert run.allowed is False
    assert denial(signed_image.reference) + f"Notary server {server} unreachable: connection refused" in run.message
    assert image_entry(run, signed_image.reference)["reason"] == "notary-unreachable"


def test_notary_server_with_an_untrusted_certificate_names_the_setting(write_config, signed_image, tmp_path) -> None:
    from support.certs import make_unrelated_ca

    config = write_config()
    data = yaml.safe_load(config.read_text())
    data["policy"][0]["notary"]["caBundle"] = str(make_unrelated_ca(tmp_path).cert_path)
    config.write_text(yaml.safe_dump(data))
    run = run_request(config, pod(signed_image.reference))
    assert run.allowed is False
    assert "certificate signed by an unknown authority; set the rule's notary.caBundle" in run.message


# ---- the root-key command -----------------------------------------------------------------------


def test_root_key_command_prints_the_pinned_key_and_its_ids(notary_server, notary, signed_image, root_pem) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = root_key_main([gun_of(signed_image), "--server", notary_server.url, "--ca", str(notary_server.ca_path)], out, err)
    assert code == 0, err.getvalue()
    printed = out.getvalue()
    key = public_key_from_pem("printed", "-", printed.encode())  # the output is a usable key file as is
    assert key.fingerprint == pinned(root_pem).fingerprint
    # The canonical ID is what `notary key list` shows for the root key.
    listing = notary.run("key", "list").stdout
    [root_line] = [line for line in listing.splitlines() if line.startswith("root")]
    canonical = root_line.split()[1]
    assert f"# canonical key ID {canonical} " in printed
    root_json = json.loads(fetch_all(notary_server, gun_of(signed_image), ("root",))["root"])
    [cert_id] = root_json["signed"]["roles"]["root"]["keyids"]
    assert f"# key ID {cert_id} (ecdsa-x509)" in printed
    assert f"# certificate for {gun_of(signed_image)}" in printed


def test_root_key_command_fails_clearly_for_an_unknown_collection(notary_server) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = root_key_main(["127.0.0.1:1/nothing/here", "--server", notary_server.url, "--ca", str(notary_server.ca_path)], out, err)
    assert code == 2 and out.getvalue() == ""
    assert "has no trust data for 127.0.0.1:1/nothing/here" in err.getvalue()


# ---- real metadata, chosen clock or bytes -------------------------------------------------------


def test_real_metadata_verifies_and_expires_by_the_clock(notary_server, signed_image, root_pem) -> None:
    gun = gun_of(signed_image)
    files = fetch_all(notary_server, gun)
    collection = TrustCollection(gun, dict_fetch(files), [pinned(root_pem)], datetime.now(timezone.utc), max_bytes=1 << 20)
    accepted = verify_target(collection, tag="v1", digest=None, served_digest=signed_image.digest, served_size=signed_image.size)
    assert accepted.signers == (("targets", "v1"),)

    # notary-server gives the timestamp 14 days; the snapshot and targets 3 years, root 10.
    timestamp_expiry = json.loads(files["timestamp"])["signed"]["expires"]
    later = parse_time(timestamp_expiry) + timedelta(seconds=1)
    with pytest.raises(MetadataExpired, match=rf"^metadata expired: timestamp.json of {gun} expired at "):
        TrustCollection(gun, dict_fetch(files), [pinned(root_pem)], later, max_bytes=1 << 20)
    # Eleven years on, root.json (checked first) is past its own expiry and its certificate's.
    with pytest.raises(MetadataExpired, match=rf"^root.json of {gun} .*expired at "):
        TrustCollection(gun, dict_fetch(files), [pinned(root_pem)], datetime.now(timezone.utc) + timedelta(days=365 * 11), max_bytes=1 << 20)


def test_evaluate_notary_takes_the_clock(notary_server, signed_image, root_pem, registry, write_config) -> None:
    config = parse_config(write_config().read_text(), "config.yaml")
    rule = config.policy[0]
    ref = parse_reference(signed_image.reference)
    client = RegistryClient(config.registries, config.limits, Deadline(10))
    keyring = KeyRing(config.keys)
    try:
        verdict = evaluate_notary(config, rule, ref, client, keyring)
        assert verdict.passed and verdict.digest == signed_image.digest
        later = evaluate_notary(config, rule, ref, client, keyring, now=datetime.now(timezone.utc) + timedelta(days=15))
        assert not later.passed and later.reason == MetadataExpired.reason
        # Without a clock, the current time.
        assert evaluate_image(config, rule, ref, client, keyring).passed
        assert any(record.path.endswith("/_trust/tuf/root.json") for record in client.records)
    finally:
        client.close()


def test_tampered_snapshot_or_targets_break_the_hash_chain(notary_server, signed_image, root_pem) -> None:
    gun = gun_of(signed_image)
    files = fetch_all(notary_server, gun)
    key = [pinned(root_pem)]

    # Same content, reformatted: the signature still verifies (it is over canonical JSON), but the
    # bytes no longer match what timestamp.json lists, and that is checked first.
    reformatted = json.dumps(json.loads(files["snapshot"]), indent=2).encode()
    snapshot = parse_metadata(reformatted, "snapshot", gun)
    assert snapshot.message == canonical_json(json.loads(files["snapshot"])["signed"])
    with pytest.raises(NotaryError, match=r"^snapshot.json is larger than the limit of \d+ bytes$"):
        # Fetched with the length timestamp.json lists as the cap: a longer file is never read whole.
        TrustCollection(gun, dict_fetch({**files, "snapshot": reformatted}), key, datetime.now(timezone.utc), max_bytes=1 << 20)
    with pytest.raises(HashMismatch, match=rf"^snapshot.json of {gun} is \d+ bytes, but timestamp.json lists \d+$"):
        TrustCollection(gun, dict_fetch({**files, "snapshot": files["snapshot"][:-1]}), key, datetime.now(timezone.utc), max_bytes=1 << 20)

    # One target digest changed, same length: the hash the snapshot lists no longer matches.
    targets = json.loads(files["targets"])
    entry = targets["signed"]["targets"]["v1"]["hashes"]
    entry["sha256"] = base64.b64encode(bytes(32)).decode()
    tampered = json.dumps(targets, separators=(",", ":")).encode()
    assert len(tampered) == len(files["targets"])
    with pytest.raises(HashMismatch, match=rf"^targets.json of {gun} does not match the sha256 that snapshot.json lists for it$"):
        TrustCollection(gun, dict_fetch({**files, "targets": tampered}), key, datetime.now(timezone.utc), max_bytes=1 << 20)

    # The same (validly signed) files served for another GUN: the root certificate names this one.
    with pytest.raises(RootNotTrusted, match=rf"is for '{gun}', not '127.0.0.1:9/elsewhere/app'"):
        TrustCollection("127.0.0.1:9/elsewhere/app", dict_fetch(files), key, datetime.now(timezone.utc), max_bytes=1 << 20)


def test_delegation_files_are_chained_through_the_snapshot(notary_server, http, repo, notary, root_pem, tmp_path) -> None:
    image = push_image(http, repo, "v1")
    gun = gun_of(image)
    notary.init(gun)
    notary.add_delegation(gun, RELEASES, *delegation_key(tmp_path))
    notary.addhash(gun, "v1", image.size, image.digest, roles=(RELEASES,))
    files = fetch_all(notary_server, gun, ("root", "timestamp", "snapshot", "targets", RELEASES))
    key = [pinned(root_pem)]

    collection = TrustCollection(gun, dict_fetch(files), key, datetime.now(timezone.utc), max_bytes=1 << 20)
    accepted = verify_target(collection, tag="v1", digest=None, served_digest=image.digest, served_size=image.size,
                           required=(RELEASES,))
    assert accepted.signers == ((RELEASES, "v1"),)

    # The delegation file swapped for the top-level targets file: wrong bytes for the snapshot.
    swapped = TrustCollection(gun, dict_fetch({**files, RELEASES: files["targets"]}), key, datetime.now(timezone.utc), max_bytes=1 << 20)
    with pytest.raises(NotaryError, match=rf"^{RELEASES}.json is larger than the limit of \d+ bytes$"):
        swapped.role(RELEASES)
    # The same role file re-encoded to the same length with other content: the hash catches it.
    releases = json.loads(files[RELEASES])
    releases["signed"]["targets"]["v1"]["length"] = image.size + 1 if image.size % 10 != 9 else image.size - 1
    forged = json.dumps(releases, separators=(",", ":")).encode()
    assert len(forged) == len(files[RELEASES])
    changed = TrustCollection(gun, dict_fetch({**files, RELEASES: forged}), key, datetime.now(timezone.utc), max_bytes=1 << 20)
    with pytest.raises(HashMismatch, match=rf"^{RELEASES}.json of {gun} does not match the sha256 that snapshot.json lists"):
        changed.role(RELEASES)

    # Delegated but missing on the server although the snapshot lists it.
    missing = TrustCollection(gun, dict_fetch({k: v for k, v in files.items() if k != RELEASES}), key, datetime.now(timezone.utc), max_bytes=1 << 20)
    with pytest.raises(InvalidMetadata, match="lists targets/releases.json, but the Notary server has none"):
        missing.role(RELEASES)


# ---- pure functions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, False, None], "c": {"z": "", "y": -3}}, b'{"a":[true,false,null],"b":1,"c":{"y":-3,"z":""}}'),
        ('quote " backslash \\ tab \t newline \n', b'"quote \\" backslash \\\\ tab \t newline \n"'),
        ("<&> é ü \u0001", '"<&> é ü \u0001"'.encode()),  # no HTML or control escapes, raw UTF-8
        ("\u2028\u2029", b'"\\u2028\\u2029"'),
        ({"Z": 0, "a": 0, "é": 0}, '{"Z":0,"a":0,"é":0}'.encode()),  # byte order of UTF-8
        (1234567, b"1234567"),  # Notary signs integers in full, never as 1.234567e+06
    ],
)
def test_canonical_json(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize("value", [1.5, {"a": 2.0}, float("nan"), {1: "x"}, b"bytes"])
def test_canonical_json_refuses_what_notary_cannot_sign(value: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(value)


def test_parse_time_takes_go_nanoseconds_and_offsets() -> None:
    assert parse_time("2036-11-20T09:43:14.251537882Z") == datetime(2036, 11, 20, 9, 43, 14, 251537, tzinfo=timezone.utc)
    assert parse_time("2030-01-01T02:00:00+02:00") == datetime(2030, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        parse_time("2030-01-01 00:00:00")


def test_key_ids_of_real_root_metadata(notary_server, notary, signed_image, root_pem) -> None:
    root = json.loads(fetch_all(notary_server, gun_of(signed_image), ("root",))["root"])["signed"]
    for key_id, obj in root["keys"].items():
        public = base64.b64decode(obj["keyval"]["public"])
        assert tuf_key_id(obj["keytype"], public) == key_id
        key = parse_key(key_id, obj, "root.json")
        assert key.key is not None, key.problem
    [cert_id] = root["roles"]["root"]["keyids"]
    cert_key = parse_key(cert_id, root["keys"][cert_id], "root.json")
    assert cert_key.keytype == "ecdsa-x509" and cert_key.fingerprint == pinned(root_pem).fingerprint
    # The canonical ID: the plain public key's ID, which names the private key file.
    der = pinned(root_pem).spki_der
    assert cert_key.canonical_id == tuf_key_id("ecdsa", der)
    assert (notary.trust_dir / "private" / f"{cert_key.canonical_id}.key").exists()

    bad = dict(root["keys"][cert_id])
    with pytest.raises(InvalidMetadata, match="is not the ID of the key it names"):
        parse_key("0" * 64, bad, "root.json")


# Synthetic metadata signed by the test, for the counting rules.


def _tuf_key(private: Any) -> TufKey:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        keytype = "ed25519"
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        keytype = "ecdsa"
        public = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    obj = {"keytype": keytype, "keyval": {"private": None, "public": base64.b64encode(public).decode()}}
    return parse_key(tuf_key_id(keytype, public), obj, "test")


def _sign(private: Any, message: bytes, raw_ecdsa: bool = True) -> tuple[str, bytes]:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return "eddsa", private.sign(message)
    der = private.sign(message, ec.ECDSA(hashes.SHA256()))
    if not raw_ecdsa:
        return "ecdsa", der
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(der)
    return "ecdsa", r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _signed_file(signed: dict[str, Any], signers: list[tuple[TufKey, Any]], *, corrupt: bool = False) -> bytes:
    message = canonical_json(signed)
    signatures = []
    for key, private in signers:
        method, value = _sign(private, message, raw_ecdsa=key.keytype == "ecdsa" and len(signatures) % 2 == 0)
        if corrupt:
            value = bytes([value[0] ^ 1]) + value[1:]
        signatures.append({"keyid": key.key_id, "method": method, "sig": base64.b64encode(value).decode()})
    return json.dumps({"signed": signed, "signatures": signatures}).encode()


TARGETS_SIGNED = {"_type": "Targets", "expires": "2099-01-01T00:00:00Z", "version": 1, "targets": {}, "delegations": {"keys": {}, "roles": []}}


@pytest.fixture(scope="module")
def three_keys() -> list[tuple[TufKey, Any]]:
    privates = [ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())]
    return [(_tuf_key(p), p) for p in privates]


def _role(keys: list[tuple[TufKey, Any]], threshold: int) -> Role:
    return Role("targets", tuple(k.key_id for k, _ in keys), threshold, {k.key_id: k for k, _ in keys})


def test_threshold_counts_distinct_valid_keys_of_the_role(three_keys) -> None:
    role = _role(three_keys, 2)
    both = parse_metadata(_signed_file(TARGETS_SIGNED, three_keys[:2]), "targets", "gun")
    assert set(verify_signatures(both, role)) == {three_keys[0][0].key_id, three_keys[1][0].key_id}

    # One key signing twice is one signature.
    twice = parse_metadata(_signed_file(TARGETS_SIGNED, [three_keys[0], three_keys[0]]), "targets", "gun")
    with pytest.raises(ThresholdNotMet, match="^targets.json of gun is not validly signed: 1 of the 2 required signature"):
        verify_signatures(twice, role)

    # A key outside the role does not count, even when its signature is valid.
    private = ec.generate_private_key(ec.SECP256R1())
    meta = parse_metadata(_signed_file(TARGETS_SIGNED, [three_keys[0], (_tuf_key(private), private)]), "targets", "gun")
    with pytest.raises(ThresholdNotMet):
        verify_signatures(meta, role)

    # Corrupted signatures do not count; DER-encoded ECDSA is accepted like raw r||s.
    bad = parse_metadata(_signed_file(TARGETS_SIGNED, three_keys, corrupt=True), "targets", "gun")
    with pytest.raises(ThresholdNotMet, match="0 of the 2"):
        verify_signatures(bad, role)
    mixed = parse_metadata(_signed_file(TARGETS_SIGNED, [three_keys[2], three_keys[0]]), "targets", "gun")
    assert len(verify_signatures(mixed, role)) == 2


def test_signature_over_other_content_does_not_verify(three_keys) -> None:
    role = _role(three_keys, 1)
    raw = json.loads(_signed_file(TARGETS_SIGNED, three_keys[:1]))
    raw["signed"]["version"] = 2  # the signature was over version 1
    with pytest.raises(ThresholdNotMet):
        verify_signatures(parse_metadata(json.dumps(raw).encode(), "targets", "gun"), role)


def test_check_file_length_and_each_listed_hash() -> None:
    data = b"snapshot bytes"
    entry = {"length": len(data), "hashes": {
        "sha256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
        "sha512": base64.b64encode(hashlib.sha512(data).digest()).decode(),
    }}
    verify_file(data, entry, "snapshot.json", "timestamp.json")
    with pytest.raises(HashMismatch, match="is 15 bytes, but timestamp.json lists 14"):
        verify_file(data + b"!", entry, "snapshot.json", "timestamp.json")
    wrong512 = {**entry, "hashes": {**entry["hashes"], "sha512": base64.b64encode(bytes(64)).decode()}}
    with pytest.raises(HashMismatch, match="does not match the sha512"):
        verify_file(data, wrong512, "snapshot.json", "timestamp.json")
    with pytest.raises(InvalidMetadata, match="no sha256 or sha512"):
        verify_file(data, {"length": len(data), "hashes": {"md5": "AAAA"}}, "snapshot.json", "timestamp.json")


def test_parse_metadata_refuses_wrong_type_floats_and_duplicate_keys(three_keys) -> None:
    good = _signed_file(TARGETS_SIGNED, three_keys[:1])
    with pytest.raises(InvalidMetadata, match="has type 'Targets', not 'Snapshot'"):
        parse_metadata(good, "snapshot", "gun")
    with pytest.raises(InvalidMetadata, match="not an integer"):
        parse_metadata(good.replace(b'"version": 1', b'"version": 1.0'), "targets", "gun")
    with pytest.raises(InvalidMetadata, match="duplicate key"):
        parse_metadata(good.replace(b'"version": 1', b'"version": 1, "version": 2'), "targets", "gun")


def test_delegation_paths_are_restricted_by_the_parent() -> None:
    signed = {**TARGETS_SIGNED, "delegations": {"keys": {}, "roles": [
        {"name": "targets/a/b", "keyids": [], "threshold": 1, "paths": ["ab", "abc/x", "zz"]},
    ]}}
    meta = Metadata("targets/a", "gun", b"", signed, (), b"", 1, datetime.now(timezone.utc))
    parent = Role("targets/a", (), 1, {}, paths=("abc",))
    [child] = parse_delegations(meta, parent)
    assert child.paths == ("abc/x",)  # "ab" is wider than the parent allows; "zz" is outside it
    assert child.allows("abc/x/1") and not child.allows("abd")

    # Only a direct child may be delegated.
    bad = {**signed, "delegations": {"keys": {}, "roles": [{"name": "targets/other", "keyids": [], "threshold": 1}]}}
    with pytest.raises(InvalidMetadata, match="not a child role of targets/a"):
        parse_delegations(replace(meta, signed=bad), parent)
