"""Prometheus metrics in shell-operator's hook-metrics format.

Each hook run appends JSON lines to `$METRICS_PATH`; shell-operator serves them on
`:9115/metrics/hooks` and adds a `hook` label. Metrics written:

| name | type | labels | meaning |
| --- | --- | --- | --- |
| `signgate_decisions_total` | counter | `result` (allowed/denied), `reason` | admission decisions; reason is the first failure's reason, or `verified`, `static`, `not-checked`, `too-many-images`, or an error's reason (`invalid-config`, `invalid-input`, ...) |
| `signgate_images_total` | counter | `result` (pass/fail), `reason`, `mode` | per-image outcomes |
| `signgate_cache_total` | counter | `result` (hit/miss) | verdict-cache lookups |
| `signgate_registry_requests_total` | counter | `registry`, `status` | HTTP requests to registries; `status` is the HTTP status or `error`; 429s show up here |
| `signgate_verification_seconds` | histogram | `result` | wall time of the decision, from process start |
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterable

DURATION_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10]


def operations(decision: Any, seconds: float, requests: Iterable[tuple[str, int | None]]) -> list[dict[str, Any]]:
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
    ops: list[dict[str, Any]] = [_add("signgate_decisions_total", {"result": result, "reason": reason})]
    per_image = Counter(
        ("pass" if r.verdict.passed else "fail", r.verdict.reason, r.mode) for r in decision.results
    )
    for (image_result, image_reason, mode), count in sorted(per_image.items()):
        ops.append(_add("signgate_images_total", {"result": image_result, "reason": image_reason, "mode": mode}, count))
    if decision.cache_hits:
        ops.append(_add("signgate_cache_total", {"result": "hit"}, decision.cache_hits))
    if decision.cache_misses:
        ops.append(_add("signgate_cache_total", {"result": "miss"}, decision.cache_misses))
    for (registry, status), count in sorted(Counter((h, str(s) if s else "error") for h, s in requests).items()):
        ops.append(_add("signgate_registry_requests_total", {"registry": registry, "status": status}, count))
    ops.append(
        {
            "name": "signgate_verification_seconds",
            "action": "observe",
            "value": round(seconds, 6),
            "buckets": DURATION_BUCKETS,
            "labels": {"result": result},
        }
    )
    return ops


def error_operations(reason: str, allowed: bool) -> list[dict[str, Any]]:
    return [_add("signgate_decisions_total", {"result": "allowed" if allowed else "denied", "reason": reason})]


def write(path: str | None, ops: list[dict[str, Any]]) -> None:
    """Append the operations; metrics are never worth failing a decision for."""
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            for op in ops:
                handle.write(json.dumps(op, separators=(",", ":")) + "\n")
    except OSError:
        pass


def _add(name: str, labels: dict[str, str], value: int = 1) -> dict[str, Any]:
    return {"name": name, "action": "add", "value": value, "labels": labels}
