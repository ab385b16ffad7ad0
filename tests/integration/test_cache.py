"""Specification of the verdict cache on disk (signgate.cache).

Every admission request is a new hook process, so what one request learned reaches the next only
through files under $SIGNGATE_CACHE_DIR. The first half of this file is the unit-level contract
of VerdictCache (keys, lifetimes, what is never cached, corruption, atomicity, eviction, an
unusable directory). The second half drives the real hook executable against a real registry and
counts requests in the registry's own access log.

A fake clock stands in for time at unit level; the hook-level tests use real (short) lifetimes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from support.contract import HookRun, request_for, run_request
from signgate.cache import DEFINITE_FAILURES, MAX_ENTRY_BYTES, VerdictCache, settings_from
from signgate.config import CacheSettings, Config, KeySpec, Limits, Rule, parse_config
from signgate.reference import ImageReference, parse_reference
from signgate.verifiers.notaryv1 import NotarySettings
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.signer import TestKey, sign_legacy

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
PASSED = {"passed": True, "reason": "verified", "message": "", "digest": DIGEST, "verified_keys": ["default"]}


class FakeClock:
    """Wall-clock seconds that move only when the test says so (starts at the real time, so that
    file mtimes and the clock agree for eviction)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def failed(reason: str) -> dict[str, Any]:
    return {"passed": False, "reason": reason, "message": f"{reason} happened", "digest": DIGEST, "verified_keys": []}


# ---- unit-level inputs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """Everything a verdict key is computed from."""

    config: Config
    rule: Rule
    ref: ImageReference
    digest: str


@pytest.fixture
def key_files(tmp_path: Path) -> dict[str, Path]:
    """Key files with distinct contents. VerdictCache hashes bytes and never parses them."""
    directory = tmp_path / "keys"
    directory.mkdir()
    made = {}
    for name in ("default", "second", "rekor", "spare"):
        path = directory / f"{name}.pub"
        path.write_bytes(f"-----BEGIN PUBLIC KEY-----\n{name} {os.urandom(16).hex()}\n-----END PUBLIC KEY-----\n".encode())
        made[name] = path
    return made


@pytest.fixture
def base(key_files: dict[str, Path]) -> Inputs:
    text = yaml.safe_dump(
        {
            "keys": {"default": str(key_files["default"]), "second": str(key_files["second"])},
            "rekorKeys": {"rekor": str(key_files["rekor"])},
            "policy": [{"images": "registry.example/**", "keys": ["default"]}],
        }
    )
    config = parse_config(text, "unit.yaml", {})
    return Inputs(config, config.policy[0], parse_reference("registry.example/team/app:v1"), DIGEST)


def with_keys(inputs: Inputs, **specs: KeySpec) -> Inputs:
    return replace(inputs, config=replace(inputs.config, keys={**inputs.config.keys, **specs}))


def with_rule(inputs: Inputs, **changes: Any) -> Inputs:
    return replace(inputs, rule=replace(inputs.rule, **changes))


def cache_in(directory: Path, config: Config, clock: Callable[[], float] = time.time, **settings: Any) -> VerdictCache:
    return VerdictCache(CacheSettings(directory=str(directory), **settings), config, clock=clock)


def key_of(cache: VerdictCache, inputs: Inputs) -> str:
    return cache.verdict_key(inputs.rule, inputs.ref, inputs.digest)


# ---- keys: what makes a miss ----------------------------------------------------------------------

# One changed value for every field of Rule except `index` (its position in the file).
RULE_FIELD_CHANGES: dict[str, Any] = {
    "images": "registry.example/team/**",
    "action": "allow",
    "message": "not here",
    "keys": ("default", "second"),
    "threshold": 2,
    "required": ("default",),
    "annotations": (("team", "a"),),
    "check_identity": True,
    "signature_repository": "registry.example/signatures",
    "mode": "warn",
    "deny_latest": True,
    "require_digest": True,
    "tlog": "required",
    "multi_arch": "index-or-platforms",
    "type": "notaryv1",
    "settings": NotarySettings(server="https://notary.example", root_keys=("default",)),
    "pin_digest": True,
    "identities": ("release",),
    "trusted_root": "public-good",
    "certificate_authority": "corp",
    "ignore_sct": True,
}


def test_the_rule_field_table_covers_every_field_of_rule() -> None:
    assert set(RULE_FIELD_CHANGES) == {f.name for f in fields(Rule)} - {"index"}


@pytest.mark.parametrize("field_name", sorted(RULE_FIELD_CHANGES), ids=lambda f: f"rule-{f}-changed-is-a-miss")
def test_a_change_to_any_rule_field_is_a_miss(tmp_path: Path, base: Inputs, field_name: str) -> None:
    before = cache_in(tmp_path / "cache", base.config)
    before.put_verdict(key_of(before, base), PASSED)
    changed = with_rule(base, **{field_name: RULE_FIELD_CHANGES[field_name]})
    after = cache_in(tmp_path / "cache", changed.config)
    assert after.get_verdict(key_of(after, base)) is not None, "control: the unchanged inputs still hit"
    assert after.get_verdict(key_of(after, changed)) is None


def limit_change(name: str) -> Any:
    value = getattr(Limits(), name)
    return value + 1 if isinstance(value, int) else value + 0.5


@pytest.mark.parametrize("field_name", [f.name for f in fields(Limits)], ids=lambda f: f"limits-{f}-changed-is-a-miss")
def test_a_change_to_any_limit_is_a_miss(tmp_path: Path, base: Inputs, field_name: str) -> None:
    before = cache_in(tmp_path / "cache", base.config)
    before.put_verdict(key_of(before, base), PASSED)
    config = replace(base.config, limits=replace(base.config.limits, **{field_name: limit_change(field_name)}))
    after = cache_in(tmp_path / "cache", config)
    assert after.get_verdict(key_of(after, replace(base, config=config))) is None


def _rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _other_key_contents(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    _rewrite(files["default"], files["spare"].read_bytes())  # a rotated key behind the same path
    return inputs


def _same_key_contents_rewritten(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    _rewrite(files["default"], files["default"].read_bytes())
    return inputs


def _key_moved(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    moved = files["default"].with_name("moved.pub")
    shutil.copy(files["default"], moved)
    return with_keys(inputs, default=KeySpec("default", str(moved)))


def _key_deleted(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    files["default"].unlink()
    return inputs


def _key_renamed(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    inputs = with_keys(inputs, renamed=KeySpec("renamed", str(files["default"])))
    return with_rule(inputs, keys=("renamed",))


def _hash_algorithm(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    return with_keys(inputs, default=KeySpec("default", str(files["default"]), "sha384"))


def _unused_key_added(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    return with_keys(inputs, spare=KeySpec("spare", str(files["spare"])))


def _unused_key_rotated(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    _rewrite(files["second"], b"rotated second key")
    return inputs


def _rekor_rotated(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    _rewrite(files["rekor"], files["spare"].read_bytes())
    return inputs


def _rekor_added(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    rekor = {**inputs.config.rekor_keys, "spare": KeySpec("spare", str(files["spare"]))}
    return replace(inputs, config=replace(inputs.config, rekor_keys=rekor))


def _tlog_required(inputs: Inputs) -> Inputs:
    return with_rule(inputs, tlog="required")


def _index_or_platforms(inputs: Inputs) -> Inputs:
    return with_rule(inputs, multi_arch="index-or-platforms")


def _same(inputs: Inputs, files: dict[str, Path]) -> Inputs:
    return inputs


# (id, how the base is set up before the verdict is stored, the change, hit expected)
KEY_CASES: list[tuple[str, Callable[[Inputs], Inputs] | None, Callable[[Inputs, dict[str, Path]], Inputs], bool]] = [
    ("same-inputs-in-a-new-process-hit", None, _same, True),
    ("rule-moved-to-another-position-hit", None, lambda i, f: with_rule(i, index=7), True),
    ("other-digest-miss", None, lambda i, f: replace(i, digest=OTHER_DIGEST), False),
    ("other-image-name-same-digest-miss", None, lambda i, f: replace(i, ref=parse_reference("registry.example/team/other:v1")), False),
    ("other-registry-same-repository-miss", None, lambda i, f: replace(i, ref=parse_reference("mirror.example/team/app:v1")), False),
    ("other-tag-same-digest-under-exact-multiarch-hit", None, lambda i, f: replace(i, ref=parse_reference("registry.example/team/app:v2")), True),
    ("other-tag-same-digest-under-index-or-platforms-miss", _index_or_platforms, lambda i, f: replace(i, ref=parse_reference("registry.example/team/app:v2")), False),
    ("key-file-with-other-contents-at-the-same-path-miss", None, _other_key_contents, False),
    ("key-file-rewritten-with-the-same-contents-hit", None, _same_key_contents_rewritten, True),
    ("key-file-moved-same-contents-hit", None, _key_moved, True),
    ("key-file-deleted-miss", None, _key_deleted, False),
    ("key-renamed-miss", None, _key_renamed, False),
    ("key-hash-algorithm-set-miss", None, _hash_algorithm, False),
    ("unused-key-added-hit", None, _unused_key_added, True),
    ("unused-key-rotated-hit", None, _unused_key_rotated, True),
    ("rekor-key-rotated-tlog-required-miss", _tlog_required, _rekor_rotated, False),
    ("rekor-key-added-tlog-required-miss", _tlog_required, _rekor_added, False),
    # Rekor keys also judge the inclusion proofs a bundle carries under `tlog: ignore` (issue 16).
    ("rekor-key-rotated-tlog-ignored-miss", None, _rekor_rotated, False),
    ("rekor-key-added-tlog-ignored-miss", None, _rekor_added, False),
    ("cache-lifetimes-changed-hit", None, lambda i, f: replace(i, config=replace(i.config, cache=CacheSettings(ttl_seconds=5))), True),
    ("top-level-mode-changed-hit", None, lambda i, f: replace(i, config=replace(i.config, mode="warn")), True),
]


@pytest.mark.parametrize("setup,change,hit", [c[1:] for c in KEY_CASES], ids=[c[0] for c in KEY_CASES])
def test_the_verdict_key_covers_what_decides_the_verdict(
    tmp_path: Path, base: Inputs, key_files: dict[str, Path], setup: Any, change: Any, hit: bool
) -> None:
    before_inputs = setup(base) if setup else base
    before = cache_in(tmp_path / "cache", before_inputs.config)
    before.put_verdict(key_of(before, before_inputs), PASSED)

    after_inputs = change(before_inputs, key_files)
    after = cache_in(tmp_path / "cache", after_inputs.config)  # a new hook process
    found = after.get_verdict(key_of(after, after_inputs))
    assert (found is not None) is hit
    if hit:
        assert found["reason"] == "verified" and found["passed"] is True


def test_tag_keys_depend_on_name_and_tag_only(tmp_path: Path, base: Inputs) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    cache.put_tag(cache.tag_key(parse_reference("registry.example/team/app:v1")), DIGEST)
    assert cache.get_tag(cache.tag_key(parse_reference("registry.example/team/app:v1"))) == DIGEST
    assert cache.get_tag(cache.tag_key(parse_reference("registry.example/team/app:v2"))) is None
    assert cache.get_tag(cache.tag_key(parse_reference("registry.example/team/other:v1"))) is None


@pytest.mark.parametrize(
    ("written", "alias"),
    [
        ("registry.example/team/app:v1", "registry.example:443/team/app:v1"),
        ("registry.example/team/app:v1", "Registry.Example:443/team/app:v1"),
        ("127.0.0.1:5000/team/app:v1", "localhost:5000/team/app:v1"),
    ],
    ids=["default-port", "capitals-and-default-port", "localhost"],
)
def test_spellings_of_one_registry_share_their_cache_entries(tmp_path: Path, base: Inputs, written: str, alias: str) -> None:
    # Keys come from the canonical name: a verdict or a tag cached under one spelling is the other's.
    cache = cache_in(tmp_path / "cache", base.config)
    first, second = parse_reference(written), parse_reference(alias)
    assert cache.tag_key(first) == cache.tag_key(second)
    assert cache.verdict_key(base.rule, first, DIGEST) == cache.verdict_key(base.rule, second, DIGEST)
    assert cache.lock_key(base.rule, first) == cache.lock_key(base.rule, second)


# ---- lifetimes ----------------------------------------------------------------------------------


LIFETIME_CASES = [
    ("verified-lives-ttlSeconds", PASSED, 100),
    *[(f"{reason}-lives-negativeTtlSeconds", failed(reason), 10) for reason in sorted(DEFINITE_FAILURES)],
]


@pytest.mark.parametrize("verdict,lifetime", [c[1:] for c in LIFETIME_CASES], ids=[c[0] for c in LIFETIME_CASES])
def test_verdicts_live_their_ttl(tmp_path: Path, base: Inputs, verdict: dict[str, Any], lifetime: float) -> None:
    clock = FakeClock()
    cache = cache_in(tmp_path / "cache", base.config, clock, ttl_seconds=100, negative_ttl_seconds=10)
    key = key_of(cache, base)
    cache.put_verdict(key, verdict)
    clock.advance(lifetime - 0.5)
    found = cache.get_verdict(key)
    assert found is not None and found["passed"] is verdict["passed"] and found["reason"] == verdict["reason"]
    clock.advance(0.5)
    assert cache.get_verdict(key) is None


@pytest.mark.parametrize(
    "verdict,kind,lowered",
    [
        (PASSED, "v", {"ttl_seconds": 20, "negative_ttl_seconds": 10}),
        (failed("no-signature"), "v", {"ttl_seconds": 100, "negative_ttl_seconds": 2}),
        (None, "t", {"tag_ttl_seconds": 2}),
    ],
    ids=["lowered-ttlSeconds-shortens-stored-verdicts", "lowered-negativeTtlSeconds-shortens-stored-failures", "lowered-tagTtlSeconds-shortens-stored-tags"],
)
def test_lowering_a_lifetime_applies_to_entries_already_stored(
    tmp_path: Path, base: Inputs, verdict: dict[str, Any] | None, kind: str, lowered: dict[str, float]
) -> None:
    clock = FakeClock()
    long = cache_in(tmp_path / "cache", base.config, clock, ttl_seconds=100, negative_ttl_seconds=100, tag_ttl_seconds=100)
    if kind == "v":
        key = key_of(long, base)
        long.put_verdict(key, verdict)
    else:
        key = long.tag_key(base.ref)
        long.put_tag(key, DIGEST)
    lifetime = min(lowered.values()) if kind == "t" else lowered["ttl_seconds" if verdict["passed"] else "negative_ttl_seconds"]
    short = cache_in(tmp_path / "cache", base.config, clock, **{"ttl_seconds": 100, "negative_ttl_seconds": 100, "tag_ttl_seconds": 100, **lowered})
    read = short.get_verdict if kind == "v" else short.get_tag
    clock.advance(lifetime - 0.5)
    assert read(key) is not None
    if kind == "v":
        assert short.get_verdict(key)["_expires"] == pytest.approx(clock.now + 0.5), "the shortened expiry is what a fast entry inherits"
    clock.advance(0.5)
    assert read(key) is None


TRANSIENT_REASONS = [
    "timeout",
    "registry-unreachable",
    "registry-rate-limited",
    "registry-error",
    "registry-auth",
    "internal-error",
    "image-not-found",
    "bad-response",
    "too-large",
    "invalid-key",
    "host-not-allowed",
]


@pytest.mark.parametrize("reason", TRANSIENT_REASONS, ids=lambda r: f"{r}-is-never-cached")
def test_transient_failures_are_never_cached(tmp_path: Path, base: Inputs, reason: str) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    key = key_of(cache, base)
    cache.put_verdict(key, failed(reason))
    assert cache.get_verdict(key) is None
    assert list((tmp_path / "cache" / "v").iterdir()) == []


@pytest.mark.parametrize(
    "settings,verdict",
    [
        ({"ttl_seconds": 0, "negative_ttl_seconds": 0}, PASSED),
        ({"ttl_seconds": 100, "negative_ttl_seconds": 0}, failed("no-signature")),
    ],
    ids=["ttlSeconds-0-caches-no-verdict", "negativeTtlSeconds-0-caches-no-failure"],
)
def test_a_zero_lifetime_writes_nothing(tmp_path: Path, base: Inputs, settings: dict[str, float], verdict: dict[str, Any]) -> None:
    cache = cache_in(tmp_path / "cache", base.config, **settings)
    cache.put_verdict(key_of(cache, base), verdict)
    assert list((tmp_path / "cache" / "v").iterdir()) == []


def test_tag_entries_live_tagTtlSeconds(tmp_path: Path, base: Inputs) -> None:
    clock = FakeClock()
    cache = cache_in(tmp_path / "cache", base.config, clock, tag_ttl_seconds=30)
    key = cache.tag_key(base.ref)
    cache.put_tag(key, DIGEST)
    clock.advance(29.5)
    assert cache.get_tag(key) == DIGEST
    clock.advance(0.5)
    assert cache.get_tag(key) is None


def test_tagTtlSeconds_0_disables_the_tag_cache_for_reads_and_writes(tmp_path: Path, base: Inputs) -> None:
    disabled = cache_in(tmp_path / "cache", base.config, tag_ttl_seconds=0)
    key = disabled.tag_key(base.ref)
    disabled.put_tag(key, DIGEST)
    assert list((tmp_path / "cache" / "t").iterdir()) == []
    # An entry left by an earlier configuration is not used either.
    cache_in(tmp_path / "cache", base.config, tag_ttl_seconds=30).put_tag(key, DIGEST)
    assert disabled.get_tag(key) is None


@pytest.mark.parametrize(
    "digest",
    ["sha256:" + "a" * 63, "sha512:" + "a" * 64, "latest", 42],
    ids=["short-digest", "other-algorithm", "not-a-digest", "not-a-string"],
)
def test_a_tag_entry_with_a_malformed_digest_is_a_miss(tmp_path: Path, base: Inputs, digest: Any) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    key = cache.tag_key(base.ref)
    cache.put_tag(key, digest)
    assert cache.get_tag(key) is None


def test_hits_and_misses_are_counted(tmp_path: Path, base: Inputs) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    key = key_of(cache, base)
    cache.get_verdict(key)
    cache.put_verdict(key, PASSED)
    cache.get_verdict(key)
    cache.get_verdict(key)
    assert (cache.hits, cache.misses) == (2, 1)


# ---- corrupt entries ------------------------------------------------------------------------------


def entry_bytes(key: str, **overrides: Any) -> bytes:
    entry: dict[str, Any] = {"format": 1, "key": key, "created": time.time(), "expires": time.time() + 600, "value": PASSED}
    entry.update(overrides)
    return json.dumps(entry).encode()


CORRUPT_ENTRIES: list[tuple[str, Callable[[str], bytes | None]]] = [
    ("empty-file", lambda key: b""),
    ("truncated-json", lambda key: entry_bytes(key)[:40]),
    ("not-json", lambda key: b"\x00\xff garbage"),
    ("not-utf8", lambda key: b'{"format": 1, "key": "\xff\xfe"}'),
    ("json-but-not-an-object", lambda key: b"[1, 2, 3]"),
    ("wrong-key-inside", lambda key: entry_bytes("0" * 64)),
    ("wrong-format", lambda key: entry_bytes(key, format=2)),
    ("no-format", lambda key: json.dumps({"key": key, "expires": time.time() + 600, "value": PASSED}).encode()),
    ("expiry-not-a-number", lambda key: entry_bytes(key, expires="tomorrow")),
    ("expiry-infinite", lambda key: entry_bytes(key, expires=float("inf"))),
    ("expiry-nan", lambda key: entry_bytes(key, expires=float("nan"))),
    ("expiry-huge-integer", lambda key: entry_bytes(key, expires=10**400)),  # math.isfinite raises on it
    ("creation-nan", lambda key: entry_bytes(key, created=float("nan"))),  # the lifetime cap would never apply
    ("creation-infinite", lambda key: entry_bytes(key, created=float("inf"))),
    ("value-not-an-object", lambda key: entry_bytes(key, value=["passed"])),
    ("huge-file", lambda key: entry_bytes(key, value={**PASSED, "padding": "x" * (MAX_ENTRY_BYTES + 10)})),
    ("deeply-nested-json", lambda key: b"[" * (MAX_ENTRY_BYTES - 1)),
    ("directory-instead-of-file", lambda key: None),
]


@pytest.mark.parametrize("make", [c[1] for c in CORRUPT_ENTRIES], ids=[f"{c[0]}-ignored-and-removed" for c in CORRUPT_ENTRIES])
def test_corrupt_entries_are_ignored_and_removed(tmp_path: Path, base: Inputs, make: Callable[[str], bytes | None]) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    key = key_of(cache, base)
    path = tmp_path / "cache" / "v" / f"{key}.json"
    body = make(key)
    if body is None:
        path.mkdir()
    else:
        path.write_bytes(body)

    assert cache.get_verdict(key) is None
    assert not path.exists(), "a corrupt entry must be removed"
    cache.put_verdict(key, PASSED)  # and the slot is usable again
    assert cache.get_verdict(key) is not None


def _fifo(path: Path, elsewhere: Path) -> None:
    os.mkfifo(path)


def _symlink_to_a_valid_entry(path: Path, elsewhere: Path) -> None:
    elsewhere.write_bytes(entry_bytes(path.stem))
    path.symlink_to(elsewhere)


@pytest.mark.parametrize("kind", ["v", "t"], ids=["verdict", "tag"])
@pytest.mark.parametrize("make", [_fifo, _symlink_to_a_valid_entry], ids=["fifo", "symbolic-link"])
def test_an_entry_that_is_not_a_regular_file_is_a_miss_and_removed(
    tmp_path: Path, base: Inputs, kind: str, make: Callable[[Path, Path], None]
) -> None:
    # A FIFO would block a plain open() until a writer came: the hook would never answer. Entries
    # are only ever written as regular files (a rename), so a link is not one of ours either.
    cache = cache_in(tmp_path / "cache", base.config)
    key = key_of(cache, base) if kind == "v" else cache.tag_key(base.ref)
    path = tmp_path / "cache" / kind / f"{key}.json"
    make(path, tmp_path / "elsewhere.json")
    assert (cache.get_verdict(key) if kind == "v" else cache.get_tag(key)) is None
    assert not path.exists() and not path.is_symlink(), "it must be removed"


def test_a_key_file_that_is_a_fifo_is_unreadable_not_waited_on(tmp_path: Path, base: Inputs) -> None:
    fifo = tmp_path / "fifo.pub"
    os.mkfifo(fifo)
    changed = with_keys(base, default=KeySpec("default", str(fifo)))
    cache = cache_in(tmp_path / "cache", changed.config)
    assert key_of(cache, changed) != key_of(cache_in(tmp_path / "other", base.config), base)


def test_a_corrupt_tag_entry_is_a_miss_and_removed(tmp_path: Path, base: Inputs) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    key = cache.tag_key(base.ref)
    path = tmp_path / "cache" / "t" / f"{key}.json"
    path.write_bytes(b'{"format": 1, "key": "')
    assert cache.get_tag(key) is None
    assert not path.exists()


def test_an_expired_entry_is_a_miss_and_is_replaced_by_the_next_write(tmp_path: Path, base: Inputs) -> None:
    clock = FakeClock()
    cache = cache_in(tmp_path / "cache", base.config, clock, ttl_seconds=10, negative_ttl_seconds=10)
    key = key_of(cache, base)
    cache.put_verdict(key, failed("no-signature"))
    clock.advance(11)
    assert cache.get_verdict(key) is None
    cache.put_verdict(key, PASSED)
    assert cache.get_verdict(key)["passed"] is True


# ---- atomic writes under concurrency -------------------------------------------------------------

SHARED_KEY = "c" * 64
MINIMAL_CONFIG = b"policy: [{images: '**', action: allow}]\n"


def _concurrent_cache(directory: str) -> VerdictCache:
    return VerdictCache(CacheSettings(directory=directory), parse_config(MINIMAL_CONFIG, "unit.yaml", {}))


def _writer(directory: str, writer: int, rounds: int) -> None:
    cache = _concurrent_cache(directory)
    rng = random.Random(writer)
    for i in range(rounds):
        padding = "x" * rng.randrange(100, 40_000)  # entries of very different sizes: a torn one shows
        cache.put_verdict(SHARED_KEY, {**PASSED, "message": f"{writer}/{i}", "padding": padding, "length": len(padding)})


def _reader(directory: str, stop: Any, results: Any) -> None:
    cache = _concurrent_cache(directory)
    path = os.path.join(directory, "v", f"{SHARED_KEY}.json")
    reads = problems = 0
    while not stop.is_set():
        reads += 1
        try:
            with open(path, "rb") as handle:
                raw = json.loads(handle.read())["value"]
        except (OSError, ValueError, KeyError) as exc:
            problems += 1
            results.put(f"raw read: {exc!r}")
            continue
        entry = cache.get_verdict(SHARED_KEY)
        for value in (raw, entry):
            if value is None or len(value.get("padding", "")) != value.get("length"):
                problems += 1
                results.put(f"partial entry seen: {str(value)[:80]}")
    results.put((reads, problems))


def test_concurrent_writers_never_show_readers_a_partial_entry(tmp_path: Path) -> None:
    directory = str(tmp_path / "cache")
    _writer(directory, 99, 1)  # the entry exists before anyone reads
    context = multiprocessing.get_context("fork")
    stop, results = context.Event(), context.Queue()
    readers = [context.Process(target=_reader, args=(directory, stop, results)) for _ in range(2)]
    writers = [context.Process(target=_writer, args=(directory, w, 150)) for w in range(3)]
    for process in readers + writers:
        process.start()
    for process in writers:
        process.join(120)
    stop.set()
    summaries, complaints = [], []
    for _ in readers:
        while True:
            item = results.get(timeout=60)
            if isinstance(item, tuple):
                summaries.append(item)
                break
            complaints.append(item)
    for process in readers:
        process.join(60)
    assert all(p.exitcode == 0 for p in readers + writers)
    assert complaints == []
    assert all(reads > 0 and problems == 0 for reads, problems in summaries)
    leftovers = [p.name for p in (tmp_path / "cache" / "v").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "every temporary file was renamed into place"


# ---- eviction ------------------------------------------------------------------------------------


def _aged(path: Path, age: float, now: float) -> Path:
    os.utime(path, (now - age, now - age))
    return path


def test_eviction_keeps_the_newest_max_entries_across_verdicts_tags_and_fast_entries(tmp_path: Path, base: Inputs) -> None:
    clock = FakeClock()
    cache = cache_in(tmp_path / "cache", base.config, clock, max_entries=10)
    (tmp_path / "cache" / "f").mkdir()
    made = []
    for i in range(24):
        kind = ("v", "t", "f")[i % 3]
        path = tmp_path / "cache" / kind / f"{i:064x}.json"
        path.write_text("{}")
        made.append(_aged(path, 100 - i, clock.now))  # made[-1] is the newest
    assert cache.evict() == 14
    remaining = sorted(p for kind in ("v", "t", "f") for p in (tmp_path / "cache" / kind).iterdir())
    assert remaining == sorted(made[-10:])


# (file, age in seconds, evicted?) with ttlSeconds 100, negativeTtlSeconds 10, tagTtlSeconds 5
STALE_FILES = [
    ("v/old.json", 101, True),  # older than the longest lifetime
    ("t/old.json", 101, True),
    ("f/old.json", 101, True),
    ("v/young.json", 99, False),
    ("t/young.json", 50, False),  # judged by the longest lifetime: expiry proper is checked on read
    ("f/young.json", 1, False),
    ("v/old.json.1.abc.tmp", 61, True),  # a writer died before renaming
    ("f/old.json.1.abc.tmp", 61, True),
    ("v/young.json.1.abc.tmp", 10, False),  # a write may be in progress
    ("l/old.lock", 101, True),  # one lock file per image ever seen would pile up
    ("l/young.lock", 10, False),
]


def test_eviction_drops_expired_entries_and_stale_temporary_and_lock_files(tmp_path: Path, base: Inputs) -> None:
    clock = FakeClock()
    cache = cache_in(tmp_path / "cache", base.config, clock, ttl_seconds=100, negative_ttl_seconds=10, tag_ttl_seconds=5)
    root = tmp_path / "cache"
    (root / "f").mkdir()
    for name, age, _ in STALE_FILES:
        (root / name).write_text("{}")
        _aged(root / name, age, clock.now)

    assert cache.evict() == sum(1 for *_, gone in STALE_FILES if gone)
    assert {name: (root / name).exists() for name, _, _ in STALE_FILES} == {name: not gone for name, _, gone in STALE_FILES}


def test_writes_alone_keep_the_directory_bounded(tmp_path: Path, base: Inputs) -> None:
    cache = cache_in(tmp_path / "cache", base.config, max_entries=10)
    for i in range(400):
        cache.put_verdict(f"{i:064x}", PASSED)
    count = len(list((tmp_path / "cache" / "v").iterdir()))
    # Eviction runs on about one write in twenty; 400 writes without one are (0.95^390) impossible.
    assert count < 400


# ---- an unusable directory is no cache, never an error ------------------------------------------


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "cache"


def _subdirectory_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "v").write_text("")
    return tmp_path / "cache"


def _under_proc(tmp_path: Path) -> Path:
    return Path("/proc/self/signgate-cache")


@pytest.mark.parametrize(
    "where",
    [_under_a_file, _subdirectory_is_a_file, _under_proc],
    ids=["directory-under-a-regular-file", "entry-subdirectory-is-a-file", "directory-on-proc"],
)
def test_an_unusable_cache_directory_means_no_cache(tmp_path: Path, base: Inputs, where: Callable[[Path], Path]) -> None:
    cache = cache_in(where(tmp_path), base.config)
    assert not cache.enabled
    key = key_of(cache, base)
    cache.put_verdict(key, PASSED)
    cache.put_tag(cache.tag_key(base.ref), DIGEST)
    assert cache.get_verdict(key) is None
    assert cache.get_tag(cache.tag_key(base.ref)) is None
    assert cache.evict() == 0
    lock = cache.lock("k")
    assert lock.try_acquire() is True  # nothing to wait for
    lock.release()


def test_no_directory_means_no_cache(base: Inputs) -> None:
    settings = settings_from(base.config, {})
    assert settings.directory is None
    assert not VerdictCache(settings, base.config).enabled
    assert settings_from(base.config, {"SIGNGATE_CACHE_DIR": "/some/where"}).directory == "/some/where"


def test_a_cache_directory_that_vanishes_later_is_no_error(tmp_path: Path, base: Inputs) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    shutil.rmtree(tmp_path / "cache")
    key = key_of(cache, base)
    cache.put_verdict(key, PASSED)
    assert cache.get_verdict(key) is None
    assert cache.evict() == 0
    lock = cache.lock("k")
    assert lock.try_acquire() is True, "a lock that cannot be created must not make the process wait"
    lock.release()


def test_the_image_lock_excludes_a_second_holder_until_released(tmp_path: Path, base: Inputs) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    first, second = cache.lock("k"), cache.lock("k")
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    first.release()
    assert second.try_acquire() is True
    second.release()


def test_a_lock_path_occupied_by_a_directory_does_not_block(tmp_path: Path, base: Inputs) -> None:
    cache = cache_in(tmp_path / "cache", base.config)
    (tmp_path / "cache" / "l" / "k.lock").mkdir()
    lock = cache.lock("k")
    assert lock.try_acquire() is True
    lock.release()


# ==== through the hook, against a real registry ====================================================


def write_config(directory: Path, key_path: Path, host: str, *, comment: str = "", **top: Any) -> Path:
    data: dict[str, Any] = {
        "keys": {"default": str(key_path)},
        "registries": {"insecure": [host]},
        "policy": [{"images": "**"}],
    }
    data.update(top)
    path = directory / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(data) + (f"# {comment}\n" if comment else ""))
    return path


def admit(config: Path, cache_dir: Path | None, *images: str, timeout: float = 60) -> HookRun:
    env = {"SIGNGATE_CACHE_DIR": str(cache_dir)} if cache_dir is not None else {}
    run = run_request(config, request_for("Pod", list(images)), env=env, timeout=timeout)
    assert run.returncode == 0 and run.response is not None, run.stderr
    return run


@pytest.fixture
def key_copy(tmp_path: Path, keys: dict[str, TestKey]) -> Path:
    """The signing key's public half, in a file this test may rewrite."""
    path = tmp_path / "cosign.pub"
    path.write_bytes(keys["ecdsa-p256"].pub_path.read_bytes())
    return path


@pytest.fixture
def signed(http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> PushedImage:
    image = push_image(http, repo, "v1")
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    return image


@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize(
    "second_config",
    ["same-config-fast-path", "reworded-config-verdict-cache"],
)
def test_the_second_admission_of_an_image_makes_no_registry_request(
    tmp_path: Path, registry: Registry, key_copy: Path, signed: PushedImage, by: str, second_config: str
) -> None:
    image = signed.reference if by == "tag" else signed.by_digest
    cache = tmp_path / "cache"
    config = write_config(tmp_path, key_copy, registry.host)
    first = admit(config, cache, image)
    assert first.allowed and first.decision_log["cache"] == {"hits": 0, "misses": 1}

    if second_config == "reworded-config-verdict-cache":
        config = write_config(tmp_path, key_copy, registry.host, comment="same policy, other bytes")
    mark = registry.mark()
    second = admit(config, cache, image)
    assert second.allowed
    assert registry.count_requests(mark) == 0
    if second_config == "same-config-fast-path":
        assert second.decision_log["cache"]["fast"] is True
    else:
        assert second.decision_log["cache"] == {"hits": 1, "misses": 0}
        assert second.decision_log["images"][0]["digest"] == signed.digest


def test_with_tagTtlSeconds_0_a_tag_is_resolved_at_the_registry_every_time(
    tmp_path: Path, registry: Registry, key_copy: Path, signed: PushedImage
) -> None:
    cache = tmp_path / "cache"
    admit(write_config(tmp_path, key_copy, registry.host, cache={"tagTtlSeconds": 0}), cache, signed.reference)
    mark = registry.mark()
    again = admit(write_config(tmp_path, key_copy, registry.host, cache={"tagTtlSeconds": 0}, comment="x"), cache, signed.reference)
    assert again.allowed
    assert registry.count_requests(mark) > 0
    assert list((cache / "t").iterdir()) == []
    assert not (cache / "f").exists() or list((cache / "f").iterdir()) == [], "no fast entry for a tag either"


def test_a_definite_failure_is_cached_for_negativeTtlSeconds_only(
    tmp_path: Path, registry: Registry, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], key_copy: Path
) -> None:
    image = push_image(http, repo, "v1")
    cache = tmp_path / "cache"
    config = write_config(tmp_path, key_copy, registry.host, cache={"ttlSeconds": 60, "negativeTtlSeconds": 2})

    first = admit(config, cache, image.by_digest)
    written = time.time()
    assert not first.allowed and first.decision_log["images"][0]["reason"] == "no-signature"
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])

    mark = registry.mark()
    cached = admit(config, cache, image.by_digest)
    assert not cached.allowed, "the cached failure still answers"
    assert cached.decision_log["cache"] == {"hits": 1, "misses": 0}
    assert registry.count_requests(mark) == 0

    time.sleep(max(0.0, written + 2.2 - time.time()))
    later = admit(config, cache, image.by_digest)
    assert later.allowed, later.message
    assert later.decision_log["cache"]["misses"] == 1


def test_image_not_found_is_never_cached(
    tmp_path: Path, registry: Registry, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], key_copy: Path
) -> None:
    cache = tmp_path / "cache"
    config = write_config(tmp_path, key_copy, registry.host)
    reference = http.reference(repo, "v1")
    missing = admit(config, cache, reference)
    assert not missing.allowed and missing.decision_log["images"][0]["reason"] == "image-not-found"

    image = push_image(http, repo, "v1")
    sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
    assert admit(config, cache, reference).allowed


@pytest.mark.parametrize(
    "rewrite,allowed,registry_contacted",
    [
        ("same-contents", True, False),
        ("other-key-contents", False, True),
    ],
    ids=["key-file-rewritten-same-contents-hit", "key-file-other-contents-same-path-miss"],
)
def test_the_verdict_cache_follows_key_file_contents_not_paths(
    tmp_path: Path, registry: Registry, keys: dict[str, TestKey], key_copy: Path, signed: PushedImage,
    rewrite: str, allowed: bool, registry_contacted: bool,
) -> None:
    cache = tmp_path / "cache"
    config = write_config(tmp_path, key_copy, registry.host)
    assert admit(config, cache, signed.by_digest).allowed
    shutil.rmtree(cache / "f")  # leave the fast path out: this is about the verdict cache
    source = keys["ecdsa-p256"] if rewrite == "same-contents" else keys["other-ecdsa-p256"]
    key_copy.write_bytes(source.pub_path.read_bytes())

    mark = registry.mark()
    run = admit(config, cache, signed.by_digest)
    assert run.allowed is allowed
    assert (registry.count_requests(mark) > 0) is registry_contacted
    assert run.decision_log["cache"] == ({"hits": 1, "misses": 0} if not registry_contacted else {"hits": 0, "misses": 1})


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_a_stampede_of_cold_admissions_costs_at_most_two_cold_admissions(
    tmp_path: Path, registry: Registry, http: RegistryHTTP, repo: str, keys: dict[str, TestKey], key_copy: Path, by: str
) -> None:
    # Generous deadlines: 20 Python processes on a small CI machine start slowly, and a process
    # that waits for the lock past 60 % of its deadline fetches by itself (which would count).
    config = write_config(tmp_path, key_copy, registry.host, webhook={"timeoutSeconds": 30, "deadlineSeconds": 25})

    def pushed(tag: str) -> str:
        image = push_image(http, repo, tag)
        sign_legacy(http, repo, image.digest, keys["ecdsa-p256"])
        return image.reference if by == "tag" else image.by_digest

    baseline_image, stampede_image = pushed("baseline"), pushed("stampede")
    mark = registry.mark()
    assert admit(config, tmp_path / "baseline-cache", baseline_image).allowed
    single = registry.count_requests(mark)
    assert single > 0

    cache = tmp_path / "cache"
    mark = registry.mark()
    with ThreadPoolExecutor(max_workers=20) as pool:
        runs = list(pool.map(lambda _: admit(config, cache, stampede_image, timeout=120), range(20)))
    batch = registry.count_requests(mark)

    assert all(run.allowed for run in runs), [run.message for run in runs if not run.allowed]
    assert batch <= 2 * single, f"{batch} registry requests for 20 concurrent admissions; one cold admission makes {single}"
    files = [p for p in cache.rglob("*") if p.is_file() and p.parent.name in ("v", "t", "f")]
    assert files and not [p for p in files if p.name.endswith(".tmp")]
    for path in files:
        json.loads(path.read_bytes())  # every entry is whole


def test_an_unusable_cache_directory_still_gives_an_answer(
    tmp_path: Path, registry: Registry, key_copy: Path, signed: PushedImage
) -> None:
    config = write_config(tmp_path, key_copy, registry.host)
    cache = _under_a_file(tmp_path)
    first = admit(config, cache, signed.reference)
    second = admit(config, cache, signed.reference)
    assert first.allowed and second.allowed
    assert "fast" not in second.decision_log["cache"]
    assert not cache.exists()


@pytest.mark.parametrize("by, kind", [("digest", "v"), ("tag", "t")], ids=["verdict-entry", "tag-entry"])
def test_a_fifo_in_the_cache_directory_does_not_block_the_hook(
    tmp_path: Path, registry: Registry, key_copy: Path, signed: PushedImage, by: str, kind: str
) -> None:
    image = signed.by_digest if by == "digest" else signed.reference
    config = write_config(tmp_path, key_copy, registry.host)
    cache = tmp_path / "cache"
    assert admit(config, cache, image).allowed
    shutil.rmtree(cache / "f")  # leave the fast path out: this is about the verdict cache
    [entry] = (cache / kind).glob("*.json")
    entry.unlink()
    os.mkfifo(entry)

    run = admit(config, cache, image, timeout=30)  # before the fix, it waited forever on the FIFO
    assert run.allowed, run.message
    assert entry.is_file(), "the FIFO was removed and the entry written again"
