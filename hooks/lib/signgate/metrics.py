"""Prometheus metrics, kept as totals in the cache directory and handed to shell-operator.

shell-operator serves what hooks write to `$METRICS_PATH` on `:9115/metrics/hooks`, adding a
`hook` label, but it expires all of a hook's series before applying each run's operations (see
fastpath.py, "cumulative metrics"). So each run adds its counts to totals kept in
`$SIGNGATE_CACHE_DIR/m/totals.json` (under a lock, shared by hook processes, the verifier
service's workers and the fast path) and writes a `set` operation for every total. Without a
cache directory there is nowhere to keep totals, and no metrics are written.

| name | exposed as | labels | meaning |
| --- | --- | --- | --- |
| `signgate_decisions_total` | gauge, only grows | `result` (allowed/denied), `reason` | admission decisions; reason is the first failure's reason, or `verified`, `static`, `not-checked`, `too-many-images`, or an error's reason (`invalid-config`, `invalid-input`, ...) |
| `signgate_images_total` | gauge, only grows | `result` (pass/fail), `reason`, `mode` | per-image outcomes |
| `signgate_cache_total` | gauge, only grows | `result` (hit/miss) | verdict-cache lookups |
| `signgate_registry_requests_total` | gauge, only grows | `registry`, `status` | HTTP requests to registries; `status` is the HTTP status or `error`; 429s show up here |
| `signgate_verification_seconds_bucket`, `_sum`, `_count` | gauges, only grow | `result` (+ `le`) | wall time of the decision, from process start, as a classic histogram's series |
| `signgate_trust_material_expiring` | gauge, 0 or 1 | `name`, `kind` (tlog, ctlog, ca, tsa; certificate for a CA bundle) | 1 when a trusted root's keys of that kind, or a CA bundle's certificate, are past or within 30 days of the end of their validity; set by admissions whose rules use that material, cached ones too (the fast path compares the moment recorded with its entry with its clock) |

shell-operator can only `set` a gauge, not a counter or a histogram, to a given value; the values
behave as counters for `rate()` and `histogram_quantile()`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

from .totals import append_metric_operations, record_metrics

Count = tuple[str, dict[str, str], int]
Observation = tuple[str, dict[str, str], float]
Gauge = tuple[str, dict[str, str], int]  # a value that replaces the last one, not a count
Added = tuple[list[Count], list[Observation], list[Gauge]]


def increments(
    decision: Any, seconds: float, requests: Iterable[tuple[str, int | None]], gauges: Iterable[Gauge] = ()
) -> Added:
    """What one decision adds to the totals: counts, the histogram's observation, and the gauges
    it sets."""
    result = "allowed" if decision.allowed else "denied"
    failing = [r for r in decision.results if not r.verdict.passed]
    if not decision.allowed:
        # A denial is explained by an enforce-mode failure, not by a warn-mode one listed before it.
        failing = [r for r in failing if r.mode == "enforce"] or failing
    failures = [r.verdict.reason for r in failing]
    if failures:
        reason = failures[0]
    elif decision.summary and not decision.allowed:
        reason = decision.summary  # a denial without image results, e.g. too-many-images
    elif decision.summary:
        reason = "not-checked"
    elif any(r.verdict.reason in ("verified", "verified-platforms", "verified-index") for r in decision.results):
        reason = "verified"
    else:
        reason = "static"
    counts: list[Count] = [("signgate_decisions_total", {"result": result, "reason": reason}, 1)]
    per_image = Counter(
        ("pass" if r.verdict.passed else "fail", r.verdict.reason, r.mode) for r in decision.results
    )
    for (image_result, image_reason, mode), count in sorted(per_image.items()):
        counts.append(("signgate_images_total", {"result": image_result, "reason": image_reason, "mode": mode}, count))
    if decision.cache_hits:
        counts.append(("signgate_cache_total", {"result": "hit"}, decision.cache_hits))
    if decision.cache_misses:
        counts.append(("signgate_cache_total", {"result": "miss"}, decision.cache_misses))
    for (registry, status), count in sorted(Counter((h, str(s) if s else "error") for h, s in requests).items()):
        counts.append(("signgate_registry_requests_total", {"registry": registry, "status": status}, count))
    return counts, [("signgate_verification_seconds", {"result": result}, round(seconds, 6))], list(gauges)


def error_increments(reason: str, allowed: bool) -> Added:
    return [("signgate_decisions_total", {"result": "allowed" if allowed else "denied", "reason": reason}, 1)], [], []


def write(environ: Mapping[str, str], added: Added, give_up_at: float) -> bool:
    """Add to the totals and write them all to $METRICS_PATH. Metrics are never worth failing a
    decision for: False, and nothing written, when there is no $METRICS_PATH or cache directory,
    or the totals could not be updated before `give_up_at` (time.monotonic())."""
    path = environ.get("METRICS_PATH")
    cache_dir = environ.get("SIGNGATE_CACHE_DIR")
    if not path or not cache_dir:
        return False
    counts, observations, gauges = added
    try:
        operations = record_metrics(cache_dir, counts, observations, give_up_at, gauges)
    except Exception:  # the error path calls this after answering: nothing may turn into a crash
        return False
    return operations is not None and append_metric_operations(path, operations)
