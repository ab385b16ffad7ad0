"""Cumulative metrics totals, kept in the cache directory and written as shell-operator `set` operations.

Standard library only: the fast path (fastpath.py) records through this module before the library
is imported, and metrics.py does on the full path.
"""

from __future__ import annotations

import json
import os
import stat
import time

from .files import read_regular

# Deferred imports: fcntl only when totals are recorded (a process without a cache directory
# never needs it).

# ---- cumulative metrics ----------------------------------------------------------------------
#
# shell-operator (since v1.10, flant/shell-operator#777) puts every metric operation of a hook run
# that names no `group` into a group named after the hook, and expires a group before it applies a
# run's operations to it (deckhouse metrics-storage, ApplyBatchOperations). An `add` therefore
# never accumulates across runs and an `observe` histogram holds one run. Naming a group per run
# does not help: series that differ only by group are served twice, which fails the whole scrape.
# So signgate keeps the totals itself, in <cache>/m/totals.json under a lock, and every run `set`s
# all of them: the expiry drops only values that the same batch sets again.
#
# Concurrent shell-operator goroutines may apply two runs' batches in the other order than the
# runs updated the totals; `set` then shows the older totals until the next run, which is why the
# totals are recorded as the last thing a run does. (With `add` after the expiry, interleaved
# batches would add up to twice the totals.)
#
# This is a module of its own, below both users: the fast path records too and may import only
# standard-library-light modules; metrics.py, on the full path, calls it as well.

METRICS_FORMAT = 1
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
HISTOGRAM_BUCKETS = {"signgate_verification_seconds": DURATION_BUCKETS}
# Label values come partly from requests (a registry's host name): past this many series of one
# metric, new label combinations are counted in one series whose label values are all OVERFLOW.
MAX_SERIES_PER_METRIC = 100
OVERFLOW = "other"
MAX_METRICS_STATE_BYTES = 1024 * 1024
_MAX_COUNT = 2**53  # beyond this a JSON number no longer counts by one


def metrics_directory(cache_dir: str) -> str:
    return os.path.join(cache_dir, "m")


def record_metrics(
    cache_dir: str,
    counts: list[tuple[str, dict[str, str], int]],
    observations: list[tuple[str, dict[str, str], float]],
    give_up_at: float,
    gauges: "list[tuple[str, dict[str, str], int]] | tuple[()]" = (),
) -> list[dict] | None:
    """Add one run's counts and histogram observations to the totals in the cache directory, set
    its gauges (a value that replaces the last one), and return a `set` operation for every total
    and gauge; None if the totals could not be updated (this run then writes no metrics:
    shell-operator keeps the previous values)."""
    directory = metrics_directory(cache_dir)
    try:
        os.makedirs(directory, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(os.path.join(directory, "totals.lock"), flags, 0o600)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _lock_until(fd, give_up_at):
            return None
        path = os.path.join(directory, "totals.json")
        totals = _load_totals(path)
        for name, labels, value in counts:
            _count(totals, name, labels, value)
        for name, labels, value in observations:
            _observe(totals, name, labels, value)
        for name, labels, value in gauges:
            _gauge(totals, name, labels, value)
        _store_totals(path, totals)
        return _total_operations(totals)
    except OSError:
        return None  # totals that were not stored must not be shown: the next run would go back
    finally:
        os.close(fd)  # and with it the lock


def append_metric_operations(path: str, operations: list[dict]) -> bool:
    """Append to $METRICS_PATH in one write; metrics are never worth failing a decision for."""
    text = "".join(json.dumps(op, separators=(",", ":")) + "\n" for op in operations)
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        return False
    return True


def _lock_until(fd: int, give_up_at: float) -> bool:
    """Take the totals lock, polling, until `give_up_at` (time.monotonic()).

    Not a blocking flock: the answer reaches the API server only when this process exits, so a
    process stuck holding the lock must cost the others their metrics, never their deadline.
    """
    import fcntl

    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        left = give_up_at - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.02)


def _series(table: dict, name: str, labels: dict[str, str]) -> tuple[tuple, dict[str, str]]:
    series = table.setdefault(name, {})
    key = tuple(sorted(labels.items()))
    if key not in series and len(series) >= MAX_SERIES_PER_METRIC:
        labels = {label: OVERFLOW for label in labels}
        key = tuple(sorted(labels.items()))
    return key, labels


def _count(totals: dict, name: str, labels: dict[str, str], value: int) -> None:
    key, labels = _series(totals["counters"], name, labels)
    series = totals["counters"][name]
    previous = series[key][1] if key in series else 0
    series[key] = (labels, min(previous + value, _MAX_COUNT))


def _gauge(totals: dict, name: str, labels: dict[str, str], value: int) -> None:
    # Kept with the totals, because shell-operator drops every series a run does not set again.
    key, labels = _series(totals["gauges"], name, labels)
    totals["gauges"][name][key] = (labels, value)


def _observe(totals: dict, name: str, labels: dict[str, str], value: float) -> None:
    buckets = HISTOGRAM_BUCKETS[name]
    key, labels = _series(totals["histograms"], name, labels)
    series = totals["histograms"][name]
    _, counts, total, count = series.get(key) or (labels, [0] * (len(buckets) + 1), 0.0, 0)
    counts = list(counts)
    # counts[i]: observations in (buckets[i-1], buckets[i]]; the last one, above every bucket (+Inf)
    position = next((i for i, bound in enumerate(buckets) if value <= bound), len(buckets))
    counts[position] += 1
    series[key] = (labels, counts, total + max(value, 0.0), count + 1)


def _load_totals(path: str) -> dict:
    """The stored totals; empty ones if there are none or they are unreadable (Prometheus reads the
    drop as a counter reset, as after a restart), and without any malformed series."""
    totals: dict = {"counters": {}, "histograms": {}, "gauges": {}}
    try:
        raw = read_regular(path, MAX_METRICS_STATE_BYTES, follow_symlinks=False)
        data = json.loads(raw) if len(raw) <= MAX_METRICS_STATE_BYTES else None
    except (OSError, ValueError, RecursionError):
        return totals  # a symlink or a pipe in its place is replaced by the next rename
    if not isinstance(data, dict) or data.get("format") != METRICS_FORMAT:
        return totals
    counters = data.get("counters")
    for entry in counters if isinstance(counters, list) else ():
        if isinstance(entry, list) and len(entry) == 3 and _is_metric(entry[0]) and _is_labels(entry[1]) and _is_count(entry[2]):
            _count(totals, entry[0], entry[1], entry[2])
    gauges = data.get("gauges")  # absent in totals written before gauges existed: same format
    for entry in gauges if isinstance(gauges, list) else ():
        if isinstance(entry, list) and len(entry) == 3 and _is_metric(entry[0]) and _is_labels(entry[1]) and _is_count(entry[2]):
            _gauge(totals, entry[0], entry[1], entry[2])
    histograms = data.get("histograms")
    for entry in histograms if isinstance(histograms, list) else ():
        if not (isinstance(entry, list) and len(entry) == 6 and entry[0] in HISTOGRAM_BUCKETS and _is_labels(entry[1])):
            continue
        name, labels, buckets, counts, total, count = entry
        if (
            buckets != list(HISTOGRAM_BUCKETS[name])  # another bucket layout: start that series again
            or not isinstance(counts, list)
            or len(counts) != len(buckets) + 1
            or not all(_is_count(n) for n in counts)
            or not _is_count(count)
            or sum(counts) != count
            or not (isinstance(total, (int, float)) and not isinstance(total, bool) and 0 <= total < 1e15)
        ):
            continue
        key, labels = _series(totals["histograms"], name, labels)
        known = totals["histograms"][name].get(key)
        if known is not None:  # two series folded into OVERFLOW
            counts = [a + b for a, b in zip(known[1], counts)]
            total, count = known[2] + total, known[3] + count
        totals["histograms"][name][key] = (labels, counts, float(total), count)
    return totals


def _store_totals(path: str, totals: dict) -> None:
    body = json.dumps(
        {
            "format": METRICS_FORMAT,
            "counters": [[name, labels, value] for name, series in totals["counters"].items() for labels, value in series.values()],
            "histograms": [
                [name, labels, list(HISTOGRAM_BUCKETS[name]), counts, total, count]
                for name, series in totals["histograms"].items()
                for labels, counts, total, count in series.values()
            ],
            "gauges": [[name, labels, value] for name, series in totals["gauges"].items() for labels, value in series.values()],
        },
        separators=(",", ":"),
    )
    # One temporary name is enough: only the lock holder writes it. Unlinked first, and created
    # with O_EXCL and O_NOFOLLOW, so that nothing placed there can redirect the write.
    temporary = path + ".tmp"
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        data = body.encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _total_operations(totals: dict) -> list[dict]:
    """shell-operator operations for every total: counters as they are, each histogram as the
    classic `_bucket{le}` (cumulative), `_sum` and `_count` series."""
    ops: list[dict] = []
    for name in sorted(totals["counters"]):
        for key in sorted(totals["counters"][name]):
            labels, value = totals["counters"][name][key]
            ops.append({"name": name, "action": "set", "value": value, "labels": labels})
    for name in sorted(totals["gauges"]):
        for key in sorted(totals["gauges"][name]):
            labels, value = totals["gauges"][name][key]
            ops.append({"name": name, "action": "set", "value": value, "labels": labels})
    for name in sorted(totals["histograms"]):
        bounds = [_le(bound) for bound in HISTOGRAM_BUCKETS[name]] + ["+Inf"]
        for key in sorted(totals["histograms"][name]):
            labels, counts, total, count = totals["histograms"][name][key]
            running = 0
            for bound, n in zip(bounds, counts):
                running += n
                ops.append({"name": f"{name}_bucket", "action": "set", "value": running, "labels": {**labels, "le": bound}})
            ops.append({"name": f"{name}_sum", "action": "set", "value": round(total, 6), "labels": labels})
            ops.append({"name": f"{name}_count", "action": "set", "value": count, "labels": labels})
    return ops


def _le(bound: float) -> str:
    return format(bound, "g")  # 0.025 -> "0.025", 1 -> "1": as Prometheus' Go client writes them


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_COUNT


def _is_metric(name: object) -> bool:
    return isinstance(name, str) and name.startswith("signgate_") and name.isascii() and name.replace("_", "a").isalnum()


def _is_labels(labels: object) -> bool:
    return isinstance(labels, dict) and all(
        isinstance(k, str) and k.isascii() and k.isidentifier() and not k.startswith("__") and k != "le" and isinstance(v, str)
        for k, v in labels.items()
    )
