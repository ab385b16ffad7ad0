"""Transparency-log key validity windows in rekor.py (issue 16, item 1 and 4).

A trusted_root.json gives each transparency log key a window (`publicKey.validFor`). What must hold:
- a SET counts only when the integrated time it vouches for lies inside the window of the key that
  signed it (both ends inclusive), and never when it lies more than CLOCK_SKEW in the future;
- a mounted rekorKeys PEM has no window: any past integrated time counts, as before;
- a Rekor v2 checkpoint counts only when its key was valid at the verified signing time; with no
  such time, only when the key's window has started and not ended;
- every refusal says what was found (the integrated or signing time) against what was required
  (the key and its window).

The SETs, checkpoints and Merkle trees come from tests/support/tlog.py (a real test log key), the
windows from a trusted_root.json written by tests/support/fulcio.py and parsed by trust_root.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signgate.keys import PublicKey, load_public_key
from signgate.settings import KeySpec
from signgate.verifiers.cosign.dsse import INTOTO_PAYLOAD_TYPE, pae
from signgate.verifiers.cosign.models import TlogEntry
from signgate.verifiers.cosign.rekor import (
    CLOCK_SKEW,
    UNBOUNDED,
    RekorKeys,
    check_bundle_tlog,
    check_legacy_tlog,
    proven_integrated_times,
)
from signgate.verifiers.cosign.trust_root import LogKey, Validity, load_trust_root
from support.fulcio import new_fulcio, trusted_root
from support.tlog import TestLog, dsse_v001_body, hashedrekord_v002_body, new_log

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
START = NOW - dt.timedelta(days=365)
END = NOW - dt.timedelta(days=30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Signer:
    """An image signer's key: what the logged entries are about."""

    def __init__(self, directory: Path) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        path = directory / "signer.pub"
        path.write_bytes(self.public_pem)
        self.key: PublicKey = load_public_key(KeySpec("signer", str(path)))

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def public_der(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data, ec.ECDSA(hashes.SHA256()))


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer(tmp_path)


@pytest.fixture
def v1(tmp_path: Path) -> TestLog:
    return new_log(tmp_path / "logs", "rekor.window.test", "v1")


@pytest.fixture
def v2(tmp_path: Path) -> TestLog:
    return new_log(tmp_path / "logs", "log2025-1.rekor.window.test", "v2")


def root_logs(directory: Path, log: TestLog, start: dt.datetime | None = START, end: dt.datetime | None = END) -> list[LogKey]:
    """The log as a trusted_root.json gives it, with the window [start, end]."""
    path = trusted_root(directory / f"root-{log.name}.json", new_fulcio(), [], [log])
    document = json.loads(path.read_text())
    window: dict[str, str] = {"start": stamp(start)} if start else {}
    if end is not None:
        window["end"] = stamp(end)
    document["tlogs"][0]["publicKey"]["validFor"] = window
    path.write_text(json.dumps(document))
    return list(load_trust_root(str(path)).tlogs)


def mounted(log: TestLog) -> RekorKeys:
    return RekorKeys.of([load_public_key(KeySpec("rekor-pem", str(log.pub_path)))])


def hashedrekord_v001(payload: bytes, signature: bytes, public_pem: bytes) -> bytes:
    return json.dumps({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {"content": b64(signature), "publicKey": {"content": b64(public_pem)}},
        },
    }, sort_keys=True, separators=(",", ":")).encode()


def legacy_bundle(log: TestLog, signer: Signer, payload: bytes, integrated: dt.datetime) -> tuple[str, bytes]:
    """A `dev.sigstore.cosign/bundle` annotation whose SET vouches for `integrated`, and the signature."""
    signature = signer.sign(payload)
    body = hashedrekord_v001(payload, signature, signer.public_pem)
    index = log.append(body)
    when = int(integrated.timestamp())
    annotation = json.dumps({
        "SignedEntryTimestamp": b64(log.set_over(b64(body), when, index)),
        "Payload": {"body": b64(body), "integratedTime": when, "logIndex": index, "logID": log.log_id.hex()},
    })
    return annotation, signature


STATEMENT = b'{"_type":"https://in-toto.io/Statement/v1"}'
PAYLOAD = b'{"critical":{"image":{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"}}}'


# ---- legacy SETs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("integrated", [START, START + dt.timedelta(days=100), END], ids=["at-start", "inside", "at-end"])
def test_a_set_integrated_within_the_root_log_keys_window_counts(tmp_path, signer, v1, integrated) -> None:
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v1))
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, integrated)
    assert check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW) is None


@pytest.mark.parametrize(
    "integrated", [END + dt.timedelta(seconds=1), NOW, START - dt.timedelta(seconds=1)], ids=["after-end", "now", "before-start"]
)
def test_a_set_integrated_outside_the_root_log_keys_window_is_refused_saying_when_and_which_window(tmp_path, signer, v1, integrated) -> None:
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v1))
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, integrated)
    problem = check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW)
    assert problem == (
        f"its transparency-log entry was integrated at {stamp(integrated)}, outside the validity of "
        f"log key https://{v1.name} ({stamp(START)} to {stamp(END)})"
    )


def test_a_window_without_end_names_its_start(tmp_path, signer, v1) -> None:
    start = NOW - dt.timedelta(days=1)
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v1, start=start, end=None))
    early = start - dt.timedelta(days=1)
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, early)
    problem = check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW)
    assert problem == (
        f"its transparency-log entry was integrated at {stamp(early)}, outside the validity of "
        f"log key https://{v1.name} (from {stamp(start)}, no end)"
    )
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, NOW)
    assert check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW) is None


def test_a_mounted_rekor_key_has_no_window(signer, v1) -> None:
    rekor = mounted(v1)
    assert rekor.window(v1.log_id.hex()) == UNBOUNDED
    for when in (dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc), NOW):
        annotation, signature = legacy_bundle(v1, signer, PAYLOAD, when)
        assert check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW) is None


def test_an_integrated_time_in_the_future_is_refused_beyond_the_clock_skew(signer, v1) -> None:
    rekor = mounted(v1)
    close = NOW + CLOCK_SKEW
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, close)
    assert check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW) is None
    ahead = NOW + CLOCK_SKEW + dt.timedelta(seconds=1)
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, ahead)
    problem = check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW)
    assert problem == (
        f"its transparency-log entry was integrated at {stamp(ahead)}, in the future "
        f"(this machine's time is {stamp(NOW)}, allowing 5 minutes of clock skew)"
    )


def test_the_window_is_checked_only_after_the_set_verifies(tmp_path, signer, v1) -> None:
    # A forged integrated time outside the window must read as a broken SET, not as a time the
    # log vouched for.
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v1))
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, START + dt.timedelta(days=1))
    document = json.loads(annotation)
    document["Payload"]["integratedTime"] = int(NOW.timestamp())
    problem = check_legacy_tlog(json.dumps(document), PAYLOAD, signature, signer.key, rekor, now=NOW)
    assert problem == "its signed entry timestamp does not verify with the Rekor key"


def test_an_integrated_time_beyond_any_date_is_refused_not_raised(signer, v1) -> None:
    signature = signer.sign(PAYLOAD)
    body = hashedrekord_v001(PAYLOAD, signature, signer.public_pem)
    huge = 10**20
    annotation = json.dumps({
        "SignedEntryTimestamp": b64(v1.set_over(b64(body), huge, 0)),
        "Payload": {"body": b64(body), "integratedTime": huge, "logIndex": 0, "logID": v1.log_id.hex()},
    })
    problem = check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, mounted(v1), now=NOW)
    assert problem == "its transparency-log entry's integrated time is out of range"


# ---- RekorKeys: mounted keys and a trusted root's logs ----------------------------------------------


def test_a_root_log_that_is_also_mounted_takes_the_roots_window(tmp_path, signer, v1) -> None:
    rekor = mounted(v1).with_logs(root_logs(tmp_path, v1))
    assert list(rekor.by_log_id) == [v1.log_id.hex()]
    assert rekor.window(v1.log_id.hex()) == Validity(START, END)
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, NOW)
    assert "outside the validity of log key" in check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW)


def test_a_root_log_claiming_a_mounted_keys_id_with_another_key_does_not_replace_it(tmp_path, signer, v1) -> None:
    other = new_log(tmp_path / "other", "other.test", "v1")
    (impostor,) = root_logs(tmp_path, other)
    rekor = mounted(v1).with_logs([LogKey(impostor.base_url, v1.log_id, impostor.key, impostor.validity)])
    assert rekor.window(v1.log_id.hex()) == UNBOUNDED
    annotation, signature = legacy_bundle(v1, signer, PAYLOAD, NOW)
    assert check_legacy_tlog(annotation, PAYLOAD, signature, signer.key, rekor, now=NOW) is None


def test_with_logs_leaves_the_mounted_keys_unchanged(tmp_path, v1) -> None:
    keys = mounted(v1)
    other = new_log(tmp_path / "other", "other.test", "v1")
    merged = keys.with_logs(root_logs(tmp_path, other))
    assert set(keys.by_log_id) == {v1.log_id.hex()} and not keys.windows
    assert set(merged.by_log_id) == {v1.log_id.hex(), other.log_id.hex()}


# ---- bundle entries: SETs and Rekor v2 checkpoints --------------------------------------------------


def dsse_entry(log: TestLog, signer: Signer, integrated: dt.datetime, **kwargs: Any) -> tuple[TlogEntry, bytes]:
    signature = signer.sign(pae(INTOTO_PAYLOAD_TYPE, STATEMENT))
    entry = log.entry(dsse_v001_body(STATEMENT, signature, signer.public_pem), integrated=int(integrated.timestamp()), **kwargs)
    return TlogEntry.parse(entry), signature


def test_a_bundle_set_outside_the_window_does_not_prove_nor_give_a_signing_time(tmp_path, signer, v1) -> None:
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v1))
    inside, signature = dsse_entry(v1, signer, END - dt.timedelta(days=1), proof=False)
    assert check_bundle_tlog([inside], STATEMENT, signature, signer.key, rekor, now=NOW) is None
    assert proven_integrated_times([inside], STATEMENT, signature, signer.key, rekor, now=NOW) == [END - dt.timedelta(days=1)]
    outside, signature = dsse_entry(v1, signer, NOW, proof=False)
    problem = check_bundle_tlog([outside], STATEMENT, signature, signer.key, rekor, now=NOW)
    assert problem == (
        f"its transparency-log entry was integrated at {stamp(NOW)}, outside the validity of "
        f"log key https://{v1.name} ({stamp(START)} to {stamp(END)})"
    )
    assert proven_integrated_times([outside], STATEMENT, signature, signer.key, rekor, now=NOW) == []


def test_a_v1_entry_with_set_and_proof_of_a_retired_key_counts_when_logged_before_the_end(tmp_path, signer, v1) -> None:
    # The SET's integrated time is the verified time the checkpoint's key is checked at.
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v1))
    entry, signature = dsse_entry(v1, signer, END - dt.timedelta(hours=1))
    assert entry.proof is not None and entry.signed_entry_timestamp is not None
    assert check_bundle_tlog([entry], STATEMENT, signature, signer.key, rekor, now=NOW) is None


def v2_entry(log: TestLog, signer: Signer) -> tuple[TlogEntry, bytes]:
    signature = signer.sign(pae(INTOTO_PAYLOAD_TYPE, STATEMENT))
    body = hashedrekord_v002_body(pae(INTOTO_PAYLOAD_TYPE, STATEMENT), signature, signer.public_der)
    return TlogEntry.parse(log.entry(body, ("hashedrekord", "0.0.2"))), signature


def test_a_rekor_v2_checkpoint_counts_when_its_key_was_valid_at_the_verified_signing_time(tmp_path, signer, v2) -> None:
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v2))
    entry, signature = v2_entry(v2, signer)
    assert entry.signed_entry_timestamp is None and entry.proof is not None
    signed = END - dt.timedelta(days=2)
    assert check_bundle_tlog([entry], STATEMENT, signature, signer.key, rekor, signing_times=[signed], now=NOW) is None


@pytest.mark.parametrize("signed", [END + dt.timedelta(seconds=1), START - dt.timedelta(days=1)], ids=["after-end", "before-start"])
def test_a_rekor_v2_checkpoint_is_refused_when_its_key_was_not_valid_at_the_signing_time(tmp_path, signer, v2, signed) -> None:
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v2))
    entry, signature = v2_entry(v2, signer)
    problem = check_bundle_tlog([entry], STATEMENT, signature, signer.key, rekor, signing_times=[signed], now=NOW)
    assert problem == (
        f"its transparency-log checkpoint is signed by log key https://{v2.name}, which was not valid at the "
        f"verified signing time {stamp(signed)} (valid {stamp(START)} to {stamp(END)})"
    )
    # Not required: the checkpoint is ignored, not fatal (the proof itself is sound).
    assert check_bundle_tlog([entry], STATEMENT, signature, signer.key, rekor, required=False, signing_times=[signed], now=NOW) is None


def test_a_rekor_v2_checkpoint_of_a_retired_key_without_a_verified_time_is_refused_saying_so(tmp_path, signer, v2) -> None:
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v2))
    entry, signature = v2_entry(v2, signer)
    problem = check_bundle_tlog([entry], STATEMENT, signature, signer.key, rekor, now=NOW)
    assert problem == (
        f"its transparency-log checkpoint is signed by log key https://{v2.name}, whose validity ended at {stamp(END)}, "
        "and no verified timestamp shows that the entry was logged before then"
    )


def test_a_rekor_v2_checkpoint_of_a_key_not_yet_valid_is_refused(tmp_path, signer, v2) -> None:
    start = NOW + dt.timedelta(days=1)
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v2, start=start, end=None))
    entry, signature = v2_entry(v2, signer)
    problem = check_bundle_tlog([entry], STATEMENT, signature, signer.key, rekor, now=NOW)
    assert problem == f"its transparency-log checkpoint is signed by log key https://{v2.name}, whose validity starts only at {stamp(start)}"


def test_a_rekor_v2_checkpoint_of_a_current_key_counts_without_a_verified_time(tmp_path, signer, v2) -> None:
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v2, start=START, end=None))
    entry, signature = v2_entry(v2, signer)
    assert check_bundle_tlog([entry], STATEMENT, signature, signer.key, rekor, now=NOW) is None


def test_a_mounted_rekor_v2_key_has_no_window(signer, v2) -> None:
    entry, signature = v2_entry(v2, signer)
    long_ago = dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)
    assert check_bundle_tlog([entry], STATEMENT, signature, signer.key, mounted(v2), signing_times=[long_ago], now=NOW) is None


def test_a_forged_set_of_a_trusted_log_fails_even_beside_a_valid_proof(tmp_path, signer, v1) -> None:
    # The proof alone would prove inclusion; a promise the log's key did not sign means the entry
    # was altered or made up, and refuses the signature, required or not (as the command does).
    rekor = RekorKeys.of([]).with_logs(root_logs(tmp_path, v1, end=None))
    signature = signer.sign(pae(INTOTO_PAYLOAD_TYPE, STATEMENT))
    raw = v1.entry(dsse_v001_body(STATEMENT, signature, signer.public_pem), integrated=int((NOW - dt.timedelta(days=1)).timestamp()))
    assert "inclusionProof" in raw and "inclusionPromise" in raw
    assert check_bundle_tlog([TlogEntry.parse(raw)], STATEMENT, signature, signer.key, rekor, now=NOW) is None
    raw["integratedTime"] = str(int((NOW - dt.timedelta(days=2)).timestamp()))  # the SET no longer covers it
    for required in (True, False):
        assert check_bundle_tlog([TlogEntry.parse(raw)], STATEMENT, signature, signer.key, rekor, required=required, now=NOW) == (
            "its signed entry timestamp does not verify with the Rekor key")
