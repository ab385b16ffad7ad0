"""Transparency-log key validity windows through the hook (issue 16, items 1 and 4).

A trusted_root.json gives each log key a window (`publicKey.validFor`); Sigstore keeps a retired
key in the root, with an end, so that entries it signed before then still verify. Through the
hook, with a root whose Rekor v1 and v2 keys both ended a minute ago:
- a keyless legacy signature whose SET was integrated before the end is admitted;
- one whose SET was integrated after the end is denied, the message naming the integrated time,
  the log key and its window; nor does such a SET give the certificate a signing time;
- a keyless bundle proven only by a Rekor v2 checkpoint of the retired key, with no verified
  timestamp, is denied, saying that nothing shows it was logged before the end;
- a rule with keys beside its identities accepts the trusted root's logs as proof for its keys
  too, within the same windows.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from integration.test_keyless import (
    admit,
    config,
    hashedrekord,
    leaf,
    legacy_rekor_bundle,
    rekor_v2_certificate_bundle,
    sign_legacy_keyless,
)
from support.fulcio import NOW, new_ct_log, new_fulcio, trusted_root
from support.oci import push_image
from support.signer import attach_bundle, sign_legacy, simple_signing_payload
from support.tlog import new_log

pytestmark = pytest.mark.registry

WORKFLOW = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
START = NOW - dt.timedelta(days=30)
END = NOW - dt.timedelta(seconds=60)


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """test_keyless's trust material, with both transparency log keys retired at END."""
    directory = tmp_path_factory.mktemp("retired-pki")
    fulcio, ct = new_fulcio(), new_ct_log()
    log, log2 = new_log(directory, "rekor.retired.test", "v1"), new_log(directory, "log2024-1.rekor.retired.test", "v2")
    path = trusted_root(directory / "trusted_root.json", fulcio, [ct], [log, log2])
    document = json.loads(path.read_text())
    for entry in document["tlogs"]:
        entry["publicKey"]["validFor"] = {"start": stamp(START), "end": stamp(END)}
    path.write_text(json.dumps(document, indent=1))
    corp = new_fulcio("corp-ca")
    corp_chain, _ = corp.write(directory)
    return {"fulcio": fulcio, "ct": ct, "log": log, "log2": log2, "root": path, "corp-chain": corp_chain}


def test_a_set_integrated_before_the_retired_log_keys_end_is_admitted(tmp_path: Path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    logged = int((END - dt.timedelta(seconds=60)).timestamp())
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key), pki["fulcio"].chain_pem.decode(), pki["log"], logged)
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), image)
    assert run.allowed, run.message


def test_a_set_integrated_after_the_retired_log_keys_end_is_denied_saying_when_and_which_window(tmp_path: Path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    logged = NOW + dt.timedelta(seconds=30)
    sign_legacy_keyless(http, repo, image, key, leaf(pki, key), pki["fulcio"].chain_pem.decode(), pki["log"], int(logged.timestamp()))
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), image)
    assert not run.allowed
    assert (
        f"signed by {WORKFLOW} (issuer {GITHUB_ISSUER}), but its transparency-log entry was integrated at {stamp(logged)}, "
        f"outside the validity of log key https://rekor.retired.test ({stamp(START)} to {stamp(END)})"
    ) in run.message


def test_a_set_outside_the_window_gives_no_signing_time(tmp_path: Path, http, repo, keys, pki) -> None:
    # Under `tlog: ignore` the SET need not count, but its integrated time is then no verified
    # time either: a leaf that expired two days ago is checked at the current time, and fails.
    key = keys["ecdsa-p256"]
    issued = NOW - dt.timedelta(days=2)
    certificate = leaf(pki, key, not_before=issued, not_after=issued + dt.timedelta(minutes=10))
    inside, outside = push_image(http, repo, "v1"), push_image(http, repo, "v2")
    during = int((issued + dt.timedelta(minutes=3)).timestamp())
    sign_legacy_keyless(http, repo, inside, key, certificate, pki["fulcio"].chain_pem.decode(), pki["log"], during)
    assert admit(tmp_path, config(http, pki), inside).allowed
    sign_legacy_keyless(http, repo, outside, key, certificate, pki["fulcio"].chain_pem.decode(), pki["log"], int(NOW.timestamp()))
    run = admit(tmp_path, config(http, pki), outside)
    assert not run.allowed
    assert "no verified time, so the current time" in run.message and "the certificate expired" in run.message


def test_a_rekor_v2_checkpoint_of_a_retired_key_without_a_timestamp_is_denied_saying_so(tmp_path: Path, http, repo, keys, pki) -> None:
    key, image = keys["ecdsa-p256"], push_image(http, repo, "v1")
    attach_bundle(http, repo, image, rekor_v2_certificate_bundle(pki, image, key))
    run = admit(tmp_path, config(http, pki, {"tlog": "required"}), image)
    assert not run.allowed
    assert (
        f"signed by {WORKFLOW} (issuer {GITHUB_ISSUER}), but its transparency-log checkpoint is signed by log key "
        f"https://log2024-1.rekor.retired.test, whose validity ended at {stamp(END)}, "
        "and no verified timestamp shows that the entry was logged before then"
    ) in run.message


@pytest.mark.parametrize("before_end", [True, False], ids=["logged-before-end", "logged-after-end"])
def test_a_key_signer_of_a_trusted_root_rule_is_proven_by_the_roots_log_within_its_window(
    tmp_path: Path, http, repo, keys, pki, before_end
) -> None:
    # No rekorKeys: the rule's trusted root is the only source of log keys, for its key as for its identities.
    key, image = keys["ecdsa-p384"], push_image(http, repo, "v1")
    payload = simple_signing_payload(f"{http.host}/{repo}", image.digest)
    signature = key.sign(payload)
    logged = END - dt.timedelta(seconds=60) if before_end else NOW + dt.timedelta(seconds=30)
    bundle = legacy_rekor_bundle(pki["log"], hashedrekord(payload, signature, key.public_pem.decode()), int(logged.timestamp()))
    sign_legacy(http, repo, image.digest, key, payload=payload, signature_override=signature,
                extra_layer_annotations={"dev.sigstore.cosign/bundle": bundle})
    data = config(http, pki, {"keys": ["ci"], "tlog": "required"}, keys={"ci": str(key.pub_path)})
    run = admit(tmp_path, data, image)
    assert run.allowed is before_end, run.message
    if not before_end:
        assert (
            f"signature by key ci: its transparency-log entry was integrated at {stamp(logged)}, "
            f"outside the validity of log key https://rekor.retired.test ({stamp(START)} to {stamp(END)})"
        ) in run.message
