"""Offline Rekor proofs: a signed entry timestamp (SET) checked with a mounted Rekor public key.

signgate never contacts Rekor. A rule with `tlog: required` accepts a signature only when it
carries a promise of inclusion signed by a trusted Rekor key, and that promise is about this very
signature: the logged entry's signature, public key and payload hash must be the ones just
verified. Otherwise a valid SET for some other entry could be pasted next to any signature.

Two carriers:
- legacy layout: the `dev.sigstore.cosign/bundle` layer annotation,
  `{"SignedEntryTimestamp": b64, "Payload": {"body", "integratedTime", "logIndex", "logID"}}`;
- sigstore bundle: `verificationMaterial.tlogEntries[]` with `inclusionPromise.signedEntryTimestamp`
  and `canonicalizedBody` (int64 fields as JSON strings, `logId.keyId` in base64).

The SET signs the canonical JSON (keys sorted, no white space) of
`{"body", "integratedTime", "logID", "logIndex"}` with ECDSA-SHA256; the Rekor key is chosen by
logID = hex sha256 of its DER SubjectPublicKeyInfo.

Validity windows: a trusted root gives each log key a window (`validFor`); Sigstore keeps a retired
key with an end so that what it signed before then still verifies. A SET proves nothing about an
integrated time outside its key's window, nor about one more than CLOCK_SKEW in the future; a
mounted rekorKeys PEM has no window.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence

from .dsse import INTOTO_PAYLOAD_TYPE, pae
from .entries import check_entry_body
from .models import TlogEntry
from ...encoding import b64_strict
from ...keys import PublicKey
from .transparency import ProofError, checkpoint_signers, note_key_id, signed_entry_timestamp_is_valid, verify_inclusion_proof
from .trust_root import LogKey, Validity

MAX_TLOG_ENTRIES = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# A mounted rekorKeys PEM carries no validity window: it is trusted until the operator removes it.
UNBOUNDED = Validity(_EPOCH, None)
# How far an integrated time may lie ahead of this machine's clock (as conformance.py, and
# sigstore's clients): a log's clock and ours differ a little; a time further ahead is no time the
# log can have vouched for, and would let an entry outlive the end of its log key's window.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class RekorKeys:
    """The transparency logs a rule trusts: hex log id -> key, and each log's validity window.

    `of(keys)` makes the mounted `rekorKeys` (PEM keys, no window: unbounded). `with_logs(root.tlogs)`
    adds a trusted root's logs with their `validFor` windows. A SET then counts only when its
    integrated time lies within the window of the key that signed it, and a Rekor v2 checkpoint only
    when its key was valid at the verified signing time (see _proof_window).
    """

    by_log_id: Mapping[str, PublicKey]  # hex log id -> key
    windows: Mapping[str, Validity] = field(default_factory=dict)  # hex log id -> window; absent: UNBOUNDED

    @classmethod
    def of(cls, keys: Iterable[PublicKey]) -> "RekorKeys":
        return cls({key.fingerprint: key for key in keys})

    def with_logs(self, logs: Iterable[LogKey]) -> "RekorKeys":
        """These logs and a trusted root's `logs`, each with its window.

        A root's log whose ID a mounted key already holds replaces it when it is the same key: the
        rule names that root, and its window is Sigstore's statement of when the key signed (a PEM
        says nothing either way). Under the same ID with another key, the mounted key is kept, as
        before windows existed; the SET or checkpoint must verify with it.
        """
        keys, windows = dict(self.by_log_id), dict(self.windows)
        for log in logs:
            log_id = log.log_id.hex()
            mounted = keys.get(log_id)
            if mounted is None or mounted.fingerprint == log.key.fingerprint:
                keys[log_id], windows[log_id] = log.key, log.validity
        return RekorKeys(keys, windows)

    def window(self, log_id_hex: str) -> Validity:
        return self.windows.get(log_id_hex.lower(), UNBOUNDED)

    def log_for(self, log_id: bytes, checkpoint_names: Sequence[str] = ()) -> LogKey | None:
        """The configured log whose ID is `log_id`: a Rekor v1 ID (SHA-256 of the key's DER), or a
        Rekor v2 checkpoint key ID, which binds the key to the name its checkpoints are signed under."""
        found = log_id.hex() if log_id.hex() in self.by_log_id else None
        if found is None:
            found = next(
                (i for name in checkpoint_names for i, k in self.by_log_id.items() if note_key_id(name, k) == log_id), None
            )
        if found is None:
            return None
        return LogKey(self.by_log_id[found].name, log_id, self.by_log_id[found], self.window(found))


def check_legacy_tlog(
    annotation: str | None, payload: bytes, signature: bytes, key: PublicKey, rekor: RekorKeys, now: datetime | None = None
) -> str | None:
    """Problem with the legacy layer's Rekor bundle, or None when it proves this signature."""
    if not annotation:
        return "it carries no Rekor bundle (dev.sigstore.cosign/bundle), but the rule requires a transparency-log proof"
    try:
        document = json.loads(annotation)
        set_bytes = b64_strict(document["SignedEntryTimestamp"])
        entry = document["Payload"]
        body_b64, integrated, index, log_id = entry["body"], entry["integratedTime"], entry["logIndex"], entry["logID"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return "its Rekor bundle is malformed"
    if not (isinstance(body_b64, str) and _is_int(integrated) and _is_int(index) and isinstance(log_id, str)):
        return "its Rekor bundle is malformed"
    problem = _check_set(rekor, log_id, body_b64, integrated, index, set_bytes, now)
    if problem:
        return problem
    return _check_body(b64_strict(body_b64), payload, signature, key, pae_payload=None)


def check_bundle_tlog(
    entries: Sequence[TlogEntry],
    payload: bytes,
    signature: bytes,
    key: PublicKey,
    rekor: RekorKeys | None,
    required: bool = True,
    signing_times: Sequence[datetime] = (),
    now: datetime | None = None,
) -> str | None:
    """Problem with a sigstore bundle's (typed) tlog entries, or None.

    With `required`, None means one entry proves this signature: a signed entry timestamp whose
    integrated time lies within its log key's window, or an inclusion proof up to a checkpoint
    signed by the log's key (Rekor v2 entries carry no SET) while that key was valid.
    `signing_times` are the signature's verified RFC 3161 times, if the caller has verified them:
    a checkpoint's key must have been valid then (see _proof_window for an entry without them).
    Whatever `required` says, every inclusion proof the bundle carries is verified: a broken
    proof, a proof of another entry or a checkpoint the log did not sign fails the signature
    even next to a valid SET (issue 16). Without `required`, an entry from a log whose key is
    not configured (or not valid then) is checked as far as it can be (path, root, body) and
    otherwise ignored.
    """
    if not entries:
        return "it carries no transparency-log entry, but the rule requires one" if required else None
    now = now or datetime.now(timezone.utc)
    problem = "its transparency-log entry has no inclusion promise"
    proven = False
    pae_payload = pae(INTOTO_PAYLOAD_TYPE, payload)
    for entry in entries[:MAX_TLOG_ENTRIES]:
        has_set = entry.signed_entry_timestamp is not None and entry.integrated_time is not None and rekor is not None
        set_problem, set_time = None, None
        if has_set:
            assert rekor is not None and entry.integrated_time is not None
            set_problem = _check_set(
                rekor, entry.log_id.hex(), entry.body_b64, entry.integrated_time, entry.log_index, entry.signed_entry_timestamp, now
            ) or _check_body(entry.body, payload, signature, key, pae_payload, entry)
            set_time = _time(entry.integrated_time) if set_problem is None else None
            if _set_is_forged(rekor, entry):
                # A trusted log's key did not sign this promise: someone altered the entry or made
                # it up. A valid inclusion proof beside it does not excuse that (sigstore's clients
                # refuse such a bundle too), whatever `required` says.
                return set_problem
        if entry.proof is not None:
            # An entry with a verified SET has its own verified time, the integrated time (the SET
            # and the checkpoint are signed by the same log); otherwise the signature's timestamps.
            times = [set_time] if set_time is not None else list(signing_times)
            fatal, proves, note = _check_proof(entry, payload, pae_payload, signature, key, rekor, times, now)
            if fatal:
                return fatal
            if proves:
                proven = True
            elif note:
                problem = note
        if has_set:
            if set_problem is None:
                proven = True
            else:
                problem = set_problem
    if proven or not required:
        return None
    return problem


def proven_integrated_times(
    entries: Sequence[TlogEntry], payload: bytes, signature: bytes, key: PublicKey, rekor: RekorKeys, now: datetime | None = None
) -> list[datetime]:
    """Integrated times of the entries whose SET a configured log signed, within that log key's
    window, and whose body is this signature's: verified times, for checking a certificate chain."""
    now = now or datetime.now(timezone.utc)
    times = []
    pae_payload = pae(INTOTO_PAYLOAD_TYPE, payload)
    for entry in entries[:MAX_TLOG_ENTRIES]:
        if entry.signed_entry_timestamp is None or entry.integrated_time is None:
            continue
        if _check_set(rekor, entry.log_id.hex(), entry.body_b64, entry.integrated_time, entry.log_index, entry.signed_entry_timestamp, now):
            continue
        if _check_body(entry.body, payload, signature, key, pae_payload, entry) is None:
            times.append(_time(entry.integrated_time))
    return [t for t in times if t is not None]


def legacy_integrated_time(annotation: str) -> datetime | None:
    """The integrated time of a legacy Rekor bundle that check_legacy_tlog has accepted."""
    try:
        return _time(int(json.loads(annotation)["Payload"]["integratedTime"]))
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def _time(seconds: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe_window(window: Validity) -> str:
    if window.end is None:
        return f"from {_stamp(window.start)}, no end"
    return f"{_stamp(window.start)} to {_stamp(window.end)}"


def _check_proof(
    entry: TlogEntry,
    payload: bytes,
    pae_payload: bytes,
    signature: bytes,
    key: PublicKey,
    rekor: RekorKeys | None,
    times: Sequence[datetime] = (),
    now: datetime | None = None,
) -> tuple[str | None, bool, str | None]:
    """(fatal problem, whether the proof proves inclusion in a trusted log, a non-fatal note)."""
    assert entry.proof is not None
    # The proof's leaf is this body, so the body must be about this signature: otherwise it is a
    # genuine proof of another entry.
    problem = _check_body(entry.body, payload, signature, key, pae_payload, entry)
    if problem:
        return problem, False, None
    log = rekor.log_for(entry.log_id, checkpoint_signers(entry.proof.raw)) if rekor is not None else None
    try:
        checkpoint = verify_inclusion_proof(entry.proof.raw, entry.body, log, require_checkpoint=False)
    except ProofError as exc:
        return f"its transparency-log inclusion proof does not verify: {exc}", False, None
    if log is None:
        return None, False, f"its transparency-log entry is from log {entry.log_id.hex()[:16]}…, whose key is not trusted"
    if checkpoint is None:
        return None, False, "its inclusion proof has no signed checkpoint, and no inclusion promise proves it"
    # A checkpoint by a key outside its window proves nothing, like one by an unknown key: not
    # fatal (the proof itself is sound), but it does not count.
    note = _proof_window(log, times, now or datetime.now(timezone.utc))
    if note:
        return None, False, note
    return None, True, None


def _proof_window(log: LogKey, times: Sequence[datetime], now: datetime) -> str | None:
    """Why a checkpoint signed by `log` cannot count given its key's window, or None.

    A Rekor v2 entry has no integrated time: the only verified time is an RFC 3161 timestamp,
    and the key must have been valid at each one (as sigstore's clients check it).

    Without one, what the hook can still check, and why:
    - the window must have started: a key the root lists ahead of its use signs nothing yet;
    - a window that has ended refuses the proof. The checkpoint may have been signed at any
      time, and a retired key (perhaps retired because it leaked) could have signed a tree made
      after its end, so accepting it would trust the key forever, ignoring the end the root
      gives. A legitimate entry in a retired shard is not lost: Rekor v2 clients (cosign v3)
      always attach an RFC 3161 timestamp, which proves it was logged while the key was valid.
      Fail closed, and say what is missing.
    """
    window, name = log.validity, log.key.name
    if times:
        for when in times:
            if not window.contains(when):
                return (
                    f"its transparency-log checkpoint is signed by log key {name}, which was not valid at the "
                    f"verified signing time {_stamp(when)} (valid {_describe_window(window)})"
                )
        return None
    if window.start > now + CLOCK_SKEW:
        return f"its transparency-log checkpoint is signed by log key {name}, whose validity starts only at {_stamp(window.start)}"
    if window.end is not None and window.end < now:
        return (
            f"its transparency-log checkpoint is signed by log key {name}, whose validity ended at {_stamp(window.end)}, "
            "and no verified timestamp shows that the entry was logged before then"
        )
    return None


def _check_set(
    rekor: RekorKeys, log_id: str, body_b64: str, integrated: Any, index: Any, set_bytes: bytes | None, now: datetime | None = None
) -> str | None:
    rekor_key = rekor.by_log_id.get(log_id.lower())
    if rekor_key is None:
        return f"its transparency-log entry is from log {log_id[:16]}…, whose key is not trusted"
    if set_bytes is None:
        return "its signed entry timestamp is missing or not base64"
    if not signed_entry_timestamp_is_valid(rekor_key, log_id, body_b64, int(integrated), int(index), set_bytes):
        return "its signed entry timestamp does not verify with the Rekor key"
    # The SET makes the integrated time a verified time, but only within the window in which the
    # trust root says the log's key signed: a retired key's SET over a later time (or a key's SET
    # before its start) proves nothing.
    when = _time(int(integrated))
    if when is None:
        return "its transparency-log entry's integrated time is out of range"
    now = now or datetime.now(timezone.utc)
    if when > now + CLOCK_SKEW:
        return (
            f"its transparency-log entry was integrated at {_stamp(when)}, in the future "
            f"(this machine's time is {_stamp(now)}, allowing {CLOCK_SKEW.seconds // 60} minutes of clock skew)"
        )
    window = rekor.window(log_id)
    if not window.contains(when):
        return (
            f"its transparency-log entry was integrated at {_stamp(when)}, outside the validity of "
            f"log key {rekor_key.name} ({_describe_window(window)})"
        )
    return None


def _set_is_forged(rekor: RekorKeys, entry: TlogEntry) -> bool:
    """Whether a bundle entry's SET comes from a trusted log (by its log id) but its signature does
    not verify: not "unproven" (an unknown log) but false."""
    rekor_key = rekor.by_log_id.get(entry.log_id.hex())
    if rekor_key is None or entry.integrated_time is None:
        return False
    return entry.signed_entry_timestamp is None or not signed_entry_timestamp_is_valid(
        rekor_key, entry.log_id.hex(), entry.body_b64, entry.integrated_time, entry.log_index, entry.signed_entry_timestamp
    )


def _check_body(
    body: bytes | None, payload: bytes, signature: bytes, key: PublicKey, pae_payload: bytes | None, entry: TlogEntry | None = None
) -> str | None:
    """The logged entry must be about this signature, this signer and this payload (entries.py).
    Legacy layers sign the payload itself; bundles sign the DSSE envelope's PAE over the statement,
    and a bundle's entry states its kind and version, which must be the body's."""
    if pae_payload is None:
        problem = check_entry_body(body, signature, key, (hashlib.sha256(payload).digest(),))
    else:
        problem = check_entry_body(body, signature, key, (hashlib.sha256(pae_payload).digest(),), (INTOTO_PAYLOAD_TYPE, payload),
                                   (entry.kind, entry.version) if entry is not None else None)
    return problem.message if problem is not None else None


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.isdigit()
