"""The notaryv1 verifier through its contract: settings from the configuration, the rule's flow
over fabricated trust data and a stand-in client (no network), and what it tells the rest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from signgate.config import parse_config
from signgate.deadline import Deadline
from signgate.errors import ConfigError, NotFound, TooLarge
from signgate.keyring import KeyRing
from signgate.reference import parse_reference
from signgate.registry import Manifest
from signgate.settings import Config
from signgate.verifiers import VERIFIERS
from signgate.verifiers.notaryv1 import NotarySettings, NotaryV1Verifier
from signgate.verifiers.notaryv1.errors import MetadataExpired
from signgate.verifiers.notaryv1.verifier import evaluate_notary

from .tuf import GUN, NOW, Collection, root_key, target

MANIFEST = json.dumps({"schemaVersion": 2, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
SERVER = "https://notary.example:4443"


def config_for(tmp_path: Path, collection: Collection, **notary: Any) -> Config:
    pem = collection.root.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "root.pub").write_bytes(pem)
    data = {
        "keys": {"root": str(tmp_path / "root.pub")},
        "policy": [{"images": "registry.example/**", "type": "notaryv1",
                    "notary": {"server": SERVER, "rootKeys": ["root"], **notary}}],
    }
    return parse_config(json.dumps(data), "config.json")


@dataclass
class NotaryHTTP:
    """The client NotaryFetcher gets from for_server(): serves role files from a dict."""

    files: dict[str, bytes]
    asked: list[str] = field(default_factory=list)

    def get_bytes(self, host: str, repository: str, path: str, *, accept: str, what: str, max_bytes: int) -> bytes:
        role = path.split("/_trust/tuf/", 1)[1].removesuffix(".json")
        self.asked.append(role)
        if role not in self.files:
            raise NotFound(f"{what} not found")
        if len(self.files[role]) > max_bytes:
            raise TooLarge(f"{what} is larger than the limit of {max_bytes} bytes")
        return self.files[role]

    def close(self) -> None:
        pass


@dataclass
class ImageClient:
    """The image registry client as evaluate_notary uses it: for_server() and get_manifest()."""

    notary: NotaryHTTP
    manifests: dict[str, bytes] = field(default_factory=lambda: {"v1": MANIFEST, DIGEST: MANIFEST})
    deadline: Deadline = field(default_factory=lambda: Deadline(5))
    servers: list[Any] = field(default_factory=list)

    def for_server(self, settings: Any, wording: Any) -> NotaryHTTP:
        self.servers.append((settings, wording))
        return self.notary

    def get_manifest(self, host: str, repository: str, reference: str) -> Manifest:
        if reference not in self.manifests:
            raise NotFound(f"manifest {host}/{repository}:{reference} not found")
        body = self.manifests[reference]
        return Manifest("sha256:" + hashlib.sha256(body).hexdigest(), "application/vnd.oci.image.manifest.v1+json", body, json.loads(body))


def current() -> Collection:
    """Trust data current by the real clock, for the contract's verify(), which takes none."""
    return Collection(root=root_key(not_before=datetime(2000, 1, 1, tzinfo=timezone.utc)))


def run(config: Config, client: ImageClient, image: str = "registry.example/team/app:v1") -> Any:
    return NotaryV1Verifier().evaluate(config, config.policy[0], parse_reference(image), client, KeyRing(config.keys))  # type: ignore[arg-type]


def test_the_configuration_parses_the_notary_section_into_rule_settings(tmp_path: Path) -> None:
    collection = Collection()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(collection.root.certificate.public_bytes(serialization.Encoding.PEM))
    config = config_for(tmp_path, collection, delegations=["targets/releases"], caBundle=str(ca))
    rule = config.policy[0]
    assert rule.settings == NotarySettings(SERVER, ("root",), str(ca), ("targets/releases",))
    verifier = VERIFIERS["notaryv1"]
    assert verifier.key_names(rule) == ("root",)
    assert verifier.trust_files(config, rule) == [str(tmp_path / "root.pub")]
    assert verifier.endpoints(rule, frozenset()) == {("notary.example", 4443)}
    assert verifier.describe(rule) == [
        "type=notaryv1", f"server={SERVER}", "rootKeys=root", "delegations=targets/releases", f"caBundle={ca}",
    ]


@pytest.mark.parametrize(
    ("notary", "message"),
    [
        ({"server": "notary.example"}, r"policy\[0\]\.notary\.server: must be a URL like https://notary.example.com:4443"),
        ({"rootKeys": []}, r"policy\[0\]\.notary\.rootKeys: is required"),
        ({"rootKeys": ["nobody"]}, r"policy\[0\]\.notary\.rootKeys: names unknown key 'nobody' \(keys: root\)"),
        ({"delegations": ["releases"]}, r"policy\[0\]\.notary\.delegations: 'releases' is not a delegation role"),
    ],
)
def test_the_configuration_refuses_bad_notary_settings_with_their_path(tmp_path: Path, notary: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_for(tmp_path, Collection(), **notary)


def test_a_signed_tag_passes_with_the_pinned_key_and_signers_named(tmp_path: Path) -> None:
    collection = Collection(targets={"v1": target(DIGEST.removeprefix("sha256:"), len(MANIFEST))})
    config = config_for(tmp_path, collection)
    client = ImageClient(NotaryHTTP(collection.files()))
    verdict = evaluate_notary(config, config.policy[0], parse_reference("registry.example/team/app:v1"), client,  # type: ignore[arg-type]
                              KeyRing(config.keys), now=NOW)
    assert verdict.passed and verdict.reason == "verified" and verdict.digest == DIGEST
    assert verdict.verified_keys == ("root",)
    assert verdict.details[0].startswith(f"trust data of {GUN} on {SERVER}: root.json v1 signed by pinned key(s) root (")
    assert verdict.details[1] == "timestamp v1 expires 2099-01-01 00:00:00 UTC"
    assert verdict.details[2] == "'v1' signed by targets"
    assert client.notary.asked == ["root", "timestamp", "snapshot", "targets"]
    [(settings, wording)] = client.servers
    assert settings.ca_bundle is None and wording.own_name == f"Notary server {SERVER}"

    # The clock is the caller's: fifty years on, the metadata has expired.
    expired = evaluate_notary(config, config.policy[0], parse_reference("registry.example/team/app:v1"), client,  # type: ignore[arg-type]
                              KeyRing(config.keys), now=NOW.replace(year=2100))
    assert not expired.passed and expired.reason == MetadataExpired.reason


def test_failures_become_verdicts_with_their_reason(tmp_path: Path) -> None:
    collection = current()
    collection.targets = {"v1": target("ab" * 32, len(MANIFEST))}
    config = config_for(tmp_path, collection)
    files = collection.files()
    verdict = run(config, ImageClient(NotaryHTTP(files)))
    assert not verdict.passed and verdict.reason == "notary-digest-mismatch"
    assert verdict.message.startswith("the digest differs from the signed one: tag 'v1' is signed by targets as sha256:abababababab…")

    verdict = run(config, ImageClient(NotaryHTTP({})))
    assert (verdict.reason, verdict.message) == (
        "notary-no-trust-data", f"no trust data for the tag 'v1': the Notary server has no trust data for {GUN}")

    verdict = run(config, ImageClient(NotaryHTTP(files)), f"registry.example/team/app@{DIGEST}")
    assert (verdict.reason, verdict.message) == (
        "notary-no-trust-data", f"no trust data for digest {DIGEST[:19]}… in {GUN}: no signed target carries it")

    verdict = run(config, ImageClient(NotaryHTTP({**files, "snapshot": files["snapshot"] + b" "})))
    assert (verdict.reason, verdict.message) == (
        "notary-too-large", f"snapshot.json of {GUN} from Notary server {SERVER} is larger than the limit of {len(files['snapshot'])} bytes")


def test_an_image_the_registry_does_not_have_is_not_found(tmp_path: Path) -> None:
    collection = current()
    collection.targets = {"v2": target("ab" * 32, 1)}
    config = config_for(tmp_path, collection)
    verdict = run(config, ImageClient(NotaryHTTP(collection.files())), "registry.example/team/app:v2")
    assert (verdict.passed, verdict.reason, verdict.message) == (
        False, "image-not-found", f"the registry has no image {GUN} with tag 'v2'")
    verdict = run(config, ImageClient(NotaryHTTP(collection.files())), f"registry.example/team/app@sha256:{'cd' * 32}")
    assert (verdict.reason, verdict.message) == ("image-not-found", f"the registry has no image {GUN} with digest sha256:{'cd' * 32}")


def test_a_missing_pinned_key_file_is_a_verdict_before_any_request(tmp_path: Path) -> None:
    collection = Collection()
    config = config_for(tmp_path, collection)
    (tmp_path / "root.pub").unlink()
    client = ImageClient(NotaryHTTP(collection.files()))
    verdict = run(config, client)
    assert not verdict.passed and verdict.reason == "invalid-key"
    assert verdict.message.startswith("cannot check trust data: key 'root': file ") and client.notary.asked == []
