"""The warm path: admit from the request-level cache, importing nothing but the standard library.

A 50-replica rollout brings 52 admission requests for the same images, each in a new Python
process. Once the first has verified an image, the others only need to know that nothing has
changed since. This module answers them before the library (config validation, policy, HTTP and
crypto) is imported at all.

An entry in `<cache>/f/` says: "under the configuration file with exactly these bytes, image
string X passed, until T, provided these key files still have these contents", and from when
each kind of trust material its rule used needs refreshing, so that this path sets the gauge
signgate_trust_material_expiring as the full path would, without reading a trust file. The full path
writes one for every image that passed (see `remember`). This path admits a request only when
*every* image of it has a fresh entry whose dependencies still hold, and the request has no more
images than the limit in force when the entry was written. Anything else (a miss, a failure, a
DELETE, an unexpected shape, any exception) falls through to the full path, which decides from
scratch and reports problems properly. So this path can admit only what the full path admitted
under the same inputs, and never denies anything itself.

Stampedes: the first process to miss an image takes a lock per (configuration, image) in `fl/`
right here, before importing anything, and keeps it until it exits, having verified the image
on the full path. A process that misses while the lock is held waits here, cheaply, for at most
60% of the deadline, and answers from the entry once it appears. A 50-replica rollout then
imports the library and verifies about once, not 50 times.

Lifetimes: a digest-pinned image's entry lives as long as its verdict (`ttlSeconds`); a tag's
entry lives `tagTtlSeconds`, because the tag may be moved; a static allow lives `ttlSeconds`.
The cache directory comes from $SIGNGATE_CACHE_DIR, which the chart sets.
"""

from __future__ import annotations

import json
import os
import time

# hashlib loads OpenSSL's libcrypto, ~3 ms per process; the interpreter's built-in SHA-256 gives
# the same digests without it. (Named _sha2 from Python 3.12 on.)
try:
    from _sha2 import sha256 as _sha256
except ImportError:  # Python 3.11
    try:
        from _sha256 import sha256 as _sha256
    except ImportError:  # an interpreter built without it
        from hashlib import sha256 as _sha256

# Small standard-library-only modules of the library (primitives): no third-party import, no I/O
# at import time. The fast path's whole budget is the interpreter's start.
from .files import read_regular
from .podspec import config_path, is_checked, pod_spec_kind, walk_containers
from .totals import append_metric_operations, record_metrics

# 2: entries carry "trust", the refresh moments of the rule's trust material. The format is part of
# an entry's file name, so entries of another format are never found: a miss, never misread.
FORMAT = 2
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONTEXT_BYTES = 8 * 1024 * 1024
MAX_ENTRY_BYTES = 16 * 1024


def config_digest(raw: bytes) -> str:
    return _sha256(raw).hexdigest()


def entry_path(cache_dir: str, digest_of_config: str, image: str) -> str:
    key = _sha256(f"{FORMAT}\0{digest_of_config}\0{image}".encode()).hexdigest()
    return os.path.join(cache_dir, "f", f"{key}.json")


WAIT_FRACTION = 0.6
POLL_SECONDS = 0.015


def lock_path(cache_dir: str, digest_of_config: str, image: str) -> str:
    key = os.path.basename(entry_path(cache_dir, digest_of_config, image))[: -len(".json")]
    return os.path.join(cache_dir, "fl", f"{key}.lock")


def elect(cache_dir: str, digest_of_config: str, images: list[str]) -> None:
    """Mark this process as the one deciding these images, until it exits (see `_try_elect`).

    The full path calls this too, for the cases where the fast path gave up before electing
    (an expired or stale entry), so that processes arriving meanwhile wait for its entries.
    """
    for image in dict.fromkeys(images):
        _try_elect(lock_path(cache_dir, digest_of_config, image))


def _being_verified(path: str) -> bool:
    """True while another process holds the image's lock (it is deciding the image)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO in its place must not block the open
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken


def file_digest(path: str) -> str | None:
    try:
        return _sha256(read_regular(path, MAX_CONFIG_BYTES)[:MAX_CONFIG_BYTES]).hexdigest()
    except OSError:
        return None


def _is_time(value: object) -> bool:
    """A finite number of seconds since the epoch (false for NaN, infinity and huge integers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -1e12 < value < 1e12


def remember(
    cache_dir: str,
    digest_of_config: str,
    image: str,
    dependencies: list[str],
    expires: float,
    max_images: int,
    reason: str,
    mode: str = "enforce",
    trust: list[tuple[str, str, float | None]] | tuple[()] = (),
) -> None:
    """Record that `image` passed under this configuration (called by the full path).

    `trust`: (name, kind, moment) for each kind of trust material the image's rule used: the
    moment (seconds since the epoch) from which the kind needs refreshing, or None for never
    (hook.trust_refresh). The trust files are among `dependencies`, so the moments hold as long
    as the entry does."""
    if not _is_time(expires) or expires <= time.time():
        return  # an entry that could never expire is never written
    deps = []
    for path in dependencies:
        digest = file_digest(path)
        if digest is None:
            return
        deps.append([path, digest])
    body = json.dumps(
        {"format": FORMAT, "image": image, "expires": expires, "deps": deps, "max_images": max_images, "reason": reason,
         "mode": mode, "trust": [[name, kind, moment] for name, kind, moment in trust]}
    )
    path = entry_path(cache_dir, digest_of_config, image)
    temporary = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


# How long before this process a request may have arrived for the binding context's modification
# time to count as its start (see request_started). Longer than any webhook timeout (30 s at most):
# a request that waited that long is long given up on, and the answer must come at once.
MAX_QUEUE_SECONDS = 300.0


def request_started(environ: dict[str, str] | os._Environ[str], started: float) -> float:
    """The earliest trustworthy moment of this admission request, on the monotonic clock.

    shell-operator writes the binding context file just before it starts the hook, so its
    modification time is when the request reached this pod; `started`, this interpreter's start,
    can be seconds later on a loaded machine (200 processes starting at once on two cores). The
    deadline counts from the earlier of the two, so that the time spent waiting for a CPU is not
    given away twice.

    What this cannot see: the time before shell-operator wrote the file (the API server's call,
    TLS, shell-operator's own queueing), and wall-clock steps between the write and this read
    (the modification time is wall-clock time; the deadline runs on the monotonic clock).
    Bounded: a modification time after `started` (a clock step, a touched file) changes nothing,
    and one more than MAX_QUEUE_SECONDS before it cannot be shell-operator's and is ignored.
    """
    path = environ.get("BINDING_CONTEXT_PATH")
    if not path:
        return started
    try:
        written = os.stat(path).st_mtime
    except (OSError, ValueError):
        return started
    now = time.monotonic()
    written_at = now - (time.time() - written)
    if not started - MAX_QUEUE_SECONDS <= written_at < started:
        return started
    return written_at


def try_answer(environ: dict[str, str] | os._Environ[str], started: float) -> bool:
    """Admit from the cache and return True, or return False to let the full path decide."""
    cache_dir = environ.get("SIGNGATE_CACHE_DIR")
    response_path = environ.get("VALIDATING_RESPONSE_PATH") or environ.get("ADMISSION_RESPONSE_PATH")
    context_path = environ.get("BINDING_CONTEXT_PATH")
    if not (cache_dir and response_path and context_path):
        return False
    try:
        answer = _cached_answer(environ, cache_dir, context_path, started)
    except Exception:  # anything unexpected: the full path decides, and says why if it must
        return False
    if answer is None:
        return False
    request, images, deadline, trust_gauges = answer
    try:
        with open(response_path, "w", encoding="utf-8") as handle:
            handle.write('{"allowed": true}')
    except OSError:
        return False  # the full path tries again and reports why it cannot answer
    try:
        _log(request, images, started)
        # Bounded like the wait for entries: the deadline is only a hint when the file is YAML.
        _metrics(environ.get("METRICS_PATH"), cache_dir, images, started, started + WAIT_FRACTION * deadline, trust_gauges)
    except Exception:
        pass
    return True


# Locks this process took as the elected verifier of an image. They must outlive try_answer: the
# full path that runs next in this same process verifies the image, and the kernel drops the locks
# when the process exits, after the entry is written.
_ELECTED: list[int] = []


def _try_elect(lock: str) -> bool:
    """Take the image's "being verified" lock, or return False if another process holds it."""
    import fcntl

    try:
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NONBLOCK, 0o600)
    except OSError:
        return True  # no lock can exist: nobody to wait for
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _ELECTED.append(fd)
    return True


def _deadline_hint(raw_config: bytes) -> float:
    """The configured deadline, when the configuration is JSON (as the chart renders it)."""
    try:
        webhook = json.loads(raw_config).get("webhook") or {}
        timeout = float(webhook.get("timeoutSeconds", 10))
        deadline = float(webhook.get("deadlineSeconds", max(timeout * 0.5, timeout - 2.0)))
    except (ValueError, TypeError, AttributeError, OverflowError):
        return 8.0
    # NaN or infinity would make the wait below endless; the full path refuses such a configuration.
    return deadline if 0.1 <= deadline <= 30 else 8.0


def _read_entries(cache_dir: str, digest_of_config: str, images: list[str], started: float, deadline: float) -> dict[str, bytes] | None:
    """Every image's entry bytes, or None to let the full path decide.

    On a miss, this process tries to become the one that verifies each missing image. If it
    wins any, it goes on to the full path at once. If every missing image is being verified by
    other processes, it waits for their entries, for at most WAIT_FRACTION of the deadline.
    """
    found: dict[str, bytes] = {}
    missing: list[str] = []
    for image in images:
        raw = _read_file(entry_path(cache_dir, digest_of_config, image))
        if raw is None:
            missing.append(image)
        else:
            found[image] = raw
    if not missing:
        return found
    locks = {image: lock_path(cache_dir, digest_of_config, image) for image in missing}
    elected = False
    for image in missing:
        elected = _try_elect(locks[image]) or elected
    if elected:
        return None
    while missing:
        if time.monotonic() - started > WAIT_FRACTION * deadline:
            return None
        time.sleep(POLL_SECONDS)
        for image in list(missing):
            raw = _read_file(entry_path(cache_dir, digest_of_config, image))
            if raw is not None:
                found[image] = raw
                missing.remove(image)
            elif not _being_verified(locks[image]):
                return None  # the verifier finished without an entry (a denial): decide here
    return found


def _read_file(path: str) -> bytes | None:
    try:
        return read_regular(path, MAX_ENTRY_BYTES, follow_symlinks=False)
    except OSError:
        return None


def _cached_answer(
    environ: object, cache_dir: str, context_path: str, started: float = 0.0
) -> tuple[dict, list[tuple], float, list[tuple[str, dict[str, str], int]]] | None:
    """(request, [(list, container, image, reason, mode)], deadline seconds, gauges), or None: no
    answer here."""
    raw_config = read_regular(config_path(environ), MAX_CONFIG_BYTES)
    if len(raw_config) > MAX_CONFIG_BYTES:
        return None
    raw_context = read_regular(context_path, MAX_CONTEXT_BYTES)
    if len(raw_context) > MAX_CONTEXT_BYTES:
        return None
    contexts = json.loads(raw_context)
    if isinstance(contexts, dict):
        contexts = [contexts]
    validating = [c for c in contexts if isinstance(c, dict) and c.get("type") == "Validating"]
    if len(validating) != 1:
        return None
    review = validating[0].get("review")
    request = review.get("request") if isinstance(review, dict) else None
    if not isinstance(request, dict) or not is_checked(request.get("operation")):
        return None
    kind = pod_spec_kind(request)
    if kind is None or request.get("object") is None:
        return None
    containers = walk_containers(kind, request["object"])
    if not containers or any(not isinstance(image, str) for _, _, image, _ in containers):
        return None

    digest_of_config = config_digest(raw_config)
    now = time.time()
    checked: dict[str, str] = {}
    file_digests: dict[str, str | None] = {}
    gauges: dict[tuple[str, str], int] = {}
    images = list(dict.fromkeys(image for _, _, image, _ in containers))
    deadline = _deadline_hint(raw_config)
    raw_entries = _read_entries(cache_dir, digest_of_config, images, started, deadline)
    if raw_entries is None:
        return None
    for image in images:
        raw_entry = raw_entries[image]
        entry = json.loads(raw_entry)
        if (
            len(raw_entry) > MAX_ENTRY_BYTES
            or not isinstance(entry, dict)
            or entry.get("format") != FORMAT
            or entry.get("image") != image
            or not _is_time(entry.get("expires"))  # NaN would never be "<= now": it would never expire
            or entry["expires"] <= now
            or not isinstance(entry.get("max_images"), int)
            or len(containers) > entry["max_images"]
            or not isinstance(entry.get("deps"), list)
            or not _add_trust_gauges(gauges, entry.get("trust"), now)
        ):
            return None
        for dependency in entry["deps"]:
            path, digest = dependency
            if path not in file_digests:
                file_digests[path] = file_digest(path)
            if file_digests[path] != digest:
                return None  # a key file changed: decide again
        checked[image] = (str(entry.get("reason", "cached")), str(entry.get("mode", "enforce")))
    images = [(list_name, name, image, checked[image][0], checked[image][1]) for list_name, name, image, _ in containers]
    trust_gauges = [("signgate_trust_material_expiring", {"name": name, "kind": kind}, value)
                    for (name, kind), value in sorted(gauges.items())]
    return request, images, deadline, trust_gauges


def _add_trust_gauges(gauges: dict[tuple[str, str], int], trust: object, now: float) -> bool:
    """Add an entry's signgate_trust_material_expiring values to `gauges`: 1 from the recorded
    moment on (trust_root.needs_refresh: now >= moment), 0 before it or when there is none.
    False for a malformed list: the entry is not used."""
    if not isinstance(trust, list):
        return False
    for item in trust:
        if not (isinstance(item, list) and len(item) == 3):
            return False
        name, kind, moment = item
        if not (isinstance(name, str) and isinstance(kind, str) and (moment is None or _is_time(moment))):
            return False
        gauges[(name, kind)] = int(moment is not None and now >= moment)
    return True


def _log(request: dict, images: list[tuple], started: float) -> None:
    import sys

    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    obj = request.get("object") if isinstance(request.get("object"), dict) else {}
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    entry = {
        "level": "info",
        "msg": "signgate decision",
        "uid": request.get("uid", ""),
        "namespace": request.get("namespace", ""),
        "kind": kind.get("kind", ""),
        "name": request.get("name") or metadata.get("name") or metadata.get("generateName") or "",
        "operation": request.get("operation", ""),
        "verdict": "allowed",
        "reasons": [],
        "images": [
            {"container": name, "list": list_name, "image": image, "verdict": "pass", "reason": reason}
            for list_name, name, image, reason, _ in images
        ],
        "cache": {"fast": True, "hits": len({image for _, _, image, _, _ in images})},
        "duration_ms": int((time.monotonic() - started) * 1000),
    }
    sys.stderr.write(json.dumps(entry, default=str) + "\n")


def _metrics(path: str | None, cache_dir: str, images: list[tuple], started: float, give_up_at: float,
             gauges: list[tuple[str, dict[str, str], int]] | tuple[()] = ()) -> None:
    """The counts metrics.increments would give for this admission, and the trust gauges
    hook.trust_expiry_gauges would, recorded and written."""
    if not path:
        return
    reasons = {reason for _, _, _, reason, _ in images}
    reason = "verified" if any(r in ("verified", "verified-index", "verified-platforms") for r in reasons) else "static"
    per_image: dict[tuple[str, str], int] = {}
    for _, _, _, image_reason, mode in images:
        per_image[(image_reason, mode)] = per_image.get((image_reason, mode), 0) + 1
    counts = [
        ("signgate_decisions_total", {"result": "allowed", "reason": reason}, 1),
        *(
            ("signgate_images_total", {"result": "pass", "reason": image_reason, "mode": mode}, count)
            for (image_reason, mode), count in sorted(per_image.items())
        ),
        ("signgate_cache_total", {"result": "hit"}, len({image for _, _, image, _, _ in images})),
    ]
    seconds = round(time.monotonic() - started, 6)
    operations = record_metrics(cache_dir, counts, [("signgate_verification_seconds", {"result": "allowed"}, seconds)], give_up_at,
                                list(gauges))
    if operations is not None:
        append_metric_operations(path, operations)
