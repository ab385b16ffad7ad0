"""A verdict cache on disk, shared by the concurrent hook processes of one pod.

shell-operator starts a new process per admission request, so nothing survives in memory: a
50-replica rollout would otherwise verify the same image 52 times. Entries are small JSON files
in a directory (an emptyDir in the chart):

- `v/<key>.json`: a verdict. The key is a hash of everything that decides it: the image digest
  and name, the rule (all its fields), each key's name, file contents and hash setting, the
  Rekor keys when the rule needs them, and the limits. Any change to any of them is a miss.
  Verified verdicts live `ttlSeconds` (default 600), definite failures (no or invalid
  signatures) `negativeTtlSeconds` (default 60). Transient failures (timeouts, unreachable or
  rate-limiting registries, refused credentials) are never cached: the next request should try
  again. With pull secrets (`registries.pullSecrets: pod`), a failure's key also holds who asked
  (the namespace and a digest of the pod's credentials), so it serves no other namespace; a pass
  serves all (decision._CachedVerifier, README "Pull secrets").
- `t/<key>.json`: tag -> digest, for `tagTtlSeconds` (default 30; 0 disables it). Trade-off: for
  that long, a tag that was moved in the registry still resolves to its old digest here. The
  gap exists anyway between admission and the kubelet's pull; `requireDigest` closes both.
- `l/<key>.lock`: a per-image lock (flock) so that concurrent processes that miss the cache for
  the same image do not all go to the registry: one fetches, the others wait for its verdict.

Writes are atomic (a temporary file renamed over the entry). A corrupt, unreadable or expired
entry is a miss. The directory is bounded: past `maxEntries`, the oldest entries are evicted.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, replace
from typing import Any, Callable, Iterator

from .settings import CacheSettings, Config, KeySpec, Rule
from .verifiers import verifier_for
from .files import read_regular
from .reference import ImageReference

CACHE_FORMAT = 1
MAX_ENTRY_BYTES = 64 * 1024
# Failures that say something about the image itself, not about the path to it.
DEFINITE_FAILURES = frozenset(
    {
        "no-signature",
        "no-valid-signature",
        "digest-mismatch",
        "claims-rejected",
        "threshold-not-met",
        "required-key-missing",
    }
)


class VerdictCache:
    def __init__(self, settings: CacheSettings, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.config = config
        self.clock = clock
        self.root = settings.directory
        self._key_digests: dict[str, str] = {}
        self.hits = 0
        self.misses = 0
        if self.root:
            for sub in ("v", "t", "l"):
                try:
                    os.makedirs(os.path.join(self.root, sub), exist_ok=True)
                except OSError:
                    self.root = None  # an unusable cache is no cache, never an error
                    break

    @property
    def enabled(self) -> bool:
        return self.root is not None

    # ---- keys -------------------------------------------------------------------------------

    def verdict_key(self, rule: Rule, ref: ImageReference, digest: str, asker: str | None = None) -> str:
        """`asker`: whose credentials found a failure (pull secrets: decision._CachedVerifier)."""
        verifier = verifier_for(rule)
        material = {
            "format": CACHE_FORMAT,
            "digest": digest,
            "name": ref.name,
            # The tag matters only where it changes the outcome (a platform digest found through its index).
            "tag": ref.tag if verifier.uses_tag(rule) else None,
            "rule": {k: v for k, v in asdict(rule).items() if k != "index"},
            "keys": [self._key_material(self.config.keys[name]) for name in verifier.key_names(rule)],
            # Every other file a verdict depends on (Rekor keys, trust roots), by content.
            "trust": [self._file_digest(path) for path in verifier.trust_files(self.config, rule)],
            # A certificate rule's verdict also depends on its identities' specifications.
            "identities": [asdict(self.config.identities[name]) for name in rule.identities if name in self.config.identities],
            "limits": asdict(self.config.limits),
        }
        if asker is not None:
            material["asker"] = asker
        return _hash(material)

    def tag_key(self, ref: ImageReference) -> str:
        return _hash({"format": CACHE_FORMAT, "name": ref.name, "tag": ref.tag})

    def lock_key(self, rule: Rule, ref: ImageReference) -> str:
        return _hash({"format": CACHE_FORMAT, "ref": str(ref), "rule": rule.index, "images": rule.images})

    def _key_material(self, spec: KeySpec) -> list[Any]:
        return [spec.name, self._file_digest(spec.path), spec.hash_algorithm]

    def _file_digest(self, path: str) -> str:
        # The file's bytes, not its path: a rotated key behind the same path is a new key.
        content = self._key_digests.get(path)
        if content is None:
            try:
                content = hashlib.sha256(read_regular(path, 64 * 1024)[: 64 * 1024]).hexdigest()
            except OSError:  # unreadable, or not a regular file (a FIFO would block: never waited on)
                content = "unreadable"
            self._key_digests[path] = content
        return content

    # ---- entries ----------------------------------------------------------------------------

    def get_verdict(self, key: str) -> dict[str, Any] | None:
        entry = self._read("v", key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def peek_verdict(self, key: str) -> dict[str, Any] | None:
        """Like get_verdict, without counting a hit or miss (for re-reads while waiting)."""
        return self._read("v", key)

    def put_verdict(self, key: str, verdict: dict[str, Any]) -> None:
        if verdict.get("passed"):
            ttl = self.settings.ttl_seconds
        elif verdict.get("reason") in DEFINITE_FAILURES:
            ttl = self.settings.negative_ttl_seconds
        else:
            return
        self._write("v", key, verdict, ttl)

    def get_tag(self, key: str) -> str | None:
        if self.settings.tag_ttl_seconds <= 0:
            return None
        entry = self._read("t", key)
        digest = entry.get("digest") if entry else None
        return digest if isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71 else None

    def put_tag(self, key: str, digest: str) -> None:
        if self.settings.tag_ttl_seconds > 0:
            self._write("t", key, {"digest": digest}, self.settings.tag_ttl_seconds)

    def _path(self, kind: str, key: str) -> str:
        assert self.root is not None
        return os.path.join(self.root, kind, f"{key}.json")

    def _read(self, kind: str, key: str) -> dict[str, Any] | None:
        if not self.root:
            return None
        path = self._path(kind, key)
        try:
            # Anything but a regular file (a FIFO would block this process forever, a symbolic
            # link points outside the cache) is a corrupt entry.
            raw = read_regular(path, MAX_ENTRY_BYTES, follow_symlinks=False)
            entry = json.loads(raw)
            if (
                len(raw) > MAX_ENTRY_BYTES
                or not isinstance(entry, dict)
                or entry.get("format") != CACHE_FORMAT
                or entry.get("key") != key
                or not _is_time(entry.get("expires"))  # NaN or Infinity would never expire
                or ("created" in entry and not _is_time(entry["created"]))  # nor would its lifetime cap apply
                or not isinstance(entry.get("value"), dict)
            ):
                raise ValueError("corrupt entry")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            # Corrupt entries are ignored and removed (RecursionError: deeply nested JSON).
            _unlink(path)
            return None
        expires = entry["expires"]
        created = entry.get("created")
        if created is not None:
            # Lifetimes are not part of the key: an entry written under a longer TTL than the one
            # configured now lives only as long as the current setting allows.
            expires = min(expires, created + self._ttl_for(kind, entry["value"]))
        if expires <= self.clock():
            return None
        value: dict[str, Any] = dict(entry["value"])
        value["_expires"] = expires
        return value

    def _ttl_for(self, kind: str, value: dict[str, Any]) -> float:
        if kind == "t":
            return self.settings.tag_ttl_seconds
        return self.settings.ttl_seconds if value.get("passed") else self.settings.negative_ttl_seconds

    def _write(self, kind: str, key: str, value: dict[str, Any], ttl: float) -> None:
        if not self.root or ttl <= 0:
            return
        now = self.clock()
        body = json.dumps({"format": CACHE_FORMAT, "key": key, "created": now, "expires": now + ttl, "value": value})
        path = self._path(kind, key)
        temporary = f"{path}.{os.getpid()}.{random.getrandbits(32):08x}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(body)
            os.replace(temporary, path)  # atomic: readers see the old entry or the new, never half
        except OSError:
            _unlink(temporary)
            return
        if random.random() < 0.05:
            self.evict()

    def evict(self) -> int:
        """Drop expired entries, then the oldest ones while there are more than max_entries."""
        if not self.root:
            return 0
        entries = []
        removed = 0
        now = self.clock()
        ttl = max(self.settings.ttl_seconds, self.settings.negative_ttl_seconds, self.settings.tag_ttl_seconds)
        # f/ holds the fast path's request-level entries (fastpath.py): bounded like the others.
        for kind in ("v", "t", "f"):
            for path, mtime in _scan(os.path.join(self.root, kind)):
                if path.endswith(".tmp") and mtime < now - 60:
                    removed += _unlink(path)
                elif path.endswith(".json"):
                    entries.append((mtime, path))
        # Lock files are never rewritten, so one per image ever seen would pile up. Dropping one
        # that is in use costs at most one duplicate fetch (a newcomer locks a new file).
        for locks in ("l", "fl"):  # fl/: the fast path's "being verified" locks (fastpath.py)
            for path, mtime in _scan(os.path.join(self.root, locks)):
                if path.endswith(".lock") and mtime < now - max(ttl, 60):
                    removed += _unlink(path)
        entries.sort()
        excess = len(entries) - self.settings.max_entries
        for position, (mtime, path) in enumerate(entries):
            if position < excess or mtime < now - ttl:
                removed += _unlink(path)
        return removed

    # ---- stampede protection -----------------------------------------------------------------

    def lock(self, key: str) -> "ImageLock":
        return ImageLock(os.path.join(self.root, "l", f"{key}.lock") if self.root else None)


class ImageLock:
    """An advisory, per-image lock. Only held while one process fetches; never blocks forever."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        if self.path is None:
            return True
        import fcntl

        if self.fd is None:
            try:
                # O_NONBLOCK: a FIFO planted under the lock's name must not block the open.
                self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NONBLOCK, 0o600)
            except OSError:
                # No lock file can exist (read-only or vanished directory): there is nothing to
                # wait for, so go ahead unlocked instead of polling until the deadline.
                self.path = None
                return True
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)  # closing drops the flock
            finally:
                self.fd = None


def settings_from(config: Config, environ: Any) -> CacheSettings:
    """The configured lifetimes, in the directory named by $SIGNGATE_CACHE_DIR.

    The directory is deliberately not a configuration field: the fast path (fastpath.py) must
    find the cache before it reads the configuration, and where an emptyDir is mounted is a
    deployment matter that the chart decides.
    """
    return replace(config.cache, directory=environ.get("SIGNGATE_CACHE_DIR") or None)


def _is_time(value: Any) -> bool:
    """A finite number of seconds since the epoch. The comparisons are false for NaN, and exact
    for integers of any size (math.isfinite raises OverflowError on a huge one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -1e12 < value < 1e12


def _hash(material: Any) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _scan(directory: str) -> Iterator[tuple[str, float]]:
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    yield entry.path, entry.stat().st_mtime
                except OSError:
                    continue
    except OSError:
        return


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
        return 1
    except IsADirectoryError:
        try:
            os.rmdir(path)  # an (empty) directory where an entry belongs: it would block the entry forever
            return 1
        except OSError:
            return 0
    except OSError:
        return 0
